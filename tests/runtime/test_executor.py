"""The executor under static and continuous batching: any arrival order, chunked prefill, preemption with
recompute, all give the one-at-a-time greedy tokens, token for token (DESIGN §8)."""

import random

import pytest

from rt_helpers import Item
from runtime.executor import Executor
from runtime.forward import greedy_generate

PROMPTS = {0: 5, 1: 13, 2: 1, 3: 21, 4: 8}  # req_id -> prompt length
NEW_TOKENS = {0: 6, 1: 3, 2: 9, 3: 4, 4: 7}


def one_at_a_time(model) -> dict[int, list[int]]:
    ex = Executor(model, model.paged_cache(1, 4))  # only for its seeded prompts
    out = {}
    for r, n in PROMPTS.items():
        ex.add_request(r, n, seed=100 + r)
        out[r] = greedy_generate(model, ex.tokens[r], NEW_TOKENS[r])
    return out


def continuous(model, order, budget: int, max_batch: int, preempt: dict[int, int], block_tokens: int = 4):
    """A small iteration-level scheduler (Orca/vLLM style) driving the executor: decodes first, then prompt chunks
    within `budget` tokens per pass; preempt = {iteration: req_id} frees that request's blocks and requeues it,
    so it is recomputed from position 0. Block ids come from a shuffled free list."""
    cache = model.paged_cache(num_blocks=40, block_tokens=block_tokens)
    ex = Executor(model, cache)
    free = list(range(40))
    random.Random(0).shuffle(free)
    blocks = {r: [] for r in PROMPTS}
    done = {r: 0 for r in PROMPTS}  # positions whose KV is in the cache
    waiting, running, finished = list(order), [], {}
    for r in order:
        ex.add_request(r, PROMPTS[r], seed=100 + r)
    it = 0
    while waiting or running:
        while waiting and len(running) < max_batch:
            running.append(waiting.pop(0))
        plan, left = [], budget
        for r in sorted(running, key=lambda r: len(ex.tokens[r]) - done[r] > 1):  # decodes (1 token left) first
            q = min(len(ex.tokens[r]) - done[r], left)
            if q == 0:
                continue
            while len(blocks[r]) * block_tokens < done[r] + q:
                blocks[r].append(free.pop())
            plan.append(Item(r, q, done[r], int(done[r] + q == len(ex.tokens[r])), list(blocks[r])))
            left -= q
        duration_s, new = ex.execute(plan)
        assert duration_s > 0 and set(new) == {p.req_id for p in plan if p.o}
        for p in plan:
            done[p.req_id] += p.q
        for r in list(running):
            if len(ex.output(r, PROMPTS[r])) == NEW_TOKENS[r]:
                finished[r] = ex.output(r, PROMPTS[r])
                running.remove(r)
                free += blocks[r]
                ex.free(r)
        if it in preempt and preempt[it] in running:
            r = preempt[it]
            running.remove(r)
            free += blocks[r]
            blocks[r], done[r] = [], 0
            waiting.insert(0, r)
        it += 1
    return finished


@pytest.fixture(scope="module")
def reference(tiny):
    return one_at_a_time(tiny)


@pytest.mark.parametrize("order,budget,max_batch,preempt", [
    ([0, 1, 2, 3, 4], 1000, 5, {}),  # static-like: everything admitted at once, whole prompts
    ([3, 0, 4, 2, 1], 6, 3, {}),  # chunked prefill under a 6-token budget, 3 running at most
    ([4, 2, 1, 0, 3], 7, 4, {3: 4, 6: 1}),  # preemption + recompute (one of them mid-prefill)
    ([1, 3, 0, 2, 4], 1, 2, {}),  # one token per pass: prefill entirely token by token
])
def test_continuous_batching_equals_one_at_a_time(tiny, reference, order, budget, max_batch, preempt):
    assert continuous(tiny, order, budget, max_batch, preempt) == reference


def test_plan_item_past_known_tokens_is_refused(tiny):
    ex = Executor(tiny, tiny.paged_cache(4, 4))
    ex.add_request(7, 3, seed=0)
    with pytest.raises(ValueError, match="plan item 7"):
        ex.execute([Item(7, 4, 0, 1, [0])])


def test_block_id_outside_the_pool_is_refused(tiny):
    ex = Executor(tiny, tiny.paged_cache(4, 4))
    ex.add_request(7, 3, seed=0)
    with pytest.raises(ValueError, match=r"block ids must lie in 0..3"):
        ex.execute([Item(7, 3, 0, 1, [4])])


def test_prompt_tokens_are_seeded(tiny):
    a, b = Executor(tiny, tiny.paged_cache(1, 4)), Executor(tiny, tiny.paged_cache(1, 4))
    a.add_request(0, 10, seed=5)
    b.add_request(0, 10, seed=5)
    b.add_request(1, 10, seed=6)
    assert a.tokens[0] == b.tokens[0] != b.tokens[1]
    assert all(0 <= t < 256 for t in a.tokens[0])
