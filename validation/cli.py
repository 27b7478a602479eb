"""The `memwall` command: one entry point for simulating, comparing, running, calibrating and reporting.

Errors a user can cause end with one line on stderr and exit code 2 (`sim.errors.UserError`); anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from sim.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False,
                  help="memwall: the LLM memory wall in numbers — predict and measure tokens/s per decoding "
                       "strategy, and what bounds it.")
profiles_app = typer.Typer(add_completion=False, invoke_without_command=True,
                           help="List hardware profiles, or show one.")
app.add_typer(profiles_app, name="profiles")
console = Console()
err_console = Console(stderr=True)


def user_errors(fn):
    """Turn a UserError into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            err_console.print(f"[bold red]error:[/] {e}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


SetOpt = typer.Option(None, "--set", "-s", help="override a field: PATH=VALUE, e.g. batching.batch_size=32")


@app.command()
@user_errors
def simulate(
    scenario: Optional[Path] = typer.Argument(None, help="scenario YAML/JSON (default: llama-3.1-8b on h100-sxm)"),
    set_: Optional[list[str]] = SetOpt,
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of tables"),
    timeseries: Optional[Path] = typer.Option(None, help="write the per-pass log (batch, KV, queue) as CSV"),
):
    """Predict throughput, latency and the binding roof of one scenario."""
    from sim.engine import simulate as run_sim
    from sim.scenario import load_scenario
    from validation.format import result_tables

    s = load_scenario(scenario, set_ or [])
    result, recorder = run_sim(s)
    if timeseries:
        recorder.write_timeseries(str(timeseries))
    if as_json:
        sys.stdout.write(json.dumps(result.model_dump(mode="json")) + "\n")
    else:
        for t in result_tables(result):
            console.print(t)


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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
