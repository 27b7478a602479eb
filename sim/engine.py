"""The discrete-event serving simulator (DESIGN §5): SimPy processes for arrivals and for every replica's
scheduler loop; each iteration asks the cost model for its pass's duration and yields it.

    arrivals ──router──> replica 0: [scheduler loop] plan -> yield timeout(pass time) -> update -> record
                         replica 1: ...

Pipeline parallelism (p stages) runs p micro-batch loops per replica (vLLM's virtual engines), each with its own
scheduler and 1/p of the KV pool; one iteration of a micro-batch takes the sum of its stage times plus the
activation sends between stages, so p busy micro-batches keep every stage busy, and with fewer micro-batches in
flight than stages the bubble shows as lost throughput. Contention between unequal micro-batches for one stage is
not modeled (it would cost SimPy events per stage per pass; the loops are independent).

Runs of identical decode passes (no admission, no finish, no arrival, no block shortage in between: see
`Scheduler.repeatable_steps`) are priced in one vector operation and one SimPy timeout; the per-pass log still
gets a row per pass. `max_repeat=1` prices pass by pass (tests check both agree).
Same scenario + seed => identical result: all randomness comes from seeded generators, and SimPy orders
simultaneous events by insertion.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import simpy

from sim.cost import CostContext, CostModel
from sim.kv_blocks import KVBlockManager, activation_reserve_bytes, kv_capacity_bytes
from sim.metrics import Recorder, summarize
from sim.result import Result
from sim.scenario import Scenario
from sim.scheduler import Plan, Scheduler
from sim.units import BYTES_PER_ELEMENT, GB
from sim.workload import Request, generate_requests


@dataclass
class Setup:
    """Everything derived from a scenario before time starts: specs, cost models, KV capacity."""

    scenario: Scenario
    model: object
    hardware: object
    stage_costs: list[CostModel]  # one per pipeline stage (the last one runs the LM head)
    kv_blocks_per_replica: int
    weight_bytes_per_gpu: float
    fits: bool
    message: str | None = None


def prepare(s: Scenario) -> Setup:
    """Resolve specs, check that the weights fit, and size the KV pool of one replica."""
    model, hw = s.resolve_model(), s.resolve_hardware()
    tp, pp = s.parallel.tp, s.parallel.pp
    prec = s.precision
    weight_per_gpu = model.weight_bytes(prec.weights) / (tp * pp)
    b = s.batching
    if b.activation_reserve_gb is not None:
        reserve = b.activation_reserve_gb * GB
    else:
        tokens = b.max_tokens_per_iter if b.kind == "continuous" else b.batch_size
        rows = b.max_batch if b.kind == "continuous" else b.batch_size
        reserve = activation_reserve_bytes(model, tokens, rows, tp, prec.activations)
    kv_bytes = kv_capacity_bytes(hw, model, prec.weights, b.gpu_memory_utilization, reserve, tp, pp)
    per_token_per_gpu = model.kv_bytes_per_token(prec.kv) / (tp * pp)
    layers = [model.num_layers // pp + (1 if i < model.num_layers % pp else 0) for i in range(pp)]
    costs = [
        CostModel(CostContext(model, hw, prec.weights, prec.kv, prec.activations, tp, layers[i], i == pp - 1))
        for i in range(pp)
    ]
    setup = Setup(s, model, hw, costs, 0, weight_per_gpu, True)
    if kv_bytes <= 0:
        setup.fits = False
        setup.message = (
            f"needs {model.weight_bytes(prec.weights) / GB:.1f} GB of weights"
            + (f" ({weight_per_gpu / GB:.1f} GB per GPU at tp={tp}, pp={pp})" if tp * pp > 1 else "")
            + f", {hw.name} has {hw.hbm_capacity_gb:g} GB"
            + f" ({b.gpu_memory_utilization:g} usable, {reserve / GB:.1f} GB kept for activations)"
        )
        return setup
    setup.kv_blocks_per_replica = int(kv_bytes / per_token_per_gpu) // b.kv_block_tokens
    return setup


@dataclass
class _Executor:
    """One scheduler loop: a replica, or one pipeline micro-batch slot of a replica."""

    replica: int
    scheduler: Scheduler
    wake: simpy.Event | None = None
    outstanding: int = 0


@dataclass
class _Replica:
    executors: list[_Executor]
    next_slot: int = 0
    outstanding: int = 0


@dataclass
class Engine:
    """One simulation run. `run()` returns the Result; `recorder` keeps the per-pass log for time series."""

    setup: Setup
    max_repeat: int = 1 << 20  # 1 prices every pass separately (same result up to float rounding; slower)
    recorder: Recorder = field(init=False)

    def run(self) -> Result:
        st = self.setup
        s = st.scenario
        requests = generate_requests(s.workload, s.workload_seed)
        base = dict(scenario=s.name, hardware=st.hardware.name, model=st.model.name, strategy=s.strategy.kind,
                    batching=s.batching.kind, weight_bytes_per_gpu=st.weight_bytes_per_gpu)
        self.recorder = Recorder(len(requests))
        if not st.fits:
            return Result(**base, fits=False, message=st.message, num_requests=len(requests),
                          rejected=len(requests))
        env = simpy.Environment()
        pp = s.parallel.pp
        blocks = st.kv_blocks_per_replica // pp
        replicas = [
            _Replica(
                [_Executor(r, Scheduler(s.batching, KVBlockManager(blocks, s.batching.kv_block_tokens)))
                 for _ in range(pp)],
            )
            for r in range(s.parallel.replicas)
        ]
        self._done_arriving = False
        self._next_arrival_s = requests[0].arrival_s if requests else None
        for rep in replicas:
            for ex in rep.executors:
                env.process(self._loop(env, rep, ex))
        env.process(self._arrivals(env, requests, replicas))
        env.run()
        rejected = sum(len(ex.scheduler.rejected) for rep in replicas for ex in rep.executors)
        preemptions = sum(ex.scheduler.preemptions for rep in replicas for ex in rep.executors)
        hw = st.hardware
        return summarize(
            self.recorder, requests, base,
            gpus=s.parallel.replicas * s.parallel.tp * pp, executors=s.parallel.replicas * pp,
            peak_bw=hw.hbm_bandwidth_bytes_per_s, peak_flops=hw.peak_flops_per_s(s.precision.weights),
            kv_blocks=blocks * pp, kv_block_tokens=s.batching.kv_block_tokens, slo=s.slo,
            rejected=rejected, preemptions=preemptions,
        )

    # -- processes -----------------------------------------------------------------------------------------------
    def _arrivals(self, env: simpy.Environment, requests: list[Request], replicas: list[_Replica]):
        rec = self.recorder
        router = self.setup.scenario.parallel.router
        turn = 0
        for k, req in enumerate(requests):
            self._next_arrival_s = req.arrival_s
            if req.arrival_s > env.now:
                yield env.timeout(req.arrival_s - env.now)
            self._next_arrival_s = requests[k + 1].arrival_s if k + 1 < len(requests) else None
            rec.arrival_s[req.id] = env.now
            if router == "least_outstanding":
                rep = min(replicas, key=lambda r: r.outstanding)
            else:
                rep = replicas[turn % len(replicas)]
                turn += 1
            ex = rep.executors[rep.next_slot % len(rep.executors)]  # micro-batch slots take turns
            rep.next_slot += 1
            if ex.scheduler.add(req):
                rep.outstanding += 1
                self._wake(ex)
        self._done_arriving = True
        for rep in replicas:
            for ex in rep.executors:
                self._wake(ex)

    @staticmethod
    def _wake(ex: _Executor) -> None:
        if ex.wake is not None and not ex.wake.triggered:
            ex.wake.succeed()

    def _loop(self, env: simpy.Environment, rep: _Replica, ex: _Executor):
        sched, rec = ex.scheduler, self.recorder
        costs = self.setup.stage_costs
        # activation hand-off between consecutive pipeline stages, per token of the pass
        send_s = self._stage_send_s() * (len(costs) - 1)
        tp = self.setup.scenario.parallel.tp
        while True:
            plan = sched.plan()
            if plan is None:
                if self._done_arriving and sched.idle:
                    return
                ex.wake = env.event()
                yield ex.wake
                continue
            start = env.now
            for rid in plan.admitted:
                if np.isnan(rec.admitted_s[rid]):
                    rec.admitted_s[rid] = start
            steps = sched.repeatable_steps(plan, self.max_repeat)
            dur, flops, nbytes, mem_s = self._price(plan, steps)
            dur = dur + send_s * plan.shape.tokens
            if steps > 1 and not plan.padded and not sched.waiting and self._next_arrival_s is not None:
                # a request arriving mid-run could be admitted at the next pass boundary: stop at the first
                # boundary at or after its arrival, exactly where a pass-by-pass run would see it
                ends = start + np.cumsum(dur)
                steps = min(steps, int(np.searchsorted(ends, self._next_arrival_s, side="left")) + 1)
                dur, flops, nbytes, mem_s = dur[:steps], flops[:steps], nbytes[:steps], mem_s[:steps]
            ends = start + np.cumsum(dur)
            yield env.timeout(float(ends[-1] - start))
            upd = sched.update(plan, steps=steps)
            for rid in upd.first_token:
                rec.first_token_s[rid] = ends[0]
            for rid, step in upd.finished:
                rec.finish_s[rid] = ends[step - 1]
            rep.outstanding -= len(upd.finished)
            n_first = len(upd.first_token)
            kv_used, running, waiting = sched.kv.used_blocks, sched.num_running, sched.num_waiting
            # the cost model prices one GPU of the tensor-parallel group; the log counts all of them
            rec.passes_done(ex.replica, ends - dur, dur, plan.shape.seqs, plan.shape.tokens, upd.committed, kv_used,
                            running, waiting, flops * tp, nbytes * tp, mem_s, n_first)

    def _price(self, plan: Plan, steps: int):
        """Per-pass arrays (time, flops, bytes, memory-bound time) of `steps` repetitions of a plan, summed over
        pipeline stages (each micro-batch loop runs its stages back to back)."""
        out = None
        for cost in self.setup.stage_costs:
            if steps == 1:
                pt = cost.pass_time(plan.shape)
                arrays = tuple(np.array([v]) for v in (pt.time_s, pt.flops, pt.bytes, pt.memory_bound_s))
            else:
                arrays = cost.repeated_times(plan.shape, steps)
            out = arrays if out is None else tuple(a + b for a, b in zip(out, arrays))
        return out

    def _stage_send_s(self) -> float:
        """Seconds per token to send activations to the next pipeline stage (hidden state over the link)."""
        st = self.setup
        m, hw = st.model, st.hardware
        per_token = m.hidden_size * BYTES_PER_ELEMENT[st.scenario.precision.activations]
        return per_token / hw.link_bandwidth_bytes_per_s


def simulate(scenario: Scenario) -> tuple[Result, Recorder]:
    """Simulate a scenario: the Result and the recorder (per-pass log for time series)."""
    engine = Engine(prepare(scenario))
    result = engine.run()
    return result, engine.recorder
