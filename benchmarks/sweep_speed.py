"""How many sweep points per second `run_sweep` gets on this machine (issue [sweep]).

A 2,000-point sweep of short scenarios: 5 chips x 4 bandwidth scales x 5 batch widths x 20 Poisson rates, llama-3.1-8b
with 8 requests of 128 + 32 tokens each, so that each point costs a few milliseconds and the sweep machinery
(expansion, validation, shipping to workers, JSONL, Parquet) is visible. Prints points/s for the whole call
(expansion and table writing included), for the workers given and, as the baseline, for one in-process worker,
with the CPU seconds spent: on a shared machine, points per CPU-second is the figure that other load disturbs least.

    python benchmarks/sweep_speed.py                # all cores, then 1 worker
    python benchmarks/sweep_speed.py --workers 2 --no-serial
    python benchmarks/sweep_speed.py --ray          # a private local Ray instead of local processes
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from validation.sweep import resolve_points, run_sweep
from validation.sweep_spec import expand, load_sweep

SWEEP = {
    "name": "speed",
    "base": {
        "model": "llama-3.1-8b",
        "batching": {"kind": "continuous"},
        "workload": {"kind": "poisson", "num_requests": 8, "input_len": 128, "output_len": 32},
    },
    "slo": {"ttft_s": 0.5, "tpot_s": 0.05},
    "axes": {
        "hardware": [{"profile": chip, "scale": {"bandwidth": [1.0, 1.5, 2.0, 3.0]}}
                     for chip in ("h100-sxm", "h200", "a100-80gb-sxm", "b200", "mi300x")],
        "batching.max_batch": [1, 2, 4, 8, 16],
        "workload.rate_qps": {"start": 1.0, "stop": 64.0, "num": 20, "log": True},
    },
}


def cpu_s() -> float:
    """CPU seconds of this process and of its reaped children (the local workers, once the pool has joined)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed_run(workers: int | None, ray: bool) -> tuple[int, float, float]:
    """Points, wall seconds and CPU seconds (Ray's workers are not our children: their CPU is not counted)."""
    with tempfile.TemporaryDirectory() as out:
        t0, c0 = time.perf_counter(), cpu_s()
        o = run_sweep(SWEEP, out, workers=workers, ray_address="local" if ray else None, progress=False)
        dt, dc = time.perf_counter() - t0, cpu_s() - c0
    assert o.ran == o.points == 2000, o
    return o.points, dt, dc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    ap.add_argument("--ray", action="store_true", help="run on a private local Ray")
    ap.add_argument("--no-serial", action="store_true", help="skip the one-worker baseline")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} (1 min) at start")
    t0 = time.perf_counter()
    spec, where, root = load_sweep(SWEEP)
    resolve_points(expand(spec, where, root), where)
    print(f"expand + validate 2,000 points: {time.perf_counter() - t0:.2f} s")
    runs = [(args.workers or os.cpu_count(), args.ray)] + ([] if args.no_serial else [(1, False)])
    for workers, ray in runs:
        n, dt, dc = timed_run(workers, ray)
        how = f"ray, {workers} CPUs" if ray else f"{workers} local worker(s)"
        cpu = "" if ray else f"; {dc:.1f} CPU-s = {n / dc:,.0f} points per CPU-second"
        print(f"{how}: {n:,} points in {dt:.1f} s = {n / dt:,.0f} points/s{cpu}")
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) at end")


if __name__ == "__main__":
    main()
