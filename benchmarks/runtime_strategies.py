"""Speculative, diffusion and block-diffusion decoding on one GPU: tokens/s, per-pass times, FLOP-rate fractions.

Run on the GPU machine (repo root, sim's wheels on PYTHONPATH):
    python3 benchmarks/runtime_strategies.py --out $OUT/runtime-strategies.json
(`--tiny` runs the same steps with tiny models on the CPU, as a smoke test.) Every number is measured here:
 1. the large-GEMM rate: an 8192^3 bf16 matmul, CUDA events, median of 10;
 2. llama-3.1-8b-shaped target, random weights, static batches of 1, 8, 64 requests (prompt 128, output 64),
    driven by the shared scheduler through runtime.serve (wall clock): AR (decode under CUDA graphs);
    speculative with a llama-3.2-1b-shaped draft and with self-speculation (8 layers), k = 4, FORCED acceptance
    alpha = 0.8 (random weights never agree; runtime/acceptance.py); block diffusion (block 32, 8 steps per
    block, fused KV write). Per-pass device times by role come from the executors' pass logs;
 3. implied vs measured speculative speedup over AR decoding (prefill excluded): measured = tokens committed in
    the decode iterations (every plan row drafts; SpeculativeExecutor.iter_log) / their summed device time, over
    the AR decode rate b / t_ar (median graph-replayed decode pass); implied = E[n] / (k t_draft + t_verify) * t_ar
    with E[n] = 1 + mean accepted drafts (histogram of the full-k rows) and medians of the full-size draft (b rows)
    and verify (b (k + 1) rows) passes: what the pass times and the histogram imply. Kept alongside: the implied
    rate from mean iteration times, and the wall-clock ratio of the two served runs (prefill included);
 4. llada-8b-shaped bidirectional model: full bidirectional passes of 2,048 and 4,096 query tokens, achieved
    FLOP/s (2 * tokens * matrix params + 4 * L * h * d_h * q * c for attention) against the GEMM rate; diffusion
    at batches 1, 8, 64 (prompt 128, gen_length 64, 16 steps, no cache).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime.block_diffusion import BlockDiffusionExecutor  # noqa: E402
from runtime.diffusion import DiffusionExecutor  # noqa: E402
from runtime.executor import Executor  # noqa: E402
from runtime.forward import SeqInput, build_meta, forward  # noqa: E402
from runtime.model import Transformer  # noqa: E402
from runtime.serve import WallClock, serve  # noqa: E402
from runtime.speculative import SpeculativeExecutor  # noqa: E402
from sim.model import ModelSpec, load_model  # noqa: E402
from sim.scenario import BlockDiffusion as BlockSpec, Diffusion as DiffusionSpec, Speculative as SpecSpec  # noqa
from sim.scenario import Static  # noqa: E402
from sim.strategies.block_diffusion import BlockDiffusion  # noqa: E402
from sim.strategies.diffusion import Diffusion  # noqa: E402
from sim.strategies.speculative import Speculative  # noqa: E402
from sim.workload import Request  # noqa: E402

R: dict = {}
SKIP_BLOCK = False
K, ALPHA, PROMPT, OUTPUT = 4, 0.8, 128, 64


def info(device: str) -> dict:
    out = {"torch": torch.__version__, "python": platform.python_version(), "device": device,
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if device == "cuda":
        import triton

        out.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda, triton=triton.__version__)
        q = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm", "--format=csv,noheader"],
                           capture_output=True, text=True)
        out["nvidia_smi"] = q.stdout.strip()
    return out


def sync(dev):
    if dev == "cuda":
        torch.cuda.synchronize()


def gemm_rate(dev: str, n: int) -> dict:
    dt = torch.bfloat16 if dev == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=dev, dtype=dt), torch.randn(n, n, device=dev, dtype=dt)
    times = []
    for i in range(13):
        sync(dev)
        t0 = time.perf_counter()
        a @ b
        sync(dev)
        if i >= 3:
            times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    return {"n": n, "s": t, "flops_per_s": 2 * n ** 3 / t}


def requests(batch: int) -> list[Request]:
    return [Request(i, 0.0, PROMPT, OUTPUT) for i in range(batch)]


def run(model, executor, strategy, batch, kv_extra, blocks, bt):
    """Serve one static batch; returns (result, executor pass log)."""
    reqs = requests(batch)
    res = serve(reqs, Static(batch_size=batch, kv_block_tokens=bt), executor, blocks,
                {"scenario": "bench", "hardware": "gpu", "model": model.spec.name,
                 "strategy": strategy.kind if strategy else "ar", "batching": "static"},
                seed=0, clock=WallClock(), strategy=strategy, kv_extra=kv_extra)
    return res


def med(xs):
    return float(statistics.median(xs)) if xs else float("nan")


def bench_target(dev, spec, draft_spec, batches, blocks, bt) -> None:
    model = Transformer.random(spec, seed=0, device=dev, max_positions=1024)
    draft = Transformer.random(draft_spec, seed=1, device=dev, max_positions=1024)
    ctx = PROMPT + OUTPUT + 2 * K + 16
    for b in batches:
        row: dict = {}
        R.setdefault("target", {})[str(b)] = row
        # AR
        ex = Executor(model, model.paged_cache(blocks, bt), max_context=ctx)
        run(model, ex, None, b, 0, blocks, bt)  # warm-up (Triton compiles, graph capture)
        ex.tokens.clear()
        t0 = time.perf_counter()
        served = run(model, ex, None, b, 0, blocks, bt)
        decode = [t for (tok, *_), t in zip(served.pass_shapes, served.device_pass_s) if tok == b]
        row["ar"] = {"tok_s": served.result.output_throughput_tok_s, "wall_s": time.perf_counter() - t0,
                     "decode_pass_s_median": med(decode), "decode_tok_per_device_s": b / med(decode)}
        del ex
        # speculative: separate draft and self-speculation, forced acceptance
        for name, kw in (("speculative_draft_1b", {"draft": draft}), ("speculative_self8", {"draft_layers": 8})):
            strat = Speculative(SpecSpec(draft="self" if "draft_layers" in kw else "llama-3.2-1b",
                                         draft_layers=kw.get("draft_layers"), k=K, alpha=ALPHA), K,
                                "draft_layers" in kw)
            for attempt in range(2):  # the first run compiles Triton variants: time the second
                ex = SpeculativeExecutor(model, blocks, bt, acceptance_mode="forced", alpha=ALPHA, seed=attempt,
                                         max_context=ctx, **kw)
                ex.capture()  # graphs of prefills, drafts and verifies, before the clock
                served = run(model, ex, strat, b, K, blocks, bt)
            log = ex.pass_log
            t_d = med([t for r, n, t in log if r == "draft" and n == b])
            t_v = med([t for r, n, t in log if r == "verify" and n == b * (K + 1)])
            full = [a for a, d in zip(ex.accepted, ex.drafted) if d == K]
            e_n_full = 1 + float(np.mean(full))
            t_ar = row["ar"]["decode_pass_s_median"]
            median_model = (e_n_full / (K * t_d + t_v)) * t_ar  # earlier figure: medians of full-size passes only
            # decode iterations: every plan row steps and drafts (prefill iterations excluded). Per iteration, the
            # exact passes the run executed: all its draft passes (catch-up passes included) + its verify pass.
            dec = [it for it in ex.iter_log if it[4] == it[3] > 0]
            t_iter = [d + v for d, v, *_ in dec]
            rows_iter = [it[4] for it in dec]
            hist_all = np.bincount(ex.accepted, minlength=K + 1)  # every drafted row (the decode iterations')
            e_n = 1 + float(np.dot(np.arange(len(hist_all)), hist_all) / hist_all.sum())
            ar_rate = b / t_ar
            implied_iter = (e_n * float(np.mean(rows_iter)) / float(np.mean(t_iter))) / ar_rate
            measured = (sum(it[5] for it in dec) / sum(t_iter)) / ar_rate
            row[name] = {"tok_s": served.result.output_throughput_tok_s, "acceptance": "forced", "alpha": ALPHA,
                         "k": K, "draft_pass_s_median": t_d, "verify_pass_s_median": t_v,
                         "accepted_histogram": np.bincount(full, minlength=K + 1).tolist(),
                         "accepted_histogram_all_rows": hist_all.tolist(),
                         "tokens_per_iteration": e_n_full, "tokens_per_row_iteration": e_n,
                         "decode_iterations": len(dec), "rows_per_iteration_mean": float(np.mean(rows_iter)),
                         "iteration_s_mean": float(np.mean(t_iter)),
                         "iteration_draft_passes_mean": float(np.mean([it[2] for it in dec])),
                         # the check: measured decode speedup vs E[n] / (k t_draft + t_verify) x t_ar
                         "speedup_measured": measured, "speedup_implied": median_model,
                         "speedup_error": measured / median_model - 1,
                         "speedup_implied_from_iterations": implied_iter,
                         "speedup_error_vs_iterations": measured / implied_iter - 1,
                         "speedup_wall_clock": served.result.output_throughput_tok_s / row["ar"]["tok_s"],
                         "iter_log": ex.iter_log, "wasted_positions": served.wasted_positions}
            del ex
        if SKIP_BLOCK:
            print(b, json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "iter_log"} for k, v in row.items()})[:600],
                  flush=True)
            continue
        # block diffusion
        strat = BlockDiffusion(BlockSpec(block_size=32, steps_per_block=8))
        for attempt in range(2):
            ex = BlockDiffusionExecutor(model, strat, blocks - b * 4, bt, max_rows=b)
            ex.capture()  # passes of up to 512 paged rows replay graphs (the fused step is 2 x 32 per row)
            served = run(model, ex, strat, b, 32, blocks - b * 4, bt)
        row["block_diffusion"] = {"tok_s": served.result.output_throughput_tok_s,
                                  "block_step_pass_s_median": med([t for r, n, t in ex.pass_log if r == "block_step"
                                                                   and n == b * 32]),
                                  "fused_step_pass_s_median": med([t for r, n, t in ex.pass_log
                                                                   if r == "block_step" and n == b * 64]),
                                  "tokens_per_step": ex.summary().get("tokens_per_step_measured"),
                                  "wasted_positions": served.wasted_positions}
        del ex
        print(b, json.dumps(row)[:400], flush=True)
    del model, draft


def matrix_params(spec: ModelSpec) -> int:
    d, L = spec.hidden_size, spec.num_layers
    per_layer = d * (spec.num_heads + 2 * spec.num_kv_heads) * spec.d_head + spec.num_heads * spec.d_head * d \
        + 3 * d * spec.intermediate_size
    return L * per_layer + spec.vocab_size * d  # LM head on every row (o = N for diffusion)


def profile_pass(model, n, bt) -> dict:
    """Kernel-level profile of one full bidirectional pass of n tokens, old (float32 torch elementwise) and new
    (fused many-row path) ops, plus SDPA backends alone at that size."""
    from torch.profiler import ProfilerActivity, profile
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import torch.nn.functional as F
    from runtime import ops

    out = {}
    cache = model.paged_cache(-(-n // bt), bt)
    seq = SeqInput(torch.randint(0, model.spec.vocab_size, (n,)).tolist(), 0, list(range(cache.num_blocks)), n,
                   attend="full")
    meta = build_meta([seq], cache, model.device, model.max_positions)
    for fast in (False, True):
        ops.CONFIG.fast_prefill = fast
        for _ in range(2):
            forward(model, cache, meta)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            forward(model, cache, meta)
            torch.cuda.synchronize()
        rows = sorted(prof.key_averages(), key=lambda e: -e.device_time_total)
        total = sum(e.device_time_total for e in rows)
        out[f"fast_prefill={fast}"] = {"device_ms_total": total / 1e3, "top": [
            (e.key[:90], round(e.device_time_total / 1e3, 3), e.count) for e in rows[:14]]}
        print(f"--- fast_prefill={fast}: {total / 1e3:.1f} ms of kernels", flush=True)
        for k, ms, c in out[f"fast_prefill={fast}"]["top"]:
            print(f"{ms:8.2f} ms {c:5d}x {k}", flush=True)
    ops.CONFIG.fast_prefill = True
    H, D = model.spec.num_heads, model.spec.d_head
    qkv = [torch.randn(n, H, D, device="cuda", dtype=torch.bfloat16).transpose(0, 1)[None] for _ in range(3)]
    for name, be in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                     ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
        try:
            with sdpa_kernel([be]):
                ts = []
                for i in range(8):
                    a, b_ = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    a.record()
                    F.scaled_dot_product_attention(*qkv)
                    b_.record()
                    b_.synchronize()
                    if i >= 3:
                        ts.append(a.elapsed_time(b_))
            out[f"sdpa_{name}_ms"] = med(ts)
            print(f"sdpa {name} q={n}: {med(ts):.3f} ms ({4 * H * D * n * n / med(ts) / 1e9:.0f} TFLOP/s)", flush=True)
        except Exception as e:  # a backend that does not take these inputs
            out[f"sdpa_{name}_ms"] = repr(e)[:200]
    del cache
    return out


def bench_diffusion(dev, spec, batches, sizes, gemm_flops, bt, prof=False) -> None:
    model = Transformer.random(spec, seed=0, device=dev, max_positions=4096)
    P = matrix_params(spec)
    if prof and dev == "cuda":
        R["profile"] = {str(n): profile_pass(model, n, bt) for n in sizes}
    for n in sizes:
        cache = model.paged_cache(-(-n // bt), bt)
        seq = SeqInput(torch.randint(0, spec.vocab_size, (n,)).tolist(), 0, list(range(cache.num_blocks)), n,
                       attend="full")
        meta = build_meta([seq], cache, model.device, model.max_positions)
        times = []
        for i in range(6):
            sync(dev)
            t0 = time.perf_counter()
            forward(model, cache, meta)
            sync(dev)
            if i >= 2:
                times.append(time.perf_counter() - t0)
        t = med(times)
        flops = 2 * n * P + 4 * spec.num_layers * spec.num_heads * spec.d_head * n * n
        R.setdefault("diffusion_pass", {})[str(n)] = {"s": t, "flops": flops, "flops_per_s": flops / t,
                                                      "fraction_of_gemm": flops / t / gemm_flops}
        del cache
    for b in batches:
        strat = Diffusion(DiffusionSpec(gen_length=OUTPUT, steps=16))
        per_row = -(-(PROMPT + OUTPUT) // bt)
        pool = b * per_row  # a static batch reserves prompt + response per row, even with nothing cached
        for attempt in range(2):
            ex = DiffusionExecutor(model, strat, pool, bt, max_rows=b, max_positions=PROMPT + OUTPUT)
            served = run(model, ex, strat, b, 0, pool, bt)
        steps = [t for r, n, t in ex.pass_log if r == "diffusion_step"]
        q = b * (PROMPT + OUTPUT)
        flops = 2 * q * P + 4 * spec.num_layers * spec.num_heads * spec.d_head * b * (PROMPT + OUTPUT) ** 2
        R.setdefault("diffusion", {})[str(b)] = {
            "tok_s": served.result.output_throughput_tok_s, "step_pass_s_median": med(steps), "query_tokens": q,
            "fraction_of_gemm": flops / med(steps) / gemm_flops, "wasted_positions": served.wasted_positions}
        print("diffusion", b, R["diffusion"][str(b)], flush=True)
        del ex


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test with tiny models")
    ap.add_argument("--only", choices=("target", "diffusion"), help="run one of the two parts")
    ap.add_argument("--no-block", action="store_true", help="skip block diffusion in the target part")
    ap.add_argument("--profile", action="store_true", help="profile the full diffusion passes (old and new ops)")
    ap.add_argument("--batches", type=lambda x: tuple(int(v) for v in x.split(",")), help="e.g. 1,8,64")
    args = ap.parse_args()
    global SKIP_BLOCK
    SKIP_BLOCK = args.no_block
    dev = "cpu" if args.tiny else "cuda"
    R["device"] = info(dev)
    R["settings"] = {"k": K, "forced_alpha": ALPHA, "prompt": PROMPT, "output": OUTPUT,
                     "note": "speculative acceptance is FORCED (seeded draws at alpha); weights are random"}
    if args.tiny:
        tiny = dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128,
                    vocab_size=256, max_position_embeddings=1024)
        target, draft = ModelSpec(name="t", **tiny), ModelSpec(name="d", **{**tiny, "num_layers": 1})
        target = target.model_copy(update={"num_layers": 9})
        diff = ModelSpec(name="b", attention="bidirectional", **tiny)
        batches, sizes, gemm_n, blocks = (1, 2), (256,), 512, 1024
    else:
        target, draft, diff = load_model("llama-3.1-8b"), load_model("llama-3.2-1b"), load_model("llada-8b")
        batches, sizes, gemm_n, blocks = (1, 8, 64), (2048, 4096), 8192, 2048
    batches = args.batches or batches
    R["command"] = " ".join(sys.argv)
    R["gemm"] = gemm_rate(dev, gemm_n)
    parts = (("target", lambda: bench_target(dev, target, draft, batches, blocks, 16)),
             ("diffusion", lambda: bench_diffusion(dev, diff, batches, sizes, R["gemm"]["flops_per_s"], 16,
                                                   args.profile)))
    for name, fn in parts:
        if args.only and name != args.only:
            continue
        try:
            fn()
        except Exception:
            R.setdefault("errors", {})[name] = traceback.format_exc()[-2000:]
            print(traceback.format_exc(), flush=True)
        if dev == "cuda":
            torch.cuda.empty_cache()
        args.out.write_text(json.dumps(R, indent=1))
    table(R)


def table(r: dict) -> None:
    print(f"\n{r['device'].get('gpu', 'cpu')}  gemm {r['gemm']['flops_per_s'] / 1e12:.0f} TFLOP/s")
    for b, row in r.get("target", {}).items():
        for name, v in row.items():
            extra = (f" draft {v['draft_pass_s_median'] * 1e3:.2f} ms verify {v['verify_pass_s_median'] * 1e3:.2f} ms"
                     f" speedup implied {v['speedup_implied']:.3f} measured {v['speedup_measured']:.3f}"
                     f" ({v['speedup_error']:+.1%}; wall clock {v['speedup_wall_clock']:.3f})"
                     if "speedup_implied" in v else "")
            print(f"b={b:>3} {name:<22} {v['tok_s']:9.1f} tok/s{extra}")
    for n, v in r.get("diffusion_pass", {}).items():
        print(f"diffusion pass q={n}: {v['s'] * 1e3:.1f} ms, {v['flops_per_s'] / 1e12:.0f} TFLOP/s, "
              f"{v['fraction_of_gemm']:.0%} of GEMM")
    for b, v in r.get("diffusion", {}).items():
        print(f"b={b:>3} diffusion {v['tok_s']:9.1f} tok/s step {v['step_pass_s_median'] * 1e3:.1f} ms "
              f"({v['fraction_of_gemm']:.0%} of GEMM)")


if __name__ == "__main__":
    main()
