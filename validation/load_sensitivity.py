"""How far an error in device time carries into TTFT under load (DESIGN §7.3), for the validation report.

Under Poisson arrivals with chunked prefill a first token waits for several passes, its own prompt chunks and the
passes it shares with other requests, and near capacity the queue in front of it grows with every percent the
passes take longer. So a few percent of per-pass error can become ten or twenty percent of TTFT, and a TTFT
target judged on a point near capacity says more about the load than about the cost model. This module measures
that amplification on the simulator itself: it prices the run's scenario again with every device pass slower and
faster by up to `SPAN` (the chip's bandwidth and compute peaks divided by a factor; the host model unchanged) and
reports

- the elasticity, d ln TTFT / d ln (mean pass time): the slope of a least-squares line through those simulations
  (scipy.stats.linregress; 1 where TTFT follows the passes, more where queueing amplifies them);
- the jitter: the largest distance of one of them from that line. The p50 of a few dozen requests near capacity
  moves by a few percent with any small change of timing (which request lands in which pass), in the simulator
  as on the GPU; an error within it is not one the cost model can be asked to remove;
- the device-time and host-time errors the point itself shows (summed predicted over summed measured time - 1,
  over its passes and over its iterations: a first token waits for a sum of them, so the time-weighted error is
  the one that carries);
- the TTFT error left when the point is priced again with those two errors divided out (every device pass and
  every host term scaled by measured / predicted of its own run). Much smaller than the plain error: the aggregate
  errors, amplified by the queue, were the error. Not smaller: they are not what moves this TTFT (a host error in
  decode iterations, say, which a first token does not wait for), and the rest is the scheduler model's or jitter.

`device_elasticity` is the first part alone, for any scenario: `memwall simulate --sensitivity` prints it, so that a
prediction near capacity comes with how far a given error in pass time would move it.

The correction uses the validation run's own totals, so it is a diagnostic of where an error comes from, never a
prediction: nothing here feeds a fit, and the targets are judged on the plain prediction.
"""

from __future__ import annotations

import math

SPAN = 0.10  # +-10%: above the per-pass p90 of one GEMM suite against another (7%, validation-notes.md)
STEPS = 9

HOST_FIELDS = ("host_pass_overhead_us", "host_row_overhead_us", "host_seq_overhead_us", "host_block_overhead_us",
               "host_pass_overhead_by_strategy_us", "host_eager_pass_overhead_us", "host_eager_row_overhead_us",
               "host_iteration_overhead_us", "host_iteration_overhead_by_strategy_us")


def rescaled_profile(profile, device_factor: float, host_factor: float = 1.0) -> dict:
    """An inline profile whose device passes take about `device_factor` times as long (bandwidth and compute peaks
    divided by it) and whose host model's terms are `host_factor` times as large. `profile`: a scenario's
    `hardware` value (a name, a YAML path, `{profile, scale}` or an inline profile).

    Efficiency curves are fractions of the peaks as a function of operator size, so they carry over unchanged;
    fixed per-kernel overheads do not scale, which is why the elasticity divides by the simulated change in mean
    pass time rather than by `device_factor`."""
    from sim.hardware import Scale
    from sim.scenario import resolve_hardware

    p = resolve_hardware(profile).scaled(Scale(bandwidth=1 / device_factor, flops=1 / device_factor))
    update = {}
    for name in HOST_FIELDS:
        v = getattr(p, name)
        if isinstance(v, dict):
            update[name] = {k: x * host_factor for k, x in v.items()}
        elif v is not None:
            update[name] = v * host_factor
    return p.model_copy(update=update).model_dump(mode="json")


def elasticity(pass_s: list[float], values: list[float]) -> tuple[float, float] | None:
    """(d ln value / d ln pass time, largest |residual| of ln value about that line, as a ratio - 1) from
    simulations of one scenario at several device speeds; None with fewer than three usable ones."""
    from scipy.stats import linregress

    pairs = [(math.log(p), math.log(t)) for p, t in zip(pass_s, values) if p > 0 and t > 0]
    if len(pairs) < 3 or len({x for x, _ in pairs}) < 2:
        return None
    x, y = zip(*pairs)
    fit = linregress(x, y)
    jitter = max(abs(b - (fit.intercept + fit.slope * a)) for a, b in pairs)
    return float(fit.slope), math.expm1(jitter)


# what `device_elasticity` reports: a Result's metric by name
METRICS = {"output_throughput_tok_s": lambda r: r.output_throughput_tok_s, "ttft_p50_s": lambda r: r.ttft_s.p50,
           "itl_p50_s": lambda r: r.itl_s.p50, "e2e_p50_s": lambda r: r.e2e_s.p50}


def device_elasticity(scenario_data: dict, span: float = SPAN, steps: int = STEPS):
    """The scenario's Result and, per metric of METRICS, (elasticity to mean pass time, jitter) or None, from
    `steps` simulations with every device pass up to `span` slower or faster (its hardware's peaks divided by a
    factor from 1 - span to 1 + span; host model unchanged)."""
    from sim.engine import simulate
    from sim.scenario import scenario_from_dict

    def price(hardware):
        return simulate(scenario_from_dict({**scenario_data, "hardware": hardware}))[0]

    nominal = price(scenario_data.get("hardware", "h100-sxm"))
    factors = [1 - span + 2 * span * i / (steps - 1) for i in range(steps)]
    varied = [nominal if f == 1.0 else price(rescaled_profile(scenario_data.get("hardware", "h100-sxm"), f))
              for f in factors]
    passes = [r.pass_time_s.mean or 0.0 for r in varied]
    return nominal, {name: elasticity(passes, [get(r) or 0.0 for r in varied]) for name, get in METRICS.items()}


def _ratio_error(predicted: list[float], measured: list[float]) -> float | None:
    total = sum(measured)
    return sum(predicted) / total - 1 if total > 0 else None


def load_sensitivity(rec: dict, pred: dict, profile_ref: str, span: float = SPAN, steps: int = STEPS) -> dict | None:
    """The amplification row of one run under Poisson load (`pred` is validation_report.predict_run's row for it),
    or None for a run with no Poisson load or no TTFT to compare."""
    from sim.engine import simulate
    from sim.scenario import scenario_from_dict

    workload = rec["scenario"].get("workload") or {}
    ttft = pred["metrics"].get("ttft_p50_s")
    if workload.get("kind") != "poisson" or ttft is None:
        return None
    device_error = _ratio_error(pred["predicted_s"], pred["measured_s"])
    host_error = _ratio_error(pred.get("host_predicted_s", []), pred.get("host_measured_s", []))

    def price(hardware):
        s = scenario_from_dict({**rec["scenario"], "hardware": hardware}, where=f"run {rec.get('key')}")
        return simulate(s)[0]

    nominal, fits = device_elasticity({**rec["scenario"], "hardware": profile_ref}, span, steps)
    fit = fits["ttft_p50_s"]
    left = None
    if device_error is not None and device_error > -1:
        host_factor = 1 / (1 + host_error) if host_error is not None and host_error > -1 else 1.0
        corrected = price(rescaled_profile(profile_ref, 1 / (1 + device_error), host_factor))
        if corrected.ttft_s.p50:
            left = corrected.ttft_s.p50 / ttft["measured"] - 1
    return {"name": pred["name"], "strategy": pred["strategy"], "rate_req_s": workload.get("rate_qps"),
            "busy_fraction": nominal.busy_fraction, "ttft_measured_s": ttft["measured"],
            "ttft_predicted_s": ttft["predicted"], "ttft_error": ttft["rel_error"],
            "elasticity": fit[0] if fit else None, "jitter": fit[1] if fit else None, "device_error": device_error,
            "host_error": host_error, "ttft_error_left": left, "span": span}


def load_sensitivity_blocks(runs: list[dict], preds: list[dict], profile_ref: str) -> list:
    """The report's section (validation_report block format): one row per run under Poisson load."""
    rows = [r for rec, p in zip(runs, preds) if (r := load_sensitivity(rec, p, profile_ref)) is not None]
    if not rows:
        return []

    def pct(v):
        return "–" if v is None else f"{v:+.1%}"

    table = [[r["name"], r["strategy"], f"{r['rate_req_s']:g}", f"{r['busy_fraction']:.0%}",
              f"{r['ttft_measured_s'] * 1e3:.1f}", f"{r['ttft_predicted_s'] * 1e3:.1f}", pct(r["ttft_error"]),
              "–" if r["elasticity"] is None else f"{r['elasticity']:.2f}",
              "–" if r["jitter"] is None else f"{r['jitter']:.1%}", pct(r["device_error"]),
              pct(r["host_error"]), pct(r["ttft_error_left"])] for r in rows]
    return [("h", "TTFT under load: where its error comes from"),
            ("p", f"Each run under Poisson load priced again with its device and host varied "
                  f"(validation/load_sensitivity.py; what-if profiles, nothing fitted). Elasticity: the slope of "
                  f"ln TTFT p50 against ln mean pass time over {STEPS} simulations with every device pass up to "
                  f"{SPAN:.0%} slower or faster (the chip's peaks divided by 1 +- up to {SPAN:g}, host unchanged): 1 "
                  "where TTFT follows the passes, more where the queue amplifies them. Jitter: the largest distance "
                  "of one of those simulations from that line, the resolution of a p50 over a few dozen requests "
                  "near capacity. "
                  "Device and host error: the run's own summed predicted / summed measured time - 1 over its passes "
                  "and its iterations. Left: the TTFT error when the run is priced again with those two errors "
                  "divided out (device and host scaled by its own measured / predicted). Where it is much smaller "
                  "than the error, the run's aggregate device and host errors, amplified by its queue, are the "
                  "error; where it is not, they are not what moves this TTFT (the host error may sit in passes "
                  "a first token does not wait for), and what remains is the scheduler model's or within the jitter. "
                  "A diagnostic only (it uses the run's measured totals); the targets are judged on the plain "
                  "prediction. Busy: the predicted share of the makespan with a pass or its host work running."),
            ("table", ["run", "strategy", "req/s", "busy", "TTFT p50 measured ms", "predicted ms", "error",
                       "elasticity", "jitter", "device error", "host error", "left"], table)]
