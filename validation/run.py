"""`memwall run`: execute scenarios on a real GPU (or, for small models, the CPU) through the simulator's scheduler,
and store each result next to its per-pass device times and the GPU's telemetry.

Every finished scenario is appended to a JSONL file and flushed at once; a rerun skips scenarios already there (a
key hashes the scenario and the device), and a configuration that runs out of GPU memory is recorded as that
configuration's failure while the run goes on with the next one.
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import json
import platform
from pathlib import Path

from sim.engine import execution, prepare
from sim.errors import UserError
from sim.scenario import Scenario
from sim.workload import generate_requests, over_context
from validation.records_file import append_record, iter_records, prepare_append

CPU_KV_BUDGET_BYTES = 2e9  # the CPU runs small models for tests and demos: cap its KV pool


def scenario_key(s: Scenario, device: str) -> str:
    blob = json.dumps({"scenario": s.model_dump(mode="json"), "device": device}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def device_info(device: str) -> dict:
    import torch

    info = {"torch": torch.__version__, "python": platform.python_version(), "device": device,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
        try:
            import pynvml

            pynvml.nvmlInit()
            info["driver"] = pynvml.nvmlSystemGetDriverVersion()
        except Exception as e:  # telemetry is optional; the measurement is not
            info["driver"] = f"unknown ({type(e).__name__})"
    return info


def _available_bytes() -> float | None:
    """MemAvailable of /proc/meminfo (None where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _check_cpu_memory(spec) -> None:
    """One sentence, before any weight is made, when the model's fp32 weights (the runtime's CPU dtype) would not fit
    in the memory this machine has free: the kernel's out-of-memory killer would end the run with no message."""
    need = 2 * spec.weight_bytes("bf16", "bf16")
    avail = _available_bytes()
    if avail is not None and need > 0.8 * avail:
        raise UserError(f"model: {spec.name} needs {need / 1e9:.1f} GB of fp32 weights on the CPU and this machine "
                        f"has {avail / 1e9:.1f} GB free; --device cpu is for small models (e.g. model=smollm2-135m)")


def build(s: Scenario, device: str, weights: str | None = None):
    """Model, KV cache and executor for a scenario (random weights unless `weights` names a checkpoint)."""
    import torch

    from runtime.executor import Executor
    from runtime.model import Transformer, resolve_device

    if s.parallel.tp * s.parallel.pp * s.parallel.replicas != 1:
        raise UserError("parallel: 'memwall run' uses one GPU (tp = pp = replicas = 1)")
    resolve_device(device)
    setup = prepare(s)
    if not setup.fits:  # the weights (the model's fault) or a workload past the context (the message names it)
        raise UserError(setup.message if setup.message.startswith("workload:") else f"model: {setup.message}")
    spec = setup.model
    blocks = setup.kv_blocks_per_replica
    reqs = generate_requests(s.workload, s.workload_seed)
    # the runtime's RoPE tables end at max_position_embeddings, stated or not (its default, 4,096)
    positions = spec.context_tokens or spec.max_position_embeddings
    too_long = over_context(reqs, setup.strategy, positions)
    if too_long:  # checked before any weights are built; the simulator prices and counts them, the runtime cannot
        stated = "" if spec.context_tokens else " (max_position_embeddings, 4,096 where the model does not state it)"
        raise UserError(f"workload: {too_long} of {len(reqs)} requests need more positions than {spec.name}'s "
                        f"{positions:,}{stated} (prompt + what the strategy commits); the runtime cannot run them: "
                        "shorten workload.input_len / output_len or choose a model with a longer context")
    if device == "cpu":
        _check_cpu_memory(spec)
        blocks = min(blocks, int(CPU_KV_BUDGET_BYTES // (spec.kv_bytes_per_token(s.precision.kv)
                                                          * s.batching.kv_block_tokens)))
    if weights:
        from runtime.loaders import load_gguf, load_hf_checkpoint

        model = (load_gguf(weights, device=device) if str(weights).endswith(".gguf")
                 else load_hf_checkpoint(weights, device=device))
    else:
        model = Transformer.random(spec, seed=s.seed, device=device)
    longest = max((r.prompt_tokens + r.output_tokens for r in reqs), default=16)
    if s.strategy.kind != "ar":
        from runtime.strategy_build import strategy_executor

        # what the requests can hold at once, padded as a static batch pads (the longest prompt plus the most any
        # request commits, plus the strategy's lookahead): sized to the simulator's whole pool, which takes 90% of
        # the 85.5 GB the driver reports, the speculative points ran out of memory (session 12's check grid)
        reach = (max((r.prompt_tokens for r in reqs), default=0) + setup.kv_extra + 32
                 + max((setup.strategy.tokens_to_commit(r.prompt_tokens, r.output_tokens) for r in reqs), default=16))
        need = len(reqs) * (-(-reach // s.batching.kv_block_tokens) + 2) + 64

        def make():
            return strategy_executor(s, setup, model, blocks, reqs, longest, checkpoint=bool(weights),
                                     need_blocks=need)

        if device == "cuda":  # a throwaway executor serves the first batch before the clock: Triton compiles
            warm_strategy(make()[0], s, setup, reqs)  # the variants of the eager prompt passes (seconds)
            gc.collect()
            torch.cuda.empty_cache()
        executor, blocks = make()
        return setup, model, executor, blocks, reqs
    # The pool holds what the run's requests can use at once, when that is less than the simulator's pool: the
    # scheduler then admits and preempts exactly as with the whole pool (every request fits), and the CUDA graphs
    # keep room beside it (with graphs up to 1,024 rows, a batch of 64 x 1,024-token prompts next to a 90% pool
    # ran out of memory in its eager prompt pass, 2026-11-27).
    bt = s.batching.kv_block_tokens
    blocks = min(blocks, sum(-(-(r.prompt_tokens + r.output_tokens) // bt) + 2 for r in reqs) + 64)
    cache = model.paged_cache(blocks, bt)
    executor = Executor(model, cache, max_context=min(longest + 16, model.max_positions))
    if executor.graphs is not None:  # capture every bucket before the clock starts: decodes use those up to the
        for b in executor.graphs.buckets:  # batch size, mixed passes of prefill chunks and decodes any of them
            executor.graphs.capture(b)
        torch.cuda.synchronize()
    return setup, model, executor, blocks, reqs


def warm_up(executor, s: Scenario, blocks: int) -> None:
    """Run eager passes of the row counts the scenario can produce before the clock starts: Triton compiles a
    kernel variant per configuration bucket on first use (hundreds of ms), which must not land in a timed pass."""
    from runtime.serve import Item

    b = s.batching
    limit = b.max_tokens_per_iter if b.kind == "continuous" else b.batch_size * 4096
    limit = min(limit, executor.model.max_positions - 1)
    bt = b.kv_block_tokens
    sizes = sorted({m for m in (1, 2, 3, 5, 8, 16, 17, 33, 64, 65, 100, 128, 129, 256, 257, 512, 513, 1000, 1024,
                                2048, 2049, 4096, 8192) if m <= limit})
    for m in sizes:
        if -(-m // bt) > blocks:
            break
        executor.add_request(-1, m, 0)
        executor.execute([Item(-1, m, 0, 1, list(range(-(-m // bt))))])
        executor.free(-1)


def warm_strategy(executor, s: Scenario, setup, reqs) -> None:
    """Serve the scenario's first batch (at most 8 output tokens each, two blocks and one token for block diffusion;
    arrivals ignored) on a throwaway strategy executor: the first eager pass of each kind compiles Triton kernels,
    which took up to 1.5 s inside a timed pass before this existed (reports/h100/validation-notes.md)."""
    import dataclasses

    from runtime.serve import VirtualClock, serve

    b = s.batching
    rows = b.batch_size if b.kind == "static" else b.max_batch
    # block diffusion: past the first block, so that the fused KV write of a finished block (2B rows) runs too
    out = 2 * s.strategy.block_size + 1 if s.strategy.kind == "block_diffusion" else 8
    first = [dataclasses.replace(r, arrival_s=0.0, output_tokens=min(r.output_tokens, out)) for r in reqs[:rows]]
    blocks = executor.pool_blocks
    base = dict(scenario=f"{s.name} (warm-up)", hardware=setup.hardware.name, model=setup.model.name,
                strategy=s.strategy.kind, batching=b.kind, weight_bytes_per_gpu=setup.weight_bytes_per_gpu)
    serve(first, b, executor, blocks, base, seed=s.seed, clock=VirtualClock(),
          strategy=setup.strategy, kv_extra=setup.kv_extra)


def run_scenario(s: Scenario, device: str, weights: str | None = None, progress=None) -> dict:
    """Execute one scenario; returns the JSONL record (result, per-pass device times and shapes, telemetry)."""
    from runtime.compile_watch import CompileWatch
    from runtime.serve import serve
    from runtime.telemetry import NvmlSampler
    from sim.cost import CostContext, CostModel

    setup, model, executor, blocks, reqs = build(s, device, weights)
    hw = setup.hardware
    costs = CostModel(CostContext(setup.model, hw, s.precision.weights, s.precision.kv, s.precision.activations,
                                  **execution(s)))

    def count(shape):  # FLOPs, bytes and memory-bound share of a pass as the cost model counts them, inside the
        # serving loop's clock: the fast path (a few us), not pass_cost's breakdown (~60 us a pass, every decode
        # pass being a new shape)
        pt = costs.pass_time(shape)
        if not pt.time_s:
            return pt.flops, pt.bytes, 0.0, 0.0
        return pt.flops, pt.bytes, pt.memory_bound_s / pt.time_s, pt.host_launch_s / pt.time_s

    ar = s.strategy.kind == "ar"
    if ar:  # (strategy executors warm up their own passes)
        warm_up(executor, s, blocks)
    base = dict(scenario=s.name, hardware=hw.name, model=setup.model.name, strategy=s.strategy.kind,
                batching=s.batching.kind, weight_bytes_per_gpu=setup.weight_bytes_per_gpu)
    # The process holds earlier scenarios' records: a full garbage collection over them inside a timed pass would
    # be charged to that pass, so everything alive now is moved out of the collector's view for the run.
    gc.collect()
    gc.freeze()
    try:
        with NvmlSampler() as sampler, CompileWatch() as compiles:
            served = serve(reqs, s.batching, executor, blocks, base, seed=s.seed, count=count,
                           peak_bw=hw.hbm_bandwidth_bytes_per_s,
                           peak_flops=hw.matmul_flops_per_s(s.precision.weights, s.precision.activations),
                           on_pass=progress, strategy=None if ar else setup.strategy,
                           kv_extra=0 if ar else setup.kv_extra)
    finally:
        gc.unfreeze()
    telemetry = sampler.summary()
    extra = {"telemetry": telemetry, "compiles_in_run": compiles.summary()}
    if not ar:
        per_pass = served.committed_per_pass
        extra.update(setup.strategy.summary())
        extra.update(executor.summary())
        extra.update(committed_per_iteration_mean=sum(per_pass) / max(len(per_pass), 1),
                     committed_per_iteration=per_pass, wasted_positions=served.wasted_positions)
    result = served.result.model_copy(update={"extra": extra})
    return {"key": scenario_key(s, device), "status": "ok", "scenario": s.model_dump(mode="json"),
            "device": device_info(device), "kv_blocks": blocks, "result": result.model_dump(mode="json"),
            "passes": [[*shape, round(t, 9)] for shape, t in zip(served.pass_shapes, served.device_pass_s)],
            "pass_columns": ["tokens", "logit_rows", "seqs", "kv_read_tokens", "attn_pairs", "device_s"],
            # each pass's (tokens, seqs, sum c, pairs) of its sequences with more than PAGED_MAX_Q new tokens
            # (sim.passes.PassShape.spans: an eager pass attends them through SDPA, its other rows paged)
            "pass_spans": served.pass_spans,
            # host seconds of each pass (runtime.serve.Served.host_pass_s) and the forward passes of each iteration
            "pass_host_s": [round(t, 7) for t in served.host_pass_s],
            **({"forwards_per_pass": served.forwards_per_pass} if served.forwards_per_pass else {}),
            # every forward pass of a non-AR iteration (draft, verify, diffusion/block step) with its own shape
            "strategy_passes": [[r, *shape, round(t, 9)] for (r, _, t), shape in
                                zip(getattr(executor, "pass_log", []), getattr(executor, "pass_shapes", []))],
            "strategy_pass_columns": ["role", "tokens", "logit_rows", "seqs", "kv_read_tokens", "attn_pairs",
                                      "device_s"]}


def done_keys(path: Path) -> set[str]:
    """Keys of the scenarios recorded as finished in `path` (failures, e.g. out of memory, are tried again)."""
    if not path.exists():
        return set()
    return {rec["key"] for _, rec in iter_records(path, "'memwall run' records", resumes=True)
            if rec.get("status") == "ok" and "key" in rec}


def run_all(scenarios: list[Scenario], device: str, out: Path | None, weights: str | None = None,
            console=None, after_point=None) -> list[dict]:
    """Run scenarios in order, skipping those already in `out`; OOM is recorded per scenario. `after_point(i)` is
    called after each point measured, with its place in `scenarios` (validate's --host-probes)."""
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if out:
        prepare_append(out)
    skip = done_keys(out) if out else set()
    records = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                  TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task("scenarios", total=len(scenarios), rate="")
        for index, s in enumerate(scenarios):
            key = scenario_key(s, device)
            if key in skip:
                bar.advance(task)
                continue
            passes = bar.add_task(f"  {s.name}: passes", total=None, rate="")
            try:
                rec = run_scenario(s, device, weights, progress=lambda i: bar.update(passes, completed=i))
            except torch.cuda.OutOfMemoryError as e:
                rec = {"key": key, "status": "oom", "scenario": s.model_dump(mode="json"),
                       "device": device_info(device), "error": str(e).splitlines()[0]}
                torch.cuda.empty_cache()
            finally:
                # free this configuration's model, cache and graphs before the next one is built
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            bar.remove_task(passes)
            if out:
                append_record(out, rec)
            records.append(rec)
            bar.advance(task)
            if after_point is not None:
                try:
                    after_point(index)
                except Exception as e:  # a probe beside the grid never stops the grid
                    if console is not None:
                        console.print(f"after {s.name}: {type(e).__name__}: {str(e).splitlines()[0][:200]}; "
                                      "going on", highlight=False)
                finally:
                    gc.collect()
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
    return records
