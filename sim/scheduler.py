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
    """What an executed pass changed: requests that produced their first token, and those that finished."""

    first_token: list[int]
    finished: list[int]
    committed_tokens: int


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
        preempted: list[int] = []
        # 1. decodes first: rows whose cached KV is one step behind their known tokens
        while True:
            n = r.n
            behind = r.known[:n] - r.computed[:n]
            decoding = np.flatnonzero(behind <= self.decode_q)
            need_tokens = r.computed[decoding] + behind[decoding]
            short = -(-need_tokens // kv.block_tokens) - r.held[decoding]  # blocks each decode still needs
            if int(short[short > 0].sum()) <= kv.free_blocks or n == 0:
                break
            preempted.append(self._preempt_latest())
        for i in decoding[short > 0].tolist():
            self._grow(i, int(r.computed[i] + behind[i]))
        budget = b.max_tokens_per_iter - int(behind[decoding].sum())
        rows = decoding.tolist()
        qs = behind[decoding].tolist()
        # 2. running rows still prefilling (chunked prefill, or recompute after preemption), oldest first
        prefilling = np.flatnonzero(behind > self.decode_q)
        for i in prefilling[np.argsort(r.arrival_order[prefilling])].tolist():
            if budget <= 0:
                break
            q = self._prefill_chunk(int(r.known[i] - r.computed[i]), budget, bool(rows))
            if q == 0 or not self._grow(i, int(r.computed[i]) + q):
                continue
            rows.append(i)
            qs.append(q)
            budget -= q
        # 3. admit waiting requests, first come first served, while tokens, slots and blocks allow
        admitted: list[int] = []
        while self.waiting and budget > 0 and r.n < b.max_batch:
            req, generated = self.waiting[0]
            known = req.prompt_tokens + generated
            q = self._prefill_chunk(known, budget, bool(rows))
            if q == 0 or kv.needed(req.id, q) > kv.free_blocks:
                break
            self.waiting.popleft()
            i = self._admit(req, generated)
            self._grow(i, q)
            rows.append(i)
            qs.append(q)
            admitted.append(req.id)
            budget -= q
        if not rows:
            return None
        return self._make_plan(np.asarray(rows, dtype=np.int64), np.asarray(qs, dtype=np.int64), preempted, admitted)

    def _grow(self, row: int, tokens: int) -> bool:
        """Grow a running row's KV to `tokens` positions, keeping the `held` mirror of the block table in step."""
        rid = int(self.run.rid[row])
        ok = self.kv.grow(rid, tokens)
        self.run.held[row] = self.kv.held(rid)
        return ok

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
        pairs = int((q * (c - q) + q * (q + 1) // 2).sum())
        tokens = int(q.sum())
        shape = PassShape(tokens, int(o.sum()), len(rows), int(c.sum()), pairs, tokens, "causal")
        return Plan(rows, r.rid[rows].copy(), q, start, o, shape, preempted, admitted, padded)

    # -- update -----------------------------------------------------------------------------------------------------
    def update(self, plan: Plan, commits: np.ndarray | None = None) -> Update:
        """Apply an executed pass: advance cached tokens, commit new tokens (AR: one per row that reached its end;
        `commits` overrides per row), retire finished sequences and free their blocks."""
        r = self.run
        rows = plan.rows
        r.computed[rows] += plan.q
        if plan.padded:
            return self._update_static(plan)
        done = plan.o > 0
        n_new = np.where(done, 1 if commits is None else commits, 0)
        first = done & (r.known[rows] == r.prompt[rows])
        r.known[rows] += n_new
        generated = r.known[rows] - r.prompt[rows]
        fin = done & (generated >= r.target[rows])
        first_ids = plan.req_ids[first].tolist()
        fin_rows = rows[fin]
        fin_ids = plan.req_ids[fin].tolist()
        for rid in fin_ids:
            self.kv.free(rid)
        if len(fin_rows):
            r.remove(fin_rows)
        return Update(first_ids, fin_ids, int(n_new.sum()))

    def _update_static(self, plan: Plan) -> Update:
        r = self.run
        n = r.n
        # every row advances one token per step; rows past their own output length are padding
        generated_before = r.known[:n] - r.prompt[:n]
        active = generated_before < r.target[:n]
        first = active & (generated_before == 0)
        r.known[:n] += active
        generated = r.known[:n] - r.prompt[:n]
        just_done = active & (generated >= r.target[:n])
        self._static_steps_left -= 1
        update = Update(r.rid[:n][first].tolist(), r.rid[:n][just_done].tolist(), int(active.sum()))
        if self._static_steps_left <= 0:  # the longest request is done: the whole batch leaves
            for rid in r.rid[:n].tolist():
                self.kv.free(rid)
            r.n = 0
        return update
