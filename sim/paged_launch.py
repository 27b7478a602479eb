"""How memwall's paged attention kernel spreads a pass's attention over GPU programs, for the cost model.

The kernel (runtime/kernels/paged_attention.py) runs one program per (row group, KV head, context split): a row
group is up to rows_per_kv_read consecutive rows of one sequence, and each program walks its share of the context
BLOCK_T positions at a time. Its launch configuration (splits, BLOCK_T, pipeline stages) is fixed per CUDA graph
by the graph's row bucket (runtime/kernels/paged_config.py). So a pass with few programs, or programs with long
walks, takes longer than its HBM bytes say: two block steps of 32 rows at 576 positions spent 977 us in the
kernel where the bytes predicted 583 (benchmarks/pass_breakdown.py, H100, 11:41 UTC). The calibration prices the
walk per configuration (Efficiency.paged_attention_programs); this module only counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from runtime.kernels.paged_config import config_for
from sim.runtime_layout import graph_bucket, rows_per_kv_read


@dataclass(frozen=True, slots=True)
class PagedLaunch:
    """One layer's launch of the paged kernel for a pass."""

    programs: float  # programs with work: row groups x KV heads x context splits that reach into the context
    positions: float  # context positions one program walks (its share, rounded up to whole BLOCK_T steps)
    config: str  # key of the walk's price: '<heads>x<kv heads>x<head dim>/<BLOCK_T>x<stages>' (config_key)
    splits: int  # context splits the launch is configured for (> 1: a second kernel merges the splits)
    block_t: int  # positions per step of the walk
    lanes: float  # row groups x KV heads (programs = lanes x the splits that reach into the context)

    @property
    def kernels(self) -> int:
        return 2 if self.splits > 1 else 1


def config_key(heads: int, kv_heads: int, head_dim: int, block_t: int, stages: int) -> str:
    return f"{heads}x{kv_heads}x{head_dim}/{block_t}x{stages}"


@lru_cache(maxsize=4096)
def _config(bucket: int, heads: int, kv_heads: int, head_dim: int) -> tuple[int, int, str]:
    cfg = config_for(bucket, heads, kv_heads, head_dim)
    return cfg["splits"], cfg["block_t"], config_key(heads, kv_heads, head_dim, cfg["block_t"], cfg["num_stages"])


@lru_cache(maxsize=1 << 16)  # the engine prices the same pass shapes over and over
def paged_launch(tokens: int, seqs: int, attn_pairs: float, heads: int, kv_heads: int,
                 head_dim: int) -> PagedLaunch:
    """The launch for a pass of `tokens` paged rows over `seqs` sequences attending `attn_pairs` (query, key) pairs
    (heads per GPU). Rows per sequence and keys per row are the pass's means: a pass mixing decodes with a chunk
    is priced as if its rows were spread evenly."""
    splits, block_t, key = _config(graph_bucket(tokens), heads, kv_heads, head_dim)
    rows = tokens / seqs
    groups = seqs * math.ceil(rows / rows_per_kv_read(heads, kv_heads))
    keys = attn_pairs / tokens  # mean keys per row
    working, per = split_walk(keys, splits, block_t)
    return PagedLaunch(groups * kv_heads * float(working), float(per), key, splits, block_t, groups * kv_heads)


def split_walk(keys, splits: int, block_t: int):
    """(splits with work, positions each walks) for rows of `keys` keys (floats or arrays): each split's share
    rounded up to whole BLOCK_T steps. A split starts at s * share: those past the context walk nothing (a decode
    at 512 keys in 16 splits of 64 positions keeps 8 busy), as do the graph's padding programs, not counted either."""
    per = np.ceil(np.ceil(np.asarray(keys, dtype=float) / splits) / block_t) * block_t
    working = np.where(per > 0, np.minimum(splits, np.ceil(keys / np.maximum(per, 1.0))), 0.0)
    return working, per
