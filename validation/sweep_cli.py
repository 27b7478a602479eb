"""`memwall sweep` and `memwall report sweep`: typer callbacks for the sweep runner and its report.

Registered by validation/cli.py with one line each, e.g.

    app.command("sweep")(sweep_cmd)
    report_app.command("sweep")(report_sweep_cmd)

`--ray` is a flag and `--ray-address` a separate option because click options cannot take an optional value:
`--ray` alone starts a private local Ray; `--ray-address auto` (or `ray://host:10001`) joins a running cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from validation.clikit import user_errors

console = Console()


@user_errors
def sweep_cmd(
    sweep_file: Path = typer.Argument(..., help="sweep YAML: a base scenario and axes (see examples/sweeps/)"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder: results.jsonl, results.parquet, sweep.json"),
    ray: bool = typer.Option(False, "--ray", help="run the points as Ray tasks on a private local Ray"),
    ray_address: Optional[str] = typer.Option(
        None, "--ray-address", help="run on this Ray cluster instead (implies --ray), e.g. auto or ray://HOST:10001"),
    workers: Optional[int] = typer.Option(
        None, "--workers", "-j", min=1, help="local worker processes (default: all cores); with --ray, its CPUs"),
):
    """Simulate every point of a sweep in parallel; rerunning skips the points already done."""
    from validation.sweep import run_sweep

    address = ray_address or ("local" if ray else None)
    o = run_sweep(sweep_file, out, workers=workers, ray_address=address, progress=True)
    reused = f", {o.reused:,} reused from an earlier run" if o.reused else ""
    missing = f", {o.missing:,} not run" if o.missing else ""
    console.print(f"{o.points:,} points ({o.ran:,} simulated{reused}{missing}) in {o.seconds:.1f} s -> {o.table}",
                  highlight=False)
    if o.stale:
        console.print(f"warning: {o.stale:,} reused points were simulated by another version of sim/ or hw_profiles/; "
                      f"delete {out}/results.jsonl to simulate them again", highlight=False)


@user_errors
def report_sweep_cmd(
    out_dir: Path = typer.Argument(..., help="a sweep's output folder (memwall sweep ... --out DIR)"),
):
    """Write report.md with Pareto, per-watt and per-dollar figures and the best configuration per chip."""
    from validation.sweep_report import report_sweep

    console.print(f"wrote {report_sweep(out_dir)}", highlight=False)
