"""Triton kernels for the projections of a decode step: y = x W^T with the step's elementwise work fused in.

A decode step at batch 1 is ~160 small launches that stream 15 GB of weights (Llama-3-8B). cuBLAS reaches only
~1.1 TB/s on a 4096x4096 GEMV on the H100 (DESIGN §3), so the projections are hand-written here, and everything
that would otherwise be its own launch rides in the GEMV's prologue or epilogue:
- RMSNorm: weights arrive with the norm folded in (weights.py) and each output row is scaled by 1/rms(x)
  (NORM=True); the GEMV accumulates sum(x^2) over the x chunks it loads anyway, the GEMM path takes the scale from
  `_rms_kernel` (see `linear` for why);
- `EPI_RESIDUAL`: out += y, the residual add after the O and down projections, in place;
- `EPI_SWIGLU`: W = [W_gate; W_up]; each program computes matching gate and up rows and stores silu(g) * u;
- `EPI_ROPE_QKV`: W = [W_q; W_k; W_v]; each program computes rows j and j + d_h/2 of one head, rotates them
  (RoPE, "rotate half" layout), and stores Q to `out` and K/V straight into the paged cache slot of each row.

Two kernels share the epilogue: `_gemv_kernel` for one row (elementwise multiply-accumulate into a [BN, BK] float32
tile, reduced once at the end, so each thread keeps BN 16-byte loads in flight per step) and `_gemm_kernel` for
2..256 rows (tl.dot on [BM, BK] x [BK, BN] tiles, pipelined over K). Passes with more rows (prefill) use cuBLAS
(ops.CONFIG.triton_max_rows).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

EPI_STORE, EPI_RESIDUAL, EPI_SWIGLU, EPI_ROPE_QKV = 0, 1, 2, 3


@triton.jit
def _rows(n, N_OUT, EPI: tl.constexpr, HALF: tl.constexpr):
    """Weight rows of logical outputs n (one program's BN consecutive outputs)."""
    if EPI == 2:  # SwiGLU: gate rows n, up rows I + n
        return n, n + N_OUT
    elif EPI == 3:  # RoPE pairs: output n = head * HALF + j -> rows head * 2 * HALF + j and that + HALF
        ra = n + (n // HALF) * HALF
        return ra, ra + HALF
    else:
        return n, n


@triton.jit
def _epilogue(ya, yb, m, n, M, N_OUT, rs, out_ptr, stride_om, bias_ptr, rows_a, rows_b,
              pos_ptr, slot_ptr, cos_ptr, sin_ptr, kc_ptr, vc_ptr, n_q_heads, n_kv_heads,
              EPI: tl.constexpr, NORM: tl.constexpr, HAS_BIAS: tl.constexpr, HALF: tl.constexpr):
    """ya, yb: [BM, BN] float32 products for rows_a / rows_b; m [BM] batch rows, n [BN] logical outputs."""
    mm = m < M
    mask = mm[:, None] & (n < N_OUT)[None, :]
    if NORM:
        ya = ya * rs[:, None]
        yb = yb * rs[:, None]
    if HAS_BIAS:
        ya = ya + tl.load(bias_ptr + rows_a).to(tl.float32)[None, :]
        yb = yb + tl.load(bias_ptr + rows_b).to(tl.float32)[None, :]
    dt = out_ptr.dtype.element_ty
    if EPI == 0:
        tl.store(out_ptr + m[:, None] * stride_om + n[None, :], ya.to(dt), mask=mask)
    elif EPI == 1:
        p = out_ptr + m[:, None] * stride_om + n[None, :]
        r = tl.load(p, mask=mask, other=0.0).to(tl.float32)
        tl.store(p, (r + ya).to(dt), mask=mask)
    elif EPI == 2:
        tl.store(out_ptr + m[:, None] * stride_om + n[None, :], (ya * tl.sigmoid(ya) * yb).to(dt), mask=mask)
    else:
        HD: tl.constexpr = 2 * HALF
        head = n // HALF  # [BN]: a tile may span heads, and Q, K and V heads
        j = n - head * HALF
        pos = tl.load(pos_ptr + m, mask=mm, other=0).to(tl.int64)
        c = tl.load(cos_ptr + pos[:, None] * HALF + j[None, :], mask=mask, other=1.0)
        s = tl.load(sin_ptr + pos[:, None] * HALF + j[None, :], mask=mask, other=0.0)
        rot = (head < n_q_heads + n_kv_heads)[None, :]  # Q and K heads rotate, V heads pass through
        ra = tl.where(rot, ya * c - yb * s, ya)
        rb = tl.where(rot, yb * c + ya * s, yb)
        is_q = (head < n_q_heads)[None, :]
        is_k = rot & ~is_q
        slot = tl.load(slot_ptr + m, mask=mm, other=0).to(tl.int64)
        kv_head = head - n_q_heads - tl.where(head < n_q_heads + n_kv_heads, 0, n_kv_heads)
        kv_off = slot[:, None] * (n_kv_heads * HD) + (kv_head * HD + j)[None, :]
        q_off = m[:, None] * stride_om + (head * HD + j)[None, :]
        dst = tl.where(is_q, out_ptr + q_off, tl.where(is_k, kc_ptr + kv_off, vc_ptr + kv_off))
        tl.store(dst, ra.to(dt), mask=mask)
        tl.store(dst + HALF, rb.to(dt), mask=mask)


# Index inputs (positions, cache slots) come from graph buffers at 8-byte offsets in a replay and from fresh
# tensors in an eager pass; unspecialized on their alignment (and on the row count M), an eager pass reuses the
# variants the graph captures compiled (one eager 32-row pass compiled a variant for 0.21 s inside a timed run).
@triton.jit(do_not_specialize_on_alignment=["pos_ptr", "slot_ptr"])
def _gemv_kernel(x_ptr, w_ptr, K, out_ptr, stride_om, N_OUT, bias_ptr, eps,
                 pos_ptr, slot_ptr, cos_ptr, sin_ptr, kc_ptr, vc_ptr, n_q_heads, n_kv_heads,
                 EPI: tl.constexpr, NORM: tl.constexpr, HAS_BIAS: tl.constexpr, HALF: tl.constexpr,
                 BN: tl.constexpr, BK: tl.constexpr, EVEN: tl.constexpr):
    n0 = tl.program_id(0) * BN
    n = n0 + tl.arange(0, BN)
    rows_a, rows_b = _rows(n, N_OUT, EPI, HALF)
    nmask = (n < N_OUT)[:, None]
    PAIRED: tl.constexpr = EPI >= 2
    acc_a = tl.zeros([BN, BK], dtype=tl.float32)
    acc_b = tl.zeros([BN, BK], dtype=tl.float32)
    ss = tl.zeros([BK], dtype=tl.float32)
    for k0 in range(0, K, BK):
        kk = k0 + tl.arange(0, BK)
        if EVEN:
            x = tl.load(x_ptr + kk).to(tl.float32)
            wa = tl.load(w_ptr + rows_a[:, None] * K + kk[None, :])
            if PAIRED:
                wb = tl.load(w_ptr + rows_b[:, None] * K + kk[None, :])
        else:
            km = kk < K
            x = tl.load(x_ptr + kk, mask=km, other=0.0).to(tl.float32)
            wa = tl.load(w_ptr + rows_a[:, None] * K + kk[None, :], mask=nmask & km[None, :], other=0.0)
            if PAIRED:
                wb = tl.load(w_ptr + rows_b[:, None] * K + kk[None, :], mask=nmask & km[None, :], other=0.0)
        acc_a += wa.to(tl.float32) * x[None, :]
        if PAIRED:
            acc_b += wb.to(tl.float32) * x[None, :]
        if NORM:
            ss += x * x
    ya = tl.sum(acc_a, axis=1)[None, :]
    if PAIRED:
        yb = tl.sum(acc_b, axis=1)[None, :]
    else:
        yb = ya
    rs = tl.full([1], 1.0, dtype=tl.float32)
    if NORM:
        rs = rs * tl.rsqrt(tl.sum(ss, axis=0) / K + eps)
    m = tl.arange(0, 1)
    _epilogue(ya, yb, m, n, 1, N_OUT, rs, out_ptr, stride_om, bias_ptr, rows_a, rows_b,
              pos_ptr, slot_ptr, cos_ptr, sin_ptr, kc_ptr, vc_ptr, n_q_heads, n_kv_heads,
              EPI, NORM, HAS_BIAS, HALF)


@triton.jit
def _rms_kernel(x_ptr, stride_xm, K, eps, rs_ptr, BK: tl.constexpr):
    """rs[m] = 1 / sqrt(mean(x[m]^2) + eps), one program per row."""
    m = tl.program_id(0)
    ss = tl.zeros([BK], dtype=tl.float32)
    for k0 in range(0, K, BK):
        kk = k0 + tl.arange(0, BK)
        x = tl.load(x_ptr + m * stride_xm + kk, mask=kk < K, other=0.0).to(tl.float32)
        ss += x * x
    tl.store(rs_ptr + m, tl.rsqrt(tl.sum(ss, axis=0) / K + eps))


@triton.jit(do_not_specialize=["M"], do_not_specialize_on_alignment=["pos_ptr", "slot_ptr"])
def _gemm_kernel(x_ptr, stride_xm, w_ptr, K, out_ptr, stride_om, M, N_OUT, bias_ptr, rs_ptr,
                 pos_ptr, slot_ptr, cos_ptr, sin_ptr, kc_ptr, vc_ptr, n_q_heads, n_kv_heads,
                 EPI: tl.constexpr, NORM: tl.constexpr, HAS_BIAS: tl.constexpr, HALF: tl.constexpr,
                 BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, EVEN: tl.constexpr):
    # Axis 0 walks the batch rows fastest, so the programs that share a weight tile run together and all but the
    # first find it in L2.
    m = tl.program_id(0) * BM + tl.arange(0, BM)
    n0 = tl.program_id(1) * BN
    n = n0 + tl.arange(0, BN)
    rows_a, rows_b = _rows(n, N_OUT, EPI, HALF)
    mmask = (m < M)[:, None]
    nmask = (n < N_OUT)[:, None]
    PAIRED: tl.constexpr = EPI >= 2
    acc_a = tl.zeros([BM, BN], dtype=tl.float32)
    acc_b = tl.zeros([BM, BN], dtype=tl.float32)
    for k0 in range(0, K, BK):
        kk = k0 + tl.arange(0, BK)
        if EVEN:
            x = tl.load(x_ptr + m[:, None] * stride_xm + kk[None, :], mask=mmask, other=0.0)
            wa = tl.load(w_ptr + rows_a[:, None] * K + kk[None, :])
            if PAIRED:
                wb = tl.load(w_ptr + rows_b[:, None] * K + kk[None, :])
        else:
            km = (kk < K)[None, :]
            x = tl.load(x_ptr + m[:, None] * stride_xm + kk[None, :], mask=mmask & km, other=0.0)
            wa = tl.load(w_ptr + rows_a[:, None] * K + kk[None, :], mask=nmask & km, other=0.0)
            if PAIRED:
                wb = tl.load(w_ptr + rows_b[:, None] * K + kk[None, :], mask=nmask & km, other=0.0)
        acc_a = tl.dot(x, tl.trans(wa), acc_a)
        if PAIRED:
            acc_b = tl.dot(x, tl.trans(wb), acc_b)
    if not PAIRED:
        acc_b = acc_a
    rs = tl.full([BM], 1.0, dtype=tl.float32)
    if NORM:
        rs = tl.load(rs_ptr + m, mask=m < M, other=1.0)
    _epilogue(acc_a, acc_b, m, n, M, N_OUT, rs, out_ptr, stride_om, bias_ptr, rows_a, rows_b,
              pos_ptr, slot_ptr, cos_ptr, sin_ptr, kc_ptr, vc_ptr, n_q_heads, n_kv_heads,
              EPI, NORM, HAS_BIAS, HALF)


# -- launch ------------------------------------------------------------------------------------------------------

# Optional per-shape overrides (key: (rows bucket, N_OUT, K, EPI)), e.g. from a sweep of benchmarks/runtime_decode.py.
TUNED: dict[tuple[int, int, int, int], dict] = {}


def rows_bucket(m: int) -> int:
    return 1 if m == 1 else min(256, triton.next_power_of_2(m))


def default_config(m: int, n_out: int, k: int, epi: int) -> dict:
    """Block sizes by shape, read off the H100 sweep of the Llama-3-8B projections (benchmarks/NOTES-runtime.md),
    where each rule below was the fastest (or within 2%) of 7 GEMV / 5-8 GEMM configurations:
    - one row: BN = 2 rows per program for paired epilogues (each program already streams 2 x BN rows), 4 for the
      rest; 1024-wide K steps with 4 warps, or 2048 with 8 warps for long K (down: K = 14336);
    - 2..16 rows (BM = 16): paired -> BN 32, BK 256, 3 stages; narrow outputs (N = hidden) -> BN 16, BK 256-512;
      the LM head -> BN 64, BK 128, 4 stages;
    - 32+ rows: BN 64, BK 128, 4 stages for wide outputs (BM 128 for the LM head from 128 rows); narrow outputs
      keep few columns per program (BN 16 at 32 rows, 32 at 64) so that N / BN programs still cover the 132 SMs."""
    paired = epi in (EPI_SWIGLU, EPI_ROPE_QKV)
    if m == 1:
        long_k = k >= 8192
        return dict(BN=2 if paired else 4, BK=min(2048 if long_k else 1024, triton.next_power_of_2(k)),
                    num_warps=8 if long_k else 4, num_stages=1)
    bm = min(64, max(16, triton.next_power_of_2(m)))
    bk = lambda want: min(want, max(16, triton.next_power_of_2(k)))  # noqa: E731
    wide = paired or n_out >= 16384
    if bm == 16:
        if paired:
            return dict(BM=16, BN=32, BK=bk(256), num_warps=4, num_stages=3)
        if wide:
            return dict(BM=16, BN=64, BK=bk(128), num_warps=4, num_stages=4)
        return dict(BM=16, BN=16, BK=bk(512 if k >= 8192 else 256), num_warps=4, num_stages=3 if k >= 8192 else 4)
    if wide or m > 64:
        if m >= 128 and n_out >= 16384 and not paired:  # LM head at 128+ rows: 128-row tiles
            return dict(BM=128, BN=64, BK=bk(128), num_warps=8, num_stages=4)
        # QKV at 64 rows: 25.2 us with BN 32, 26.9 with BN 64 (at 128 rows BN 64 wins: 27.4 vs 34.2 us)
        narrow_pairs = paired and n_out < 8192 and m <= 64 and bm == 64
        return dict(BM=bm, BN=32 if narrow_pairs else 64, BK=bk(128), num_warps=4, num_stages=4)
    if bm == 32:
        return dict(BM=32, BN=16, BK=bk(256), num_warps=4, num_stages=4)
    return dict(BM=64, BN=32, BK=bk(256), num_warps=4, num_stages=3)


def linear(x: torch.Tensor, w: torch.Tensor, *, epi: int = EPI_STORE, out: torch.Tensor | None = None,
           norm_eps: float | None = None, bias: torch.Tensor | None = None, rope: dict | None = None,
           out_dtype: torch.dtype | None = None, config: dict | None = None) -> torch.Tensor:
    """y = x W^T with the fused extras of the module doc. x [M, K] (rows contiguous), w [N, K] contiguous.
    Returns `out`: [M, N] (EPI_STORE), the updated residual (EPI_RESIDUAL, `out` required), [M, N/2] (EPI_SWIGLU),
    or Q [M, h*d_h] (EPI_ROPE_QKV; `rope` gives cos, sin [P, d_h/2], positions [M], slots [M], k_cache, v_cache,
    n_q_heads, n_kv_heads; `bias` must be None or the fused QKV bias)."""
    M, K = x.shape
    N = w.shape[0]
    assert x.stride(1) == 1 and w.is_contiguous() and w.shape[1] == K and w.numel() < 2**31
    half = 1
    if epi in (EPI_STORE, EPI_RESIDUAL):
        n_out = N
        if out is None:
            out = torch.empty(M, N, dtype=out_dtype or x.dtype, device=x.device)
    elif epi == EPI_SWIGLU:
        n_out = N // 2
        if out is None:
            out = torch.empty(M, n_out, dtype=out_dtype or x.dtype, device=x.device)
    else:
        half = rope["k_cache"].shape[-1] // 2
        n_out = N // 2
        if out is None:
            out = torch.empty(M, rope["n_q_heads"] * 2 * half, dtype=x.dtype, device=x.device)
    assert out.stride(1) == 1
    cfg = config or TUNED.get((rows_bucket(M), n_out, K, epi)) or default_config(M, n_out, K, epi)
    dummy = out
    r = rope or {}
    args = (out, out.stride(0))
    ptrs = (r.get("positions", dummy), r.get("slots", dummy), r.get("cos", dummy), r.get("sin", dummy),
            r.get("k_cache", dummy), r.get("v_cache", dummy), r.get("n_q_heads", 0), r.get("n_kv_heads", 0))
    flags = dict(EPI=epi, NORM=norm_eps is not None, HAS_BIAS=bias is not None, HALF=half)
    eps = norm_eps if norm_eps is not None else 0.0
    b = bias if bias is not None else dummy
    launch = {k: cfg[k] for k in ("num_warps", "num_stages")}
    if M == 1:
        even = K % cfg["BK"] == 0 and n_out % cfg["BN"] == 0
        grid = (triton.cdiv(n_out, cfg["BN"]),)
        _gemv_kernel[grid](x, w, K, *args, n_out, b, eps, *ptrs, **flags, BN=cfg["BN"], BK=cfg["BK"],
                           EVEN=even, **launch)
    else:
        even = K % cfg["BK"] == 0 and n_out % cfg["BN"] == 0
        # The RMSNorm scale comes from its own small kernel here: accumulating sum(x^2) from the tile that also feeds
        # tl.dot gave config-dependent errors of 0.1-5% on the H100 with Triton 3.6 (benchmarks/NOTES-runtime.md),
        # where the same arithmetic in the GEMV (no tl.dot) is exact.
        rs = dummy
        if norm_eps is not None:
            rs = torch.empty(M, dtype=torch.float32, device=x.device)
            _rms_kernel[(M,)](x, x.stride(0), K, eps, rs, BK=min(1024, triton.next_power_of_2(K)), num_warps=4)
        grid = (triton.cdiv(M, cfg["BM"]), triton.cdiv(n_out, cfg["BN"]))
        _gemm_kernel[grid](x, x.stride(0), w, K, *args, M, n_out, b, rs, *ptrs, **flags, BM=cfg["BM"],
                           BN=cfg["BN"], BK=cfg["BK"], EVEN=even, **launch)
    return out
