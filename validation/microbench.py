"""GPU microbenchmarks that feed the calibration (DESIGN §7.1): projection GEMMs/GEMVs, fp8 GEMMs, attention,
streaming reads and copies, and the per-kernel launch cost, each one JSON line.

What is timed is what the cost model prices: one operator. Every operator except the eager launch test runs
back to back inside a CUDA graph (replays timed with CUDA events, median of the replays, divided by the calls
per replay), because the runtime executes its passes under CUDA graphs and the profile's `kernel_overhead_us` is
defined that way (DESIGN §3: single eager launches add host latency that a graph hides). When one call's inputs and
output fit in a few L2s, the calls rotate over several copies, so that HBM and not the L2 is measured
(METHOD.md: "rotate among several input sets").

Every record says what was computed and the fewest bytes it must move (inputs read once, output written once), so
`validation/calibrate.py` can price the same operator with the cost model. Records are appended and flushed one by
one with a key; a rerun skips keys already in the file, so a long suite can be split with `--only` and
`--max-seconds`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Callable, Optional

import typer

from sim.errors import UserError
from validation.clikit import user_errors
from validation.microbench_host import run_eager_pass, run_host
from validation.microbench_plan import KINDS, Case, plan  # noqa: F401 - Case is part of this module's API
from validation.records_file import iter_records, prepare_append

L2_FALLBACK_BYTES = 50e6  # H100 SXM; read from the device when torch reports it
ROTATE_FOOTPRINT_L2 = 3.0  # rotate until the input sets span this many L2s
MAX_SETS = 256
GRAPH_TARGET_S = 2e-3  # one graph replay lasts about this long, so event resolution (~0.5 us) does not matter
CASE_BUDGET_S = 30e-3  # device time spent on the timed replays of one case



# -- running one case -----------------------------------------------------------------------------------------------


class _Env:
    """The device, its L2 size and the header every record carries."""

    def __init__(self, device: str):
        import platform

        import torch

        self.torch, self.device = torch, device
        self.l2_bytes = L2_FALLBACK_BYTES
        info = {"torch": torch.__version__, "python": platform.python_version(),
                "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        if device == "cuda":
            props = torch.cuda.get_device_properties(0)
            self.l2_bytes = float(getattr(props, "L2_cache_size", 0) or L2_FALLBACK_BYTES)
            info.update(device=props.name, cuda=torch.version.cuda, driver=_driver(),
                        sm_count=props.multi_processor_count, l2_bytes=self.l2_bytes)
        else:
            info.update(device=f"cpu ({platform.processor() or platform.machine()})", cuda=None, driver=None)
        self.info = info

    def sets_for(self, call_bytes: float) -> int:
        """How many copies of the inputs to rotate over so that one pass over them spans a few L2s."""
        return max(1, min(MAX_SETS, math.ceil(ROTATE_FOOTPRINT_L2 * self.l2_bytes / max(call_bytes, 1.0))))


def _driver() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlSystemGetDriverVersion()
    except Exception as e:  # the driver version is provenance, not a measurement
        return f"unknown ({type(e).__name__})"


def _summary(times: list[float], **how) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": len(times),
            **how}


def _time_graph(env: _Env, fn: Callable[[int], None], sets: int) -> dict:
    """Median seconds of one call of `fn(i)` (i = input set), run back to back inside a CUDA graph."""
    torch = env.torch
    if env.device != "cuda":  # CPU: only for testing the machinery
        fn(0)
        times = []
        for r in range(5):
            t0 = time.perf_counter()
            fn(r % sets)
            times.append(time.perf_counter() - t0)
        return _summary(times, inner=1, sets=sets, mode="cpu")
    # warm up on a side stream before capture (torch.cuda.graphs docs): cuBLAS/flash pick kernels and workspaces
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for i in range(min(sets, 3)):
            fn(i)
    torch.cuda.current_stream().wait_stream(side)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def timed(work) -> float:
        start.record()
        work()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1e-3

    est_s = max(timed(lambda: fn(0)), 1e-6)  # eager, so an upper bound for small calls
    inner = min(max(math.ceil(GRAPH_TARGET_S / est_s), min(sets, MAX_SETS)), 2 * MAX_SETS)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for j in range(inner):
            fn(j % sets)
    graph.replay()
    repeats = max(3, min(15, int(CASE_BUDGET_S / max(timed(graph.replay), 1e-9))))
    times = [timed(graph.replay) / inner for _ in range(repeats)]
    del graph
    return _summary(times, inner=inner, sets=sets, mode="graph")


def _randn(env: _Env, *shape, dtype=None):
    # random data, never zeros: zeros can run faster than real data (METHOD.md, seen on an H200 here)
    torch = env.torch
    return torch.randn(*shape, device=env.device, dtype=dtype or torch.bfloat16)


class _Weights:
    """The weight copies of the current (N, K) shape, kept while its rows are swept."""

    def __init__(self):
        self.key, self.sets = None, []

    def get(self, env: _Env, N: int, K: int, dtype: str, count: int) -> list:
        torch = env.torch
        if self.key != (N, K, dtype):
            self.key, self.sets = (N, K, dtype), []
            if env.device == "cuda":
                torch.cuda.empty_cache()
        while len(self.sets) < count:
            w = _randn(env, N, K)
            self.sets.append(w.to(torch.float8_e4m3fn) if dtype == "fp8" else w)
        return self.sets[:count]


def _run_gemm(env: _Env, case: Case, weights: _Weights) -> dict:
    torch = env.torch
    M, N, K = case.shape["M"], case.shape["N"], case.shape["K"]
    sets = env.sets_for(case.bytes)
    ws = weights.get(env, N, K, case.dtype, sets)
    xs = [_randn(env, M, K) for _ in range(sets)]
    if case.dtype == "fp8":  # its output is allocated inside the graph's pool, so no out= tensors
        xs = [x.to(torch.float8_e4m3fn) for x in xs]
        one = torch.ones((), device=env.device, dtype=torch.float32)

        def fn(i):  # W.T of a row-major (N, K) is the column-major (K, N) operand _scaled_mm wants
            torch._scaled_mm(xs[i], ws[i].t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    elif case.shape.get("impl") == "triton":  # the runtime's kernel, plain store epilogue
        from runtime.kernels.linear import linear

        outs = [torch.empty(M, N, device=env.device, dtype=torch.bfloat16) for _ in range(sets)]

        def fn(i):
            linear(xs[i], ws[i], out=outs[i])
    else:
        outs = [torch.empty(M, N, device=env.device, dtype=torch.bfloat16) for _ in range(sets)]

        def fn(i):  # nn.Linear without bias: y = x @ W.T
            torch.matmul(xs[i], ws[i].t(), out=outs[i])
    return _time_graph(env, fn, sets)


def _run_attention(env: _Env, case: Case) -> dict:
    import torch.nn.functional as F

    s = case.shape
    B, q, c, H, Hkv, d = s["batch"], s["q"], s["c"], s["heads"], s["kv_heads"], s["head_dim"]
    sets = env.sets_for(case.bytes)
    qs = [_randn(env, B, H, q, d) for _ in range(sets)]
    ks = [_randn(env, B, Hkv, c, d) for _ in range(sets)]
    vs = [_randn(env, B, Hkv, c, d) for _ in range(sets)]
    causal = s["mode"] == "prefill"
    gqa = "enable_gqa"
    if env.device == "cuda":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        fused = [SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
        try:  # a fused kernel that reads the 8 KV heads directly; never the math fallback, which would time matmuls
            with sdpa_kernel(fused):
                F.scaled_dot_product_attention(qs[0], ks[0], vs[0], is_causal=causal, enable_gqa=True)
        except RuntimeError:
            # no fused kernel takes GQA here: repeat KV heads (as runtime/ops.py does); the kernel then reads 4x the
            # KV, which the record says
            gqa = "repeat"
            ks = [k.repeat_interleave(H // Hkv, dim=1) for k in ks]
            vs = [v.repeat_interleave(H // Hkv, dim=1) for v in vs]

        def fn(i):
            with sdpa_kernel(fused):
                F.scaled_dot_product_attention(qs[i], ks[i], vs[i], is_causal=causal, enable_gqa=gqa == "enable_gqa")
    else:
        def fn(i):
            F.scaled_dot_product_attention(qs[i], ks[i], vs[i], is_causal=causal, enable_gqa=True)
    return {**_time_graph(env, fn, sets), "gqa": gqa}


def _run_paged(env: _Env, case: Case) -> dict:
    """memwall's paged attention kernel (runtime/kernels/paged_attention.py) on the inputs a CUDA graph bucket
    stages for such a pass (runtime.graphs.staging_array: the rows padded to the bucket, row groups, block tables
    of randomly placed blocks), one layer's call, timed back to back inside a CUDA graph. Successive calls read the
    K/V of different copies (sets spanning a few L2s), as a pass's layers each read their own: small contexts
    would otherwise be served from L2 (a first suite of 11:32 UTC did that, up to 30% fast at 2-16 MB)."""
    torch = env.torch
    if env.device != "cuda":
        raise NotImplementedError("the paged attention kernel needs a CUDA GPU and Triton")
    import numpy as np

    from runtime.forward import rows_per_group
    from runtime.graphs import ROW_BUCKETS, staging_array
    from runtime.kernels.paged_attention import paged_decode

    sh = case.shape
    S, R, C, H, KVH, D = sh["seqs"], sh["rows"], sh["context"], sh["heads"], sh["kv_heads"], sh["head_dim"]
    bt = 16
    per = -(-C // bt)
    sets = env.sets_for(2 * (S * per + 1) * bt * KVH * D * 2)
    ks = [_randn(env, S * per + 1, bt, KVH, D) for _ in range(sets)]
    vs = [_randn(env, S * per + 1, bt, KVH, D) for _ in range(sets)]
    order = np.random.default_rng(0).permutation(S * per)
    tables = [order[i * per:(i + 1) * per].tolist() for i in range(S)]
    n = S * R
    b = next(x for x in ROW_BUCKETS if x >= n)
    positions = [C - R + j for _ in range(S) for j in range(R)]
    limits = [p + 1 for p in positions] if sh.get("causal", True) else [C] * n
    a = staging_array(b, per, bt, S * per, [0] * n, positions, tables, limits, [R] * S, rows_per_group(H, KVH))
    inputs = torch.from_numpy(a).to(env.device)
    tables_t = inputs[4 * b:4 * b + b * per].view(b, per)
    lens, groups = inputs[3 * b:4 * b], inputs[4 * b + b * per:].view(b, 2)
    q = _randn(env, b, H, D)

    def fn(i):
        paged_decode(q, ks[i], vs[i], tables_t, lens, D ** -0.5, groups=groups)

    return {**_time_graph(env, fn, sets), "bucket_rows": b}


def _run_stream(env: _Env, case: Case) -> dict:
    torch = env.torch
    n = case.shape["tensor_bytes"] // 2
    sets = env.sets_for(case.bytes)
    xs = [_randn(env, n) for _ in range(sets)]
    if case.shape["op"] == "read":
        outs = [torch.empty((), device=env.device, dtype=torch.bfloat16) for _ in range(sets)]

        def fn(i):  # a reduction reads every byte once and writes one element
            torch.sum(xs[i], 0, out=outs[i])
    else:
        ys = [torch.empty_like(x) for x in xs]

        def fn(i):
            ys[i].copy_(xs[i])
    return _time_graph(env, fn, sets)


def _run_launch(env: _Env, case: Case) -> dict:
    """Seconds per tiny kernel when `kernels` of them are issued back to back: eagerly from Python (host launch
    cost) or as one CUDA graph (the device-side floor per kernel that the cost model's kernel_overhead_us means)."""
    torch = env.torch
    n, mode = case.shape["kernels"], case.shape["mode"]
    if mode == "eager_pass":
        return run_eager_pass(env, case)
    x = _randn(env, case.shape["elements"], dtype=torch.float32)

    def burst():
        for _ in range(n):
            x.add_(1.0)

    burst()  # warm-up
    if env.device != "cuda":
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            burst()
            times.append((time.perf_counter() - t0) / n)
        return _summary(times, inner=n, sets=1, mode="cpu")
    graph = None
    if mode == "graph":
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            burst()
        graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(10):
        torch.cuda.synchronize()
        start.record()
        graph.replay() if graph is not None else burst()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3 / n)
    return _summary(times, inner=n, sets=1, mode=mode)


def _run_allreduce(env: _Env, case: Case) -> dict:
    """One payload size of the all-reduce set (validation/allreduce.py), which is measured for every size at the
    first case of the run (one launch of the per-GPU processes)."""
    from validation.allreduce import SIZES_BYTES, measure

    world = case.shape["world"]
    if getattr(env, "allreduce", None) is None:
        env.allreduce = measure(world, sorted(set(SIZES_BYTES) | {case.shape["bytes"]}))
    got = env.allreduce.get(case.shape["bytes"])
    if got is None:
        env.allreduce.update(measure(world, [case.shape["bytes"]]))
        got = env.allreduce[case.shape["bytes"]]
    if not got["sum_correct"]:
        raise RuntimeError(f"all-reduce of {case.shape['bytes']} bytes across {world} GPUs gave a wrong sum")
    return {**got, "sets": got["repeats"], "mode": "nccl", "nccl_nvls_enable": os.environ.get("NCCL_NVLS_ENABLE")}


def run_case(env: _Env, case: Case, weights: _Weights) -> dict:
    """Measure one case; returns its JSON record (status 'oom' or 'error' with the message when it cannot run)."""
    torch = env.torch
    base = {"key": case.key, "kind": case.kind, "dtype": case.dtype, "shape": case.shape, "flops": case.flops,
            "bytes": case.bytes, **case.extra}
    try:
        if case.kind in ("gemm", "fp8"):
            timing = _run_gemm(env, case, weights)
        elif case.kind == "attention":
            timing = _run_attention(env, case)
        elif case.kind == "paged":
            timing = _run_paged(env, case)
        elif case.kind == "stream":
            timing = _run_stream(env, case)
        elif case.kind == "host":
            timing = run_host(env, case)
        elif case.kind == "allreduce":
            timing = _run_allreduce(env, case)
        else:
            timing = _run_launch(env, case)
        status = {"status": "ok"}
    except torch.cuda.OutOfMemoryError as e:
        timing, status = {}, {"status": "oom", "error": str(e).splitlines()[0]}
    except (RuntimeError, TypeError, NotImplementedError) as e:  # e.g. fp8 matmul not supported by this build
        timing, status = {}, {"status": "error", "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
    if env.device == "cuda":
        torch.cuda.synchronize()
    return {**base, **timing, **status, **env.info}


# -- the suite -------------------------------------------------------------------------------------------------------


def done_keys(path: Path) -> set[str]:
    """Keys measured successfully in a records file; failed cases are tried again by a rerun (a reader keeps the
    last record of a key)."""
    if not path.exists():
        return set()
    return {rec["key"] for _, rec in iter_records(path, "microbenchmark records", resumes=True)
            if rec.get("status") == "ok" and "key" in rec}


def run_suite(out: Path, only: Optional[str] = None, max_seconds: float = 500.0, device: str = "cuda",
              tiny: bool = False, console=None) -> dict:
    """Run the plan's unfinished cases, appending each record to `out` as it finishes; stop starting new cases after
    `max_seconds`. Returns counts: planned, skipped (already done), measured, failed, left."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    if only is not None and only not in KINDS:
        raise UserError(f"--only: unknown kind '{only}'; choose one of {', '.join(KINDS)}")
    prepare_append(out)
    env = _Env(device)
    cases = plan(only, tiny)
    gpus = env.torch.cuda.device_count() if device == "cuda" else 0
    if gpus < 2:  # all-reduces need two GPUs or more
        cases = [c for c in cases if c.kind != "allreduce"]
    else:  # measured across all of them; the key says how many
        cases = [Case(f"{c.key}/gpus={gpus}", c.kind, c.dtype, {**c.shape, "world": gpus}, c.flops, c.bytes, c.extra)
                 if c.kind == "allreduce" else c for c in cases]
    skip = done_keys(out)
    todo = [c for c in cases if c.key not in skip]
    weights = _Weights()
    counts = {"planned": len(cases), "skipped": len(cases) - len(todo), "measured": 0, "failed": 0, "left": 0}
    t0 = time.monotonic()
    sampler = _sampler(device)
    columns = (TextColumn("{task.description:<44}"), BarColumn(), TextColumn("{task.fields[done]}/{task.fields[n]}"),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar, out.open("a") as f:
        # progress in estimated seconds rather than cases, so that the ETA weighs a 16384-row GEMM above a GEMV
        task = bar.add_task("microbench", total=sum(c.weight for c in todo), done=0, n=len(todo), rate="")
        for i, case in enumerate(todo):
            if time.monotonic() - t0 > max_seconds:
                counts["left"] = len(todo) - i
                break
            bar.update(task, description=case.key)
            if sampler is not None:
                sampler.interval_s = sample_interval_s(case.kind)
            start_s = time.perf_counter()
            rec = run_case(env, case, weights)
            if sampler is not None:
                rec["telemetry"] = _window(sampler.samples, start_s)
            f.write(json.dumps(rec) + "\n")
            f.flush()
            counts["measured" if rec["status"] == "ok" else "failed"] += 1
            elapsed = time.monotonic() - t0
            bar.update(task, advance=case.weight, done=i + 1, rate=f"{(i + 1) / elapsed:.1f} rec/s")
        if sampler is not None:  # the whole run's clocks, power and throttling, for the report's provenance
            sampler.stop()
            rec = {"key": f"telemetry/{env.info['date']}", "kind": "telemetry", "status": "ok",
                   "cases": counts["measured"] + counts["failed"], **sampler.summary(), **env.info}
            f.write(json.dumps(rec) + "\n")
    counts["seconds"] = round(time.monotonic() - t0, 1)
    return counts


def sample_interval_s(kind: str) -> float:
    """Seconds between NVML readings while a case of `kind` runs. Kernels timed on the device (GEMMs, attention,
    copies: ~30-60 ms a case) get a reading every 5 ms, so that each record has its own clock: the GEMM rate is the
    same per MHz back to back and inside a pass, and the clock is what differs (reports/h100/pass-check/README.md; at
    50 ms, 424 of 956 records of the 16:01 UTC suite of session 8 had no reading). Cases whose host time is the
    measurement (host, launch) keep one reading every 50 ms: the sampler's thread shares the host with them."""
    return 0.05 if kind in ("host", "launch") else 0.005


def _sampler(device: str):
    """An NVML sampler running for the whole suite (None without a GPU or NVML): each record gets the clocks, power
    and throttle reasons seen while it ran, so a power-capped measurement can be told apart."""
    if device != "cuda":
        return None
    from runtime.telemetry import NvmlSampler

    s = NvmlSampler(interval_s=0.05)
    return s.start() if s.available else None


def _window(samples: list[dict], start_s: float) -> dict:
    """Median SM clock, largest power and the throttle reasons among the samples taken since `start_s`."""
    from runtime.telemetry import _THROTTLE_BITS

    seen = [s for s in list(samples) if s["t_s"] >= start_s]
    if not seen:
        return {"samples": 0}
    reasons = 0
    for s in seen:
        reasons |= s["throttle_reasons"]
    return {"samples": len(seen), "sm_clock_mhz": statistics.median(s["sm_clock_mhz"] for s in seen),
            "sm_clock_mhz_min": min(s["sm_clock_mhz"] for s in seen),
            "power_w": statistics.median(s["power_w"] for s in seen), "power_w_max": max(s["power_w"] for s in seen),
            "throttle": sorted(name for bit, name in _THROTTLE_BITS.items() if reasons & bit)}


@user_errors
def microbench_command(
    out: Path = typer.Option(Path("reports/h100/microbench.jsonl"), help="records file (JSONL), appended to"),
    only: Optional[str] = typer.Option(None, help=f"run one kind only: {', '.join(KINDS)}"),
    max_seconds: float = typer.Option(500.0, help="start no new case after this many seconds (rerun to go on)"),
):
    """Microbenchmark the GPU (GEMM/GEMV, fp8, attention, streaming, launch cost) for `memwall calibrate`."""
    from rich.console import Console

    if only is not None and only not in KINDS:  # before the GPU check: a typo is told on any machine
        raise UserError(f"--only: unknown kind '{only}'; choose one of {', '.join(KINDS)}")
    try:
        import torch
    except ImportError:
        raise UserError("'memwall microbench' needs PyTorch: pip install -e '.[runtime]'") from None
    if not torch.cuda.is_available():
        raise UserError("'memwall microbench' needs a CUDA GPU and torch.cuda.is_available() is False here; run it on "
                        "the GPU machine and bring the JSONL back for 'memwall calibrate'")
    console = Console(stderr=True)
    counts = run_suite(out, only, max_seconds, "cuda", console=console)
    console.print(f"{out}: {counts['measured']} measured, {counts['failed']} failed, {counts['skipped']} already "
                  f"there, {counts['left']} left in {counts['seconds']} s"
                  + (" (rerun the same command to go on)" if counts["left"] else ""))


if __name__ == "__main__":  # `python -m validation.microbench` on the GPU machine, before the CLI registers it
    typer.run(microbench_command)
