"""The serving loop's host time, fitted to the `host` microbenchmark records (validation/microbench_host.py) for
`memwall calibrate`: per forward pass replayed from a CUDA graph, a fixed part per strategy plus terms in its rows,
sequences and KV blocks; per eager pass (a prompt past the graphs' rows), a fixed part plus a term in its rows
(sim.hardware.HardwareProfile.host_pass_s / host_eager_pass_s price them; sim.engine.host_s adds them to every
pass)."""

from __future__ import annotations

import numpy as np

from sim.errors import UserError
from sim.runtime_layout import host_eager


def round_sig(v: float, digits: int = 4) -> float:
    return float(f"{v:.{digits}g}") if abs(v) > 1e-9 else 0.0  # (a bound-constrained fit leaves ~1e-15 for 0)


# A strategy without host records takes the fixed part of the executor it works like: the diffusion executor runs
# the block-diffusion executor's per-pass steps (confidences on the device, one transfer, commit rules per row).
# The host microbenchmark has diffusion cases since session 4; records measured before have none (an assumption
# then, not a measurement; said in the calibrated profile).
HOST_LIKE = {"diffusion": "block_diffusion"}
FIELDS = ("host_pass_overhead_us", "host_row_overhead_us", "host_seq_overhead_us", "host_block_overhead_us",
          "host_pass_overhead_by_strategy_us", "host_eager_pass_overhead_us", "host_eager_row_overhead_us",
          "host_iteration_overhead_us", "host_iteration_overhead_by_strategy_us")


def _ok_host(records: list[dict]) -> list[dict]:
    return [r for r in records if r["kind"] == "host" and r.get("status", "ok") == "ok"]


def fit_host(records: list[dict]) -> dict | None:
    """The host model's profile fields (FIELDS) fitted to the `host` records, with `residuals` (median, p90 of
    |pred / meas - 1| of each run's mean host time per iteration) and `method`; None without host records.

    Where records carry `iterations` (session 6 on: every iteration's own host time and its forward passes' shapes),
    those alone are fitted, per iteration (`fit_iterations`), and older records in the same file are left out (they
    are usually another machine's: host time is the machine's, reports/h100/validation-notes.md); otherwise the
    records' means per run are (`fit_runs`)."""
    recs = _ok_host(records)
    with_iterations = [r for r in recs if r.get("iterations")]
    fit = (fit_iterations(with_iterations) if with_iterations else None) or fit_runs(recs)
    if fit is None:
        return None
    fixed = fit["host_pass_overhead_by_strategy_us"]
    for kind, like in HOST_LIKE.items():  # strategies without records of their own
        if kind not in fixed and like in fixed:
            fixed[kind] = fixed[like]
    return fit


def _chained(recs: list[dict]) -> list[str]:
    """The strategies whose records hold iterations of several forward passes (speculative: drafts and a verify):
    only there is an iteration's own host part told from its passes' (in an iteration of one pass, the two are one
    column)."""
    return sorted({r["shape"].get("strategy", "ar") for r in recs
                   if any(len(f) > 1 for it in r["iterations"] for f in it["forwards"])})


def _design(recs: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[tuple[str, int]]]:
    """One row per iteration: the sums over its forward passes of [one per strategy (graph passes), rows, sequences,
    KV blocks (graph passes), one (eager passes), rows (eager passes)], then one per strategy whose iterations chain
    several passes (`_chained`; the iteration); the measured us; each run's mean us (the rows' scale); column names
    (the iteration columns' "iteration:<strategy>"); (record key, run) of each row."""
    kinds = sorted({r["shape"].get("strategy", "ar") for r in recs}, key=lambda k: (k != "ar", k))
    chained = _chained(recs)
    n = len(kinds)
    names = [*kinds, "row", "seq", "block", "eager", "eager_row", *(f"iteration:{k}" for k in chained)]
    rows, us, scale, tags = [], [], [], []
    for r in recs:
        strategy = r["shape"].get("strategy", "ar")
        k = kinds.index(strategy)
        bt = r.get("kv_block_tokens", 16)
        for run, it in enumerate(r["iterations"]):
            host = np.asarray(it["host_s"], dtype=float) * 1e6
            if not len(host):
                continue
            if len(host) != len(it["forwards"]):
                raise UserError(f"host record {r['key']}, run {run}: {len(host)} host times but "
                                f"{len(it['forwards'])} iterations of forward passes; rerun the case")
            for h, forwards in zip(host, it["forwards"]):
                x = np.zeros(len(names))
                for tokens, seqs, kv in forwards:
                    if not host_eager(tokens):
                        x[k] += 1
                        x[n:n + 3] += (tokens, seqs, kv / bt)
                    else:
                        x[n + 3:n + 5] += (1, tokens)
                if strategy in chained:
                    x[n + 5 + chained.index(strategy)] = 1
                rows.append(x)
                us.append(h)
                scale.append(host.mean())
                tags.append((r["key"], run))
    return np.array(rows), np.array(us), np.array(scale), names, tags


def solve_design(a: np.ndarray, us: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Non-negative least squares of `us` on the columns of `a`, each row's residual scaled by its run's mean
    (`scale`), keeping a column only where it adds a direction of its own (the rest fitted 0): the terms and the
    kept columns."""
    from scipy.optimize import lsq_linear

    keep: list[int] = []
    for j in range(a.shape[1]):
        trial = a[:, keep + [j]]
        if a[:, j].any() and np.linalg.matrix_rank(trial) == trial.shape[1]:
            keep.append(j)
    sol = np.zeros(a.shape[1])
    sol[keep] = lsq_linear(a[:, keep] / scale[:, None], us / scale, bounds=(0, np.inf)).x
    return sol, keep


def fit_iterations(recs: list[dict]) -> dict | None:
    """Least squares over every iteration of every run (scipy.optimize.lsq_linear, all terms >= 0): an iteration's
    host time is the sum of its forward passes' (a draft pass and a verify both pay the strategy's fixed part), plus
    a fixed part of its own where the strategy's iterations chain several passes. That part is told from the
    passes' by iterations of 3-7 passes (speculative k = 2-6): a chained runtime (the speculative executor since
    session 7) stages each pass while the device runs the one before, so most of its host time is the iteration's
    boundary (the scheduler, the one wait, acceptance). On the 14:41 UTC records of session 7 an iteration of k = 2
    took 1,706 us of host time and one of k = 6 1,865 (means): ~40 us per added pass. One part per iteration shared
    by every strategy (session 7's first fit) was held to at most AR's whole fixed part (AR's pass part then fitted
    at its bound, 0) and so priced speculative at 810 us per iteration + 112 per pass (1,147 vs 1,596 us for k = 2
    vs 6); a part of its own per strategy leaves the one-pass strategies' fit as it was.
    Each iteration's residual is scaled by its run's mean, so that an iteration of a 0.4 ms run and one of a 3 ms run
    count alike (a run still counts by its iterations: hundreds for a long run, ~17 for a short one); a plain mean
    (not a median) is fitted, because throughput pays the host's occasional slow passes too.

    Why per iteration and not a mean per run (fit_runs, until session 5): a run's mean spreads its eager prefill's
    host time (2-34 ms on the H100 machines, for 1-36k prompt tokens) over its decodes, which the per-sequence
    term then absorbed (8.5 us per sequence per pass, fitted at 12:06 UTC in session 5), pricing the decodes of
    continuous batching under Poisson load 0.5 ms slow (reports/h100/validation-notes.md). A column that the
    iterations cannot tell from the others (no eager pass, rows = sequences everywhere) is left out (fitted 0)."""
    a, us, scale, names, tags = _design(recs)
    if not len(us):
        return None
    first_iteration = next((i for i, c in enumerate(names) if c.startswith("iteration:")), len(names))
    kinds = names[:first_iteration - 5]
    sol, keep = solve_design(a, us, scale)
    pred = a @ sol
    errs = []
    for tag in dict.fromkeys(tags):  # per run: mean predicted over mean measured host time per iteration
        m = np.array([t == tag for t in tags])
        errs.append(abs(pred[m].mean() / us[m].mean() - 1))
    fixed = {k: round_sig(float(sol[i])) for i, k in enumerate(kinds)}
    default = fixed.pop("ar", round_sig(float(np.mean(list(fixed.values())))) if fixed else 0.0)
    n = len(kinds)
    eager = n + 3 in keep
    return {"host_pass_overhead_us": default, "host_row_overhead_us": round_sig(float(sol[n])),
            "host_seq_overhead_us": round_sig(float(sol[n + 1])), "host_block_overhead_us": round_sig(float(sol[n + 2])),
            "host_pass_overhead_by_strategy_us": fixed,
            "host_eager_pass_overhead_us": round_sig(float(sol[n + 3])) if eager else None,
            "host_eager_row_overhead_us": round_sig(float(sol[n + 4])) if eager else 0.0,
            "host_iteration_overhead_us": 0.0,
            # a strategy whose iteration column the rank check left out (its iterations cannot tell it from its
            # passes' part, e.g. records of one k only) has no part of its own: its passes carry it
            "host_iteration_overhead_by_strategy_us": {names[j].split(":", 1)[1]: round_sig(float(sol[j]))
                                                       for j in keep if j >= first_iteration},
            "method": "iterations", "iterations": int(len(us)),
            "residuals": {"median": float(np.median(errs)), "p90": float(np.percentile(errs, 90)),
                          "max": float(max(errs)), "n": len(errs)}}


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


def fit_runs(recs: list[dict]) -> dict | None:
    """The host model of records without `iterations`: each run's mean host time per forward pass ((makespan -
    device time) / passes) against its passes' mean rows, sequences and KV blocks, a fixed part per strategy plus
    the three terms, least squares on the relative error (scipy.optimize.lsq_linear, all >= 0); eager passes
    take the same formula. A column that the records cannot tell from the others is left out (fitted 0)."""
    from scipy.optimize import lsq_linear

    pts = [p for p in (_host_point(r) for r in recs) if p is not None]
    if not pts:
        return None
    kinds = sorted({p[0] for p in pts}, key=lambda k: (k != "ar", k))
    us = np.array([p[4] for p in pts])
    terms = [np.array([p[i] for p in pts], dtype=float) for i in (1, 2, 3)]  # rows, sequences, blocks
    base = {"host_eager_pass_overhead_us": None, "host_eager_row_overhead_us": 0.0, "host_iteration_overhead_us": 0.0,
            "host_iteration_overhead_by_strategy_us": {}, "method": "runs"}
    if len(set(terms[0])) < 2:
        return {"host_pass_overhead_us": round_sig(float(np.median(us))), "host_row_overhead_us": 0.0,
                "host_seq_overhead_us": 0.0, "host_block_overhead_us": 0.0, "host_pass_overhead_by_strategy_us": {},
                **base, "residuals": None}
    dummies = np.array([[1.0 if p[0] == k else 0.0 for k in kinds] for p in pts])
    cols, kept = [dummies], []
    for i, t in enumerate(terms):  # each term only where it adds a direction of its own
        trial = np.hstack(cols + [t[:, None]])
        if np.linalg.matrix_rank(trial) == trial.shape[1]:
            cols.append(t[:, None])
            kept.append(i)
    a = np.hstack(cols)
    sol = lsq_linear(a / us[:, None], np.ones_like(us), bounds=(0, np.inf)).x
    errs = np.abs(a @ sol / us - 1)
    fixed = dict(zip(kinds, sol[:len(kinds)]))
    per = [0.0, 0.0, 0.0]
    for j, i in enumerate(kept):
        per[i] = float(sol[len(kinds) + j])
    default = fixed.pop("ar", float(np.mean(list(fixed.values()))))
    return {"host_pass_overhead_us": round_sig(float(default)), "host_row_overhead_us": round_sig(per[0]),
            "host_seq_overhead_us": round_sig(per[1]), "host_block_overhead_us": round_sig(per[2]),
            "host_pass_overhead_by_strategy_us": {k: round_sig(float(v)) for k, v in fixed.items()}, **base,
            "residuals": {"median": float(np.median(errs)), "p90": float(np.percentile(errs, 90)),
                          "max": float(errs.max()), "n": len(errs)}}
