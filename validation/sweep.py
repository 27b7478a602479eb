"""Design-space sweeps (issue [sweep]): a base scenario, axes of values, and every point of their cross product
simulated in parallel, over the local cores or as Ray tasks, into one table.

    sweep.yaml --expand--> points (index, axis values, scenario mapping, key) --simulate--> results.jsonl
                                                                                       --> results.parquet (or .csv)

A point is the base scenario plus `PATH=VALUE` overrides, applied by `sim.scenario.apply_overrides` (the same paths
as `memwall simulate --set`), so a sweep axis means exactly what a `--set` means. Its key hashes the point's whole
scenario mapping (base, overrides and SLO), not its position: a rerun, or a sweep with more axis values, reuses
every point already in `results.jsonl`, while a changed base scenario runs again instead of reusing stale numbers.
Workers receive fully resolved scenarios (hardware profile and model spec inlined), so a Ray worker needs the code
but not `hw_profiles/`, and local and Ray runs compute the same function of the same input: identical results.
The file schema and point expansion live in `sweep_spec.py`, the report in `sweep_report.py`, the commands in
`sweep_cli.py`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from sim.errors import UserError
from sim.scenario import scenario_from_dict
from validation.records_file import iter_records, prepare_append
from validation.sweep_spec import SweepFile, expand, load_sweep

RESULTS_JSONL = "results.jsonl"
META_JSON = "sweep.json"
CHUNK_MAX = 4


@dataclass(frozen=True)
class SweepOutcome:
    """What a `run_sweep` call did: where the table is, and how many points it ran, reused or left missing."""

    table: Path
    points: int
    ran: int
    reused: int
    missing: int
    seconds: float
    stale: int = 0  # reused points simulated by another version of the code (see `_code_version`)


# -- one point, in a worker ---------------------------------------------------------------------------------------


def flatten_result(result) -> dict[str, Any]:
    """A Result as one flat row: scalars as they are, Stats and `extra` as `ttft_s.p50`, `extra.alpha`, ..."""
    row: dict[str, Any] = {}
    for name, value in result.model_dump(mode="json").items():
        if isinstance(value, dict):
            for sub, v in value.items():
                if v is None or isinstance(v, (bool, int, float, str)):
                    row[f"{name}.{sub}"] = v
        else:
            row[name] = value
    return row


def simulate_chunk(jobs: list[tuple[str, dict]]) -> list[tuple[str, dict | None, str | None]]:
    """Simulate resolved scenarios: (key, flat result, None) per job, or (key, None, message) for a user error.
    Runs in a worker process or a Ray task; imports are here so that the driver's import stays light."""
    from sim.engine import simulate

    out = []
    for key, mapping in jobs:
        try:
            result, _ = simulate(scenario_from_dict(mapping))
            out.append((key, flatten_result(result), None))
        except UserError as e:  # carried back as text: a Ray task error would wrap it in a traceback
            out.append((key, None, str(e)))
    return out


# -- resolving points in the driver -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolved:
    """A point validated and ready to ship: the inlined scenario mapping and the chip columns of its row."""

    mapping: dict
    chip: dict[str, Any]


def resolve_points(points, where: str) -> list[Resolved]:
    """Validate every point before anything runs (a typo fails in a second, not after an hour) and inline the
    hardware profile and model spec. Profiles and models are cached by reference: sweeps repeat them."""
    hw_cache: dict[str, Any] = {}
    model_cache: dict[str, Any] = {}
    out = []
    for p in points:
        label = f"{where}: point {p.index} ({', '.join(p.overrides) or 'base scenario'})"
        try:
            s = scenario_from_dict(p.data, where=label)
            hk, mk = json.dumps(p.data.get("hardware"), sort_keys=True), json.dumps(p.data.get("model"), sort_keys=True)
            if hk not in hw_cache:
                hw = s.resolve_hardware()
                hw_cache[hk] = (hw, hw.model_dump(mode="json"))
            if mk not in model_cache:
                model_cache[mk] = s.resolve_model().model_dump(mode="json")
        except UserError as e:
            msg = str(e)
            raise UserError(msg if msg.startswith(label) else f"{label}: {msg}") from None
        hw, hw_dump = hw_cache[hk]
        mapping = s.model_dump(mode="json")
        mapping.update(hardware=hw_dump, model=model_cache[mk])
        gpus = s.parallel.tp * s.parallel.pp * s.parallel.replicas
        chip = {"chip": hw.name, "chip_base": hw.name.split("[")[0], "gpus": gpus,
                "hbm_bandwidth_tb_s": hw.hbm_bandwidth_tb_s, "hbm_capacity_gb": hw.hbm_capacity_gb,
                "scale.bandwidth": hw.scale.bandwidth, "tdp_w": hw.tdp_w,
                "price_per_gpu_hour_usd": hw.price_per_gpu_hour_usd}
        out.append(Resolved(mapping, chip))
    return out


def derived_metrics(chip: dict, metrics: dict, slo: dict) -> dict[str, Any]:
    """Efficiency per GPU, watt (TDP) and dollar-hour, and whether the point meets the sweep's SLO.
    None where it does not apply (nothing ran, no price, no SLO)."""
    tok_s = metrics.get("output_throughput_tok_s") or 0.0
    ok = bool(metrics.get("fits")) and tok_s > 0
    gpus, price = chip["gpus"], chip["price_per_gpu_hour_usd"]
    tpot = metrics.get("tpot_s.mean")
    out = {
        "tok_s_per_gpu": tok_s / gpus if ok else None,
        "tok_s_per_w": tok_s / (gpus * chip["tdp_w"]) if ok else None,
        "tok_s_per_usd_h": tok_s / (gpus * price) if ok and price else None,
        "usd_per_mtok": gpus * price / 3600 / tok_s * 1e6 if ok and price else None,
        # tokens per second one sequence sees while decoding (1 / TPOT): the batch-1 "decode speed"
        "seq_decode_tok_s": 1.0 / tpot if ok and tpot else None,
        "meets_slo": None,
    }
    pct = slo.get("percentile", "p50")
    limits = {m: slo.get(m) for m in ("ttft_s", "tpot_s") if slo.get(m)}
    if limits:
        values = {m: metrics.get(f"{m}.{pct}") for m in limits}
        out["meets_slo"] = ok and all(values[m] is not None and values[m] <= lim for m, lim in limits.items())
    return out


def compose_row(point, resolved: Resolved, metrics: dict, slo: dict) -> dict[str, Any]:
    """One table row: point index, grid, axis values (columns named by their paths), chip, derived, metrics.
    A Result field whose name is also an axis path (`model`, `hardware`) is kept as `result.<name>`."""
    row: dict[str, Any] = {"point": point.index, "grid": point.grid, "key": point.key}
    for path, value in point.values.items():
        row[path] = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value
    row.update(resolved.chip)
    row.update(derived_metrics(resolved.chip, metrics, slo))
    for name, value in metrics.items():
        row[f"result.{name}" if name in row else name] = value
    return row


# -- executors: each yields lists of (key, metrics, error) as chunks finish ---------------------------------------


def _ignore_sigint() -> None:
    # Ctrl-C reaches the whole process group; the driver alone handles it, so workers do not print tracebacks
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_local(chunks: list, workers: int) -> Iterator[list]:
    """Results of the chunks on `workers` processes, as they finish. Call it before any thread starts (the
    progress bar's): with fork, every worker is forked by the first submit, here, from a single-threaded parent."""
    if workers == 1:  # in-process: no pickling, easy to debug and profile
        return (simulate_chunk(c) for c in chunks)
    import multiprocessing as mp

    # fork starts a worker in milliseconds with the simulator already imported, and, unlike spawn and forkserver,
    # does not re-run the caller's __main__ (a script without an `if __name__ == "__main__"` guard still works)
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_ignore_sigint)
    futures = [pool.submit(simulate_chunk, c) for c in chunks]

    def finished() -> Iterator[list]:
        try:
            for f in as_completed(futures):
                yield f.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    return finished()


def _run_ray(chunks: list, address: str, workers: int | None) -> Iterator[list]:
    """Results of the chunks as Ray tasks, as they finish. Connects (or starts a local Ray for "local") and submits
    here, before the progress bar, so that a slow or failed connection is not shown as a stalled sweep."""
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs Ray installed: pip install 'ray>=2.9' (or memwall[sweep])") from None
    started = not ray.is_initialized()  # a caller (a test, a notebook) may have started Ray already
    if started:
        opts: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        if address == "local":
            ray.init(address="local", num_cpus=workers, **opts)
        else:  # a remote cluster gets this checkout's simulator code shipped with the tasks
            import sim
            import validation

            print(f"connecting to the Ray cluster at {address} ...", file=sys.stderr, flush=True)
            mods = [str(Path(m.__file__).parent) for m in (sim, validation)]
            try:
                ray.init(address=address, runtime_env={"py_modules": mods}, **opts)
            except (ConnectionError, TimeoutError, RuntimeError, ValueError) as e:  # ValueError: ray:// without ray[client]
                raise UserError(f"--ray-address {address}: cannot connect to a Ray cluster ({e})") from None
    task = ray.remote(simulate_chunk)
    pending = [task.remote(c) for c in chunks]

    def finished() -> Iterator[list]:
        nonlocal pending
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                yield ray.get(ready[0])
        finally:
            for ref in pending:
                ray.cancel(ref)
            if started:
                ray.shutdown()

    return finished()


# -- the JSONL store ----------------------------------------------------------------------------------------------


def load_done(path: Path) -> dict[str, dict]:
    """Finished points' records by key. A kill mid-write can leave a partial last line: it is cut off here, so
    that the next append starts on a fresh line and the point simply runs again."""
    if not path.exists():
        return {}
    prepare_append(path, "sweep results")
    done = {}
    for n, rec in iter_records(path, "sweep records", resumes=True):
        if "key" not in rec or "result" not in rec or not isinstance(rec["result"], dict):
            raise UserError(f"{path}:{n}: not a sweep record; delete that line (its point will run again)")
        done[rec["key"]] = rec
    return done


def _progress(enabled: bool, unit: str = "points"):
    """A rich progress bar on stderr: `unit` done of total, per second, elapsed time and ETA."""
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:,.1f} {unit}/s" if task.speed else f"- {unit}/s")

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True), disable=not enabled,
                    transient=False)


# -- the table ----------------------------------------------------------------------------------------------------


def _columns(rows: list[dict]) -> dict[str, list]:
    names: dict[str, None] = {}
    for r in rows:
        names.update(dict.fromkeys(r))
    return {n: [r.get(n) for r in rows] for n in names}


def write_table(out_dir: Path, rows: list[dict]) -> Path:
    """results.parquet (pyarrow), or results.csv when pyarrow is missing; rows in point order. A column that
    mixes strings and numbers (an axis of mixed values) is written as strings."""
    cols = _columns(rows)
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        import csv

        path = out_dir / "results.csv"
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(cols)
            w.writerows(zip(*cols.values()))
        return path
    arrays = {}
    for name, values in cols.items():
        try:
            arrays[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays[name] = pa.array([None if v is None else str(v) for v in values])
    path = out_dir / "results.parquet"
    pq.write_table(pa.table(arrays), path)
    return path


# -- the driver ---------------------------------------------------------------------------------------------------


def _chunks(jobs: list, workers: int) -> list[list]:
    # about 4 chunks per worker keeps every core busy to the end; at most CHUNK_MAX points per chunk, so that
    # progress and the JSONL advance often and Ctrl-C waits for at most that many points per worker
    size = max(1, min(CHUNK_MAX, math.ceil(len(jobs) / (4 * workers)))) if jobs else 1
    return [jobs[i:i + size] for i in range(0, len(jobs), size)]


def _code_version() -> str | None:
    """The git commit of the simulator and profiles that made the numbers, with `+dirty.<hash>` for uncommitted
    changes to them; None outside a git checkout."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=5).stdout.strip()

        head = git("rev-parse", "--short", "HEAD")
        diff = git("diff", "HEAD", "--", "sim", "hw_profiles")
    except (OSError, subprocess.SubprocessError):
        return None
    # uncommitted edits are named by a hash of the diff, so that two different edits are two versions
    return (head + (f"+dirty.{hashlib.sha256(diff.encode()).hexdigest()[:8]}" if diff else "")) or None


def run_sweep(sweep: str | Path | dict | SweepFile, out_dir: str | Path, workers: int | None = None,
              ray_address: str | None = None, progress: bool = True, max_points: int | None = None) -> SweepOutcome:
    """Simulate every point of a sweep into `out_dir`: results.jsonl (one record per finished point, appended and
    flushed as it completes), results.parquet (or .csv) rewritten at the end in point order, and sweep.json
    (what the report needs). Points already in results.jsonl are skipped. Runs on `workers` local processes
    (default: all cores) or, with `ray_address` ("local" starts a private Ray), as Ray tasks. `max_points` runs
    at most that many new points (to split a long sweep, or to test resuming)."""
    t0 = time.perf_counter()
    spec, where, root = load_sweep(sweep)
    points = expand(spec, where, root)
    resolved = resolve_points(points, where)
    slo = spec.slo.model_dump()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jsonl = out_dir / RESULTS_JSONL
    done = load_done(jsonl)
    first: dict[str, int] = {}  # identical scenarios (e.g. scale 1.0 and the plain chip) run once
    for p in points:
        first.setdefault(p.key, p.index)
    todo = [k for k in first if k not in done][: max_points]
    reused = sum(1 for p in points if p.key in done)
    version = _code_version()
    # a key names a scenario, not the simulator: results reused from other code are counted, so the user can tell
    stale = sum(1 for p in points if p.key in done and done[p.key].get("memwall") != version)
    meta = {"name": spec.name, "source": where, "points": len(points), "slo": slo, "memwall": version,
            "report": spec.report.model_dump(), "grids": [
                {"name": g, "axes": list(dict.fromkeys(path for p in points if p.grid == g for path in p.values))}
                for g in dict.fromkeys(p.grid for p in points)]}
    (out_dir / META_JSON).write_text(json.dumps(meta, indent=1) + "\n")
    workers = workers or os.cpu_count() or 1
    jobs = [(k, resolved[first[k]].mapping) for k in todo]
    chunks = _chunks(jobs, workers)
    runs = _run_ray(chunks, ray_address, workers) if ray_address else _run_local(chunks, min(workers, len(chunks) or 1))
    ran = 0
    with closing(runs), open(jsonl, "a") as f, _progress(progress) as bar:
        task = bar.add_task(f"sweep {spec.name}", total=len(jobs))
        try:
            for results in runs:
                for key, metrics, error in results:
                    p = points[first[key]]
                    if error is not None:
                        raise UserError(f"{where}: point {p.index} ({', '.join(p.overrides)}): {error}")
                    rec = {"key": key, "point": p.index, "grid": p.grid, "overrides": p.overrides, "memwall": version,
                           "result": metrics}
                    f.write(json.dumps(rec, separators=(",", ":")) + "\n")  # one write per record, then flush:
                    f.flush()  # a kill leaves at most one partial line, which load_done cuts off
                    done[key] = rec
                    ran += 1
                bar.advance(task, len(results))
        except KeyboardInterrupt:
            bar.console.print(f"interrupted: {ran} new points saved in {jsonl}; rerun the same command to resume")
            raise
    rows = [compose_row(p, resolved[p.index], done[p.key]["result"], slo) for p in points if p.key in done]
    for old_table in ("results.parquet", "results.csv"):
        (out_dir / old_table).unlink(missing_ok=True)
    table = write_table(out_dir, rows)
    return SweepOutcome(table, len(points), ran, reused, len(points) - len(rows), time.perf_counter() - t0, stale)
