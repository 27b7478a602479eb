"""A Llama-architecture transformer for inference, built from a `sim.model.ModelSpec`.

Architecture (Touvron et al. 2023, "LLaMA"; Llama 3 report 2024): token embedding, L decoder layers of
    h += O( attention( RoPE(Q), RoPE(K), V ) ),  [Q K V] = RMSNorm(h) W_qkv^T        (GQA: h_kv <= h heads)
    h += W_down( silu(RMSNorm(h) W_gate^T) * RMSNorm(h) W_up^T )                       (SwiGLU; or top-k MoE)
then a final RMSNorm and the LM head. Causal or bidirectional attention (LLaDA-style models) follows the spec.

The model is state (its weights and RoPE tables); the pass itself is `forward.forward`, and the KV cache is a
separate object (kv_cache.py) so one model can serve a paged and a contiguous cache side by side. Weights are bf16
on CUDA and float32 on the CPU unless a dtype is given.
"""

from __future__ import annotations

from typing import Sequence

import torch

from runtime.forward import SeqInput, run_pass
from runtime.kv_cache import ContiguousKVCache, PagedKVCache
from runtime.rope import cos_sin_tables
from runtime.weights import Weights, fuse, random_globals, random_layer, split_state_dict
from sim.errors import UserError
from sim.model import ModelSpec


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch device, with one clear sentence when CUDA is asked for and missing."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' was requested but torch sees no CUDA GPU; run with --device cpu "
                        "(small models only) or on a machine with an NVIDIA GPU")
    return device


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


class Transformer:
    """Weights + RoPE tables of one model on one device. Build with `random`, `from_hf_state_dict`, or the
    loaders (loaders.py); run passes with `run` (or forward.forward for prepared PassMeta)."""

    def __init__(self, spec: ModelSpec, weights: Weights, max_positions: int | None = None):
        self.spec = spec
        self.weights = weights
        self.device = weights.embed.device
        self.dtype = weights.embed.dtype
        self.max_positions = max_positions or spec.max_position_embeddings
        self.cos, self.sin = cos_sin_tables(spec, self.max_positions, self.device)  # [P, d_h/2] float32 each

    @classmethod
    def random(cls, spec: ModelSpec, seed: int = 0, device: str | torch.device = "cpu",
               dtype: torch.dtype | None = None, max_positions: int | None = None) -> "Transformer":
        """Seeded random weights (weights.random_layer says how they are scaled), generated on the device one
        layer at a time, so an 8B model needs no host copy."""
        device = resolve_device(device)
        dtype = dtype or default_dtype(device)
        gen = torch.Generator(device=device).manual_seed(seed)
        gen_dtype = torch.float32 if device.type == "cpu" else dtype
        layers = (random_layer(spec, gen, device, gen_dtype) for _ in range(spec.num_layers))
        weights = fuse(spec, random_globals(spec, gen, device, gen_dtype), layers, dtype, device)
        return cls(spec, weights, max_positions)

    @classmethod
    def from_hf_state_dict(cls, spec: ModelSpec, state_dict: dict[str, torch.Tensor],
                           device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                           max_positions: int | None = None) -> "Transformer":
        """From tensors under Hugging Face Llama/Mixtral names (e.g. a transformers model's state_dict())."""
        device = resolve_device(device)
        globals_, layers = split_state_dict(spec, state_dict)
        return cls(spec, fuse(spec, globals_, layers, dtype or default_dtype(device), device), max_positions)

    # -- caches and passes -----------------------------------------------------------------------------------
    def paged_cache(self, num_blocks: int, block_tokens: int = 16) -> PagedKVCache:
        return PagedKVCache(self.spec, num_blocks, block_tokens, self.dtype, self.device)

    def contiguous_cache(self, max_seqs: int, max_len: int) -> ContiguousKVCache:
        return ContiguousKVCache(self.spec, max_seqs, max_len, self.dtype, self.device)

    def run(self, cache: PagedKVCache, seqs: Sequence[SeqInput]) -> torch.Tensor:
        """One eager pass (forward.py): float32 logits [sum o_i, V]."""
        return run_pass(self, cache, seqs)

    def full_logits(self, token_ids: Sequence[int]) -> torch.Tensor:
        """Logits of every position of one sequence computed from scratch (the recompute reference): one masked
        SDPA call per layer over a contiguous cache, never the paged-row path that incremental passes take."""
        cache = self.contiguous_cache(1, len(token_ids))
        seq = SeqInput(list(token_ids), 0, [0], num_logits=len(token_ids))
        return run_pass(self, cache, [seq], paged_max_q=0)
