"""Does the bias of a grid's 512-1,024-row passes follow how busy its run kept the chip? Offline (no GPU).

For each measured run with at least five passes of 448-1,024 rows: the median of predicted / measured - 1 over those
passes, and the run's heavy duty, the share of its makespan spent in passes of 256 rows or more (the compute-bound
ones; decode passes and the host's time between passes are the rest). If the chip runs GEMMs faster when it has been
less busy (reports/h100/pass-check/README.md, session 11), runs of low heavy duty show the larger error; the
Spearman rank correlation says how consistently.

    python3 benchmarks/bias_vs_duty.py RUNS.jsonl [--profile P]
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import numpy as np
    from scipy.stats import spearmanr

    from validation.calibrate import CALIBRATED_H100
    from validation.records_file import iter_records
    from validation.validation_report import predict_run

    ap = argparse.ArgumentParser()
    ap.add_argument("runs")
    ap.add_argument("--profile", default=str(CALIBRATED_H100))
    a = ap.parse_args()
    rows = []
    for _, rec in iter_records(Path(a.runs), "validation runs"):
        if rec.get("status") != "ok":
            continue
        p = predict_run(rec, a.profile)
        makespan = rec["result"].get("makespan_s") or 0.0
        if not p["measured_s"] or makespan <= 0:
            continue
        meas, pred = np.array(p["measured_s"]), np.array(p["predicted_s"])
        tokens = np.array([s[1] for s in p["shapes"]])
        mid = (tokens >= 448) & (tokens <= 1024)
        if mid.sum() < 5:
            continue
        rows.append((p["name"], int(mid.sum()), float(np.median(pred[mid] / meas[mid] - 1)),
                     float(meas[tokens >= 256].sum() / makespan)))
    for name, n, err, duty in rows:
        print(f"{name:18s} {n:4d} passes of 448-1,024 rows: median error {err:+.1%}, heavy duty {duty:.2f}")
    if len(rows) >= 3:
        rho, pval = spearmanr([r[2] for r in rows], [r[3] for r in rows])
        print(f"Spearman (error, heavy duty) over {len(rows)} runs: {rho:+.2f} (p = {pval:.2g})")


if __name__ == "__main__":
    main()
