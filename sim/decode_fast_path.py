"""The scheduler's fast path for autoregressive decoding (a mixin of `sim.scheduler.Scheduler`).

Most iterations of an AR serving run are alike: every running sequence decodes one token, nothing is admitted and
nothing finishes. These methods plan, repeat and apply such iterations with a handful of vector operations, and
tell the engine how many of them can run back to back before any scheduling decision could change
(`repeatable_steps`), so the simulator prices a run of passes at once. They make exactly the decisions the general
path (`Scheduler._plan` / `Scheduler.update`) would make; tests check that pass-by-pass and repeated pricing agree.
"""

from __future__ import annotations

import numpy as np

from sim.passes import NO_SPANS, PassShape
from sim.plan import Plan, Update, _Ones


class DecodeFastPath:
    """Methods over the Scheduler's state (run, kv, waiting, batching, strategy); no state of their own."""

    def _plan_decode(self) -> Plan | None:
        """Fast path for the common iteration: AR, every running row decoding (q = 1), nothing to admit. Returns
        None when the general path is needed (a row behind, a block shortage, a request that may be admitted)."""
        r, kv = self.run, self.kv
        n = r.n
        if n == 0:
            return None
        known = r.P[:n] + r.m[:n]
        if self._caught_up is None:  # not known since the last general update: look
            self._caught_up = bool(np.array_equal(known - 1, r.computed[:n]))
        if not self._caught_up:
            return None
        bt = kv.block_tokens
        grow = np.flatnonzero(known > r.held[:n] * bt)
        if len(grow):
            need = (known[grow] + bt - 1) // bt - r.held[grow]
            if int(need.sum()) > kv.free_blocks:
                return None
            self._grow_rows(grow, need)
        if self.waiting and n < self.batching.max_batch:  # decodes first, then whatever the budget admits
            rows: list[int] = []
            qs: list[int] = []
            catches: list[int] = []
            stepping: list[bool] = []
            admitted: list[int] = []
            self._admit_waiting(self.batching.max_tokens_per_iter - n, True, rows, qs, catches, stepping, admitted)
            if rows:
                return self._make_plan(self._arange(n), _Ones(self._ones_of(n)), rows, qs, catches, stepping, [],
                                       admitted)
        if len(self._ones) < n:
            self._ones = np.ones(2 * n, dtype=np.int64)
            self._zeros = np.zeros(2 * n, dtype=np.int64)
            self._trues = np.ones(2 * n, dtype=bool)
        ones = self._ones[:n]
        c_sum = int(known.sum())
        shape = PassShape(n, n, n, c_sum, c_sum, n, "causal", NO_SPANS)
        return Plan(self._arange(n), r.rid[:n].copy(), ones, known - 1, ones, self._zeros[:n], self._trues[:n],
                    shape, [("target", shape)])

    # -- repeating a plan ---------------------------------------------------------------------------------------------
    def repeatable_steps(self, plan: Plan, limit: int) -> int:
        """How many times (1..limit) `plan` can run back to back with no scheduling decision changing: the same
        rows, each one token further along, until the first finish (continuous: which may end the last step;
        static: the batch runs to its end), without running out of KV blocks, and without a waiting request
        becoming admissible. Only for strategies whose steps are identical but for context length (AR). The
        simulator uses this to price runs of decode passes at once; the GPU runtime executes passes one by one."""
        r, n = self.run, self.run.n
        if (limit <= 1 or not self.strategy.repeatable or plan.admitted or plan.preempted or n == 0
                or len(plan.rows) != n or plan.shape.tokens != n or plan.catchup.any()):
            return 1
        left = r.G[:n] - r.m[:n]
        if self.static:
            return max(1, min(limit, int(left.max())))
        steps = min(limit, int(left.min()))
        if self.waiting and r.n < self.batching.max_batch:
            # a waiting request that could not be admitted now stays blocked (blocks only shrink, the budget and
            # the batch limit are fixed) until a finish, which ends the run anyway
            head, m0 = self.waiting[0]
            P = head.prompt_tokens
            need = int(self.strategy.kv_ready(np.array([P]), np.array([m0]))[0]) + 1
            fits_budget = need <= self.batching.max_tokens_per_iter - n or self.batching.chunked_prefill
            if fits_budget and self.kv.needed(head.id, min(need, self.batching.max_tokens_per_iter)) <= \
                    self.kv.free_blocks:
                return 1
        bt, held, known = self.kv.block_tokens, r.held[:n], r.P[:n] + r.m[:n]

        def extra_blocks(k: int) -> int:  # blocks beyond those held to run k steps (KV of known + k - 1)
            need = (known + k - 1 + bt - 1) // bt - held
            return int(need[need > 0].sum())

        if steps > 1 and extra_blocks(steps) > self.kv.free_blocks:
            lo, hi = 1, steps  # largest k with enough blocks
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if extra_blocks(mid) <= self.kv.free_blocks else (lo, mid - 1)
            steps = lo
        return max(1, steps)

    def _update_ar(self, plan: Plan) -> Update:
        """AR under continuous batching: rows that step commit one token each (what the general path computes,
        with fewer vector operations)."""
        r = self.run
        rows = plan.rows
        # afterwards every row is caught up if every running row took a step in this pass
        self._caught_up = len(rows) == r.n and bool(plan.steps.all())
        r.computed[rows] += plan.catchup
        s = rows[plan.steps]
        m_old = r.m[s]
        r.computed[s] = r.P[s] + m_old  # every committed token but the newest is cached
        m_new = m_old + 1
        r.m[s] = m_new
        first_ids = r.rid[s[m_old == 0]].tolist()
        fin = m_new >= r.G[s]
        fin_ids: list[tuple[int, int]] = []
        if fin.any():
            fin_rows = s[fin]
            fin_ids = [(rid, 1) for rid in r.rid[fin_rows].tolist()]
            self._retire(fin_rows)
        return Update(first_ids, fin_ids, np.array([len(s)]), 0, 0)

    def _update_repeated(self, plan: Plan, steps: int) -> Update:
        """`steps` AR decode passes over all running rows (see repeatable_steps): grow blocks, advance by
        `steps` tokens, retire finished rows. Finishes fall on the last pass (continuous) or anywhere (static)."""
        r, n = self.run, self.run.n
        bt = self.kv.block_tokens
        final_kv = r.P[:n] + r.m[:n] + steps - 1  # KV positions after the last pass
        if not self.static:
            grow = np.flatnonzero(final_kv > r.held[:n] * bt)
            if len(grow):  # repeatable_steps checked that the pool has these blocks
                self._grow_rows(grow, (final_kv[grow] + bt - 1) // bt - r.held[grow])
        left = r.G[:n] - r.m[:n]  # passes each row still needs (<= 0: padding row)
        # rows whose prompt's last chunk ran without a step get their first token in the first of these passes
        # (a chunked prefill under a token budget; without this their TTFT was lost, NaN)
        first = r.rid[:n][(r.m[:n] == 0) & (left > 0)].tolist()
        r.computed[:n] += steps
        r.m[:n] += steps
        if not self.static:  # every row is live, none finishes before the last pass (repeatable_steps)
            ends = np.flatnonzero(left == steps)
            finished = [(rid, steps) for rid in r.rid[ends].tolist()]
            if finished:
                self._retire(ends)
            return Update(first, finished, np.full(steps, n, dtype=np.int64), 0, 0)
        ends = (left > 0) & (left <= steps)
        finished = list(zip(r.rid[:n][ends].tolist(), left[ends].tolist())) if ends.any() else []
        # useful tokens of pass j (1-based): rows with at least j passes left
        committed = n - np.searchsorted(np.sort(left), np.arange(1, steps + 1), side="left")
        padding = int(steps * n - committed.sum())
        self._retire(None)
        return Update(first, finished, committed.astype(np.int64), 0, padding)
