"""Carrying a calibration to another chip (`memwall calibrate --carry-to`, issue [validation] item 6): the H100-fitted
efficiency curves on another chip's datasheet, and the host's terms, which belong to the machine rather than the
chip, either carried from the H100's machine or measured on the other chip's own (`--carry-host`).
"""

from __future__ import annotations

from sim.errors import UserError
from sim.hardware import Calibration, Curve, HardwareProfile
from validation.calibrate import FITTED, _median_of
from validation.host_fit import FIELDS as HOST_FIELDS, fit_host, round_sig


def carry_over(fitted: HardwareProfile, target: HardwareProfile, suffix: str) -> HardwareProfile:
    """`target`'s datasheet with `fitted`'s curves: max_fraction kept, half_size scaled by the peak ratio so that
    each curve's fixed time n_1/2 / (peak * max_fraction) carries (same architecture, different HBM)."""
    f_eff = fitted.efficiency
    bw_ratio = target.hbm_bandwidth_bytes_per_s / fitted.hbm_bandwidth_bytes_per_s
    fl_ratio = target.peak_flops_per_s("bf16") / fitted.peak_flops_per_s("bf16")

    def scaled(c: Curve, ratio: float) -> Curve:
        return c.model_copy(update={"half_size": round_sig(c.half_size * ratio)})

    eff = f_eff.model_copy(update={
        "memory": scaled(f_eff.memory, bw_ratio), "compute": scaled(f_eff.compute, fl_ratio),
        "attention_memory": scaled(f_eff.attn_memory, bw_ratio),
        "attention_compute": scaled(f_eff.attn_compute, fl_ratio),
        "gemv_memory": scaled(f_eff.gemv_mem, bw_ratio),
        **({"paged_attention_memory": scaled(f_eff.paged_attention_memory, bw_ratio),
            "paged_attention_compute": scaled(f_eff.paged_attn_compute, fl_ratio)}
           if f_eff.paged_attention_memory is not None else {}),
        "source": f"carried over from {fitted.name} (measured on {fitted.provenance.calibration.device}); "
                  "not measured on this chip"})
    cal = fitted.provenance.calibration
    calibration = Calibration(device=f"{cal.device} (curves carried over; nothing measured on this chip)",
                              driver=cal.driver, torch=cal.torch, cuda=cal.cuda, date=cal.date, residuals={},
                              measured=[], carried_over=[c for c in FITTED if (
                                  not c.startswith("paged_") or f_eff.paged_attention_memory is not None)],
                              records=cal.records)
    notes = (f"{target.provenance.notes or ''} Efficiency curves carried over from {fitted.name}: max_fraction "
             f"kept, half_size scaled by this chip's peak over the H100's (memory x{bw_ratio:.3f}, compute "
             f"x{fl_ratio:.3f}) so that fixed times carry; projection_factors (measured over curve time per H100 projection "
             "shape) and paged_attention_programs (the paged kernel's per-program walk, a property of the SMs, which the H200 "
             "shares) carried unchanged, assumptions; the host's terms (launch_overhead_us, the eager launch cost "
             "per kernel, and host_*: the serving loop's host time per pass) are the machine's, not the chip's: "
             "carried as measured on the H100's machine unless measured on this chip's (calibrate --carry-host)."
             ).strip()
    return target.model_copy(update={
        "name": f"{target.name}-{suffix}",
        "launch_overhead_us": fitted.launch_overhead_us,
        **{f: getattr(fitted, f) for f in HOST_FIELDS},
        "description": f"{target.description}; curves carried over from {fitted.name}",
        "efficiency": eff,
        "provenance": target.provenance.model_copy(update={"notes": notes, "calibration": calibration})})


def host_terms(records: list[dict], records_path: str) -> tuple[dict, list[str]]:
    """The host's profile fields measured in `records` (a chip's machine: the host model fitted to its host records,
    launch_overhead_us from its eager launch records, where present) and their names for the provenance."""
    host = fit_host(records)
    launch_s = _median_of(records, "launch", "eager_pass") or _median_of(records, "launch", "eager")
    if host is None and launch_s is None:
        raise UserError(f"--carry-host: {records_path} holds no host or eager launch records (memwall microbench "
                        "--only host and --only launch on that chip's machine, into that file)")
    fields = {**({f: host[f] for f in HOST_FIELDS} if host is not None else {}),
              **({"launch_overhead_us": round_sig(launch_s * 1e6)} if launch_s is not None else {})}
    return fields, [*(["host_pass_overhead_us"] if host is not None else []),
                    *(["launch_overhead_us"] if launch_s is not None else [])]


def with_host_of(carried: HardwareProfile, records: list[dict], records_path: str) -> HardwareProfile:
    """`carried` (carry_over's) with the host terms measured on its own chip's machine (host_terms). The serving
    loop's host time is the machine's CPU and software, not the chip's (the host model's terms moved up to 1.5x
    between H100 machines of one pool, reports/h100/validation-notes.md), so a transfer check can carry the chip's
    curves and still price the host of the machine it measures; the provenance says which terms came from where."""
    fields, measured = host_terms(records, records_path)
    # a partial host suite would price the strategies it lacks at AR's part: refuse it rather than mix machines
    missing = sorted({k for f in ("host_pass_overhead_by_strategy_us", "host_iteration_overhead_by_strategy_us")
                      if f in fields for k in getattr(carried, f) if k not in fields[f]}
                     | ({"eager passes"} if "host_pass_overhead_us" in fields and carried.host_eager_pass_overhead_us
                        is not None and fields["host_eager_pass_overhead_us"] is None else set()))
    if missing:
        raise UserError(f"--carry-host: {records_path} has no host records of {', '.join(missing)}, which the H100 "
                        "machine's host model prices; run the whole `memwall microbench --only host` there")
    cal = carried.provenance.calibration
    note = (f" Host terms measured on this chip's machine ({records_path}: {', '.join(measured)}), "
            "replacing the H100 machine's.")
    return carried.model_copy(update={
        **fields,
        "provenance": carried.provenance.model_copy(update={
            "notes": (carried.provenance.notes or "") + note,
            "calibration": cal.model_copy(update={"measured": [*cal.measured, *measured],
                                                   "carried_over": [c for c in cal.carried_over
                                                                    if c not in measured]})})})
