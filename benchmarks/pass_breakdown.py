"""Where the per-pass misses of multi-row passes come from (reports/h100/validation-notes.md: verifies of 9-64 rows,
block steps and diffusion steps of a few sequences were 6-14% slower than predicted): runs passes of `seqs`
sequences x `rows` paged rows at `context` positions on the 8B model's shape (random weights, the runtime's own
forward), lists the GPU time of each kernel (torch.profiler, CUDA activity) next to the cost model's operators for
the same shape, and times the paged attention kernel alone at every split count (under a CUDA graph).

    python3 benchmarks/pass_breakdown.py [--shape SEQSxROWSxCONTEXT ...] [--model NAME] [--graph] [--sustain S]
        [--out F.json]

`--graph` also captures each pass in one CUDA graph and reports the replay's time, its kernels' sum and the gaps
between kernels (from the profiler's kernel timeline).
"""
import argparse
import json
from dataclasses import replace
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

DEFAULT_SHAPES = ["8x5x400", "32x7x400", "1x32x300", "8x32x300", "1x128x384", "8x32x600", "64x1x600"]


def kernel_times_us(prof, passes: int) -> dict[str, float]:
    """GPU microseconds per pass of each kernel name (CUDA activity of the profiled passes)."""
    out = defaultdict(float)
    for e in prof.events():
        if e.device_type.name == "CUDA" and e.device_time > 0:
            out[e.name[:60]] += e.device_time / passes
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def graph_timeline(torch, fn) -> dict:
    """`fn` (one forward pass) captured in one CUDA graph: the replay's time (CUDA events, median of 10) and, from
    one profiled replay's kernel timeline, the kernels' summed time and the gaps between consecutive kernels (the
    cost model's `kernel_overhead_us` stands for a kernel's fixed time plus this gap), by the kernel before the gap."""
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    from cuda_timing import capture, replay_us

    g = capture(torch, fn, reps=1, warmup=2)
    replay = replay_us(torch, g, replays=10)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        g.replay()
        torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "trace.json"
        prof.export_chrome_trace(str(path))
        trace = json.loads(path.read_text())
    ks = sorted(((e["ts"], e["dur"], e["name"][:60]) for e in trace.get("traceEvents", [])
                 if e.get("cat") == "kernel" and "dur" in e), key=lambda k: k[0])
    gaps = [(b[0] - (a[0] + a[1]), a[2]) for a, b in zip(ks, ks[1:])]
    by_name: dict = defaultdict(list)
    for gap, name in gaps:
        by_name[name].append(gap)
    med = lambda x: sorted(x)[len(x) // 2] if x else None  # noqa: E731
    return {"graph_us_per_pass": replay, "kernels": len(ks), "kernel_sum_us": sum(k[1] for k in ks),
            "span_us": (ks[-1][0] + ks[-1][1] - ks[0][0]) if ks else None,
            "gap_median_us": med([g for g, _ in gaps]), "gap_sum_us": sum(g for g, _ in gaps),
            "gap_after_us": {n: {"n": len(v), "median": med(v), "sum": sum(v)} for n, v in
                             sorted(by_name.items(), key=lambda kv: -sum(kv[1]))},
            "kernel_us": {n: sum(k[1] for k in ks if k[2] == n) for n in by_name}}


def main() -> None:
    from cuda_timing import graph_time_us
    import torch
    from torch.profiler import ProfilerActivity, profile

    from runtime.forward import SeqInput, build_meta, forward
    from runtime.kernels import paged_attention as pa
    from runtime.model import Transformer
    from runtime.telemetry import NvmlSampler
    from validation.microbench import _window
    from sim.cost import pass_cost
    from sim.engine import prepare
    from sim.model import load_model
    from validation.validate import plan_scenarios
    from sim.passes import PassShape

    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", nargs="*", default=DEFAULT_SHAPES)
    ap.add_argument("--profile", default="hw_profiles/calibrated/h100-sxm-calibrated.yaml")
    ap.add_argument("--model", default="llama-3.1-8b", help="catalog model whose shape the passes run")
    ap.add_argument("--graph", action="store_true", help="also replay each pass as one CUDA graph and list the gaps "
                    "between its kernels")
    ap.add_argument("--sustain", type=float, default=0.0, help="run the pass back to back this many seconds before "
                    "profiling it (the power state of a long run); the SM clock is read during the profiled passes")
    ap.add_argument("--out")
    a = ap.parse_args()
    spec = load_model(a.model)
    model = Transformer.random(spec, seed=0, device="cuda", max_positions=4096)
    # the cost context of a graph-replayed pass of memwall's runtime: an AR point of the H100 grid, calibrated
    point = plan_scenarios(Path("examples/validation/plan-h100.yaml"))[0]
    ctx = replace(prepare(point.model_copy(update={"hardware": a.profile})).target_cost.ctx, model=spec)
    bt = 16
    results = []
    for text in a.shape:
        S, R, C = (int(x) for x in text.split("x"))
        per = -(-C // bt)
        cache = model.paged_cache(S * per, bt)
        seqs = [SeqInput([1 + (j % 997) for j in range(R)], C - R, list(range(i * per, (i + 1) * per)), R)
                for i in range(S)]
        # fill the contexts once (a prompt of C tokens per sequence), then time the R-row passes
        for i in range(S):
            forward(model, cache, build_meta([SeqInput([1] * C, 0, seqs[i].block_ids, 1)], cache, "cuda", 4096))
        meta = build_meta(seqs, cache, "cuda", 4096)
        for _ in range(3):
            forward(model, cache, meta)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < a.sustain:
            forward(model, cache, meta)
            torch.cuda.synchronize()
        passes = 5
        with NvmlSampler(interval_s=0.005) as sampler:
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                t0 = time.perf_counter()  # the profiler's start-up (seconds, idle) is not the passes' clock
                for _ in range(passes):
                    forward(model, cache, meta)
                torch.cuda.synchronize()
                t1 = time.perf_counter()
        kt = kernel_times_us(prof, passes)
        clocks = _window([x for x in sampler.samples if x["t_s"] <= t1], t0) if sampler.available else {}
        # the attention kernel alone, one layer's call, at each split count, 20 calls captured in one CUDA graph
        # (timed eagerly, each call took ~80-170 us: the host's launch pace, not the kernel)
        q = torch.randn(S * R, spec.num_heads, spec.d_head, device="cuda", dtype=torch.bfloat16)
        splits = {}
        for sp in (1, 2, 4, 8, 16):
            cfg = dict(pa.config_for(S * R, spec.num_heads, spec.num_kv_heads, spec.d_head), splits=sp)
            splits[sp] = graph_time_us(torch, lambda c=cache, cfg=cfg: pa.paged_decode(
                q, c.k[0], c.v[0], meta.block_tables, meta.context_lens, spec.d_head ** -0.5, config=cfg,
                groups=meta.groups))
        limits = [C - R + i + 1 for i in range(R)] * S
        shape = PassShape(S * R, S * R, S, S * C, sum(limits), S * R)
        pred = {o.name: o.time_s * 1e6 for o in pass_cost(ctx, shape).ops}
        total = sum(kt.values())
        # the model prices a graph-replayed pass at its bucket's rows (CostContext.priced_rows); the passes timed
        # here run their own rows, so a shape between buckets (8x5 = 40 rows: the 64-row graph) compares unlike work
        rec = {"shape": text, "gpu_us_per_pass": total, "kernels_us": kt, "attention_us_by_splits": splits,
               "sustained_s": a.sustain, "telemetry": clocks,
               "predicted_ops_us": pred, "predicted_us": sum(pred.values()), "priced_rows": ctx.priced_rows(shape)}
        if a.graph:
            try:
                rec["graph"] = graph_timeline(torch, lambda c=cache, m=meta: forward(model, c, m))
            except Exception as e:  # a pass that cannot be captured as built here: say so, keep the eager numbers
                rec["graph"] = {"error": f"{type(e).__name__}: {e}"[:300]}
        results.append(rec)
        padded = f" (priced as the {rec['priced_rows']}-row graph)" if rec["priced_rows"] != S * R else ""
        sm = clocks.get("sm_clock_mhz")
        print(f"\n== {S} seqs x {R} rows at {C} positions: GPU {total:.0f} us/pass, predicted "
              f"{rec['predicted_us']:.0f} us{padded}; SM clock {sm} MHz")
        for k, v in list(kt.items())[:10]:
            print(f"  {v:8.1f} us  {k}")
        print("  paged attention, one layer, us by splits: "
              + ", ".join(f"{k}: {v:.1f}" for k, v in splits.items()))
        gr = rec.get("graph", {})
        if "graph_us_per_pass" in gr:
            print(f"  graph replay {gr['graph_us_per_pass']:.0f} us: {gr['kernels']} kernels {gr['kernel_sum_us']:.0f} us"
                  f" + gaps {gr['gap_sum_us']:.0f} us (median {gr['gap_median_us']:.2f} us); largest gaps after: "
                  + ", ".join(f"{k[:30]} {v['n']}x{v['median']:.2f}" for k, v in list(gr["gap_after_us"].items())[:4]))
        elif gr:
            print(f"  graph: {gr['error']}")
        if True:
            print("  predicted: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(pred.items(), key=lambda x: -x[1])[:8]))
        del cache
        torch.cuda.empty_cache()
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
