"""Calibration: the fit's objective is the cost model's own price, it recovers known curves from SYNTHETIC records
that the cost model itself generated, bad input is one sentence, and what it writes loads as a profile. Also the
microbenchmark machinery on the CPU (tiny sizes; its numbers mean nothing)."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from sim.errors import UserError
from sim.hardware import Curve, PagedPrograms, PagedWalk, load_profile
from validation.calibrate import (
    calibrate,
    calibrate_command,
    load_records,
    model_time_s,
    predict_records,
    write_profile,
)
from validation.carry import carry_over, with_host_of
from validation.microbench import microbench_command, run_suite
from validation.microbench_plan import _attention, _gemm, _paged

TRUE = {"memory": Curve(max_fraction=0.88, half_size=3.0e6), "compute": Curve(max_fraction=0.78, half_size=8.0e8),
        "attention_memory": Curve(max_fraction=0.8, half_size=1.0e7),
        "attention_compute": Curve(max_fraction=0.6, half_size=2.0e9)}
TRUE_OVERHEAD_US = 1.5
TRUE_PAGED = {"paged_attention_memory": Curve(max_fraction=0.7, half_size=2.0e7),
              "paged_attention_compute": Curve(max_fraction=0.3, half_size=1.0e9),
              "paged_attention_programs": PagedPrograms(by_config={
                  "32x8x128/64x2": PagedWalk(resident=400.0, program_overhead_us=4.0, position_ns=40.0),
                  "32x8x128/32x2": PagedWalk(resident=300.0, program_overhead_us=3.5, position_ns=55.0),
                  "32x8x128/64x3": PagedWalk(resident=250.0, program_overhead_us=3.0, position_ns=30.0)})}
# paged-kernel cases of the suite's kinds: decodes, verifies, block steps (memory-bound) and chunks
PAGED = ([_paged(s, 1, c) for s in (1, 8, 32, 128) for c in (512, 2048, 8192)]
         + [_paged(s, r, c) for r in (5, 32) for s in (1, 8, 32) for c in (512, 2048)]
         + [_paged(s, 128, c) for s in (1, 4) for c in (256, 1024)])


def synthetic_records() -> list[dict]:
    """Records whose 'measured' times are the cost model's own predictions with the TRUE curves (synthetic: no
    device measured them), over the same kinds of shapes the real suite times."""
    base = load_profile("h100-sxm")
    truth = base.model_copy(update={"efficiency": base.efficiency.model_copy(
        update={**TRUE, **TRUE_PAGED, "kernel_overhead_us": TRUE_OVERHEAD_US})})
    cases = [_gemm(m, n, k, "bf16", ["synthetic"]) for n, k in ((4096, 4096), (28672, 4096), (128256, 4096))
             for m in (1, 4, 16, 64, 256, 1024, 4096, 16384)]
    cases += [_attention("decode", b, 1, c) for b in (1, 16, 256) for c in (512, 4096)]
    cases += [_attention("prefill", 1, c, c) for c in (512, 2048, 8192, 16384)]
    records = [{"key": c.key, "kind": c.kind, "dtype": c.dtype, "shape": c.shape, "flops": c.flops,
                "bytes": c.bytes, "status": "ok", "synthetic": True, "device": "synthetic (cost model)",
                "date": "2026-01-01"} for c in cases]
    records += [{"key": c.key, "kind": c.kind, "dtype": c.dtype, "shape": c.shape, "flops": c.flops, "bytes": c.bytes,
                 "status": "ok", "synthetic": True} for c in PAGED]
    records += [{"key": f"stream/read/bytes={n}", "kind": "stream", "dtype": "bf16", "shape": {"op": "read"},
                 "flops": n / 2, "bytes": n, "status": "ok", "synthetic": True} for n in (1e6, 1e7, 1e8, 1e9)]
    for r in records:
        r["median_s"] = 1.0  # placeholder so that predict_records can run; replaced by the prediction below
    for r, p in zip(records, predict_records(records, truth)):
        r["median_s"] = p["predicted_s"]
    records.append({"key": "launch/graph/n=1000", "kind": "launch", "dtype": "fp32", "shape": {"mode": "graph"},
                    "flops": 256.0, "bytes": 2048.0, "median_s": TRUE_OVERHEAD_US * 1e-6, "status": "ok",
                    "synthetic": True})
    return records


def test_vectorized_objective_is_the_cost_models_price():
    records = synthetic_records()
    profile = load_profile("h100-sxm")
    eff = profile.efficiency
    rows = [r for r in records if r["kind"] == "gemm"]
    x = np.array([eff.compute.max_fraction, np.log10(eff.compute.half_size), eff.memory.max_fraction,
                  np.log10(eff.memory.half_size)])
    vec = model_time_s(x, np.array([r["flops"] for r in rows]), np.array([r["bytes"] for r in rows]),
                       profile.peak_flops_per_s("bf16"), profile.hbm_bandwidth_bytes_per_s, eff.kernel_overhead_s)
    priced = [p["predicted_s"] for p in predict_records(rows, profile)]
    np.testing.assert_allclose(vec, priced, rtol=1e-9)


def test_fit_recovers_known_curves_from_synthetic_records():
    profile, report = calibrate(synthetic_records(), load_profile("h100-sxm"), "synthetic")
    eff = profile.efficiency
    assert eff.kernel_overhead_us == pytest.approx(TRUE_OVERHEAD_US)
    for name, true in TRUE.items():
        got = getattr(eff, name)
        assert got.max_fraction == pytest.approx(true.max_fraction, rel=0.02), name
        assert got.half_size == pytest.approx(true.half_size, rel=0.1), name
    assert report["residuals"]["memory"]["max"] < 1e-3 and report["residuals"]["compute"]["max"] < 1e-3
    assert set(profile.provenance.calibration.measured) >= set(TRUE) | set(TRUE_PAGED)
    # memwall's paged kernel gets a pair of its own and its programs' walk; the records are bound by HBM or by the
    # walk, so those are the parts they pin down (the compute half only has to stay below them)
    got = eff.paged_attention_memory
    assert got.max_fraction == pytest.approx(0.7, rel=0.05) and got.half_size == pytest.approx(2.0e7, rel=0.2)
    # (programs at once and time per program are pinned only where the walk binds past that many programs; the
    # records' times are what must come back)
    walk, true_walk = eff.paged_attention_programs, TRUE_PAGED["paged_attention_programs"]
    for key, true in true_walk.by_config.items():
        assert walk.by_config[key].position_ns == pytest.approx(true.position_ns, rel=0.05), key
    assert report["residuals"]["paged_attention_memory"]["max"] < 1e-2


def test_without_paged_records_graph_passes_keep_the_attention_curves():
    records = [r for r in synthetic_records() if r["kind"] != "paged"]
    profile, _ = calibrate(records, load_profile("h100-sxm"), "synthetic")
    eff = profile.efficiency
    assert eff.paged_attention_memory is None and eff.paged_attn_memory == eff.attn_memory
    assert eff.paged_attention_programs is None
    assert "paged_attention_memory" not in profile.provenance.calibration.measured


@pytest.fixture
def app():
    a = typer.Typer()
    a.command("calibrate")(calibrate_command)
    a.command("microbench")(microbench_command)
    return a


@pytest.mark.parametrize("content", ["not json at all\n{}\n", '{"key": "x"}\n', ""])
def test_bad_records_file_is_one_sentence(app, tmp_path, content):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    r = CliRunner().invoke(app, ["calibrate", str(bad), "--out", str(tmp_path / "p.yaml")])
    assert r.exit_code == 2
    assert r.stderr.count("\n") == 1 and "error:" in r.stderr and "Traceback" not in r.stderr


def test_missing_records_file(app, tmp_path):
    r = CliRunner().invoke(app, ["calibrate", str(tmp_path / "none.jsonl")])
    assert r.exit_code == 2 and "cannot read" in r.stderr and "none.jsonl" in r.stderr


def test_written_profiles_load(tmp_path):
    profile, _ = calibrate(synthetic_records(), load_profile("h100-sxm"), "synthetic")
    path = tmp_path / "h100-sxm-calibrated.yaml"
    write_profile(profile, path, "synthetic test")
    loaded = load_profile(str(path))
    assert loaded == profile
    h200 = carry_over(profile, load_profile("h200"), "from-h100")
    write_profile(h200, tmp_path / "h200-from-h100.yaml", "synthetic test")
    again = load_profile(str(tmp_path / "h200-from-h100.yaml"))
    assert again.hbm_bandwidth_tb_s == 4.8 and again.provenance.calibration.measured == []
    assert "memory" in again.provenance.calibration.carried_over
    # the memory curve's fixed time carries: n_1/2 / (bw * max) equal on both chips
    def fixed_s(p):
        return p.efficiency.memory.half_size / (p.hbm_bandwidth_bytes_per_s * p.efficiency.memory.max_fraction)

    assert fixed_s(again) == pytest.approx(fixed_s(profile), rel=1e-3)


def test_microbench_machinery_on_cpu(tmp_path):
    out = tmp_path / "mb.jsonl"
    counts = run_suite(out, device="cpu", tiny=True)
    assert counts["measured"] == counts["planned"] > 5 and counts["failed"] == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    for r in recs:
        assert {"key", "shape", "dtype", "median_s", "flops", "bytes", "device", "driver", "torch", "date"} <= set(r)
        assert r["median_s"] > 0
    assert run_suite(out, device="cpu", tiny=True)["skipped"] == counts["planned"]  # a rerun skips finished keys
    assert len(load_records(out)) == len(recs)


def test_microbench_without_cuda_is_one_sentence(app, tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    r = CliRunner().invoke(app, ["microbench", "--out", str(tmp_path / "x.jsonl")])
    assert r.exit_code == 2 and "needs a CUDA GPU" in r.stderr and r.stderr.count("\n") == 1


def test_host_time_is_fixed_per_strategy_plus_rows_sequences_and_blocks():
    """SYNTHETIC host records at 10 us per row + 40 us per sequence + 0.5 us per KV block on a fixed part of 300 us
    (AR, speculative) or 900 us (block diffusion): AR decodes (rows = sequences; short ones written the old way,
    without rows_per_pass or blocks), verifies of 5 rows and block steps of 16 rows per sequence, at short and long
    contexts, give back all of it; AR records of one context alone can only give a line in rows (300 + 50 per row,
    the sequence term folded in, no block term)."""
    from validation.host_fit import fit_host

    def us(rows, seqs, blocks, fixed=300):
        return fixed + 10 * rows + 40 * seqs + 0.5 * blocks

    ar = [{"kind": "host", "shape": {"strategy": "ar", "batch": b}, "median_s": us(b, b, 0) * 1e-6} for b in (1, 8, 64)]
    ar_long = [{"kind": "host", "shape": {"strategy": "ar", "batch": b}, "rows_per_pass": b, "seqs_per_pass": b,
                "blocks_per_pass": 50 * b, "median_s": us(b, b, 50 * b) * 1e-6} for b in (4, 48)]
    other = [{"kind": "host", "shape": {"strategy": s, "batch": b}, "rows_per_pass": r * b, "seqs_per_pass": b,
              "blocks_per_pass": k * b, "median_s": us(r * b, b, k * b, fixed) * 1e-6}
             for s, r, fixed in (("speculative", 5, 300), ("block_diffusion", 16, 900)) for b in (1, 8)
             for k in (5, 60)]
    fit = fit_host(ar + ar_long + other)
    terms = ("host_pass_overhead_us", "host_row_overhead_us", "host_seq_overhead_us", "host_block_overhead_us")
    assert [fit[t] for t in terms] == pytest.approx((300, 10, 40, 0.5), rel=1e-3)
    assert fit["method"] == "runs" and fit["host_eager_pass_overhead_us"] is None  # per-run means: no eager terms
    # (diffusion has no records: it takes block diffusion's fixed part, host_fit.HOST_LIKE)
    assert fit["host_pass_overhead_by_strategy_us"] == pytest.approx(
        {"speculative": 300, "block_diffusion": 900, "diffusion": 900}, rel=1e-3)
    ar_only = fit_host(ar)
    assert [ar_only[t] for t in terms] == pytest.approx((300, 50, 0, 0), rel=1e-3)
    assert ar_only["host_pass_overhead_by_strategy_us"] == {}
    assert fit_host([{"kind": "host", "shape": {"strategy": "speculative", "batch": 8}, "median_s": 5e-3}]) is None
    profile = load_profile("h100-sxm").model_copy(update={k: v for k, v in fit.items() if k.startswith("host_")})
    assert profile.host_pass_s(16, 1, "block_diffusion", 40) == pytest.approx(us(16, 1, 40, 900) * 1e-6, rel=1e-3)
    assert profile.host_pass_s(16, 1, "ar") == pytest.approx(us(16, 1, 0) * 1e-6, rel=1e-3)


def test_host_time_fitted_per_iteration_with_eager_passes_apart():
    """SYNTHETIC host records carrying every iteration (as microbench_host.run_host writes them): graph passes at
    300 us (AR) or 900 us (block diffusion) + 2 us per row + 0.5 us per KV block, eager prefills (past
    GRAPH_MAX_ROWS rows) at 2,000 us + 0.2 us per row; a speculative iteration is 4 drafts and a verify, each
    paying the fixed part. The fit gives back every term, and the engine prices an eager prefill with the eager
    terms and a decode with the graph terms; a run's mean no longer folds its prefill into the decodes."""
    from sim.engine import host_s, prepare
    from sim.passes import PassShape
    from validation.host_fit import fit_host

    def graph(tokens, seqs, kv, fixed):
        return fixed + 2 * tokens + 0.5 * kv / 16

    def record(strategy, batch, prompt, fixed, forwards):
        its = [[[batch * prompt, batch, batch * prompt]]]  # the prefill
        its += [[(t, batch, batch * (prompt + i)) for t in forwards] for i in range(1, 40)]
        host = [(2000 + 0.2 * it[0][0] if it[0][0] > 1024 else sum(graph(*f, fixed) for f in it)) * 1e-6
                for it in its]
        return {"kind": "host", "key": f"host/{strategy}/B={batch}/P={prompt}", "median_s": 1e-3,
                "shape": {"strategy": strategy, "batch": batch}, "kv_block_tokens": 16,
                "iterations": [{"host_s": host, "forwards": its}]}

    recs = [record("ar", b, p, 300, [b]) for b, p in ((2, 1024), (16, 128), (48, 384), (8, 96))]
    recs += [record("speculative", b, p, 300, [b] * 4 + [5 * b]) for b, p in ((2, 1024), (16, 256))]
    recs += [record("block_diffusion", b, p, 900, [16 * b]) for b, p in ((2, 768), (16, 128))]
    fit = fit_host(recs)
    assert fit["method"] == "iterations"
    got = [fit[t] for t in ("host_pass_overhead_us", "host_row_overhead_us", "host_seq_overhead_us",
                            "host_block_overhead_us", "host_eager_pass_overhead_us", "host_eager_row_overhead_us")]
    assert got == pytest.approx((300, 2, 0, 0.5, 2000, 0.2), rel=1e-3, abs=1e-3)
    assert fit["host_pass_overhead_by_strategy_us"] == pytest.approx(
        {"speculative": 300, "block_diffusion": 900, "diffusion": 900}, rel=1e-3)
    assert fit["residuals"]["max"] < 1e-3
    from sim.scenario import scenario_from_dict

    profile = load_profile("h100-sxm").model_copy(update={k: v for k, v in fit.items() if k.startswith("host_")})
    s = scenario_from_dict({"name": "t", "hardware": "h100-sxm", "model": "llama-3.1-8b", "strategy": {"kind": "ar"},
                            "batching": {"kind": "static", "batch_size": 8},
                            "workload": {"kind": "closed", "num_requests": 8, "input_len": 512, "output_len": 8}})
    setup = prepare(s)
    setup = dataclasses.replace(setup, hardware=profile)
    prefill = PassShape(4096, 8, 8, 4096, 8 * 512 * 513 // 2, 4096)
    decode = PassShape(8, 8, 8, 8 * 600, 8 * 600, 8)
    assert host_s(setup, prefill) == pytest.approx((2000 + 0.2 * 4096) * 1e-6)
    assert host_s(setup, decode) == pytest.approx(graph(8, 8, 8 * 600, 300) * 1e-6)


def test_host_time_per_iteration_told_from_per_pass():
    """SYNTHETIC host records of a loop that chains its passes: every iteration pays 400 us of its own (scheduler,
    the wait for its results) on top of its passes' (AR 300 us, speculative 80 us per pass, + 2 us per row; eager
    prefills 2,000 us + 0.2 us per row). Speculative iterations of k = 2, 4, 6 drafts (3, 5, 7 passes) tell the
    iteration's part from the passes'; the fit gives every term back and the engine adds the iteration's part once
    per iteration (a k = 6 iteration is priced 400 + 7 x 80 + rows, not 7 x a pass's mean). AR's iterations are one
    pass each, so its iteration's part is its pass's (700 us), and an AR iteration has no other part."""
    from validation.host_fit import fit_host

    def record(strategy, batch, prompt, fixed, forwards):
        its = [[[batch * prompt, batch, 0]]]  # the prefill: eager past GRAPH_MAX_ROWS rows
        its += [[(t, batch, 0) for t in forwards] for _ in range(30)]
        host = [400 + (2000 + 0.2 * it[0][0] if it[0][0] > 1024 else sum(fixed + 2 * f[0] for f in it))
                for it in its]
        return {"kind": "host", "key": f"host/{strategy}/B={batch}/P={prompt}/{len(forwards)}", "median_s": 1e-3,
                "shape": {"strategy": strategy, "batch": batch}, "kv_block_tokens": 16,
                "iterations": [{"host_s": [h * 1e-6 for h in host], "forwards": its}]}

    # AR prompts short enough for a graph (<= 1,024 rows): every AR iteration is one graph pass, which the model
    # prices exactly (an AR eager prefill's iteration part would sit in the eager terms, which the speculative
    # records' prefills price without it)
    recs = [record("ar", b, p, 300, [b]) for b, p in ((2, 256), (16, 32), (48, 16))]
    recs += [record("speculative", b, p, 80, [b] * k + [(k + 1) * b]) for b, p, k in ((4, 512, 2), (16, 256, 4),
                                                                                         (6, 384, 6))]
    fit = fit_host(recs)
    assert fit["host_iteration_overhead_by_strategy_us"] == pytest.approx({"speculative": 400}, rel=1e-3)
    assert fit["host_iteration_overhead_us"] == 0.0
    assert fit["host_pass_overhead_us"] == pytest.approx(700, rel=1e-3)
    assert fit["host_pass_overhead_by_strategy_us"]["speculative"] == pytest.approx(80, rel=1e-3)
    assert (fit["host_row_overhead_us"], fit["host_eager_pass_overhead_us"]) == pytest.approx((2, 2000), rel=1e-3)
    profile = load_profile("h100-sxm").model_copy(update={k: v for k, v in fit.items() if k.startswith("host_")})
    assert profile.host_iteration_s("speculative") == pytest.approx(400e-6, rel=1e-3)
    assert profile.host_iteration_s("ar") == 0.0
    assert load_profile("h100-sxm").host_iteration_s("speculative") == 0.0  # a datasheet has no host model
    # records of one k cannot tell the iteration's part from the passes': the strategy gets no part of its own
    # (not a part of 0), and its passes and eager prefills carry it, still pricing every iteration exactly
    one_k = fit_host(recs[:3] + [record("speculative", 16, 256, 80, [16] * 4 + [80])])
    assert one_k["host_iteration_overhead_by_strategy_us"] == {}
    assert one_k["residuals"]["max"] < 1e-4


def test_link_numbers_fitted_to_allreduce_records():
    """SYNTHETIC all-reduce records on 2 GPUs from the cost model's ring formula at 300 GB/s and 5 us per hop give
    those numbers back, and the calibrated profile carries them; without such records the link stays the base's."""
    from validation.allreduce import fit_link

    def rec(nbytes, world=2, bw=300e9, lat=5e-6):
        s = 2 * (world - 1) / world * nbytes / bw + 2 * (world - 1) * lat
        return {"key": f"allreduce/bytes={nbytes}/gpus={world}", "kind": "allreduce", "dtype": "bf16",
                "shape": {"bytes": nbytes, "world": world}, "flops": nbytes / 2, "bytes": 2.0 * nbytes,
                "median_s": s, "status": "ok", "synthetic": True}

    records = [rec(n) for n in (4096, 65536, 1 << 20, 64 << 20, 256 << 20)]
    assert fit_link(records) == pytest.approx((300.0, 5.0), rel=1e-3)
    assert fit_link(records[:1]) is None
    profile, _ = calibrate(synthetic_records() + records, load_profile("h100-sxm"), "synthetic")
    assert profile.link_bandwidth_gb_s == pytest.approx(300.0, rel=1e-3)
    assert profile.link_latency_us == pytest.approx(5.0, rel=1e-3)
    assert "link_bandwidth_gb_s" in profile.provenance.calibration.measured
    plain, _ = calibrate(synthetic_records(), load_profile("h100-sxm"), "synthetic")
    assert plain.link_bandwidth_gb_s == load_profile("h100-sxm").link_bandwidth_gb_s


def test_allreduce_machinery_with_gloo_on_cpu():
    """The all-reduce microbenchmark's processes, timing and sum check, run with gloo on 2 CPU processes (its times
    mean nothing there; on a GPU machine the same code runs NCCL)."""
    pytest.importorskip("torch")
    from validation.allreduce import measure

    got = measure(2, [4096, 65536], cuda=False)
    assert set(got) == {4096, 65536}
    assert all(v["sum_correct"] and v["median_s"] > 0 and v["inner"] == 20 for v in got.values())


def test_host_cases_are_no_validation_points():
    """The host microbenchmark runs scenarios as `memwall validate` does (validation/microbench_host.py); none of
    them may be a point of the H100 grid, whose points no fit may see."""
    from validation.microbench_host import host_scenario
    from validation.microbench_plan import plan
    from validation.validate import plan_scenarios

    def point(s):  # what tells two scenarios' serving loops apart
        b = s.batching
        size = b.batch_size if b.kind == "static" else b.max_batch
        return (s.model, s.strategy.kind, b.kind, size, s.workload.kind, s.workload.num_requests, s.workload.input_len)

    repo = Path(__file__).resolve().parent.parent
    grid = {point(s) for s in plan_scenarios(repo / "examples" / "validation" / "plan-h100.yaml")}
    cases = [host_scenario(c.shape) for c in plan("host")]
    assert len(cases) >= 10 and {s.batching.kind for s in cases} == {"static", "continuous"}
    for s in cases:
        assert s.workload.kind == "closed"
        assert point(s) not in grid
        if s.batching.kind == "static":  # no grid point has the batch size and prompt of a static case either
            assert (s.model, s.strategy.kind, s.batching.batch_size, s.workload.input_len) not in {
                (g[0], g[1], g[3], g[6]) for g in grid if g[2] == "static"}


def test_host_records_with_broken_iterations_are_named():
    """A host record whose host times and iterations disagree in number is named in one sentence (a UserError, as
    bad input is everywhere); records whose iterations hold no host times fall back to the per-run fit."""
    from sim.errors import UserError
    from validation.host_fit import fit_host

    base = {"kind": "host", "key": "host/ar/B=4", "shape": {"strategy": "ar", "batch": 4}, "median_s": 1e-3,
            "rows_per_pass": 4, "seqs_per_pass": 4}
    broken = {**base, "iterations": [{"host_s": [1e-3, 1e-3], "forwards": [[[4, 4, 400]]]}]}
    with pytest.raises(UserError, match="host/ar/B=4.*2 host times but 1 iterations"):
        fit_host([broken])
    empty = [{**base, "iterations": [{"host_s": [], "forwards": []}]},
             {**base, "key": "host/ar/B=8", "shape": {"strategy": "ar", "batch": 8}, "rows_per_pass": 8,
              "seqs_per_pass": 8, "median_s": 2e-3, "iterations": [{"host_s": [], "forwards": []}]}]
    assert fit_host(empty)["method"] == "runs"


def test_broken_host_record_is_one_sentence_from_the_cli(app, tmp_path):
    """`memwall calibrate` on records whose one host record has more host times than iterations: exit 2 and one
    line naming the record, not a traceback."""
    repo = Path(__file__).resolve().parent.parent
    recs = tmp_path / "mb.jsonl"
    broken = {"key": "host/ar/B=3/P=99/O=9/broken", "kind": "host", "dtype": "bf16", "flops": 0.0, "bytes": 0.0,
              "median_s": 1e-3, "status": "ok", "shape": {"strategy": "ar", "batch": 3},
              "iterations": [{"host_s": [1e-3, 1e-3], "forwards": [[[3, 3, 300]]]}]}
    recs.write_text((repo / "reports" / "h100" / "microbench.jsonl").read_text() + json.dumps(broken) + "\n")
    r = CliRunner().invoke(app, ["calibrate", str(recs), "--out", str(tmp_path / "p.yaml"),
                                 "--report", str(tmp_path / "c.json")])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "host/ar/B=3/P=99/O=9/broken" in r.stderr and "rerun the case" in r.stderr


def test_record_telemetry_window():
    """Each microbenchmark record gets the NVML readings taken while it ran: median and lowest SM clock, median and
    largest power, throttle reasons; readings from before it are not its own. Kernel cases are read every 5 ms
    (a GEMM case lasts ~36 ms), host-timed cases every 50 ms."""
    from validation.microbench import _window, sample_interval_s

    samples = [{"t_s": t, "sm_clock_mhz": mhz, "power_w": w, "throttle_reasons": r}
               for t, mhz, w, r in ((0.0, 345, 70.0, 0), (1.0, 1980, 500.0, 0), (1.005, 1410, 700.0, 4),
                                    (1.010, 1500, 690.0, 4))]
    win = _window(samples, start_s=0.5)
    assert win["samples"] == 3 and win["sm_clock_mhz"] == 1500 and win["sm_clock_mhz_min"] == 1410
    assert (win["power_w"], win["power_w_max"]) == (690.0, 700.0)
    assert win["throttle"] == ["sw_power_cap"]
    assert _window(samples, start_s=2.0) == {"samples": 0}
    assert sample_interval_s("gemm") == 0.005 and sample_interval_s("host") == sample_interval_s("launch") == 0.05


def test_a_failed_rerun_keeps_the_earlier_record(tmp_path):
    """The last successful record of each key is read: a later failed one (a host probe that ran out of memory
    beside a grid) does not erase it."""
    good = {"key": "gemm/bf16/M=1/N=8/K=8", "kind": "gemm", "dtype": "bf16", "shape": {"M": 1, "N": 8, "K": 8},
            "flops": 128.0, "bytes": 160.0, "median_s": 2e-6, "status": "ok"}
    f = tmp_path / "mb.jsonl"
    f.write_text(json.dumps(good) + "\n" + json.dumps({**good, "status": "oom", "median_s": None}) + "\n")
    assert [r["median_s"] for r in load_records(f)] == [2e-6]


def test_gemm_suite_times_every_row_count_a_graph_replays():
    """Each projection shape is timed with cuBLAS at every row count of the runtime's CUDA graphs (a 320-row
    product is not the interpolation of 256 and 512)."""
    from sim.runtime_layout import ROW_BUCKETS
    from validation.microbench_plan import plan

    cases = [c for c in plan("gemm") if c.shape.get("impl", "cublas") == "cublas"]
    by_shape: dict[tuple, set] = {}
    for c in cases:
        by_shape.setdefault((c.shape["N"], c.shape["K"]), set()).add(c.shape["M"])
    assert len(by_shape) > 10
    for rows in by_shape.values():
        assert set(ROW_BUCKETS) <= rows and {2048, 16384} <= rows


def test_carried_profile_takes_the_host_of_its_own_machine(app, tmp_path):
    """The host's terms are the machine's, not the chip's: carry_over keeps the H100 machine's measured launch cost
    and host model (not the target datasheet's assumed 5 us); `--carry-host F` writes beside it a profile whose host
    terms are those fitted to F, SYNTHETIC host and launch records of the target's machine (400 us per pass + 2 us per
    row, 150 us per eager launch), and says so in the provenance. A file covering only some of the strategies the
    H100 machine's host model prices, or misuse, is one sentence, exit 2, before anything is written."""
    profile, _ = calibrate(synthetic_records(), load_profile("h100-sxm"), "synthetic")
    profile = profile.model_copy(update={"launch_overhead_us": 90.0, "host_pass_overhead_us": 700.0})
    h200 = carry_over(profile, load_profile("h200"), "from-h100")
    assert h200.launch_overhead_us == 90.0 and h200.host_pass_overhead_us == 700.0
    assert {"launch_overhead_us", "host_pass_overhead_us"} <= set(h200.provenance.calibration.carried_over)
    host = [{"key": f"host/ar/B={b}", "kind": "host", "dtype": "bf16", "flops": 0.0, "bytes": 0.0, "status": "ok",
             "shape": {"strategy": "ar", "batch": b}, "rows_per_pass": b, "seqs_per_pass": b, "blocks_per_pass": 0,
             "median_s": (400 + 2 * b) * 1e-6} for b in (1, 8, 64)]
    launch = {"key": "launch/eager_pass/n=1000", "kind": "launch", "dtype": "fp32", "flops": 0.0, "bytes": 0.0,
              "shape": {"mode": "eager_pass"}, "median_s": 150e-6, "status": "ok"}
    own = with_host_of(h200, host + [launch], "h200-host.jsonl")
    assert own.host_pass_overhead_us == pytest.approx(400, rel=1e-3) and own.launch_overhead_us == 150.0
    assert own.efficiency == h200.efficiency  # the chip's curves stay the carried ones
    cal = own.provenance.calibration
    assert {"launch_overhead_us", "host_pass_overhead_us"} <= set(cal.measured) and "h200-host.jsonl" in \
        own.provenance.notes
    assert not {"launch_overhead_us", "host_pass_overhead_us"} & set(cal.carried_over)
    launch_only = with_host_of(h200, [launch], "l.jsonl")  # the host model stays the H100 machine's
    assert launch_only.launch_overhead_us == 150.0 and launch_only.host_pass_overhead_us == 700.0
    assert "host_pass_overhead_us" in launch_only.provenance.calibration.carried_over
    spec = h200.model_copy(update={"host_pass_overhead_by_strategy_us": {"speculative": 50.0}})
    with pytest.raises(UserError, match="speculative"):  # F has AR records only
        with_host_of(spec, host, "ar-only.jsonl")

    f = tmp_path / "h200-host.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in host + [launch]))
    main = tmp_path / "mb.jsonl"
    main.write_text("".join(json.dumps(r) + "\n" for r in synthetic_records()))

    def args(folder, host_file):
        return ["calibrate", str(main), "--out", str(folder / "p.yaml"), "--report", str(folder / "c.json"),
                "--carry-host", str(host_file)]

    r = CliRunner().invoke(app, args(tmp_path / "ok", f))
    assert r.exit_code == 0, r.output
    plain = load_profile(str(tmp_path / "ok" / "h200-from-h100.yaml"))  # the carried profile, as without the option
    written = load_profile(str(tmp_path / "ok" / "h200-from-h100-host.yaml"))
    assert plain.launch_overhead_us != 150.0 and written.name == "h200-from-h100-host"
    assert written.launch_overhead_us == 150.0 and written.host_pass_overhead_us == pytest.approx(400, rel=1e-3)
    (tmp_path / "bad").mkdir()
    r = CliRunner().invoke(app, args(tmp_path / "bad", f) + ["--carry-to", "h200", "--carry-to", "h100-pcie"])
    assert r.exit_code == 2 and "--carry-host" in r.stderr and r.stderr.count("\n") == 1
    f.write_text(json.dumps(synthetic_records()[0]) + "\n")  # no host or launch record
    r = CliRunner().invoke(app, args(tmp_path / "bad", f))
    assert r.exit_code == 2 and "--carry-host" in r.stderr and r.stderr.count("\n") == 1
    assert list((tmp_path / "bad").iterdir()) == []  # nothing written


def test_an_unwritable_report_path_stops_before_any_profile_is_written(app, tmp_path):
    """--report naming a folder used to fail after the profiles were written (over the committed one by default)."""
    records = tmp_path / "mb.jsonl"
    records.write_text("".join(json.dumps(r) + "\n" for r in synthetic_records()))
    out = tmp_path / "prof" / "cal.yaml"
    r = CliRunner().invoke(app, ["calibrate", str(records), "--out", str(out), "--report", str(tmp_path)])
    assert r.exit_code == 2 and "--report:" in r.stderr and "is a folder" in r.stderr
    assert not out.exists()


def test_microbench_unknown_kind_is_told_on_any_machine(app, tmp_path):
    r = CliRunner().invoke(app, ["microbench", "--only", "foo", "--out", str(tmp_path / "m.jsonl")])
    assert r.exit_code == 2 and "--only: unknown kind 'foo'; choose one of launch" in r.stderr
