"""The validation report regenerates from committed JSONL alone, without torch or a GPU.

Fixtures (tests/fixtures/validation/): `runs.jsonl` is SYNTHETIC, labelled so in each record: one `memwall run`
record of llama-3.2-1b (2 requests, 32 + 8 tokens) whose "device" pass times are the datasheet cost model's times
times 0.95 or 1.1 in turn, and throughput 0.9x the simulator's, plus one out-of-memory record. `microbench.jsonl` is
a real subset (10 records and the telemetry line) of reports/h100/microbench.jsonl.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "validation"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("h100")
    for f in FIXTURES.glob("*.jsonl"):
        shutil.copy(f, folder)
    code = ("import sys; from pathlib import Path; from validation.validation_report import write_report; "
            f"write_report(Path({str(folder)!r}), 'h100-sxm'); "
            "assert 'torch' not in sys.modules, 'the report imported torch'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
    return folder


def test_summary_per_strategy_and_metric(report):
    summary = json.loads((report / "validation-summary.json").read_text())
    assert set(summary) - {"transfer"} == {"ar"}  # + the transfer check's own summary, per chip, when measured
    ar = summary["ar"]
    assert set(ar) == {"pass_time_s", "output_throughput_tok_s", "ttft_p50_s (poisson)", "ttft_p50_s (closed)",
                       "itl_p50_s (poisson)", "itl_p50_s (closed)"}
    # 8 synthetic passes, each the datasheet model x0.95 or x1.1: |pred/meas - 1| is 1/0.95-1 or 1-1/1.1
    assert ar["pass_time_s"]["n"] == 8
    assert ar["pass_time_s"]["max"] == pytest.approx(1 - 1 / 1.1, rel=1e-3)
    assert ar["pass_time_s"]["median"] == pytest.approx(((1 / 0.95 - 1) + (1 - 1 / 1.1)) / 2, rel=1e-3)
    assert ar["output_throughput_tok_s"]["n"] == 1
    assert ar["output_throughput_tok_s"]["median"] == pytest.approx(1 / 0.9 - 1, rel=1e-3)


def test_markdown_and_self_contained_html(report):
    md = (report / "validation.md").read_text()
    for section in ("Calibration fit", "End-to-end validation runs", "Telemetry", "External check"):
        assert section in md
    assert "synthetic-oom (oom)" in md  # an unfinished run is listed, not dropped
    assert (report / "validation-calibration.png").exists() and (report / "validation-runs.png").exists()
    page = (report / "validation.html").read_text()
    assert page.count("data:image/png;base64,") == 2
    assert "src=\"http" not in page and "validation-calibration.png\"" not in page.replace('alt="validation', "")


def test_a_failed_attempt_measured_again_is_not_unfinished(tmp_path):
    """An out-of-memory attempt followed by a successful one of the same point: the report uses the success and
    lists the attempt apart, not among the unfinished runs."""
    from validation.validation_report import build

    for f in FIXTURES.glob("*.jsonl"):
        shutil.copy(f, tmp_path)
    runs = tmp_path / "runs.jsonl"
    ok = json.loads(runs.read_text().splitlines()[0])
    failed = {**ok, "status": "oom", "error": "CUDA out of memory (SYNTHETIC)"}
    failed.pop("result", None)
    runs.write_text(json.dumps(failed) + "\n" + runs.read_text())
    blocks, summary = build(tmp_path, "h100-sxm")
    text = "\n".join(b[1] for b in blocks if b[0] == "p")
    assert "measured again (the successful record is used): synthetic-fixture (oom)" in text
    assert "did not finish: synthetic-oom (oom)." in text
    assert summary["ar"]["pass_time_s"]["n"] == 8


def test_host_split_by_hand():
    """Two runs of one strategy, numbers chosen by hand: run A has 1.0 s of device time priced 0.9, 0.25 s of host
    in a 1.25 s makespan priced 0.5 s (host share 20%, host +100%: the host alone makes throughput 1.25 / 1.5 - 1 =
    -16.7%); run B 2.0 s priced 2.2, 0.5 s of host in 2.5 s priced 0.25 (throughput from host 2.5 / 2.25 - 1 =
    +11.1%). A run without host times is left out."""
    from validation.host_check import host_split

    preds = [{"strategy": "ar", "measured_s": [0.5, 0.5], "predicted_s": [0.45, 0.45],
              "host_measured_s": [0.125, 0.125], "host_predicted_s": [0.25, 0.25]},
             {"strategy": "ar", "measured_s": [2.0], "predicted_s": [2.2], "host_measured_s": [0.5],
              "host_predicted_s": [0.25]},
             {"strategy": "ar", "measured_s": [1.0], "predicted_s": [1.0]}]
    records = [{"result": {"makespan_s": 1.25}}, {"result": {"makespan_s": 2.5}}, {"result": {"makespan_s": 1.0}}]
    got = host_split(preds, records)["ar"]
    assert got["runs"] == 2
    assert got["device_error"] == pytest.approx((-0.1, 0.1))
    assert got["host_share"] == pytest.approx((0.2, 0.2))
    assert got["host_error"] == pytest.approx((-0.5, 1.0))
    thr = got["throughput_error_from_host"]  # of |error|: 16.7% and 11.1%
    assert thr["n"] == 2 and thr["max"] == pytest.approx(1 - 1.25 / 1.5)
    assert thr["median"] == pytest.approx(((1 - 1.25 / 1.5) + (2.5 / 2.25 - 1)) / 2)


def test_transfer_section_lists_predictions_before_any_measurement(tmp_path):
    """The H200 transfer plan is priced with the carried profile and listed, every point unmeasured."""
    from validation.transfer_report import TRANSFERS, transfer_blocks

    t = TRANSFERS["h200"]
    for key in ("plan", "profile"):
        (tmp_path / t[key]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / t[key], tmp_path / t[key])
    blocks, summary = transfer_blocks(tmp_path)
    text = "\n".join(b[1] for b in blocks if b[0] == "p")
    assert "0 of 5 points measured" in text and "Not measured on the H200 yet" in text and not summary
    table = next(b for b in blocks if b[0] == "table")
    assert [row[0] for row in table[2]] == ["ar-00", "ar-01", "ar-02", "spec-03", "block-04"]


def test_the_committed_h200_runs_are_read(report):
    """reports/h200/validation-runs.jsonl (measured on an H200, session 12) gives every point of the plan an error."""
    md = (report / "validation.md").read_text()
    section = md[md.index("## Transfer check: h200"):]
    assert "5 of 5 points measured" in section
    summary = json.loads((report / "validation-summary.json").read_text())["transfer"]["h200"]
    assert set(summary) == {"ar", "speculative", "block_diffusion"}
    assert summary["ar"]["output_throughput_tok_s"]["n"] == 3


def test_transfer_errors_once_points_are_measured(tmp_path):
    """SYNTHETIC: the H100 grid's ar-00 record (batch 1, 256 + 128 tokens), relabelled as measured on the h200, stands
    in for the transfer plan's ar-00. The section then gives that point's measured throughput and its error against
    the carried profile's prediction, and the summary counts it; the other points stay predictions."""
    from validation.transfer_report import TRANSFERS, transfer_blocks

    t = TRANSFERS["h200"]
    for key in ("plan", "profile"):
        (tmp_path / t[key]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / t[key], tmp_path / t[key])
    rec = next(json.loads(line) for line in (REPO / "reports/h100/validation-runs.jsonl").read_text().splitlines()
               if json.loads(line)["scenario"]["name"] == "ar-00")
    rec["scenario"]["hardware"] = "h200"
    (tmp_path / t["runs"]).parent.mkdir(parents=True)
    (tmp_path / t["runs"]).write_text(json.dumps(rec) + "\n")
    blocks, summary = transfer_blocks(tmp_path)
    table = next(b for b in blocks if b[0] == "table")
    row = next(r for r in table[2] if r[0] == "ar-00")
    measured = rec["result"]["output_throughput_tok_s"]
    assert row[3] == f"{measured:,.1f}"
    predicted = float(row[2].replace(",", ""))
    assert row[4] == f"{predicted / measured - 1:+.1%}"
    assert summary["h200"]["ar"]["output_throughput_tok_s"]["n"] == 1
    assert all(r[3] == "–" for r in table[2] if r[0] != "ar-00")


def test_a_damaged_vidur_summary_is_one_sentence(tmp_path):
    from sim.errors import UserError
    from validation.validation_report import build

    for f in FIXTURES.glob("*.jsonl"):
        shutil.copy(f, tmp_path)
    (tmp_path / "vidur-check.json").write_text("{not json")
    with pytest.raises(UserError, match=r"vidur-check\.json: not the summary `memwall report vidur` writes"):
        build(tmp_path, "h100-sxm")


def test_a_folder_without_records_is_one_sentence(tmp_path):
    from sim.errors import UserError
    from validation.validation_report import write_report

    with pytest.raises(UserError, match="holds no JSONL records; measure them on the GPU first"):
        write_report(tmp_path, "h100-sxm")
    assert not (tmp_path / "validation.md").exists()
