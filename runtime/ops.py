"""The operations of one decoder layer, each a torch reference with a fused Triton path on CUDA.

`forward.py` calls these and nothing else, so there is one forward pass whatever the device or batch. The torch
branch is the reference: float32 on CPU for the tests, and on the GPU the path for passes with more rows than
`CONFIG.triton_max_rows` (prefill, where cuBLAS GEMMs and SDPA are the right tools). The Triton branch runs the
same math with fewer launches (kernels/linear.py says what is fused) and is what CUDA graphs capture for decode.

Weights are in the fused layout of weights.py: norm weights are folded into `qkv`, `gate_up`, `router` and
`lm_head`, so every "norm + projection" below is (x W'^T) * rsqrt(mean(x^2) + eps).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from runtime.rope import apply_rope
from sim.runtime_layout import RUNTIME_TRITON_MAX_ROWS


@dataclass
class OpsConfig:
    triton: bool = True  # use the Triton kernels for CUDA bf16/fp16 tensors
    triton_max_rows: int = RUNTIME_TRITON_MAX_ROWS  # projections of passes with more tokens use torch (cuBLAS)
    cublas_residual_rows: int = 64  # residual projections with at least this many rows use cuBLAS addmm_
    triton_on_cpu: bool = False  # tests only: run the Triton branch on CPU float32 under TRITON_INTERPRET=1
    fast_prefill: bool = True  # passes over triton_max_rows: norm before the bf16 GEMMs, fused RoPE/SwiGLU kernels


CONFIG = OpsConfig()
_kernels = None


def kernels():
    """(linear, paged_attention) kernel modules, or None where Triton is missing (imported on first CUDA use)."""
    global _kernels
    if _kernels is None:
        try:
            from runtime.kernels import linear, paged_attention, prefill
            _kernels = (linear, paged_attention, prefill)
        except ImportError:
            _kernels = False
    return _kernels or None


def _fast_attention(x: torch.Tensor) -> bool:
    on_device = (x.is_cuda and x.dtype in (torch.bfloat16, torch.float16)) or CONFIG.triton_on_cpu
    return CONFIG.triton and on_device and kernels() is not None


def _fast(x: torch.Tensor) -> bool:
    """Triton for this projection: a CUDA half-precision input of at most triton_max_rows rows."""
    return x.shape[0] <= CONFIG.triton_max_rows and _fast_attention(x)


def _prefill_fast(x: torch.Tensor) -> bool:
    """The many-row path with fused elementwise kernels: cuBLAS GEMMs in the model dtype on normalized inputs,
    RoPE + cache write and silu * up in one Triton pass each (kernels/prefill.py), no float32 [T, N] products."""
    return CONFIG.fast_prefill and not _fast(x) and _fast_attention(x)


def normed(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x / rms(x), in x's dtype (float32 arithmetic); the norm weight is folded into the next matrix."""
    if x.is_cuda and hasattr(F, "rms_norm"):
        return F.rms_norm(x, (x.shape[-1],), eps=eps)
    return (x.float() * rms_scale(x, eps)).to(x.dtype)


def rms_scale(x: torch.Tensor, eps: float) -> torch.Tensor:
    """1 / rms(x) per row, float32 [T, 1] (RMSNorm without its weight, which is folded into the next matrix)."""
    return torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)


def qkv_rope_write(h: torch.Tensor, lw, layer: int, model, cache, meta) -> torch.Tensor:
    """norm -> fused QKV projection -> RoPE on Q and K -> K, V into the cache at meta.slots. Returns Q [T, h, d_h]."""
    spec = model.spec
    T, H, KVH, D = h.shape[0], spec.num_heads, spec.num_kv_heads, spec.d_head
    if _fast(h) and D % 2 == 0:
        rope = dict(cos=model.cos, sin=model.sin, positions=meta.positions, slots=meta.slots,
                    k_cache=cache.k[layer], v_cache=cache.v[layer], n_q_heads=H, n_kv_heads=KVH)
        q = kernels()[0].linear(h, lw.qkv, epi=kernels()[0].EPI_ROPE_QKV, norm_eps=spec.rms_norm_eps,
                                bias=lw.qkv_bias, rope=rope)
        return q.view(T, H, D)
    if _prefill_fast(h) and D % 2 == 0 and (D // 2) & (D // 2 - 1) == 0 and cache.k.dtype == h.dtype:
        qkv = normed(h, spec.rms_norm_eps) @ lw.qkv.T
        if lw.qkv_bias is not None:
            qkv += lw.qkv_bias.to(qkv.dtype)
        return kernels()[2].rope_write(qkv, model.cos, model.sin, meta.positions, meta.slots, cache.k[layer],
                                       cache.v[layer], H, KVH)
    qkv = (h @ lw.qkv.T).float() * rms_scale(h, spec.rms_norm_eps)
    if lw.qkv_bias is not None:
        qkv = qkv + lw.qkv_bias.float()
    q, k, v = qkv.split([H * D, KVH * D, KVH * D], dim=-1)
    cos, sin = model.cos[meta.positions], model.sin[meta.positions]
    q = apply_rope(q.reshape(T, H, D), cos, sin)
    k = apply_rope(k.reshape(T, KVH, D), cos, sin)
    cache.write(layer, meta.slots, k, v.reshape(T, KVH, D))
    return q.to(h.dtype)


# cuDNN attention is left out of causal and masked spans: it builds an execution plan for every new (q, c) shape,
# 43-894 ms on the H100 (reports/h100/sdpa/, benchmarks/sdpa_first_call.py), and prompts and chunks of continuous
# batching bring new shapes all the time; flash and memory-efficient attention have no per-shape step. Unmasked
# bidirectional spans (diffusion steps) keep SDPA's own choice, cuDNN: their shape repeats every step, and cuDNN ran
# a q = 2,048 layer in 0.155 ms against flash's 0.251 (reports/h100/runtime-strategies.md).
SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: int, causal: bool,
          limits: torch.Tensor | None = None) -> torch.Tensor:
    """q [n, q, h, d_h] at positions start.. against k, v [n, c, h_kv, d_h] at 0..c-1 -> [n, q, h, d_h], for n
    sequences of the same shape (the 3-d forms [q, h, d_h], [c, h_kv, d_h] are one sequence). Causal: query i sees
    keys <= start + i (bottom-right aligned: SDPA's own is_causal is top-left for q != c). `limits` [q], when given,
    overrides both: query i sees keys 0 .. limits[i] - 1 (block-causal masks)."""
    one = q.dim() == 3
    if one:
        q, k, v = q[None], k[None], v[None]
    _, nq, H, _ = q.shape
    c, KVH = k.shape[1], k.shape[2]
    if KVH != H:  # GQA: repeat KV heads explicitly (every SDPA backend accepts that; enable_gqa is not universal)
        k, v = k.repeat_interleave(H // KVH, dim=2), v.repeat_interleave(H // KVH, dim=2)
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # [n, heads, len, d_h]
    fixed_shape = not causal and limits is None  # diffusion steps: the same shape every step of a request
    with sdpa_kernel(SDPA_BACKENDS) if q.is_cuda and not fixed_shape else contextlib.nullcontext():
        o = _sdpa_call(qt, kt, vt, start, causal, limits, nq, c).transpose(1, 2)
    return o[0] if one else o


def _sdpa_call(qt, kt, vt, start: int, causal: bool, limits, nq: int, c: int) -> torch.Tensor:
    """The SDPA call of `_sdpa` on [n, heads, len, d_h] operands, with the mask its arguments ask for."""
    dev = qt.device
    if limits is not None:
        mask = torch.arange(c, device=dev)[None, :] < limits[:, None]
        return F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask)
    if not causal or nq == 1:
        return F.scaled_dot_product_attention(qt, kt, vt)
    if start == 0 and nq == c:
        return F.scaled_dot_product_attention(qt, kt, vt, is_causal=True)
    mask = torch.arange(c, device=dev)[None, :] <= (start + torch.arange(nq, device=dev))[:, None]
    return F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask)


def attention(q: torch.Tensor, cache, layer: int, meta, causal: bool) -> torch.Tensor:
    """Attention of every query row over its sequence's cached K/V (already holding this pass's tokens).
    Paged rows (decodes, verifies, block steps) go through one batched paged kernel on CUDA; longer spans through
    SDPA over their gathered pages, one call per group of consecutive same-shape sequences. Returns [T, h * d_h]."""
    T, H, D = q.shape
    out = q if meta.decode_rows is None else torch.empty_like(q)
    if meta.num_decode:
        qd = q if meta.decode_rows is None else q.index_select(0, meta.decode_rows)
        if _fast_attention(q) and D & (D - 1) == 0:
            od = kernels()[1].paged_decode(qd.contiguous(), cache.k[layer], cache.v[layer], meta.block_tables,
                                           meta.context_lens, D ** -0.5, groups=meta.groups)
        else:
            od = torch.stack([
                _sdpa(qd[i:i + 1], *cache.read(layer, torch.tensor(bt, device=q.device), c), c - 1, causal)[0]
                for i, (bt, c) in enumerate(zip(meta.decode_tables, meta.decode_lens))])
        if meta.decode_rows is None:
            out = od
        else:
            out[meta.decode_rows] = od
    for span in meta.prefills:  # `count` consecutive sequences of one shape: one batched call
        n, rows = span.count, span.count * span.q
        k, v = cache.read_many(layer, span.block_ids, span.context or span.start + span.q)
        o = _sdpa(q[span.row:span.row + rows].reshape(n, span.q, H, D), k, v, span.start, causal and not span.full,
                  span.limits)
        out[span.row:span.row + rows] = o.reshape(rows, H, D)
    return out.reshape(T, H * D)


def add_linear(h: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> None:
    """h += x W^T, in place (the residual add after the O and down projections). From
    CONFIG.cublas_residual_rows rows on, cuBLAS's GEMM with beta = 1 (addmm_) does the add in its epilogue and beat
    the Triton GEMM on the H100 (o: 15.3 vs 17.0 us, down: 47.5 vs 49.9 us at 64 rows; NOTES-runtime.md)."""
    if _fast(x) and x.shape[0] < CONFIG.cublas_residual_rows:
        kernels()[0].linear(x, w, epi=kernels()[0].EPI_RESIDUAL, out=h)
    elif h.is_cuda:
        h.addmm_(x, w.T)
    else:
        h += x @ w.T


def swiglu(h: torch.Tensor, gate_up: torch.Tensor, eps: float) -> torch.Tensor:
    """norm -> [gate; up] projection -> silu(gate) * up (Shazeer 2020). Returns [T, I]."""
    if _fast(h):
        return kernels()[0].linear(h, gate_up, epi=kernels()[0].EPI_SWIGLU, norm_eps=eps)
    if _prefill_fast(h):
        return kernels()[2].silu_mul(normed(h, eps) @ gate_up.T)
    gu = (h @ gate_up.T).float() * rms_scale(h, eps)
    g, u = gu.chunk(2, dim=-1)
    return (F.silu(g) * u).to(h.dtype)


def moe(h: torch.Tensor, lw, top_k: int, eps: float) -> None:
    """Mixture-of-experts SwiGLU, added into h in place (Mixtral: softmax over the top-k router logits,
    Jiang et al. 2024 eq. 1). Each expert runs on the rows routed to it only (torch path in every case)."""
    rs = rms_scale(h, eps)
    logits = (h @ lw.router.T).float() * rs
    top_v, top_i = logits.topk(top_k, dim=-1)
    gate = torch.softmax(top_v, dim=-1)
    out = torch.zeros(h.shape, dtype=torch.float32, device=h.device)
    for e in range(lw.router.shape[0]):
        rows, which = (top_i == e).nonzero(as_tuple=True)
        if rows.numel() == 0:
            continue
        x = h.index_select(0, rows)
        g, u = ((x @ lw.experts_gate_up[e].T).float() * rs[rows]).chunk(2, dim=-1)
        y = (F.silu(g) * u).to(h.dtype) @ lw.experts_down[e].T
        out.index_add_(0, rows, y.float() * gate[rows, which, None])
    h += out.to(h.dtype)


def confidence(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(softmax probability of the argmax float32 [R], argmax int64 [R]) of float32 logits [R, V], on their device:
    one streaming read on CUDA (kernels/confidence.py), max + logsumexp in torch otherwise."""
    if logits.is_cuda and CONFIG.triton and kernels() is not None or CONFIG.triton_on_cpu and kernels() is not None:
        from runtime.kernels.confidence import confidence as fused

        return fused(logits)
    mx, tok = logits.max(dim=-1)
    return torch.exp(mx.float() - torch.logsumexp(logits.float(), dim=-1)), tok


def lm_head(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """Final norm and LM head: float32 logits [O, V]."""
    if _fast(x):
        return kernels()[0].linear(x, w, norm_eps=eps, out_dtype=torch.float32)
    if _prefill_fast(x):  # bf16 operands, float32 accumulate written straight out (no bf16 round trip)
        xn = normed(x, eps)
        try:
            return torch.mm(xn, w.T, out_dtype=torch.float32)
        except (TypeError, RuntimeError):
            return (xn @ w.T).float()
    return (x @ w.T).float() * rms_scale(x, eps)
