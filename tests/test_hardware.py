import pytest

from sim.errors import UserError
from sim.hardware import Curve, Scale, load_profile, profile_from_dict, profile_names

REQUIRED = ["h100-sxm", "h100-pcie", "h200", "a100-80gb-sxm", "b200", "mi300x", "l40s", "rtx-4090"]


def test_every_required_chip_loads_with_a_datasheet():
    names = profile_names()
    for n in REQUIRED:
        assert n in names
        p = load_profile(n)
        assert p.provenance.datasheet.startswith("http")
        assert p.hbm_bandwidth_bytes_per_s > 1e11
    hypothetical = [n for n in names if load_profile(n).provenance.datasheet.startswith("hypothetical")]
    assert len(hypothetical) >= 3


def test_units_and_ridge_point():
    p = load_profile("h100-sxm")
    assert p.hbm_bandwidth_bytes_per_s == 3.35e12
    assert p.hbm_capacity_bytes == 85.52e9  # 81,559 MiB, what the driver reports of an "80GB" H100
    assert p.ridge_point_flop_per_byte("bf16") == pytest.approx(989.4e12 / 3.35e12)
    # int4 weights run bf16 math after dequantization; A100 has no fp8 and falls back to bf16
    assert p.peak_flops_per_s("int4") == p.peak_flops_per_s("bf16")
    assert load_profile("a100-80gb-sxm").peak_flops_per_s("fp8") == 312e12


def test_hypothetical_files_derive_from_their_base():
    base, fast = load_profile("h100-sxm"), load_profile("h100-2x-bandwidth")
    assert fast.hbm_bandwidth_tb_s == 2 * base.hbm_bandwidth_tb_s
    assert fast.peak_tflops == base.peak_tflops
    assert fast.name == "h100-2x-bandwidth"
    assert fast.scale.bandwidth == 2


def test_scaled_profile():
    p = load_profile("h100-sxm").scaled(Scale(flops=2, capacity=2))
    assert p.peak_tflops["bf16"] == pytest.approx(2 * 989.4)
    assert p.hbm_capacity_gb == pytest.approx(2 * 85.52)
    assert "flopsx2" in p.name


def test_more_bandwidth_speeds_the_paged_kernels_walk_too():
    """The calibrated walk is in absolute time: left alone it would cap attention at the H100's walk rate however
    much bandwidth a what-if chip had (a batch-64 decode at 4K positions gained 1.19x from 2x bandwidth)."""
    from sim.cost import CostContext, CostModel
    from sim.model import load_model
    from sim.passes import decode_shape

    base = load_profile("hw_profiles/calibrated/h100-sxm-calibrated.yaml")
    fast = base.scaled(Scale(bandwidth=2))
    for key, walk in base.efficiency.paged_attention_programs.by_config.items():
        scaled = fast.efficiency.paged_attention_programs.by_config[key]
        assert scaled.position_ns == pytest.approx(walk.position_ns / 2)
        assert scaled.program_overhead_us == walk.program_overhead_us and scaled.resident == walk.resident
    m, shape = load_model("llama-3.1-8b"), decode_shape(64, 4096)
    gain = CostModel(CostContext(m, base)).pass_time(shape).time_s / CostModel(CostContext(m, fast)).pass_time(
        shape).time_s
    assert 1.8 < gain <= 2.0
    assert base.scaled(Scale(flops=2)).efficiency == base.efficiency  # compute alone leaves the walk


def test_hockney_curve():
    c = Curve(max_fraction=0.8, half_size=1000)
    assert c.fraction(1000) == pytest.approx(0.4)
    assert c.time_s(1000, 1e6) == pytest.approx(2000 / 0.8e6)
    assert c.time_s(0, 1e6) == 0
    table = Curve(max_fraction=1, half_size=0, points=((1e3, 0.1), (1e6, 0.9)))
    assert table.fraction(10**4.5) == pytest.approx(0.5)


def test_malformed_yaml_names_file_line_and_column(tmp_path):
    f = tmp_path / "chip.yaml"
    f.write_text("name: x\nvendor: [unclosed\n")
    with pytest.raises(UserError, match=r"chip.yaml:3:1: malformed YAML"):
        load_profile(str(f))


def test_price_needs_a_source():
    data = load_profile("h100-sxm").model_dump()
    data["price_source"] = None
    with pytest.raises(UserError, match="price_per_gpu_hour_usd needs price_source"):
        profile_from_dict(data)


def test_out_of_range_field_names_its_path():
    data = load_profile("h100-sxm").model_dump()
    data["efficiency"]["memory"]["max_fraction"] = 1.5
    with pytest.raises(UserError, match=r"efficiency\.memory\.max_fraction: Input should be less than or equal to 1"):
        profile_from_dict(data)


def test_projection_factors_checked_and_interpolated():
    data = load_profile("h100-sxm").model_dump()
    data["efficiency"]["projection_factors"] = {"4096x14336": [[256, 1.2], [128, 1.1]]}
    with pytest.raises(UserError, match=r"projection_factors\[4096x14336\] needs \(rows, factor\) pairs"):
        profile_from_dict(data)
    data["efficiency"]["projection_factors"] = {"4096x14336": [[128, 1.1], [512, 0.9]]}
    eff = profile_from_dict(data).efficiency
    # log-rows interpolation between the measured rows; 1 outside them and for shapes never measured
    assert eff.projection_factor(4096, 14336, 256) == pytest.approx(1.0)
    assert eff.projection_factor(4096, 14336, 128) == pytest.approx(1.1)
    assert eff.projection_factor(4096, 14336, 64) == 1.0 and eff.projection_factor(4096, 14336, 1024) == 1.0
    assert eff.projection_factor(4096, 4096, 256) == 1.0


def test_bad_paged_walk_names_its_configuration():
    """A dict of models in a profile (the paged kernel's walk per launch configuration): the message names the key."""
    data = load_profile("h100-sxm").model_dump()
    data["efficiency"]["paged_attention_programs"] = {
        "by_config": {"32x8x128/64x2": {"resident": -5, "program_overhead_us": 3.0, "position_ns": 40.0}}}
    with pytest.raises(UserError, match=r"efficiency\.paged_attention_programs\.by_config\.32x8x128/64x2\.resident: "
                                        r"Input should be greater than 0"):
        profile_from_dict(data)


def test_host_terms_per_strategy_name_a_strategy():
    """The host terms keyed by strategy take the scenario's strategy kinds only (a misspelt key would otherwise fall
    back to the default part without a word) and no negative time."""
    from typing import get_args

    from sim.hardware import StrategyKind
    from sim.scenario import AR, BlockDiffusion, Diffusion, Speculative

    assert {m().kind for m in (AR, Speculative, Diffusion, BlockDiffusion)} == set(get_args(StrategyKind))
    for field in ("host_iteration_overhead_by_strategy_us", "host_pass_overhead_by_strategy_us"):
        data = load_profile("h100-sxm").model_dump()
        data[field] = {"spec": 1000.0}
        with pytest.raises(UserError, match=rf"{field}\.spec"):
            profile_from_dict(data)
        data[field] = {"speculative": -1.0}
        with pytest.raises(UserError, match=rf"{field}\.speculative: Input should be greater than or equal to 0"):
            profile_from_dict(data)
        data[field] = {"speculative": 1000.0}
        assert getattr(profile_from_dict(data), field) == {"speculative": 1000.0}
