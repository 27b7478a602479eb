"""Do GEMMs run faster when memory-bound work sits between them, as in a pass, once the chip is in a steady power
state? The +4-13% on passes of 512-1,024 rows (reports/h100/validation-notes.md) is mostly their GEMMs: session 8
measured a 1,024-row block step's gate_up at ~780 TFLOP/s inside the pass against ~650-690 in the GEMM suite, which
times each GEMM back to back, power-capped. `gemm_interleave.py` (session 10) put a 64 MB sum (~20 us) between
GEMMs of 100-400 us and saw no consistent gain, at ~90% GEMM duty; this script sweeps the duty.

For each 8B projection at `--rows`, three CUDA graphs of `reps` GEMMs (weights rotating over copies that span
several L2s), each followed by a read of `mem` MB: mem = 0 (the suite's way), and sizes that take about 1/4 and 1/1
of the GEMM's time (GEMM duty ~80% and ~50%). Each graph is replayed back to back for `--sustain` seconds before
it is timed (a steady power state), the memory read alone likewise, and the GEMM's time is (graph - reads) / reps.
The variants are timed in rotation, `--rounds` times, so that drift in the chip's state spreads over all of them.
NVML's power and SM clock are read after each timing. Calibration-side only: no validation pass is used.

    python3 benchmarks/gemm_duty.py [--rows 512,1024] [--sustain 1.0] [--rounds 3] [--out F.json]
"""
import argparse
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SHAPES = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336)}
READ_TB_S = 3.0  # about what a plain sum reads on the H100 (METHOD.md figures), to size the reads


def main() -> None:
    import torch

    from cuda_timing import capture, nvml_state_reader, sustained_us

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="512,1024")
    ap.add_argument("--shapes", default="qkv,o,gate_up,down")
    ap.add_argument("--reps", type=int, default=24)
    ap.add_argument("--sustain", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out")
    a = ap.parse_args()
    state = nvml_state_reader()

    dev, bf = "cuda", torch.bfloat16
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    buf = torch.randn(int(2e9 / 2), device=dev, dtype=bf)  # 2 GB to read slices of
    acc = torch.empty((), device=dev, dtype=bf)

    def sustained(g, per: int) -> float:
        return sustained_us(torch, g, a.sustain, per, batch=10)

    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "sustain_s": a.sustain, "cases": []}
    for rows in [int(r) for r in a.rows.split(",")]:
        for name in a.shapes.split(","):
            N, K = SHAPES[name]
            sets = max(2, math.ceil(3 * l2 / (N * K * 2)))
            ws = [torch.randn(N, K, device=dev, dtype=bf) * K ** -0.5 for _ in range(sets)]
            x = torch.randn(rows, K, device=dev, dtype=bf)
            y = torch.empty(rows, N, device=dev, dtype=bf)
            gemm_us_guess = 2 * rows * N * K / 650e12 * 1e6
            variants = {}
            for label, frac in (("back_to_back", 0.0), ("duty_80", 0.25), ("duty_50", 1.0)):
                mem_elems = int(frac * gemm_us_guess * 1e-6 * READ_TB_S * 1e12 / 2)
                slices = [buf[(i * mem_elems) % (buf.numel() - mem_elems):][:mem_elems] for i in range(a.reps)] \
                    if mem_elems else []
                it = iter(range(10**9))

                def step():
                    i = next(it)
                    torch.matmul(x, ws[i % sets].t(), out=y)
                    if slices:
                        torch.sum(slices[i % a.reps], dim=0, out=acc)

                def read_only():
                    i = next(it)
                    torch.sum(slices[i % a.reps], dim=0, out=acc)

                variants[label] = (capture(torch, step, a.reps), capture(torch, read_only, a.reps) if slices else None,
                                   mem_elems * 2 / 1e6)
            times = {k: [] for k in variants}
            reads = {k: [] for k in variants}
            states = {k: [] for k in variants}
            for _ in range(a.rounds):
                for label, (g, r, _) in variants.items():
                    total = sustained(g, a.reps)
                    states[label].append(state())
                    read = sustained(r, a.reps) if r is not None else 0.0
                    times[label].append(total - read)
                    reads[label].append(read)
            flops = 2 * rows * N * K
            case = {"shape": name, "rows": rows, "N": N, "K": K}
            for label in variants:
                us = statistics.median(times[label])
                case[label] = {"gemm_us": us, "tflop_s": flops / us / 1e6, "read_mb": variants[label][2],
                               "read_us": statistics.median(reads[label]), "rounds_us": times[label],
                               "states": states[label]}
            out["cases"].append(case)
            print(f"{name:8s} {rows:5d} rows  " + "  ".join(
                f"{k} {case[k]['tflop_s']:5.0f} TF/s ({case[k]['read_us']:5.1f} us read, "
                f"{statistics.median(s['power_w'] for s in case[k]['states']):3.0f} W, "
                f"{statistics.median(s['sm_mhz'] for s in case[k]['states']):4.0f} MHz)" for k in variants), flush=True)
            variants = ws = slices = None  # free the graphs and weights before the next shape
            torch.cuda.empty_cache()
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
