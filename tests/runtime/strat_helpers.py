"""Driving the strategy executors through the shared scheduler on the CPU (VirtualClock), for the tests."""

from sim.kv_blocks import KVBlockManager  # noqa: F401  (re-exported for tests that build pools by hand)
from sim.scenario import Continuous, Static
from sim.workload import Request

from runtime.serve import VirtualClock, serve


def drive(executor, strategy, prompts, outputs, batching="static", batch=4, num_blocks=64, block_tokens=4,
          kv_extra=0):
    """Serve `prompts` (token lists, all arriving at t = 0) with `outputs` new tokens each; returns
    (outputs per request, Served)."""
    b = (Static(batch_size=batch, kv_block_tokens=block_tokens) if batching == "static" else
         Continuous(max_batch=batch, max_tokens_per_iter=512, kv_block_tokens=block_tokens))
    reqs = [Request(i, 0.0, len(p), n) for i, (p, n) in enumerate(zip(prompts, outputs))]
    for i, p in enumerate(prompts):
        executor.add_tokens(i, p)
    outs = {}
    free = executor.free

    def keep_then_free(rid):  # read each output before the executor forgets the request
        outs[rid] = executor.output(rid, len(prompts[rid]))
        free(rid)

    executor.free = keep_then_free
    served = serve(reqs, b, executor, num_blocks, {"scenario": "t", "hardware": "cpu", "model": "tiny",
                                                    "strategy": strategy.kind, "batching": b.kind},
                   clock=VirtualClock(), strategy=strategy, kv_extra=kv_extra)
    executor.free = free
    return [outs[i][:n] for i, n in enumerate(outputs)], served
