"""The executor of a scenario's non-AR strategy (`memwall run`): which draft, which acceptance rule, how much of
the KV pool goes to scratch.

Acceptance: with random weights a draft and its target never agree, so a speculative run on random weights uses
forced acceptance (runtime/acceptance.py) at the scenario's `strategy.alpha` and says so in its result
(`acceptance: forced`); with a checkpoint it verifies greedily and reports the measured rate. Diffusion and
block-diffusion executors take per-row scratch blocks from the scheduler's pool (plan_exec.py), so the pool the
scheduler sees shrinks by exactly what they hold back. The executors' CUDA graphs (plan_exec.py) are captured here,
for every row count the batch can produce, before any clock starts.
"""

from __future__ import annotations

from sim.errors import UserError
from sim.model import load_model


def _rows(s) -> int:
    b = s.batching
    return b.batch_size if b.kind == "static" else b.max_batch


def _scratch_positions(s, setup, reqs) -> int:
    """Positions of one row's scratch KV (the diffusion window, or a block plus one KV block)."""
    strat = setup.strategy
    if s.strategy.kind == "diffusion":
        return max((r.prompt_tokens + strat.tokens_to_commit(r.prompt_tokens, r.output_tokens) for r in reqs),
                   default=16)
    return strat.B + s.batching.kv_block_tokens


def _scratch_blocks(s, setup, reqs) -> int:
    bt = s.batching.kv_block_tokens
    return _rows(s) * -(-_scratch_positions(s, setup, reqs) // bt)


def strategy_executor(s, setup, model, blocks: int, reqs, longest: int, checkpoint: bool = False,
                      need_blocks: int | None = None):
    """(executor, KV blocks left to the scheduler) for scenario `s` (strategy.kind != 'ar'). `need_blocks`: what
    the run's requests can hold at once, which the pool is cut to when the simulator's pool is larger (as the AR
    path does: the CUDA graphs and activations keep their room beside it)."""
    from runtime.block_diffusion import BlockDiffusionExecutor
    from runtime.diffusion import DiffusionExecutor
    from runtime.model import Transformer
    from runtime.speculative import SpeculativeExecutor

    spec, bt = s.strategy, s.batching.kv_block_tokens
    strat = setup.strategy
    if need_blocks is not None:
        blocks = min(blocks, need_blocks + (0 if spec.kind == "speculative" else _scratch_blocks(s, setup, reqs)))
    if spec.kind == "speculative":
        mode, alpha = ("greedy", None) if checkpoint else ("forced", spec.alpha)
        if isinstance(alpha, list):
            raise UserError("strategy.alpha: 'memwall run' forces one acceptance rate on random weights; give a "
                            "single alpha, not one per position")
        if spec.acceptance_trace and not checkpoint:
            raise UserError("strategy.acceptance_trace: 'memwall run' forces a constant alpha on random weights; "
                            "remove the trace or run with a checkpoint")
        draft = None
        if spec.draft != "self":
            draft = Transformer.random(load_model(spec.draft), seed=s.seed + 1, device=model.device,
                                       dtype=model.dtype, max_positions=model.max_positions)
        ex = SpeculativeExecutor(model, blocks, bt, draft=draft, draft_layers=spec.draft_layers if draft is None
                                 else None, acceptance_mode=mode, alpha=alpha, seed=s.seed,
                                 max_context=min(longest + strat.k + 16, model.max_positions))
        ex.capture()
        return ex, blocks
    rows = _rows(s)
    positions = _scratch_positions(s, setup, reqs)
    scratch = _scratch_blocks(s, setup, reqs)
    if scratch >= blocks:
        raise UserError(f"batching: {rows} rows of {positions} scratch positions leave no KV blocks; "
                        f"lower the batch size or the response length")
    blocks -= scratch
    # (static batches pad prompts to the longest one: a row may reach the longest prompt plus its own output)
    reach = max((r.prompt_tokens for r in reqs), default=0) + max((r.output_tokens for r in reqs), default=16)
    # Graphs stage a block table per row of every pass, as wide as the longest sequence the run can have: sized to
    # the whole KV pool (the default) it was 26,600 columns, 19 ms of staging per 512-row block step on the H100
    # (benchmarks/host_phases.py).
    if spec.kind == "diffusion":
        ex = DiffusionExecutor(model, strat, blocks, bt, rows, positions, seed=s.seed,
                               max_context=min(max(positions, reach) + bt, model.max_positions))
    else:
        ex = BlockDiffusionExecutor(model, strat, blocks, bt, rows, seed=s.seed,
                                    max_context=min(reach + strat.B + bt, model.max_positions))
    ex.capture()
    return ex, blocks
