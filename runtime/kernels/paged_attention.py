"""Triton paged attention for decode rows (q = 1): reads K/V pages through the block table, no gather copy.

One program per (sequence, KV head, context split). It loads the GROUP query heads that share the KV head (GQA) as
one [GROUP_PAD, d_h] tile, walks its share of the context BLOCK_T positions at a time (page ids from the block
table, then each position's K/V row at slot = page * block_tokens + offset), and keeps an online softmax
(Milakov & Gimelshein 2018; the FlashAttention recurrence, Dao et al. 2022). With splits > 1 the context is
partitioned across programs to fill the GPU when batch x KV heads is small (the flash-decoding idea, Dao et al.
2023), and `_combine_kernel` merges the partial (max, sum, acc) triples.

Splits are set per launch (a CUDA graph fixes them per batch bucket); each sequence divides its own context length
among them at run time, so the same graph serves any lengths.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from runtime.forward import row_groups, rows_per_group  # noqa: F401 - with the kernel they serve
from runtime.kernels.paged_config import TUNED, config_for, default_config  # noqa: F401 - benchmarks tune TUNED


# Triton compiles a variant per integer argument that is 1, a multiple of 16, or neither, and per pointer that is
# 16-byte aligned or not. The block-table stride is the graphs' fixed width in a replay but the widest table of the
# pass in an eager one, and the graphs' index inputs are views at offsets of 8 bytes, so eager passes met variants
# of their own mid-run (a first 1,024-row block step took 604 ms instead of ~25). Unspecialized on both, eager
# passes run the variants the graph captures compiled before the clock started.
@triton.jit(do_not_specialize=["stride_bt"], do_not_specialize_on_alignment=["bt_ptr", "ctx_ptr", "grp_ptr"])
def _decode_kernel(q_ptr, kc_ptr, vc_ptr, bt_ptr, ctx_ptr, out_ptr, pm_ptr, pl_ptr, pacc_ptr, grp_ptr,
                   stride_bt, scale, n_kv_heads,
                   GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HD: tl.constexpr, BLOCK_TOKENS: tl.constexpr,
                   BLOCK_T: tl.constexpr, SPLITS: tl.constexpr, QB: tl.constexpr):
    gi = tl.program_id(0)
    g = tl.program_id(1)
    s = tl.program_id(2)
    n_heads = n_kv_heads * GROUP
    if QB == 1:  # one row per program (decode)
        first = gi
        nrows = 1
    else:  # a group of up to QB consecutive rows of one sequence: grp_ptr[gi] = (first row, rows)
        first = tl.load(grp_ptr + 2 * gi)
        nrows = tl.load(grp_ptr + 2 * gi + 1)
    # tile row i: row first + i // GROUP, query head g * GROUP + i % GROUP
    i = tl.arange(0, GROUP_PAD)
    r_off = i // GROUP
    valid = (r_off < nrows) & (i < QB * GROUP)
    row = first + r_off
    h = g * GROUP + i % GROUP
    lens = tl.load(ctx_ptr + row, mask=valid, other=0)
    c = tl.max(lens, axis=0)
    per = tl.cdiv(tl.cdiv(c, SPLITS), BLOCK_T) * BLOCK_T
    t_begin = s * per
    t_end = tl.minimum(c, t_begin + per)

    d = tl.arange(0, HD)
    q = tl.load(q_ptr + (row * n_heads + h)[:, None] * HD + d[None, :], mask=valid[:, None], other=0.0)
    row_stride = n_kv_heads * HD

    m_i = tl.full([GROUP_PAD], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([GROUP_PAD], dtype=tl.float32)
    acc = tl.zeros([GROUP_PAD, HD], dtype=tl.float32)
    for t0 in range(t_begin, t_end, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        tm = t < t_end
        page = tl.load(bt_ptr + first * stride_bt + t // BLOCK_TOKENS, mask=tm, other=0).to(tl.int64)
        slot = page * BLOCK_TOKENS + t % BLOCK_TOKENS
        off = slot[:, None] * row_stride + g * HD + d[None, :]
        k = tl.load(kc_ptr + off, mask=tm[:, None], other=0.0)
        v = tl.load(vc_ptr + off, mask=tm[:, None], other=0.0)
        sc = tl.dot(q, tl.trans(k)) * scale  # [GROUP_PAD, BLOCK_T]
        sc = tl.where(tm[None, :] & (t[None, :] < lens[:, None]), sc, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(sc, axis=1))
        m_safe = tl.where(m_new > float("-inf"), m_new, 0.0)  # a row with no key here yet stays empty, not NaN
        p = tl.exp(sc - m_safe[:, None])
        alpha = tl.exp(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new

    if SPLITS == 1:
        o = acc / l_i[:, None]
        tl.store(out_ptr + (row * n_heads + h)[:, None] * HD + d[None, :], o.to(out_ptr.dtype.element_ty),
                 mask=valid[:, None])
    else:
        part = (row * SPLITS + s) * n_heads + h  # [GROUP_PAD] index into [B, SPLITS, heads]
        tl.store(pm_ptr + part, m_i, mask=valid)
        tl.store(pl_ptr + part, l_i, mask=valid)
        tl.store(pacc_ptr + part[:, None] * HD + d[None, :], acc, mask=valid[:, None])


@triton.jit
def _combine_kernel(pm_ptr, pl_ptr, pacc_ptr, out_ptr, n_heads, HD: tl.constexpr, SPLITS: tl.constexpr):
    b = tl.program_id(0)
    h = tl.program_id(1)
    s = tl.arange(0, SPLITS)
    d = tl.arange(0, HD)
    part = (b * SPLITS + s) * n_heads + h
    m = tl.load(pm_ptr + part)
    den = tl.load(pl_ptr + part)
    mx = tl.max(m, axis=0)
    w = tl.where(den > 0, tl.exp(m - mx), 0.0)  # empty splits (m = -inf, sum = 0) weigh nothing
    acc = tl.load(pacc_ptr + part[:, None] * HD + d[None, :])
    o = tl.sum(acc * w[:, None], axis=0) / tl.sum(den * w, axis=0)
    tl.store(out_ptr + (b * n_heads + h) * HD + d, o.to(out_ptr.dtype.element_ty))


def paged_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
                 context_lens: torch.Tensor, scale: float, config: dict | None = None,
                 out: torch.Tensor | None = None, groups: torch.Tensor | None = None) -> torch.Tensor:
    """Attention of query rows over their cached contexts (paged rows: a decode row, or one token of a verify /
    block step / chunk, which sees its own number of keys).
    q [B, h, d_h]; k_cache, v_cache [blocks, block_tokens, h_kv, d_h] (one layer); block_tables [B, max_blocks]
    int32/int64; context_lens [B] (keys each row sees). `groups` [G, 2] (first row, rows), from `row_groups`:
    consecutive rows of one sequence (same block table) that one program serves with one read of the K/V, up to
    rows_per_group rows; None: one row per program. Every row must be in a group. Returns [B, h, d_h]."""
    B, H, HD = q.shape
    _, bt, n_kv, _ = k_cache.shape
    group = H // n_kv
    qb = 1 if groups is None else rows_per_group(H, n_kv)
    assert q.is_contiguous() and k_cache.is_contiguous() and block_tables.stride(1) == 1
    cfg = config or config_for(B, H, n_kv, HD)
    splits = cfg["splits"]
    out = torch.empty_like(q) if out is None else out
    if splits > 1:
        pm = torch.empty(B, splits, H, dtype=torch.float32, device=q.device)
        pl = torch.empty_like(pm)
        pacc = torch.empty(B, splits, H, HD, dtype=torch.float32, device=q.device)
    else:
        pm = pl = pacc = out
    programs = B if groups is None else groups.shape[0]
    _decode_kernel[(programs, n_kv, splits)](
        q, k_cache, v_cache, block_tables, context_lens, out, pm, pl, pacc,
        groups if groups is not None else context_lens, block_tables.stride(0), scale, n_kv,
        GROUP=group, GROUP_PAD=max(16, triton.next_power_of_2(qb * group)), HD=HD, BLOCK_TOKENS=bt,
        BLOCK_T=cfg["block_t"], SPLITS=splits, QB=qb, num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    if splits > 1:
        _combine_kernel[(B, H)](pm, pl, pacc, out, H, HD=HD, SPLITS=splits, num_warps=1)
    return out
