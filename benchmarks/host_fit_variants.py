"""Offline ablations of the host model (validation/host_fit.py), for the notes; nothing here is adopted. A variant
refits the host terms to the host records, predicts a measured grid with them and prints the throughput errors per
strategy:

- `none`: no part per iteration (the sixth session's structure: a fixed part per forward pass only);
- `shared`: one part per iteration for every strategy (session 7's calibration), instead of the calibrated model's
  part per iteration for the strategies whose iterations chain several passes (speculative).

    python3 benchmarks/host_fit_variants.py reports/h100/microbench.jsonl reports/h100/validation-runs.jsonl \
        --variant shared

The host records used are the last of each key in the microbenchmark file (as `memwall calibrate` reads them);
every other field comes from hw_profiles/calibrated/h100-sxm-calibrated.yaml. Run from the repository's root.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml
from scipy.optimize import lsq_linear

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import validation.host_fit as hf  # noqa: E402
from validation.host_fit import round_sig  # noqa: E402

PROFILE = "hw_profiles/calibrated/h100-sxm-calibrated.yaml"
PLAN = "examples/validation/plan-h100.yaml"


def fit(recs: list[dict], variant: str) -> dict:
    """The host fields of the variant, fitted as fit_iterations does: columns that add a direction of their own,
    bounded least squares on the relative error."""
    a, us, scale, names, tags = hf._design(recs)
    iteration = [j for j, c in enumerate(names) if c.startswith("iteration:")]
    n = len(names) - len(iteration) - 5
    kinds = names[:n]
    a = np.delete(a, iteration, axis=1)
    if variant == "shared":
        a = np.column_stack([a, np.ones(len(a))])
    keep: list[int] = []
    for j in range(a.shape[1]):
        trial = a[:, keep + [j]]
        if a[:, j].any() and np.linalg.matrix_rank(trial) == trial.shape[1]:
            keep.append(j)
    sol = np.zeros(a.shape[1])
    sol[keep] = lsq_linear(a[:, keep] / scale[:, None], us / scale, bounds=(0, np.inf)).x
    fixed = {k: round_sig(float(sol[i])) for i, k in enumerate(kinds)}
    return {"host_pass_overhead_us": fixed.pop("ar"), "host_pass_overhead_by_strategy_us": fixed,
            "host_row_overhead_us": round_sig(float(sol[n])), "host_seq_overhead_us": round_sig(float(sol[n + 1])),
            "host_block_overhead_us": round_sig(float(sol[n + 2])),
            "host_eager_pass_overhead_us": round_sig(float(sol[n + 3])),
            "host_eager_row_overhead_us": round_sig(float(sol[n + 4])),
            "host_iteration_overhead_us": round_sig(float(sol[n + 5])) if variant == "shared" else 0.0,
            "host_iteration_overhead_by_strategy_us": {}}


def predict(profile: dict, runs: str, tmp: Path, tag: str) -> dict:
    """`memwall validate --predict --json` of the grid with `profile`: its summary per strategy."""
    path = tmp / f"{tag}.yaml"
    path.write_text(yaml.safe_dump({**profile, "name": f"{profile['name']}-{tag}"}))
    out = subprocess.run([sys.executable, "-m", "validation.cli", "validate", PLAN, "--predict", "--hardware",
                          str(path), "--runs", runs, "--json"], capture_output=True, text=True, check=True).stdout
    return json.loads(out)["summary"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("microbench", help="microbenchmark records (JSONL) holding the host records")
    ap.add_argument("runs", help="the measured grid (JSONL)")
    ap.add_argument("--variant", choices=("none", "shared"), default="shared")
    a = ap.parse_args()
    last = {}
    for line in Path(a.microbench).read_text().splitlines():
        r = json.loads(line)
        last[r["key"]] = r
    recs = [r for r in last.values() if r["kind"] == "host" and r.get("status", "ok") == "ok" and r.get("iterations")]
    fields = fit(recs, a.variant)
    print(f"{a.variant}: {fields}")
    with tempfile.TemporaryDirectory() as tmp:
        summary = predict({**yaml.safe_load(Path(PROFILE).read_text()), **fields}, a.runs, Path(tmp), a.variant)
    for s in ("ar", "speculative", "diffusion", "block_diffusion"):
        st = summary[s]["output_throughput_tok_s"]
        print(f"  {s}: throughput {100 * st['median']:.1f}% / {100 * st['p90']:.1f}%")


if __name__ == "__main__":
    main()
