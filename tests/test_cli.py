"""CLI behaviour: exit codes, one-line errors, JSON keys, determinism."""

import pytest

JSON_KEYS = ["output_throughput_tok_s", "request_throughput_req_s", "ttft_s", "tpot_s", "e2e_s", "makespan_s",
             "mbu", "mfu", "memory_bound_fraction", "compute_bound_fraction"]


def test_default_simulate_prints_a_table(cli):
    code, out, _ = cli("simulate")
    assert code == 0
    assert "llama-3.1-8b on h100-sxm" in out and "output throughput" in out and "TPOT" in out


def test_json_has_the_promised_keys(cli_json):
    r = cli_json("simulate")
    for k in JSON_KEYS:
        assert k in r
    for k in ["ttft_s", "tpot_s", "e2e_s"]:
        assert set(r[k]) >= {"mean", "p50", "p90", "p99"}


def test_sensitivity_to_device_time(cli, cli_json):
    """A datasheet profile has no host time, so a closed static batch's throughput moves against the compute and
    memory time and its ITL with it: elasticities a little under 1 in size, as the per-kernel overheads do not
    scale; the table says what 5% slower compute and memory do."""
    r = cli_json("simulate", "--sensitivity", "--set", "batching.batch_size=8", "--set", "workload.num_requests=8")
    tput, itl = r["sensitivity"]["output_throughput_tok_s"], r["sensitivity"]["itl_p50_s"]
    assert -1.0 <= tput["elasticity"] < -0.8 and 0.8 < itl["elasticity"] <= 1.0
    assert tput["elasticity"] == pytest.approx(-itl["elasticity"], abs=0.01) and tput["jitter"] < 0.01
    assert "sensitivity" not in cli_json("simulate")
    assert cli_json("simulate", "--sensitivity", "--set", "workload.input_len=200000")["sensitivity"] is None
    code, out, _ = cli("simulate", "--sensitivity", "--set", "workload.kind=poisson", "--set", "workload.rate_qps=4")
    assert code == 0 and "sensitivity to compute and memory time" in out and "if 5% slower" in out


def test_file_and_overrides(cli_json, tmp_path):
    r = cli_json("simulate", "examples/default.yaml", "--set", "batching.batch_size=32")
    assert r["completed"] == 32
    assert r["mean_batch"] == pytest.approx(32)


def test_batch1_is_memory_bound_and_near_roofline(cli_json):
    r = cli_json("simulate", "--set", "batching.batch_size=1", "--set", "workload.num_requests=1")
    assert r["memory_bound_fraction"] > 0.9
    roofline_s = (16.06e9 + 768 * 131072) / 3.35e12  # all weights + the longest KV, datasheet bandwidth
    assert roofline_s < r["tpot_s"]["mean"] < 1.5 * roofline_s


def test_large_prefill_is_compute_bound(cli_json):
    r = cli_json("simulate", "--set", "batching.batch_size=64", "--set", "workload.num_requests=64",
                 "--set", "workload.input_len=2048", "--set", "workload.output_len=1")
    assert r["compute_bound_fraction"] > 0.9 and r["host_bound_fraction"] == 0.0


def test_a_static_prefill_is_reserved_for_as_many_prompts_as_fit(cli_json):
    """512 prompts of 2,048 tokens in one pass would need 1M x 28,672 x 2 bytes = 60 GB for the gate/up output
    alone: the reserve is sized for the prompts the pool beside it can hold, and the batches are cut to those."""
    r = cli_json("simulate", "--set", "batching.batch_size=512", "--set", "workload.num_requests=512",
                 "--set", "workload.input_len=2048", "--set", "workload.output_len=1")
    assert r["fits"] and r["extra"]["kv_limited_batches"] >= 1 and r["mean_batch"] < 512
    # one prompt of 100,000 tokens beside 70.6 GB of weights per GPU: not even its activations fit
    r = cli_json("simulate", "--set", "model=llama-3.1-70b", "--set", "parallel.tp=2", "--set",
                 "batching.batch_size=1", "--set", "workload.num_requests=1", "--set", "workload.input_len=100000",
                 "--set", "workload.output_len=8")
    assert not r["fits"] and "activations of its widest pass (100,000 tokens" in r["message"]
    assert "batching.activation_reserve_gb" in r["message"]


def test_same_seed_same_result_byte_for_byte(cli):
    args = ["simulate", "--json", "--set", "batching.kind=continuous", "--set", "workload.kind=poisson",
            "--set", "workload.rate_qps=4", "--set", "workload.num_requests=50"]
    assert cli(*args)[1] == cli(*args)[1]
    assert cli(*args)[1] != cli(*args, "--set", "seed=1")[1]


def test_model_that_does_not_fit_is_a_result(cli_json):
    r = cli_json("simulate", "--set", "model=llama-3.1-70b")
    assert r["fits"] is False
    assert r["message"].startswith("needs 141.1 GB of weights, h100-sxm has 85.52 GB")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "hardware=h100-sxx"], "unknown chip 'h100-sxx' (did you mean h100-sxm?); known: a100-80gb-sxm"),
        (["--set", "model=llama-9b"], "unknown model 'llama-9b'"),
        (["--set", "batching.batch_size=0"], "batching.batch_size: Input should be greater than or equal to 1"),
        (["--set", "workload.output_len=0"], "workload.output_len: Input should be greater than or equal to 1"),
        (["--set", "batching.kind=continuous", "--set", "batching.kv_block_tokens=0"],
         "batching.kv_block_tokens: Input should be greater than or equal to 1"),
        (["--set", "workload.kind=poisson", "--set", "workload.rate_qps=0"],
         "workload.rate_qps: Input should be greater than 0"),
        (["--set", "batching.bogus=1"], "unknown key 'batching.bogus'; valid keys: activation_reserve_gb, batch_size"),
        (["--set", "bogus=1"], "unknown key 'bogus'; valid keys: batching, execution, hardware, model"),
        (["--set", "batching.kind=dynamic"], "batching: unknown kind dynamic; allowed: 'static', 'continuous'"),
        (["--set", "precision.weights=fp3"], "precision.weights: Input should be 'bf16', 'fp16', 'fp8', 'int8' or"),
        (["--set", "noequals"], "expected PATH=VALUE"),
        (["--set", "execution.attention_reads=bogus"],
         "execution.attention_reads: Input should be 'row_groups' or 'sequence'"),
        (["--set", "batching.batch_size=true"], "batching.batch_size: expected a number, not a boolean (got true)"),
        (["--set", "strategy.kind=speculative", "--set", "strategy.alpha=[0.8, false]"],
         "strategy.alpha: expected a number at [1], not a boolean (got false)"),
        (["--set", "seed=-1"], "seed: Input should be greater than or equal to 0 (got -1)"),
        (["--set", "workload.seed=-5"], "workload.seed: Input should be greater than or equal to 0"),
        (["--set", "batching.kind=continuous", "--set", "workload.kind=gamma", "--set", "workload.rate_qps=8",
          "--set", "workload.cv=inf"], "workload.cv: Input should be a finite number"),
        (["--set", "workload.kind=poisson", "--set", "workload.rate_qps=.inf"], "workload.rate_qps: Input should be a"),
        (["--set", "strategy=speculative"], "strategy: expected a mapping with a kind, e.g. --set "
                                            "strategy.kind=speculative"),
        (["--set", "strategy.kind=speculative", "--set", "strategy.k=autox"],
         "strategy.k: Input should be a valid integer or 'auto' (got 'autox')"),
        (["--set", "model.num_layers=2"], "model: an inline model needs name, hidden_size"),
        (["--set", "execution.graphs=2", "--set", "execution.attention_reads=2"],
         "execution.graphs: Input should be 'paged', 'decode', 'all' or 'none' (got 2)"),  # not the sibling's
        (["--set", "batching.kind=[a]"], "batching: unknown kind ['a']; allowed: 'static', 'continuous'"),
        (["--set", "precision=fp8"], "precision: Input should be a valid dictionary"),  # no 'kind' advice
        (["--set", "strategy.kind=block_diffusion", "--set", "strategy.steps_per_block=64"],
         "steps_per_block 64 exceeds block_size 32"),
        (["--set", "strategy.kind=diffusion", "--set", "strategy.gen_length=16", "--set", "strategy.steps=32"],
         "steps 32 exceeds gen_length 16"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(cli, args, message):
    code, out, err = cli("simulate", *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_malformed_yaml_scenario(cli, tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("model: llama-3.1-8b\nbatching: {kind: static, batch_size: 8\n")
    code, _, err = cli("simulate", str(f))
    assert code == 2
    assert f"{f}:3:1: malformed YAML" in err


def test_missing_scenario_file(cli, tmp_path):
    code, _, err = cli("simulate", str(tmp_path / "nope.yaml"))
    assert code == 2 and "does not exist" in err


def test_profiles_list_and_show(cli):
    code, out, _ = cli("profiles")
    assert code == 0 and "h100-sxm" in out and "ridge" in out
    code, out, _ = cli("profiles", "show", "h200")
    assert code == 0 and "hbm_bandwidth_tb_s: 4.8" in out and "ridge_flop_per_byte_bf16" in out
    code, _, err = cli("profiles", "show", "h300")
    assert code == 2 and "unknown chip 'h300'" in err


def _trace(tmp_path, name, text):
    f = tmp_path / name
    f.write_text(text)
    return ["--set", "workload.kind=trace", "--set", f"workload.path={f}"]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda t: ["--set", "hardware.scale=3"], "hardware.scale: Input should be a valid dictionary"),
        (lambda t: ["--set", "hardware={profile: h100-sxm, scale: {bandwidth: .nan}}"],
         "hardware.scale: bandwidth: Input should be a finite number"),
        (lambda t: ["--set", "workload.input_len={dist: lognormal, mean: 100, min: 50, max: 10}"],
         "min (50) must not exceed max (10)"),
        (lambda t: ["--set", "workload.kind=trace", "--set", f"workload.path={t}"], "is a folder; expected a CSV"),
        (lambda t: _trace(t, "nan.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,10\nnan,10,10\n"),
         "nan.csv:3: expected an arrival time"),
        (lambda t: _trace(t, "inf.jsonl", '{"arrival_s": "inf", "prompt_tokens": 5, "output_tokens": 5}\n'),
         "inf.jsonl:1: expected a JSON object"),
        (lambda t: _trace(t, "head.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\n"), "holds no requests"),
        (lambda t: ["--timeseries", str(t)], "--timeseries: "),
    ],
)
def test_more_bad_input_is_one_line(cli, tmp_path, make, message):
    """Inputs found by a review to end in a traceback, a silent default or a dropped row."""
    code, _, err = cli("simulate", *make(tmp_path))
    assert code == 2, err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00 not text"])
def test_empty_or_binary_scenario_file(cli, tmp_path, content):
    f = tmp_path / "s.yaml"
    f.write_bytes(content)
    code, _, err = cli("simulate", str(f))
    assert code == 2 and str(f) in err and ("empty" in err or "not UTF-8" in err)


def test_whatif_report_where_the_base_chip_does_not_fit(cli, tmp_path):
    """The 70B model fits only the 2x-capacity variant: the report says 'does not fit' where it does not (it used to
    end in a TypeError on the missing gain); a workload past the context fits no chip, which is one sentence."""
    code, _, err = cli("report", "whatif", "--strategies", "ar", "--set", "model=llama-3.1-70b", "--out",
                       str(tmp_path / "a"))
    assert code == 0, err
    md = (tmp_path / "a" / "whatif.md").read_text()
    assert "| ar | does not fit | does not fit | does not fit |" in md and "nan" not in md
    code, _, err = cli("report", "whatif", "--strategies", "ar", "--set", "workload.input_len=200000", "--out",
                       str(tmp_path / "b"))
    assert code == 2 and "no strategy fits on any chip" in err and "context of 131,072" in err


def test_validate_predict_says_which_points_do_not_fit(cli, tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text("name: g\nbase:\n  model: llama-2-7b\n  workload: {kind: closed, num_requests: 2, output_len: 8}\n"
                    "axes:\n  workload.input_len: [256, 8192]\n")
    runs = tmp_path / "runs.jsonl"
    runs.write_text("")
    code, out, err = cli("validate", str(plan), "--predict", "--runs", str(runs), "--hardware", "h100-sxm")
    assert code == 0, err
    row = next(line for line in out.splitlines() if "g-01" in line)
    assert "does not fit" in row  # it used to print a predicted 0.0 tok/s


def test_an_unusable_path_from_deeper_down_is_one_line(cli, tmp_path):
    """An OSError on a path the user named, raised past the up-front checks, is one line too (clikit)."""
    taken = tmp_path / "taken.csv"
    taken.write_text("")
    code, _, err = cli("report", "whatif", "--out", str(taken))
    assert code == 2 and err.strip() == f"error: cannot use {taken}: File exists"
    code, _, err = cli("whatif", "--strategies", "ar", "--scale", "bandwidth=2,bandwidth=3")
    assert code == 2 and "bandwidth is given twice" in err
    acc = tmp_path / "acc"
    acc.mkdir()
    code, _, err = cli("simulate", "--set", "strategy.kind=speculative", "--set", f"strategy.acceptance_trace={acc}")
    assert code == 2 and "strategy.acceptance_trace: cannot read" in err and "Traceback" not in err


def test_a_key_given_twice_is_named(cli, tmp_path):
    f = tmp_path / "dup.yaml"
    f.write_text("model: llama-3.1-8b\nbatching: {kind: static}\nbatching: {kind: continuous}\n")
    code, _, err = cli("simulate", str(f))
    assert code == 2 and f"{f}:3:1: malformed YAML: key 'batching' is given twice" in err


def test_a_looping_yaml_alias_is_one_sentence(cli, tmp_path):
    f = tmp_path / "loop.yaml"
    f.write_text("a: &a [*a]\n")
    code, _, err = cli("simulate", str(f))
    assert code == 2 and "anchors must not loop" in err
    f.write_text("base: &b {kind: static}\nbatching: *b\n")  # an alias that does not loop is fine
    from sim.yaml_file import read_yaml

    assert read_yaml(f)["batching"] == {"kind": "static"}


def test_yaml_merge_keys_still_load(tmp_path):
    """The duplicate-key check must leave `<<: *anchor` to YAML's merge (explicit keys win)."""
    from sim.yaml_file import read_yaml

    f = tmp_path / "m.yaml"
    f.write_text("defaults: &d {kind: static, batch_size: 8}\nbatching:\n  <<: *d\n  batch_size: 16\n")
    assert read_yaml(f)["batching"] == {"kind": "static", "batch_size": 16}


def test_tp_message_lists_the_degrees_that_split_the_heads(cli):
    code, _, err = cli("simulate", "--set", "model=llama-3.2-3b", "--set", "parallel.tp=6")
    assert code == 2 and "24 attention heads and 8 KV heads evenly; choose one of 1, 2, 4, 8, 24" in err


@pytest.mark.parametrize("args, message", [
    (["simulate", "--set", "hardware=/nonexistent/chip.yaml"], "hardware profile file /nonexistent/chip.yaml does not exist"),
    (["whatif", "--strategies", "ar", "--scale", "bandwidth=nan"], "--scale bandwidth: must be a finite number > 0, got nan"),
    (["whatif", "--strategies", "ar", "--scale", "flops=inf"], "--scale flops: must be a finite number > 0, got inf"),
])
def test_profile_paths_and_scale_factors_are_checked(cli, args, message):
    code, _, err = cli(*args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_profile_and_model_files_of_the_wrong_shape_are_one_line(cli, tmp_path):
    profile = tmp_path / "neg.yaml"
    profile.write_text(open("hw_profiles/h100-sxm.yaml").read().replace("bf16: 989.4", "bf16: -5"))
    code, _, err = cli("simulate", "--set", f"hardware={profile}")
    assert code == 2 and "peak_tflops.bf16: expected a positive TFLOP/s rate, got -5" in err
    listed = tmp_path / "config.json"
    listed.write_text("[1, 2]")
    code, _, err = cli("simulate", "--set", f"model={listed}")
    assert code == 2 and "expected a JSON object (a Hugging Face config.json), got a list" in err


def test_switching_a_sections_kind_from_the_command_line_drops_the_files_keys_it_has_no_field_for(cli_json):
    """examples/default.yaml's static batching has batch_size; --set batching.kind=continuous keeps the rest."""
    r = cli_json("simulate", "examples/default.yaml", "--set", "batching.kind=continuous", "--set",
                 "workload.kind=poisson", "--set", "workload.rate_qps=8", "--set", "workload.num_requests=8")
    assert r["batching"] == "continuous" and r["completed"] == 8


def test_a_what_if_chip_is_named_in_the_tables(cli):
    from sim.hardware import Scale, load_profile

    """rich read the name's '[bandwidthx2]' as a markup tag and dropped it from titles and columns."""
    code, out, _ = cli("simulate", "--set", "hardware.scale.bandwidth=2", "--set", "workload.num_requests=2")
    assert code == 0 and "h100-sxm[bandwidthx2]" in out
    code, out, _ = cli("whatif", "--scale", "bandwidth=2", "--set", "hardware.scale.bandwidth=2", "--strategies", "ar",
                       "--set", "workload.num_requests=2")
    assert code == 0 and "h100-sxm[bandwidthx2]" in out  # the base column is the 2x chip, named as such
    assert load_profile("h100-sxm").scaled(Scale(bandwidth=2)).scaled(Scale(bandwidth=2)).name == (
        "h100-sxm[bandwidthx4]")


def test_a_draft_too_large_is_named_in_the_message(cli_json):
    r = cli_json("simulate", "--set", "strategy.kind=speculative", "--set", "strategy.draft=llama-3.1-70b")
    assert not r["fits"] and "141.1 GB for the draft model llama-3.1-70b" in r["message"]


def test_validate_predict_prices_a_plan_on_its_own_chips_calibrated_profile(cli, tmp_path):
    """The H200 transfer plan used to be priced on the H100's calibration when --hardware was left out; and with no
    measured runs the command now says so rather than printing a table of dashes alone."""
    code, out, err = cli("validate", "examples/validation/plan-h200.yaml", "--predict", "--out",
                         str(tmp_path / "none.jsonl"))
    assert code == 0 and "predicted on h200-from-h100" in out.replace("\n", " ")
    assert "no measured point of this plan to compare with" in err
    code, _, err = cli("validate", "examples/validation/plan-h200.yaml", "--predict", "--runs",
                       "reports/h100/microbench.jsonl")
    assert code == 0 and "no measured point of this plan in reports/h100/microbench.jsonl" in " ".join(err.split())
    code, _, err = cli("validate", "examples/validation/plan-h200.yaml", "--predict", "--host-probes",
                       str(tmp_path / "p.jsonl"))
    assert code == 2 and "--host-probes: only when running the grid" in err
