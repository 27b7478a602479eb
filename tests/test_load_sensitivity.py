"""How far a device-time error carries into TTFT under load (validation/load_sensitivity.py)."""

import math

import pytest

from sim.hardware import load_profile, profile_from_dict
from validation.calibrate import CALIBRATED_H100
from validation.load_sensitivity import elasticity, load_sensitivity, rescaled_profile, verdict

POISSON = {"name": "t", "model": "llama-3.2-1b", "hardware": "h100-sxm", "strategy": {"kind": "ar"},
           "batching": {"kind": "continuous", "max_tokens_per_iter": 512, "chunked_prefill": True},
           "workload": {"kind": "poisson", "num_requests": 48, "input_len": 512, "output_len": 32, "rate_qps": 1.0}}


def _pred(ttft_measured_s: float, ttft_predicted_s: float, measured_s=(1.0,), predicted_s=(1.0,)) -> dict:
    return {"name": "t", "strategy": "ar", "measured_s": list(measured_s), "predicted_s": list(predicted_s),
            "metrics": {"ttft_p50_s": {"measured": ttft_measured_s, "predicted": ttft_predicted_s,
                                       "rel_error": ttft_predicted_s / ttft_measured_s - 1}}}


def _rec(scenario: dict, passes=((512, 1, 1, 512, 131328),)) -> dict:
    """A run record with its measured passes' shapes ([tokens, logit rows, seqs, KV read, attended pairs, s])."""
    return {"scenario": scenario, "passes": [[*p, 0.01] for p in passes]}


def test_elasticity_of_a_power_law_is_its_exponent():
    passes = [1.0, 1.1, 1.2, 1.3]
    slope, jitter = elasticity(passes, [3 * p**2 for p in passes])
    assert slope == pytest.approx(2.0)
    assert jitter == pytest.approx(0.0, abs=1e-12)


def test_elasticity_jitter_is_the_largest_residual():
    # ln TTFT = ln pass except one point 10% high: the line moves, the largest residual stays below 10%
    slope, jitter = elasticity([1.0, 1.1, 1.2, 1.3, 1.4], [1.0, 1.1, 1.2 * 1.1, 1.3, 1.4])
    assert 0 < jitter < 0.1
    assert slope == pytest.approx(1.0, abs=0.3)


def test_elasticity_needs_three_points_that_differ():
    assert elasticity([1.0, 1.1], [1.0, 1.1]) is None
    assert elasticity([1.0, 1.0, 1.0], [1.0, 1.1, 1.2]) is None
    assert elasticity([1.0, 1.1, 0.0], [1.0, 1.1, 1.2]) is None  # a point without passes is dropped


def test_rescaled_profile_scales_device_peaks_and_every_host_term():
    base = load_profile(str(CALIBRATED_H100))
    p = profile_from_dict(rescaled_profile(str(CALIBRATED_H100), 2.0, 3.0))
    assert p.hbm_bandwidth_tb_s == pytest.approx(base.hbm_bandwidth_tb_s / 2)
    assert p.peak_tflops["bf16"] == pytest.approx(base.peak_tflops["bf16"] / 2)
    # fractions of the peaks carry unchanged; the paged kernel's walk, in absolute time, slows with the device
    assert p.efficiency.compute == base.efficiency.compute and p.efficiency.memory == base.efficiency.memory
    for key, walk in base.efficiency.paged_attention_programs.by_config.items():
        assert p.efficiency.paged_attention_programs.by_config[key].position_ns == pytest.approx(2 * walk.position_ns)
    assert p.host_pass_overhead_us == pytest.approx(3 * base.host_pass_overhead_us)
    assert p.host_row_overhead_us == pytest.approx(3 * base.host_row_overhead_us)
    for k, v in base.host_iteration_overhead_by_strategy_us.items():
        assert p.host_iteration_overhead_by_strategy_us[k] == pytest.approx(3 * v)
    assert p.launch_overhead_us == base.launch_overhead_us  # the eager launch cost is the device pass's, not the loop's


def test_closed_runs_have_no_row():
    rec = _rec({**POISSON, "workload": {"kind": "closed", "num_requests": 4, "input_len": 64, "output_len": 8}})
    assert load_sensitivity(rec, _pred(0.01, 0.011), "h100-sxm") is None


def test_light_load_follows_the_passes_and_heavy_load_amplifies_them():
    light = load_sensitivity(_rec(POISSON), _pred(0.01, 0.011), "h100-sxm")
    heavy = load_sensitivity(_rec({**POISSON, "workload": {**POISSON["workload"], "rate_qps": 600.0}}),
                             _pred(0.01, 0.011), "h100-sxm")
    assert light["elasticity"] == pytest.approx(1.0, abs=0.15)  # a first token is its own prompt's passes
    assert heavy["elasticity"] > light["elasticity"] + 0.5


def test_dividing_out_the_device_error_prices_the_measured_shapes_at_their_measured_time():
    """The run's one 512-row pass measured at exactly what the profile prices it: the correction's factor is 1, so
    'left' is the plain prediction's TTFT error against the measured value; the same pass measured 10% faster
    than priced slows nothing and speeds the corrected run up."""
    from sim.engine import prepare, simulate
    from sim.scenario import scenario_from_dict
    from validation.validation_report import measured_passes

    rec = _rec(POISSON)
    setup = prepare(scenario_from_dict(POISSON))
    priced = sum(setup.target_cost.pass_time(shape).time_s for _, shape, _ in measured_passes(rec))
    plain = simulate(scenario_from_dict(POISSON))[0].ttft_s.p50
    row = load_sensitivity(rec, _pred(0.01, plain, measured_s=(priced,), predicted_s=(priced,)), "h100-sxm")
    assert row["device_error"] == 0.0 and row["host_error"] is None and not row["left_divides_host"]
    assert row["ttft_error_left"] == pytest.approx(plain / 0.01 - 1, rel=1e-3)
    fast = load_sensitivity(rec, _pred(0.01, plain, measured_s=(priced / 1.1,), predicted_s=(priced,)), "h100-sxm")
    assert fast["device_error"] == pytest.approx(0.1)
    assert fast["ttft_error_left"] < row["ttft_error_left"]


def test_own_errors_are_time_weighted():
    """A 512-row pass priced 10% fast and a decode priced 50% slow: the summed times, not the median of the two
    ratios, are what a first token waits on; the correction then stays inside the simulated factors."""
    from sim.engine import prepare
    from sim.scenario import scenario_from_dict
    from validation.validation_report import measured_passes

    rec = _rec(POISSON, passes=((512, 1, 1, 512, 131328), (1, 1, 1, 600, 600)))
    setup = prepare(scenario_from_dict(POISSON))
    priced = [setup.target_cost.pass_time(shape).time_s for _, shape, _ in measured_passes(rec)]
    measured = (priced[0] / 0.9, priced[1] / 1.5)
    row = load_sensitivity(rec, _pred(0.01, 0.011, measured_s=measured, predicted_s=priced), "h100-sxm")
    assert row["device_error"] == pytest.approx(sum(priced) / sum(measured) - 1)
    assert math.isfinite(row["ttft_error_left"]) and not row["left_extrapolated"]


def test_a_device_error_past_the_span_is_flagged_and_a_flat_curve_gives_no_correction():
    from sim.engine import prepare
    from sim.scenario import scenario_from_dict
    from validation.validation_report import measured_passes

    rec = _rec(POISSON)
    priced = sum(prepare(scenario_from_dict(POISSON)).target_cost.pass_time(shape).time_s
                 for _, shape, _ in measured_passes(rec))
    far = load_sensitivity(rec, _pred(0.01, 0.011, measured_s=(priced * 1.4,), predicted_s=(priced,)), "h100-sxm")
    assert far["left_extrapolated"] and math.isfinite(far["ttft_error_left"])
    # shapes of no rows price at the per-kernel overheads alone, the same at every factor: nothing to interpolate in
    flat = load_sensitivity(_rec(POISSON, passes=((0, 0, 0, 0, 0),)), _pred(0.01, 0.011), "h100-sxm")
    assert flat is None or flat["ttft_error_left"] is None


@pytest.mark.parametrize("error, left, jitter, expected", [
    (0.20, 0.08, 0.03, "mostly"), (0.20, 0.02, 0.03, "yes"), (0.09, 0.10, 0.035, "within jitter"),
    (0.02, 0.12, 0.03, "no"), (0.05, None, 0.03, "–"),
])
def test_verdict_reads_left_against_twice_the_jitter(error, left, jitter, expected):
    assert verdict(error, left, jitter) == expected
