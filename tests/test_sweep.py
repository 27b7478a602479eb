"""Sweeps: axis expansion checked by hand, resuming, one-sentence errors, local = Ray, and the report's math."""

import json
import sys

import pytest
import typer
from typer.testing import CliRunner

from sim.engine import simulate
from sim.errors import UserError
from sim.scenario import apply_overrides, load_scenario
from validation import sweep as sweep_module
from validation.sweep import load_done, run_sweep
from validation.sweep_cli import report_sweep_cmd, sweep_cmd
from validation.sweep_report import crossing, fit_inverse, pareto_front, read_table
from validation.sweep_spec import Range, _yaml_value, expand, load_sweep

TINY = {"workload": {"num_requests": 2, "input_len": 32, "output_len": 8}}


def small_sweep(**extra):
    """4 points: 2 chips x 2 batch sizes, plus whatever the test adds."""
    sweep = {"name": "tiny", "base": TINY, "slo": {"tpot_s": 0.005},
             "axes": {"hardware": ["h100-sxm", "h200"], "batching.batch_size": [1, 2]}}
    sweep.update(extra)
    return sweep


def points_of(sweep):
    spec, where, root = load_sweep(sweep)
    return expand(spec, where, root)


# -- expansion ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, values", [
    ({"start": 1, "stop": 4, "step": 1}, [1, 2, 3, 4]),
    ({"start": 1, "stop": 10, "step": 4}, [1, 5, 9]),  # stop off the grid: not included
    ({"start": 0.1, "stop": 0.3, "step": 0.1}, [0.1, 0.2, 0.3]),  # stop on the grid despite float rounding
    ({"start": 1.0, "stop": 2.0, "num": 3}, [1.0, 1.5, 2.0]),
    ({"start": 1, "stop": 64, "num": 7, "log": True}, [1, 2, 4, 8, 16, 32, 64]),
    ({"start": 4, "stop": 1, "step": -1}, [4, 3, 2, 1]),
])
def test_range_values(spec, values):
    assert Range(**spec).values() == values


def test_cross_product_and_zip_by_hand():
    pts = points_of({"base": TINY, "axes": {
        "hardware": ["h100-sxm", {"profile": "h100-sxm", "scale": {"bandwidth": [1, 2], "flops": [1, 3]}}],
        "batching.batch_size": [1, 2]},
        "zip": [{"workload.input_len": [64, 128], "workload.output_len": [8, 16]}]})
    assert len(pts) == 5 * 2 * 2  # 1 + 4 chips, 2 batch sizes, one zipped dimension of 2
    assert [p.values["hardware"] for p in pts[::4]] == [
        "h100-sxm", "h100-sxm", "h100-sxm[flopsx3]", "h100-sxm[bandwidthx2]", "h100-sxm[bandwidthx2,flopsx3]"]
    # the last dimension varies fastest, and a zip moves its paths together
    assert [p.values for p in pts[:3]] == [
        {"hardware": "h100-sxm", "batching.batch_size": 1, "workload.input_len": 64, "workload.output_len": 8},
        {"hardware": "h100-sxm", "batching.batch_size": 1, "workload.input_len": 128, "workload.output_len": 16},
        {"hardware": "h100-sxm", "batching.batch_size": 2, "workload.input_len": 64, "workload.output_len": 8}]
    # scale 1.0 x 1.0 is the plain chip: same scenario, same key
    assert pts[0].key == pts[4].key and pts[0].data == pts[4].data
    p = pts[19]
    assert p.data == apply_overrides(TINY, p.overrides)
    assert p.data["hardware"] == {"profile": "h100-sxm", "scale": {"bandwidth": 2, "flops": 3}}


def test_grids_are_a_union_and_slo_reaches_every_point():
    pts = points_of({"base": TINY, "slo": {"tpot_s": 0.05}, "grids": [
        {"name": "a", "axes": {"model": ["llama-3.1-8b", "llama-3.2-1b"]}},
        {"name": "b", "axes": {"parallel.tp": {"start": 1, "stop": 4, "num": 3, "log": True}}}]})
    assert [(p.grid, p.values) for p in pts] == [
        ("a", {"model": "llama-3.1-8b"}), ("a", {"model": "llama-3.2-1b"}),
        ("b", {"parallel.tp": 1}), ("b", {"parallel.tp": 2}), ("b", {"parallel.tp": 4})]
    assert all(p.data["slo"] == {"tpot_s": 0.05} for p in pts)


@pytest.mark.parametrize("value", [1e-05, 3, 2.5, "llama-3.1-8b", "1e5", True, None, {"a": [1, 2.0]}])
def test_override_values_survive_the_yaml_round_trip(value):
    assert apply_overrides({}, [f"x={_yaml_value(value)}"])["x"] == value


# -- running ------------------------------------------------------------------------------------------------------


def test_rows_match_a_direct_simulation_and_derived_metrics(tmp_path):
    out = run_sweep(small_sweep(), tmp_path, workers=1, progress=False)
    rows = read_table(tmp_path)
    assert (out.points, out.ran, len(rows)) == (4, 4, 4)
    assert [r["point"] for r in rows] == [0, 1, 2, 3]
    r = rows[3]  # h200, batch 2
    direct, _ = simulate(load_scenario(None, ["workload.num_requests=2", "workload.input_len=32",
                                              "workload.output_len=8", "hardware=h200", "batching.batch_size=2",
                                              "slo.tpot_s=0.005"]))
    assert r["output_throughput_tok_s"] == direct.output_throughput_tok_s  # exactly: inlining changes nothing
    assert r["tpot_s.p50"] == direct.tpot_s.p50 and r["chip"] == "h200" and r["gpus"] == 1
    assert r["tok_s_per_w"] == pytest.approx(direct.output_throughput_tok_s / 700)
    assert r["tok_s_per_usd_h"] == pytest.approx(direct.output_throughput_tok_s / 4.59)
    assert r["meets_slo"] == (direct.tpot_s.p50 <= 0.005)
    assert {row["meets_slo"] for row in rows} == {True, False}  # 5 ms: h200 (4.6 ms) meets it, h100 (6.3 ms) not


def test_a_point_that_does_not_fit_is_a_row(tmp_path):
    run_sweep(small_sweep(axes={"model": ["llama-3.1-70b"], "parallel.tp": [1, 2]}), tmp_path, workers=1,
              progress=False)
    rows = read_table(tmp_path)
    assert [r["fits"] for r in rows] == [False, True]
    assert rows[0]["message"].startswith("needs 141.1 GB of weights") and rows[0]["tok_s_per_w"] is None
    assert rows[1]["gpus"] == 2 and rows[1]["tok_s_per_w"] == pytest.approx(rows[1]["output_throughput_tok_s"] / 1400)


def test_a_point_past_the_models_context_is_a_row_not_an_abort(tmp_path):
    """models x prompt lengths: the 8,192-token prompt on llama-2-7b (4,096 positions) is recorded as not fitting,
    and the points after it still run."""
    run_sweep(small_sweep(axes={"workload.input_len": [8192, 64], "model": ["llama-2-7b"]}), tmp_path, workers=1,
              progress=False)
    rows = read_table(tmp_path)
    assert [r["fits"] for r in rows] == [False, True]
    assert "llama-2-7b's context of 4,096" in rows[0]["message"]


def test_resume_skips_finished_points_and_survives_a_torn_line(tmp_path):
    full = tmp_path / "full"
    run_sweep(small_sweep(), full, workers=1, progress=False)
    part = tmp_path / "part"
    first = run_sweep(small_sweep(), part, workers=1, progress=False, max_points=2)
    assert (first.ran, first.missing) == (2, 2) and len(read_table(part)) == 2
    with open(part / "results.jsonl", "a") as f:  # a kill in the middle of a write
        f.write('{"key": "0123", "res')
    second = run_sweep(small_sweep(), part, workers=2, progress=False)
    assert (second.ran, second.reused, second.missing) == (2, 2, 0)
    assert len(load_done(part / "results.jsonl")) == 4
    assert read_table(part) == read_table(full)
    third = run_sweep(small_sweep(), part, workers=1, progress=False)
    assert (third.ran, third.reused) == (0, 4)


def test_points_reused_from_other_code_are_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_module, "_code_version", lambda: "v1")
    run_sweep(small_sweep(), tmp_path, workers=1, progress=False, max_points=1)
    monkeypatch.setattr(sweep_module, "_code_version", lambda: "v2")
    out = run_sweep(small_sweep(), tmp_path, workers=1, progress=False)
    assert (out.ran, out.reused, out.stale) == (3, 1, 1)


def test_worker_count_does_not_change_results(tmp_path):
    run_sweep(small_sweep(), tmp_path / "one", workers=1, progress=False)
    run_sweep(small_sweep(), tmp_path / "two", workers=2, progress=False)
    assert read_table(tmp_path / "one") == read_table(tmp_path / "two")


def test_csv_when_pyarrow_is_missing(tmp_path, monkeypatch):
    pytest.importorskip("pyarrow", reason="the Parquet side of the comparison needs pyarrow")
    run_sweep(small_sweep(), tmp_path / "parquet", workers=1, progress=False)
    expected = read_table(tmp_path / "parquet")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    out = run_sweep(small_sweep(), tmp_path / "csv", workers=1, progress=False)
    assert out.table.name == "results.csv"
    assert read_table(tmp_path / "csv") == expected
    with pytest.raises(UserError, match="needs pyarrow"):
        read_table(tmp_path / "parquet")


@pytest.fixture
def local_ray():
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'ray>=2.9')")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except Exception as e:  # noqa: BLE001 - any reason Ray cannot start here is a reason to skip
        pytest.skip(f"a local Ray cluster could not start here: {e}")
    yield ray
    ray.shutdown()


def test_ray_and_local_results_are_identical(tmp_path, local_ray, monkeypatch):
    sweep = small_sweep(axes={"hardware": ["h100-sxm", "b200"], "batching.kind": ["continuous"],
                              "workload.kind": ["poisson"], "workload.rate_qps": [2.0, 50.0]})
    run_sweep(sweep, tmp_path / "local", workers=1, progress=False)  # in-process: no fork of a Ray driver

    def no_local(*args):
        raise AssertionError("a Ray sweep ran on local processes")

    monkeypatch.setattr(sweep_module, "_run_local", no_local)
    out = run_sweep(sweep, tmp_path / "ray", ray_address="local", workers=2, progress=False)
    assert out.ran == 4
    assert read_table(tmp_path / "ray") == read_table(tmp_path / "local")


# -- errors -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sweep, message", [
    ({"axes": {"batching.batch_size": [1]}, "bogus": 1}, "sweep: unknown key 'bogus'; valid keys: axes, base"),
    ({"axes": {"batching.batch_size": {"start": 1, "stop": 4, "step": 1, "num": 4}}},
     "sweep: axes.batching.batch_size: give exactly one of step or num"),
    ({"axes": {"batching.batch_size": []}}, "sweep: axes.batching.batch_size: expected values"),
    ({"zip": [{"workload.input_len": [1, 2], "workload.output_len": [1]}]},
     "sweep: zip.0: axes varied together need equally many values, got workload.input_len: 2, workload.output_len: 1"),
    ({"axes": {"batching.batch_sise": [1]}},
     "sweep: point 0 (batching.batch_sise=1): unknown key 'batching.batch_sise'"),
    ({"axes": {"batching.batch_size": [1, 0]}},
     "sweep: point 1 (batching.batch_size=0): batching.batch_size: Input should be greater than or equal to 1"),
    ({"axes": {"hardware": ["h100-sxx"]}}, "sweep: point 0 (hardware=h100-sxx): unknown chip 'h100-sxx' (did you mean"),
    ({"axes": {"hardware": [{"profile": "h100-sxm", "scale": {"bandwith": [2]}}]}},
     "sweep: axes.hardware.0: unknown key 'scale.bandwith'; valid keys: bandwidth, capacity, flops, link"),
    ({"axes": {"workload.input_len": {"start": 1, "stop": float("nan"), "step": 1}}},
     "sweep: axes.workload.input_len: start, stop and step must be finite numbers"),
    ({"base": "nonexist.yaml", "axes": {"batching.batch_size": [1]}},
     "sweep: base: scenario file nonexist.yaml is not in"),
    ({"axes": {"batching.batch_size": {"start": 1, "stop": 10 ** 8, "step": 1}}},
     "sweep: axes.batching.batch_size: a range gives at most 100,000 values"),
    ({"axes": {"workload.kind": ["trace"], "workload.path": ["nope.csv"]}},
     "sweep: point 0 (workload.kind=trace, workload.path=nope.csv): workload.path: trace file nope.csv does not exist"),
])
def test_bad_sweeps_are_one_sentence(tmp_path, sweep, message):
    with pytest.raises(UserError) as e:
        run_sweep(sweep, tmp_path, workers=1, progress=False)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def cli():
    app = typer.Typer(add_completion=False)
    report = typer.Typer()
    app.add_typer(report, name="report")
    app.command("sweep")(sweep_cmd)
    report.command("sweep")(report_sweep_cmd)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def test_cli_sweep_then_report(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(json.dumps(small_sweep(report={"targets": [{"metric": "seq_decode_tok_s", "value": 150}]})))
    run = cli()
    r = run("sweep", str(f), "--out", str(tmp_path / "out"), "--workers", "1")
    assert r.exit_code == 0, r.output
    assert "4 points (4 simulated)" in r.output
    r = run("report", "sweep", str(tmp_path / "out"))
    assert r.exit_code == 0, r.output
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Most tokens/s per dollar-hour under the SLO" in md and (tmp_path / "out" / "tiny-pareto.png").exists()
    rows = [json.loads(x) for x in (tmp_path / "out" / "results.jsonl").read_text().splitlines() if x.strip()]
    best = max(1.0 / r["result"]["tpot_s.mean"] for r in rows if r["result"]["fits"] and r["result"]["tpot_s.mean"])
    # 1 / TPOT of the 8B at batch 1 is ~235 tok/s on every chip of the sweep: above the target from the start
    assert best >= 150 and "seq_decode_tok_s is 235 >= 150 already at the lowest hbm_bandwidth_tb_s swept" in md
    assert "does not reach 150" not in md


def test_cli_errors_are_one_line_and_exit_2(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("axes: {batching.batch_size: [1, 2]\n")
    r = cli()("sweep", str(f), "--out", str(tmp_path / "out"))
    assert r.exit_code == 2 and f"{f}:2:1: malformed YAML" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli()("report", "sweep", str(tmp_path / "nothing"))
    assert r.exit_code == 2 and "run `memwall sweep" in r.stderr


def test_damaged_sweep_outputs_are_one_line(tmp_path):
    """A damaged record, metadata file or table in a sweep's folder is named in one line (was a traceback)."""
    f = tmp_path / "s.yaml"
    f.write_text(json.dumps(small_sweep()))
    out = tmp_path / "out"
    run = cli()
    assert run("sweep", str(f), "--out", str(out), "--workers", "1").exit_code == 0
    records = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text("\n".join(['{"key": "x", "result": 5}', *records]) + "\n")
    r = run("sweep", str(f), "--out", str(out), "--workers", "1")
    assert r.exit_code == 2 and "results.jsonl:1: not a sweep record" in r.stderr
    broken = json.loads((out / "sweep.json").read_text())
    broken.pop("grids")
    for name, content in (("sweep.json", "{not json"), ("sweep.json", "[]"), ("sweep.json", json.dumps(broken))):
        saved = (out / name).read_text()
        (out / name).write_text(content)
        r = run("report", "sweep", str(out))
        assert r.exit_code == 2 and "not the metadata `memwall sweep` writes" in r.stderr, r.output
        (out / name).write_text(saved)
    table = out / "results.parquet"
    if table.exists():
        table.write_bytes(b"not parquet")
        r = run("report", "sweep", str(out))
        assert r.exit_code == 2 and "results.parquet cannot be read" in r.stderr, r.output


# -- report math --------------------------------------------------------------------------------------------------


def test_pareto_front_by_hand():
    latency = [1.0, 2.0, 2.0, 3.0, 4.0, 0.5]
    tput = [10.0, 30.0, 20.0, 25.0, 40.0, 5.0]
    # 0.5->5, 1->10, 2->30 (beats 2->20), 3->25 is dominated by 2->30, 4->40
    assert pareto_front(latency, tput) == [5, 0, 1, 4]


def test_crossing_and_inverse_fit():
    xs = [1.0, 2.0, 3.0, 4.0]
    ys = [1 / (0.1 + 1 / x) for x in xs]  # 1/y = a + b/x with a = 0.1, b = 1
    a, b, err = fit_inverse(xs, ys)
    assert a == pytest.approx(0.1) and b == pytest.approx(1.0) and err < 1e-9
    assert crossing([1, 2, 3], [10, 20, 40], 30) == pytest.approx(2.5)
    assert crossing([1, 2, 3], [10, 20, 40], 50) is None
    assert crossing([1, 2, 3], [60, 70, 80], 50) is None  # above the target from the start: no crossing inside


def test_a_report_target_on_an_unknown_column_is_named(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(json.dumps(small_sweep(report={"targets": [{"metric": "nosuch", "value": 1}]})))
    run = cli()
    assert run("sweep", str(f), "--out", str(tmp_path / "out"), "--workers", "1").exit_code == 0
    r = run("report", "sweep", str(tmp_path / "out"))
    assert r.exit_code == 2 and "report.targets.0.metric: 'nosuch' is not a column of the sweep's table" in r.stderr
