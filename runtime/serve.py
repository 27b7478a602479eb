"""Serving a scenario for real: the simulator's scheduler (sim/scheduler.py) decides every pass, an executor
(runtime/executor.py, on the GPU or the CPU) runs it, and arrivals are replayed in real time from the same
workload generator the simulator uses. The result has the simulator's schema (sim/result.py), so predicted and
measured runs compare field by field.

Timestamps (arrival, first token, finish) are wall-clock seconds since the run started, as a client would see
them; each pass's device time (CUDA events) is kept too, for per-pass comparison with the cost model, and its host
time (the wall time since the previous pass ended, waits for arrivals excluded, that its device time does not
cover), for the host model (validation/host_fit.py). A
`VirtualClock` replaces the wall clock in tests: it advances by each pass's reported time and jumps to the next
arrival when idle, so a CPU test replays a workload in no time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from sim.kv_blocks import KVBlockManager
from sim.metrics import Recorder, summarize
from sim.result import Result
from sim.scheduler import Plan, Scheduler
from sim.strategies.ar import AR
from sim.workload import Request


PAD_TOKEN = 0


class WallClock:
    def now(self) -> float:
        return time.perf_counter()

    def sleep_until(self, t: float) -> None:
        delay = t - time.perf_counter()
        if delay > 0:
            time.sleep(delay)

    def advance(self, seconds: float) -> None:  # the pass already took its time
        pass


class VirtualClock:
    """Time that moves only by the passes' reported durations and by idling until the next arrival."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep_until(self, t: float) -> None:
        self.t = max(self.t, t)

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass(slots=True)
class Item:
    """One sequence of a pass, as the executor takes it."""

    req_id: int
    q: int
    start: int
    o: int
    block_ids: list[int]


def plan_items(plan: Plan, kv: KVBlockManager) -> list[Item]:
    """The scheduler's plan as executor items (block tables from the shared block manager)."""
    return [Item(int(rid), int(q), int(s), int(o), kv.tables[int(rid)])
            for rid, q, s, o in zip(plan.req_ids.tolist(), plan.q.tolist(), plan.start.tolist(), plan.o.tolist())]


@dataclass
class Served:
    result: Result
    recorder: Recorder
    device_pass_s: list[float] = field(default_factory=list)  # device time of each pass
    pass_shapes: list[tuple] = field(default_factory=list)  # (tokens, logit rows, seqs, sum c, pairs) per pass
    pass_spans: list = field(default_factory=list)  # PassShape.spans per pass (its long prompt spans)
    committed_per_pass: list[int] = field(default_factory=list)  # useful tokens committed by each iteration
    wasted_positions: int = 0  # positions computed by steps but not committed (rejected drafts, masks)
    # wall seconds of each pass outside its device time: since the previous pass ended (scheduler, recorder,
    # admissions; waits for arrivals excluded) plus its own staging and synchronization
    host_pass_s: list[float] = field(default_factory=list)
    forwards_per_pass: list[int] = field(default_factory=list)  # forward passes of each iteration (pass_log entries)


def serve(requests: list[Request], batching, executor, num_blocks: int, base: dict, *, seed: int = 0,
          clock=None, peak_bw: float = 1.0, peak_flops: float = 1.0, count: Callable | None = None,
          on_pass: Callable | None = None, strategy=None, kv_extra: int = 0) -> Served:
    """Replay `requests` through the scheduler and `executor`: AR by default (executor.Executor), or `strategy`
    (sim.strategies) with a strategy executor (plan_exec.PlanExecutor), whose `execute_plan` decides the tokens each
    row commits and hands them to `Scheduler.update`. `count(shape) -> (flops, bytes, memory-bound fraction,
    host-launch fraction)` fills the MBU/MFU and bound columns from the cost model's counts (a measurement cannot
    tell which roof held a pass, so the model's attribution is applied to the measured device time; the pass's
    measured time outside it is the host's); `on_pass(i)` is called after every pass (progress bars)."""
    clock = clock or WallClock()
    kv = KVBlockManager(num_blocks, batching.kv_block_tokens)
    sched = Scheduler(batching, kv, strategy or AR(), np.random.default_rng(seed), kv_extra)
    rec = Recorder(len(requests))
    served = Served(None, rec)  # type: ignore[arg-type]
    pending = sorted(requests, key=lambda r: (r.arrival_s, r.id))
    nxt = 0
    t0 = clock.now()
    passes = 0
    done: list[int] = []
    prev_end, idle = 0.0, 0.0  # the last pass's end; time spent waiting for arrivals since
    log = getattr(executor, "pass_log", None)
    logged = len(log) if log is not None else 0
    while nxt < len(pending) or not sched.idle:
        now = clock.now() - t0
        while nxt < len(pending) and pending[nxt].arrival_s <= now:
            req = pending[nxt]
            rec.arrival_s[req.id] = req.arrival_s
            sched.add(req)
            nxt += 1
        plan = sched.plan()
        if plan is None:
            if nxt < len(pending):
                before = clock.now()
                clock.sleep_until(t0 + pending[nxt].arrival_s)
                idle += clock.now() - before
                continue
            break  # nothing running or admissible, nothing left to arrive
        start = clock.now() - t0
        for rid in plan.admitted:
            if np.isnan(rec.admitted_s[rid]):
                rec.admitted_s[rid] = start
            if rid not in executor.tokens:  # first admission (a recomputed request keeps its tokens)
                req = sched.requests[rid]
                executor.add_request(rid, req.prompt_tokens, seed * 1_000_003 + rid)
                pad = int(sched.run.P[plan.rows[plan.req_ids == rid][0]]) - req.prompt_tokens
                if pad > 0:  # static batching pads prompts on the left; the pads are attended (no pad mask)
                    executor.tokens[rid] = [PAD_TOKEN] * pad + executor.tokens[rid]
        if hasattr(executor, "execute_plan"):
            device_s, commits = executor.execute_plan(plan, sched)
        else:
            (device_s, _), commits = executor.execute(plan_items(plan, kv)), None
        clock.advance(device_s)
        end = clock.now() - t0
        upd = sched.update(plan, commits=commits)
        served.committed_per_pass.append(upd.committed_tokens)
        served.wasted_positions += upd.wasted_positions
        for rid in upd.first_token:
            rec.first_token_s[rid] = end
        for rid, _ in upd.finished:
            rec.finish_s[rid] = end
            done.append(rid)
        if not sched.static or sched.num_running == 0:  # a static batch's finished rows compute until it ends
            for rid in done:
                executor.free(rid)
            done.clear()
        sh = plan.shape
        flops, nbytes, mem_frac, launch_frac = count(sh) if count else (0.0, 0.0, 0.0, 0.0)
        on_device = min(device_s, end - start)
        rec.passes_done(0, np.array([start]), np.array([end - start]), sh.seqs, sh.tokens, upd.committed,
                        kv.used_blocks, sched.num_running, sched.num_waiting, np.array([flops]), np.array([nbytes]),
                        np.array([on_device * mem_frac]), len(upd.first_token),
                        np.array([end - start - on_device + on_device * launch_frac]))
        served.device_pass_s.append(device_s)
        served.host_pass_s.append(max(0.0, (start - prev_end - idle) + (end - start - device_s)))
        prev_end, idle = end, 0.0  # the bookkeeping after a pass counts toward the next one's host time
        if log is not None:
            served.forwards_per_pass.append(len(log) - logged)
            logged = len(log)
        served.pass_shapes.append((sh.tokens, sh.logit_rows, sh.seqs, sh.kv_read_tokens, sh.attn_pairs))
        served.pass_spans.append(list(sh.spans) if sh.spans is not None else None)
        passes += 1
        if on_pass:
            on_pass(passes)
    served.result = summarize(rec, requests, {**base, "source": "measured"}, gpus=1, executors=1,
                              peak_bw=peak_bw, peak_flops=peak_flops, kv_blocks=num_blocks,
                              kv_block_tokens=batching.kv_block_tokens, rejected=len(sched.rejected),
                              preemptions=sched.preemptions)
    return served
