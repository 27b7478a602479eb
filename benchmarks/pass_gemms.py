"""Do a graph-replayed pass's GEMMs run faster than the GEMM suite times them, in one call and one power state?

The +4-13% on passes of 512-1,024 rows (reports/h100/validation-notes.md) is mostly their GEMMs (session 8's
breakdown of an eager block step), and neither L2-hot elementwise kernels nor a lower GEMM duty explains it
(benchmarks/elementwise_l2.py, gemm_duty.py). This script times, for each `--shape` SEQSxROWSxCONTEXT of the 8B model
(random weights, the runtime's own forward): the pass captured in one CUDA graph, replayed back to back for
`--sustain` s (the grid's passes run back to back too), then profiled while it keeps replaying for as long
(torch.profiler, CUDA kernels; the last 10 passes read), its kernels split into GEMMs (cuBLAS names) and the rest; and the same projections timed the GEMM suite's way
(each shape back to back in a CUDA graph, sustained likewise, weights rotating over copies that span several L2s).
NVML power and SM clock are read after each. Calibration-side only: no validation pass is used.

    python3 benchmarks/pass_gemms.py [--shape 1x512x512 16x32x288 1x1024x1024] [--sustain 2] [--out F.json]
"""
import argparse
import json
import math
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

GEMM_MARKERS = ("gemm", "nvjet", "xmma", "cutlass")  # cuBLAS's kernel names on Hopper


def main() -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from cuda_timing import capture, nvml_state_reader, sustained_us
    from runtime.forward import SeqInput, build_meta, forward
    from runtime.model import Transformer
    from sim.model import load_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", nargs="*", default=["1x512x512", "16x32x288", "1x1024x1024"])
    ap.add_argument("--sustain", type=float, default=2.0)
    ap.add_argument("--out")
    a = ap.parse_args()
    state = nvml_state_reader()

    spec = load_model("llama-3.1-8b")
    model = Transformer.random(spec, seed=0, device="cuda", max_positions=4096)
    d, inter, vocab = spec.hidden_size, spec.intermediate_size, spec.vocab_size
    qkv_n = spec.q_dim + 2 * spec.kv_dim
    l2 = torch.cuda.get_device_properties(0).L2_cache_size

    def sustained(g, per: int = 1) -> float:
        return sustained_us(torch, g, a.sustain, per)

    def suite_us(rows: int, n: int, k: int) -> float:
        """One projection the GEMM suite's way: back to back in a graph, weights rotating, sustained."""
        sets = max(2, math.ceil(3 * l2 / (n * k * 2)))
        ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * k ** -0.5 for _ in range(sets)]
        x = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16)
        y = torch.empty(rows, n, device="cuda", dtype=torch.bfloat16)
        reps = max(8, sets)
        it = iter(range(10**9))
        g = capture(torch, lambda: torch.matmul(x, ws[next(it) % sets].t(), out=y), reps)
        return sustained(g, reps)

    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "sustain_s": a.sustain, "shapes": []}
    bt = 16
    for text in a.shape:
        S, R, C = (int(x) for x in text.split("x"))
        rows = S * R
        per = -(-C // bt)
        cache = model.paged_cache(S * per, bt)
        seqs = [SeqInput([1 + (j % 997) for j in range(R)], C - R, list(range(i * per, (i + 1) * per)), R)
                for i in range(S)]
        for i in range(S):  # fill the contexts once, then replay the R-row passes
            forward(model, cache, build_meta([SeqInput([1] * C, 0, seqs[i].block_ids, 1)], cache, "cuda", 4096))
        meta = build_meta(seqs, cache, "cuda", 4096)
        g = capture(torch, lambda c=cache, m=meta: forward(model, c, m), reps=1, warmup=2)
        pass_us = sustained(g)
        pass_state = state()
        # profile while the passes run back to back (the profiler's start-up idles the GPU for a while, and a pass
        # right after it runs cool), then read the kernels of the last `tail` passes only
        replays, tail = 0, 10
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            end = time.perf_counter() + a.sustain
            while time.perf_counter() < end:
                g.replay()
                torch.cuda.synchronize()
                replays += 1
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "trace.json"
            prof.export_chrome_trace(str(path))
            trace = json.loads(path.read_text())
        events = sorted((e for e in trace.get("traceEvents", []) if e.get("cat") == "kernel" and "dur" in e),
                        key=lambda e: e["ts"])
        per_pass = round(len(events) / replays) if replays else 0  # the graph replays the same kernels each time
        last = events[-tail * per_pass:] if per_pass else []
        by_name: dict = defaultdict(float)
        for e in last:
            by_name[e["name"][:80]] += e["dur"] / tail
        gemm_us = sum(t for n, t in by_name.items() if any(m in n.lower() for m in GEMM_MARKERS))
        kernels_us = sum(by_name.values())
        span_us = (last[-1]["ts"] + last[-1]["dur"] - last[0]["ts"]) / tail if last else None
        del g
        shapes = {"qkv": (qkv_n, d), "o": (d, spec.q_dim), "gate_up": (2 * inter, d), "down": (d, inter)}
        suite = {name: suite_us(rows, n, k) for name, (n, k) in shapes.items()}
        suite_state = state()
        logit_rows = rows  # a graph's LM head runs on every row of its bucket (sim.runtime_layout)
        suite["lm_head"] = suite_us(logit_rows, vocab, d)
        suite_gemm_us = spec.num_layers * sum(suite[n] for n in shapes) + suite["lm_head"]
        rec = {"shape": text, "rows": rows, "pass_us": pass_us, "pass_state": pass_state,
               "profiled_replays": replays, "profiled_kernels_per_pass": per_pass, "profiled_span_us": span_us,
               "profiled_kernels_us": kernels_us, "profiled_gemm_us": gemm_us,
               "suite_us": suite, "suite_gemm_us": suite_gemm_us, "suite_state": suite_state,
               "gemm_ratio_pass_over_suite": gemm_us / suite_gemm_us,
               "top_kernels": sorted(by_name.items(), key=lambda kv: -kv[1])[:12]}
        out["shapes"].append(rec)
        print(f"{text}: pass {pass_us:,.0f} us ({pass_state['power_w']:.0f} W, {pass_state['sm_mhz']} MHz); "
              f"profiled ({replays} replays, the last {tail}): span {span_us or 0:,.0f} us per pass, kernels "
              f"{kernels_us:,.0f} us of which GEMMs {gemm_us:,.0f}; the suite's GEMMs "
              f"{suite_gemm_us:,.0f} us ({suite_state['power_w']:.0f} W, {suite_state['sm_mhz']} MHz): "
              f"pass / suite {gemm_us / suite_gemm_us:.3f}", flush=True)
        for n, t in rec["top_kernels"][:6]:
            print(f"    {t:9,.0f} us  {n}")
        del cache
        torch.cuda.empty_cache()
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
