"""The runtime's weight layout: fused projections with the RMSNorm weights folded in, built from Hugging Face names.

Every source of weights (seeded random, a Hugging Face checkpoint, a GGUF file) first yields tensors under the
Hugging Face Llama/Mixtral names, one layer at a time; `fuse_layer` turns one layer into the layout the kernels
read, so peak memory stays at the model plus one layer:
- `qkv` = [W_q; W_k; W_v] * g_attn: one GEMM (or GEMV) for all three projections, [(h + 2 h_kv) d_h, d];
- `gate_up` = [W_gate; W_up] * g_ffn: one GEMM for both SwiGLU inputs, [2 I, d];
- `lm_head` = W_head * g_final (a copy when tied to the embedding, since the fold changes it).
Folding uses RMSNorm(x) W^T = (x W'^T) / rms(x) with W' = W diag(g) (Zhang & Sennrich 2019 define RMSNorm; the fold
is exact in real arithmetic, done here in float32 before the cast): the kernels then scale the GEMM's output rows
by 1/rms(x), which they compute from the x they stream anyway, so a decode step needs no separate norm kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from sim.model import ModelSpec


@dataclass
class LayerWeights:
    """One decoder layer in the fused layout (shapes for d = hidden, I = intermediate, E = experts)."""

    qkv: torch.Tensor  # [(h + 2 h_kv) * d_h, d], attention norm folded in
    qkv_bias: torch.Tensor | None  # [(h + 2 h_kv) * d_h] (Qwen2), else None
    o: torch.Tensor  # [d, h * d_h]
    gate_up: torch.Tensor | None = None  # [2 I, d], ffn norm folded in (dense MLP)
    down: torch.Tensor | None = None  # [d, I]
    router: torch.Tensor | None = None  # [E, d], ffn norm folded in (MoE)
    experts_gate_up: torch.Tensor | None = None  # [E, 2 I, d]
    experts_down: torch.Tensor | None = None  # [E, d, I]


@dataclass
class Weights:
    embed: torch.Tensor  # [V, d]
    layers: list[LayerWeights]
    lm_head: torch.Tensor  # [V, d], final norm folded in

    def nbytes(self, include_embedding: bool = False) -> int:
        """Bytes of all matrices a decode pass streams (the embedding only if asked: a pass reads a few rows)."""
        total = self.lm_head.numel() * self.lm_head.element_size()
        if include_embedding:
            total += self.embed.numel() * self.embed.element_size()
        for lw in self.layers:
            for t in (lw.qkv, lw.qkv_bias, lw.o, lw.gate_up, lw.down, lw.router, lw.experts_gate_up, lw.experts_down):
                if t is not None:
                    total += t.numel() * t.element_size()
        return total


def _fold(w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """W diag(g) in float32: scales input column j of W [out, in] by g[j]."""
    return w.float() * g.float()[None, :]


def fuse_layer(spec: ModelSpec, t: dict[str, torch.Tensor], dtype: torch.dtype, device) -> LayerWeights:
    """One layer's Hugging Face tensors (names relative to `model.layers.{i}.`) in the fused, folded layout."""
    g_attn, g_ffn = t["input_layernorm.weight"], t["post_attention_layernorm.weight"]
    a = "self_attn."

    def put(x: torch.Tensor) -> torch.Tensor:
        return x.to(device=device, dtype=dtype).contiguous()

    qkv = torch.cat([_fold(t[a + p + "_proj.weight"], g_attn) for p in "qkv"])
    bias = None
    if spec.qkv_bias:
        bias = put(torch.cat([t[a + p + "_proj.bias"].float() for p in "qkv"]))
    lw = LayerWeights(qkv=put(qkv), qkv_bias=bias, o=put(t[a + "o_proj.weight"]))
    if spec.is_moe:
        m = "block_sparse_moe."
        lw.router = put(_fold(t[m + "gate.weight"], g_ffn))
        lw.experts_gate_up = put(torch.stack([
            torch.cat([_fold(t[f"{m}experts.{e}.w1.weight"], g_ffn), _fold(t[f"{m}experts.{e}.w3.weight"], g_ffn)])
            for e in range(spec.num_experts)]))
        lw.experts_down = put(torch.stack([t[f"{m}experts.{e}.w2.weight"] for e in range(spec.num_experts)]))
    else:
        lw.gate_up = put(torch.cat([_fold(t["mlp.gate_proj.weight"], g_ffn), _fold(t["mlp.up_proj.weight"], g_ffn)]))
        lw.down = put(t["mlp.down_proj.weight"])
    return lw


def fuse(spec: ModelSpec, globals_: dict[str, torch.Tensor], layers: Iterator[dict[str, torch.Tensor]],
         dtype: torch.dtype, device) -> Weights:
    """The whole model in the fused layout. `globals_` holds model.embed_tokens.weight, model.norm.weight and
    (unless tied) lm_head.weight; `layers` yields each layer's tensors in order."""
    embed = globals_["model.embed_tokens.weight"]
    head = embed if spec.tie_word_embeddings or "lm_head.weight" not in globals_ else globals_["lm_head.weight"]
    fused = [fuse_layer(spec, t, dtype, device) for t in layers]
    if len(fused) != spec.num_layers:
        raise ValueError(f"got {len(fused)} layers, the spec has {spec.num_layers}")
    return Weights(
        embed=embed.to(device=device, dtype=dtype).contiguous(),
        layers=fused,
        lm_head=_fold(head, globals_["model.norm.weight"]).to(device=device, dtype=dtype).contiguous(),
    )


# -- seeded random weights ----------------------------------------------------------------------------------------

def random_layer(spec: ModelSpec, gen: torch.Generator, device,
                 dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """One layer of random Hugging Face tensors. Projections are N(0, 1/fan_in) (LeCun init), so each keeps unit
    variance and the residual stream grows only ~sqrt(layers); norm weights are 1 + N(0, 0.1) so that the fold is
    exercised. Values differ between devices for the same seed (separate generators); timing does not care."""
    d, inter = spec.hidden_size, spec.intermediate_size

    def mat(out: int, inp: int) -> torch.Tensor:
        return torch.randn(out, inp, generator=gen, device=device, dtype=dtype) * inp ** -0.5

    def norm() -> torch.Tensor:
        return 1 + 0.1 * torch.randn(d, generator=gen, device=device, dtype=dtype)

    a = "self_attn."
    t = {"input_layernorm.weight": norm(), "post_attention_layernorm.weight": norm(),
         a + "q_proj.weight": mat(spec.q_dim, d), a + "k_proj.weight": mat(spec.kv_dim, d),
         a + "v_proj.weight": mat(spec.kv_dim, d), a + "o_proj.weight": mat(d, spec.q_dim)}
    if spec.qkv_bias:
        for p, n in (("q", spec.q_dim), ("k", spec.kv_dim), ("v", spec.kv_dim)):
            t[f"{a}{p}_proj.bias"] = 0.1 * torch.randn(n, generator=gen, device=device, dtype=dtype)
    if spec.is_moe:
        m = "block_sparse_moe."
        t[m + "gate.weight"] = mat(spec.num_experts, d)
        for e in range(spec.num_experts):
            t[f"{m}experts.{e}.w1.weight"], t[f"{m}experts.{e}.w3.weight"] = mat(inter, d), mat(inter, d)
            t[f"{m}experts.{e}.w2.weight"] = mat(d, inter)
    else:
        t["mlp.gate_proj.weight"], t["mlp.up_proj.weight"] = mat(inter, d), mat(inter, d)
        t["mlp.down_proj.weight"] = mat(d, inter)
    return t


def random_globals(spec: ModelSpec, gen: torch.Generator, device,
                   dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Embedding (N(0, 1): a token's vector has unit RMS like a normed hidden state), final norm and LM head."""
    d, V = spec.hidden_size, spec.vocab_size
    g = {"model.embed_tokens.weight": torch.randn(V, d, generator=gen, device=device, dtype=dtype),
         "model.norm.weight": 1 + 0.1 * torch.randn(d, generator=gen, device=device, dtype=dtype)}
    if not spec.tie_word_embeddings:
        g["lm_head.weight"] = torch.randn(V, d, generator=gen, device=device, dtype=dtype) * d ** -0.5
    return g


def random_hf_state_dict(spec: ModelSpec, seed: int = 0) -> dict[str, torch.Tensor]:
    """A whole random model as one float32 CPU state dict with Hugging Face names (for writing test checkpoints)."""
    gen = torch.Generator().manual_seed(seed)
    sd = dict(random_globals(spec, gen, "cpu"))
    for i in range(spec.num_layers):
        sd.update({f"model.layers.{i}.{k}": v for k, v in random_layer(spec, gen, "cpu").items()})
    return sd


def split_state_dict(spec: ModelSpec, sd: dict[str, torch.Tensor]) -> tuple[dict, Iterator[dict]]:
    """(globals, per-layer iterator) of a Hugging Face state dict; the layer dicts use names relative to the layer."""
    globals_ = {k: v for k, v in sd.items() if not k.startswith("model.layers.")}

    def layers() -> Iterator[dict]:
        for i in range(spec.num_layers):
            prefix = f"model.layers.{i}."
            yield {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}

    return globals_, layers()
