"""The residual projections (O and down, `h += x W^T`) as cuBLAS addmm_ (beta = 1, the add in the GEMM's epilogue)
against mm + add_ (two kernels), over the row counts the runtime runs them at. A profile of a 256-row block step
(benchmarks/pass_breakdown.py) found the down projection's addmm_ at 80 us against 57 us for the plain matmul of the
same shape in the GEMM microbenchmark: cuBLAS picks another kernel when beta = 1.

Each variant is captured 20 times in one CUDA graph and replayed, so the host's pace does not enter.

    python3 benchmarks/residual_gemm.py [--out F.json]
"""
import argparse
import json
from pathlib import Path

ROWS = (64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512, 768, 1024, 2048)
SHAPES = {"o": (4096, 4096), "down": (4096, 14336)}  # (N, K) of Llama-3-8B


def graph_time_us(torch, fn, reps: int = 20) -> float:
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(reps):
            fn()
    g.replay()
    torch.cuda.synchronize()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(5):
        e0.record()
        g.replay()
        e1.record()
        torch.cuda.synchronize()
        times.append(e0.elapsed_time(e1) * 1e3 / reps)
    return sorted(times)[len(times) // 2]


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    a = ap.parse_args()
    out = []
    print(f"{'proj':5} {'M':>5} {'addmm_ us':>10} {'mm+add us':>10} {'mm us':>8}")
    for name, (N, K) in SHAPES.items():
        w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16) * 0.02
        for M in ROWS:
            x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
            h = torch.randn(M, N, device="cuda", dtype=torch.bfloat16)
            y = torch.empty(M, N, device="cuda", dtype=torch.bfloat16)
            t_addmm = graph_time_us(torch, lambda: h.addmm_(x, w.T))
            t_mm_add = graph_time_us(torch, lambda: h.add_(torch.mm(x, w.T, out=y)))
            t_mm = graph_time_us(torch, lambda: torch.mm(x, w.T, out=y))
            out.append({"proj": name, "M": M, "N": N, "K": K, "addmm_us": t_addmm, "mm_add_us": t_mm_add,
                        "mm_us": t_mm})
            print(f"{name:5} {M:5d} {t_addmm:10.1f} {t_mm_add:10.1f} {t_mm:8.1f}")
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
