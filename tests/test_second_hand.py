"""The second-hand reading of the carried H200 profile (validation/second_hand.py): its prices follow the profiles'
curves, carrying keeps the copy's fraction of peak, and a missing or malformed input is one sentence."""

import json
import shutil
from pathlib import Path

import pytest

from sim.errors import UserError
from sim.hardware import load_profile
from validation.second_hand import SECOND_HAND, copy_tb_s, gemm_tflop_s, second_hand_blocks

REPO = Path(__file__).resolve().parents[1]
H100 = REPO / "hw_profiles/calibrated/h100-sxm-calibrated.yaml"
H200 = REPO / "hw_profiles/calibrated/h200-from-h100.yaml"


def test_copy_and_gemm_rates_are_the_curves_fraction_of_peak():
    """At 8.6 GB and 2 x 8192^3 FLOPs the fixed per-kernel terms are negligible: the priced rate is the curve's
    fraction at that size times the datasheet peak (to 1%)."""
    p = load_profile(str(H100))
    bw = p.efficiency.memory.fraction(8.6e9) * p.hbm_bandwidth_bytes_per_s / 1e12
    assert copy_tb_s(p, 8.6e9) == pytest.approx(bw, rel=0.01)
    flops = 2.0 * 8192 ** 3
    tf = p.efficiency.compute.fraction(flops) * p.peak_flops_per_s("bf16") / 1e12
    assert gemm_tflop_s(p, 8192) == pytest.approx(tf, rel=0.01)


def test_carrying_scales_the_copy_by_the_bandwidth_ratio():
    """The carried profile keeps the H100's curves as fractions of peak, so a bandwidth-bound copy moves with the
    datasheet bandwidths (4.8 / 3.35 TB/s) and a compute-bound product with the bf16 peaks (equal for these two)."""
    a, b = load_profile(str(H100)), load_profile(str(H200))
    ratio = b.hbm_bandwidth_bytes_per_s / a.hbm_bandwidth_bytes_per_s
    assert copy_tb_s(b, 8.6e9) / copy_tb_s(a, 8.6e9) == pytest.approx(ratio, rel=0.005)
    assert gemm_tflop_s(b, 8192) / gemm_tflop_s(a, 8192) == pytest.approx(
        b.peak_flops_per_s("bf16") / a.peak_flops_per_s("bf16"), rel=0.005)


def _root(tmp_path: Path, probe: dict | None) -> Path:
    spec = SECOND_HAND["h200"]
    for key in ("figures", "profile"):
        (tmp_path / spec[key]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / spec[key], tmp_path / spec[key])
    (tmp_path / "carried.yaml").write_text(H200.read_text())
    if probe is not None:
        (tmp_path / spec["probe"]).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / spec["probe"]).write_text(json.dumps(probe))
    return tmp_path


PROBE = {"copy": {"tb_s": [3.0, 2.9, 3.1]}, "gemm": {"random_tflop_s": [800.0, 700.0]}, "device": "GPU",
         "date": "2026-01-01", "torch": "2.11"}


def test_table_puts_the_probe_beside_the_cited_figures(tmp_path):
    """SYNTHETIC probe record: the H100 column is its first run with the runs' range; the cited column is the data
    file's (8.6 GB in 2.0 ms = 4.30 TB/s; 788 TFLOP/s); the errors are predicted / measured - 1."""
    root = _root(tmp_path, PROBE)
    blocks = second_hand_blocks("h200", root / "carried.yaml", root)
    table = next(b for b in blocks if b[0] == "table")[2]
    copy, gemm = table
    assert copy[1] == "3.00 (2.90-3.10)" and copy[4] == "4.30" and copy[7] == f"{4.3 / 3.0:.3f}"
    assert gemm[1] == "800 (700-800)" and gemm[4] == "788"
    pred = copy_tb_s(load_profile(str(H100)), 8.6e9)
    assert copy[2] == f"{pred:,.2f}" and copy[3] == f"{pred / 3.0 - 1:+.1%}"


def test_missing_probe_is_a_sentence(tmp_path):
    root = _root(tmp_path, None)
    blocks = second_hand_blocks("h200", root / "carried.yaml", root)
    assert len(blocks) == 2 and blocks[1][1].startswith("Skipped:") and "chip-probe.json" in blocks[1][1]


def test_malformed_inputs_are_user_errors(tmp_path):
    root = _root(tmp_path, {"copy": {"tb_s": []}, "gemm": {"random_tflop_s": [1.0]}})
    with pytest.raises(UserError, match="chip_probe.py"):
        second_hand_blocks("h200", root / "carried.yaml", root)
    root = _root(tmp_path, PROBE)
    figures = root / SECOND_HAND["h200"]["figures"]
    figures.write_text(figures.read_text().replace("seconds: 2.0e-3", "seconds: -1"))
    with pytest.raises(UserError, match=r"device_copy\.seconds: Input should be greater than 0 \(got -1\)"):
        second_hand_blocks("h200", root / "carried.yaml", root)
