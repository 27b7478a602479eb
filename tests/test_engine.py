"""The SimPy engine and the scheduler: hand-checked event logs, invariants over random scenarios, load behaviour."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.cost import PassTime
from sim.engine import Engine, prepare, simulate
from sim.scenario import load_scenario
from sim.workload import Request


class LinearCost:
    """A pass costs 1 s plus 10 ms per query token: easy to check by hand."""

    def pass_time(self, shape):
        return PassTime(1.0 + 0.01 * shape.tokens, 0.0, 0.0, 0.0)

    def repeated_times(self, shape, steps):
        t = np.full(steps, 1.0 + 0.01 * shape.tokens)
        z = np.zeros(steps)
        return t, z, z, z, z


def run_with(overrides, requests, max_repeat=1 << 20):
    s = load_scenario(None, overrides)
    setup = prepare(s)
    setup.target_cost = LinearCost()
    import sim.engine as eng

    original = eng.generate_requests
    eng.generate_requests = lambda workload, seed: requests
    try:
        engine = Engine(setup, max_repeat=max_repeat)
        result = engine.run()
    finally:
        eng.generate_requests = original
    return result, engine.recorder


TWO = [Request(0, 0.0, 4, 3), Request(1, 0.0, 2, 1)]


def test_static_two_requests_event_log():
    r, rec = run_with(["batching.batch_size=2", "workload.num_requests=2"], TWO)
    # prefill padded to 4 tokens x 2 rows = 8 tokens: 1.08 s; then 2 decode passes of 2 rows (the finished row
    # still holds its slot): 1.02 s each. Request 1 (1 output token) finishes with the prefill.
    assert [round(p[2], 6) for p in rec.passes] == [1.08, 1.02, 1.02]
    assert rec.first_token_s.tolist() == pytest.approx([1.08, 1.08])
    assert rec.finish_s.tolist() == pytest.approx([3.12, 1.08])
    assert r.output_tokens == 4 and r.completed == 2


def test_continuous_two_requests_event_log():
    r, rec = run_with(["batching.kind=continuous", "workload.num_requests=2"], TWO)
    # one pass prefills both (4 + 2 tokens); then request 0 decodes alone (1 token per pass)
    assert [round(p[2], 6) for p in rec.passes] == [1.06, 1.01, 1.01]
    assert rec.first_token_s.tolist() == pytest.approx([1.06, 1.06])
    assert rec.finish_s.tolist() == pytest.approx([3.08, 1.06])
    assert r.ttft_s.mean == pytest.approx(1.06)
    assert r.tpot_s.mean == pytest.approx(1.01)  # only request 0 has more than one token


def test_late_arrival_joins_the_running_batch():
    reqs = [Request(0, 0.0, 3, 4), Request(1, 1.5, 2, 2)]
    _, rec = run_with(["batching.kind=continuous", "workload.num_requests=2"], reqs)
    # t=0: prefill r0 (3 tokens) -> 1.03; decode r0 -> 2.04 (r1 arrived at 1.5, admitted at the next boundary);
    # pass 3: decode r0 + prefill r1 (1 + 2 tokens) -> 3.07; pass 4: both decode -> 4.09 (r0 done: 4 tokens; r1 done)
    assert [round(p[2], 6) for p in rec.passes] == [1.03, 1.01, 1.03, 1.02]
    assert rec.finish_s.tolist() == pytest.approx([4.09, 4.09])
    assert rec.first_token_s[1] == pytest.approx(3.07)


def test_chunked_prefill_splits_long_prompts():
    reqs = [Request(0, 0.0, 10, 2)]
    _, rec = run_with(["batching.kind=continuous", "batching.chunked_prefill=true",
                       "batching.max_tokens_per_iter=4", "workload.num_requests=1"], reqs)
    assert [p[4] for p in rec.passes] == [4, 4, 2, 1]  # tokens per pass: three chunks, then one decode
    assert rec.first_token_s[0] == pytest.approx(3.10)


def test_first_token_after_a_chunk_without_a_step_is_recorded():
    """A prompt whose last chunk leaves its final token for the next pass gets its first token there, also when
    that pass starts a run of identical decode passes (the fast path once dropped it: TTFT NaN)."""
    reqs = [Request(0, 0.0, 3, 6), Request(1, 1.5, 4, 3)]
    over = ["batching.kind=continuous", "batching.chunked_prefill=true", "batching.max_tokens_per_iter=4",
            "workload.num_requests=2"]
    for max_repeat in (1, 1 << 20):
        r, rec = run_with(over, reqs, max_repeat=max_repeat)
        # 1.03: prefill r0; 2.04: decode r0; 3.08: decode r0 + 3 of r1's 4 prompt tokens; 4.10: decode r0 + r1's
        # last prompt token, whose logits give r1's first token
        assert [p[4] for p in rec.passes][:4] == [3, 1, 4, 2]
        assert rec.first_token_s.tolist() == pytest.approx([1.03, 4.10])
        assert not np.isnan(r.ttft_s.mean)


def test_preemption_recomputes_and_still_finishes():
    # 3 blocks of 4 tokens = 12 KV positions; two requests of 4-token prompts and 6 outputs cannot both grow
    reqs = [Request(0, 0.0, 4, 6), Request(1, 0.0, 4, 6)]
    over = ["batching.kind=continuous", "batching.kv_block_tokens=4", "workload.num_requests=2"]
    s = load_scenario(None, over)
    setup = prepare(s)
    setup.target_cost = LinearCost()
    setup.kv_blocks_per_replica = 5
    import sim.engine as eng

    original = eng.generate_requests
    eng.generate_requests = lambda workload, seed: reqs
    try:
        engine = Engine(setup)
        r = engine.run()
    finally:
        eng.generate_requests = original
    assert r.preemptions >= 1
    assert r.completed == 2 and r.output_tokens == 12
    assert max(p[6] for p in engine.recorder.passes) <= 5


def test_run_of_identical_passes_equals_pass_by_pass():
    over = ["batching.kind=continuous", "workload.kind=poisson", "workload.rate_qps=20", "workload.num_requests=60",
            "workload.input_len.dist=uniform", "workload.input_len.low=10", "workload.input_len.high=900",
            "workload.output_len.dist=uniform", "workload.output_len.low=1", "workload.output_len.high=300"]
    s = load_scenario(None, over)
    fast = Engine(prepare(s)).run()
    slow = Engine(prepare(s), max_repeat=1).run()
    assert fast.passes == slow.passes
    assert fast.output_tokens == slow.output_tokens
    assert fast.makespan_s == pytest.approx(slow.makespan_s, rel=1e-9)
    assert fast.e2e_s.p99 == pytest.approx(slow.e2e_s.p99, rel=1e-9)
    assert fast.itl_s.mean == pytest.approx(slow.itl_s.mean, rel=1e-9)
    assert fast.ttft_s.mean == pytest.approx(slow.ttft_s.mean, rel=1e-9)


def test_zero_requests_is_a_valid_empty_result():
    r, _ = simulate(load_scenario(None, ["workload.num_requests=0"]))
    assert r.completed == 0 and r.output_throughput_tok_s == 0 and r.ttft_s.mean is None


def test_request_that_can_never_fit_is_rejected():
    reqs = [Request(0, 0.0, 100, 10), Request(1, 0.0, 4, 2)]
    s = load_scenario(None, ["batching.kind=continuous", "workload.num_requests=2"])
    setup = prepare(s)
    setup.kv_blocks_per_replica = 2  # 32 positions
    import sim.engine as eng

    original = eng.generate_requests
    eng.generate_requests = lambda workload, seed: reqs
    try:
        r = Engine(setup).run()
    finally:
        eng.generate_requests = original
    assert r.rejected == 1 and r.completed == 1


# -- invariants over random scenarios (hypothesis) ---------------------------------------------------------------

scenarios = st.fixed_dictionaries({
    "kind": st.sampled_from(["static", "continuous"]),
    "chunked": st.booleans(),
    "size": st.integers(1, 16),
    "block": st.sampled_from([1, 4, 16]),
    "rate": st.floats(0.5, 50),
    "n": st.integers(0, 25),
    "prompt_hi": st.integers(1, 3000),
    "out_hi": st.integers(1, 400),
    "blocks": st.integers(20, 400),
    "model": st.sampled_from(["llama-3.1-8b", "mixtral-8x7b", "smollm2-135m"]),
    "seed": st.integers(0, 3),
})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=scenarios)
def test_invariants(p):
    size = "batch_size" if p["kind"] == "static" else "max_batch"
    over = [f"batching.kind={p['kind']}", f"batching.{size}={p['size']}", f"batching.kv_block_tokens={p['block']}",
            "workload.kind=poisson", f"workload.rate_qps={p['rate']}", f"workload.num_requests={p['n']}",
            "workload.input_len.dist=uniform", "workload.input_len.low=1", f"workload.input_len.high={p['prompt_hi']}",
            "workload.output_len.dist=uniform", "workload.output_len.low=1", f"workload.output_len.high={p['out_hi']}",
            f"model={p['model']}", f"seed={p['seed']}"]
    if p["kind"] == "continuous":
        over += [f"batching.chunked_prefill={str(p['chunked']).lower()}", "batching.max_tokens_per_iter=2048"]
    if p["model"] == "mixtral-8x7b":
        over += ["parallel.tp=2"]
    s = load_scenario(None, over)
    setup = prepare(s)
    setup.kv_blocks_per_replica = p["blocks"]  # small pools force waiting, rejection and preemption
    engine = Engine(setup)
    r = engine.run()
    rec = engine.recorder
    from sim.workload import generate_requests

    reqs = generate_requests(s.workload, s.workload_seed)
    # KV blocks in use never exceed capacity
    assert all(row[6] <= p["blocks"] for row in rec.passes)
    # every request either finishes or is counted rejected; finished ones produced exactly what they asked for
    assert r.completed + r.rejected == len(reqs)
    done = ~np.isnan(rec.finish_s)
    assert r.output_tokens == sum(q.output_tokens for q, d in zip(reqs, done) if d)
    assert sum(row[5] for row in rec.passes) == r.output_tokens
    # causality: first token after arrival, finish after first token
    assert np.all(rec.first_token_s[done] >= rec.arrival_s[done])
    assert np.all(rec.finish_s[done] >= rec.first_token_s[done])
    # never faster than the chip's roofs: each pass takes at least its bytes over peak bandwidth and its FLOPs over
    # peak FLOP/s, and no token costs less than 2 FLOPs per active parameter
    hw, m = setup.hardware, setup.model
    tp = s.parallel.tp
    for row in rec.passes:
        assert row[2] >= row[10] / tp / hw.hbm_bandwidth_bytes_per_s * (1 - 1e-9)
        assert row[2] >= row[9] / tp / hw.peak_flops_per_s("bf16") * (1 - 1e-9)
    if not m.is_moe:  # every pass reads every layer's weights at least once (MoE passes read the experts touched)
        layers_bytes = m.num_layers * (m.layer_params - m.norm_params_per_layer) * 2 / tp
        assert all(row[2] >= layers_bytes / hw.hbm_bandwidth_bytes_per_s * (1 - 1e-9) for row in rec.passes)


def test_same_seed_same_result():
    over = ["batching.kind=continuous", "workload.kind=gamma", "workload.rate_qps=5", "workload.cv=3",
            "workload.num_requests=100", "workload.output_len.dist=lognormal", "workload.output_len.mean=100"]
    a, b = simulate(load_scenario(None, over))[0], simulate(load_scenario(None, over))[0]
    assert a.model_dump_json() == b.model_dump_json()


# -- load behaviour ----------------------------------------------------------------------------------------------

LIGHT = ["batching.kind=continuous", "workload.kind=poisson", "workload.num_requests=200",
         "workload.input_len=467", "workload.output_len=256"]


def test_light_load_itl_is_the_batch1_pass_time():
    r, _ = simulate(load_scenario(None, LIGHT + ["workload.rate_qps=0.5"]))
    from sim.cost import CostContext, pass_cost
    from sim.passes import decode_shape

    setup = prepare(load_scenario(None, LIGHT + ["workload.rate_qps=0.5"]))
    batch1 = pass_cost(CostContext(setup.model, setup.hardware), decode_shape(1, 467 + 128)).time_s
    assert r.itl_s.mean == pytest.approx(batch1, rel=0.10)


def test_latency_rises_monotonically_with_load_and_saturates():
    rates = [0.5, 2, 8, 20, 60]
    results = [simulate(load_scenario(None, LIGHT + [f"workload.rate_qps={q}", "workload.num_requests=600"]))[0]
               for q in rates]
    ttft = [r.ttft_s.mean for r in results]
    itl = [r.itl_s.mean for r in results]
    assert ttft == sorted(ttft) and itl == sorted(itl)
    # saturated: throughput stops following the offered load and requests wait: TTFT grows tenfold
    assert results[-1].request_throughput_req_s < 0.8 * rates[-1]
    assert results[-1].ttft_s.mean > 10 * results[0].ttft_s.mean


@pytest.mark.parametrize("rate", [2.0, 6.0])
def test_continuous_beats_static_on_mean_e2e(rate):
    common = ["workload.kind=poisson", f"workload.rate_qps={rate}", "workload.num_requests=200",
              "workload.input_len.dist=lognormal", "workload.input_len.mean=500",
              "workload.output_len.dist=lognormal", "workload.output_len.mean=200"]
    static = simulate(load_scenario(None, common + ["batching.kind=static", "batching.batch_size=32"]))[0]
    cont = simulate(load_scenario(None, common + ["batching.kind=continuous", "batching.max_batch=32"]))[0]
    assert cont.e2e_s.mean <= static.e2e_s.mean


def test_replicas_and_router_spread_load():
    base = LIGHT + ["workload.rate_qps=30"]
    one = simulate(load_scenario(None, base))[0]
    four = simulate(load_scenario(None, base + ["parallel.replicas=4", "parallel.router=least_outstanding"]))[0]
    assert four.e2e_s.mean < one.e2e_s.mean
    assert four.completed == one.completed == 200


def test_pipeline_parallel_runs_and_fits_70b():
    over = ["model=llama-3.1-70b", "parallel.tp=2", "parallel.pp=2", "batching.kind=continuous",
            "workload.kind=poisson", "workload.rate_qps=1", "workload.num_requests=30"]
    r = simulate(load_scenario(None, over))[0]
    assert r.fits and r.completed == 30


def test_execution_section_prices_the_serving_software():
    """Batch-1 speculative decoding of a small model (its passes are short enough for launches to matter): with
    graphs for decode passes only (vLLM's default) the k + 1-token verify is launched from the host and the iteration
    is slower; without fused epilogues every small pass has its norm, RoPE and SwiGLU kernels of its own and is slower
    too. Neither changes a token count."""
    from sim.scenario import load_scenario

    sets = ["model=smollm2-135m", "strategy.kind=speculative", "strategy.draft=self", "strategy.draft_layers=8", "strategy.k=4",
            "batching.batch_size=1", "workload.num_requests=1"]
    base, _ = simulate(load_scenario(None, sets))
    eager_verify, _ = simulate(load_scenario(None, sets + ["execution.graphs=decode"]))
    unfused, _ = simulate(load_scenario(None, sets + ["execution.fused_epilogues=false"]))
    assert eager_verify.output_throughput_tok_s < base.output_throughput_tok_s
    assert unfused.output_throughput_tok_s < base.output_throughput_tok_s
    assert eager_verify.output_tokens == unfused.output_tokens == base.output_tokens


@pytest.mark.parametrize("strategy", [["strategy.kind=ar"],
                                      ["strategy.kind=speculative", "strategy.draft=self", "strategy.draft_layers=4",
                                       "strategy.k=3", "strategy.alpha=0.7"]])
def test_host_time_per_iteration_is_added_once_per_iteration(strategy):
    """A profile's host_iteration_overhead_us (calibrated) lengthens every iteration by exactly that much, once,
    however many forward passes it runs (a speculative iteration: drafts and a verify), in runs of repeated decodes
    and pass by pass alike."""
    import dataclasses

    over = strategy + ["batching.kind=static", "batching.batch_size=4", "workload.num_requests=4",
                       "workload.input_len=64", "workload.output_len=40"]
    s = load_scenario(None, over)
    base = Engine(prepare(s)).run()
    for repeat in (1 << 20, 1):
        setup = prepare(s)
        setup = dataclasses.replace(setup, hardware=setup.hardware.model_copy(
            update={"host_iteration_overhead_us": 1000.0}))
        slow = Engine(setup, max_repeat=repeat).run()
        assert slow.passes == base.passes
        assert slow.makespan_s - base.makespan_s == pytest.approx(1e-3 * base.passes, rel=1e-6)


def test_host_time_per_iteration_is_the_strategys_own():
    """A part per iteration given for speculative only (host_iteration_overhead_by_strategy_us, what the calibration
    fits: only speculative iterations chain several passes) lengthens each speculative iteration by that much and
    leaves an AR run as it was; a strategy without one takes host_iteration_overhead_us."""
    import dataclasses

    common = ["batching.kind=static", "batching.batch_size=4", "workload.num_requests=4", "workload.input_len=64",
              "workload.output_len=40"]
    spec = ["strategy.kind=speculative", "strategy.draft=self", "strategy.draft_layers=4", "strategy.k=3",
            "strategy.alpha=0.7"]
    for over, added_us in ((spec, 1000.0), (["strategy.kind=ar"], 250.0)):
        s = load_scenario(None, over + common)
        base = Engine(prepare(s)).run()
        setup = prepare(s)
        setup = dataclasses.replace(setup, hardware=setup.hardware.model_copy(update={
            "host_iteration_overhead_by_strategy_us": {"speculative": 1000.0}, "host_iteration_overhead_us": 250.0}))
        slow = Engine(setup).run()
        assert slow.passes == base.passes
        assert slow.makespan_s - base.makespan_s == pytest.approx(added_us * 1e-6 * base.passes, rel=1e-6)


def test_host_time_is_its_own_share_of_busy_time_not_compute():
    """Host time per iteration lengthens passes without using the GPU: it is reported as the host's share, and the
    memory and compute shares are those of the device time alone (the host used to count as compute-bound)."""
    import dataclasses

    s = load_scenario(None, ["batching.batch_size=1", "workload.num_requests=1", "workload.output_len=64"])
    base = Engine(prepare(s)).run()
    for repeat in (1 << 20, 1):  # runs of repeated decodes and pass by pass alike
        setup = prepare(s)
        setup = dataclasses.replace(setup, hardware=setup.hardware.model_copy(
            update={"host_iteration_overhead_us": 1e4}))
        slow = Engine(setup, max_repeat=repeat).run()
        host_s = 1e-2 * slow.passes
        busy = slow.pass_time_s.mean * slow.passes
        assert slow.host_bound_fraction == pytest.approx(host_s / busy, rel=1e-6)
        assert slow.memory_bound_fraction * busy == pytest.approx(base.memory_bound_fraction * (busy - host_s),
                                                                  rel=1e-6)
        assert slow.memory_bound_fraction + slow.compute_bound_fraction + slow.host_bound_fraction == (
            pytest.approx(1.0))
    assert base.host_bound_fraction == 0.0


def test_static_batches_the_kv_pool_cuts_short_are_counted():
    over = ["batching.batch_size=64", "workload.num_requests=128", "workload.input_len=4096",
            "workload.output_len=8192"]
    r = simulate(load_scenario(None, over))[0]
    assert r.extra["kv_limited_batches"] >= 1
    assert 1 <= r.extra["smallest_kv_limited_batch"] < 64
    assert r.mean_batch < 64
    roomy = simulate(load_scenario(None, over[:1] + ["workload.num_requests=64", "workload.input_len=128",
                                                     "workload.output_len=64"]))[0]
    assert "kv_limited_batches" not in roomy.extra


def test_tensor_parallel_replicates_kv_heads_beyond_their_count():
    """llama-3.1-70b has 8 KV heads: at tp = 16 every GPU still holds one whole KV head (Megatron-LM / vLLM
    replicate it), so its KV per token and per GPU is tp = 8's, not half of it."""
    from sim.model import load_model

    m = load_model("llama-3.1-70b")
    assert m.kv_bytes_per_token_per_gpu("bf16", 16) == m.kv_bytes_per_token_per_gpu("bf16", 8)
    assert m.kv_bytes_per_token_per_gpu("bf16", 4) == pytest.approx(m.kv_bytes_per_token("bf16") / 4)
    assert m.replicated_kv_weight_bytes(8) == 0 and m.replicated_kv_weight_bytes(16) == pytest.approx(
        80 * 2 * 128 * 8192 * 2 / 2)  # each GPU: one K and one V head of 128 where an even share is half of one
    tokens = {tp: prepare(load_scenario(None, ["model=llama-3.1-70b", f"parallel.tp={tp}"])).kv_blocks_per_replica
              for tp in (8, 16)}
    assert tokens[16] < 1.3 * tokens[8]  # more room only from the weights' smaller share, not from halved heads


def test_more_kv_capacity_does_not_slow_chunked_prefill_under_load():
    """With 2x capacity more long prompts run at once and passes mix prompt chunks with more decodes; priced by the
    mean rows per sequence those passes cost ~3x, and the what-if report's 2x-capacity chip came out 0.63x."""
    over = ["batching.kind=continuous", "batching.max_batch=512", "batching.chunked_prefill=true",
            "workload.kind=poisson", "workload.rate_qps=50", "workload.num_requests=120", "workload.input_len=8192",
            "workload.output_len=256"]
    base = simulate(load_scenario(None, over))[0]
    big = simulate(load_scenario(None, over + ["hardware.scale.capacity=2"]))[0]
    assert big.kv_capacity_tokens > 2 * base.kv_capacity_tokens
    assert big.output_throughput_tok_s >= 0.97 * base.output_throughput_tok_s
