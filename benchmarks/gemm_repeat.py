"""How far two timings of the GEMM suite (`memwall microbench --only gemm`) lie apart, key by key: the ratio of
the second file's time to the first's over the cuBLAS bf16 records of at least --min-rows rows (the ones the
projection factors are made of). Offline; for the notes.

    python3 benchmarks/gemm_repeat.py FIRST.jsonl SECOND.jsonl [--min-rows 256]

Each file's last successful record of a key counts (as `memwall calibrate` reads them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def gemm_records(path: Path, min_rows: int) -> dict[str, dict]:
    out = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        sh = r.get("shape", {})
        if (r.get("kind") == "gemm" and r.get("status") == "ok" and r.get("dtype") == "bf16"
                and sh.get("impl", "cublas") == "cublas" and sh.get("M", 0) >= min_rows):
            out[r["key"]] = r
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first", type=Path)
    ap.add_argument("second", type=Path)
    ap.add_argument("--min-rows", type=int, default=256)
    a = ap.parse_args()
    for p in (a.first, a.second):
        if not p.is_file():
            print(f"error: {p} is not a file of microbenchmark records", file=sys.stderr)
            sys.exit(2)
    t1, t2 = gemm_records(a.first, a.min_rows), gemm_records(a.second, a.min_rows)
    keys = sorted(set(t1) & set(t2))
    if not keys:
        print("error: the two files share no cuBLAS GEMM record of that many rows", file=sys.stderr)
        sys.exit(2)
    r = np.array([t2[k]["median_s"] / t1[k]["median_s"] for k in keys])
    off = np.abs(r - 1)
    print(f"{len(keys)} records: second / first time median {np.median(r):.3f}, p90 of |ratio - 1| "
          f"{np.quantile(off, 0.9):.1%}, {np.mean(off > 0.05):.0%} more than 5% apart, min {r.min():.2f}, "
          f"max {r.max():.2f}")
    # does the SM clock NVML read during each case explain the difference? (microbench's `telemetry` per record)
    clock = [((t2[k].get("telemetry") or {}).get("sm_clock_mhz"), (t1[k].get("telemetry") or {}).get("sm_clock_mhz"))
             for k in keys]
    both = [i for i, (c2, c1) in enumerate(clock) if c2 and c1]
    if len(both) > 2:
        clock_ratio = np.array([clock[i][0] / clock[i][1] for i in both])
        speed_ratio = 1 / r[both]
        print(f"{len(both)} with an SM clock read in both: correlation of the clock ratio with the speed ratio "
              f"{np.corrcoef(clock_ratio, speed_ratio)[0, 1]:.2f}")


if __name__ == "__main__":
    main()
