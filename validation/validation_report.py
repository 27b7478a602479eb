"""The validation report (DESIGN §7.2-3): predicted against measured, from committed files only.

Reads every JSONL under a report folder (reports/h100/): microbenchmark records (`memwall microbench`), their
telemetry, and validation runs (`memwall run --out`, validation/run.py: each line {key, status, scenario, device,
result, passes: [[tokens, logit_rows, seqs, kv_read_tokens, attn_pairs, device_s], ...]}). With the calibrated
profile it predicts
- every measured pass: `CostModel.pass_time(PassShape(...))` of the run's own scenario (sim.engine.prepare);
- every run's throughput, TTFT and ITL: `sim.engine.simulate` of the run's scenario on that profile,
and writes validation.md (+ PNGs), a self-contained validation.html (PNGs inlined as base64) and
validation-summary.json: strategy -> metric -> {median, p90, max, n} of |pred - meas| / meas.
Nothing here needs torch or a GPU: the report regenerates from the repository on any machine.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from sim.errors import UserError
from validation.calibrate import CALIBRATED_H100, error_stats, predict_records, residuals_by_curve, runtime_kernels
from validation.clikit import user_errors
from validation.host_check import host_pairs, host_split
from validation.records_file import iter_records

RUN_METRICS = {"output_throughput_tok_s": lambda r: r["output_throughput_tok_s"],
               "ttft_p50_s": lambda r: r["ttft_s"]["p50"], "itl_p50_s": lambda r: r["itl_s"]["p50"]}


def read_folder(folder: Path) -> dict:
    """Records of every JSONL in `folder`, sorted by kind: microbench, telemetry, runs; plus the files read."""
    out = {"microbench": [], "telemetry": [], "runs": [], "files": {}}
    for path in sorted(Path(folder).glob("*.jsonl")):
        n = 0
        for _, rec in iter_records(path, "records of 'memwall run', 'validate' or 'microbench'"):
            if "scenario" in rec and "status" in rec:  # `memwall run` records, finished or not
                out["runs"].append(rec)
            elif rec.get("kind") == "telemetry":
                out["telemetry"].append(rec)
            elif "kind" in rec and "median_s" in rec and rec.get("status") == "ok":
                out["microbench"].append(rec)
            else:
                continue
            n += 1
        out["files"][path.name] = n
    return out


def measured_passes(rec: dict) -> list[tuple]:
    """(role, PassShape, measured device seconds) of every timed forward pass of a run record. Non-AR runs list
    each forward pass with its role (drafts are priced with the draft's cost model); their `passes` are whole
    iterations (drafts + verify), which no single pass price describes. Older records lack the roles."""
    from sim.passes import PassShape

    strategy_passes = rec.get("strategy_passes") or []
    if strategy_passes and len(strategy_passes[0]) == 7:
        rows = [(role, shape, t, None) for role, *shape, t in strategy_passes]
    else:
        passes = rec.get("passes", [])
        spans = rec.get("pass_spans") or [None] * len(passes)  # records before session 12 lack them
        rows = [("target", shape, t, sp) for (*shape, t), sp in zip(passes, spans)]
    return [(role, PassShape(tokens, logit_rows, seqs, kv, pairs, tokens, "causal", tuple(sp) if sp else None),
             device_s)
            for role, (tokens, logit_rows, seqs, kv, pairs), device_s, sp in rows if device_s and device_s > 0]


def predict_run(rec: dict, profile_ref: str) -> dict:
    """Per-pass (measured, predicted) seconds and per-metric relative errors of one run, on `profile_ref`."""
    from sim.engine import prepare, simulate
    from sim.scenario import scenario_from_dict

    s = scenario_from_dict({**rec["scenario"], "hardware": profile_ref}, where=f"run {rec.get('key')}")
    setup = prepare(s)
    meas, pred, shapes = [], [], []
    for role, shape, device_s in measured_passes(rec):
        cost = setup.role_costs[role] if role in setup.role_costs else setup.target_cost
        meas.append(device_s)
        pred.append(cost.pass_time(shape).time_s)
        shapes.append((role, shape.tokens, shape.logit_rows, shape.seqs, shape.kv_read_tokens))
    host_meas, host_pred = host_pairs(rec, setup)
    predicted = simulate(s)[0].model_dump(mode="json")
    metrics = {}
    for name, get in RUN_METRICS.items():
        m, p = get(rec["result"]), get(predicted)
        if m and p is not None:
            metrics[name] = {"measured": m, "predicted": p, "rel_error": p / m - 1}
    sc = rec["scenario"]
    return {"key": rec.get("key"), "name": sc.get("name"), "strategy": sc["strategy"]["kind"],
            "batching": sc["batching"]["kind"], "load": (sc.get("workload") or {}).get("kind", "closed"),
            "measured_s": meas, "predicted_s": pred, "shapes": shapes, "metrics": metrics,
            "host_measured_s": host_meas, "host_predicted_s": host_pred,
            "telemetry": (rec["result"].get("extra") or {}).get("telemetry")}


# judged under Poisson load (the TTFT / ITL criterion); closed-loop runs are listed apart
LATENCY_METRICS = ("ttft_p50_s", "itl_p50_s")


def summarize(preds: list[dict]) -> dict:
    """strategy -> metric -> {median, p90, max, n} of |pred - meas| / meas: 'pass_time_s' over every measured
    pass, throughput over every run, TTFT / ITL p50 over the runs under Poisson load (and, as *_static, the
    others)."""
    out: dict[str, dict] = {}
    for strategy in sorted({p["strategy"] for p in preds}):
        sel = [p for p in preds if p["strategy"] == strategy]
        rel = [b / a - 1 for p in sel for a, b in zip(p["measured_s"], p["predicted_s"])]
        out[strategy] = {"pass_time_s": error_stats(rel)}
        host = [b / a - 1 for p in sel for a, b in zip(p.get("host_measured_s", []), p.get("host_predicted_s", []))
                if a > 0]
        if host:  # a diagnostic, not a target: the serving loop's host time per iteration (runs of session 6 on)
            out[strategy]["host_time_s"] = error_stats(host)
        for name in RUN_METRICS:
            def errs(runs):
                return [p["metrics"][name]["rel_error"] for p in runs if name in p["metrics"]]

            if name in LATENCY_METRICS:
                out[strategy][f"{name} (poisson)"] = error_stats(errs([p for p in sel if p["load"] == "poisson"]))
                out[strategy][f"{name} (closed)"] = error_stats(errs([p for p in sel if p["load"] != "poisson"]))
            else:
                out[strategy][name] = error_stats(errs(sel))
    return out


# -- plots -------------------------------------------------------------------------------------------------------


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _scatter(ax, groups: dict[str, tuple[list, list]], unit: float, label: str) -> None:
    lo, hi = np.inf, 0.0
    for name, (meas, pred) in groups.items():
        m, p = np.asarray(meas) * unit, np.asarray(pred) * unit
        ax.scatter(m, p, s=6, alpha=0.6, label=name)
        lo, hi = min(lo, m.min(), p.min()), max(hi, m.max(), p.max())
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel=f"measured ({label})", ylabel=f"predicted ({label})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, markerscale=2)


def calibration_plot(rows: list[dict], records: list[dict], profile) -> bytes:
    """Left: cost-model time vs measured for every microbenchmark record. Right: achieved fraction of peak of the
    projection GEMMs against their size, with the fitted curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from validation.calibrate import curve_of

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.8))
    groups: dict[str, tuple[list, list]] = {}
    for r in rows:
        g = groups.setdefault(curve_of(r), ([], []))
        g[0].append(r["measured_s"])
        g[1].append(r["predicted_s"])
    _scatter(a, groups, 1e6, "us")
    a.set_title(f"microbenchmarks priced with {profile.name}")
    by_key = {r["key"]: r for r in records}
    bw, peak = profile.hbm_bandwidth_bytes_per_s, profile.peak_flops_per_s("bf16")
    eff = profile.efficiency
    for r in rows:
        if r["group"] not in ("linear", "gemv") or not r["key"].startswith("gemm"):
            continue
        rec = by_key[r["key"]]
        if r["group"] == "gemv":
            b.scatter(rec["bytes"], rec["bytes"] / (rec["median_s"] * bw), s=7, color="tab:green", alpha=0.6)
        elif r["bound"] == "compute":
            b.scatter(rec["flops"], rec["flops"] / (rec["median_s"] * peak), s=5, color="tab:red", alpha=0.5)
        else:
            b.scatter(rec["bytes"], rec["bytes"] / (rec["median_s"] * bw), s=5, color="tab:blue", alpha=0.5)
    sizes = np.logspace(5, 14, 200)
    # the curves alone; a measured point also pays the per-kernel overhead, so small operators sit below them
    b.plot(sizes, eff.memory.fraction(sizes), color="tab:blue", label="memory curve (x = bytes; no overhead)")
    b.plot(sizes, eff.compute.fraction(sizes), color="tab:red", label="compute curve (x = FLOPs; no overhead)")
    b.plot(sizes, eff.gemv_mem.fraction(sizes), color="tab:green", label="one-row GEMV memory curve (x = bytes)")
    b.set(xscale="log", ylim=(0, 1), xlabel="operator size (bytes or FLOPs)", ylabel="achieved fraction of peak",
          title="bf16 projections: achieved fraction vs fitted curve")
    b.grid(True, alpha=0.3)
    b.legend(fontsize=8)
    return _png(fig)


def runs_plot(preds: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.8))
    passes = {}
    runs = {}
    for p in preds:
        g = passes.setdefault(p["strategy"], ([], []))
        g[0].extend(p["measured_s"])
        g[1].extend(p["predicted_s"])
        if "output_throughput_tok_s" in p["metrics"]:
            m = p["metrics"]["output_throughput_tok_s"]
            r = runs.setdefault(p["strategy"], ([], []))
            r[0].append(m["measured"])
            r[1].append(m["predicted"])
    if any(g[0] for g in passes.values()):
        _scatter(a, {k: v for k, v in passes.items() if v[0]}, 1e3, "ms per pass")
    a.set_title("per-pass device time")
    if runs:
        _scatter(b, runs, 1.0, "output tok/s")
    b.set_title("throughput per run")
    return _png(fig)


# -- the document -------------------------------------------------------------------------------------------------


def _pct(v) -> str:
    return "–" if v is None else f"{v:.1%}"


def _signed(v) -> str:
    return f"{v:+.1%}"


def _stats_row(label: str, st: dict) -> list[str]:
    return [label, _pct(st["median"]), _pct(st["p90"]), _pct(st["max"]), str(st["n"])]


def build(folder: Path, profile_ref: str) -> tuple[list, dict]:
    """The report as blocks (('h', text) | ('p', text) | ('table', header, rows) | ('img', name, png)) and the
    summary JSON."""
    from sim.hardware import load_profile

    profile = load_profile(profile_ref)
    data = read_folder(folder)
    cal = profile.provenance.calibration
    blocks: list = [("h", f"Validation: predicted vs measured ({folder.as_posix()})")]
    blocks.append(("p", f"Regenerate with `memwall report validation --dir {folder.as_posix()}` on any machine "
                        f"(no GPU). Predictions use profile **{profile.name}**. Files read: "
                   + ", ".join(f"{k} ({v} records)" for k, v in data["files"].items()) + "."))
    if cal:
        blocks.append(("p", f"Calibration provenance: {cal.device}, driver {cal.driver}, torch {cal.torch}, CUDA "
                            f"{cal.cuda}, measured {cal.date}; records {cal.records}; fitted: "
                            f"{', '.join(cal.measured) or 'none'}; carried over: "
                            f"{', '.join(cal.carried_over) or 'none'}."))
    # calibration
    blocks.append(("h", "Calibration fit (microbenchmarks)"))
    if data["microbench"]:
        rows = predict_records(runtime_kernels(data["microbench"]), profile)
        res = residuals_by_curve(rows)
        eff = profile.efficiency
        table = []
        for name, st in res.items():
            curve = getattr(eff, name, None) if not name.startswith("checked:") else None
            shape = f"{curve.max_fraction:.3f} / {curve.half_size:.3g}" if curve is not None else "not fitted"
            table.append([*_stats_row(name, st), shape])
        blocks.append(("table", ["curve", "median abs err", "p90", "max", "n", "max_fraction / half_size"], table))
        blocks.append(("p", f"kernel_overhead_us = {eff.kernel_overhead_us} (tiny kernels back to back in a CUDA "
                            f"graph); launch_overhead_us = {profile.launch_overhead_us} (eager). Residuals are "
                            "recomputed here from the records through sim.cost.price; each record counts under the "
                            "roof that binds it. "
                            "checked:* families were priced but not fitted: fp8 GEMMs (fp8 peak, bf16 curves) and "
                            "device copies (inside a CUDA graph a copy may run on the copy engines, not as a kernel)."))
        walk = eff.paged_attention_programs
        if walk is not None:
            per = "; ".join(f"{k}: {w.resident:g} at once, {w.program_overhead_us:g} us + {w.position_ns:g} ns per "
                            "position" for k, w in sorted(walk.by_config.items()))
            blocks.append(("p", f"Paged attention kernel, programs' walk per launch configuration (heads x KV heads "
                                f"x head dim / BLOCK_T x stages; sim/paged_launch.py; its records count under "
                                f"paged_attention_memory, whichever of HBM and walk binds them): {per}."))
        blocks.append(("img", "validation-calibration.png", calibration_plot(rows, data["microbench"], profile)))
    else:
        blocks.append(("p", "No microbenchmark records in this folder."))
    # end to end
    blocks.append(("h", "End-to-end validation runs"))
    # the last successful record of each scenario key (a rerun's wins, as in validate.read_runs); a failed attempt
    # counts as unfinished only while no attempt of its key succeeded
    ok = list({r.get("key"): r for r in data["runs"] if r.get("status") == "ok"}.values())
    done = {r.get("key") for r in ok}
    failed = [r for r in data["runs"] if r.get("status") != "ok" and r.get("key") not in done]
    retried = [r for r in data["runs"] if r.get("status") != "ok" and r.get("key") in done]
    preds = [predict_run(r, profile_ref) for r in ok]
    summary = summarize(preds)
    if preds:
        table = [[s, m, *_stats_row("", st)[1:]] for s, metrics in summary.items() for m, st in metrics.items()]
        blocks.append(("table", ["strategy", "metric", "median abs err", "p90", "max", "n"], table))
        from validation.targets import target_blocks

        blocks += target_blocks(summary)
        if any("host_time_s" in m for m in summary.values()):
            blocks.append(("p", "`host_time_s` is a diagnostic, not a target: each iteration's host time (the serving "
                                "loop's wall time outside the device's, recorded per pass by runtime/serve.py) "
                                "against the host model (sim.engine.host_s) over its forward passes. It says how "
                                "much of a throughput or latency error is the host's."))
            split = host_split(preds, ok)
            blocks.append(("p", "Where throughput errors come from, per run (summed over its passes): device time "
                                "(predicted / measured - 1), the host's share of the makespan, host time (predicted "
                                "/ measured - 1), and the throughput error the host prediction alone makes (measured "
                                "device time kept):"))
            blocks.append(("table", ["strategy", "runs", "device time error", "host share", "host time error",
                                     "throughput error from host, median / p90 abs"],
                           [[k, str(v["runs"]), f"{_signed(v['device_error'][0])} to {_signed(v['device_error'][1])}",
                             f"{_pct(v['host_share'][0])} to {_pct(v['host_share'][1])}",
                             f"{_signed(v['host_error'][0])} to {_signed(v['host_error'][1])}",
                             f"{_pct(v['throughput_error_from_host']['median'])} / "
                             f"{_pct(v['throughput_error_from_host']['p90'])}"] for k, v in split.items()]))
        blocks.append(("img", "validation-runs.png", runs_plot(preds)))
        worst = sorted(((abs(b / a - 1), p["name"], s, a, b) for p in preds
                        for a, b, s in zip(p["measured_s"], p["predicted_s"], p["shapes"])), reverse=True)[:8]
        blocks.append(("p", "Worst passes (shape = tokens, logit rows, sequences, KV positions read):"))
        blocks.append(("table", ["run", "shape", "measured ms", "predicted ms", "error"],
                       [[n, str(s), f"{a * 1e3:.3f}", f"{b * 1e3:.3f}", f"{b / a - 1:+.1%}"]
                        for _, n, s, a, b in worst]))
        from validation.load_sensitivity import load_sensitivity_blocks

        blocks += load_sensitivity_blocks(ok, preds, profile_ref)
        notes = folder / "validation-notes.md"
        if notes.exists():  # the team's explanation of the worst points, kept next to the data it explains
            blocks.append(("p", notes.read_text().strip()))
    else:
        blocks.append(("p", "No validation runs in this folder yet. Record them on the GPU with "
                            f"`memwall run SCENARIO... --out {folder.as_posix()}/runs.jsonl` (never used for fitting), "
                            "then rerun this command."))
    if failed:
        blocks.append(("p", "Runs that did not finish: " + ", ".join(
            f"{r['scenario'].get('name')} ({r.get('status')})" for r in failed) + "."))
    if retried:
        blocks.append(("p", "Attempts that failed and were measured again (the successful record is used): " + ", ".join(
            f"{r['scenario'].get('name')} ({r.get('status')})" for r in retried) + "."))
    # telemetry
    blocks.append(("h", "Telemetry (NVML)"))
    trows = []
    for t in data["telemetry"]:
        trows.append([f"microbench {t.get('date', '')[:16]}", str(t.get("samples")),
                      f"{t['sm_clock_mhz']['median']} ({t['sm_clock_mhz']['min']}–{t['sm_clock_mhz']['max']})",
                      f"{t['power_w']['median']:.0f} / {t['power_w']['max']:.0f}",
                      ", ".join(t["throttle_reasons"]) or "none"])
    for p in preds:
        t = p["telemetry"] or {}
        if t.get("status") == "ok":
            trows.append([f"run {p['name']}", str(t.get("samples")), f"{t['sm_clock_mhz']['median']}",
                          f"{t['power_w']['median']:.0f} / {t['power_w']['max']:.0f}",
                          ", ".join(t.get("throttle_reasons", [])) or "none"])
    if trows:
        blocks.append(("table", ["measurement", "samples", "SM MHz median (min–max)", "power W median / max",
                                 "throttle reasons"], trows))
        if any("sw_power_cap" in r[-1] for r in trows):
            blocks.append(("p", "sw_power_cap: the card held its power limit by lowering the SM clock during part of "
                                "the measurement (in the microbenchmarks, the large GEMMs); those timings are what the "
                                "card sustains, and the curves fitted to them include it."))
    else:
        blocks.append(("p", "No telemetry in this folder."))
    # external check
    vidur = Path(folder) / "vidur-check.json"
    blocks.append(("h", "External check: Vidur's per-operator H100 timings"))
    if vidur.exists():
        try:
            v = json.loads(vidur.read_text())
            vrows = [_stats_row(f"{name}: {part}", s[part]["all"]) for name, s in v["profiles"].items()
                     for part in ("gemms", "overall")]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UserError(f"{vidur}: not the summary `memwall report vidur` writes; rerun that command") from None
        blocks.append(("table", ["profile: operators", "median abs err", "p90", "max", "n"], vrows))
        blocks.append(("p", "Per operator and the explanation of the misses: vidur-check.md."))
        png = Path(folder) / "vidur-check.png"
        if png.exists():
            blocks.append(("img", "vidur-check.png", png.read_bytes()))
    else:
        blocks.append(("p", "Not run yet: `memwall report vidur`."))
    # transfer to other chips (validation/transfer_report.py)
    from validation.transfer_report import transfer_blocks

    more, transfer = transfer_blocks()
    blocks += more
    if transfer:
        summary = {**summary, "transfer": transfer}
    return blocks, summary


def to_markdown(blocks: list, folder: Path) -> str:
    """Markdown with the images written beside it."""
    out = []
    for i, b in enumerate(blocks):
        if b[0] == "h":
            out.append(("# " if i == 0 else "## ") + b[1])
        elif b[0] == "p":
            out.append(b[1])
        elif b[0] == "table":
            out.append("| " + " | ".join(b[1]) + " |\n|" + "---|" * len(b[1]) + "\n"
                       + "\n".join("| " + " | ".join(r) + " |" for r in b[2]))
        elif b[0] == "img":
            if b[1] != "vidur-check.png":  # already in the folder
                (folder / b[1]).write_bytes(b[2])
            out.append(f"![{b[1]}]({b[1]})")
    return "\n\n".join(out) + "\n"


def to_html(blocks: list) -> str:
    """One self-contained HTML page: images inlined as base64 data URIs, nothing fetched."""
    import re

    def inline(text: str) -> str:  # `code` and **bold**, the only markup the blocks use
        t = html.escape(text)
        t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
        return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", t)

    body = []
    for i, b in enumerate(blocks):
        if b[0] == "h":
            body.append(f"<h{1 if i == 0 else 2}>{inline(b[1])}</h{1 if i == 0 else 2}>")
        elif b[0] == "p":
            body.append(f"<p>{inline(b[1])}</p>")
        elif b[0] == "table":
            head = "".join(f"<th>{inline(c)}</th>" for c in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in b[2])
            body.append(f"<table><tr>{head}</tr>{rows}</table>")
        elif b[0] == "img":
            data = base64.b64encode(b[2]).decode()
            body.append(f'<img alt="{html.escape(b[1])}" src="data:image/png;base64,{data}">')
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;line-height:1.4}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>memwall validation</title><style>{style}"
            f"</style></head><body>{''.join(body)}</body></html>\n")


def write_report(folder: Path, profile_ref: str) -> list[Path]:
    """Write validation.md (+ PNGs), validation.html and validation-summary.json into `folder`."""
    if not Path(folder).is_dir():
        raise UserError(f"--dir: {folder} is not a folder (expected one like reports/h100 with JSONL records)")
    if not any(Path(folder).glob("*.jsonl")):
        raise UserError(f"--dir: {folder} holds no JSONL records; measure them on the GPU first (`memwall microbench "
                        f"--out {folder}/microbench.jsonl`, `memwall validate PLAN --out {folder}/validation-runs.jsonl`)")
    blocks, summary = build(Path(folder), profile_ref)
    md, page, js = folder / "validation.md", folder / "validation.html", folder / "validation-summary.json"
    md.write_text(to_markdown(blocks, folder))
    page.write_text(to_html(blocks))
    js.write_text(json.dumps(summary, indent=1) + "\n")
    return [md, page, js]


@user_errors
def report_validation_command(
    folder: Path = typer.Option(Path("reports/h100"), "--dir", help="folder of committed JSONL records"),
    profile: Optional[str] = typer.Option(None, help="profile to predict with (default: the calibrated H100 one "
                                                     "when present, else h100-sxm)"),
):
    """Predicted vs measured from committed records: calibration residuals, per-strategy errors, telemetry,
    the Vidur check; Markdown + self-contained HTML + summary JSON."""
    from rich.console import Console

    ref = profile or (str(CALIBRATED_H100) if CALIBRATED_H100.exists() else "h100-sxm")
    paths = write_report(folder, ref)
    Console().print("wrote " + ", ".join(str(p) for p in paths))
