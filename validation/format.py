"""Rich tables for results, chips and models: how memwall prints numbers for people."""

from __future__ import annotations

import math

from rich.markup import escape
from rich.table import Table

from sim.result import Result, Stats


def _ms(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x * 1e3:,.2f}"


def _stats_row(name: str, s: Stats) -> list[str]:
    return [name, _ms(s.mean), _ms(s.p50), _ms(s.p90), _ms(s.p99)]


def result_tables(r: Result) -> list[Table]:
    """A summary table (throughput, bounds, memory) and a latency table (ms percentiles) of one result."""
    # escaped: a what-if chip's name is 'h100-sxm[bandwidthx2]', which rich would read as a markup tag and drop
    head = Table(title=escape(f"{r.model} on {r.hardware} — {r.strategy}, {r.batching} batching ({r.source})"),
                 show_header=False, title_justify="left")
    head.add_column("metric", style="bold")
    head.add_column("value", justify="right")
    if not r.fits:
        head.add_row("does not fit", r.message or "")
        return [head]
    rows = [
        ("output throughput", f"{r.output_throughput_tok_s:,.1f} tok/s"),
        ("request throughput", f"{r.request_throughput_req_s:,.3f} req/s"),
        ("requests completed / rejected", f"{r.completed} / {r.rejected}"),
        ("output tokens", f"{r.output_tokens:,}"),
        ("makespan", f"{r.makespan_s:,.3f} s"),
        ("passes", f"{r.passes:,} (mean batch {r.mean_batch:.1f}, {r.tokens_per_pass:.1f} tokens/pass)"),
        ("bound", f"memory {r.memory_bound_fraction:.0%} / compute {r.compute_bound_fraction:.0%}"
                  + (f" / host {r.host_bound_fraction:.0%}" if r.host_bound_fraction >= 0.005 else "")
                  + " of busy time"),
        ("MBU / MFU", f"{r.mbu:.1%} / {r.mfu:.1%}"),
        ("arithmetic intensity", f"{r.arithmetic_intensity_flop_per_byte:,.1f} FLOP/byte"),
        ("KV capacity (per replica)", f"{r.kv_capacity_tokens:,} tokens, peak use {r.kv_peak_occupancy:.0%}"),
        ("preemptions", f"{r.preemptions}"),
    ]
    if r.goodput_req_s is not None:
        rows.append(("goodput (SLO met)", f"{r.goodput_req_s:,.3f} req/s"))
    for k, v in r.extra.items():
        rows.append((k.replace("_", " "), f"{v:,.4g}" if isinstance(v, (int, float)) else str(v)))
    for k, v in rows:
        head.add_row(k, v)
    lat = Table(title="latency (ms)", title_justify="left")
    for c in ("metric", "mean", "p50", "p90", "p99"):
        lat.add_column(c, justify="right" if c != "metric" else "left")
    for name, s in (("TTFT", r.ttft_s), ("TPOT", r.tpot_s), ("ITL", r.itl_s), ("E2E", r.e2e_s),
                    ("queueing", r.queue_s), ("pass time", r.pass_time_s)):
        lat.add_row(*_stats_row(name, s))
    return [head, lat]


def sensitivity_table(fits: dict, span: float, steps: int) -> Table:
    """Per metric: its elasticity to the device's compute and memory time, its jitter, and what 5% slower compute
    and memory would do to it (validation/load_sensitivity.device_elasticity)."""
    t = Table(title=f"sensitivity to compute and memory time (peaks / 1 +- up to {span:g}, {steps} simulations; "
                    "per-kernel overheads and host fixed)", title_justify="left")
    for c in ("metric", "elasticity", "jitter", "if 5% slower"):
        t.add_column(c, justify="left" if c == "metric" else "right")
    for name, fit in fits.items():
        if fit is None:
            t.add_row(name, "-", "-", "-")
        else:
            t.add_row(name, f"{fit[0]:.2f}", f"{fit[1]:.1%}", f"{1.05 ** fit[0] - 1:+.1%}")
    return t


def profiles_table(rows: list[dict]) -> Table:
    t = Table(title="hardware profiles (dense peaks; ridge = bf16 FLOP per HBM byte)", title_justify="left")
    t.add_column("name", no_wrap=True)
    for c in ("HBM GB", "TB/s", "bf16 TFLOP/s", "fp8 TFLOP/s", "ridge", "TDP W", "$/GPU-h"):
        t.add_column(c, justify="right")
    for d in rows:
        t.add_row(escape(d["name"]), f"{d['hbm_gb']:g}", f"{d['bw_tb_s']:.3g}", f"{d['bf16_tflops']:,.0f}",
                  "-" if math.isnan(d["fp8_tflops"]) else f"{d['fp8_tflops']:,.0f}",
                  f"{d['ridge_flop_per_byte']:.0f}", f"{d['tdp_w']:g}",
                  "-" if math.isnan(d["usd_per_h"]) else f"{d['usd_per_h']:.2f}")
    return t


def bound_of(r: Result) -> str:
    if not r.fits:
        return "does not fit"
    shares = {"memory": r.memory_bound_fraction, "compute": r.compute_bound_fraction, "host": r.host_bound_fraction}
    return max(shares, key=shares.get)  # the largest share of busy time (a tie goes to memory, then compute)


def compare_table(rows: list[tuple[str, Result]], title: str) -> Table:
    t = Table(title=escape(title), title_justify="left")
    for c in ("strategy", "tok/s", "TPOT ms", "TTFT ms", "tok/iter", "FLOP/B", "MBU", "MFU", "bound"):
        t.add_column(c, justify="left" if c in ("strategy", "bound") else "right", no_wrap=c == "strategy")
    for kind, r in rows:
        if not r.fits:
            t.add_row(kind, "-", "-", "-", "-", "-", "-", "-", bound_of(r))
            continue
        t.add_row(kind, f"{r.output_throughput_tok_s:,.1f}", _ms(r.tpot_s.mean), _ms(r.ttft_s.mean),
                  f"{r.committed_per_pass:.2f}", f"{r.arithmetic_intensity_flop_per_byte:,.1f}", f"{r.mbu:.0%}",
                  f"{r.mfu:.0%}", bound_of(r))
    return t


def whatif_table(rows: list[dict], title: str) -> Table:
    chips = list(dict.fromkeys(r["chip"] for r in rows))
    t = Table(title=escape(title), title_justify="left")
    t.add_column("strategy", no_wrap=True)
    for c in chips:
        t.add_column(escape(c), justify="right")
    for kind in dict.fromkeys(r["strategy"] for r in rows):
        cells = []
        for c in chips:
            row = next(r for r in rows if r["chip"] == c and r["strategy"] == kind)
            res = row["result"]
            if not res.fits:
                cells.append("does not fit")
                continue
            gain = "" if c == chips[0] or row["gain"] is None else f" ({row['gain']:.2f}x)"
            cells.append(f"{res.output_throughput_tok_s:,.0f} tok/s{gain} {bound_of(res)[:3]}")
        t.add_row(kind, *cells)
    return t
