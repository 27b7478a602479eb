"""`memwall run`: the measured result has the simulator's schema; no CUDA is one clear sentence."""

import json

import pytest

torch = pytest.importorskip("torch")

TINY = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 256, "max_position_embeddings": 256}


def test_run_and_simulate_share_the_schema(cli, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    args = ["--set", f"model={tmp_path}", "--set", "workload.num_requests=3", "--set", "workload.input_len=12",
            "--set", "workload.output_len=4", "--set", "batching.kind=continuous", "--json"]
    out = tmp_path / "runs.jsonl"
    code, measured, err = cli("run", "--device", "cpu", "--out", str(out), *args)
    assert code == 0, err
    code, predicted, err = cli("simulate", *args)
    assert code == 0, err
    m, p = json.loads(measured), json.loads(predicted)
    assert set(m) == set(p)
    assert m["source"] == "measured" and p["source"] == "simulated"
    assert m["completed"] == p["completed"] == 3 and m["output_tokens"] == p["output_tokens"] == 12
    assert m["passes"] == p["passes"]  # the same scheduler made the same decisions
    record = json.loads(out.read_text().splitlines()[0])
    assert record["status"] == "ok" and len(record["passes"]) == m["passes"]
    # a rerun skips what is already on disk
    code, again, said = cli("run", "--device", "cpu", "--out", str(out), *args)
    assert code == 0 and again == "" and len(out.read_text().splitlines()) == 1
    assert "1 of 1 scenarios already recorded" in said
    code, _, err = cli("run", "--device", "cpu", "--weights", str(tmp_path / "nope"), *args)
    assert code == 2 and "--weights: " in err and "does not exist" in err


def test_requests_past_the_context_are_one_sentence_before_any_weight(cli, tmp_path):
    """The simulator prices and counts requests past the context; the runtime has no positions for them, so `run`
    refuses the workload in one sentence (it used to build the model and stop mid-run on a RoPE table bound)."""
    (tmp_path / "config.json").write_text(json.dumps({**TINY, "max_position_embeddings": 64}))
    args = ["--set", f"model={tmp_path}", "--set", "workload.num_requests=8", "--set", "workload.input_len.dist=uniform",
            "--set", "workload.input_len.low=40", "--set", "workload.input_len.high=70", "--set", "workload.output_len=4"]
    code, out, err = cli("simulate", "--json", *args)
    assert code == 0 and json.loads(out)["extra"]["requests_over_context"] > 0
    code, _, err = cli("run", "--device", "cpu", *args)
    assert code == 2 and "requests need more positions than" in err
    assert "'s 64 (prompt + what the strategy commits)" in err
    assert "Traceback" not in err
    # a config that does not state its context: the simulator does not check it, the runtime's 4,096 still binds
    (tmp_path / "config.json").write_text(json.dumps({**TINY, "max_position_embeddings": None}))
    long = ["--set", f"model={tmp_path}", "--set", "workload.num_requests=1", "--set", "workload.input_len=5000",
            "--set", "workload.output_len=4"]
    code, _, err = cli("run", "--device", "cpu", *long)
    assert code == 2 and "4,096 where the model does not state it" in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_run_without_cuda_is_one_sentence(cli):
    code, _, err = cli("run")
    assert code == 2
    assert "no CUDA GPU" in err and "--device cpu" in err and len(err.strip().splitlines()) == 1


STRATEGIES = [
    ("static", ["strategy.kind=speculative", "strategy.draft=self", "strategy.draft_layers=1", "strategy.k=3",
                "strategy.alpha=0.7"]),
    ("continuous", ["strategy.kind=speculative", "strategy.draft=self", "strategy.draft_layers=1", "strategy.k=2"]),
    ("static", ["strategy.kind=diffusion", "strategy.gen_length=8", "strategy.steps=4", "strategy.cache=dual",
                "strategy.cache_block=4"]),
    ("static", ["strategy.kind=block_diffusion", "strategy.block_size=4", "strategy.steps_per_block=2"]),
    ("continuous", ["strategy.kind=block_diffusion", "strategy.block_size=4", "strategy.threshold=0.9"]),
]


@pytest.mark.parametrize("batching,sets", STRATEGIES)
def test_run_executes_every_strategy(cli, tmp_path, batching, sets):
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    args = ["--set", f"model={tmp_path}", "--set", "workload.num_requests=3", "--set", "workload.input_len=12",
            "--set", "workload.output_len=8", "--set", f"batching.kind={batching}", "--json"]
    for kv in sets:
        args += ["--set", kv]
    out = tmp_path / "runs.jsonl"
    code, measured, err = cli("run", "--device", "cpu", "--out", str(out), *args)
    assert code == 0, err
    m = json.loads(measured)
    assert m["completed"] == 3 and m["output_tokens"] == 24
    extra = m["extra"]
    assert sum(extra["committed_per_iteration"]) == 24 and extra["wasted_positions"] >= 0
    if "speculative" in sets[0]:
        assert extra["acceptance"] == "forced" and sum(extra["accepted_histogram"]) > 0
    record = json.loads(out.read_text().splitlines()[0])
    passes = record["strategy_passes"]
    assert {p[0] for p in passes} & {"draft", "verify", "diffusion_step", "block_step"}
    assert all(len(p) == len(record["strategy_pass_columns"]) for p in passes)
    for role, tokens, logit_rows, seqs, kv, pairs, device_s in passes:  # shapes the cost model can price
        assert 1 <= seqs <= tokens and 1 <= logit_rows <= tokens and kv >= tokens and pairs >= tokens
        assert device_s > 0


def test_validate_runs_a_plan_then_predicts_it(cli, tmp_path):
    """`memwall validate PLAN` runs every point of a sweep-style plan (resumably), `--predict` prices the same
    points and compares them with what was measured, per point and per strategy. With --host-probes, one host case
    of the microbenchmark runs after each point measured, its record (with per-iteration host times, which the host
    fit reads) appended to that file, and none of them is a grid point."""
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"""name: tiny-grid
base:
  model: {tmp_path}
  batching: {{kind: static, batch_size: 2}}
  workload: {{kind: closed, num_requests: 2, input_len: 10, output_len: 6}}
grids:
  - name: g
    axes:
      strategy:
        - {{kind: ar}}
        - {{kind: speculative, draft: self, draft_layers: 1, k: 2, alpha: 0.5}}
""")
    out = tmp_path / "runs.jsonl"
    probes = tmp_path / "probes" / "host.jsonl"
    code, _, err = cli("validate", str(plan), "--device", "cpu", "--out", str(out), "--host-probes", str(probes))
    assert code == 0, err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["scenario"]["name"] for r in records] == ["g-00", "g-01"]
    host = [json.loads(line) for line in probes.read_text().splitlines()]
    assert len(host) == 2 and len({r["key"] for r in host}) == 2  # the host cases in turn, one per point
    for r in host:
        assert r["kind"] == "host" and r["status"] == "ok" and r["probe"] is True and r["iterations"]
        assert r["key"].startswith("host/")
    code, _, err = cli("validate", str(plan), "--device", "cpu", "--out", str(out),  # resumes: nothing to do,
                       "--host-probes", str(probes))  # and no probe after a point it skips
    assert code == 0 and len(out.read_text().splitlines()) == 2 and len(probes.read_text().splitlines()) == 2
    code, _, err = cli("validate", str(plan), "--device", "cpu", "--out", str(out), "--host-probes", str(tmp_path))
    assert code == 2 and "--host-probes" in err and "folder" in err and "Traceback" not in err
    every = tmp_path / "every" / "host.jsonl"  # --probe-every 2 reaches the probes: one case after the 2nd point
    code, _, err = cli("validate", str(plan), "--device", "cpu", "--out", str(tmp_path / "runs2.jsonl"),
                       "--host-probes", str(every), "--probe-every", "2")
    assert code == 0, err
    assert [json.loads(line)["key"] for line in every.read_text().splitlines()] == [host[0]["key"]]
    code, text, err = cli("validate", str(plan), "--predict", "--hardware", "h100-sxm", "--runs", str(out), "--json")
    assert code == 0, err
    report = json.loads(text)
    assert [p["name"] for p in report["points"]] == ["g-00", "g-01"]
    assert set(report["summary"]) == {"ar", "speculative"}
    for p in report["points"]:
        tp = p["metrics"]["output_throughput_tok_s"]
        assert tp["measured"] > 0 and tp["predicted"] > 0 and tp["rel_error"] == tp["predicted"] / tp["measured"] - 1
    assert report["summary"]["speculative"]["pass_time_s"]["n"] > 0  # drafts and verifies priced one by one


def test_validate_bad_plan_is_one_sentence(cli, tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text("name: p\ngrids:\n  - name: g\n    axes: {batching.batch_size: [1, 0]}\n")
    code, _, err = cli("validate", str(plan), "--predict")
    assert code == 2 and "batch_size" in err and len(err.strip().splitlines()) == 1


def test_a_failing_probe_does_not_stop_the_grid(monkeypatch, tmp_path):
    """What runs after each point (validate's --host-probes) may fail; the grid goes on, every point recorded."""
    import validation.run as run
    from sim.scenario import scenario_from_dict

    monkeypatch.setattr(run, "run_scenario", lambda s, device, weights=None, progress=None: {
        "key": s.name, "status": "ok", "scenario": s.model_dump(mode="json")})

    def probe(index):
        raise ZeroDivisionError("no passes")

    scenarios = [scenario_from_dict({"name": f"p{i}"}) for i in range(3)]
    out = tmp_path / "runs.jsonl"
    records = run.run_all(scenarios, "cpu", out, after_point=probe)
    assert [r["scenario"]["name"] for r in records] == ["p0", "p1", "p2"]
    assert len(out.read_text().splitlines()) == 3


def test_probes_follow_the_points_place_in_the_plan(monkeypatch, tmp_path):
    """--probe-every 2: a host case after the plan's 2nd, 4th, ... point, the cases in their order, counted by the
    point's place in the plan, so that a grid resumed in another process probes the same cases beside the same
    points; 0 is refused."""
    import validation.microbench as mb
    from validation.microbench_host import HostProbes

    monkeypatch.setattr(mb, "run_case", lambda env, case, weights: {"key": case.key, "kind": "host", "status": "ok"})
    probes = HostProbes("cpu", tmp_path / "probes.jsonl", tiny=True, every=2)
    ran = [probes(i) for i in range(5)]
    assert [r is None for r in ran] == [True, False, True, False, True]
    assert [r["key"] for r in ran if r] == [c.key for c in probes.cases[:2]]
    assert len((tmp_path / "probes.jsonl").read_text().splitlines()) == 2
    resumed = HostProbes("cpu", tmp_path / "again.jsonl", tiny=True, every=2)  # points 0-2 done by another process
    assert [resumed(i)["key"] for i in (3, 5)] == [c.key for c in probes.cases[1:3]]
    with pytest.raises(ValueError, match="every"):
        HostProbes("cpu", tmp_path / "p.jsonl", every=0)


def test_host_probes_sit_beside_their_strategy_on_the_h100_grid():
    """With --probe-every 2 on plan-h100.yaml each of the 22 host cases runs once, after a point of its own strategy,
    but for one: the speculative continuous-batching case follows load-39 (block diffusion). The pairing rests on
    the order of both lists and on 44 = 2 x 22: this test says when either changes."""
    from pathlib import Path

    from validation.microbench_host import probe_case
    from validation.microbench_plan import plan
    from validation.validate import plan_scenarios

    repo = Path(__file__).resolve().parents[2]
    points = plan_scenarios(repo / "examples" / "validation" / "plan-h100.yaml")
    cases = plan(only="host")
    pairs = [(p.name, p.strategy.kind, c.shape["strategy"]) for i, p in enumerate(points)
             if (c := probe_case(cases, 2, i)) is not None]
    assert len(pairs) == len(cases) == 22 and len({c.key for c in cases}) == 22
    assert [name for name, point, case in pairs if point != case] == ["load-39"]


def test_probe_every_zero_is_one_sentence(cli, tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text("name: p\ngrids:\n  - name: g\n    axes: {batching.batch_size: [1]}\n")
    code, _, err = cli("validate", str(plan), "--device", "cpu", "--host-probes", str(tmp_path / "h.jsonl"),
                       "--probe-every", "0")
    assert code == 2 and "--probe-every" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, _, err = cli("validate", str(plan), "--device", "cpu", "--probe-every", "2")  # --host-probes forgotten
    assert code == 2 and "--host-probes" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_model_too_big_for_the_cpu_is_one_sentence_before_any_weight(cli, monkeypatch, tmp_path):
    """The 8B model on a CPU used to be ended by the out-of-memory killer with no message."""
    import validation.run as run_module

    monkeypatch.setattr(run_module, "_available_bytes", lambda: 24e9)
    code, _, err = cli("run", "--device", "cpu", "--out", str(tmp_path / "r.jsonl"))
    assert code == 2 and "llama-3.1-8b needs 32.1 GB of fp32 weights on the CPU" in err and "24.0 GB free" in err


def test_a_torn_last_record_is_cut_before_the_run_appends(cli, tmp_path):
    """A kill mid-write left a partial line that the next record was glued to (both then unreadable)."""
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    args = ["--set", f"model={tmp_path}", "--set", "workload.num_requests=2", "--set", "workload.input_len=8",
            "--set", "workload.output_len=2"]
    out = tmp_path / "runs.jsonl"
    out.write_text('{"key": "x", "status": "ok", "scen')
    code, _, err = cli("run", "--device", "cpu", "--out", str(out), *args)
    assert code == 0, err
    lines = out.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["status"] == "ok"
