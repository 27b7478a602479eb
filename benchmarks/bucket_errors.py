"""Per-pass error of a measured grid grouped by the CUDA graph each pass replays (sim.runtime_layout.graph_bucket;
past GRAPH_MAX_ROWS an eager pass keeps its own row count): which row counts the cost model prices badly. Offline,
no GPU; for the notes.

    python3 benchmarks/bucket_errors.py reports/h100/validation-runs.jsonl \\
        [--profile hw_profiles/calibrated/h100-sxm-calibrated.yaml] [--plan examples/validation/plan-h100.yaml]

Prints, per strategy, pass role (a speculative iteration's draft and target passes apart) and bucket: passes, the
median of (predicted - measured) / measured and the p90 of its absolute value, and the measured seconds in them.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs")
    ap.add_argument("--profile", default="hw_profiles/calibrated/h100-sxm-calibrated.yaml")
    ap.add_argument("--plan", default="examples/validation/plan-h100.yaml")
    args = ap.parse_args()
    try:
        rows = predict_plan(plan_scenarios(Path(args.plan)), read_runs(Path(args.runs)), args.profile)
    except UserError as e:  # a missing or unreadable runs file: one sentence, exit 2
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"{'strategy':16s} {'role':14s} {'bucket':>7s} {'passes':>7s} {'median':>8s} {'p90 |e|':>8s} "
          f"{'measured s':>11s}")
    for (strategy, role, bucket), mp in sorted(bucket_errors(rows).items(), key=lambda kv: (kv[0][2], kv[0][:2])):
        err = mp[:, 1] / mp[:, 0] - 1
        print(f"{strategy:16s} {role:14s} {bucket:7d} {len(err):7d} {np.median(err):+8.1%} "
              f"{np.quantile(np.abs(err), 0.9):8.1%} {mp[:, 0].sum():11.3f}")


if __name__ == "__main__":
    main()
