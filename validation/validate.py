"""`memwall validate PLAN`: run a validation grid on the GPU, and `--predict`: price the same grid and compare.

A plan is a sweep file (validation/sweep_spec.py: a base scenario and axes, or several named `grids`), so the grid
reads like any other memwall sweep. Each point becomes a scenario named `<grid>-<index>`; running executes them in
order through `memwall run`'s machinery (validation/run.py: one JSONL line per finished point, flushed at once,
points already in the file skipped, out-of-memory recorded per point). `--predict` needs no GPU: it simulates every
point on the calibrated profile and, for the points measured in `--runs`, prints predicted against measured per
point and per strategy (the same comparison as `memwall report validation`, validation/validation_report.py).

Nothing measured here feeds a fit: `memwall calibrate` reads microbenchmark records only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from sim.errors import UserError
from sim.scenario import Scenario, scenario_from_dict
from validation.calibrate import CALIBRATED_H100, REPO
from validation.clikit import console, err_console, user_errors
from validation.records_file import iter_records
from validation.run import scenario_key
from validation.sweep_spec import expand, load_sweep


def plan_scenarios(plan: Path) -> list[Scenario]:
    """Every point of the plan as a scenario named after its grid and index."""
    spec, where, root = load_sweep(plan)
    points = expand(spec, where, root)
    out = []
    for p in points:
        s = scenario_from_dict({**p.data, "name": f"{p.grid}-{p.index:02d}"}, where=f"{where}: point {p.index}")
        out.append(s)
    return out


# the calibrated profile that predicts a plan run on each chip: the H100's fit, and its curves carried to the H200
CALIBRATED_FOR = {"h100-sxm": CALIBRATED_H100, "h200": REPO / "hw_profiles" / "calibrated" / "h200-from-h100.yaml"}


def default_profile(scenarios: list[Scenario]) -> str:
    """The profile `--predict` prices a plan with when --hardware is not given: the calibrated one of the chip the
    plan names (CALIBRATED_FOR), else that chip's own profile."""
    chips = {json.dumps(s.hardware, sort_keys=True) if isinstance(s.hardware, dict) else s.hardware
             for s in scenarios}
    if len(chips) != 1 or isinstance(scenarios[0].hardware, dict):
        raise UserError(f"--hardware: the plan's points run on {' and '.join(sorted(chips))}; name the profile to "
                        "predict them with (e.g. --hardware hw_profiles/calibrated/h100-sxm-calibrated.yaml)")
    chip = scenarios[0].hardware
    calibrated = CALIBRATED_FOR.get(chip)
    return str(calibrated) if calibrated is not None and calibrated.exists() else chip


def read_runs(path: Path | None) -> dict[str, dict]:
    """Measured records (status ok) of a `memwall run` / `memwall validate` JSONL, by scenario key."""
    if path is None:
        return {}
    if not path.exists():
        raise UserError(f"--runs: {path} does not exist")
    out = {}
    for _, rec in iter_records(path, "'memwall run' / 'memwall validate' records"):
        if rec.get("status") == "ok" and "scenario" in rec:
            # keyed by the scenario read back with today's defaults, so that records written before a defaulted
            # field existed still match the plan's points
            device = (rec.get("device") or {}).get("device", "cuda")
            out[scenario_key(scenario_from_dict(rec["scenario"], where=str(path)), device)] = rec
    return out


def predict_plan(scenarios: list[Scenario], runs: dict[str, dict], profile: str) -> list[dict]:
    """Per point: the prediction on `profile` and, where measured on the GPU, the comparison (predict_run)."""
    from sim.engine import simulate
    from validation.validation_report import RUN_METRICS, predict_run

    rows = []
    for s in scenarios:
        rec = runs.get(scenario_key(s, "cuda")) or runs.get(scenario_key(s, "cpu"))
        if rec is not None:
            rows.append(predict_run(rec, profile))
            continue
        data = {**s.model_dump(mode="json"), "hardware": profile}
        res = simulate(scenario_from_dict(data))[0].model_dump(mode="json")
        fits = res["fits"]  # a point that does not fit has no numbers to show, not zeros
        rows.append({"name": s.name, "strategy": s.strategy.kind, "batching": s.batching.kind, "measured_s": [],
                     "predicted_s": [], "fits": fits, "message": res["message"],
                     "metrics": {k: {"measured": None, "predicted": get(res) if fits else None, "rel_error": None}
                                 for k, get in RUN_METRICS.items()}})
    return rows


def comparison_table(rows: list[dict], title: str):
    import numpy as np
    from rich.table import Table

    t = Table(title=title)
    for c in ("point", "strategy", "tok/s measured", "tok/s predicted", "error", "TTFT p50 err", "ITL p50 err",
              "per-pass median |err|", "passes"):
        t.add_column(c, justify="left" if c in ("point", "strategy") else "right")

    def err(m: dict | None) -> str:
        return "–" if not m or m.get("rel_error") is None else f"{m['rel_error']:+.1%}"

    for r in rows:
        tp = r["metrics"].get("output_throughput_tok_s", {})
        rel = [b / a - 1 for a, b in zip(r["measured_s"], r["predicted_s"])]
        meas = "–" if tp.get("measured") is None else f"{tp['measured']:,.1f}"
        pred = "does not fit" if r.get("fits") is False else (
            "–" if tp.get("predicted") is None else f"{tp['predicted']:,.1f}")
        t.add_row(r["name"], f"{r['strategy']} ({r['batching']})", meas, pred,
                  err(tp), err(r["metrics"].get("ttft_p50_s")), err(r["metrics"].get("itl_p50_s")),
                  f"{np.median(np.abs(rel)):.1%}" if rel else "–", str(len(rel)))
    return t


def summary_table(summary: dict):
    from rich.table import Table

    t = Table(title="|predicted - measured| / measured, per strategy")
    for c in ("strategy", "metric", "median", "p90", "max", "n"):
        t.add_column(c, justify="left" if c in ("strategy", "metric") else "right")
    for strategy, metrics in summary.items():
        for name, st in metrics.items():
            if st["n"]:
                t.add_row(strategy, name, f"{st['median']:.1%}", f"{st['p90']:.1%}", f"{st['max']:.1%}",
                          str(st["n"]))
    return t


@user_errors
def validate_command(
    plan: Path = typer.Argument(..., help="validation plan: a sweep file of scenarios (examples/validation/)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="JSONL the measured points are appended to "
                                                                 "(resumable); default <plan name>-runs.jsonl"),
    device: str = typer.Option("cuda", help="cuda, or cpu for small models (tests)"),
    predict: bool = typer.Option(False, "--predict", help="price the grid instead of running it (no GPU)"),
    hardware: Optional[str] = typer.Option(None, help="profile to predict with (default: the calibrated profile of "
                                                      "the plan's chip: the H100's fit, or its curves carried to "
                                                      "the H200; else the chip's own profile)"),
    runs: Optional[Path] = typer.Option(None, help="measured points to compare with (--predict; default --out)"),
    as_json: bool = typer.Option(False, "--json", help="print the per-point comparison and summary as JSON"),
    host_probes: Optional[Path] = typer.Option(
        None, "--host-probes", help="after each point measured (every N-th with --probe-every), run one case of "
                                    "`memwall microbench --only host` (in turn) in this process and append its "
                                    "record to this JSONL: host records beside the grid, never a grid point"),
    probe_every: Optional[int] = typer.Option(
        None, "--probe-every", help="with --host-probes: probe after every N-th point of the plan (a whole number "
                                    ">= 1; default 1). 2 on the 44-point H100 grid runs each of the 22 host cases "
                                    "once, in ~150 s of the GPU's time instead of ~300"),
):
    """Run a validation grid on the GPU, or with --predict price it and compare with what was measured."""
    from validation.validation_report import summarize

    scenarios = plan_scenarios(plan)
    spec, _, _ = load_sweep(plan)
    out = out or Path(f"{spec.name}-runs.jsonl")
    profile = hardware or default_profile(scenarios)
    if probe_every is not None and (host_probes is None or predict):
        raise UserError("--probe-every: only with --host-probes (and without --predict), which names the JSONL the "
                        "probes append to")
    if predict and host_probes is not None:
        raise UserError("--host-probes: only when running the grid on a GPU, not with --predict (which measures "
                        "nothing)")
    if probe_every is not None and probe_every < 1:
        raise UserError(f"--probe-every: expected a whole number >= 1, got {probe_every}")
    if not predict:
        if device not in ("cuda", "cpu"):
            raise UserError(f"--device: expected cuda or cpu, got {device!r}")
        try:
            import torch  # noqa: F401
        except ImportError:
            raise UserError("'memwall validate' without --predict needs PyTorch: pip install -e '.[runtime]'") from None
        from validation.run import run_all

        probes = None
        if host_probes is not None:
            if host_probes.is_dir():
                raise UserError(f"--host-probes: {host_probes} is a folder; expected a JSONL file to append to")
            from validation.microbench_host import HostProbes

            probes = HostProbes(device, host_probes, tiny=device != "cuda", every=probe_every or 1)
        records = run_all(scenarios, device, out, console=err_console, after_point=probes)
        failed = [r for r in records if r["status"] != "ok"]
        err_console.print(f"{len(records) - len(failed)} of {len(scenarios)} points measured this time -> {out}"
                          + (f"; not finished: {', '.join(r['scenario']['name'] for r in failed)}" if failed else ""),
                          highlight=False)
        if device != "cuda":
            return
        runs = out
    source = runs or (out if out.exists() else None)
    measured = read_runs(source)
    rows = predict_plan(scenarios, measured, profile)
    compared = [r for r in rows if r["measured_s"] or r["metrics"]["output_throughput_tok_s"]["measured"]]
    if not compared:  # say why there is nothing to compare, rather than a table of dashes alone
        err_console.print(f"no measured point of this plan to compare with: {out} does not exist (give --runs F)"
                          if source is None else f"no measured point of this plan in {source} (`memwall validate "
                          "PLAN --out F` writes them; microbenchmark records are not runs)", highlight=False)
    summary = summarize(compared) if compared else {}
    if as_json:
        sys.stdout.write(json.dumps({"profile": profile, "points": [
            {k: v for k, v in r.items() if k not in ("measured_s", "predicted_s", "shapes", "host_measured_s",
                                                     "host_predicted_s")} for r in rows],
            "summary": summary}) + "\n")
        return
    console.print(comparison_table(rows, f"{spec.name}: predicted on {Path(profile).stem} vs measured "
                                         f"({len(compared)} of {len(rows)} points measured)"))
    if summary:
        console.print(summary_table(summary))
        from validation.targets import check_targets, missed_targets

        missed = missed_targets(check_targets(summary))
        console.print("issue [validation]'s accuracy targets (validation/targets.py): "
                      + ("every target met" if not missed else f"missed: {', '.join(missed)}"), highlight=False,
                      markup=False)
