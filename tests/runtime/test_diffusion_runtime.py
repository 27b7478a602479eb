"""Masked diffusion (runtime/diffusion.py) and block diffusion (runtime/block_diffusion.py) on the runtime, CPU.

Diffusion: an even schedule commits exactly the scheduled count each step, a committed token never changes, a
threshold >= 1 commits one token per step, every cache mode and window finishes every request. Block diffusion:
cached logits equal a full recompute under the block-causal mask; block_size 1 is AR greedy decoding."""

import numpy as np
import pytest

from rt_helpers import random_tokens, tiny_spec
from strat_helpers import drive
from runtime.block_diffusion import BlockDiffusionExecutor, block_causal_limits
from runtime.diffusion import DiffusionExecutor
from runtime.forward import SeqInput, greedy_generate
from runtime.model import Transformer
from sim.scenario import BlockDiffusion as BlockSpec, Diffusion as DiffusionSpec
from sim.strategies.block_diffusion import BlockDiffusion
from sim.strategies.diffusion import Diffusion


@pytest.fixture(scope="module")
def bidir():
    return Transformer.random(tiny_spec(attention="bidirectional"), seed=3)


def watched(ex):
    """Wrap execute_plan to check, after every step, that no committed response token changed."""
    seen: dict[int, list[int]] = {}
    inner = ex.execute_plan

    def run(plan, sched):
        out = inner(plan, sched)
        for r, resp in ex.resp.items():
            before = seen.get(r, [])
            assert all(b == ex.mask or b == a for b, a in zip(before, resp)), "a committed token changed"
            seen[r] = list(resp)
        return out

    ex.execute_plan = run
    return ex


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
@pytest.mark.parametrize("window", ["full", "dynamic"])
def test_even_schedule_commits_the_scheduled_count(bidir, cache, window):
    strat = Diffusion(DiffusionSpec(gen_length=12, steps=6, cache=cache, cache_block=4, window=window, lookahead=4))
    ex = watched(DiffusionExecutor(bidir, strat, 64, 4, max_rows=4, max_positions=64))
    prompts = [random_tokens(6, s) for s in range(3)]
    got, served = drive(ex, strat, prompts, [12, 12, 12])
    assert all(len(g) == 12 and ex.mask not in g for g in got)
    # 12 tokens over 6 steps: 2 per step (per cache block of 4: 2 steps of 2), for each of the 3 rows
    assert ex.committed_per_step == [2] * 18
    assert served.committed_per_pass == [6] * 6


def test_uneven_schedule_puts_the_remainder_first(bidir):
    strat = Diffusion(DiffusionSpec(gen_length=10, steps=4))
    ex = DiffusionExecutor(bidir, strat, 64, 4, max_rows=1, max_positions=64)
    drive(ex, strat, [random_tokens(5, 1)], [10], batch=1)
    assert ex.committed_per_step == [3, 3, 2, 2]  # LLaDA's even split, remainder to the earliest steps


@pytest.mark.parametrize("threshold", [1.0, 1.5])
def test_threshold_at_least_one_commits_one_token_per_step(bidir, threshold):
    strat = Diffusion(DiffusionSpec(gen_length=8, threshold=threshold, cache="dual", cache_block=4))
    ex = watched(DiffusionExecutor(bidir, strat, 64, 4, max_rows=2, max_positions=64))
    drive(ex, strat, [random_tokens(5, 1), random_tokens(5, 2)], [8, 8])
    assert ex.committed_per_step == [1] * 16


def test_low_threshold_commits_several_per_step(bidir):
    strat = Diffusion(DiffusionSpec(gen_length=8, threshold=1e-9))
    ex = DiffusionExecutor(bidir, strat, 64, 4, max_rows=1, max_positions=64)
    drive(ex, strat, [random_tokens(5, 1)], [8], batch=1)
    assert ex.committed_per_step == [8]  # every masked position clears a threshold of ~0: one step


@pytest.mark.parametrize("batching", ["static", "continuous"])
def test_block_size_one_is_greedy_ar(tiny, batching):
    strat = BlockDiffusion(BlockSpec(block_size=1, steps_per_block=1))
    ex = BlockDiffusionExecutor(tiny, strat, 64, 4, max_rows=4)
    lengths = [6, 6, 6] if batching == "static" else [4, 8, 6]
    prompts = [random_tokens(n, 10 + i) for i, n in enumerate(lengths)]
    got, _ = drive(ex, strat, prompts, [9, 5, 7], batching, kv_extra=1)
    assert got == [greedy_generate(tiny, p, n) for p, n in zip(prompts, [9, 5, 7])]


@pytest.mark.parametrize("fuse", [True, False])
def test_block_kv_cache_equals_block_causal_recompute(tiny, fuse):
    B = 4
    strat = BlockDiffusion(BlockSpec(block_size=B, steps_per_block=2, fuse_kv_write=fuse))
    ex = watched(BlockDiffusionExecutor(tiny, strat, 64, 4, max_rows=4, record=True))
    prompts = [random_tokens(5, 20), random_tokens(9, 21)]
    got, served = drive(ex, strat, prompts, [10, 7], "continuous", kv_extra=B)
    assert [len(g) for g in got] == [10, 7] and all(ex.mask not in g for g in got)
    assert len(ex.trace) == 2 * 3 + 2 * 2  # 3 and 2 blocks, 2 steps each
    for seq, P, logits in ex.trace:
        ref = tiny.run(tiny.contiguous_cache(1, len(seq)),
                       [SeqInput(seq, 0, [0], len(seq), attend=block_causal_limits(range(len(seq)), P, B))])
        np.testing.assert_allclose(logits.numpy(), ref[-B:].numpy(), atol=1e-4, rtol=1e-4)
    assert served.wasted_positions > 0  # steps compute B positions and commit fewer


def test_block_threshold_one_commits_one_per_step(tiny):
    strat = BlockDiffusion(BlockSpec(block_size=4, threshold=1.0))
    ex = BlockDiffusionExecutor(tiny, strat, 64, 4, max_rows=2)
    drive(ex, strat, [random_tokens(5, 1)], [6], batch=1, kv_extra=4)
    assert ex.committed_per_step == [1] * 6
