"""Speculative, diffusion and block-diffusion decoding in the simulator."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.engine import Engine, prepare, simulate
from sim.scenario import BlockDiffusion as BDSpec
from sim.scenario import Diffusion as DSpec
from sim.scenario import Speculative as SpecSpec
from sim.scenario import load_scenario
from sim.strategies.base import even_schedule, mean_tokens_per_step
from sim.strategies.block_diffusion import BlockDiffusion
from sim.strategies.diffusion import Diffusion
from sim.strategies.speculative import Speculative, expected_committed, expected_committed_positional

BATCH1 = ["batching.batch_size=1", "workload.num_requests=2", "workload.input_len=512", "workload.output_len=256"]


def sim(*over):
    return simulate(load_scenario(None, list(over)))[0]


@pytest.mark.parametrize("alpha, k", [(0.8, 4), (0.5, 2), (0.95, 8), (0.0, 3), (1.0, 5)])
def test_committed_per_iteration_matches_the_truncated_geometric_mean(alpha, k):
    s = Speculative(SpecSpec(alpha=alpha, k=k), k, self_draft=False)
    ks = np.full(10_000, k)
    n = s.accepted(ks, np.random.default_rng(1)) + 1
    assert n.mean() == pytest.approx(expected_committed(alpha, k), rel=0.01)
    assert n.min() >= 1 and n.max() <= k + 1


def test_per_position_alphas_and_acceptance_trace(tmp_path):
    s = Speculative(SpecSpec(alpha=[0.9, 0.5, 0.1], k=3), 3, self_draft=False)
    n = s.accepted(np.full(20_000, 3), np.random.default_rng(2))
    # P(a >= 1) = .9, P(a >= 2) = .45, P(a >= 3) = .045
    assert n.mean() == pytest.approx(0.9 + 0.45 + 0.045, abs=0.02)
    trace = tmp_path / "acc.txt"
    trace.write_text("# accepted drafts\n0\n2\n4\n")
    s = Speculative(SpecSpec(acceptance_trace=str(trace), k=3), 3, self_draft=False)
    a = s.accepted(np.full(3000, 3), np.random.default_rng(3))
    assert set(a.tolist()) == {0, 2, 3}  # 4 is capped at k


def test_speculative_with_alpha_zero_costs_ar_plus_the_draft_work():
    ar = sim(*BATCH1)
    spec = sim(*BATCH1, "strategy.kind=speculative", "strategy.alpha=0", "strategy.k=4")
    setup = prepare(load_scenario(None, BATCH1 + ["strategy.kind=speculative", "strategy.k=4"]))
    from sim.passes import decode_shape

    draft_s = setup.role_costs["draft"].pass_time(decode_shape(1, 640)).time_s
    assert spec.tpot_s.mean > ar.tpot_s.mean + 4 * draft_s * 0.95
    assert spec.output_tokens == ar.output_tokens


def test_compare_ranks_speculative_above_ar_and_diffusion_compute_bound(cli_json):
    rows = cli_json("compare", "--set", "batching.batch_size=1", "--set", "workload.num_requests=2",
                    "--set", "strategy.kind=speculative", "--set", "strategy.draft=llama-3.2-1b",
                    "--set", "strategy.alpha=0.8", "--set", "strategy.k=4")
    by = {r["strategy"]: r for r in rows}
    speedup = by["speculative"]["output_throughput_tok_s"] / by["ar"]["output_throughput_tok_s"]
    assert 1.3 <= speedup <= 3.0
    assert by["diffusion"]["compute_bound_fraction"] > 0.5
    assert by["ar"]["memory_bound_fraction"] > 0.9


def test_k_auto_with_one_alpha_per_position_stays_within_the_list():
    """`k: auto` with alpha listed per draft position used to pick k from the list's mean and then crash on a list
    shorter than that k: k now goes no further than the list, and the expected tokens follow the positions."""
    r = sim(*BATCH1, "strategy.kind=speculative", "strategy.k=auto", "strategy.alpha=[0.9, 0.5]")
    assert 1 <= r.extra["k"] <= 2
    assert r.extra["expected_tokens_per_iteration"] == pytest.approx(expected_committed_positional([0.9, 0.5],
                                                                                                  r.extra["k"]))


def test_one_alpha_in_a_list_is_one_position():
    r = sim(*BATCH1, "strategy.kind=speculative", "strategy.k=auto", "strategy.alpha=[0.8]")
    assert r.extra["k"] == 1 and r.extra["expected_tokens_per_iteration"] == pytest.approx(1.8)


@given(alpha=st.floats(0, 0.999) | st.just(1.0), k=st.integers(1, 16))  # (1 - a^(k+1)) / (1 - a) loses digits near 1
def test_positional_expectation_with_equal_alphas_is_the_geometric_one(alpha, k):
    assert expected_committed_positional([alpha] * k, k) == pytest.approx(expected_committed(alpha, k), rel=1e-9)
    assert expected_committed_positional([0.9, 0.5, 0.1], 3) == pytest.approx(1 + 0.9 + 0.45 + 0.045)


def test_k_auto_is_at_least_as_good_as_fixed_k():
    auto = sim(*BATCH1, "strategy.kind=speculative", "strategy.k=auto", "strategy.alpha=0.9")
    for k in (1, 2, 4, 8):
        fixed = sim(*BATCH1, "strategy.kind=speculative", f"strategy.k={k}", "strategy.alpha=0.9")
        assert auto.output_throughput_tok_s >= 0.97 * fixed.output_throughput_tok_s


def test_diffusion_greedy_limits():
    # threshold >= 1: one token per step
    d = Diffusion(DSpec(threshold=1.0))
    m, G, state = np.zeros(50, dtype=np.int64), np.full(50, 64), np.zeros(50, dtype=np.int64)
    n, _, _ = d.commit(np.full(50, 10), m, G, state, np.random.default_rng(0))
    assert (n == 1).all()
    # steps = gen_length: gen_length passes, one token each
    r = sim("model=llada-8b", "strategy.kind=diffusion", "strategy.gen_length=64", "strategy.steps=64",
            "batching.batch_size=1", "workload.num_requests=1", "workload.input_len=100", "workload.output_len=64")
    assert r.passes == 64 and r.output_tokens == 64


def test_even_schedule_commits_exactly_the_scheduled_counts():
    counts = even_schedule(np.full(7, 32), np.full(7, 5), np.arange(7))
    assert counts.tolist() == [7, 7, 6, 6, 6, 0, 0]
    d = Diffusion(DSpec(steps=8, gen_length=32, cache="prefix", cache_block=8))
    P, m, G, state = np.array([5]), np.array([0]), np.array([32]), np.array([0])
    per_step = []
    rng = np.random.default_rng(0)
    while m[0] < 32:
        n, _, state = d.commit(P, m, G, state, rng)
        per_step.append(int(n[0]))
        m = m + n
    assert per_step == [4, 4] * 4  # 8 steps over 32 tokens, blocks of 8: 2 steps of 4 per block


def test_threshold_means_follow_fast_dllm():
    assert mean_tokens_per_step(0.9) == pytest.approx(3.25)
    assert mean_tokens_per_step(0.75) == pytest.approx((5.12 + 4.24) / 2)
    assert mean_tokens_per_step(1.2) == 1.0
    d = BlockDiffusion(BDSpec(threshold=0.7, block_size=4096))
    left = np.full(20_000, 10_000)
    from sim.strategies.base import draw_tokens_per_step

    assert draw_tokens_per_step(d.mean, left, np.random.default_rng(0)).mean() == pytest.approx(5.12, rel=0.02)


def test_block_size_one_prices_like_ar():
    ar = sim(*BATCH1)
    bd = sim(*BATCH1, "strategy.kind=block_diffusion", "strategy.block_size=1", "strategy.steps_per_block=1")
    assert bd.output_throughput_tok_s == pytest.approx(ar.output_throughput_tok_s, rel=0.05)
    assert bd.passes == ar.passes


def test_block_size_gen_length_prices_like_prefix_cached_diffusion():
    common = ["batching.batch_size=1", "workload.num_requests=1", "workload.input_len=512",
              "workload.output_len=256", "model=llada-8b"]
    bd = sim(*common, "strategy.kind=block_diffusion", "strategy.block_size=256", "strategy.steps_per_block=64")
    df = sim(*common, "strategy.kind=diffusion", "strategy.cache=prefix", "strategy.cache_block=256",
             "strategy.steps=64")
    assert bd.passes == df.passes == 64
    assert bd.makespan_s == pytest.approx(df.makespan_s, rel=0.05)


def test_diffusion_waste_and_dynamic_window():
    full = sim("model=llada-8b", "strategy.kind=diffusion", "strategy.gen_length=256", "workload.output_len=100",
               "batching.batch_size=1", "workload.num_requests=1")
    dyn = sim("model=llada-8b", "strategy.kind=diffusion", "strategy.gen_length=256", "strategy.window=dynamic",
              "workload.output_len=100", "batching.batch_size=1", "workload.num_requests=1")
    assert full.output_tokens == dyn.output_tokens == 100
    assert full.extra["padding_tokens"] == 156  # committed past the real output
    assert dyn.extra["padding_tokens"] == 0
    assert dyn.makespan_s < full.makespan_s
    assert full.extra["computed_positions_per_s"] > full.output_throughput_tok_s


def test_bad_strategy_inputs(cli, tmp_path):
    code, _, err = cli("compare", "--strategies", "ar,magic")
    assert code == 2 and "unknown strategy 'magic'" in err
    code, _, err = cli("whatif", "--scale", "bandwith=2")
    assert code == 2 and "unknown factor 'bandwith'" in err
    code, _, err = cli("simulate", "--set", "strategy.kind=speculative", "--set", "strategy.k=40")
    assert code == 2 and "k must be between 1 and 16" in err
    bad = tmp_path / "acc.txt"
    bad.write_text("1\ntwo\n")
    code, _, err = cli("simulate", "--set", "strategy.kind=speculative", "--set", f"strategy.acceptance_trace={bad}")
    assert code == 2 and f"{bad}:2: expected a whole number" in err


def test_whatif_shows_the_memory_wall_asymmetry(cli_json):
    rows = cli_json("whatif", "--scale", "bandwidth=2", "--scale", "flops=2", "--strategies", "ar,diffusion",
                    "--set", "batching.batch_size=1", "--set", "workload.num_requests=1")
    gain = {(r["strategy"], r["chip"].split()[-1]): r["gain"] for r in rows if " " in r["chip"]}
    assert gain[("ar", "bandwidthx2")] > 1.7 and gain[("ar", "flopsx2")] < 1.1
    # (diffusion's steps replay graphs that write every row's float32 logits: some HBM traffic stays in its way)
    assert gain[("diffusion", "flopsx2")] > 1.4 and gain[("diffusion", "bandwidthx2")] < 1.25
    assert all(set(r["result"]) >= {"output_throughput_tok_s", "tpot_s", "mbu"} for r in rows)


STRATS = {
    "speculative": ["strategy.kind=speculative", "strategy.k=3"],
    "speculative-self": ["strategy.kind=speculative", "strategy.draft=self", "strategy.draft_layers=4"],
    "diffusion": ["strategy.kind=diffusion", "strategy.gen_length=64", "strategy.cache=dual"],
    "diffusion-dyn": ["strategy.kind=diffusion", "strategy.window=dynamic", "strategy.threshold=0.7"],
    "block_diffusion": ["strategy.kind=block_diffusion", "strategy.block_size=8"],
    "block_diffusion-unfused": ["strategy.kind=block_diffusion", "strategy.block_size=4",
                                "strategy.fuse_kv_write=false", "strategy.steps_per_block=2"],
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(STRATS)), kind=st.sampled_from(["static", "continuous"]),
       chunked=st.booleans(), n=st.integers(0, 12), rate=st.floats(1, 40), blocks=st.integers(40, 300),
       seed=st.integers(0, 5))
def test_every_strategy_conserves_tokens_and_kv(name, kind, chunked, n, rate, blocks, seed):
    size = "batch_size" if kind == "static" else "max_batch"
    over = STRATS[name] + [f"batching.kind={kind}", f"batching.{size}=6", "batching.kv_block_tokens=8",
                           "workload.kind=poisson", f"workload.rate_qps={rate}", f"workload.num_requests={n}",
                           "workload.input_len.dist=uniform", "workload.input_len.low=1",
                           "workload.input_len.high=200", "workload.output_len.dist=uniform",
                           "workload.output_len.low=1", "workload.output_len.high=80", f"seed={seed}"]
    if kind == "continuous":
        over += [f"batching.chunked_prefill={str(chunked).lower()}", "batching.max_tokens_per_iter=256"]
    s = load_scenario(None, over)
    setup = prepare(s)
    setup.kv_blocks_per_replica = blocks
    engine = Engine(setup)
    r = engine.run()
    from sim.workload import generate_requests

    reqs = generate_requests(s.workload, s.workload_seed)
    assert r.completed + r.rejected == len(reqs)
    done = ~np.isnan(engine.recorder.finish_s)
    gen = s.strategy.gen_length if s.strategy.kind == "diffusion" else None
    want = sum(min(q.output_tokens, gen) if gen else q.output_tokens for q, d in zip(reqs, done) if d)
    assert r.output_tokens == want
    assert sum(row[5] for row in engine.recorder.passes) == want
    assert all(row[6] <= blocks for row in engine.recorder.passes)
