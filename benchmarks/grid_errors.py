"""Where a measured grid's prediction errors sit, offline (no GPU), for the notes. Two views:

- `--by bucket`: each pass's error grouped by strategy, pass role (a speculative iteration's draft and target
  passes apart) and the CUDA graph the pass replays (sim.runtime_layout.graph_bucket; past GRAPH_MAX_ROWS an
  eager pass keeps its own row count): passes, the median of (predicted - measured) / measured and the p90 of its
  absolute value, and the measured seconds in them. Which row counts the cost model prices badly.
- `--by host`: per run, the serving loop's host time measured (runtime/serve.py, per pass) and predicted by the
  host model (sim.engine.host_s over the same passes), their ratio, and the run's throughput and TTFT errors. Which
  batch sizes and strategies the host model prices short or long.

    python3 benchmarks/grid_errors.py reports/h100/validation-runs.jsonl --by bucket|host \\
        [--profile hw_profiles/calibrated/h100-sxm-calibrated.yaml] [--plan examples/validation/plan-h100.yaml]

Points not measured (or failed) are left out. Run from the repository's root.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sim.errors import UserError  # noqa: E402
from sim.runtime_layout import graph_bucket  # noqa: E402
from validation.validate import plan_scenarios, predict_plan, read_runs  # noqa: E402


def bucket_errors(rows: list[dict]) -> dict[tuple[str, str, int], np.ndarray]:
    """(strategy, pass role, bucket) -> array of (measured_s, predicted_s) of every pass priced in the grid's rows
    (predict_plan's; a point not measured has none)."""
    acc: dict[tuple[str, str, int], list] = defaultdict(list)
    for r in rows:
        for shape, meas, pred in zip(r.get("shapes") or [], r.get("measured_s") or [], r.get("predicted_s") or []):
            acc[(r["strategy"], shape[0], graph_bucket(shape[1]))].append((meas, pred))  # shape: (role, tokens, ...)
    return {k: np.asarray(v, dtype=float) for k, v in acc.items()}


def print_buckets(rows: list[dict]) -> None:
    print(f"{'strategy':16s} {'role':14s} {'bucket':>7s} {'passes':>7s} {'median':>8s} {'p90 |e|':>8s} "
          f"{'measured s':>11s}")
    for (strategy, role, bucket), mp in sorted(bucket_errors(rows).items(), key=lambda kv: (kv[0][2], kv[0][:2])):
        err = mp[:, 1] / mp[:, 0] - 1
        print(f"{strategy:16s} {role:14s} {bucket:7d} {len(err):7d} {np.median(err):+8.1%} "
              f"{np.quantile(np.abs(err), 0.9):8.1%} {mp[:, 0].sum():11.3f}")


def print_host(rows: list[dict]) -> None:
    print(f"{'point':18s} {'strategy':16s} {'host meas ms':>12s} {'host pred ms':>12s} {'pred/meas':>9s} "
          f"{'tput err':>9s} {'TTFT err':>9s}")
    for r in rows:
        measured, predicted = r.get("host_measured_s"), r.get("host_predicted_s")
        if not measured or not predicted:
            continue
        hm, hp = float(np.sum(measured)), float(np.sum(predicted))
        m = r["metrics"]
        ttft = m["ttft_p50_s"]["rel_error"]
        print(f"{r['name']:18s} {r['strategy']:16s} {hm * 1e3:12.1f} {hp * 1e3:12.1f} {hp / hm:9.2f} "
              f"{m['output_throughput_tok_s']['rel_error']:+9.1%} " + (f"{ttft:+9.1%}" if ttft is not None else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs")
    ap.add_argument("--by", choices=("bucket", "host"), default="bucket")
    ap.add_argument("--profile", default="hw_profiles/calibrated/h100-sxm-calibrated.yaml")
    ap.add_argument("--plan", default="examples/validation/plan-h100.yaml")
    args = ap.parse_args()
    try:
        rows = predict_plan(plan_scenarios(Path(args.plan)), read_runs(Path(args.runs)), args.profile)
    except UserError as e:  # a missing or unreadable runs file: one sentence, exit 2
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    (print_buckets if args.by == "bucket" else print_host)(rows)


if __name__ == "__main__":
    main()
