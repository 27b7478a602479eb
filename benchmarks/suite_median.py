"""The GEMM records of several GEMM suites merged into one per key (the median of their times), for an offline look
at how much of a grid's error is one suite's noise: append the output to a call's records and calibrate from that.

Each input is FILE@HH:MM: the GEMM records of FILE dated from HH:MM to the end of that hour (a records file can hold
several calls' suites). Keys measured by fewer than `--min-suites` suites are left out. A diagnostic (session 10,
reports/h100/validation-notes.md): a calibration from other calls' suites is not the protocol's, which calibrates
from the validation call's own records.

    python3 benchmarks/suite_median.py reports/h100/microbench.jsonl@17:05 D2/m.jsonl@17:25 ... --out median.jsonl
"""
import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from validation.records_file import iter_records  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("suites", nargs="+", help="FILE@HH:MM, one per suite")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--min-suites", type=int, default=2)
    args = ap.parse_args(argv)
    times: dict[str, list[float]] = defaultdict(list)
    proto: dict[str, dict] = {}
    for spec in args.suites:
        path, _, hhmm = spec.partition("@")
        if len(hhmm) != 5 or not Path(path).is_file():
            print(f"{spec}: expected FILE@HH:MM with an existing FILE", file=sys.stderr)
            return 2
        for _, rec in iter_records(Path(path), "microbenchmark records"):
            t = rec.get("date", "")[11:16]
            if rec.get("kind") == "gemm" and rec.get("status") == "ok" and t[:2] == hhmm[:2] and t >= hhmm:
                times[rec["key"]].append(rec["median_s"])
                proto[rec["key"]] = rec
    kept = 0
    with args.out.open("w") as f:
        for key, v in times.items():
            if len(v) >= args.min_suites:
                f.write(json.dumps({**proto[key], "median_s": statistics.median(v),
                                    "note": f"median of {len(v)} GEMM suites (benchmarks/suite_median.py)"}) + "\n")
                kept += 1
    print(f"{kept} keys written to {args.out} (of {len(times)}; suites per key: "
          f"{min(map(len, times.values()), default=0)}-{max(map(len, times.values()), default=0)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
