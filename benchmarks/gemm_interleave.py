"""Does a GEMM run faster between memory-bound kernels, as in a pass, than back to back, as the GEMM suite times it?

Passes of 512-1,024 rows are priced 4-13% slow on every grid (reports/h100/validation-notes.md, session 10), and a
block step's gate_up ran at ~777 TFLOP/s inside the pass against ~640-700 in the suite (benchmarks/
gemm_context.py, session 8, which found no idle-gap variant that closes the gap). Here each projection of the 8B
model is timed three ways in one CUDA graph of `reps` calls each: back to back (the suite's way); interleaved with a
memory-bound kernel (a sum over `--mem-mb` MB, about what a pass's norms and attention read between two GEMMs); and
that kernel alone. The GEMM's interleaved time is (interleaved - kernel alone) / reps. NVML's SM clock is read after
each graph. Calibration-side only: no validation pass is used.

    python3 benchmarks/gemm_interleave.py [--rows 512,1024] [--mem-mb 64] [--out F.json]
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SHAPES = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336)}


def main() -> None:
    import torch

    from cuda_timing import capture, replay_us, sm_clock_reader

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="512,1024")
    ap.add_argument("--mem-mb", type=float, default=64.0)
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--out")
    a = ap.parse_args()
    clock_mhz = sm_clock_reader()

    dev, bf = "cuda", torch.bfloat16
    buf = torch.randn(int(a.mem_mb * 1e6 / 2), device=dev, dtype=bf)
    acc = torch.empty((), device=dev, dtype=bf)

    def mem():
        torch.sum(buf, 0, out=acc)

    mem_g = capture(torch, mem, a.reps)
    rows_out = []
    for m in (int(r) for r in a.rows.split(",")):
        for name, (n, k) in SHAPES.items():
            x = torch.randn(m, k, device=dev, dtype=bf)
            w = torch.randn(n, k, device=dev, dtype=bf) * k ** -0.5
            y = torch.empty(m, n, device=dev, dtype=bf)

            def gemm(x=x, w=w, y=y):  # bound now: captured into this iteration's graphs
                torch.matmul(x, w.t(), out=y)

            def both(gemm=gemm):
                gemm()
                mem()

            flops = 2.0 * m * n * k
            b2b_g, both_g = capture(torch, gemm, a.reps), capture(torch, both, a.reps)
            res = {"shape": name, "rows": m}
            for label, g in (("back_to_back", b2b_g), ("mem_alone", mem_g), ("interleaved", both_g),
                             ("back_to_back_again", b2b_g)):
                for _ in range(3):  # settle the clock in this state
                    g.replay()
                torch.cuda.synchronize()
                res[f"{label}_us"] = replay_us(torch, g, replays=7, per=a.reps)
                res[f"{label}_mhz"] = clock_mhz()
            gemm_in = res["interleaved_us"] - res["mem_alone_us"]
            res["tflop_s_back_to_back"] = flops / res["back_to_back_us"] / 1e6
            res["tflop_s_interleaved"] = flops / gemm_in / 1e6
            rows_out.append(res)
            print(f"{name:8s} {m:5d} rows: back to back {res['tflop_s_back_to_back']:6.0f} TFLOP/s "
                  f"({res['back_to_back_mhz']} MHz), interleaved {res['tflop_s_interleaved']:6.0f} "
                  f"({res['interleaved_mhz']} MHz), sum kernel {res['mem_alone_us']:.1f} us", flush=True)
    info = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "mem_mb": a.mem_mb, "reps": a.reps}
    if a.out:
        Path(a.out).write_text(json.dumps({**info, "rows": rows_out}, indent=1) + "\n")


if __name__ == "__main__":
    main()
