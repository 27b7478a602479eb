"""Offline ablations of the host model (validation/host_fit.py), for the notes; nothing here is adopted. A variant
refits the host terms to the host records, predicts a measured grid with them and prints the throughput errors per
strategy:

- `none`: no part per iteration (the sixth session's structure: a fixed part per forward pass only);
- `shared`: one part per iteration for every strategy (session 7's calibration), instead of the calibrated model's
  part per iteration for the strategies whose iterations chain several passes (speculative);
- `spec-slope`: the calibrated model, but speculative passes with a per-row and per-sequence host term of their own
  (the shared ones fitted on the other strategies' iterations): the lead of session 9's notes, where the host model
  priced speculative short at batch 1 and long at batch 32. The cost model has no such field, so this variant
  prices the grid in this process with HardwareProfile.host_pass_s wrapped for speculative passes.

    python3 benchmarks/host_fit_variants.py reports/h100/microbench.jsonl reports/h100/validation-runs.jsonl \
        --variant shared

The host records used are the last of each key in the microbenchmark file (as `memwall calibrate` reads them);
every other field comes from the calibrated profile (--profile; default hw_profiles/calibrated/h100-sxm-calibrated.yaml).
Run from the repository's root.
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
    sol, _ = hf.solve_design(a, us, scale)
    fixed = {k: round_sig(float(sol[i])) for i, k in enumerate(kinds)}
    return {"host_pass_overhead_us": fixed.pop("ar"), "host_pass_overhead_by_strategy_us": fixed,
            "host_row_overhead_us": round_sig(float(sol[n])), "host_seq_overhead_us": round_sig(float(sol[n + 1])),
            "host_block_overhead_us": round_sig(float(sol[n + 2])),
            "host_eager_pass_overhead_us": round_sig(float(sol[n + 3])),
            "host_eager_row_overhead_us": round_sig(float(sol[n + 4])),
            "host_iteration_overhead_us": round_sig(float(sol[n + 5])) if variant == "shared" else 0.0,
            "host_iteration_overhead_by_strategy_us": {}}


def fit_spec_slope(recs: list[dict]) -> tuple[dict, dict]:
    """The calibrated model's fit (fit_iterations' columns and weights) with the row and sequence columns split:
    speculative iterations' own, and everyone else's. Returns the profile fields and the speculative terms."""
    a, us, scale, names, tags = hf._design(recs)
    spec = np.array([key.startswith("host/speculative/") for key, _ in tags])
    j_row, j_seq = names.index("row"), names.index("seq")
    own = np.column_stack([a[:, j_row] * spec, a[:, j_seq] * spec])
    a[spec, j_row] = 0.0
    a[spec, j_seq] = 0.0
    a = np.column_stack([a, own])
    names = [*names, "row:speculative", "seq:speculative"]
    sol, _ = hf.solve_design(a, us, scale)
    v = {c: round_sig(float(sol[i])) for i, c in enumerate(names)}
    n = names.index("row")
    fixed = {k: v[k] for k in names[:n]}
    fields = {"host_pass_overhead_us": fixed.pop("ar"), "host_pass_overhead_by_strategy_us": fixed,
              "host_row_overhead_us": v["row"], "host_seq_overhead_us": v["seq"], "host_block_overhead_us": v["block"],
              "host_eager_pass_overhead_us": v["eager"], "host_eager_row_overhead_us": v["eager_row"],
              "host_iteration_overhead_us": 0.0,
              "host_iteration_overhead_by_strategy_us": {c.split(":", 1)[1]: v[c] for c in names
                                                         if c.startswith("iteration:")}}
    return fields, {"row": v["row:speculative"], "seq": v["seq:speculative"]}


def predict_in_process(profile: dict, spec_terms: dict, runs: str, tmp: Path) -> tuple[dict, list[dict]]:
    """The grid's summary per strategy (and its rows) with `profile`, speculative passes priced with their own row
    and sequence terms (HardwareProfile.host_pass_s wrapped for this process only)."""
    from sim.hardware import HardwareProfile
    from validation.validate import plan_scenarios, predict_plan, read_runs
    from validation.validation_report import summarize

    path = tmp / "spec-slope.yaml"
    path.write_text(yaml.safe_dump({**profile, "name": f"{profile['name']}-spec-slope"}))
    plain = HardwareProfile.host_pass_s

    def host_pass_s(self, rows, seqs=0, strategy=None, blocks=0):
        if strategy != "speculative":
            return plain(self, rows, seqs, strategy, blocks)
        fixed = self.host_pass_overhead_by_strategy_us.get(strategy, self.host_pass_overhead_us)
        return (fixed + spec_terms["row"] * rows + spec_terms["seq"] * seqs
                + self.host_block_overhead_us * blocks) * 1e-6

    HardwareProfile.host_pass_s = host_pass_s
    try:
        rows = predict_plan(plan_scenarios(Path(PLAN)), read_runs(Path(runs)), str(path))
    finally:
        HardwareProfile.host_pass_s = plain
    return summarize([r for r in rows if r["measured_s"]]), rows


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
    ap.add_argument("--variant", choices=("none", "shared", "spec-slope"), default="shared")
    ap.add_argument("--profile", default=PROFILE, help="the calibrated profile the other fields come from")
    a = ap.parse_args()
    last = {}
    for line in Path(a.microbench).read_text().splitlines():
        r = json.loads(line)
        last[r["key"]] = r
    recs = [r for r in last.values() if r["kind"] == "host" and r.get("status", "ok") == "ok" and r.get("iterations")]
    base = yaml.safe_load(Path(a.profile).read_text())
    if a.variant == "spec-slope":
        fields, spec_terms = fit_spec_slope(recs)
        print(f"{a.variant}: {fields}; speculative row {spec_terms['row']} us, sequence {spec_terms['seq']} us")
        with tempfile.TemporaryDirectory() as tmp:
            summary, rows = predict_in_process({**base, **fields}, spec_terms, a.runs, Path(tmp))
        for r in rows:  # the speculative runs' host time, predicted over measured
            if r["strategy"] == "speculative" and r.get("host_measured_s"):
                print(f"  {r['name']}: host predicted / measured "
                      f"{sum(r['host_predicted_s']) / sum(r['host_measured_s']):.2f}")
    else:
        fields = fit(recs, a.variant)
        print(f"{a.variant}: {fields}")
        with tempfile.TemporaryDirectory() as tmp:
            summary = predict({**base, **fields}, a.runs, Path(tmp), a.variant)
    for s in ("ar", "speculative", "diffusion", "block_diffusion"):
        st = summary[s]["output_throughput_tok_s"]
        print(f"  {s}: throughput {100 * st['median']:.1f}% / {100 * st['p90']:.1f}%")


if __name__ == "__main__":
    main()
