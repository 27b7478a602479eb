"""What the executors of the non-AR strategies share: token ids per request, block tables, timing, a pass log.

The scheduler (sim/scheduler.py) decides each iteration as a `Plan` and the executor runs it; unlike the AR
executor (executor.py), which returns one token per row, a strategy executor decides how many tokens each row
commits (accepted drafts, unmasked positions) and hands those counts back: `execute_plan(plan, sched) ->
(device seconds, commits per row)`, then `sched.update(plan, commits=...)`.

Every pass goes through `stage` (its host work: inputs into a graph's buffers, or an eager pass's metadata) and
is then run, by `run_pass` (timed, synchronized) or by an executor that issues several back to back (speculative
drafts, runtime.timing.PassTimer): passes of at most sim.runtime_layout.GRAPH_MAX_ROWS tokens replay a CUDA graph of their
paged-row count (graphs.py), the rest run eagerly.

Block tables come from the scheduler's block manager. Some strategies compute positions the scheduler does not
hold KV for: a diffusion step without cache recomputes everything (holds nothing), a block-diffusion step writes
its block's K/V before the block is finished (BD3-LM keeps it only once the block is done). Such positions go to
per-row scratch blocks past the scheduler's pool: every pass writes them before it reads them, so nothing stale is
ever read. Positions the scheduler rolled back (rejected drafts, shrunk tables) are simply overwritten later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from runtime.forward import build_meta, forward, token_limits
from runtime.requests import RequestTokens
from runtime.timing import device_seconds


def pass_shape(seqs, causal: bool, all_logits: bool) -> tuple[int, int, int, int, int]:
    """(tokens, logit rows, sequences, KV positions read, attended pairs) of a pass as it runs: the fields of
    sim.passes.PassShape, so that the cost model can price each strategy pass on its own. A graph replay computes
    logits for every row (all_logits)."""
    tokens = sum(len(s.token_ids) for s in seqs)
    kv = pairs = 0
    for s in seqs:
        q = len(s.token_ids)
        c = max(s.start + q, s.context or 0)
        kv += c
        pairs += sum(token_limits(s, q, c, causal))
    logits = tokens if all_logits else sum(s.num_logits for s in seqs)
    return tokens, logits, len(seqs), kv, pairs


@dataclass
class StagedPass:
    """A forward pass whose inputs are on the device. `token_ids` is the device view of its token ids: entries may
    be overwritten with tokens still on the device (the previous pass's output: speculative drafts chain without a
    host sync) before it runs. `logits()` runs it and returns the wanted rows' logits [O, V]; `greedy()` runs it
    and returns their argmax [O]."""

    tokens: int
    token_ids: torch.Tensor
    logits: Callable[[], torch.Tensor]
    greedy: Callable[[], torch.Tensor]


class PlanExecutor(RequestTokens):
    """Base of the strategy executors. `scratch_rows` rows of a pass may each use `scratch_positions` positions
    beyond their block table (see the module doc); `cache` has the scheduler's `num_blocks` blocks first."""

    def __init__(self, model, num_blocks: int, block_tokens: int, scratch_rows: int = 0, scratch_positions: int = 0,
                 use_graphs: bool | None = None, max_context: int | None = None):
        self.model = model
        self.pool_blocks = num_blocks
        self.block_tokens = block_tokens
        self.per_row = -(-scratch_positions // block_tokens) if scratch_rows else 0
        self.scratch_rows = scratch_rows
        self.cache = model.paged_cache(num_blocks + scratch_rows * self.per_row, block_tokens)
        self.on_cuda = self.cache.k.is_cuda
        RequestTokens.__init__(self)
        self.pass_log: list[tuple[str, int, float]] = []  # (role, query tokens, device seconds) of every pass
        self.pass_shapes: list[tuple[int, int, int, int, int]] = []  # the same passes' shapes, see pass_shape
        self.max_context = max_context or min(model.max_positions, self.cache.num_blocks * block_tokens)
        self.target_graphs = self.make_graphs(model, self.cache) if use_graphs is not False else None

    def make_graphs(self, model, cache):
        """CUDA graphs of `model`'s passes of paged rows (graphs.ROW_BUCKETS), captured on first use or by
        `capture`; None on the CPU and for MoE models (their routing cannot be captured)."""
        if not cache.k.is_cuda or model.spec.is_moe:
            return None
        from runtime.graphs import ROW_BUCKETS, DecodeGraphs

        return DecodeGraphs(model, cache, self.max_context, ROW_BUCKETS, capture=False)

    def capture(self) -> None:
        """Capture every graph bucket before the clock starts: capturing compiles the bucket's Triton variants and
        takes ~100 ms, which must not land in a served run. All of them, because prompts are paged-row passes too
        (a static batch of 4 prompts of 128 tokens is a 512-row pass)."""
        for graphs in self.all_graphs():
            for b in graphs.buckets:
                if b not in graphs.graphs:
                    graphs.capture(b)
        if self.on_cuda:
            torch.cuda.synchronize()

    def all_graphs(self) -> list:
        return [g for g in (self.target_graphs,) if g is not None]

    def stage(self, seqs, model=None, cache=None, graphs=None) -> "StagedPass":
        """Host work of one forward pass over `seqs` (forward.SeqInput) of `model` (default: the target) and its
        cache: its inputs copied into a CUDA graph's buffers when it fits one, an eager pass's metadata otherwise.
        Logs the pass's shape; the caller runs it (and logs its time)."""
        model, cache = model or self.model, cache or self.cache
        graphs = self.target_graphs if graphs is None and model is self.model else graphs
        staged = graphs.load_seqs(seqs) if graphs is not None else None
        self.pass_shapes.append(pass_shape(seqs, model.spec.attention == "causal", all_logits=staged is not None))
        tokens = sum(len(s.token_ids) for s in seqs)
        if staged is not None:
            b, n, index = staged
            return StagedPass(tokens, graphs.token_inputs(b, n), lambda: graphs.replay_logits(b, n, index),
                              lambda: graphs.replay_tokens(b, n, index))
        meta = build_meta(seqs, cache, model.device, model.max_positions)
        return StagedPass(tokens, meta.tokens, lambda: forward(model, cache, meta),
                          lambda: forward(model, cache, meta).argmax(dim=-1))

    def run_pass(self, role: str, seqs, model=None, cache=None, graphs=None, post=None):
        """One forward pass over `seqs` (see `stage`): replayed from a CUDA graph when it fits one, eager otherwise.
        Logs and returns (device seconds, logits [sum o, V]), or (device seconds, post(logits)) when `post` is
        given: device work on the logits that belongs to the pass (picking tokens), timed with it."""
        p = self.stage(seqs, model, cache, graphs)
        return self.timed(role, p.tokens, p.logits if post is None else lambda: post(p.logits()))

    # -- tables and timing -----------------------------------------------------------------------------------------
    def table(self, kv, req_id: int, positions: int, row: int = 0) -> list[int]:
        """Block ids covering positions 0..positions-1 of a request: its own blocks, then row `row`'s scratch."""
        own = list(kv.tables.get(int(req_id), ()))
        need = -(-positions // self.block_tokens) - len(own)
        if need <= 0:
            return own
        if row >= self.scratch_rows or need > self.per_row:
            raise ValueError(f"request {req_id} needs {need} scratch blocks in pass row {row}; the executor has "
                             f"{self.scratch_rows} rows of {self.per_row}")
        first = self.pool_blocks + row * self.per_row
        return own + list(range(first, first + need))

    def timed(self, role: str, tokens: int, fn):
        """Run fn() and log its device time (CUDA events on a GPU, perf_counter on the CPU)."""
        seconds, out = device_seconds(self.on_cuda, fn)
        self.pass_log.append((role, tokens, seconds))
        return seconds, out

    def execute_plan(self, plan, sched):
        """Run one iteration of `plan` (sim.scheduler.Plan); returns (device seconds, commits per plan row)."""
        raise NotImplementedError

    def summary(self) -> dict:
        """Strategy numbers for Result.extra (acceptance, per-role pass times)."""
        out: dict = {}
        for role in sorted({r for r, _, _ in self.pass_log}):
            times = [t for r, _, t in self.pass_log if r == role]
            out[f"{role}_passes"] = len(times)
            out[f"{role}_pass_s_median"] = float(sorted(times)[len(times) // 2])
        return out
