"""A second-hand reading of a carried profile: two whole-chip figures that others measured on a chip this project
could not measure (data/second_hand/<chip>.yaml), priced with the profile carried to that chip, beside the same two
figures measured on the H100 by the same method (benchmarks/chip_probe.py) and priced with the H100 calibration.

It is not the transfer check (that runs memwall's validation plan on the chip) and says so in the report. What it
can show: whether the carried curves' *fractions of peak* move with the chip as the measurements do (the ratio of
the chip's figure to the H100's, cited and predicted), separately from how well the H100 calibration prices these
two operators on the H100 itself (the H100 column's error).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ConfigDict, Field, ValidationError

from sim.errors import UserError, explain_validation_error
from sim.numbers import NumbersNotBools

# chip -> its cited figures, and the H100 measurement and calibration they are read against
SECOND_HAND = {
    "h200": {"figures": "data/second_hand/h200.yaml", "probe": "reports/h100/chip-probe.json",
             "profile": "hw_profiles/calibrated/h100-sxm-calibrated.yaml"},
}


class _Frozen(NumbersNotBools):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CopyFigure(_Frozen):
    bytes_moved: float = Field(gt=0, description="bytes read plus bytes written")
    seconds: float = Field(gt=0)

    @property
    def tb_s(self) -> float:
        return self.bytes_moved / self.seconds / 1e12


class GemmFigure(_Frozen):
    mnk: int = Field(gt=0, description="M = N = K of a square bf16 product")
    random_tflop_s: float = Field(gt=0)
    zeros_tflop_s: float | None = Field(default=None, gt=0)


class SecondHand(_Frozen):
    """Figures measured by others on a chip, with where they come from."""

    chip: str
    device: str
    source: str
    date: str
    method: str
    device_copy: CopyFigure
    gemm: GemmFigure


def copy_tb_s(profile, bytes_moved: float) -> float:
    """TB/s the profile predicts for a device-to-device copy moving `bytes_moved` (read + written), priced as the
    calibration prices its stream/copy records (validation/calibrate.py predict_records)."""
    return bytes_moved / _priced_s(profile, {"key": "copy", "kind": "stream", "dtype": "bf16", "shape": {"op": "copy"},
                                             "flops": 0.0, "bytes": bytes_moved}) / 1e12


def gemm_tflop_s(profile, n: int) -> float:
    """TFLOP/s the profile predicts for an n x n x n bf16 product (one read of each operand, one write)."""
    flops = 2.0 * n ** 3
    return flops / _priced_s(profile, {"key": "gemm", "kind": "gemm", "dtype": "bf16",
                                       "shape": {"M": n, "N": n, "K": n}, "flops": flops,
                                       "bytes": 3.0 * n * n * 2}) / 1e12


def _priced_s(profile, rec: dict) -> float:
    from validation.calibrate import predict_records

    return predict_records([{**rec, "median_s": 1.0}], profile)[0]["predicted_s"]


def _pct(pred: float, meas: float) -> str:
    return f"{pred / meas - 1:+.1%}"


def second_hand_blocks(chip: str, carried_profile: Path, root: Path = Path(".")) -> list:
    """Report blocks for `chip` (as validation_report.build's), or one sentence saying what is missing."""
    from sim.hardware import load_profile
    from sim.yaml_file import read_yaml

    spec = SECOND_HAND.get(chip)
    if spec is None:
        return []
    figures_path, probe_path, base_path = (root / spec[k] for k in ("figures", "probe", "profile"))
    blocks: list = [("p", f"**Second-hand figures for the {chip.upper()} (not a memwall measurement, not the transfer "
                          "check).**")]
    missing = [p for p in (figures_path, probe_path, base_path) if not p.exists()]
    if missing:
        return blocks + [("p", f"Skipped: {missing[0]} is not in this checkout.")]
    try:
        cited = SecondHand.model_validate(read_yaml(figures_path))
    except ValidationError as e:
        raise UserError(explain_validation_error(e, str(figures_path), SecondHand)) from None
    try:
        probe = json.loads(probe_path.read_text())
        copy_h100, gemm_h100 = probe["copy"]["tb_s"], probe["gemm"]["random_tflop_s"]
        if not copy_h100 or not gemm_h100:
            raise ValueError("no runs")
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{probe_path} is not a record of benchmarks/chip_probe.py ({e}); rerun it on the GPU.") from None
    base, carried = load_profile(str(base_path)), load_profile(str(carried_profile))
    rows = []
    moved = cited.device_copy.bytes_moved
    for label, meas, runs, pred_base, cited_v, pred_carried in (
        (f"copy, {moved / 1e9:.1f} GB moved (TB/s)", copy_h100[0], copy_h100, copy_tb_s(base, moved),
         cited.device_copy.tb_s, copy_tb_s(carried, moved)),
        (f"{cited.gemm.mnk}^3 bf16 product, random data (TFLOP/s)", gemm_h100[0], gemm_h100,
         gemm_tflop_s(base, cited.gemm.mnk), cited.gemm.random_tflop_s, gemm_tflop_s(carried, cited.gemm.mnk)),
    ):
        digits = 2 if meas < 100 else 0
        f = f"{{:,.{digits}f}}"
        rows.append([label, f"{f.format(meas)} ({f.format(min(runs))}-{f.format(max(runs))})", f.format(pred_base),
                     _pct(pred_base, meas), f.format(cited_v), f.format(pred_carried), _pct(pred_carried, cited_v),
                     f"{cited_v / meas:.3f}", f"{pred_carried / pred_base:.3f}"])
    blocks.append(("p", f"Measured on an {chip.upper()} by others, cited from {cited.source} ({cited.date}; "
                        f"{cited.method}; `{spec['figures']}`). Beside them, the same two figures measured on this "
                        f"project's H100 by the same method (`python3 benchmarks/chip_probe.py --out {spec['probe']}`: "
                        f"{probe['device']}, {probe['date']}, torch {probe['torch']}; the first of "
                        f"{len(copy_h100)} runs, all runs in brackets). Predicted: the H100 calibration "
                        f"(`{spec['profile']}`) for the H100, the carried profile (`{carried_profile.relative_to(root)}"
                        f"`) for the {chip.upper()}."))
    blocks.append(("table", ["figure", "H100 measured", "H100 predicted", "error", f"{chip.upper()} cited",
                             f"{chip.upper()} predicted (carried)", "error", f"{chip.upper()} / H100 cited / measured",
                             "predicted ratio"], rows))
    blocks.append(("p", "How to read it: the ratio columns test the carrying itself (curves kept as fractions of peak, "
                        "peaks from the datasheet); the error columns mix that with how the H100 calibration prices "
                        "these two operators, which memwall's own microbenchmarks time differently (CUDA-graph "
                        "replays back to back, medians: validation/microbench.py) from this method (ten eager calls "
                        "after three warm-ups, the mean of the first run). One run of each was cited: no spread is "
                        "known for them; the H100's runs show this method's spread."))
    return blocks
