"""The serving loop's host time per forward pass, fitted to the `host` microbenchmark records (validation/
microbench_host.py) for `memwall calibrate`: a fixed part per strategy plus terms in the pass's rows, sequences and
KV blocks (sim.hardware.HardwareProfile.host_pass_s prices it; sim.engine.host_s adds it to every pass)."""

from __future__ import annotations

import numpy as np


def round_sig(v: float, digits: int = 4) -> float:
    return float(f"{v:.{digits}g}") if abs(v) > 1e-9 else 0.0  # (a bound-constrained fit leaves ~1e-15 for 0)


def _host_point(r: dict) -> tuple[str, float, float, float, float] | None:
    """(strategy, rows, sequences, KV blocks, us) per forward pass of a `host` record; AR records of before rows
    were recorded are decodes of `batch` rows, one per sequence; records of before blocks were recorded count 0."""
    sh = r["shape"]
    strategy = sh.get("strategy", "ar")
    blocks = r.get("blocks_per_pass", 0.0)
    if "rows_per_pass" in r:
        return strategy, r["rows_per_pass"], r["seqs_per_pass"], blocks, r["median_s"] * 1e6
    if strategy == "ar":
        return strategy, sh["batch"], sh["batch"], blocks, r["median_s"] * 1e6
    return None


# A strategy without host records takes the fixed part of the executor it works like: the diffusion executor runs
# the block-diffusion executor's per-pass steps (confidences on the device, one transfer, commit rules per row).
# The host microbenchmark has diffusion cases since session 4; records measured before have none (an assumption
# then, not a measurement; said in the calibrated profile).
HOST_LIKE = {"diffusion": "block_diffusion"}


def fit_host(records: list[dict]) -> tuple[float, float, float, float, dict[str, float]] | None:
    """(us per pass, us per row, us per sequence, us per KV block, {strategy: us per pass}) from the `host` records'
    seconds per forward pass: a fixed part per strategy plus terms in the pass's mean rows, sequences and KV blocks
    of its block tables, all >= 0, least squares on the relative error (scipy.optimize.lsq_linear). Rows cost
    staging (each row's inputs), sequences the executor's loop over them, blocks the copy of each sequence's block
    table (64 sequences of 256-384 positions spent 0.51 ms per pass there, benchmarks/host_phases.py); the fixed part
    differs by executor (on the 8B model's shape: ~350-450 us for AR and speculative, ~1 ms for block diffusion,
    whose commit rules run per pass; one plane for all left residuals of -51% to +93% on its own records). The
    first number is AR's fixed part (the default for strategies without records); the dict holds the others. A
    column that the records cannot tell from the others (rows = sequences everywhere, blocks never varied) is
    left out and fitted as 0."""
    from scipy.optimize import lsq_linear

    pts = [p for p in (_host_point(r) for r in records if r["kind"] == "host" and r.get("status", "ok") == "ok")
           if p is not None]
    if not pts:
        return None
    kinds = sorted({p[0] for p in pts}, key=lambda k: (k != "ar", k))
    us = np.array([p[4] for p in pts])
    terms = [np.array([p[i] for p in pts], dtype=float) for i in (1, 2, 3)]  # rows, sequences, blocks
    if len(set(terms[0])) < 2:
        return round_sig(float(np.median(us))), 0.0, 0.0, 0.0, {}
    dummies = np.array([[1.0 if p[0] == k else 0.0 for k in kinds] for p in pts])
    cols, kept = [dummies], []
    for i, t in enumerate(terms):  # each term only where it adds a direction of its own
        trial = np.hstack(cols + [t[:, None]])
        if np.linalg.matrix_rank(trial) == trial.shape[1]:
            cols.append(t[:, None])
            kept.append(i)
    a = np.hstack(cols)
    sol = lsq_linear(a / us[:, None], np.ones_like(us), bounds=(0, np.inf)).x
    fixed = dict(zip(kinds, sol[:len(kinds)]))
    per = [0.0, 0.0, 0.0]
    for j, i in enumerate(kept):
        per[i] = float(sol[len(kinds) + j])
    default = fixed.pop("ar", float(np.mean(list(fixed.values()))))
    for kind, like in HOST_LIKE.items():  # strategies without records of their own
        if kind not in fixed and like in fixed:
            fixed[kind] = fixed[like]
    return (round_sig(float(default)), *(round_sig(v) for v in per), {k: round_sig(float(v)) for k, v in fixed.items()})
