"""The batch scheduler shared by the simulator and the GPU runtime: plan -> execute -> update.

One token-accounting idea for every phase (as in vLLM v1): each running sequence has `known` tokens (prompt plus
output committed so far) and `computed` tokens whose KV is cached; a pass computes some of the difference, and a
sequence whose pass reaches its last known token gets new tokens committed. Prefill, chunked prefill, decode and
recompute after preemption are all that one rule.

`plan(now)` decides the next pass (which sequences, how many tokens each, KV blocks grown, preemptions);
the executor (SimPy + cost model, or the GPU) runs it; `update(plan, commits, now)` commits tokens and retires
finished sequences. Neither simpy nor torch is imported here. Running sequences live in numpy arrays (structure of
arrays), so one iteration costs a few vector operations however large the batch: the simulator runs hundreds of
thousands of iterations.

Policies (DESIGN §4):
- static: when idle, take up to `batch_size` waiting requests; pad every prompt to the longest; run until the
  longest output is done; finished rows keep their slot (and cost) until then. KV for the padded batch is reserved
  up front.
- continuous: every iteration decodes all running sequences first, then fills the token budget with prefill
  (whole prompts, or chunks when `chunked_prefill`); a request is admitted when its blocks fit. When a decode
  needs a block and none is free, the latest-arrived running sequence is preempted (its KV freed, recomputed
  later: it re-queues at the front with prompt + generated tokens to prefill).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from sim.kv_blocks import KVBlockManager, blocks_for
from sim.passes import PassShape
from sim.workload import Request


@dataclass(slots=True)
class Plan:
    """One pass: rows of the running arrays, tokens each computes, and what was decided to make room."""

    rows: np.ndarray  # indices into the running arrays
    req_ids: np.ndarray  # request id of each row
    q: np.ndarray  # new tokens each row computes
    start: np.ndarray  # position of each row's first new token (tokens already cached)
    o: np.ndarray  # logit rows each row needs (1 where the pass reaches its last known token)
    shape: PassShape
    preempted: list[int] = field(default_factory=list)  # request ids whose KV was freed
    admitted: list[int] = field(default_factory=list)  # request ids that started this pass
    padded: bool = False  # static batching: rows past their own end still compute


@dataclass(slots=True)
class Update:
    """What executed passes changed: requests that produced their first token (in the first pass), those that
    finished (with the 1-based index of the pass that finished them), and tokens committed by each pass."""

    first_token: list[int]
    finished: list[tuple[int, int]]
    committed: np.ndarray  # tokens committed by each of the passes applied

    @property
    def committed_tokens(self) -> int:
        return int(self.committed.sum())


class _Running:
    """Structure of arrays for running sequences; rows are compacted on removal (swap with the last)."""

    FIELDS = ("rid", "prompt", "target", "known", "computed", "held", "arrival_order", "pad_to")

    def __init__(self, capacity: int = 64):
        self.n = 0
        for f in self.FIELDS:
            setattr(self, f, np.zeros(capacity, dtype=np.int64))

    def add(self, rid: int, prompt: int, target: int, known: int, order: int, pad_to: int = 0) -> int:
        if self.n == len(self.rid):
            for f in self.FIELDS:
                old = getattr(self, f)
                new = np.zeros(2 * len(old), dtype=np.int64)
                new[: self.n] = old[: self.n]
                setattr(self, f, new)
        i = self.n
        self.rid[i], self.prompt[i], self.target[i] = rid, prompt, target
        self.known[i], self.computed[i], self.held[i] = known, 0, 0
        self.arrival_order[i], self.pad_to[i] = order, pad_to
        self.n += 1
        return i

    def remove(self, rows: np.ndarray) -> None:
        """Remove rows (any order) by moving the last live rows into their places."""
        for i in sorted(rows.tolist(), reverse=True):
            last = self.n - 1
            if i != last:
                for f in self.FIELDS:
                    arr = getattr(self, f)
                    arr[i] = arr[last]
            self.n -= 1


class Scheduler:
    """Decides every pass for one replica. Owns the waiting queue, the running arrays and the KV block manager."""

    def __init__(self, batching, kv: KVBlockManager, decode_q: int = 1):
        self.batching = batching
        self.kv = kv
        self.static = batching.kind == "static"
        self.decode_q = decode_q  # query tokens a decoding row computes (AR: 1)
        self.waiting: deque[tuple[Request, int]] = deque()  # (request, tokens generated before a preemption)
        self.run = _Running()
        self.requests: dict[int, Request] = {}
        self.rejected: list[int] = []
        self.preemptions = 0
        self._order = 0
        self._static_steps_left = 0
        self._aranged = np.arange(256, dtype=np.int64)

    # -- queue ------------------------------------------------------------------------------------------------------
    def add(self, req: Request) -> bool:
        """Queue a request; False (and counted as rejected) if its KV can never fit in this replica."""
        total = req.prompt_tokens + req.output_tokens
        if not self.kv.can_fit(total):
            self.rejected.append(req.id)
            return False
        self.requests[req.id] = req
        self.waiting.append((req, 0))
        return True

    @property
    def num_running(self) -> int:
        return self.run.n

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def idle(self) -> bool:
        return self.run.n == 0 and not self.waiting

    # -- plan -------------------------------------------------------------------------------------------------------
    def plan(self) -> Plan | None:
        """The next pass, or None when nothing can run now."""
        if self.static:
            return self._plan_static()
        return self._plan_continuous()

    def _admit(self, req: Request, generated: int, pad_to: int = 0) -> int:
        self._order += 1
        return self.run.add(req.id, req.prompt_tokens, req.output_tokens, req.prompt_tokens + generated,
                            self._order, pad_to)

    def _plan_continuous(self) -> Plan | None:
        b, r, kv = self.batching, self.run, self.kv
        bt, dq = kv.block_tokens, self.decode_q
        preempted: list[int] = []
        # 1. decodes first: rows whose cached KV is at most `decode_q` tokens behind their known tokens.
        #    Steady state (every row decoding, no block boundary crossed) costs a handful of vector operations.
        while True:
            n = r.n
            known, computed = r.known[:n], r.computed[:n]
            prefilling = (known - computed) > dq
            any_prefill = bool(prefilling.any())
            grow = known > r.held[:n] * bt  # decodes whose next token starts a new block
            if any_prefill:
                grow &= ~prefilling
            grow_rows = np.flatnonzero(grow)
            if len(grow_rows) == 0:
                break
            short = int(((known[grow_rows] + bt - 1) // bt - r.held[grow_rows]).sum())
            if short <= kv.free_blocks:
                for i in grow_rows.tolist():
                    self._grow(i, int(known[i]))
                break
            preempted.append(self._preempt_latest())
        if any_prefill:
            dec_rows = np.flatnonzero(~prefilling)
            dec_q = known[dec_rows] - computed[dec_rows]
        else:
            dec_rows = self._arange(n)
            dec_q = known - computed
        budget = b.max_tokens_per_iter - int(dec_q.sum())
        pre_rows: list[int] = []
        pre_q: list[int] = []
        # 2. running rows still prefilling (chunked prefill, or recompute after preemption), oldest first
        if any_prefill:
            idx = np.flatnonzero(prefilling)
            for i in idx[np.argsort(r.arrival_order[idx])].tolist():
                if budget <= 0:
                    break
                q = self._prefill_chunk(int(known[i] - computed[i]), budget, n > len(idx) or bool(pre_rows))
                if q == 0 or not self._grow(i, int(computed[i]) + q):
                    continue
                pre_rows.append(i)
                pre_q.append(q)
                budget -= q
        # 3. admit waiting requests, first come first served, while tokens, slots and blocks allow
        admitted: list[int] = []
        while self.waiting and budget > 0 and r.n < b.max_batch:
            req, generated = self.waiting[0]
            q = self._prefill_chunk(req.prompt_tokens + generated, budget, len(dec_rows) > 0 or bool(pre_rows))
            if q == 0 or kv.needed(req.id, q) > kv.free_blocks:
                break
            self.waiting.popleft()
            i = self._admit(req, generated)
            self._grow(i, q)
            pre_rows.append(i)
            pre_q.append(q)
            admitted.append(req.id)
            budget -= q
        if len(dec_rows) == 0 and not pre_rows:
            return None
        if pre_rows:
            rows = np.concatenate([dec_rows, np.asarray(pre_rows, dtype=np.int64)])
            q = np.concatenate([dec_q, np.asarray(pre_q, dtype=np.int64)])
        else:
            rows, q = dec_rows, dec_q
        return self._make_plan(rows, q, preempted, admitted)

    def _arange(self, n: int) -> np.ndarray:
        if len(self._aranged) < n:
            self._aranged = np.arange(2 * n, dtype=np.int64)
        return self._aranged[:n]

    def _grow(self, row: int, tokens: int) -> bool:
        """Grow a running row's KV to `tokens` positions, keeping the `held` mirror of the block table in step."""
        held = self.kv.grow(int(self.run.rid[row]), tokens)
        if held < 0:
            return False
        self.run.held[row] = held
        return True

    def _prefill_chunk(self, remaining: int, budget: int, others: bool) -> int:
        if self.batching.chunked_prefill:
            return min(remaining, budget)
        # whole prompts only; a prompt larger than the budget may run alone rather than never
        return remaining if remaining <= budget or not others else 0

    def _preempt_latest(self) -> int:
        """Free the latest-arrived running sequence's KV and re-queue it at the front (recompute)."""
        r = self.run
        i = int(np.argmax(r.arrival_order[: r.n]))
        rid = int(r.rid[i])
        generated = int(r.known[i] - r.prompt[i])
        self.kv.free(rid)
        r.remove(np.array([i]))
        self.waiting.appendleft((self.requests[rid], generated))
        self.preemptions += 1
        return rid

    def _plan_static(self) -> Plan | None:
        r, kv = self.run, self.kv
        admitted: list[int] = []
        if r.n == 0:
            if not self.waiting:
                return None
            # form a batch: padded to its longest prompt and output, reserved up front
            batch: list[Request] = []
            while self.waiting and len(batch) < self.batching.batch_size:
                cand = batch + [self.waiting[0][0]]
                pad = max(x.prompt_tokens for x in cand) + max(x.output_tokens for x in cand)
                if len(cand) * blocks_for(pad, kv.block_tokens) > kv.free_blocks:
                    break
                batch.append(self.waiting.popleft()[0])
            if not batch:  # cannot happen after add()'s fit check, but never spin
                return None
            p_pad = max(x.prompt_tokens for x in batch)
            o_pad = max(x.output_tokens for x in batch)
            for req in batch:
                self._grow(self._admit(req, 0, pad_to=p_pad), p_pad + o_pad)
                admitted.append(req.id)
            self._static_steps_left = o_pad
            rows = np.arange(r.n, dtype=np.int64)
            return self._make_plan(rows, np.full(r.n, p_pad, dtype=np.int64), [], admitted, padded=True)
        rows = np.arange(r.n, dtype=np.int64)
        return self._make_plan(rows, np.ones(r.n, dtype=np.int64), [], admitted, padded=True)

    def _make_plan(self, rows: np.ndarray, q: np.ndarray, preempted: list[int], admitted: list[int],
                   padded: bool = False) -> Plan:
        r = self.run
        start = r.computed[rows]
        c = start + q
        o = np.ones_like(q) if padded else (c >= r.known[rows]).astype(np.int64)
        # causal pairs: q*(c-q) + q(q+1)/2 per row (sim/passes.attended_pairs), summed
        tokens = int(q.sum())
        c_sum = int(c.sum())
        pairs = c_sum if tokens == len(rows) else int((q * (c - q) + q * (q + 1) // 2).sum())
        shape = PassShape(tokens, int(o.sum()), len(rows), c_sum, pairs, tokens, "causal")
        return Plan(rows, r.rid[rows], q, start, o, shape, preempted, admitted, padded)

    # -- repeating a pure-decode plan ------------------------------------------------------------------------------
    def repeatable_steps(self, plan: Plan, limit: int) -> int:
        """How many times (1..limit) `plan` can run back to back with no scheduling decision changing: the same
        rows, each one token further along, until the first finish (which may end the last step), without
        running out of KV blocks, and without a waiting request becoming admissible. The simulator uses this to
        price a run of identical decode passes at once; the GPU runtime executes passes one by one (limit 1)."""
        if limit <= 1 or plan.admitted or plan.preempted:
            return 1
        r, n = self.run, self.run.n
        if plan.padded:  # static: the batch decodes until its longest request is done, whatever arrives
            return max(1, min(limit, self._static_steps_left))
        if len(plan.rows) != n or plan.shape.tokens != n or n == 0:
            return 1  # prefill in the pass, or rows left out
        known = r.known[:n]
        steps = min(limit, int((r.prompt[:n] + r.target[:n] - known).min()))
        if self.waiting and r.n < self.batching.max_batch:
            # a waiting request that could not be admitted now stays blocked (blocks only shrink, the budget and
            # the batch limit are fixed) until a finish, which ends the run anyway; otherwise stop here
            head, generated = self.waiting[0]
            q = self._prefill_chunk(head.prompt_tokens + generated, self.batching.max_tokens_per_iter - n, True)
            if q > 0 and self.kv.needed(head.id, q) <= self.kv.free_blocks:
                return 1
        bt, held = self.kv.block_tokens, r.held[:n]

        def extra_blocks(k: int) -> int:  # blocks needed beyond those held to run k steps (KV of known + k - 1)
            need = (known + k - 1 + bt - 1) // bt - held
            return int(need[need > 0].sum())

        if steps > 1 and extra_blocks(steps) > self.kv.free_blocks:
            lo, hi = 1, steps  # largest k with enough blocks
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if extra_blocks(mid) <= self.kv.free_blocks else (lo, mid - 1)
            steps = lo
        return max(1, steps)

    # -- update -----------------------------------------------------------------------------------------------------
    def update(self, plan: Plan, commits: np.ndarray | None = None, steps: int = 1) -> Update:
        """Apply `steps` executed repetitions of a pass: advance cached tokens, commit new tokens (AR: one per row
        that reached its end; `commits` overrides per row, single step only), retire finished sequences and free
        their blocks."""
        r = self.run
        rows = plan.rows
        if plan.padded:
            return self._update_static(plan, steps)
        if steps > 1:
            return self._update_repeated(plan, steps)
        r.computed[rows] += plan.q
        done = plan.o > 0
        n_new = done.astype(np.int64) if commits is None else np.where(done, commits, 0)
        before = r.known[rows]
        first = done & (before == r.prompt[rows])
        after = before + n_new
        r.known[rows] = after
        fin = done & (after >= r.prompt[rows] + r.target[rows])
        first_ids = plan.req_ids[first].tolist() if first.any() else []
        fin_ids: list[tuple[int, int]] = []
        if fin.any():
            fin_ids = [(rid, 1) for rid in plan.req_ids[fin].tolist()]
            for rid, _ in fin_ids:
                self.kv.free(rid)
            r.remove(rows[fin])
        return Update(first_ids, fin_ids, np.array([int(n_new.sum())]))

    def _update_repeated(self, plan: Plan, steps: int) -> Update:
        """`steps` pure-decode passes over all running rows (see repeatable_steps): grow blocks, advance by
        `steps` tokens, retire the rows that the last pass finished."""
        r, n, kv = self.run, self.run.n, self.kv
        bt = kv.block_tokens
        final_kv = r.known[:n] + steps - 1  # KV positions after the last pass
        for i in np.flatnonzero(final_kv > r.held[:n] * bt).tolist():
            self._grow(i, int(final_kv[i]))
        r.computed[:n] += steps
        r.known[:n] += steps
        fin = np.flatnonzero(r.known[:n] >= r.prompt[:n] + r.target[:n])
        fin_ids = [(rid, steps) for rid in r.rid[fin].tolist()]
        for rid, _ in fin_ids:
            kv.free(rid)
        if len(fin):
            r.remove(fin)
        return Update([], fin_ids, np.full(steps, n, dtype=np.int64))

    def _update_static(self, plan: Plan, steps: int) -> Update:
        r, n = self.run, self.run.n
        r.computed[:n] += plan.q if steps == 1 else steps
        # every row advances one token per pass; rows past their own output length are padding
        generated_before = r.known[:n] - r.prompt[:n]
        remaining = r.target[:n] - generated_before  # passes each row still needs
        first = (generated_before == 0) & (remaining > 0)
        advance = np.minimum(remaining, steps)
        r.known[:n] += advance
        ends = (remaining > 0) & (remaining <= steps)
        finished = [(rid, step) for rid, step in zip(r.rid[:n][ends].tolist(), remaining[ends].tolist())]
        # tokens committed by pass j (1-based): rows whose remaining count is at least j
        left = np.sort(remaining)
        committed = n - np.searchsorted(left, np.arange(1, steps + 1), side="left")
        self._static_steps_left -= steps
        if self._static_steps_left <= 0:  # the longest request is done: the whole batch leaves
            for rid in r.rid[:n].tolist():
                self.kv.free(rid)
            r.n = 0
        return Update(r.rid[:n][first].tolist() if n else [], finished, committed.astype(np.int64))
