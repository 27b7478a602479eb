"""Real weights: a Hugging Face checkpoint directory (config.json + *.safetensors) or a GGUF file.

Both yield tensors under Hugging Face Llama names, one layer at a time, into `weights.fuse`, so loading never holds
more than the fused model plus one layer in float32.

GGUF notes (the format of llama.cpp, read with the `gguf` package):
- names: token_embd, output_norm, output (absent when tied), blk.N.{attn_norm, attn_q, attn_k, attn_v,
  attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down};
- llama.cpp's converter permutes the rows of attn_q and attn_k from the Hugging Face "rotate half" RoPE layout to
  its interleaved one: within each head, rows (j, j + d_h/2) become (2j, 2j + 1). `unpermute_rope_rows` undoes it
  (its inverse, `permute_rope_rows`, is there for writing test files);
- quantized tensors (Q4_1, Q8_0, ...) are dequantized by gguf.quants.dequantize to float32.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from runtime.model import Transformer, default_dtype, resolve_device
from runtime.weights import fuse
from sim.errors import UserError
from sim.model import ModelSpec, from_hf_config


def permute_rope_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Hugging Face Q/K rows -> GGUF (interleaved) order: per head, row j and j + d_h/2 go to 2j and 2j + 1."""
    rows = w.shape[0]
    return w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def unpermute_rope_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """GGUF Q/K rows -> Hugging Face order (inverse of permute_rope_rows)."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


# -- Hugging Face directory ---------------------------------------------------------------------------------------

def load_hf_checkpoint(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                       max_positions: int | None = None) -> Transformer:
    """A model from a Hugging Face checkpoint directory: config.json plus one or more *.safetensors files."""
    from safetensors import safe_open

    path = Path(path)
    config_path = path / "config.json"
    if not config_path.exists():
        raise UserError(f"{path}: no config.json (expected a Hugging Face checkpoint directory)")
    spec = from_hf_config(json.loads(config_path.read_text()), name=path.name)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise UserError(f"{path}: no *.safetensors files next to config.json")
    where: dict[str, Path] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            where.update({k: f for k in st.keys()})

    def get(name: str) -> torch.Tensor:
        if name not in where:
            raise UserError(f"{path}: tensor '{name}' is missing (is this a Llama-family checkpoint?)")
        with safe_open(str(where[name]), framework="pt") as st:
            return st.get_tensor(name).float()

    globals_ = {k: get(k) for k in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight")
                if k in where or k != "lm_head.weight"}

    def layers() -> Iterator[dict]:
        for i in range(spec.num_layers):
            prefix = f"model.layers.{i}."
            yield {k[len(prefix):]: get(k) for k in where if k.startswith(prefix)}

    return _build(spec, globals_, layers(), device, dtype, max_positions)


def _build(spec, globals_, layers, device, dtype, max_positions) -> Transformer:
    device = resolve_device(device)
    try:
        weights = fuse(spec, globals_, layers, dtype or default_dtype(device), device)
    except KeyError as e:
        raise UserError(f"{spec.name}: tensor {e} is missing (is this a Llama-family checkpoint?)") from None
    return Transformer(spec, weights, max_positions)


# -- GGUF ---------------------------------------------------------------------------------------------------------

_GGUF_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GGUF_GLOBAL_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                      "output.weight": "lm_head.weight"}


def _field(reader, key: str, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def gguf_spec(reader, name: str) -> ModelSpec:
    """ModelSpec from a GGUF file's metadata (llama architecture)."""
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise UserError(f"{name}: GGUF architecture '{arch}' is not supported (only 'llama')")
    if _field(reader, f"{arch}.expert_count", 0) > 1:
        raise UserError(f"{name}: mixture-of-experts GGUF files are not supported yet; use a Hugging Face checkpoint")
    if any(t.name == "rope_freqs.weight" for t in reader.tensors):
        raise UserError(f"{name}: per-frequency RoPE factors (rope_freqs) are not supported; use the Hugging Face "
                        f"checkpoint, whose config.json carries rope_scaling")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    names = {t.name for t in reader.tensors}
    heads = _field(reader, f"{arch}.attention.head_count")
    return ModelSpec(
        name=name,
        hidden_size=_field(reader, f"{arch}.embedding_length"),
        num_layers=_field(reader, f"{arch}.block_count"),
        num_heads=heads,
        num_kv_heads=_field(reader, f"{arch}.attention.head_count_kv", heads),
        head_dim=_field(reader, f"{arch}.attention.key_length"),
        intermediate_size=_field(reader, f"{arch}.feed_forward_length"),
        vocab_size=_field(reader, f"{arch}.vocab_size") or len(tokens),
        tie_word_embeddings="output.weight" not in names,
        qkv_bias="blk.0.attn_q.bias" in names,
        rope_theta=_field(reader, f"{arch}.rope.freq_base", 10000.0),
        max_position_embeddings=_field(reader, f"{arch}.context_length", 4096),
        rms_norm_eps=_field(reader, f"{arch}.attention.layer_norm_rms_epsilon", 1e-5),
        source=name,
    )


def _gguf_tensor(t) -> torch.Tensor:
    from gguf.quants import dequantize

    return torch.from_numpy(np.array(dequantize(t.data, t.tensor_type), dtype=np.float32))  # a writable copy


def load_gguf(path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
              max_positions: int | None = None) -> Transformer:
    """A model from a GGUF file (a path, or a gguf.GGUFReader already open on one; llama architecture, any tensor
    type gguf.quants can dequantize)."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise UserError("reading GGUF files needs the 'gguf' package (pip install gguf)") from None
    if isinstance(path, GGUFReader):
        reader, name = path, Path(str(path.data.filename) if hasattr(path.data, "filename") else "model").stem
    else:
        path = Path(path)
        if not path.exists():
            raise UserError(f"GGUF file {path} does not exist")
        try:
            reader = GGUFReader(str(path))
        except (ValueError, OSError) as e:  # gguf checks the magic and header with ValueError
            raise UserError(f"{path} is not a readable GGUF file ({str(e).splitlines()[0][:120]})") from None
        name = path.stem
    spec = gguf_spec(reader, name)
    by_name = {t.name: t for t in reader.tensors}
    globals_ = {hf: _gguf_tensor(by_name[g]) for g, hf in _GGUF_GLOBAL_NAMES.items() if g in by_name}
    perm = {"attn_q.weight": spec.num_heads, "attn_k.weight": spec.num_kv_heads,
            "attn_q.bias": spec.num_heads, "attn_k.bias": spec.num_kv_heads}

    def layers() -> Iterator[dict]:
        for i in range(spec.num_layers):
            out = {}
            for g, hf in _GGUF_LAYER_NAMES.items():
                t = by_name.get(f"blk.{i}.{g}")
                if t is not None:
                    w = _gguf_tensor(t)
                    out[hf] = unpermute_rope_rows(w, perm[g]) if g in perm else w
            yield out

    return _build(spec, globals_, layers(), device, dtype, max_positions)
