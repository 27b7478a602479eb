"""Offline ablation of the host model (not adopted): a part per iteration for speculative iterations only, instead
of the calibrated profile's part per iteration for every strategy; predicts a measured grid with it and prints the
throughput errors per strategy (speculative runs priced with the speculative iteration part, the others without).

    python3 benchmarks/host_fit_variants.py reports/h100/microbench.jsonl reports/h100/validation-runs.jsonl LABEL

The host records used are the last of each key in the microbenchmark file (as `memwall calibrate` reads them);
the other fields come from hw_profiles/calibrated/h100-sxm-calibrated.yaml. Run from the repository's root."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from scipy.optimize import lsq_linear

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import validation.host_fit as hf  # noqa: E402
from validation.host_fit import round_sig  # noqa: E402


def fit_spec_iter(recs):
    a, us, scale, names, tags = hf._design(recs)
    n = len(names) - 6
    kinds = names[:n]
    it = np.array([1.0 if t[0].startswith("host/speculative") else 0.0 for t in tags])
    a = np.column_stack([a[:, :-1], it])  # drop the global iteration column, add a speculative one
    keep = []
    for j in range(a.shape[1]):
        t = a[:, keep + [j]]
        if a[:, j].any() and np.linalg.matrix_rank(t) == t.shape[1]:
            keep.append(j)
    sol = np.zeros(a.shape[1])
    sol[keep] = lsq_linear(a[:, keep] / scale[:, None], us / scale, bounds=(0, np.inf)).x
    fixed = {k: round_sig(float(sol[i])) for i, k in enumerate(kinds)}
    return fixed, sol, n

def main(micro: str, runs: str, label: str) -> None:
    recs = [json.loads(l) for l in open(micro)]
    last = {}
    for r in recs: last[r["key"]] = r
    recs = [r for r in last.values() if r["kind"] == "host" and r.get("status", "ok") == "ok" and r.get("iterations")]
    fixed, sol, n = fit_spec_iter(recs)
    base = yaml.safe_load(open("hw_profiles/calibrated/h100-sxm-calibrated.yaml"))
    common = dict(host_row_overhead_us=round_sig(float(sol[n])), host_seq_overhead_us=round_sig(float(sol[n + 1])),
                  host_block_overhead_us=round_sig(float(sol[n + 2])), host_eager_pass_overhead_us=round_sig(float(sol[n + 3])),
                  host_eager_row_overhead_us=round_sig(float(sol[n + 4])))
    ar = fixed.pop("ar")
    profA = {**base, **common, "host_pass_overhead_us": ar, "host_pass_overhead_by_strategy_us": fixed,
             "host_iteration_overhead_us": round_sig(float(sol[-1]))}  # for speculative runs
    profB = {**profA, "host_iteration_overhead_us": 0.0}  # for the others
    print(label, "fit:", {"ar": ar, **fixed, "spec_iteration": round_sig(float(sol[-1])), **common})
    out = {}
    for tag, prof in (("A", profA), ("B", profB)):
        prof["name"] = base["name"] + "-abl" + tag
        yaml.safe_dump(prof, open(f"/tmp/abl{tag}.yaml", "w"))
        r = subprocess.run([sys.executable, "-m", "validation.cli", "validate", "examples/validation/plan-h100.yaml", "--predict",
                            "--hardware", f"/tmp/abl{tag}.yaml", "--runs", runs, "--json"], capture_output=True, text=True)
        out[tag] = json.loads(r.stdout)["summary"]
    for s in ("ar", "speculative", "diffusion", "block_diffusion"):
        st = out["A" if s == "speculative" else "B"][s]["output_throughput_tok_s"]
        print(f"  {s}: throughput {100*st['median']:.1f}% / {100*st['p90']:.1f}%")

if __name__ == "__main__":
    main(*sys.argv[1:4])
