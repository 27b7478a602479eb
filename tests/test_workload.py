import json

import numpy as np
import pytest

from sim.errors import UserError
from sim.scenario import Closed, Gamma, LogNormal, Poisson, Trace, Uniform
from sim.workload import generate_requests, read_trace, sample_lengths


def test_shipped_traces_load():
    conv = read_trace(Trace(path="data/traces/splitwise_conv.csv"))
    code = read_trace(Trace(path="data/traces/splitwise_code.csv"))
    assert len(conv) == 19366 and len(code) == 8819
    assert np.mean([r.prompt_tokens for r in conv]) == pytest.approx(1155, abs=1)
    assert np.mean([r.output_tokens for r in code]) == pytest.approx(28, abs=1)
    assert conv[-1].arrival_s == pytest.approx(3501.72, abs=0.01)


def test_time_scale_and_max_requests():
    half = read_trace(Trace(path="data/traces/splitwise_conv.csv", time_scale=0.5, max_requests=100))
    full = read_trace(Trace(path="data/traces/splitwise_conv.csv", max_requests=100))
    assert len(half) == 100
    assert half[-1].arrival_s == pytest.approx(full[-1].arrival_s / 2)


def test_azure_and_jsonl_formats(tmp_path):
    azure = tmp_path / "azure.csv"
    azure.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n"
                     "2023-11-16 18:15:50.9951690,396,109\n")
    reqs = read_trace(Trace(path=str(azure)))
    assert [r.prompt_tokens for r in reqs] == [374, 396]
    assert reqs[1].arrival_s == pytest.approx(4.314579, abs=1e-6)
    jl = tmp_path / "t.jsonl"
    jl.write_text("\n".join(json.dumps({"arrival_s": t, "prompt_tokens": 10, "output_tokens": 5}) for t in [2, 1]))
    assert [r.arrival_s for r in read_trace(Trace(path=str(jl)))] == [0.0, 1.0]


@pytest.mark.parametrize("text, message", [
    ("arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,10,5\n1.0,ten,5\n", r":3: expected whole-number token"),
    ("arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,10,5\n1.0,10\n", r":3: expected 3 comma-separated"),
    ("arrived_at,num_prefill_tokens,num_decode_tokens\nsoon,10,5\n", r":2: expected an arrival time"),
    ("arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,10,0\n", r":2: token counts must be >= 1"),
    ("when,prompt,output\n0,1,1\n", r":1: unknown trace header"),
])
def test_malformed_trace_names_file_and_line(tmp_path, text, message):
    f = tmp_path / "bad.csv"
    f.write_text(text)
    with pytest.raises(UserError, match=message):
        read_trace(Trace(path=str(f)))


def test_malformed_jsonl(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"arrival_s": 0, "prompt_tokens": 3, "output_tokens": 1}\n{"arrival_s": 1}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: expected a JSON object with arrival_s"):
        read_trace(Trace(path=str(f)))


def test_synthetic_arrivals_and_lengths():
    rng = np.random.default_rng(0)
    lens = sample_lengths(LogNormal(mean=1000, sigma=0.5), 20000, rng)
    assert lens.mean() == pytest.approx(1000, rel=0.02)
    u = sample_lengths(Uniform(low=3, high=5), 1000, rng)
    assert set(u.tolist()) == {3, 4, 5}
    poisson = generate_requests(Poisson(rate_qps=10, num_requests=5000), seed=1)
    gaps = np.diff([r.arrival_s for r in poisson])
    assert gaps.mean() == pytest.approx(0.1, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)
    bursty = generate_requests(Gamma(rate_qps=10, cv=3, num_requests=5000), seed=1)
    g = np.diff([r.arrival_s for r in bursty])
    assert g.mean() == pytest.approx(0.1, rel=0.15) and g.std() / g.mean() == pytest.approx(3, rel=0.15)
    assert all(r.arrival_s == 0 for r in generate_requests(Closed(num_requests=3), seed=0))


def test_trace_end_to_end_through_the_cli(cli_json, tmp_path):
    r = cli_json("simulate", "--set", "workload.kind=trace", "--set", "workload.path=data/traces/splitwise_code.csv",
                 "--set", "workload.max_requests=300", "--set", "workload.time_scale=0.5",
                 "--set", "batching.kind=continuous", "--set", "batching.chunked_prefill=true",
                 "--timeseries", str(tmp_path / "ts.csv"))
    assert r["completed"] + r["rejected"] == 300
    lines = (tmp_path / "ts.csv").read_text().splitlines()
    assert lines[0].startswith("replica,start_s,duration_s,seqs,tokens")
    assert len(lines) == r["passes"] + 1


def test_bad_trace_through_the_cli(cli, tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,10,5\n1.0,x,5\n")
    code, _, err = cli("simulate", "--set", "workload.kind=trace", "--set", f"workload.path={f}")
    assert code == 2 and f"{f}:3: expected whole-number token counts" in err


def test_a_workload_no_request_of_which_fits_the_context_does_not_fit():
    from sim.engine import simulate
    from sim.scenario import scenario_from_dict

    # llama-2-7b has 4,096 positions: 4,000 + 97 cannot fit, 4,000 + 96 can; reported like weights that do not fit
    too_long = {"model": "llama-2-7b", "workload": {"num_requests": 2, "input_len": 4000, "output_len": 97}}
    r = simulate(scenario_from_dict(too_long))[0]
    assert not r.fits and r.rejected == 2
    assert "at least 4,097 positions" in r.message and "llama-2-7b's context of 4,096" in r.message
    fits = simulate(scenario_from_dict({**too_long, "workload": {**too_long["workload"], "output_len": 96}}))[0]
    assert fits.completed == 2 and "requests_over_context" not in fits.extra


def test_diffusion_needs_its_gen_length_of_positions():
    from sim.engine import simulate
    from sim.scenario import scenario_from_dict

    # llada-8b: 4,096 positions; a full window commits gen_length whatever output_len says
    base = {"model": "llada-8b", "strategy": {"kind": "diffusion", "gen_length": 1024, "steps": 64},
            "workload": {"num_requests": 1, "input_len": 3800, "output_len": 64}}
    assert not simulate(scenario_from_dict(base))[0].fits
    short = {**base, "strategy": {"kind": "diffusion", "gen_length": 256, "steps": 64},
             "workload": {"num_requests": 1, "input_len": 512, "output_len": 8192}}
    assert simulate(scenario_from_dict(short))[0].fits


def test_an_inline_model_without_a_stated_context_is_not_checked():
    from sim.engine import simulate
    from sim.model import load_model
    from sim.scenario import scenario_from_dict

    spec = {"name": "tiny", "hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2,
            "intermediate_size": 128, "vocab_size": 256}
    assert load_model(spec).context_tokens is None and load_model("llama-2-7b").context_tokens == 4096
    r = simulate(scenario_from_dict({"model": spec, "workload": {"num_requests": 1, "input_len": 8192,
                                                                   "output_len": 4}}))[0]
    assert r.fits and "requests_over_context" not in r.extra


def test_requests_beyond_the_context_in_a_wide_distribution_are_counted():
    from sim.engine import simulate
    from sim.scenario import scenario_from_dict
    from sim.workload import shortest

    assert shortest(Uniform(low=3000, high=6000)) == 3000 and shortest(LogNormal(mean=10, min=7)) == 7
    s = scenario_from_dict({"model": "llama-2-7b", "workload": {
        "num_requests": 20, "input_len": {"dist": "uniform", "low": 3000, "high": 6000}, "output_len": 16}})
    requests = generate_requests(s.workload, s.workload_seed)
    expected = sum(r.prompt_tokens + r.output_tokens > 4096 for r in requests)
    assert 0 < expected < 20
    assert simulate(s)[0].extra["requests_over_context"] == expected


def test_a_sample_all_of_whose_requests_are_past_the_context_does_not_fit():
    """The lognormal's shortest possible request (min 1) fits, but all eight drawn ones are ~20,000 tokens."""
    from sim.engine import simulate
    from sim.scenario import scenario_from_dict

    r = simulate(scenario_from_dict({"model": "llama-2-7b", "workload": {
        "num_requests": 8, "input_len": {"dist": "lognormal", "mean": 20000, "sigma": 0.1, "max": 40000},
        "output_len": 16}}))[0]
    assert not r.fits and r.message.startswith("workload: all 8 requests need more positions than llama-2-7b's")


def test_a_config_json_context_is_read_from_its_own_key_and_a_bad_one_named():
    from sim.model import from_hf_config

    cfg = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
           "intermediate_size": 128, "vocab_size": 256}
    assert from_hf_config({**cfg, "n_positions": 2048}, "m").context_tokens == 2048
    assert from_hf_config({**cfg, "max_position_embeddings": None}, "m").context_tokens is None
    with pytest.raises(UserError, match="m: config.json seq_length: expected a positive integer"):
        from_hf_config({**cfg, "seq_length": 0}, "m")



def test_length_only_trace_arrives_at_rate_qps(tmp_path):
    f = tmp_path / "lengths.csv"
    f.write_text("num_prefill_tokens,num_decode_tokens\n" + "".join(f"{10 + i},5\n" for i in range(2000)))
    assert {r.arrival_s for r in read_trace(Trace(path=str(f)))} == {0.0}
    reqs = read_trace(Trace(path=str(f), rate_qps=4.0, seed=3))
    gaps = np.diff([r.arrival_s for r in reqs])
    assert reqs[0].arrival_s == 0.0 and np.all(gaps >= 0)
    assert gaps.mean() == pytest.approx(0.25, rel=0.1)
    assert [r.prompt_tokens for r in reqs] == list(range(10, 2010))  # file order kept
    assert [r.arrival_s for r in reqs] == [r.arrival_s for r in read_trace(Trace(path=str(f), rate_qps=4.0, seed=3))]


def test_rate_qps_is_refused_for_a_trace_with_its_own_times():
    with pytest.raises(UserError, match=r"workload.rate_qps: .* has arrival times of its own"):
        read_trace(Trace(path="data/traces/splitwise_conv.csv", rate_qps=2.0))
