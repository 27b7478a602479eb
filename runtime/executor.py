"""The GPU (or CPU) executor: runs a scheduler's plan as one forward pass and returns its time and new tokens.

The scheduler (sim/scheduler.py) owns requests, KV blocks and the (q, c, o) shape of every pass; the executor owns
token ids and the real pass. A plan is a list of items with attributes `req_id, q, start, o, block_ids`: run
tokens[start:start+q] of that request at positions start.., attending to positions 0..start+q-1 whose K/V live in
block_ids (one id per `block_tokens` positions). Items with o == 1 get one greedy token, appended to the request.
A preempted request that is recomputed simply comes back with start = 0 and new block ids: its tokens stay here.

Decode-only plans (every q == 1, o == 1) replay a CUDA graph of their batch-size bucket when graphs are on, and
so does any other pass of at most sim.runtime_layout.GRAPH_MAX_ROWS tokens (prompts, chunks mixed with decodes: each token a
paged-attention row, forward.build_meta); larger passes run the same `forward` eagerly. Times are CUDA-event
times of the device work (inputs copied, pass, sampling) on a GPU and perf_counter times on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence


from runtime.requests import RequestTokens
from runtime.timing import device_seconds

from runtime.forward import SeqInput, build_meta, forward
from runtime.graphs import ROW_BUCKETS, DecodeGraphs


class PlanItem(Protocol):
    req_id: int
    q: int
    start: int
    o: int
    block_ids: Sequence[int]


@dataclass
class PlanRow:
    """A concrete PlanItem, for callers whose plan comes as arrays (sim.scheduler.Plan): see `plan_rows`."""

    req_id: int
    q: int
    start: int
    o: int
    block_ids: list[int] = field(default_factory=list)


def plan_rows(req_ids, q, start, o, tables: dict[int, list[int]]) -> list[PlanRow]:
    """Rows of a pass from parallel arrays (ids, new tokens, cached positions, logit rows) and the block tables of
    a block manager (`sim.kv_blocks.KVBlockManager.tables`: request id -> block ids)."""
    return [PlanRow(int(r), int(a), int(b), int(c), list(tables[int(r)])) for r, a, b, c in zip(req_ids, q, start, o)]


class Executor(RequestTokens):
    """Runs plans on `model` with `cache` (both from runtime.model). `use_graphs` (default: on CUDA) captures
    decode graphs for sequences up to `max_context` positions."""

    def __init__(self, model, cache, use_graphs: bool | None = None, max_context: int | None = None,
                 buckets: Sequence[int] = ROW_BUCKETS):
        self.model, self.cache = model, cache
        RequestTokens.__init__(self)
        self.on_cuda = cache.k.is_cuda
        graphs = self.on_cuda if use_graphs is None else use_graphs
        if graphs and model.spec.is_moe:
            graphs = False  # MoE routing picks rows with nonzero(), which a graph cannot capture
        self.graphs = None
        if graphs:
            max_context = max_context or min(model.max_positions, cache.num_blocks * cache.block_tokens)
            self.graphs = DecodeGraphs(model, cache, max_context, buckets, capture=False)

    # -- passes ----------------------------------------------------------------------------------------------
    def execute(self, plan: Sequence[PlanItem]) -> tuple[float, dict[int, int]]:
        """Run one pass; returns (duration_s, {req_id: new token} for the items with o == 1)."""
        for it in plan:
            n = len(self.tokens[it.req_id])
            if it.q <= 0 or it.start + it.q > n or it.o not in (0, 1):
                raise ValueError(f"plan item {it.req_id}: q={it.q}, start={it.start}, o={it.o} "
                                 f"with {n} tokens known (need 0 < q, start + q <= tokens, o in 0/1)")
            if it.block_ids and not 0 <= min(it.block_ids) <= max(it.block_ids) < self.cache.num_blocks:
                # the Triton kernels would write outside the pool without complaint
                raise ValueError(f"plan item {it.req_id}: block ids must lie in 0..{self.cache.num_blocks - 1}")
        decode = self.graphs is not None and all(it.q == 1 and it.o == 1 for it in plan)
        if decode and self.graphs.bucket_for(len(plan)) is not None:
            return self._graph_pass(plan)
        return self._eager_pass(plan)  # (mixed passes of few tokens replay a graph of paged rows, see there)

    def _timed(self, fn):
        return device_seconds(self.on_cuda, fn)

    def _eager_pass(self, plan) -> tuple[float, dict[int, int]]:
        seqs = [SeqInput(self.tokens[it.req_id][it.start:it.start + it.q], it.start, it.block_ids, it.o)
                for it in plan]
        staged = self.graphs.load_seqs(seqs) if self.graphs is not None else None
        if staged is not None:  # e.g. decodes plus a small prefill chunk: paged rows, forward.build_meta
            duration_s, next_tokens = self._timed(lambda: self.graphs.replay_logits(*staged).argmax(dim=-1))
            return duration_s, self._commit([it for it in plan if it.o == 1], next_tokens.tolist())
        meta = build_meta(seqs, self.cache, self.model.device, self.model.max_positions)

        def step():
            logits = forward(self.model, self.cache, meta)
            return logits.argmax(dim=-1)

        duration_s, next_tokens = self._timed(step)
        return duration_s, self._commit([it for it in plan if it.o == 1], next_tokens.tolist())

    def _graph_pass(self, plan) -> tuple[float, dict[int, int]]:
        tokens = [self.tokens[it.req_id][it.start] for it in plan]
        positions = [it.start for it in plan]
        tables = [list(it.block_ids) for it in plan]
        b = self.graphs.load(tokens, positions, tables)
        duration_s, (_, next_tokens) = self._timed(lambda: self.graphs.replay(b, len(plan)))
        return duration_s, self._commit(plan, next_tokens.tolist())

    def _commit(self, items, next_tokens: list[int]) -> dict[int, int]:
        new = {}
        for it, tok in zip(items, next_tokens):
            if it.start + it.q == len(self.tokens[it.req_id]):  # only a pass at the sequence's end extends it
                self.tokens[it.req_id].append(tok)
            new[it.req_id] = tok
        return new
