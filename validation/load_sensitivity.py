"""How far an error in device time carries into TTFT under load (DESIGN §7.3), for the validation report.

Under Poisson arrivals with chunked prefill a first token waits for several passes, its own prompt chunks and the
passes it shares with other requests, and near capacity the queue in front of it grows with every percent the
passes take longer. So a few percent of per-pass error can become ten or twenty percent of TTFT, and a TTFT
target judged on a point near capacity says more about the load than about the cost model. This module measures
that amplification on the simulator itself: it prices the run's scenario again with its device slower and faster
(the chip's bandwidth and compute peaks divided by factors from 1 - SPAN to 1 + SPAN; the host model unchanged)
and reports

- the elasticity: the slope of ln TTFT p50 against ln device time in those simulations (scipy.stats.linregress).
  Device time is the run's own measured pass shapes priced at each factor, the quantity its device error is
  stated on (per-kernel overheads do not scale with the peaks, so it moves less than the factor). 1 where TTFT
  follows the passes, more where the queue amplifies them;
- the jitter: the largest distance of one of those simulations from that line. The p50 of a few dozen requests
  near capacity moves by a few percent with any small change of timing (which request lands in which pass), in
  the simulator as on the GPU; an error within it is not one the cost model can be asked to remove;
- the device and host errors the run itself shows (summed predicted over summed measured time - 1, over its passes
  and over its iterations: a first token waits for a sum of them, so the time-weighted error is the one that
  carries);
- the TTFT error left when the run is priced again with those errors divided out: the device factor at which its
  measured shapes' predicted time equals their measured time (interpolated in the factors above), and every host
  term scaled by measured / predicted of its own iterations. One simulation, so it is read against twice the
  jitter: closer to zero by more than that, the aggregate errors amplified by the queue were the error; within
  it, the correction cannot tell.

`device_elasticity` is the first part alone, for any scenario: `memwall simulate --sensitivity` prints it (against
the factor itself, there being no measured shapes), so that a prediction near capacity comes with how far an error
in compute and memory time would move it.

The correction uses the validation run's own totals, so it is a diagnostic of where an error comes from, never a
prediction: nothing here feeds a fit, and the targets are judged on the plain prediction.
"""

from __future__ import annotations

import math

import numpy as np

SPAN = 0.10  # +-10%: above the per-pass p90 of one GEMM suite against another (7%, validation-notes.md)
STEPS = 9

HOST_FIELDS = ("host_pass_overhead_us", "host_row_overhead_us", "host_seq_overhead_us", "host_block_overhead_us",
               "host_pass_overhead_by_strategy_us", "host_eager_pass_overhead_us", "host_eager_row_overhead_us",
               "host_iteration_overhead_us", "host_iteration_overhead_by_strategy_us")


def rescaled_profile(profile, device_factor: float, host_factor: float = 1.0) -> dict:
    """An inline profile with the compute and memory parts of every pass `device_factor` times as long
    (bandwidth and compute peaks divided by it) and the host model's terms `host_factor` times as large.
    `profile`: a scenario's `hardware` value (a name, a YAML path, `{profile, scale}` or an inline profile).

    Efficiency curves are fractions of the peaks as a function of operator size, so they carry over unchanged;
    the paged kernel's walk per position scales with the bandwidth (HardwareProfile.scaled); fixed per-kernel
    overheads do not scale."""
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


def elasticity(xs: list[float], values: list[float]) -> tuple[float, float] | None:
    """(d ln value / d ln x, largest |residual| of ln value about that line, as a ratio - 1) from simulations of one
    scenario at several device speeds (x: device time or the factor itself); None with fewer than three usable."""
    from scipy.stats import linregress

    pairs = [(math.log(x), math.log(v)) for x, v in zip(xs, values) if x > 0 and v > 0]
    if len(pairs) < 3 or len({x for x, _ in pairs}) < 2:
        return None
    x, y = zip(*pairs)
    fit = linregress(x, y)
    jitter = max(abs(b - (fit.intercept + fit.slope * a)) for a, b in pairs)
    return float(fit.slope), math.expm1(jitter)


# what `device_elasticity` reports: a Result's metric by name
METRICS = {"output_throughput_tok_s": lambda r: r.output_throughput_tok_s, "ttft_p50_s": lambda r: r.ttft_s.p50,
           "itl_p50_s": lambda r: r.itl_s.p50, "e2e_p50_s": lambda r: r.e2e_s.p50}


def factors(span: float = SPAN, steps: int = STEPS) -> list[float]:
    return [1 - span + 2 * span * i / (steps - 1) for i in range(steps)]


def device_elasticity(scenario_data: dict, span: float = SPAN, steps: int = STEPS, device_time=None, on_step=None,
                      nominal=None):
    """The scenario's Result, and per metric of METRICS (elasticity, jitter) or None, from `steps` simulations with
    the device's peaks divided by factors from 1 - span to 1 + span (host model unchanged). `device_time(hardware)`
    gives the x of each simulation (e.g. a run's measured shapes priced on that hardware); without it, the factor.
    Also returns the x of each factor, for callers that interpolate in it. `on_step()` is called after each
    simulation (a progress bar's advance); `nominal`, the scenario's Result when the caller has it already."""
    from sim.engine import simulate
    from sim.scenario import scenario_from_dict

    hardware = scenario_data.get("hardware", "h100-sxm")

    def price(hw):
        result = simulate(scenario_from_dict({**scenario_data, "hardware": hw}))[0]
        if on_step is not None:
            on_step()
        return result

    nominal = nominal if nominal is not None else price(hardware)
    fs = factors(span, steps)
    varied = [nominal if f == 1.0 else price(rescaled_profile(hardware, f)) for f in fs]
    xs = [device_time(rescaled_profile(hardware, f)) for f in fs] if device_time else fs
    fits = {name: elasticity(xs, [get(r) or 0.0 for r in varied]) for name, get in METRICS.items()}
    return nominal, fits, list(zip(fs, xs))


def _ratio_error(predicted: list[float], measured: list[float]) -> float | None:
    total = sum(measured)
    return sum(predicted) / total - 1 if total > 0 else None


def _shapes_device_s(rec: dict, hardware) -> float:
    """The run's measured pass shapes priced on `hardware` (a scenario hardware value), summed."""
    from sim.engine import prepare
    from sim.scenario import scenario_from_dict
    from validation.validation_report import measured_passes

    setup = prepare(scenario_from_dict({**rec["scenario"], "hardware": hardware}, where=f"run {rec.get('key')}"))
    return sum((setup.role_costs.get(role) or setup.target_cost).pass_time(shape).time_s
               for role, shape, _ in measured_passes(rec))


def verdict(error: float, left: float | None, jitter: float | None) -> str:
    """Whether dividing out the run's aggregate errors explains its TTFT error, read against twice the jitter."""
    if left is None or jitter is None:
        return "–"
    if abs(error) - abs(left) > 2 * jitter:
        return "mostly" if abs(left) > 2 * jitter else "yes"
    if abs(left) - abs(error) > 2 * jitter:
        return "no"
    return "within jitter"


def load_sensitivity(rec: dict, pred: dict, profile_ref: str, span: float = SPAN, steps: int = STEPS) -> dict | None:
    """The amplification row of one run under Poisson load (`pred` is validation_report.predict_run's row for it),
    or None for a run with no Poisson load or no TTFT to compare."""
    from sim.engine import simulate
    from sim.scenario import scenario_from_dict

    workload = rec["scenario"].get("workload") or {}
    ttft = pred["metrics"].get("ttft_p50_s")
    if workload.get("kind") != "poisson" or ttft is None or not pred["measured_s"]:
        return None
    device_error = _ratio_error(pred["predicted_s"], pred["measured_s"])
    host_error = _ratio_error(pred.get("host_predicted_s", []), pred.get("host_measured_s", []))
    _, fits, curve = device_elasticity({**rec["scenario"], "hardware": profile_ref}, span, steps,
                                       lambda hw: _shapes_device_s(rec, hw))
    fit = fits["ttft_p50_s"]
    left, factor = None, None
    xs = [x for _, x in curve]
    if device_error is not None and device_error > -1 and min(xs) > 0 and len(set(xs)) == len(xs):
        # the factor at which the measured shapes' predicted time equals their measured time (log-linear in the
        # simulated factors; extrapolated along the end segment beyond them, and flagged so)
        target = math.log(sum(pred["measured_s"]))
        lx, lf = np.log(xs), np.log([f for f, _ in curve])
        i = int(np.clip(np.searchsorted(lx, target), 1, len(lx) - 1))
        factor = math.exp(lf[i - 1] + (target - lx[i - 1]) * (lf[i] - lf[i - 1]) / (lx[i] - lx[i - 1]))
        host_factor = 1 / (1 + host_error) if host_error is not None and host_error > -1 else 1.0
        s = scenario_from_dict({**rec["scenario"], "hardware": rescaled_profile(profile_ref, factor, host_factor)},
                               where=f"run {rec.get('key')}")
        corrected = simulate(s)[0]
        if corrected.ttft_s.p50:
            left = corrected.ttft_s.p50 / ttft["measured"] - 1
    e, j = (fit if fit else (None, None))
    return {"name": pred["name"], "strategy": pred["strategy"], "rate_req_s": workload.get("rate_qps"),
            "ttft_measured_s": ttft["measured"], "ttft_predicted_s": ttft["predicted"], "ttft_error": ttft["rel_error"],
            "elasticity": e, "jitter": j, "device_error": device_error, "host_error": host_error,
            "ttft_error_left": left, "left_divides_host": host_error is not None,
            "left_extrapolated": factor is not None and not (1 - span <= factor <= 1 + span),
            "verdict": verdict(ttft["rel_error"], left, j), "span": span}


def load_sensitivity_blocks(runs: list[dict], preds: list[dict], profile_ref: str) -> list:
    """The report's section (validation_report block format): one row per run under Poisson load."""
    rows = [r for rec, p in zip(runs, preds) if (r := load_sensitivity(rec, p, profile_ref)) is not None]
    if not rows:
        return []

    def pct(v):
        return "–" if v is None else f"{v:+.1%}"

    table = [[r["name"], r["strategy"], f"{r['rate_req_s']:g}", f"{r['ttft_measured_s'] * 1e3:.1f}",
              f"{r['ttft_predicted_s'] * 1e3:.1f}", pct(r["ttft_error"]),
              "–" if r["elasticity"] is None else f"{r['elasticity']:.2f}",
              "–" if r["jitter"] is None else f"{r['jitter']:.1%}", pct(r["device_error"]), pct(r["host_error"]),
              pct(r["ttft_error_left"]) + ("" if r["left_divides_host"] or r["ttft_error_left"] is None
                                           else " (device only)")
              + (" (extrapolated)" if r["left_extrapolated"] else ""), r["verdict"]] for r in rows]
    return [("h", "TTFT under load: where its error comes from"),
            ("p", f"Each run under Poisson load priced again with its device and host varied "
                  f"(validation/load_sensitivity.py; what-if profiles, nothing fitted). Elasticity: the slope of "
                  f"ln TTFT p50 against ln device time over {STEPS} simulations with the chip's peaks divided by "
                  f"1 +- up to {SPAN:g} (host unchanged), device time being the run's measured pass shapes priced "
                  "at each: 1 where TTFT follows the passes, more where the queue amplifies them. Jitter: the "
                  "largest distance of one of those simulations from that line, the resolution of a p50 over a few "
                  "dozen requests near capacity. Device and host error: the run's own summed predicted / summed "
                  "measured time - 1 over its passes and its iterations. Left: the TTFT error when the run is "
                  "priced again with those errors divided out (the device slowed or sped up until its measured "
                  "shapes price at their measured time; the host terms scaled by measured / predicted). Explained: "
                  "'yes' / 'mostly' when left is closer to zero than the error by more than twice the jitter, 'no' "
                  "when it is farther by as much, else 'within jitter' (one simulation cannot tell). A diagnostic "
                  "only (it uses the run's measured totals); the targets are judged on the plain prediction."),
            ("table", ["run", "strategy", "req/s", "TTFT p50 measured ms", "predicted ms", "error", "elasticity",
                       "jitter", "device error", "host error", "left", "explained by the aggregate errors"], table)]
