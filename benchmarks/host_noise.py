"""How much the serving loop's host time moves between identical runs, and whether pinning the process to a few
CPU cores steadies it: one `host` microbenchmark case (validation/microbench_host.py) run `--runs` times per mode,
the modes interleaved, each run's mean and median host time per iteration (runtime/serve.py records it per pass).

    python3 benchmarks/host_noise.py [--case ar/16/128/64] [--runs 4] [--pin 2,3] [--out F.json]

Modes: `free` (the scheduler places the process's threads) and `pinned` (os.sched_setaffinity to the --pin cores:
the main thread and the threads it starts afterwards, the NVML sampler included; threads started during the
warm-up keep their placement).
"""
import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import torch

    from validation.microbench_host import host_scenario
    from validation.run import run_scenario

    ap = argparse.ArgumentParser()
    ap.add_argument("--case", default="ar/16/128/64", help="strategy/batch/prompt/output")
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--pin", default="2,3")
    ap.add_argument("--out")
    a = ap.parse_args()
    try:
        kind, b, p, o = a.case.split("/")
        shape = {"strategy": kind, "batch": int(b), "prompt": int(p), "output": int(o), "model": "llama-3.1-8b",
                 "block": 32, "steps": 8}
        pinned = {int(c) for c in a.pin.split(",")}
    except ValueError:
        sys.exit("--case must be strategy/batch/prompt/output (e.g. ar/16/128/64) and --pin a list of core numbers "
                 "(e.g. 2,3)")
    free = os.sched_getaffinity(0)
    if a.runs < 1 or shape["output"] < 3 or not pinned <= free:
        sys.exit(f"--runs must be at least 1, the output at least 3 tokens, and --pin among cores {sorted(free)}")
    s = host_scenario(shape)
    out = []
    run_scenario(s, "cuda")  # warm-up: graphs, kernels, allocator
    for i in range(a.runs):
        for mode, cores in (("free", free), ("pinned", pinned)):
            os.sched_setaffinity(0, cores)
            rec = run_scenario(s, "cuda")
            host = [h * 1e3 for h in rec["pass_host_s"][1:]]  # the prefill's host apart
            out.append({"mode": mode, "run": i, "mean_ms": statistics.fmean(host), "median_ms": statistics.median(host),
                        "p90_ms": sorted(host)[int(0.9 * len(host))], "first_ms": rec["pass_host_s"][0] * 1e3})
            print(f"{mode:7s} run {i}: host per iteration mean {out[-1]['mean_ms']:.3f} ms, median "
                  f"{out[-1]['median_ms']:.3f}, p90 {out[-1]['p90_ms']:.3f}", flush=True)
            torch.cuda.empty_cache()
    os.sched_setaffinity(0, free)
    for mode in ("free", "pinned"):
        means = [r["mean_ms"] for r in out if r["mode"] == mode]
        print(f"{mode:7s}: run means {min(means):.3f}-{max(means):.3f} ms (max/min {max(means) / min(means):.2f})")
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
