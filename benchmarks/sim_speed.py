"""Simulator speed: wall and CPU time, and simulated passes per second, for two workloads.

1. `issue`: 10,000 requests, lognormal lengths (mean prompt 1,000, mean output 250, sigma 0.6), Poisson at 80% of
   the capacity (measured first with a closed burst), llama-3.1-8b on h100-sxm, continuous batching.
2. `vidur`: the configuration of ../shared/vidur/run-vidur.sh: Llama-2-70B, TP 2 x PP 2, A100 80GB, Poisson
   1 qps, 1,024 prompt and 256 output tokens, vLLM-like scheduling with the limits Vidur used (batch cap 128,
   4,096 tokens per iteration, 0.8 of GPU memory; read from its config.json).

Usage: python benchmarks/sim_speed.py [issue|vidur|all] [--requests N]
Prints one line per run; timings are medians of --repeat runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from sim.engine import simulate
from sim.scenario import load_scenario

ISSUE = ["batching.kind=continuous", "workload.kind=poisson",
         "workload.input_len.dist=lognormal", "workload.input_len.mean=1000", "workload.input_len.sigma=0.6",
         "workload.output_len.dist=lognormal", "workload.output_len.mean=250", "workload.output_len.sigma=0.6"]
VIDUR = ["model=llama-2-70b", "hardware=a100-80gb-sxm", "parallel.tp=2", "parallel.pp=2",
         "batching.kind=continuous", "batching.max_batch=128", "batching.max_tokens_per_iter=4096",
         "batching.gpu_memory_utilization=0.8", "workload.kind=poisson", "workload.rate_qps=1",
         "workload.input_len=1024", "workload.output_len=256"]


def capacity_req_s() -> float:
    """Requests/s the issue workload's chip sustains: a closed burst of 2,000 requests, all at t=0."""
    s = load_scenario(None, [o for o in ISSUE if o != "workload.kind=poisson"] + ["workload.kind=closed",
                                                                                   "workload.num_requests=2000"])
    return simulate(s)[0].request_throughput_req_s


def timed(over: list[str], repeat: int) -> dict:
    s = load_scenario(None, over)
    walls, cpus = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        r, _ = simulate(s)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    wall = statistics.median(walls)
    return {"wall_s": round(wall, 3), "cpu_s": round(statistics.median(cpus), 3), "passes": r.passes,
            "passes_per_s": round(r.passes / wall), "completed": r.completed,
            "output_tok_s": round(r.output_throughput_tok_s, 1), "ttft_mean_s": r.ttft_s.mean,
            "ttft_p50_s": r.ttft_s.p50, "tpot_mean_s": r.tpot_s.mean, "tpot_p50_s": r.tpot_s.p50,
            "e2e_mean_s": r.e2e_s.mean}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("which", nargs="?", default="all", choices=["issue", "vidur", "all"])
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    if a.which in ("issue", "all"):
        cap = capacity_req_s()
        rate = 0.8 * cap
        out = timed(ISSUE + [f"workload.rate_qps={rate:.3f}", f"workload.num_requests={a.requests}"], a.repeat)
        print(json.dumps({"run": "issue", "capacity_req_s": round(cap, 3), "rate_qps": round(rate, 3), **out}))
    if a.which in ("vidur", "all"):
        out = timed(VIDUR + [f"workload.num_requests={a.requests}"], a.repeat)
        print(json.dumps({"run": "vidur-config", **out}))


if __name__ == "__main__":
    main()
