"""The Vidur check on a small slice: operator mapping by hand, output files and their structure, one-line errors."""

import json

import pytest
import typer
from typer.testing import CliRunner

from validation.vidur_check import OPS, predict_row, read_rows, report_vidur_command, run_check


def test_up_projection_is_priced_with_the_hand_counted_bytes():
    row = {"model": "Llama-2-7b-hf", "n_embd": "4096", "n_head": "32", "n_kv_head": "32", "n_expanded_embd": "11008",
           "vocab_size": "32768", "num_tokens": "1", "num_tensor_parallel_workers": "2"}
    pred = predict_row(row, "h100-sxm")
    # TP 2: fused gate+up is 4096 x (2 * 11008 / 2) fp16 weights, plus one input row and one output row
    assert pred["mlp_up_proj"][1] == 4096 * 11008 * 2 + (4096 + 11008) * 2
    assert set(pred) == set(OPS)
    # decode-sized: ~90 MB at a few TB/s is tens of microseconds
    assert 10e-6 < pred["mlp_up_proj"][0] < 40e-6


def test_report_structure_on_a_slice(tmp_path):
    summary = run_check(["h100-sxm"], out_dir=tmp_path, max_rows=12)
    data = json.loads((tmp_path / "vidur-check.json").read_text())
    assert set(data["profiles"]) == {"h100-sxm"} and data["rows"] == 36  # 12 rows of each of the 3 models
    per = data["profiles"]["h100-sxm"]
    for op in [*OPS, "gemms", "overall"]:
        assert {"all", "small", "large", "signed_median", "signed_median_by_tokens"} <= set(per[op])
        assert {"median", "p90", "max", "n"} == set(per[op]["all"])
    assert per["overall"]["all"]["n"] == 36 * len(OPS)
    assert summary["h100-sxm"]["gemms"]["all"]["n"] == 36 * 4
    md = (tmp_path / "vidur-check.md").read_text()
    assert "| `mlp_up_proj` |" in md and "## Where the model misses" in md
    assert (tmp_path / "vidur-check.png").stat().st_size > 10_000


def test_rows_come_from_every_model():
    models = {r["model"] for r in read_rows(max_rows=1)}
    assert models == {"Llama-2-7b-hf", "Llama-2-70b-hf", "CodeLlama-34b-Instruct-hf"}


@pytest.mark.parametrize("args,expect", [(["--profile", "h999"], "unknown chip"),
                                         (["--data", "/nonexistent"], "no Vidur profiling data")])
def test_bad_input_is_one_sentence(tmp_path, args, expect):
    app = typer.Typer()
    app.command()(report_vidur_command)
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path)])
    assert r.exit_code == 2 and expect in r.stderr and "Traceback" not in r.stderr
