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
from typing import Callable

import numpy as np
import simpy

from sim.cost import CostContext, CostModel
from sim.runtime_layout import GRAPH_LOGITS_EVERY_ROW, GRAPH_MAX_ROWS, host_eager
from sim.errors import UserError
from sim.model import load_model
from sim.passes import PassShape
from sim.kv_blocks import KVBlockManager, activation_reserve_bytes, kv_capacity_bytes
from sim.metrics import Recorder, summarize
from sim.result import Result
from sim.scenario import Scenario
from sim.scheduler import Plan, Scheduler
from sim.strategies import STRATEGIES, Strategy
from sim.strategies.ar import AR
from sim.strategies.speculative import Speculative, auto_k
from sim.units import BYTES_PER_ELEMENT, GB
from sim.workload import Request, all_over_context, context_problem, generate_requests, over_context


@dataclass
class Setup:
    """Everything derived from a scenario before time starts: specs, cost models, strategy, KV capacity."""

    scenario: Scenario
    model: object
    hardware: object
    target_cost: CostModel  # one iteration of the target over all its layers (all pipeline stages back to back)
    kv_blocks_per_replica: int
    weight_bytes_per_gpu: float
    fits: bool
    message: str | None = None
    strategy: Strategy = field(default_factory=AR)
    role_costs: dict = field(default_factory=dict)  # other models' cost models by role ("draft")
    kv_extra: int = 0  # positions a step may hold beyond its committed tokens


def build_strategy(s: Scenario, model, hw, target: CostModel) -> tuple[Strategy, dict, float, float, int]:
    """The strategy object, cost models of its other models, their weight and KV bytes (per GPU), and kv_extra."""
    spec, prec, tp = s.strategy, s.precision, s.parallel.tp
    if spec.kind == "speculative":
        self_draft = spec.draft == "self"
        if self_draft:
            if spec.draft_layers > model.num_layers:
                raise UserError(f"strategy.draft_layers: {spec.draft_layers} exceeds the target's "
                                f"{model.num_layers} layers")
            draft_ctx = CostContext(model, hw, prec.weights, prec.kv, prec.activations, tp, spec.draft_layers, True,
                                    **execution(s))
            weight_bytes = kv_bytes = 0.0  # the target's own first layers and LM head
        else:
            draft = load_model(spec.draft)
            draft_ctx = CostContext(draft, hw, prec.weights, prec.kv, prec.activations, tp, **execution(s))
            weight_bytes = draft.weight_bytes(prec.weights) / tp + draft.replicated_kv_weight_bytes(tp, prec.weights)
            kv_bytes = draft.kv_bytes_per_token_per_gpu(prec.kv, tp)
        draft_cost = CostModel(draft_ctx)
        k = spec.k
        if k == "auto":
            alphas = spec.alpha if isinstance(spec.alpha, list) else [spec.alpha]
            b = s.batching
            batch = b.batch_size if b.kind == "static" else min(b.max_batch, 64)
            ctx = _mean_length(s.workload, "input_len") + _mean_length(s.workload, "output_len") // 2
            k = auto_k([float(a) for a in alphas], batch, max(ctx, 1), target, draft_cost,
                       per_position=isinstance(spec.alpha, list))
        return Speculative(spec, k, self_draft), {"draft": draft_cost}, weight_bytes, kv_bytes, k
    cls = STRATEGIES[spec.kind]
    strategy = cls(spec) if spec.kind != "ar" else cls()
    extra = spec.block_size if spec.kind == "block_diffusion" else 0
    return strategy, {}, 0.0, 0.0, extra


def _mean_length(workload, field_name: str) -> int:
    spec = getattr(workload, field_name, 512)
    if isinstance(spec, int):
        return spec
    return int(getattr(spec, "value", None) or getattr(spec, "mean", None) or (spec.low + spec.high) // 2)


def execution(s: Scenario) -> dict:
    """The CostContext fields that describe the serving software (scenario section `execution`)."""
    return {"graphs": s.execution.graphs, "fused_epilogues": s.execution.fused_epilogues,
            "attention_reads": s.execution.attention_reads}


def prepare(s: Scenario) -> Setup:
    """Resolve specs, check that the weights fit, and size the KV pool of one replica."""
    model, hw = s.resolve_model(), s.resolve_hardware()
    tp, pp = s.parallel.tp, s.parallel.pp
    # tensor parallelism splits the attention heads evenly (Shoeybi et al. 2019); KV heads are split, or each
    # one is kept by tp / num_kv_heads GPUs when there are fewer of them than GPUs
    def splits(t: int) -> bool:
        return model.num_heads % t == 0 and (model.num_kv_heads % t == 0 or t % model.num_kv_heads == 0)

    if not splits(tp):
        ok = [t for t in range(1, model.num_heads + 1) if splits(t)]
        raise UserError(f"parallel.tp: {tp} does not split {model.name}'s {model.num_heads} attention heads and "
                        f"{model.num_kv_heads} KV heads evenly; choose one of {', '.join(map(str, ok))}")
    prec = s.precision
    weight_per_gpu = (model.weight_bytes(prec.weights) / tp + model.replicated_kv_weight_bytes(tp, prec.weights)) / pp
    b = s.batching
    if b.activation_reserve_gb is not None:
        reserve = b.activation_reserve_gb * GB
    else:
        # the widest pass: a continuous batch's token budget; a static batch's prefill, every prompt in one pass
        # (sized at the workload's typical prompt: a padded worst case would reserve for lengths rarely drawn), as
        # many prompts as the pool beside that reserve can hold (not batch_size when fewer fit)
        if b.kind == "continuous":
            tokens, rows = b.max_tokens_per_iter, b.max_batch
        else:
            prompt = max(1, _mean_length(s.workload, "input_len"))
            per_request = (activation_reserve_bytes(model, prompt, 1, tp, prec.activations)
                           + model.kv_bytes_per_token_per_gpu(prec.kv, tp) / pp
                           * (prompt + _mean_length(s.workload, "output_len")))
            free = kv_capacity_bytes(hw, model, prec.weights, b.gpu_memory_utilization, 0.0, tp, pp)
            rows = max(1, min(b.batch_size, int(free // per_request)))
            tokens = rows * prompt
        if GRAPH_LOGITS_EVERY_ROW and s.execution.graphs == "paged":  # a replayed graph writes logits for every row
            rows = max(rows, min(tokens, GRAPH_MAX_ROWS))
        reserve = activation_reserve_bytes(model, tokens, rows, tp, prec.activations)
    kv_bytes = kv_capacity_bytes(hw, model, prec.weights, b.gpu_memory_utilization, reserve, tp, pp)
    per_token_per_gpu = model.kv_bytes_per_token_per_gpu(prec.kv, tp) / pp
    whole = CostModel(CostContext(model, hw, prec.weights, prec.kv, prec.activations, tp, **execution(s)))
    strategy, role_costs, extra_weights, extra_kv, kv_extra = build_strategy(s, model, hw, whole)
    kv_bytes -= extra_weights
    weight_per_gpu += extra_weights
    per_token_per_gpu += extra_kv
    setup = Setup(s, model, hw, whole, 0, weight_per_gpu, True, None, strategy, role_costs, kv_extra)
    problem = context_problem(s.workload, strategy, model.name, model.context_tokens)
    if problem:
        setup.fits, setup.message = False, problem
        return setup
    if kv_bytes <= 0 < kv_bytes + reserve and b.activation_reserve_gb is None:  # the weights fit; activations don't
        setup.fits = False
        widest = ("every prompt of the static batch in one pass" if b.kind == "static"
                  else "batching.max_tokens_per_iter")
        setup.message = (
            f"the activations of its widest pass ({tokens:,} tokens: {widest}) need {reserve / GB:.1f} GB per GPU, "
            f"more than the {(kv_bytes + reserve) / GB:.1f} GB left beside the weights on {hw.name}; batch fewer "
            "requests, use continuous batching with chunked prefill, or set batching.activation_reserve_gb")
        return setup
    if kv_bytes <= 0:
        setup.fits = False
        setup.message = (
            f"needs {model.weight_bytes(prec.weights) / GB:.1f} GB of weights"
            + (f" and {extra_weights * tp / GB:.1f} GB for the draft model {s.strategy.draft}" if extra_weights else "")
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
    on_finished: Callable[[int], None] | None = None  # called with how many requests each pass finished (progress)
    recorder: Recorder = field(init=False)

    def run(self) -> Result:
        st = self.setup
        s = st.scenario
        requests = generate_requests(s.workload, s.workload_seed)
        base = dict(scenario=s.name, hardware=st.hardware.name, model=st.model.name, strategy=s.strategy.kind,
                    batching=s.batching.kind, weight_bytes_per_gpu=st.weight_bytes_per_gpu)
        self.positions = self.wasted = self.padding = 0
        self.recorder = Recorder(len(requests))
        too_long = over_context(requests, st.strategy, st.model.context_tokens)
        fits, message = st.fits, st.message
        if fits and requests and too_long == len(requests):  # a sample none of whose requests fits the context
            fits, message = False, all_over_context(too_long, st.model.name, st.model.context_tokens)
        if not fits:
            return Result(**base, fits=False, message=message, num_requests=len(requests), rejected=len(requests))
        env = simpy.Environment()
        pp = s.parallel.pp
        blocks = st.kv_blocks_per_replica // pp
        replicas = [
            _Replica([
                _Executor(r, Scheduler(s.batching, KVBlockManager(blocks, s.batching.kv_block_tokens), st.strategy,
                                       np.random.default_rng([s.seed, r, slot]), st.kv_extra))
                for slot in range(pp)
            ])
            for r in range(s.parallel.replicas)
        ]
        self.positions = self.wasted = self.padding = 0
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
        result = summarize(
            self.recorder, requests, base,
            gpus=s.parallel.replicas * s.parallel.tp * pp, executors=s.parallel.replicas * pp,
            peak_bw=hw.hbm_bandwidth_bytes_per_s, peak_flops=hw.matmul_flops_per_s(
                s.precision.weights, s.precision.activations),
            kv_blocks=blocks * pp, kv_block_tokens=s.batching.kv_block_tokens, slo=s.slo,
            rejected=rejected, preemptions=preemptions, useful=st.strategy.useful,
        )
        extra = dict(st.strategy.summary())
        schedulers = [ex.scheduler for rep in replicas for ex in rep.executors]
        limited = sum(sc.kv_limited_batches for sc in schedulers)
        if limited:  # the KV pool, not batch_size, set these batches' size
            extra["kv_limited_batches"] = limited
            extra["smallest_kv_limited_batch"] = min(sc.smallest_kv_limited_batch for sc in schedulers
                                                     if sc.kv_limited_batches)
        if too_long:  # priced as if the model had the positions; a real server would refuse or truncate them
            extra["requests_over_context"] = too_long
        if s.strategy.kind != "ar" or self.padding:
            span = result.makespan_s or float("nan")
            extra.update(computed_positions_per_s=self.positions / span, wasted_positions=self.wasted,
                         padding_tokens=self.padding,
                         waste_fraction=(self.wasted + self.padding) / self.positions if self.positions else 0.0)
        return result.model_copy(update={"extra": extra})

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
        # activation hand-off between consecutive pipeline stages, per token of the pass
        send_s = self._stage_send_s() * (self.setup.scenario.parallel.pp - 1)
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
            if steps == 1:  # one pass: plain floats
                dur, flops, nbytes, mem_s, host = self._price1(plan)
                dur += send_s * plan.shape.tokens
                host += send_s * plan.shape.tokens
                yield env.timeout(dur)
                end = env.now
                upd = sched.update(plan)
                self.positions += plan.shape.tokens
                self.wasted += upd.wasted_positions
                self.padding += upd.padding_tokens
                for rid in upd.first_token:
                    rec.first_token_s[rid] = end
                for rid, _ in upd.finished:
                    rec.finish_s[rid] = end
                rep.outstanding -= len(upd.finished)
                if upd.finished and self.on_finished is not None:
                    self.on_finished(len(upd.finished))
                rec.pass_done(ex.replica, start, end - start, plan.shape.seqs, plan.shape.tokens,
                              int(upd.committed[0]), sched.kv.used_blocks, sched.num_running, sched.num_waiting,
                              flops * tp, nbytes * tp, mem_s, len(upd.first_token), host)
                continue
            dur, flops, nbytes, mem_s, launch = self.setup.target_cost.repeated_times(plan.shape, steps)
            host = send_s * plan.shape.tokens + host_s(self.setup, plan.shape) + host_iteration_s(self.setup)
            dur = dur + host
            host = launch + host
            if not sched.static and not sched.waiting and self._next_arrival_s is not None:
                # a request arriving mid-run could be admitted at the next pass boundary: stop at the first
                # boundary at or after its arrival, exactly where a pass-by-pass run would see it
                ends = start + np.cumsum(dur)
                steps = min(steps, int(np.searchsorted(ends, self._next_arrival_s, side="left")) + 1)
                dur, flops, nbytes, mem_s, host = (a[:steps] for a in (dur, flops, nbytes, mem_s, host))
            ends = start + np.cumsum(dur)
            yield env.timeout(float(ends[-1] - start))
            upd = sched.update(plan, steps=steps)
            self.positions += plan.shape.tokens * steps
            self.wasted += upd.wasted_positions
            self.padding += upd.padding_tokens
            for rid in upd.first_token:
                rec.first_token_s[rid] = ends[0]
            for rid, step in upd.finished:
                rec.finish_s[rid] = ends[step - 1]
            rep.outstanding -= len(upd.finished)
            if upd.finished and self.on_finished is not None:
                self.on_finished(len(upd.finished))
            # the cost model prices one GPU of the tensor-parallel group; the log counts all of them
            rec.passes_done(ex.replica, ends - dur, dur, plan.shape.seqs, plan.shape.tokens, upd.committed,
                            sched.kv.used_blocks, sched.num_running, sched.num_waiting, flops * tp, nbytes * tp,
                            mem_s, len(upd.first_token), host)

    def _price1(self, plan: Plan) -> tuple[float, float, float, float, float]:
        """(time, flops, bytes, memory-bound time, host time) of one iteration: every pass of it (the target over
        all its pipeline stages back to back; then other models' passes, e.g. speculative drafts)."""
        t, f, b, m = host_iteration_s(self.setup), 0.0, 0.0, 0.0
        h = t
        for role, shape in plan.passes:  # the serving loop's own host time per pass (calibrated) is added to each
            cost = self.setup.target_cost if role == "target" else self.setup.role_costs[role]
            pt = cost.pass_time(shape)
            loop_s = host_s(self.setup, shape)
            t, f, b, m = t + pt.time_s + loop_s, f + pt.flops, b + pt.bytes, m + pt.memory_bound_s
            h += loop_s + pt.host_launch_s
        return t, f, b, m, h

    def _stage_send_s(self) -> float:
        """Seconds per token to send activations to the next pipeline stage (hidden state over the link)."""
        st = self.setup
        m, hw = st.model, st.hardware
        per_token = m.hidden_size * BYTES_PER_ELEMENT[st.scenario.precision.activations]
        return per_token / hw.link_bandwidth_bytes_per_s


def host_s(setup: Setup, shape: PassShape) -> float:
    """The serving loop's host time for a pass (calibrated profiles; 0 for datasheet ones): per pass, per row, per
    sequence and per KV block of the sequences' block tables (their copy into the graph's inputs: the blocks of a
    pass's contexts, kv_read_tokens / block tokens), fitted to the `host` microbenchmark (graph-replayed passes
    of 1-320 rows), with a fixed part per strategy where its executor has one (host_pass_overhead_by_strategy_us).
    The row term is the staging of a graph's inputs, so it stops at GRAPH_MAX_ROWS: an eager pass stages through
    one vectorized build_meta, and its host's issuing of kernels is priced by launch_overhead_us (a line
    extrapolated past 512 rows (then the graphs' limit) priced an eager diffusion step's host at 18 ms against 2.9 measured,
    reports/h100/validation-notes.md). Profiles fitted per iteration (session 6 on) price passes past the graphs'
    rows with terms of their own (host_eager_pass_s: ~1.9 ms plus 0.2-0.5 us per row on the H100 machines), split
    by the same rule as the fit (sim.runtime_layout.host_eager)."""
    hw = setup.hardware
    if hw.host_eager_pass_overhead_us is not None and host_eager(shape.tokens):
        return hw.host_eager_pass_s(shape.tokens)
    blocks = shape.kv_read_tokens / setup.scenario.batching.kv_block_tokens
    return hw.host_pass_s(min(shape.tokens, GRAPH_MAX_ROWS), shape.seqs, setup.scenario.strategy.kind, blocks)


def host_iteration_s(setup: Setup) -> float:
    """The serving loop's host time per iteration on top of its passes' (calibrated profiles; 0 for datasheet
    ones), the strategy's own where its iterations chain several passes (host_iteration_overhead_by_strategy_us)."""
    return setup.hardware.host_iteration_s(setup.scenario.strategy.kind)


def simulate(scenario: Scenario, on_finished: Callable[[int], None] | None = None) -> tuple[Result, Recorder]:
    """Simulate a scenario: the Result and the recorder (per-pass log for time series). `on_finished` hears of
    every request finished (a progress bar)."""
    engine = Engine(prepare(scenario), on_finished=on_finished)
    result = engine.run()
    return result, engine.recorder
