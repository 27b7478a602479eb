"""Would longer runs steady a Poisson point's TTFT? Offline (no GPU): the elasticity and jitter of one measured run's
TTFT p50 (validation/load_sensitivity.py) with the same rate and more requests, priced on a profile.

    python3 benchmarks/load_length.py RUNS.jsonl NAME [--profile P] [--requests 64,128,256,512]

e.g. `python3 benchmarks/load_length.py reports/h100/validation-runs.jsonl load-block-41` (the figures in
reports/h100/validation-notes.md, session 11).
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from validation.calibrate import CALIBRATED_H100
    from validation.load_sensitivity import _shapes_device_s, device_elasticity
    from validation.records_file import iter_records

    ap = argparse.ArgumentParser()
    ap.add_argument("runs")
    ap.add_argument("name")
    ap.add_argument("--profile", default=str(CALIBRATED_H100))
    ap.add_argument("--requests", default="64,128,256,512")
    a = ap.parse_args()
    recs = [r for _, r in iter_records(Path(a.runs), "validation runs")
            if r.get("status") == "ok" and r.get("scenario", {}).get("name") == a.name]
    if not recs:
        sys.exit(f"{a.runs}: no finished run named {a.name}")
    rec = recs[-1]
    print(f"{a.name}: {rec['scenario']['workload']}")
    for n in (int(x) for x in a.requests.split(",")):
        scenario = {**rec["scenario"], "hardware": a.profile,
                    "workload": {**rec["scenario"]["workload"], "num_requests": n}}
        nominal, fits, _ = device_elasticity(scenario, device_time=lambda hw: _shapes_device_s(rec, hw))
        fit = fits["ttft_p50_s"]
        shown = "-" if fit is None else f"elasticity {fit[0]:.2f}, jitter {fit[1]:.1%}"
        print(f"  {n:5d} requests: TTFT p50 {nominal.ttft_s.p50 * 1e3:.1f} ms, {shown}")


if __name__ == "__main__":
    main()
