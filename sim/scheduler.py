"""The batch scheduler shared by the simulator and the GPU runtime: plan -> execute -> update.

One token-accounting idea for every phase and every strategy (as in vLLM v1): each running sequence has an
effective prompt P, commits m output positions out of G, and has `computed` KV positions cached. The strategy
says how many positions must be cached before it can take a step (`kv_ready`); a sequence behind that prefills
(whole, or in chunks), and one that is caught up takes a step of the strategy (sim/strategies). Prefill, chunked
prefill, decode, speculative verify, diffusion steps and recompute after preemption are all that one rule.

`plan()` decides the next pass (which sequences, how many tokens each, KV blocks grown, preemptions); the
executor (SimPy + cost model, or the GPU) runs it; `update(plan)` commits tokens and retires finished sequences.
Neither simpy nor torch is imported here. Running sequences live in numpy arrays (structure of arrays), so one
iteration costs a few vector operations however large the batch.

Policies (DESIGN §4):
- static: when idle, take up to `batch_size` waiting requests, pad every prompt to the longest, reserve KV for the
  padded batch up front, and step every row until the last one is done; finished rows keep computing (padding).
- continuous: every iteration steps all caught-up sequences first, then fills the token budget with prefill
  (whole prompts, or chunks when `chunked_prefill`); a request is admitted when its blocks fit. When a step needs
  a block and none is free, the latest-arrived running sequence is preempted (its KV freed; recomputed later:
  it re-queues at the front with its prompt and committed tokens to prefill again).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from sim.kv_blocks import KVBlockManager, blocks_for
from sim.decode_fast_path import DecodeFastPath
from sim.plan import Plan, Update, _Ones  # noqa: F401 - Plan and Update are part of this module's API
from sim.passes import EMPTY, PassShape, long_spans
from sim.strategies import Strategy
from sim.strategies.ar import AR
from sim.strategies.base import causal_pairs
from sim.workload import Request


class _Running:
    """Structure of arrays for running sequences; rows are compacted on removal (swap with the last)."""

    FIELDS = ("rid", "P", "G", "U", "m", "computed", "held", "order", "state")

    def __init__(self, capacity: int = 64):
        self.n = 0
        for f in self.FIELDS:
            setattr(self, f, np.zeros(capacity, dtype=np.int64))

    def add(self, rid: int, P: int, G: int, U: int, m: int, order: int) -> int:
        if self.n == len(self.rid):
            for f in self.FIELDS:
                old = getattr(self, f)
                new = np.zeros(2 * len(old), dtype=np.int64)
                new[: self.n] = old[: self.n]
                setattr(self, f, new)
        i = self.n
        self.rid[i], self.P[i], self.G[i], self.U[i], self.m[i] = rid, P, G, U, m
        self.computed[i] = self.held[i] = self.state[i] = 0
        self.order[i] = order
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


class Scheduler(DecodeFastPath):
    """Decides every iteration for one replica. Owns the waiting queue, the running arrays and the KV blocks."""

    def __init__(self, batching, kv: KVBlockManager, strategy: Strategy | None = None,
                 rng: np.random.Generator | None = None, kv_extra: int = 0):
        self.batching = batching
        self.kv = kv
        self.strategy = strategy or AR()
        self.rng = rng or np.random.default_rng(0)
        self.kv_extra = kv_extra  # positions a step may hold beyond its committed tokens (speculative k, block)
        self.static = batching.kind == "static"
        self.waiting: deque[tuple[Request, int]] = deque()  # (request, tokens committed before a preemption)
        self.run = _Running()
        self.requests: dict[int, Request] = {}
        self.rejected: list[int] = []
        self.preemptions = 0
        self.kv_limited_batches = 0  # static batches formed below batch_size because the KV pool was full
        self.smallest_kv_limited_batch = 0
        self._order = 0
        self._aranged = np.arange(256, dtype=np.int64)
        self._ones = np.ones(256, dtype=np.int64)
        self._zeros = np.zeros(256, dtype=np.int64)
        self._caught_up: bool | None = True  # every running row decoding (AR fast path); None = look again
        self._trues = np.ones(256, dtype=bool)

    # -- queue ------------------------------------------------------------------------------------------------------
    def add(self, req: Request) -> bool:
        """Queue a request; False (and counted as rejected) if its KV can never fit in this replica."""
        G = self.strategy.tokens_to_commit(req.prompt_tokens, req.output_tokens)
        if not self.kv.can_fit(req.prompt_tokens + G + self.kv_extra):
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

    def _admit(self, req: Request, m: int, P: int | None = None) -> int:
        self._order += 1
        s = self.strategy
        return self.run.add(req.id, req.prompt_tokens if P is None else P,
                            s.tokens_to_commit(req.prompt_tokens, req.output_tokens), s.useful(req.output_tokens),
                            m, self._order)

    def _ones_of(self, n: int) -> np.ndarray:
        if len(self._ones) < n:
            self._ones = np.ones(2 * n, dtype=np.int64)
            self._zeros = np.zeros(2 * n, dtype=np.int64)
            self._trues = np.ones(2 * n, dtype=bool)
        return self._ones[:n]

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

    def _grow_rows(self, rows: np.ndarray, need: np.ndarray) -> None:
        """Give each of `rows` `need` more blocks (all > 0; the caller checked the pool has them): ids taken from
        the pool at once and dealt out, instead of one grow() per row."""
        r, kv = self.run, self.kv
        total = int(need.sum())
        ids = kv.take(total)
        tables = kv.tables
        rids = r.rid[rows].tolist()
        if total == len(rids):  # the usual case: one block each
            for rid, bid in zip(rids, ids):
                tables[rid].append(bid)
        else:
            at = 0
            for rid, k in zip(rids, need.tolist()):
                tables.setdefault(rid, []).extend(ids[at:at + k])
                at += k
        r.held[rows] += need

    def _preempt_latest(self) -> int:
        """Free the latest-arrived running sequence's KV and re-queue it at the front (recompute)."""
        r = self.run
        i = int(np.argmax(r.order[: r.n]))
        rid = int(r.rid[i])
        self.waiting.appendleft((self.requests[rid], int(r.m[i])))
        self.kv.free(rid)
        r.remove(np.array([i]))
        self.preemptions += 1
        self._caught_up = None
        return rid

    # -- plan -------------------------------------------------------------------------------------------------------
    def plan(self) -> Plan | None:
        """The next iteration, or None when nothing can run now."""
        if self.static and self.run.n == 0:
            return self._form_static_batch()
        plan = self._plan()
        while plan is None and self.run.n and not self.static:
            # running sequences, none of which can get the blocks to go on: recompute the latest arrival later
            victim = self._preempt_latest()
            plan = self._plan()
            if plan is not None:
                plan.preempted.insert(0, victim)
        return plan

    def _form_static_batch(self) -> Plan | None:
        """Take up to batch_size waiting requests, padded to the longest prompt, KV reserved for the whole run."""
        if not self.waiting:
            return None
        kv, bt = self.kv, self.kv.block_tokens
        batch: list[Request] = []
        while self.waiting and len(batch) < self.batching.batch_size:
            cand = batch + [self.waiting[0][0]]
            pad = max(x.prompt_tokens for x in cand) + max(
                self.strategy.tokens_to_commit(x.prompt_tokens, x.output_tokens) for x in cand) + self.kv_extra
            if len(cand) * blocks_for(pad, bt) > kv.free_blocks:
                break
            batch.append(self.waiting.popleft()[0])
        if not batch:  # cannot happen after add()'s fit check, but never spin
            return None
        if self.waiting and len(batch) < self.batching.batch_size:
            self.kv_limited_batches += 1
            small = self.smallest_kv_limited_batch
            self.smallest_kv_limited_batch = min(small, len(batch)) if small else len(batch)
        p_pad = max(x.prompt_tokens for x in batch)
        g_pad = max(self.strategy.tokens_to_commit(x.prompt_tokens, x.output_tokens) for x in batch)
        for req in batch:
            self._grow(self._admit(req, 0, P=p_pad), p_pad + g_pad + self.kv_extra)
        return self._plan(admitted=[req.id for req in batch])

    def _plan(self, admitted: list[int] | None = None) -> Plan | None:
        b, r, kv, strat = self.batching, self.run, self.kv, self.strategy
        if strat.repeatable and not self.static and not admitted:
            plan = self._plan_decode()
            if plan is not None:
                return plan
        bt = kv.block_tokens
        preempted: list[int] = []
        static = self.static
        # 1. caught-up rows take a step first; grow their KV, preempting the latest arrival if blocks run out
        while True:
            n = r.n
            P, m, G, state, comp = r.P[:n], r.m[:n], r.G[:n], r.state[:n], r.computed[:n]
            catch = np.maximum(strat.kv_ready(P, m) - comp, 0)
            ready = catch == 0
            all_ready = bool(ready.all())
            srows = self._arange(n) if all_ready else np.flatnonzero(ready)
            st = strat.step(P[srows], m[srows], G[srows], state[srows])
            hold = st.hold
            grow = hold > r.held[srows] * bt
            if not grow.any():
                break
            g_rows = srows[grow]
            short = int(((hold[grow] + bt - 1) // bt - r.held[g_rows]).sum())
            if short <= kv.free_blocks:
                need = (hold[grow] + bt - 1) // bt - r.held[g_rows]
                keep = need > 0
                self._grow_rows(g_rows[keep], need[keep])
                break
            if static:  # reserved up front: grow what the pool still has
                for i, h in zip(g_rows.tolist(), hold[grow].tolist()):
                    self._grow(i, h)
                break
            preempted.append(self._preempt_latest())
        budget = b.max_tokens_per_iter - int(st.q.sum()) if not static else 1 << 62
        rows: list[int] = []
        qs: list[int] = []
        catches: list[int] = []
        stepping: list[bool] = []
        # 2. rows still prefilling (a new batch, chunked prefill, recompute after preemption), oldest first
        if not all_ready:
            idx = np.flatnonzero(~ready)
            for i in idx[np.argsort(r.order[idx])].tolist():
                if budget <= 0:
                    break
                q, c, steps = self._catchup(i, int(catch[i]), budget, len(srows) > 0 or bool(rows))
                if q == 0:
                    continue
                rows.append(i)
                qs.append(q)
                catches.append(c)
                stepping.append(steps)
                budget -= q
        # 3. admit waiting requests, first come first served, while tokens, slots and blocks allow
        admitted = list(admitted or [])
        if not static:
            self._admit_waiting(budget, len(srows) > 0, rows, qs, catches, stepping, admitted)
        if len(srows) == 0 and not rows:
            return None
        return self._make_plan(srows, st, rows, qs, catches, stepping, preempted, admitted)

    def _admit_waiting(self, budget: int, others: bool, rows: list, qs: list, catches: list, stepping: list,
                       admitted: list) -> None:
        """Admit waiting requests first come first served while the token budget, the batch limit and the KV
        blocks allow; appends each admitted row's work to the lists."""
        r, strat, b = self.run, self.strategy, self.batching
        while self.waiting and budget > 0 and r.n < b.max_batch:
            req, m0 = self.waiting[0]
            i = self._admit(req, m0)
            need = (req.prompt_tokens + m0 - 1 if strat.kind == "ar"
                    else int(strat.kv_ready(r.P[i:i + 1], r.m[i:i + 1])[0]))
            q, c, steps = self._catchup(i, need, budget, others or bool(rows))
            if q == 0:
                self.kv.free(req.id)
                r.remove(np.array([i]))
                self._order -= 1
                return
            self.waiting.popleft()
            rows.append(i)
            qs.append(q)
            catches.append(c)
            stepping.append(steps)
            admitted.append(req.id)
            budget -= q

    def _catchup(self, i: int, catch: int, budget: int, others: bool) -> tuple[int, int, bool]:
        """(query tokens, prefill tokens, takes a step) for a row `catch` positions behind, within `budget`;
        (0, 0, False) when it cannot run now (budget, or KV blocks)."""
        r, strat = self.run, self.strategy
        step_q = 0
        if strat.kind == "ar":  # one query token that ends at position P + m (plain ints: this runs per admission)
            step_q, hold = 1, int(r.P[i] + r.m[i])
        elif strat.step_with_catchup or catch == 0:
            st = strat.step(r.P[i:i + 1], r.m[i:i + 1], r.G[i:i + 1], r.state[i:i + 1])
            step_q, hold = int(st.q[0]), int(st.hold[0])
        need = catch + step_q
        if self.static or need <= budget:
            q, c, steps = need, catch, step_q > 0 or catch == 0
        elif self.batching.chunked_prefill and catch > 0:
            q = c = min(catch, budget)
            steps = False
        elif not others:
            q, c, steps = need, catch, True  # a prompt larger than the budget may run alone rather than never
        else:
            return 0, 0, False
        kv_positions = int(r.computed[i]) + c
        if steps:
            kv_positions = max(kv_positions, hold)
        if not self._grow(i, kv_positions):
            return 0, 0, False
        return q, c, steps

    def _make_plan(self, srows, st, rows, qs, catches, stepping, preempted, admitted) -> Plan:
        r, strat = self.run, self.strategy
        if strat.kind == "ar":  # every row is a causal block of q tokens ending at c: one vector pass
            x = np.asarray(rows, dtype=np.int64)
            all_rows = np.concatenate([srows, x]) if len(x) else srows
            q = np.concatenate([st.q, np.asarray(qs, dtype=np.int64)]) if len(x) else st.q
            start = r.computed[all_rows]
            c = start + q
            catch = np.concatenate([np.zeros(len(srows), dtype=np.int64), np.asarray(catches, dtype=np.int64)])
            steps = np.concatenate([np.ones(len(srows), dtype=bool), np.asarray(stepping, dtype=bool)])
            o = steps.astype(np.int64)
            tokens = int(q.sum())
            pairs = q * (c - q) + q * (q + 1) // 2
            shape = PassShape(tokens, int(o.sum()), len(all_rows), int(c.sum()), int(pairs.sum()), tokens, "causal",
                              long_spans(q, c, pairs))
            return Plan(all_rows, r.rid[all_rows], q, start, o, catch, steps, shape, [("target", shape)],
                        preempted, admitted)
        comp = r.computed
        # rows that only step (the common case), as vectors
        s_start = comp[srows]
        q_all, c_all, o_all, pairs, writes = st.q, st.c, st.o, st.pairs, np.maximum(st.hold - s_start, 0)
        catch_all = np.zeros(len(srows), dtype=np.int64)
        steps_all = np.ones(len(srows), dtype=bool)
        catch_shape = EMPTY
        if rows:
            x = np.asarray(rows, dtype=np.int64)
            xq, xc, xs = (np.asarray(v, dtype=np.int64) for v in (qs, catches, stepping))
            xs = xs.astype(bool)
            start = comp[x]
            ckv = start + xc  # positions after the prefill part
            c_pairs = causal_pairs(xc, ckv)
            sq = xq - xc  # step part
            st_x = strat.step(r.P[x], r.m[x], r.G[x], r.state[x])
            step_pairs = np.where(xs & (sq > 0), st_x.pairs, 0)
            step_c = np.where(xs & (sq > 0), st_x.c, 0)
            step_o = np.where(xs & (sq > 0), st_x.o, 0)
            step_writes = np.where(xs & (sq > 0), np.maximum(st_x.hold - ckv, 0), 0)
            n_c = int((xc > 0).sum())
            catch_shape = PassShape(int(xc.sum()), n_c, n_c, int(ckv[xc > 0].sum()), int(c_pairs.sum()),
                                    int(xc.sum()), "causal", long_spans(xc, ckv, c_pairs))
            srows = np.concatenate([srows, x])
            s_start = np.concatenate([s_start, start])
            q_all = np.concatenate([q_all, xq])
            c_all = np.concatenate([c_all, np.maximum(ckv, step_c)])
            o_all = np.concatenate([o_all, step_o])
            pairs = np.concatenate([pairs, c_pairs + step_pairs])
            writes = np.concatenate([writes, xc + step_writes])
            catch_all = np.concatenate([catch_all, xc])
            steps_all = np.concatenate([steps_all, xs])
        tokens = int(q_all.sum())
        shape = PassShape(tokens, int(o_all.sum()), len(srows), int(c_all.sum()), int(pairs.sum()),
                          int(writes.sum()), "causal", long_spans(q_all, c_all, pairs))
        passes: list[tuple[str, PassShape]] = [("target", shape)]
        if strat.extra_models:
            sr = srows[steps_all]
            passes += strat.extra_passes(r.P[sr], r.m[sr], r.G[sr], r.state[sr], catch_shape)
        return Plan(srows, r.rid[srows], q_all, s_start, o_all, catch_all, steps_all, shape, passes, preempted,
                    admitted)

    # -- update -----------------------------------------------------------------------------------------------------
    def update(self, plan: Plan, steps: int = 1, commits: np.ndarray | None = None) -> Update:
        """Apply executed iterations: advance cached positions, commit the strategy's tokens (drawn from the
        generator, or `commits` per row when the executor decided, e.g. measured acceptance), retire finished
        sequences and free their blocks."""
        if steps > 1 or (self.strategy.repeatable and commits is None and not plan.admitted
                         and len(plan.rows) == self.run.n and plan.shape.tokens == self.run.n
                         and not plan.catchup.any()):
            return self._update_repeated(plan, steps)
        if self.strategy.kind == "ar" and not self.static and commits is None:
            return self._update_ar(plan)
        self._caught_up = None
        r, strat = self.run, self.strategy
        rows, stp = plan.rows, plan.steps
        m_old = r.m[rows].copy()
        n_new = np.zeros(len(rows), dtype=np.int64)
        r.computed[rows] += plan.catchup
        if stp.any():
            s = rows[stp]
            given = None if commits is None else np.asarray(commits, dtype=np.int64)[stp]
            n, kept, new_state = strat.commit(r.P[s], r.m[s], r.G[s], r.state[s], self.rng, given)
            n_new[stp] = n
            r.computed[s] = kept
            r.state[s] = new_state
            # give back blocks beyond what the kept positions need (rejected drafts, a diffusion window)
            over = np.flatnonzero((kept + self.kv.block_tokens - 1) // self.kv.block_tokens < r.held[s])
            if len(over) and not self.static:
                for i in s[over].tolist():
                    self.kv.shrink(int(r.rid[i]), int(r.computed[i]))
                    r.held[i] = self.kv.held(int(r.rid[i]))
        G, U = r.G[rows], r.U[rows]
        live = m_old < G
        m_new = np.where(live, np.minimum(m_old + n_new, G), m_old + n_new)
        r.m[rows] = m_new
        useful = np.where(live, np.minimum(m_new, U) - np.minimum(m_old, U), 0)
        padding = int(np.where(live, (m_new - m_old) - useful, n_new).sum())
        step_q = (plan.q - plan.catchup)[stp]
        wasted = int(step_q.sum() - (m_new - m_old)[stp].clip(min=0).sum())
        first = (useful > 0) & (np.minimum(m_old, U) == 0)
        fin = live & (m_new >= G)
        first_ids = plan.req_ids[first].tolist() if first.any() else []
        fin_ids = [(rid, 1) for rid in plan.req_ids[fin].tolist()] if fin.any() else []
        self._retire(rows[fin] if not self.static else None)
        return Update(first_ids, fin_ids, np.array([int(useful.sum())]), wasted, padding)

    def _retire(self, rows: np.ndarray | None) -> None:
        r = self.run
        if self.static:  # the whole batch leaves when its last row is done
            if r.n and bool((r.m[: r.n] >= r.G[: r.n]).all()):
                for rid in r.rid[: r.n].tolist():
                    self.kv.free(rid)
                r.n = 0
            return
        if rows is not None and len(rows):
            for rid in r.rid[rows].tolist():
                self.kv.free(rid)
            r.remove(rows)
