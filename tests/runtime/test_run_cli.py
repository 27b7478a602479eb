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


def test_run_refuses_strategies_it_does_not_execute_yet(cli):
    code, _, err = cli("run", "--device", "cpu", "--set", "strategy.kind=diffusion")
    assert code == 2 and "strategy.kind" in err
