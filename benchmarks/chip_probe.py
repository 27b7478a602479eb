"""Two whole-chip figures taken by the method of the one H200 measurement this project can cite, so that an H100 run
of it sits beside that figure like for like (validation/second_hand.py puts both next to the profiles' predictions).

The device library's notes on the `nvidia-h200` kind (/work/.library/device/KINDS.md, "seen working here,
2026-10-28") record, on an H200: a device-to-device copy through PyTorch moving 8.6 GB (read + written) in 2.0 ms,
and an 8192 x 8192 x 8192 bf16 product at 788 TFLOP/s on random data, 894 on zeros, "each the mean of ten timed
products after three warm-ups; one run of each, zeros second". The copy's timing is not described further; it is
timed here the same way as the products. memwall's own microbenchmarks time the same operators differently (CUDA
graph replays back to back, medians over sets), which on the H100 gives ~700 TFLOP/s for this product: the method
matters, hence this script.

Each figure is taken `--runs` times (default 5) in one process; the first run is the method's figure, the others
show its spread. GPU only.

    python3 benchmarks/chip_probe.py --out reports/h100/chip-probe.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

COPY_BYTES_MOVED = 8.6e9  # read + written, as the note counts them
GEMM_N = 8192
WARMUPS, TIMED = 3, 10


def _mean_of_ten_s(torch, fn, *args) -> float:
    """Mean seconds of TIMED calls of fn(*args) after WARMUPS, each between its own CUDA events."""
    for _ in range(WARMUPS):
        fn(*args)
    torch.cuda.synchronize()
    times = []
    for _ in range(TIMED):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(*args)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3)
    return statistics.fmean(times)


def probe(runs: int) -> dict:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("chip_probe.py: no CUDA device; it measures the GPU.")
    elems = int(COPY_BYTES_MOVED / 2 / 2)  # bf16 elements of the source (and of the destination)
    src = torch.randn(elems, device="cuda", dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    moved = 2 * src.numel() * src.element_size()
    copy_s = [_mean_of_ten_s(torch, torch.Tensor.copy_, dst, src) for _ in range(runs)]
    del src, dst
    flops = 2.0 * GEMM_N ** 3
    operands = {d: [make(GEMM_N, GEMM_N, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
                for d, make in (("random", torch.randn), ("zeros", torch.zeros))}
    out: dict[str, list[float]] = {"random": [], "zeros": []}
    for _ in range(runs):  # each run: random, then zeros, as in the note (the products heat the chip: order matters)
        for data, (a, b) in operands.items():
            out[data].append(_mean_of_ten_s(torch, torch.matmul, a, b))
    props = torch.cuda.get_device_properties(0)
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30).stdout.split("\n")[0].strip()
    except (OSError, subprocess.SubprocessError):
        driver = None
    return {
        "method": f"mean of {TIMED} timed calls after {WARMUPS} warm-ups, CUDA events per call; runs in one process, "
                  "the first is the method's figure",
        "copy": {"bytes_moved": moved, "mean_s": copy_s, "tb_s": [moved / s / 1e12 for s in copy_s]},
        "gemm": {"mnk": GEMM_N, "flops": flops,
                 **{f"{d}_mean_s": v for d, v in out.items()},
                 **{f"{d}_tflop_s": [flops / s / 1e12 for s in v] for d, v in out.items()}},
        "device": props.name, "sm_count": props.multi_processor_count, "driver": driver, "torch": torch.__version__,
        "cuda": torch.version.cuda, "python": platform.python_version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="JSON file to write")
    ap.add_argument("--runs", type=int, default=5, help="repeats of each figure (>= 1)")
    args = ap.parse_args(argv)
    if args.runs < 1:
        print(f"--runs must be >= 1, got {args.runs}.", file=sys.stderr)
        return 2
    rec = probe(args.runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rec, indent=1) + "\n")
    print(f"{rec['device']}: copy {rec['copy']['tb_s'][0]:.2f} TB/s (runs {min(rec['copy']['tb_s']):.2f}-"
          f"{max(rec['copy']['tb_s']):.2f}); {GEMM_N}^3 bf16 random {rec['gemm']['random_tflop_s'][0]:.0f} TFLOP/s "
          f"(runs {min(rec['gemm']['random_tflop_s']):.0f}-{max(rec['gemm']['random_tflop_s']):.0f}), zeros "
          f"{rec['gemm']['zeros_tflop_s'][0]:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
