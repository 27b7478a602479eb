"""Why the 1,024-row block steps run faster than priced (reports/h100/validation-notes.md: +11-12% on every grid
since session 4): a block step's cuBLAS GEMMs ran at ~777 TFLOP/s inside the pass (benchmarks/pass_breakdown.py,
15:53 UTC in session 8: gate_up 310 us per layer) against 644 in the GEMM microbenchmark's record of the same shape
(1,024 x 28,672 x 4,096, 373.6 us, session 1). This times the 8B's projection shapes at 512-2,048 rows the way the
microbenchmark does (`torch.matmul(x, W.t(), out=)`, `_randn` inputs, one CUDA graph replayed back to back) and the
ways that differ from it, one at a time:

- `call`: `x @ W.T` without `out=` (the runtime's call for qkv and gate_up);
- `weights`: weights scaled as the runtime's random weights (randn * K^-0.5) and inputs normalized (RMS 1);
- `cool`: one replay after 0.3 s idle, instead of replays back to back after others (the GPU's power state);
- `hot`: the same after 2 s of 8,192^3 GEMMs (at the power cap);

with the SM clock (NVML) read after each, and the kernel cuBLAS picked (torch.profiler).

    python3 benchmarks/gemm_context.py [--rows 512,1024,2048] [--out F.json]
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SHAPES = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336)}


def main() -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from cuda_timing import capture, sm_clock_reader

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="512,1024,2048")
    ap.add_argument("--out")
    a = ap.parse_args()
    clock = sm_clock_reader()

    def timed(g, n: int = 1) -> float:
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        g.replay()
        e1.record()
        e1.synchronize()
        return e0.elapsed_time(e1) * 1e3 / n

    big = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    heat = capture(torch, lambda: big @ big, reps=20)

    def heat_up(seconds: float) -> None:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            heat.replay()
        torch.cuda.synchronize()

    rows_out = []
    for M in (int(x) for x in a.rows.split(",")):
        for name, (N, K) in SHAPES.items():
            flops = 2 * M * N * K
            w_bench = torch.randn(N, K, device="cuda", dtype=torch.bfloat16)
            x_bench = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
            w_run = (torch.randn(N, K, device="cuda", dtype=torch.bfloat16) * K ** -0.5).to(torch.bfloat16)
            x_run = torch.nn.functional.rms_norm(torch.randn(M, K, device="cuda", dtype=torch.bfloat16), (K,))
            out = torch.empty(M, N, device="cuda", dtype=torch.bfloat16)
            variants = {"bench": lambda: torch.matmul(x_bench, w_bench.t(), out=out),
                        "call": lambda: x_bench @ w_bench.T,
                        "weights": lambda: torch.matmul(x_run, w_run.t(), out=out)}
            rec = {"rows": M, "shape": name, "N": N, "K": K}
            for v, fn in variants.items():
                reps = max(1, int(2e-3 / (flops / 700e12)))  # ~2 ms a replay, as the microbenchmark's graphs
                g = capture(torch, fn, reps=reps)
                heat_up(0.3)  # back to back after other work, as in the microbenchmark suite
                ts = [timed(g, reps) for _ in range(15)]
                rec[v] = {"us": sorted(ts)[7], "tflops": flops / sorted(ts)[7] / 1e6, "sm_mhz": clock()}
                if v == "bench":
                    g1 = capture(torch, fn, reps=1)
                    torch.cuda.synchronize()
                    cool = []
                    for _ in range(5):
                        time.sleep(0.3)
                        cool.append(timed(g1))
                    rec["cool"] = {"us": sorted(cool)[2], "tflops": flops / sorted(cool)[2] / 1e6, "sm_mhz": clock()}
                    heat_up(2.0)
                    hot = [timed(g1) for _ in range(5)]
                    rec["hot"] = {"us": sorted(hot)[2], "tflops": flops / sorted(hot)[2] / 1e6, "sm_mhz": clock()}
                    with profile(activities=[ProfilerActivity.CUDA]) as prof:
                        fn()
                        torch.cuda.synchronize()
                    rec["kernel"] = [e.name[:70] for e in prof.events() if e.device_type.name == "CUDA"][:2]
            rows_out.append(rec)
            print(f"{M:5d} {name:8s} " + "  ".join(f"{v} {rec[v]['tflops']:5.0f} TF/s @{rec[v]['sm_mhz']}"
                                                    for v in ("bench", "call", "weights", "cool", "hot"))
                  + f"  {rec['kernel'][0] if rec['kernel'] else ''}", flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(rows_out, indent=1))


if __name__ == "__main__":
    main()
