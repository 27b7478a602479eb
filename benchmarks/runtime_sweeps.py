"""Kernel-configuration sweeps and graph timing for the runtime benchmarks (used by runtime_decode.py --sweep).

Each configuration is timed the way a decode step runs it: many launches back to back inside one CUDA graph, over
distinct weight copies (16) or the 32 layers' KV caches, so weights come from HBM rather than L2 and launch gaps are
those of a graph; the CUDA-event time of the replay divided by the launches is the per-call time. Every
configuration is first checked against a float32 torch reference on the same inputs; one that is wrong or does
not compile is recorded as such and skipped. The fastest correct one is written into the kernels' TUNED tables.
"""

from __future__ import annotations

import math
import statistics

import torch

from runtime.kernels import linear as L


def events_ms(fn, reps: int, warmup: int = 5) -> list[float]:
    """CUDA-event time of each of `reps` calls, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b))
    return out


def graph_time_us(calls, reps: int = 10) -> float:
    """Median per-call time of `calls` (a list of closures) replayed back to back inside one CUDA graph."""
    for c in calls[:2]:
        c()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for c in calls:
            c()
    times = events_ms(g.replay, reps, warmup=2)
    return statistics.median(times) * 1e3 / len(calls)


GEMV_CONFIGS = [dict(BN=bn, BK=bk, num_warps=w, num_stages=1)
                for bn, bk, w in [(2, 1024, 4), (4, 512, 4), (4, 1024, 4), (8, 512, 4), (8, 1024, 8), (16, 256, 4),
                                  (4, 2048, 8)]]
GEMM_CONFIGS = [dict(BM=64, BN=bn, BK=bk, num_warps=w, num_stages=s)
                for bn, bk, w, s in [(32, 128, 4, 4), (64, 128, 4, 4), (32, 256, 4, 3), (16, 256, 4, 4),
                                     (16, 512, 4, 3)]]


def sweep_projections(model, cache, rows_list=(1, 8, 32, 64, 128), copies: int = 16) -> dict:
    """Time every config of every projection shape; fill L.TUNED with the fastest correct one."""
    spec, lw = model.spec, model.weights.layers[0]
    eps = spec.rms_norm_eps
    shapes = {"qkv": (lw.qkv, L.EPI_ROPE_QKV), "o": (lw.o, L.EPI_RESIDUAL), "gate_up": (lw.gate_up, L.EPI_SWIGLU),
              "down": (lw.down, L.EPI_RESIDUAL), "lm_head": (model.weights.lm_head, L.EPI_STORE)}
    out = {}
    for name, (w0, epi) in shapes.items():
        n_copies = 1 if name == "lm_head" else copies
        ws = [w0] + [torch.randn_like(w0) * 0.02 for _ in range(n_copies - 1)]
        for m in rows_list:
            K = w0.shape[1]
            x = torch.randn(m, K, device="cuda", dtype=w0.dtype)
            res = torch.randn(m, w0.shape[0], device="cuda", dtype=w0.dtype)
            pos = torch.full((m,), 100, device="cuda", dtype=torch.long)
            slots = torch.arange(m, device="cuda", dtype=torch.long)
            rope = dict(cos=model.cos, sin=model.sin, positions=pos, slots=slots, k_cache=cache.k[0],
                        v_cache=cache.v[0], n_q_heads=spec.num_heads, n_kv_heads=spec.num_kv_heads)
            kw = dict(epi=epi, norm_eps=None if epi == L.EPI_RESIDUAL else eps,
                      rope=rope if epi == L.EPI_ROPE_QKV else None,
                      out_dtype=torch.float32 if name == "lm_head" else None)

            def call(cfg, w):
                return L.linear(x, w, out=res if epi == L.EPI_RESIDUAL else None, config=cfg, **kw)

            ref_cfg_out = None
            rows = []
            n_out = w0.shape[0] // (2 if epi in (L.EPI_SWIGLU, L.EPI_ROPE_QKV) else 1)
            gemm = [dict(c, BM=min(64, max(16, m))) for c in GEMM_CONFIGS]
            if m >= 128:
                gemm += [dict(c, BM=128, num_warps=8) for c in GEMM_CONFIGS[:3]]
            for cfg in (GEMV_CONFIGS if m == 1 else gemm):
                try:
                    if epi == L.EPI_RESIDUAL:
                        res.copy_(torch.zeros_like(res))
                    y = call(cfg, w0).float().clone()
                    if ref_cfg_out is None:  # the reference: torch in float32 on the same inputs
                        ref = (x.float() @ w0.float().T)
                        if epi != L.EPI_RESIDUAL:
                            ref = ref * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)
                        if epi == L.EPI_SWIGLU:
                            g, u = ref.chunk(2, -1)
                            ref = torch.nn.functional.silu(g) * u
                        ref_cfg_out = ref
                    if epi == L.EPI_ROPE_QKV:  # check Q: rotate the reference's Q heads by the same tables
                        H, D = spec.num_heads, spec.d_head
                        from runtime.rope import apply_rope
                        qr = apply_rope(ref_cfg_out[:, :H * D].reshape(m, H, D), model.cos[pos], model.sin[pos])
                        err = ((y - qr.reshape(m, -1)).norm() / qr.norm()).item()
                    else:
                        err = ((y - ref_cfg_out).norm() / ref_cfg_out.norm()).item()
                    if err is not None and not err < 2e-2:
                        rows.append({"cfg": cfg, "error": f"rel err {err}"})
                        continue
                    us = graph_time_us([lambda w=w: call(cfg, w) for w in ws])
                    nbytes = w0.numel() * w0.element_size()
                    rows.append({"cfg": cfg, "us": us, "bytes_per_s": nbytes / (us / 1e6), "rel_err": err})
                except Exception as e:  # a config that does not compile (e.g. out of shared memory) is skipped
                    rows.append({"cfg": cfg, "error": f"{type(e).__name__}: {str(e)[:200]}"})
            # cuBLAS reference on the same shape (plain x @ W^T, nothing fused)
            cub = graph_time_us([lambda w=w: torch.mm(x, w.T) for w in ws])
            ok = [r for r in rows if "us" in r]
            best = min(ok, key=lambda r: r["us"]) if ok else None
            if best:
                L.TUNED[(L.rows_bucket(m), n_out, K, epi)] = best["cfg"]
            out[f"{name}/m{m}"] = {"shape": list(w0.shape), "configs": rows, "best": best, "cublas_us": cub,
                                   "cublas_bytes_per_s": w0.numel() * w0.element_size() / (cub / 1e6)}
            print(f"  {name:8s} m={m:<3d} best {best['us'] if best else float('nan'):8.1f} us "
                  f"({best['bytes_per_s'] / 1e12 if best else 0:.2f} TB/s) cfg {best['cfg'] if best else None}; "
                  f"cuBLAS {cub:8.1f} us", flush=True)
        del ws
        torch.cuda.empty_cache()
    # buckets not swept take the nearest swept row count's config (BM clipped to the bucket)
    for (b, n_out, K, epi), cfg in list(L.TUNED.items()):
        for nb, src in ((2, 8), (4, 8), (16, 8), (256, 128)):
            if b == src:
                L.TUNED.setdefault((nb, n_out, K, epi), dict(cfg, BM=min(cfg["BM"], max(16, nb))))
    return out


def sweep_attention(model, cache, ctx: int, batches) -> dict:
    """Paged decode attention configs per batch, each timed as 32 back-to-back launches over the 32 layers' caches
    in one CUDA graph (as in a decode step); the fastest fills PA.TUNED."""
    from runtime.kernels import paged_attention as PA
    spec = model.spec
    per_seq = math.ceil((ctx + 1) / cache.block_tokens)
    out = {}
    for b in batches:
        perm = torch.randperm(cache.num_blocks, generator=torch.Generator().manual_seed(b))[:b * per_seq]
        tables = perm.view(b, per_seq).to(device="cuda", dtype=torch.int32)
        lens = torch.full((b,), ctx + 1, device="cuda", dtype=torch.int32)
        q = torch.randn(b, spec.num_heads, spec.d_head, device="cuda", dtype=model.dtype)
        kv_bytes = b * (ctx + 1) * spec.kv_bytes_per_token("bf16") / spec.num_layers
        rows = []
        for splits in (1, 2, 4, 8, 16):
            programs = b * spec.num_kv_heads * splits
            if programs < 64 or programs > 16384:
                continue
            for bt, st in ((32, 2), (64, 2), (64, 3), (128, 2)):
                cfg = dict(splits=splits, block_t=bt, num_warps=4, num_stages=st)
                try:
                    us = graph_time_us([lambda layer=layer: PA.paged_decode(q, cache.k[layer], cache.v[layer],
                                                                            tables, lens,
                                                                    spec.d_head ** -0.5, config=cfg)
                                        for layer in range(spec.num_layers)])
                    rows.append({"cfg": cfg, "us": us, "bytes_per_s": kv_bytes / (us / 1e6)})
                except Exception as e:
                    rows.append({"cfg": cfg, "error": f"{type(e).__name__}: {str(e)[:200]}"})
        ok = [r for r in rows if "us" in r]
        best = min(ok, key=lambda r: r["us"])
        default = PA.default_config(b, spec.num_kv_heads)
        PA.TUNED[min(256, 1 << (b - 1).bit_length())] = best["cfg"]
        out[str(b)] = {"configs": rows, "best": best, "default": default}
        print(f"  attention b={b:4d}: best {best['us']:7.1f} us ({best['bytes_per_s'] / 1e12:.2f} TB/s) {best['cfg']}"
              f" (default {default})", flush=True)
    return out
