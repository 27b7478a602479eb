"""Measured runs of the same plan side by side: per point, throughput, makespan, summed device time and summed host
time (the serving loop's wall time outside its passes' device time, runtime/serve.py), for two or more run files
(e.g. two runtimes, or repeats of one).

    python3 benchmarks/compare_runs.py old=A.jsonl new=B.jsonl [old=C.jsonl new=D.jsonl ...] [--out F.json]

Files with the same label are repeats: a point's figures are their median. Prints one row per point and label,
then each label's median ratio to the first label.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path


def point_figures(record: dict) -> dict:
    """Throughput, makespan, device and host seconds of one run record (validation/run.py)."""
    res = record["result"]
    device_col = record["pass_columns"].index("device_s")
    device_s = sum(p[device_col] for p in record["passes"])
    host_s = sum(record.get("pass_host_s") or [])
    return {"tok_s": res["output_throughput_tok_s"], "makespan_s": res["makespan_s"], "device_s": device_s,
            "host_s": host_s, "host_share": host_s / res["makespan_s"] if res["makespan_s"] else 0.0,
            "passes": len(record["passes"])}


def load(args: list[str]) -> dict[str, dict[str, list[dict]]]:
    """label -> point name -> figures of each repeat."""
    out: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for arg in args:
        label, _, path = arg.partition("=")
        if not path:
            raise SystemExit(f"give each run file as LABEL=PATH, got {arg!r}")
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as e:
            raise SystemExit(f"cannot read run file {path}: {e.strerror}")
        for line in lines:
            rec = json.loads(line)
            if rec.get("status") == "ok":
                out[label][rec["scenario"]["name"]].append(point_figures(rec))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="LABEL=PATH of a run file (JSONL of memwall validate)")
    ap.add_argument("--out", help="write the figures and ratios as JSON here")
    a = ap.parse_args()
    runs = load(a.runs)
    if not runs:
        raise SystemExit("no successful runs in the files given")
    labels = list(runs)
    summary = {lab: {pt: {f: statistics.median(r[f] for r in reps) for f in reps[0]} for pt, reps in pts.items()}
               for lab, pts in runs.items()}
    print(f"{'point':<12} {'label':<8} {'reps':>4} {'tok/s':>9} {'makespan s':>11} {'device s':>9} {'host s':>8} "
          f"{'host %':>7}")
    for pt in sorted({p for lab in labels for p in summary[lab]}):
        for lab in labels:
            f = summary[lab].get(pt)
            if f:
                print(f"{pt:<12} {lab:<8} {len(runs[lab][pt]):>4} {f['tok_s']:>9.1f} {f['makespan_s']:>11.3f} "
                      f"{f['device_s']:>9.3f} {f['host_s']:>8.3f} {100 * f['host_share']:>6.1f}%")
    base = labels[0]
    ratios = {}
    for lab in labels[1:]:
        common = [p for p in summary[lab] if p in summary[base]]
        ratios[lab] = {f: statistics.median(summary[lab][p][f] / summary[base][p][f] for p in common
                                            if summary[base][p][f]) for f in ("tok_s", "device_s", "host_s")}
        print(f"{lab} / {base}, median over {len(common)} points: throughput x{ratios[lab]['tok_s']:.3f}, "
              f"device x{ratios[lab]['device_s']:.3f}, host x{ratios[lab]['host_s']:.3f}")
    if a.out:
        Path(a.out).write_text(json.dumps({"points": summary, "repeats": runs, "ratios_to_" + base: ratios}, indent=1))


if __name__ == "__main__":
    main()
