"""The runtime's host-side costs, measured for `memwall calibrate`: the serving loop's host time per forward pass
(kind `host`, fitted as host_pass/row/seq_overhead_us) and the host's pace issuing an eager pass (kind `launch`,
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
    from sim.cost import CostContext, CostModel
    from sim.hardware import load_profile
    from sim.model import ModelSpec
    from sim.passes import batch_shape

    torch = env.torch
    sh = case.shape
    spec = ModelSpec(name="eager-bench", hidden_size=1024, num_layers=sh["layers"], num_heads=8, num_kv_heads=2,
                     intermediate_size=2048, vocab_size=1024, max_position_embeddings=4096)
    model = _model(env, sh.get("model", "tiny"), spec)
    spec = model.spec
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
    shape = batch_shape([(P, P, 1)] * sh["prompts"] + [(1, 33 + i, 1) for i in range(D)])
    kernels = CostModel(CostContext(spec, load_profile("h100-sxm"))).kernels(shape)
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


def run_host(env, case: Case) -> dict:
    """Host seconds per forward pass of the runtime's serving loop (runtime/serve.py with the real scheduler and
    executor, graphs on CUDA): (wall - summed device time) / passes, with the passes' mean rows and sequences (the
    host model is affine in both, calibrate.fit_host). The model is the shape's catalog model with random weights
    (Llama-3.1-8B in the suite): with a 2-layer toy model, whose passes took 0.1 ms, the same loop measured about
    half the host time per pass that the 8B model's 6 ms passes showed (waking from a long device wait costs the
    host too). Speculative: self-drafting (a quarter of the layers), k = 4, FORCED acceptance at alpha 0.8 (random
    weights); block diffusion: an even schedule of `steps` per block of `block` tokens. Every pass fits a graph
    (<= GRAPH_MAX_ROWS rows) but the prompts', so device time is the GPU's alone and not an eager pass's launch
    pace."""
    from runtime.block_diffusion import BlockDiffusionExecutor
    from runtime.executor import Executor
    from validation.microbench import _summary
    from runtime.serve import serve
    from runtime.speculative import SpeculativeExecutor
    from sim.model import ModelSpec
    from sim.scenario import BlockDiffusion as BlockSpec, Speculative as SpecSpec, Static
    from sim.strategies.block_diffusion import BlockDiffusion
    from sim.strategies.speculative import Speculative
    from sim.runtime_layout import GRAPH_MAX_ROWS
    from sim.workload import Request

    sh = case.shape
    name = sh.get("model", "tiny")
    model = _model(env, name, ModelSpec(name="host-bench", hidden_size=256, num_layers=2, num_heads=4,
                                        num_kv_heads=2, intermediate_size=512, vocab_size=1024,
                                        max_position_embeddings=512))
    draft_layers = max(1, model.spec.num_layers // 4)
    bt = 16
    b, context = sh["batch"], sh["prompt"] + sh["output"] + 64  # (+64: a block-diffusion block past the output)
    blocks = (-(-context // bt) + 8) * sh["batch"]
    per_pass, rows, seqs = [], 0.0, 0.0
    for _ in range(3):  # the first run compiles and captures
        strat, extra = None, 0
        if sh["strategy"] == "ar":
            ex = Executor(model, model.paged_cache(blocks, bt), max_context=context)
            if ex.graphs is not None:  # before the clock, as `memwall run` does (capture is ~0.1 s a bucket:
                for bucket in ex.graphs.buckets:  # on the 8B model it added ~2 ms to every pass of a run)
                    ex.graphs.capture(bucket)
        elif sh["strategy"] == "speculative":
            ex = SpeculativeExecutor(model, blocks, bt, draft_layers=draft_layers, acceptance_mode="forced",
                                     alpha=0.8, max_context=context)
            strat, extra = Speculative(SpecSpec(draft="self", draft_layers=draft_layers, k=4, alpha=0.8), 4,
                                       True), 4
        else:
            strat = BlockDiffusion(BlockSpec(block_size=sh["block"], steps_per_block=sh["steps"]))
            ex = BlockDiffusionExecutor(model, strat, blocks, bt, b, max_context=context)  # (+ its rows' scratch)
        if hasattr(ex, "capture"):
            ex.capture()
        reqs = [Request(i, 0.0, sh["prompt"], sh["output"]) for i in range(b)]
        t0 = time.perf_counter()
        served = serve(reqs, Static(batch_size=b, kv_block_tokens=bt), ex, blocks,
                       {"scenario": "host", "hardware": "gpu", "model": "host-bench", "strategy": sh["strategy"],
                        "batching": "static"}, strategy=strat, kv_extra=extra)
        wall = time.perf_counter() - t0
        log = getattr(ex, "pass_log", None)
        shapes = getattr(ex, "pass_shapes", None) or served.pass_shapes  # (tokens, logit rows, seqs, ...)
        device_s, passes = ((sum(t for _, _, t in log), len(log)) if log else
                            (sum(served.device_pass_s), len(served.device_pass_s)))
        per_pass.append((wall - device_s) / passes)
        # rows as the engine prices the host's staging: at most GRAPH_MAX_ROWS per pass (the prompt pass is eager)
        rows = float(np.mean([min(s[0], GRAPH_MAX_ROWS) for s in shapes]))
        seqs = float(np.mean([s[2] for s in shapes]))
        kv_blocks = float(np.mean([s[3] for s in shapes])) / bt  # (positions read / block size: the tables' blocks)
        del ex, served  # its graphs and cache, before the next run's are made
        if env.device == "cuda":
            env.torch.cuda.empty_cache()
    return {**_summary(per_pass[1:], inner=1, sets=1, mode="serve"), "rows_per_pass": rows, "seqs_per_pass": seqs,
            "blocks_per_pass": kv_blocks}
