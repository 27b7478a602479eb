"""The runtime's host-side costs, measured for `memwall calibrate`: the serving loop's host time per forward pass
(kind `host`, fitted as host_pass/row/seq/block_overhead_us) and the host's pace issuing an eager pass (kind `launch`,
mode `eager_pass`, fitted as launch_overhead_us). Both run the real runtime (runtime/serve.py, runtime/forward.py),
not a stand-in; `microbench.py` runs them as cases of the suite.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from validation.microbench_plan import Case


def _model(env, name: str, tiny_spec):
    """The benchmark model: `tiny_spec`, or a catalog model with random weights built once per suite (8B: seconds)."""
    from runtime.model import Transformer
    from sim.model import load_model

    models = env.__dict__.setdefault("host_models", {})
    key = tiny_spec.name if name == "tiny" else name
    if key not in models:
        models[key] = Transformer.random(tiny_spec if name == "tiny" else load_model(name), seed=0,
                                         device=env.device, max_positions=4096)
    return models[key]


def _eager_bench_spec(sh: dict):
    from sim.model import ModelSpec, load_model

    if sh.get("model", "tiny") != "tiny":
        return load_model(sh["model"])
    return ModelSpec(name="eager-bench", hidden_size=1024, num_layers=sh["layers"], num_heads=8, num_kv_heads=2,
                     intermediate_size=2048, vocab_size=1024, max_position_embeddings=4096)


def eager_pass_kernels(sh: dict) -> int:
    """Kernels the cost model counts for an `eager_pass` case's pass, launched eagerly as the case runs it (its
    prompts through SDPA, its decodes paged): what launch_overhead_us is per. The calibration divides a record's
    pass time by today's count, so that the model's own eager pass keeps the measured time when the count changes
    (counting the paged kernel's merge and the split attention added 32-64 kernels to these passes in session 12)."""
    from sim.cost import CostContext, CostModel
    from sim.hardware import load_profile
    from sim.passes import batch_shape

    shape = batch_shape([(sh["prompt"], sh["prompt"], 1)] * sh["prompts"]
                        + [(1, 33 + i, 1) for i in range(sh["decodes"])])
    return CostModel(CostContext(_eager_bench_spec(sh), load_profile("h100-sxm"), graphs="none")).kernels(shape)


def run_eager_pass(env, case: Case) -> dict:
    """Seconds per kernel of the runtime's own eager forward pass (runtime/forward.py, no CUDA graph): prompts plus
    decode rows, the passes over GRAPH_MAX_ROWS of continuous batching, which the host's issuing of ~550 kernels
    sets the pace of (a 512-token prompt + 16 decodes of the 8B model: 27-35 ms wall against 14 ms of GPU work, no
    synchronization inside, benchmarks/profile_eager_pass.py). The pass's wall time is divided by the kernels the
    cost model counts for it (CostModel.kernels), so the result is the launch_overhead_us that makes the model's
    eager pass as slow as the runtime's host. The suite uses the served model's shape (8B, random weights): the same
    pass on a model of Llama-3's layout but tiny widths measured ~1.4x less host time per kernel."""
    from runtime.forward import SeqInput, build_meta, forward
    from validation.microbench import _summary

    torch = env.torch
    sh = case.shape
    model = _model(env, sh.get("model", "tiny"), _eager_bench_spec({**sh, "model": "tiny"}))
    bt, P, D = 16, sh["prompt"], sh["decodes"]
    per_seq = -(-(P + 64) // bt)
    cache = model.paged_cache(per_seq * (sh["prompts"] + D), bt)
    tables = [list(range(i * per_seq, (i + 1) * per_seq)) for i in range(sh["prompts"] + D)]
    seqs = [SeqInput([1 + j % 1000 for j in range(P)], 0, tables[i], 1) for i in range(sh["prompts"])]
    seqs += [SeqInput([5], 32 + i, tables[sh["prompts"] + i], 1) for i in range(D)]
    for s in seqs[sh["prompts"]:]:  # the decodes' cached prefixes
        forward(model, cache, build_meta([SeqInput(list(range(1, s.start + 1)), 0, s.block_ids, 1)], cache,
                                         model.device, model.max_positions))
    meta = build_meta(seqs, cache, model.device, model.max_positions)
    kernels = eager_pass_kernels(sh)
    times = []
    for _ in range(12):
        if env.device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        forward(model, cache, meta).argmax(dim=-1)
        if env.device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) / kernels)
    return {**_summary(times[2:], inner=kernels, sets=1, mode="eager_pass"), "kernels_counted": kernels,
            "pass_s": statistics.median(times[2:]) * kernels}


def host_scenario(sh: dict):
    """The Scenario of a `host` case: a static batch of `batch` requests of `prompt` + `output` tokens of catalog
    model `model` (random weights) under `strategy` (speculative: self-drafting with a quarter of the layers, or
    the catalog model `draft`, k = `k` (default 4), FORCED acceptance at alpha 0.8; block diffusion: `steps` per block of `block`; diffusion: `steps` over
    `output` tokens with `cache`); with `cont`, continuous batching of at most `cont` running at 512 tokens per
    pass. Batch sizes and prompt lengths differ from the validation grid's points."""
    from sim.model import load_model
    from sim.scenario import scenario_from_dict

    kind = sh["strategy"]
    strategy = {"kind": kind}
    if kind == "speculative":
        strategy.update(draft="self", draft_layers=max(1, load_model(sh["model"]).num_layers // 4),
                        k=sh.get("k", 4), alpha=0.8)
        if sh.get("draft", "self") != "self":
            strategy.update(draft=sh["draft"], draft_layers=None)
    elif kind == "block_diffusion":
        strategy.update(block_size=sh["block"], steps_per_block=sh["steps"])
    elif kind == "diffusion":
        strategy.update(gen_length=sh["output"], steps=sh["steps"], cache=sh.get("cache", "none"),
                        **({"cache_block": sh["block"]} if sh.get("cache", "none") != "none" else {}))
    b = sh["batch"]
    batching = {"kind": "static", "batch_size": b}
    if sh.get("cont"):  # continuous batching of `batch` requests there at once, at most `cont` running
        batching = {"kind": "continuous", "max_batch": sh["cont"], "max_tokens_per_iter": 512, "chunked_prefill": True}
    return scenario_from_dict({
        "name": f"host-{kind}-b{b}-p{sh['prompt']}", "hardware": "h100-sxm", "model": sh["model"],
        "strategy": strategy, "batching": batching,
        "workload": {"kind": "closed", "num_requests": b, "input_len": sh["prompt"], "output_len": sh["output"]},
        "seed": 0}, where="host case")


def run_host(env, case: Case) -> dict:
    """Host seconds per forward pass of the serving loop exactly as `memwall validate` runs a point
    (validation.run.run_scenario: the scheduler, the strategy's executor with its CUDA graphs captured before the
    clock, the NVML sampler and the progress of a run), on scenarios that are not validation points: (makespan -
    summed device time of its forward passes) / forward passes, with the passes' mean rows (at most
    GRAPH_MAX_ROWS each, as the engine prices the staging), sequences and KV blocks of their block tables; and, per
    run, each iteration's own host time with the shapes of its forward passes (`iterations`), which the host model
    is fitted to (host_fit.fit_host) where records have them. Until session 4 this ran runtime.serve on executors of
    its own with contexts under 100 positions, and predicted 0.65-0.9 ms per pass where a batch of 64 at 256-384
    positions spent 1.2 ms bare and 1.5 ms inside `memwall validate` (benchmarks/README.md)."""
    from sim.runtime_layout import GRAPH_MAX_ROWS
    from validation.microbench import _summary
    from validation.run import run_scenario

    s = host_scenario(case.shape)
    bt = s.batching.kv_block_tokens
    env.__dict__.pop("host_models", None)  # the eager-pass cases' model: run_scenario sizes its pool to the memory
    if env.device == "cuda":
        env.torch.cuda.empty_cache()
    per_pass, fwd, iterations = [], [], []
    for _ in range(case.shape.get("runs", 2)):
        rec = run_scenario(s, env.device)
        fwd = [p[1:] for p in rec["strategy_passes"]] or rec["passes"]  # (tokens, logit rows, seqs, kv, pairs, s)
        per_pass.append((rec["result"]["makespan_s"] - sum(p[-1] for p in fwd)) / len(fwd))
        iterations.append(_iterations(rec))
        if env.device == "cuda":
            env.torch.cuda.empty_cache()
    return {**_summary(per_pass, inner=1, sets=1, mode="serve"),
            "rows_per_pass": float(np.mean([min(p[0], GRAPH_MAX_ROWS) for p in fwd])),
            "seqs_per_pass": float(np.mean([p[2] for p in fwd])),
            "blocks_per_pass": float(np.mean([p[3] for p in fwd])) / bt,
            "kv_block_tokens": bt, "iterations": iterations}


def _iterations(rec: dict) -> dict:
    """One run's host seconds per iteration of the serving loop and the (tokens, sequences, KV read tokens) of each
    forward pass it ran (one for AR; drafts, verify or steps for the others), for host_fit.fit_host."""
    host = rec.get("pass_host_s") or []
    if rec["strategy_passes"]:
        counts = rec.get("forwards_per_pass") or []
        flat = [[p[1], p[3], p[4]] for p in rec["strategy_passes"]]
        shapes, i = [], 0
        for n in counts:
            shapes.append(flat[i:i + n])
            i += n
    else:
        shapes = [[[p[0], p[2], p[3]]] for p in rec["passes"]]
    return {"host_s": host, "forwards": shapes}


def probe_case(cases: list, every: int, index: int):
    """The host case that follows a grid's point `index` (0-based, its place in the whole plan), or None: one after
    every `every`-th point, the cases in turn. Counted by the point's place, not by the points one process measured,
    so that a grid resumed in another process probes the same cases beside the same points."""
    if (index + 1) % every:
        return None
    return cases[((index + 1) // every - 1) % len(cases)]


class HostProbes:
    """The cases of `memwall microbench --only host`, run one at a time, in turn, between the points of a grid
    (`memwall validate --host-probes F`): host records measured in the grid's own process and minutes, none of them
    a grid point. Why: the serving loop's host time moves between machines and processes more than a host suite run
    before the grid follows. At 16:14 UTC in session 8 the same speculative points took 1.4-1.9x the host time of the
    15:36 grid while that call's host suite fitted a smaller part per iteration, and the grid missed its speculative
    throughput target on the host alone (reports/h100/validation-notes.md). Each record is appended to `out` as
    `memwall microbench` writes it, with its own date and `"probe": true`; `memwall calibrate` reads them like any
    host record (the last of each key). The session-9 grids in reports/h100 probed after every second point
    (validate's --probe-every 2)."""

    def __init__(self, device: str, out, tiny: bool = False, every: int = 1):
        from validation.microbench import _Env, _Weights
        from validation.microbench_plan import plan
        from validation.records_file import prepare_append

        from pathlib import Path

        if every < 1:
            raise ValueError(f"every: expected a whole number >= 1, got {every}")
        self.cases = plan(only="host", tiny=tiny)
        self.env, self.weights, self.out, self.every = _Env(device), _Weights(), Path(out), every
        prepare_append(self.out, "--host-probes")

    def __call__(self, index: int) -> dict | None:
        """Run the case that follows point `index`, if any; returns its record (also appended to `out`)."""
        import datetime as dt

        from validation.microbench import run_case
        from validation.records_file import append_record

        case = probe_case(self.cases, self.every, index)
        if case is None:
            return None
        rec = {**run_case(self.env, case, self.weights), "probe": True,
               "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        append_record(self.out, rec)
        return rec

