"""Elementwise Triton kernels for passes with many rows (prefill, diffusion, block steps), where the projections
are cuBLAS GEMMs in bf16 and what is left between them would otherwise be a string of float32 torch ops:
- `rope_write`: the fused QKV product [T, (h + 2 h_kv) d_h] -> RoPE ("rotate half") on Q and K heads, Q to a
  [T, h, d_h] tensor, K and V straight into their paged cache slots: one read and one write of each element
  (torch: ~10 launches over float32 copies of Q and K, then two index_copy_);
- `silu_mul`: [T, 2I] gate|up -> silu(gate) * up [T, I], float32 arithmetic, one pass (torch: 2 launches in the
  model dtype, or 5 in float32).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rope_write_kernel(qkv_ptr, stride_t, pos_ptr, slot_ptr, cos_ptr, sin_ptr, q_ptr, kc_ptr, vc_ptr,
                       n_q_heads, n_kv_heads, HALF: tl.constexpr, NHP: tl.constexpr):
    t = tl.program_id(0)
    head = tl.arange(0, NHP)
    j = tl.arange(0, HALF)
    HD: tl.constexpr = 2 * HALF
    n_heads = n_q_heads + 2 * n_kv_heads
    mask = (head < n_heads)[:, None] & (j < HALF)[None, :]
    src = qkv_ptr + t.to(tl.int64) * stride_t + (head * HD)[:, None] + j[None, :]
    a = tl.load(src, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(src + HALF, mask=mask, other=0.0).to(tl.float32)
    pos = tl.load(pos_ptr + t).to(tl.int64)
    c = tl.load(cos_ptr + pos * HALF + j)[None, :]
    s = tl.load(sin_ptr + pos * HALF + j)[None, :]
    rot = (head < n_q_heads + n_kv_heads)[:, None]
    ra = tl.where(rot, a * c - b * s, a)
    rb = tl.where(rot, b * c + a * s, b)
    is_q = (head < n_q_heads)[:, None]
    is_k = rot & ~is_q
    slot = tl.load(slot_ptr + t).to(tl.int64)
    kv_head = head - n_q_heads - tl.where(head < n_q_heads + n_kv_heads, 0, n_kv_heads)
    kv_off = slot * (n_kv_heads * HD) + (kv_head * HD)[:, None] + j[None, :]
    q_off = t.to(tl.int64) * (n_q_heads * HD) + (head * HD)[:, None] + j[None, :]
    dst = tl.where(is_q, q_ptr + q_off, tl.where(is_k, kc_ptr + kv_off, vc_ptr + kv_off))
    dt = q_ptr.dtype.element_ty
    tl.store(dst, ra.to(dt), mask=mask)
    tl.store(dst + HALF, rb.to(dt), mask=mask)


def rope_write(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor,
               slots: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, n_q_heads: int,
               n_kv_heads: int) -> torch.Tensor:
    """qkv [T, (h + 2 h_kv) d_h] (rows contiguous) -> Q [T, h, d_h] rotated; rotated K and V into the caches of one
    layer ([blocks, block_tokens, h_kv, d_h], contiguous) at flat `slots` [T]."""
    T = qkv.shape[0]
    D = k_cache.shape[-1]
    assert qkv.stride(1) == 1 and k_cache.is_contiguous() and v_cache.is_contiguous() and D % 2 == 0
    assert D // 2 == triton.next_power_of_2(D // 2), "head_dim / 2 must be a power of two"
    q = torch.empty(T, n_q_heads, D, dtype=qkv.dtype, device=qkv.device)
    if k_cache.dtype != q.dtype:
        raise TypeError("rope_write stores Q and K/V in one dtype")
    nhp = triton.next_power_of_2(n_q_heads + 2 * n_kv_heads)
    _rope_write_kernel[(T,)](qkv, qkv.stride(0), positions, slots, cos, sin, q, k_cache, v_cache,
                             n_q_heads, n_kv_heads, HALF=D // 2, NHP=nhp, num_warps=8)
    return q


@triton.jit
def _silu_mul_kernel(gu_ptr, out_ptr, n, inter, BLOCK: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    row, col = i // inter, i % inter
    g = tl.load(gu_ptr + row * (2 * inter) + col, mask=m, other=0.0).to(tl.float32)
    u = tl.load(gu_ptr + row * (2 * inter) + inter + col, mask=m, other=0.0).to(tl.float32)
    tl.store(out_ptr + i, (g * tl.sigmoid(g) * u).to(out_ptr.dtype.element_ty), mask=m)


def silu_mul(gu: torch.Tensor) -> torch.Tensor:
    """[T, 2I] contiguous (gate | up) -> silu(gate) * up [T, I]."""
    assert gu.is_contiguous()
    T, I2 = gu.shape
    out = torch.empty(T, I2 // 2, dtype=gu.dtype, device=gu.device)
    n = out.numel()
    BLOCK = 2048
    _silu_mul_kernel[(triton.cdiv(n, BLOCK),)](gu, out, n, I2 // 2, BLOCK=BLOCK, num_warps=8)
    return out
