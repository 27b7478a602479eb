"""Measured (`memwall run --out FILE`) versus simulated, per scenario: the Result fields side by side and the
per-pass time error of the cost model. Usage: python benchmarks/run_vs_sim.py RUNS.jsonl [--hardware PROFILE]"""

from __future__ import annotations

import argparse
import json

import numpy as np

from sim.cost import CostModel
from sim.engine import prepare, simulate
from sim.passes import PassShape
from sim.scenario import scenario_from_dict


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs")
    ap.add_argument("--hardware", default=None, help="profile to predict with (default: the scenario's)")
    a = ap.parse_args()
    for line in open(a.runs):
        rec = json.loads(line)
        if rec["status"] != "ok":
            print(rec["scenario"]["name"], rec["status"])
            continue
        data = rec["scenario"]
        if a.hardware:
            data = {**data, "hardware": a.hardware}
        s = scenario_from_dict(data)
        pred = simulate(s)[0]
        meas = rec["result"]
        cost: CostModel = prepare(s).target_cost
        errs = []
        for tokens, rows, seqs, c, pairs, dev in rec["passes"]:
            t = cost.pass_time(PassShape(tokens, rows, seqs, c, pairs, tokens)).time_s
            errs.append((t - dev) / dev)
        errs = np.abs(np.array(errs))
        print(f"== {s.name} on {rec['device'].get('gpu')} (predicted with {pred.hardware})")
        print(f"per-pass |pred-meas|/meas: median {np.median(errs):.1%}, p90 {np.percentile(errs, 90):.1%}, "
              f"max {errs.max():.1%}, n {len(errs)}")
        for k in ("output_throughput_tok_s", "makespan_s", "passes"):
            print(f"{k:28s} measured {meas[k]:>12.4g}  simulated {getattr(pred, k):>12.4g}")
        for k in ("ttft_s", "tpot_s", "itl_s", "e2e_s"):
            m, p = meas[k]["p50"], getattr(pred, k).p50
            print(f"{k + ' p50':28s} measured {m:>12.4g}  simulated {p:>12.4g}")


if __name__ == "__main__":
    main()
