"""What the cost model knows of memwall's own runtime (runtime/): which passes replay a CUDA graph, which run its
Triton kernels, and how its paged attention groups rows. The runtime imports these constants from here, so the two
cannot drift apart; `CostContext` (sim/cost.py) uses them when a scenario prices memwall's serving software
(`execution` section; other stacks are other settings of it).
"""

from __future__ import annotations

# The passes memwall's runtime replays from CUDA graphs (runtime/graphs.py imports this): every pass of at most
# GRAPH_MAX_ROWS flattened tokens, each token a paged-attention row of its own (runtime/forward.py). Decodes,
# verifies, block-diffusion steps, small diffusion steps, prompts and chunks up to that size fall under it. (512
# until session 4: the eager passes of 513-1,024 rows -- block steps of 32 x 32 rows, prefix-cache diffusion steps
# of 8 x 128 -- ran at the host's pace, 11-18% off their prediction, reports/h100/validation-notes.md.)
GRAPH_MAX_ROWS = 1024
# A graph's LM head runs on every row of its bucket's passes: a capture fixes the rows, so a prefill chunk of 448
# tokens plus 64 decodes computes 512 rows of logits where it wants 65 (runtime/graphs.py). The cost model prices
# such passes with that many logit rows (CostContext.priced_logit_rows).
GRAPH_LOGITS_EVERY_ROW = True
# The row counts of the runtime's graphs (runtime/graphs.py imports them): a pass replays the smallest that holds its
# rows. Buckets between the powers of two keep the padding of multi-token passes (speculative verifies,
# block-diffusion steps: e.g. 64 x 5 = 320 rows) small.
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 96, 128, 160, 192, 256, 320, 384, 512, 640, 768, GRAPH_MAX_ROWS)
# the elementwise operators that memwall's Triton projections fuse (CostContext.fused_epilogues)
FUSED_OPS = frozenset({"attn_norm", "rope", "mlp_norm", "swiglu", "final_norm"})
# Projections of at most this many rows run memwall's own Triton GEMV/GEMM kernels, larger ones cuBLAS
# (runtime/ops.py); the microbenchmarks time every size with the kernel the runtime uses for it.
RUNTIME_TRITON_MAX_ROWS = 64
# Eager passes of memwall's runtime attend spans of at most PAGED_MAX_Q new tokens as paged rows too, longer ones
# (prompts) through SDPA (runtime/forward.py imports this).
PAGED_MAX_Q = 128
# One program of the runtime's paged attention serves up to PAGED_TILE_ROWS query-head rows of one sequence and
# reads its K/V once for them: 16 consecutive rows of a sequence for multi-head attention, 16 / 4 = 4 rows for
# Llama-3's GQA (runtime/kernels/paged_attention.py, the row groups of runtime/forward.py).
PAGED_TILE_ROWS = 16


def rows_per_kv_read(num_heads: int, num_kv_heads: int) -> int:
    """Rows of one sequence that share one read of its K/V in a paged-row attention (see PAGED_TILE_ROWS)."""
    return max(1, PAGED_TILE_ROWS // max(1, num_heads // num_kv_heads))


def host_eager(tokens: int) -> bool:
    """Whether the serving loop's host handles a pass of `tokens` rows as an eager pass (metadata built once for a
    prompt past the graphs' rows) rather than staging a graph's inputs: the host model's split, in its fit
    (validation/host_fit.py) and its price (sim.engine.host_s) alike, whatever the scenario's `execution.graphs`."""
    return tokens > GRAPH_MAX_ROWS


def graph_bucket(rows: int) -> int:
    """Rows of the graph a pass of `rows` rows replays (its own row count past GRAPH_MAX_ROWS: an eager pass)."""
    return next((b for b in ROW_BUCKETS if b >= rows), rows)
