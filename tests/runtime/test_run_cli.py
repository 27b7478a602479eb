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
    code, again, _ = cli("run", "--device", "cpu", "--out", str(out), *args)
    assert code == 0 and again == "" and len(out.read_text().splitlines()) == 1


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
    assert {r for r, _, _ in record["strategy_passes"]} & {"draft", "verify", "diffusion_step", "block_step"}
