"""The `memwall` command: one entry point for simulating, comparing, running, calibrating and reporting.

Errors a user can cause end with one line on stderr and exit code 2 (`sim.errors.UserError`); anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from sim.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False,
                  help="memwall: the LLM memory wall in numbers — predict and measure tokens/s per decoding "
                       "strategy, and what bounds it.")
profiles_app = typer.Typer(add_completion=False, invoke_without_command=True,
                           help="List hardware profiles, or show one.")
app.add_typer(profiles_app, name="profiles")
report_app = typer.Typer(add_completion=False, help="Write reports (Markdown + PNG) under reports/.")
app.add_typer(report_app, name="report")
from validation.clikit import check_writable, console, err_console, user_errors  # noqa: E402,F401 - re-exported


SetOpt = typer.Option(None, "--set", "-s", help="override a field: PATH=VALUE, e.g. batching.batch_size=32")


@app.command()
@user_errors
def simulate(
    scenario: Optional[Path] = typer.Argument(None, help="scenario YAML/JSON (default: llama-3.1-8b on h100-sxm)"),
    set_: Optional[list[str]] = SetOpt,
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of tables"),
    timeseries: Optional[Path] = typer.Option(None, help="write the per-pass log (batch, KV, queue) as CSV"),
    sensitivity: bool = typer.Option(False, help="also price the scenario with the chip's compute and memory up to "
                                                 "10% slower and faster (host unchanged): how far an error in "
                                                 "them carries into each metric (its elasticity) and how unevenly "
                                                 "it follows (its jitter: the farthest of those simulations from a "
                                                 "straight line, e.g. a p50 over a few requests near capacity)"),
):
    """Predict throughput, latency and the binding roof of one scenario."""
    from sim.engine import simulate as run_sim
    from sim.scenario import load_scenario
    from validation.format import result_tables, sensitivity_table

    s = load_scenario(scenario, set_ or [])
    if timeseries:
        check_writable(timeseries, "--timeseries")
    from validation.sweep import _progress

    total = getattr(s.workload, "num_requests", None) or getattr(s.workload, "max_requests", None)
    # a bar on a terminal: a trace of an hour or 10^5 requests at batch 1 take a minute
    with _progress(sys.stderr.isatty(), unit="requests") as bar:
        task = bar.add_task("simulating", total=total)
        result, recorder = run_sim(s, on_finished=lambda n: bar.advance(task, n))
    if timeseries:
        recorder.write_timeseries(str(timeseries))
    fits = None
    if sensitivity and result.fits:
        from validation.load_sensitivity import SPAN, STEPS, device_elasticity

        # a trace of an hour takes seconds per simulation; the nominal one is the result above
        with _progress(sys.stderr.isatty(), unit="simulations") as bar:
            task = bar.add_task("sensitivity", total=STEPS - 1)
            _, fits, _ = device_elasticity(s.model_dump(mode="json"), on_step=lambda: bar.advance(task),
                                           nominal=result)
    if as_json:
        out = result.model_dump(mode="json")
        if sensitivity:  # null: not computed, the scenario does not fit
            out["sensitivity"] = None if fits is None else {
                k: None if v is None else {"elasticity": v[0], "jitter": v[1]} for k, v in fits.items()}
        sys.stdout.write(json.dumps(out) + "\n")
    else:
        for t in result_tables(result):
            console.print(t)
        if fits is not None:
            console.print(sensitivity_table(fits, SPAN, STEPS))
        elif sensitivity:
            console.print("sensitivity: not computed, the scenario does not fit")


@profiles_app.callback()
@user_errors
def profiles(ctx: typer.Context):
    """List every chip with its key numbers and ridge point."""
    if ctx.invoked_subcommand:
        return
    from sim.hardware import describe, load_profile, profile_names
    from validation.format import profiles_table

    console.print(profiles_table([describe(load_profile(n)) for n in profile_names()]))


@profiles_app.command("show")
@user_errors
def profiles_show(name: str = typer.Argument(..., help="profile name or YAML path")):
    """Print one profile in full (YAML)."""
    import yaml

    from sim.hardware import load_profile

    p = load_profile(name)
    data = p.model_dump(mode="json", exclude_none=True)
    data["derived"] = {"ridge_flop_per_byte_bf16": round(p.ridge_point_flop_per_byte("bf16"), 1)}
    console.print(yaml.safe_dump(data, sort_keys=False), markup=False, highlight=False)


@app.command()
@user_errors
def models():
    """List the model catalog with parameter counts and KV bytes per token."""
    from rich.table import Table

    from sim.model import load_model, model_names

    t = Table(title="model catalog", title_justify="left")
    for c in ("name", "params", "bf16 weights GB", "KV B/token (bf16)", "layers", "d", "heads/kv", "experts"):
        t.add_column(c, justify="left" if c == "name" else "right")
    for n in model_names():
        m = load_model(n)
        t.add_row(n, f"{m.param_count / 1e9:.2f}B", f"{m.weight_bytes() / 1e9:.1f}", f"{m.kv_bytes_per_token():,.0f}",
                  str(m.num_layers), str(m.hidden_size), f"{m.num_heads}/{m.num_kv_heads}",
                  f"{m.num_experts}x top-{m.experts_per_token}" if m.is_moe else "-")
    console.print(t)


@app.command()
@user_errors
def compare(
    scenario: Optional[Path] = typer.Argument(None, help="scenario YAML/JSON (default: llama-3.1-8b on h100-sxm)"),
    strategies: str = typer.Option("all", help="comma-separated strategies, or 'all'"),
    set_: Optional[list[str]] = SetOpt,
    as_json: bool = typer.Option(False, "--json", help="print JSON: one object per strategy"),
):
    """Compare decoding strategies on one scenario: tokens/s, latency, tokens per iteration, intensity, bound."""
    from sim.scenario import load_scenario
    from validation.compare import compare as run_compare
    from validation.compare import parse_strategies
    from validation.format import compare_table

    s = load_scenario(scenario, set_ or [])
    rows = run_compare(s, parse_strategies(strategies))
    if as_json:
        out = [{"strategy": k, **r.model_dump(mode="json")} for k, r in rows]
        sys.stdout.write(json.dumps(out) + "\n")
        return
    hw = rows[0][1].hardware
    console.print(compare_table(rows, f"{s.resolve_model().name} on {hw}, {s.batching.kind} batching"))


@app.command()
@user_errors
def whatif(
    scenario: Optional[Path] = typer.Argument(None, help="scenario YAML/JSON (default: llama-3.1-8b on h100-sxm)"),
    scale: Optional[list[str]] = typer.Option(None, help="a chip variant: bandwidth=2, flops=2, capacity=2, "
                                                          "link=2 (comma-combined); repeat for more variants"),
    hardware: Optional[list[str]] = typer.Option(None, help="compare against another profile; repeatable"),
    strategies: str = typer.Option("all", help="comma-separated strategies, or 'all'"),
    set_: Optional[list[str]] = SetOpt,
    as_json: bool = typer.Option(False, "--json", help="print JSON rows: chip, strategy, result, gain"),
):
    """Rerun the strategy comparison on what-if chips and show each strategy's gain over the base chip."""
    from sim.scenario import load_scenario
    from validation.compare import parse_strategies, variants
    from validation.compare import whatif as run_whatif
    from validation.format import whatif_table

    s = load_scenario(scenario, set_ or [])
    names = [h for item in (hardware or []) for h in item.split(",") if h]
    chips = variants(s, scale or [], names)
    if len(chips) == 1:
        chips = variants(s, ["bandwidth=2", "flops=2", "capacity=2"], [])
    rows = run_whatif(s, chips, parse_strategies(strategies))
    if as_json:
        out = [{"chip": r["chip"], "strategy": r["strategy"], "gain": r["gain"],
                "result": r["result"].model_dump(mode="json")} for r in rows]
        sys.stdout.write(json.dumps(out) + "\n")
        return
    console.print(whatif_table(rows, f"what-if: {s.resolve_model().name}, {s.batching.kind} batching (gain over "
                                     "the first chip; mem = memory-bound, com = compute-bound, hos = host-bound)"))


@app.command()
@user_errors
def run(
    scenarios: Optional[list[Path]] = typer.Argument(None, help="scenario files (default: the default scenario)"),
    set_: Optional[list[str]] = SetOpt,
    device: str = typer.Option("cuda", help="cuda, or cpu for small models (tests, demos)"),
    out: Optional[Path] = typer.Option(None, help="append each finished record to this JSONL (resumable)"),
    weights: Optional[str] = typer.Option(None, help="a Hugging Face checkpoint folder or a .gguf file"),
    as_json: bool = typer.Option(False, "--json", help="print the measured result(s) as JSON"),
):
    """Execute scenarios on the GPU through the simulator's scheduler; results in the simulator's schema."""
    from sim.result import Result
    from sim.scenario import load_scenario
    from validation.format import result_tables
    from validation.run import run_all

    if device not in ("cuda", "cpu"):
        raise UserError(f"--device: expected cuda or cpu, got {device!r}")
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UserError("'memwall run' needs PyTorch: pip install -e '.[runtime]'") from None
    if weights and not Path(weights).exists():
        raise UserError(f"--weights: {weights} does not exist; give a checkpoint folder or a .gguf file")
    loaded = [load_scenario(p, set_ or []) for p in (scenarios or [None])]
    records = run_all(loaded, device, out, weights, console=err_console)
    if len(records) < len(loaded):
        err_console.print(f"{len(loaded) - len(records)} of {len(loaded)} scenarios already recorded in {out}: "
                          "skipped (their lines in that file hold the results)", highlight=False)
    for rec in records:
        if rec["status"] != "ok":
            err_console.print(f"{rec['scenario']['name']}: {rec['status']}: {rec.get('error', '')}")
            continue
        result = Result(**rec["result"])
        if as_json:
            sys.stdout.write(json.dumps(rec["result"]) + "\n")
        else:
            for t in result_tables(result):
                console.print(t)
    if any(r["status"] != "ok" for r in records):
        raise typer.Exit(1)


@report_app.command("whatif")
@user_errors
def report_whatif(
    scenario: Optional[Path] = typer.Argument(None, help="scenario (default: llama-3.1-8b on h100-sxm)"),
    out: Path = typer.Option(Path("reports/whatif"), help="output folder"),
    strategies: str = typer.Option("all", help="comma-separated strategies, or 'all'"),
    set_: Optional[list[str]] = SetOpt,
):
    """Every strategy on the base chip and on 2x bandwidth / 2x compute / 2x capacity variants, at batch 1 and
    under load (or for the given scenario), as Markdown + PNG."""
    from sim.scenario import load_scenario
    from validation.whatif_report import write_report

    if scenario or set_:
        runs = [("given scenario", load_scenario(scenario, set_ or []))]
    else:
        runs = [
            ("batch 1", load_scenario(None, ["batching.batch_size=1", "workload.num_requests=2"])),
            ("batch 64", load_scenario(None, ["batching.batch_size=64", "workload.num_requests=64"])),
            ("continuous, 8k prompts at 50 qps", load_scenario(None, [
                "batching.kind=continuous", "batching.max_batch=512", "batching.chunked_prefill=true",
                "workload.kind=poisson", "workload.rate_qps=50", "workload.num_requests=300",
                "workload.input_len=8192", "workload.output_len=512"])),
        ]
    path = write_report(runs, out, strategies)
    console.print(f"wrote {path}")


from validation.sweep_cli import report_sweep_cmd, sweep_cmd  # noqa: E402

from validation.calibrate import calibrate_command  # noqa: E402
from validation.microbench import microbench_command  # noqa: E402
from validation.validate import validate_command  # noqa: E402
from validation.validation_report import report_validation_command  # noqa: E402
from validation.vidur_check import report_vidur_command  # noqa: E402

app.command("sweep")(sweep_cmd)
report_app.command("sweep")(report_sweep_cmd)
app.command("microbench")(microbench_command)
app.command("calibrate")(calibrate_command)
app.command("validate")(validate_command)
report_app.command("vidur")(report_vidur_command)
report_app.command("validation")(report_validation_command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
