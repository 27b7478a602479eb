"""Fit a chip's efficiency curves to microbenchmark records (DESIGN §7.1), in the cost model's own terms.

For every record the cost model prices the very operator that was timed (its FLOPs and fewest bytes, one kernel):

    t_pred = kernel_overhead + max((F + h_c) / (peak_flops * m_c), (B + h_m) / (peak_bw * m_m))

(sim/cost.py `price`, with Hockney curves m * n / (n + h), sim/hardware.py), and scipy's `least_squares` chooses
(m_c, h_c, m_m, h_m) to make t_pred / t_meas - 1 small over all records of a family:

- `kernel_overhead_us`: the median per-kernel time of tiny kernels replayed back to back in a CUDA graph (no fit);
  `launch_overhead_us`: the host's pace per kernel of an eager pass, the median of the `eager_pass` records (the
  runtime's own eager forward on tiny widths, divided by the kernels the cost model counts for it); without them,
  tiny kernels issued eagerly from Python (a torch add: a floor, ~3x below the runtime's pace per counted kernel).
- `efficiency.memory` and `efficiency.compute`, jointly: bf16 projection GEMMs/GEMVs at every row count, plus
  streaming reads. Each record lands on whichever roof binds it under the fitted curves, and the residuals are
  reported per roof.
- `attention_memory` and `attention_compute`: the SDPA records (prefill, decode, verify, bidirectional, block).
- `paged_attention_memory`, `paged_attention_compute` and `paged_attention_programs`: the records of memwall's
  paged attention kernel (kind `paged`: decodes, verifies, block steps, chunks and LLaDA's bidirectional steps as
  CUDA graph buckets launch them), which the cost model uses for every graph-replayed pass
  (`CostContext.paged_kernel`): two curves on FLOPs and unique K/V bytes and the programs' walk per launch
  configuration (validation/paged_fit.py); without such records they stay unset and those passes take the
  attention curves on row-group bytes.
- `projection_factors`: after the curves, each measured projection shape and row count keeps its measured time as
  a factor on the curves' time (interpolated in log rows for the rows between; shapes never measured use the curves
  alone). The curves' residuals are reported without them.

Checked but not fitted: fp8 GEMMs (priced at the fp8 peak with the bf16 curves) and device copies (a copy inside a
CUDA graph may run as a DMA memcpy node on the copy engines rather than as a kernel, which the cost model does not
describe). The loss is soft-L1 on the relative error (scale 5%): a few shapes hit a cuBLAS kernel that a two-number
curve cannot follow, and a plain square would let those few pull every other point off.

Curves are fractions of peak, so they carry to another chip of the same architecture: `carry_over` keeps each
curve's max_fraction and its fixed time n_1/2 / (peak * max_fraction), i.e. scales half_size by the peak ratio
(the H200 has the H100's SMs and clocks with faster HBM: a small kernel's ramp-up time is the same in seconds).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from sim.runtime_layout import RUNTIME_TRITON_MAX_ROWS
from sim.errors import UserError
from sim.hardware import Calibration, Curve, HardwareProfile, load_profile
from validation.allreduce import fit_link
from validation.host_fit import FIELDS as HOST_FIELDS, HOST_LIKE, fit_host, round_sig
from validation.paged_fit import fit_paged, paged_op
from validation.records_file import iter_records
from validation.clikit import check_writable, user_errors

SOFT_L1_SCALE = 0.05
REPO = Path(__file__).resolve().parent.parent
CALIBRATED_H100 = REPO / "hw_profiles" / "calibrated" / "h100-sxm-calibrated.yaml"
FITTED = ("memory", "compute", "attention_memory", "attention_compute", "paged_attention_memory",
          "paged_attention_compute", "paged_attention_programs", "gemv_memory", "projection_factors",
          "kernel_overhead_us", "launch_overhead_us", "host_pass_overhead_us")


# -- records -------------------------------------------------------------------------------------------------------


def load_records(path: Path) -> list[dict]:
    """Successful microbenchmark records of a JSONL file, the last successful one of each key (a rerun's wins; one
    that failed, e.g. a host probe that ran out of memory beside a grid, does not erase an earlier good one)."""
    by_key: dict[str, dict] = {}
    for n, rec in iter_records(Path(path), "microbenchmark records ('memwall microbench')"):
        if "key" not in rec or "kind" not in rec:
            raise UserError(f"{path}:{n}: a record needs 'key' and 'kind' (written by 'memwall microbench')")
        if rec.get("status") == "ok":
            by_key[rec["key"]] = rec
    ok = runtime_kernels([r for r in by_key.values() if r.get("status") == "ok" and r["kind"] != "telemetry"])
    if not ok:
        raise UserError(f"{path}: no successful microbenchmark records; run 'memwall microbench --out {path}' on "
                        "the GPU first")
    return ok


def runtime_kernels(records: list[dict]) -> list[dict]:
    """The projection records of the kernels memwall's runtime runs: its Triton kernels up to
    RUNTIME_TRITON_MAX_ROWS rows, cuBLAS above (runtime/ops.py). Files measured before the Triton cases existed
    keep their cuBLAS records at every size; Triton records of larger sizes (kept to choose that limit) drop out."""
    triton = {(r["shape"]["M"], r["shape"]["N"], r["shape"]["K"]) for r in records
              if r["kind"] == "gemm" and r["shape"].get("impl") == "triton"}
    out = []
    for r in records:
        if r["kind"] == "gemm":
            mnk = (r["shape"]["M"], r["shape"]["N"], r["shape"]["K"])
            small = mnk[0] <= RUNTIME_TRITON_MAX_ROWS
            if r["shape"].get("impl") == "triton" and not small:
                continue
            if r["shape"].get("impl", "cublas") == "cublas" and small and mnk in triton:
                continue
        out.append(r)
    return out


def group_of(rec: dict) -> str | None:
    """Which fit a record feeds ('linear' or 'attention'), is only checked ('fp8', 'copy'), or None."""
    kind = rec["kind"]
    if kind == "gemm":
        return "gemv" if rec["shape"].get("M") == 1 else "linear"
    if kind == "stream":
        return "linear" if rec["shape"]["op"] == "read" else "copy"
    if kind in ("attention", "fp8", "paged"):
        return kind
    return None


def _family(rec: dict) -> str:
    if rec["kind"] in ("gemm", "fp8") and rec["shape"].get("M") == 1:
        return "gemv"
    return {"gemm": "linear", "fp8": "linear", "attention": "attention", "paged": "paged_attention"}.get(
        rec["kind"], "elementwise")


def predict_records(records: list[dict], profile: HardwareProfile) -> list[dict]:
    """The cost model's time for every priced record (through sim.cost.price itself), with the relative error and
    the roof that binds: [{key, group, measured_s, predicted_s, rel_error, bound}]."""
    from sim.cost import CostContext, Op, price
    from sim.model import load_model

    model = load_model("llama-3.1-8b")  # price() needs a context; the operator's own numbers come from the record
    rows = []
    for rec in records:
        group = group_of(rec)
        if group is None:
            continue
        # a microbenchmark's product has both operands in its dtype (fp8 x fp8 through torch._scaled_mm)
        ctx = CostContext(model, profile, weights=rec["dtype"], activations=rec["dtype"])
        family = _family(rec)
        flops = rec["flops"] if family != "elementwise" else 0.0
        # a paged launch is priced from its shape (programs, unique bytes), as the cost model prices a pass's
        op = paged_op(rec, profile) if group == "paged" else Op(rec["key"], 1, 1, flops, rec["bytes"], family)
        cost = price(op, ctx)
        meas = rec["median_s"]
        rows.append({"key": rec["key"], "group": group, "measured_s": meas, "predicted_s": cost.time_s,
                     "rel_error": cost.time_s / meas - 1.0, "bound": cost.bound})
    return rows


def error_stats(rel_errors) -> dict:
    """Median, p90 and max of |relative error|, and the count."""
    a = np.abs(np.asarray(rel_errors, dtype=float))
    if a.size == 0:
        return {"median": None, "p90": None, "max": None, "n": 0}
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)), "max": float(a.max()), "n": int(a.size)}


def curve_of(row: dict) -> str:
    """The curve a priced record's residual belongs to: the roof that binds it, or 'checked:<family>'."""
    if row["group"] == "linear":
        return "compute" if row["bound"] == "compute" else "memory"
    if row["group"] == "gemv":
        return "gemv_memory"
    if row["group"] == "attention":
        return "attention_compute" if row["bound"] == "compute" else "attention_memory"
    if row["group"] == "paged":
        return "paged_attention_compute" if row["bound"] == "compute" else "paged_attention_memory"
    return f"checked:{row['group']}"


def residuals_by_curve(rows: list[dict]) -> dict[str, dict]:
    """|relative error| stats of `predict_records` rows, per curve (and per checked family)."""
    by_curve: dict[str, list[float]] = {}
    for r in rows:
        by_curve.setdefault(curve_of(r), []).append(r["rel_error"])
    return {k: error_stats(v) for k, v in sorted(by_curve.items())}


# -- fitting -------------------------------------------------------------------------------------------------------


def _arrays(records: list[dict], group: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sel = [r for r in records if group_of(r) == group]
    flops = np.array([r["flops"] if _family(r) != "elementwise" else 0.0 for r in sel])
    return flops, np.array([float(r["bytes"]) for r in sel]), np.array([r["median_s"] for r in sel])


def model_time_s(x: np.ndarray, flops: np.ndarray, nbytes: np.ndarray, peak_flops: float, peak_bw: float,
                 overhead_s: float) -> np.ndarray:
    """The cost model's time of one-kernel operators for curve parameters x = (m_c, log10 h_c, m_m, log10 h_m),
    vectorized (equal to sim.cost.price; tests check it)."""
    m_c, h_c, m_m, h_m = x[0], 10 ** x[1], x[2], 10 ** x[3]
    compute = np.where(flops > 0, (flops + h_c) / (peak_flops * m_c), 0.0)
    memory = np.where(nbytes > 0, (nbytes + h_m) / (peak_bw * m_m), 0.0)
    return overhead_s + np.maximum(compute, memory)


def fit_pair(flops, nbytes, measured_s, peak_flops: float, peak_bw: float, overhead_s: float,
             start: tuple[Curve, Curve]) -> tuple[Curve, Curve]:
    """Least-squares (soft-L1) fit of a compute and a memory Hockney curve to measured one-kernel times.
    The max() makes the objective kinked, so it starts from the given curves and from two others, keeping the best."""
    from scipy.optimize import least_squares

    def residual(x):
        return model_time_s(x, flops, nbytes, peak_flops, peak_bw, overhead_s) / measured_s - 1.0

    c0, m0 = start
    starts = [(c0.max_fraction, np.log10(max(c0.half_size, 1.0)), m0.max_fraction, np.log10(max(m0.half_size, 1.0))),
              (0.7, 9.0, 0.9, 6.5), (0.5, 10.0, 0.7, 5.5)]
    lo, hi = [0.02, 0.0, 0.02, 0.0], [1.0, 14.0, 1.0, 12.0]  # fractions in (0, 1]; half sizes 1 .. 1e14
    best = None
    for x0 in starts:
        x0 = np.clip(x0, np.add(lo, 1e-6), np.subtract(hi, 1e-6))
        r = least_squares(residual, x0, bounds=(lo, hi), loss="soft_l1", f_scale=SOFT_L1_SCALE,
                          x_scale=[0.1, 1, 0.1, 1])
        if best is None or r.cost < best.cost:
            best = r
    m_c, h_c, m_m, h_m = best.x
    return (Curve(max_fraction=float(round_sig(m_c)), half_size=float(round_sig(10 ** h_c))),
            Curve(max_fraction=float(round_sig(m_m)), half_size=float(round_sig(10 ** h_m))))


def projection_factors(records: list[dict], profile: HardwareProfile) -> dict[str, tuple[tuple[float, float], ...]]:
    """Efficiency.projection_factors from the bf16 cuBLAS projection records past RUNTIME_TRITON_MAX_ROWS rows
    (where the runtime calls the very torch GEMM that was timed): for each weight shape and row count, (measured -
    kernel overhead) / the curves' time, so that the cost model prices those shapes at their measured times and
    keeps the curves for the rest (sim/hardware.py says why). Memwall's own Triton kernels below that are left to
    the curves: the runtime fuses epilogues into them (RoPE, SwiGLU, residual) that the microbenchmark's plain
    product lacks, and single records there varied (the 8B gate/up product at 4 rows: 1.32x the curve, where
    batch-4 decodes ran as the curves predict, reports/h100/validation-notes.md)."""
    from sim.cost import CostContext, Op, price
    from sim.hardware import projection_key
    from sim.model import load_model

    ctx = CostContext(load_model("llama-3.1-8b"), profile, weights="bf16", activations="bf16")
    overhead = profile.efficiency.kernel_overhead_s
    table: dict[str, dict[float, float]] = {}
    for rec in records:
        sh = rec["shape"]
        if (rec["kind"] != "gemm" or rec["dtype"] != "bf16" or sh.get("impl", "cublas") != "cublas"
                or sh["M"] <= RUNTIME_TRITON_MAX_ROWS):
            continue
        cost = price(Op(rec["key"], 1, 1, rec["flops"], rec["bytes"], _family(rec)), ctx)
        core = cost.time_s - overhead
        if core > 0 and rec["median_s"] > overhead:
            table.setdefault(projection_key(sh["N"], sh["K"]), {})[float(sh["M"])] = \
                round_sig((rec["median_s"] - overhead) / core, 3)
    return {k: tuple(sorted(v.items())) for k, v in sorted(table.items())}


def _eager_pass_median(records: list[dict]) -> float | None:
    """Seconds per kernel of the `eager_pass` records: each pass's time over the kernels the cost model counts for
    it today (microbench_host.eager_pass_kernels), so that launch_overhead_us x that count is the measured pass."""
    from validation.microbench_host import eager_pass_kernels

    vals = [r["pass_s"] / eager_pass_kernels(r["shape"]) if r.get("pass_s") else r["median_s"]
            for r in records if r["kind"] == "launch" and r["shape"].get("mode") == "eager_pass"]
    return float(np.median(vals)) if vals else None


def _median_of(records: list[dict], kind: str, mode: str) -> float | None:
    vals = [r["median_s"] for r in records if r["kind"] == kind and (mode is None or r["shape"].get("mode") == mode)]
    return float(np.median(vals)) if vals else None


def calibrate(records: list[dict], base: HardwareProfile,
              records_path: str | None = None) -> tuple[HardwareProfile, dict]:
    """A calibrated copy of `base` whose curves fit `records`, and the fit's report (parameters, residuals per curve
    and per checked family). Curves without records keep the base's and are listed as carried over."""
    eff = base.efficiency
    measured, carried = [], []
    overhead_s = _median_of(records, "launch", "graph")
    if overhead_s is None:
        overhead_s, _ = eff.kernel_overhead_s, carried.append("kernel_overhead_us")
    else:
        measured.append("kernel_overhead_us")
    launch_s = _eager_pass_median(records) or _median_of(records, "launch", "eager")
    measured.append("launch_overhead_us") if launch_s is not None else carried.append("launch_overhead_us")
    host = fit_host(records)
    measured.append("host_pass_overhead_us") if host is not None else carried.append("host_pass_overhead_us")
    link = fit_link(records)
    measured.append("link_bandwidth_gb_s") if link is not None else carried.append("link_bandwidth_gb_s")
    bf16, bw = base.peak_flops_per_s("bf16"), base.hbm_bandwidth_bytes_per_s
    curves = {"compute": eff.compute, "memory": eff.memory,
              "attention_compute": eff.attn_compute, "attention_memory": eff.attn_memory}
    for group, (cn, mn) in {"linear": ("compute", "memory"),
                            "attention": ("attention_compute", "attention_memory")}.items():
        flops, nbytes, meas = _arrays(records, group)
        if len(meas) >= 4:
            curves[cn], curves[mn] = fit_pair(flops, nbytes, meas, bf16, bw, overhead_s, (curves[cn], curves[mn]))
            measured += [cn, mn]
        else:
            carried += [cn, mn]
    # memwall's paged kernel: its own pair and programs' walk where it was measured, else unset (the attention
    # curves price it on row-group bytes)
    paged = fit_paged([r for r in records if group_of(r) == "paged"], base, overhead_s)
    programs = None
    if paged is not None:
        curves["paged_attention_compute"], curves["paged_attention_memory"], programs = paged
        measured += ["paged_attention_compute", "paged_attention_memory", "paged_attention_programs"]
    elif eff.paged_attention_memory is not None:
        carried += ["paged_attention_compute", "paged_attention_memory", "paged_attention_programs"]
    # one-row products run a GEMV kernel of their own (memwall's Triton GEMV; cuBLAS picks GEMV kernels too): its
    # memory curve is fitted alone (they are memory-bound; the compute half of the pair is dropped)
    flops, nbytes, meas = _arrays(records, "gemv")
    if len(meas) >= 4:
        curves["gemv_memory"] = fit_pair(np.zeros_like(flops), nbytes, meas, bf16, bw, overhead_s,
                                         (curves["compute"], curves["memory"]))[1]
        measured.append("gemv_memory")
    else:
        carried.append("gemv_memory")
    first = records[0]
    source = records_path or "records"
    new_eff = eff.model_copy(update={
        **curves, "kernel_overhead_us": round_sig(overhead_s * 1e6),
        **({"paged_attention_programs": programs} if programs is not None else {}),
        "source": f"fitted by 'memwall calibrate' to {len(records)} microbenchmark records ({source}) measured on "
                  f"{first.get('device')} on {str(first.get('date', ''))[:10]}"})
    profile = base.model_copy(update={
        "name": f"{base.name}-calibrated",
        "description": f"{base.description}; efficiency curves fitted to microbenchmarks",
        "launch_overhead_us": round_sig(launch_s * 1e6) if launch_s is not None else base.launch_overhead_us,
        **{f: host[f] if host is not None else getattr(base, f) for f in HOST_FIELDS},
        "link_bandwidth_gb_s": link[0] if link is not None else base.link_bandwidth_gb_s,
        "link_latency_us": link[1] if link is not None else base.link_latency_us,
        "efficiency": new_eff})
    # measured shapes keep their measured times: the curves' misses per weight shape and row count
    factors = projection_factors(records, profile)
    if factors:
        measured.append("projection_factors")
        profile = profile.model_copy(update={"efficiency": profile.efficiency.model_copy(
            update={"projection_factors": factors})})
    # residuals of the curves (records are priced without their factors, which would make them exact)
    rows = predict_records(records, profile)
    stats = residuals_by_curve(rows)
    residuals = {f"{k}.{s}": round(v[s], 4) for k, v in stats.items() if not k.startswith("checked:")
                 for s in ("median", "p90") if v[s] is not None}
    calibration = Calibration(
        device=str(first.get("device")), driver=first.get("driver"), torch=first.get("torch"), cuda=first.get("cuda"),
        date=str(first.get("date")), residuals=residuals, measured=measured, carried_over=carried, records=records_path)
    links = ("link_bandwidth_gb_s and link_latency_us fitted to NCCL all-reduce records (validation/allreduce.py)"
             if link is not None else "link numbers are unchanged from the base profile (no all-reduce records)")
    borrowed = [f"{k} takes {v}'s" for k, v in HOST_LIKE.items()
                if host is not None and k in host["host_pass_overhead_by_strategy_us"] and not any(r["kind"] == "host" and r["shape"].get("strategy") == k
                                                                 for r in records)]
    hosts = (f" Host time per pass fitted to the host records; {', '.join(borrowed)} fixed part (no records of its "
             "own)." if borrowed else "")
    if host is not None and host["host_eager_pass_overhead_us"] is not None:
        hosts += (" Eager passes' host time has terms of its own (fitted per iteration, validation/host_fit.py).")
    notes = (f"{base.provenance.notes or ''} Calibrated: efficiency curves, kernel_overhead_us and launch_overhead_us "
             f"measured (see calibration); capacity, bandwidth and peaks are the datasheet's; {links}.{hosts}").strip()
    profile = profile.model_copy(update={"provenance": base.provenance.model_copy(
        update={"notes": notes, "calibration": calibration})})
    report = {"profile": profile.name, "base": base.name, "records": records_path, "n_records": len(records),
              "device": calibration.device, "driver": calibration.driver, "torch": calibration.torch,
              "cuda": calibration.cuda, "date": calibration.date,
              "kernel_overhead_us": new_eff.kernel_overhead_us, "launch_overhead_us": profile.launch_overhead_us,
              "host": host, "curves": {k: v.model_dump(exclude_none=True) for k, v in curves.items()},
              "projection_factors": {"shapes": len(factors), "points": sum(len(v) for v in factors.values()),
                                     "min": min((f for v in factors.values() for _, f in v), default=None),
                                     "max": max((f for v in factors.values() for _, f in v), default=None)},
              "residuals": stats, "measured": measured, "carried_over": carried, "rows": rows}
    return profile, report


def write_profile(profile: HardwareProfile, path: Path, header: str) -> None:
    """The profile as YAML that `sim.hardware.load_profile` reads back (what-if scale omitted when identity)."""
    import yaml

    data = profile.model_dump(mode="json", exclude_none=True)
    if profile.scale.is_identity:
        data.pop("scale", None)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = yaml.safe_dump(data, sort_keys=False, width=120, allow_unicode=True, default_flow_style=None)
    path.write_text("".join(f"# {line}\n" for line in header.splitlines()) + body)


@user_errors
def calibrate_command(
    records: Path = typer.Argument(..., help="microbenchmark records (JSONL from 'memwall microbench')"),
    base: str = typer.Option("h100-sxm", help="datasheet profile the curves are fitted for"),
    out: Path = typer.Option(Path("hw_profiles/calibrated/h100-sxm-calibrated.yaml"), help="calibrated profile"),
    carry_to: Optional[list[str]] = typer.Option(["h200"], help="also write these chips with the fitted curves"),
    carry_host: Optional[Path] = typer.Option(
        None, "--carry-host", help="host and launch records measured on the machine of the one --carry-to chip "
                                   "(memwall microbench --only host / launch there): also write that chip's profile "
                                   "with them in place of the H100 machine's (<chip>-from-<base>-host.yaml)"),
    report: Optional[Path] = typer.Option(None, help="fit report JSON (default: calibration.json beside RECORDS)"),
):
    """Fit the efficiency curves of a profile to microbenchmark records and write the calibrated profile."""
    from rich.console import Console
    from rich.table import Table

    from validation.carry import carry_over, host_terms, with_host_of

    if carry_host is not None and len(carry_to or []) != 1:
        raise UserError(f"--carry-host: names the host records of one chip's machine; give exactly one --carry-to "
                        f"chip (got {len(carry_to or [])})")
    host_recs = load_records(carry_host) if carry_host is not None else None
    if host_recs is not None:
        host_terms(host_recs, str(carry_host))  # a file without host records fails here, before anything is fitted
    report_path = report or Path(records).parent / "calibration.json"
    for option, path in (("--out", out), ("--report", report_path)):  # before anything is fitted or written
        check_writable(path, option)
    recs = load_records(records)
    base_profile = load_profile(base)
    profile, rep = calibrate(recs, base_profile, str(records))
    today = dt.date.today().isoformat()
    short = base.split("-")[0]
    outputs = [(profile, out, f"Generated by: memwall calibrate {records} --base {base} --out {out}  ({today})\n"
                              "Do not edit by hand: rerun the command.")]
    for chip in carry_to or []:
        target = load_profile(chip)
        carried = carry_over(profile, target, f"from-{short}")
        outputs.append((carried, out.parent / f"{target.name}-from-{short}.yaml",
                        f"Generated by: memwall calibrate {records} --base {base} --carry-to {chip}  ({today})\n"
                        "The H100-fitted curves on this chip's datasheet; nothing here was measured on it."))
        if host_recs is not None:  # beside it, under a name of its own: the carried profile stays as it was
            own = with_host_of(carried, host_recs, str(carry_host))
            own = own.model_copy(update={"name": f"{own.name}-host"})
            outputs.append((own, out.parent / f"{own.name}.yaml",
                            f"Generated by: memwall calibrate {records} --base {base} --carry-to {chip} --carry-host "
                            f"{carry_host}  ({today})\n"
                            "The H100-fitted curves on this chip's datasheet, with its own machine's host terms."))
    for p, path, header in outputs:  # written only once everything above has held
        write_profile(p, path, header)
    written = [str(path) for _, path, _ in outputs]
    report_path.write_text(json.dumps(rep, indent=1) + "\n")
    t = Table(title=f"{profile.name}: fit to {len(recs)} records ({rep['device']}, {rep['date'][:10]})",
              title_justify="left")
    for c in ("curve", "max_fraction", "half_size", "|rel err| median", "p90", "max", "n"):
        t.add_column(c, justify="left" if c == "curve" else "right")
    for name, st in rep["residuals"].items():
        curve = rep["curves"].get(name, {})
        t.add_row(name, f"{curve['max_fraction']:.3f}" if curve else "", f"{curve['half_size']:.3g}" if curve else "",
                  *(f"{st[s]:.1%}" for s in ("median", "p90", "max")), str(st["n"]))
    console = Console()
    console.print(t)
    console.print(f"kernel_overhead_us {rep['kernel_overhead_us']} (in a CUDA graph), launch_overhead_us "
                  f"{rep['launch_overhead_us']} (eager); wrote {', '.join(written)}, {report_path}")
    if rep.get("host"):
        h = rep["host"]
        res = h.get("residuals") or {}
        console.print("host per pass (fitted per " + ("iteration" if h["method"] == "iterations" else "run") + "): "
                      + ", ".join(f"{k.removeprefix('host_').removesuffix('_us')} {v}" for k, v in h.items()
                                  if k in HOST_FIELDS and v not in (None, 0.0, {}))
                      + (f"; runs' mean |rel err| median {res['median']:.1%}, p90 {res['p90']:.1%} (n = {res['n']})"
                         if res else ""))
