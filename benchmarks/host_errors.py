"""Per run of a measured grid: the serving loop's host time measured (runtime/serve.py, per pass) and predicted by
the host model (sim.engine.host_s over the same passes), with their ratio and the run's throughput and TTFT errors.
Offline, no GPU; for the notes (which batch sizes and strategies the host model prices short or long).

    python3 benchmarks/host_errors.py reports/h100/validation-runs.jsonl \\
        [--profile hw_profiles/calibrated/h100-sxm-calibrated.yaml] [--plan examples/validation/plan-h100.yaml]

Run from the repository's root.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sim.errors import UserError  # noqa: E402
from validation.validate import plan_scenarios, predict_plan, read_runs  # noqa: E402


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
    print(f"{'point':18s} {'strategy':16s} {'host meas ms':>12s} {'host pred ms':>12s} {'pred/meas':>9s} "
          f"{'tput err':>9s} {'TTFT err':>9s}")
    for r in rows:
        measured, predicted = r.get("host_measured_s"), r.get("host_predicted_s")
        if not measured or not predicted:  # not measured, or failed
            continue
        hm, hp = float(np.sum(measured)), float(np.sum(predicted))
        m = r["metrics"]
        ttft = m["ttft_p50_s"]["rel_error"]
        print(f"{r['name']:18s} {r['strategy']:16s} {hm * 1e3:12.1f} {hp * 1e3:12.1f} {hp / hm:9.2f} "
              f"{m['output_throughput_tok_s']['rel_error']:+9.1%} " + (f"{ttft:+9.1%}" if ttft is not None else ""))


if __name__ == "__main__":
    main()
