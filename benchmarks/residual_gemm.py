"""The residual projections (O and down, `h += x W^T`) as cuBLAS addmm_ (beta = 1, the add in the GEMM's epilogue)
against mm + add_ (two kernels) and mm alone, over the row counts the runtime runs them at: whether beta = 1 makes
cuBLAS pick slower kernels (a profile of a 256-row block step, benchmarks/pass_breakdown.py, showed its residual
GEMMs 22% over the prediction). It does not: addmm_ is as fast as mm (reports/h100/pass-check/).

Each variant is captured 20 times in one CUDA graph and replayed, so the host's pace does not enter.

    python3 benchmarks/residual_gemm.py [--out F.json]
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROWS = (64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512, 768, 1024, 2048)
SHAPES = {"o": (4096, 4096), "down": (4096, 14336)}  # (N, K) of Llama-3-8B


def main() -> None:
    from cuda_timing import graph_time_us
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
