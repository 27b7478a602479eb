"""Launch configurations of the paged attention kernel (paged_attention.py), kept apart from the kernel so that the
choice can be read and tested without Triton.

A configuration is (context splits, BLOCK_T positions per step, warps, pipeline stages), chosen by the number of
rows of the launch. (Choosing the splits by the row groups of a pass instead -- a second CUDA graph per small
bucket for passes of few sequences with many rows each -- was tried on the H100 and dropped: verifies of 8 x 5
rows ran no faster with 8 splits than with none, and LLaDA's 32-row diffusion steps ran 1.5 ms slower,
reports/h100/validation-notes.md.)
"""

from __future__ import annotations


def _next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


# Per batch-size bucket: the fastest of 14-20 configurations (splits x BLOCK_T x stages) measured on the H100 for
# the Llama-3-8B shape at 512 tokens of context, 32 launches back to back in a CUDA graph (reports/h100/
# runtime-baseline.md): batch 1: 7.1 us per layer, 8: 11.9, 32: 30.1, 64: 52.3 (2.57 TB/s), 128: 99.3, 256: 189.5.
TUNED: dict[int, dict] = {
    1: dict(splits=16, block_t=64, num_warps=4, num_stages=2),
    8: dict(splits=8, block_t=32, num_warps=4, num_stages=2),
    32: dict(splits=1, block_t=64, num_warps=4, num_stages=3),
    64: dict(splits=1, block_t=32, num_warps=4, num_stages=2),
    128: dict(splits=1, block_t=64, num_warps=4, num_stages=2),
    256: dict(splits=1, block_t=64, num_warps=4, num_stages=3),
}


def default_config(batch: int, n_kv_heads: int) -> dict:
    """Buckets not in TUNED: split the context only while batch x KV heads is under 256 programs, up to ~1024
    programs in all (the measured bests: 16 splits at 8 programs, 8 at 64, none from 256 on)."""
    programs = batch * n_kv_heads
    splits = 1 if programs >= 256 else min(16, _next_pow2(-(-1024 // programs)))
    return dict(splits=splits, block_t=64, num_warps=4, num_stages=2)


def config_for(rows: int, n_heads: int, n_kv_heads: int, head_dim: int) -> dict:
    """The configuration of a launch over `rows` programs per KV head: TUNED for the Llama-3-8B shape (the one it
    was measured on), default_config otherwise."""
    tuned = TUNED.get(min(256, _next_pow2(rows))) if (n_heads, n_kv_heads, head_dim) == (32, 8, 128) else None
    return dict(tuned or default_config(rows, n_kv_heads))
