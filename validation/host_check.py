"""The serving loop's host time in measured runs against the host model (sim.engine.host_s): per iteration, and how
much of each run's throughput error it makes. For the validation report (validation/validation_report.py)."""

from __future__ import annotations

import numpy as np

from validation.calibrate import error_stats


def host_pairs(rec: dict, setup) -> tuple[list[float], list[float]]:
    """(measured, predicted) host seconds of each iteration of a run whose record has them (pass_host_s, runtime
    .serve): the serving loop's time outside the device's, against sim.engine.host_s summed over the iteration's
    forward passes. Records of before session 6 have none."""
    from sim.engine import host_iteration_s, host_s
    from sim.passes import PassShape

    measured = rec.get("pass_host_s") or []
    if not measured:
        return [], []
    if rec.get("strategy_passes"):
        flat = [p[1:6] for p in rec["strategy_passes"]]
        groups, i = [], 0
        for n in rec.get("forwards_per_pass") or []:
            groups.append(flat[i:i + n])
            i += n
    else:
        groups = [[p[:5]] for p in rec["passes"]]
    if len(groups) != len(measured):
        return [], []
    predicted = [host_iteration_s(setup) + sum(host_s(setup, PassShape(t, lr, sq, kv, pairs, t))
                                               for t, lr, sq, kv, pairs in g) for g in groups]
    return measured, predicted


def host_split(preds: list[dict], records: list[dict]) -> dict[str, dict]:
    """Per strategy, over the runs that record their host time (predict_run's host pairs), where a run's throughput
    error comes from: its summed device time's error, its host share of the makespan, its summed host time's error,
    and the throughput error its host prediction alone makes (the measured makespan with the measured host time
    replaced by the predicted one: makespan / (makespan - host measured + host predicted) - 1), as ranges and as
    median / p90 of |error|."""
    by: dict[str, list[tuple[float, float, float, float]]] = {}
    for p, rec in zip(preds, records):
        hm, hp = sum(p.get("host_measured_s", [])), sum(p.get("host_predicted_s", []))
        ms, dm = rec["result"].get("makespan_s") or 0.0, sum(p["measured_s"])
        if hm <= 0 or ms <= 0 or dm <= 0:
            continue
        by.setdefault(p["strategy"], []).append((sum(p["predicted_s"]) / dm - 1, hm / ms, hp / hm - 1,
                                                 ms / (ms - hm + hp) - 1))
    out = {}
    for strategy, rows in sorted(by.items()):
        dev, share, host, thr = (np.array(c) for c in zip(*rows))
        out[strategy] = {"runs": len(rows), "device_error": (float(dev.min()), float(dev.max())),
                         "host_share": (float(share.min()), float(share.max())),
                         "host_error": (float(host.min()), float(host.max())),
                         "throughput_error_from_host": error_stats(list(thr))}
    return out
