"""Where the serving loop's wall time goes, per forward pass, for plan points of a validation plan: the scheduler,
graph staging, eager pass metadata, the timed device work, the commit rules (confidences and host bookkeeping),
the recorder, and the harness (NVML sampler thread, progress bar, cost-model counting).

    python3 benchmarks/host_phases.py examples/validation/plan-h100.yaml block-22 ar-03 ... [--out F.json]

Each point runs twice after its own warm-up: `harness` as `memwall validate` runs it (validation.run.run_scenario
inside a rich progress bar, NVML sampling), `bare` as runtime.serve alone. Timers wrap functions by patching them
(perf_counter around the call; a phase's time includes the phases it calls).
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def instrument(acc: dict):
    """Patch the serving loop's phases with wall-clock timers; returns an undo function."""
    import runtime.block_diffusion as bd
    import runtime.diffusion as df
    import runtime.executor as ex
    import runtime.graphs as gr
    import runtime.plan_exec as pe
    import runtime.serve as sv
    import runtime.speculative as sp
    import sim.metrics as me
    import sim.scheduler as sc

    targets = [(sc.Scheduler, "plan"), (sc.Scheduler, "update"), (me.Recorder, "passes_done"),
               (gr.DecodeGraphs, "load_seqs"), (gr.DecodeGraphs, "load"), (pe, "build_meta"), (pe, "pass_shape"),
               (pe.PlanExecutor, "timed"), (ex.Executor, "_timed"), (bd, "confidences"), (df, "confidences"),
               (ex.Executor, "execute"), (pe.PlanExecutor, "run_pass"), (ex, "build_meta")]
    for cls in (bd.BlockDiffusionExecutor, df.DiffusionExecutor, sp.SpeculativeExecutor):
        targets.append((cls, "execute_plan"))
    # the chained speculative path (runtime/speculative.py): staging each pass, launching it, waiting at the end
    import runtime.timing as tm

    targets += [(pe.PlanExecutor, "stage"), (tm.PassTimer, "run"), (tm.PassTimer, "settle"),
                (sp.SpeculativeExecutor, "_chained_passes"), (sp.SpeculativeExecutor, "_decide_greedy"),
                (gr.DecodeGraphs, "_fill"), (gr, "staging_array"), (gr, "index_to_device"), (sp, "index_to_device")]
    targets.append((sv.WallClock, "sleep_until"))  # waiting for arrivals: not host work
    undo = []
    for owner, name in targets:
        if name not in vars(owner):
            continue
        orig = vars(owner)[name]
        label = f"{getattr(owner, '__name__', owner)}.{name}".split(".")[-2:]
        label = ".".join(label)

        def wrap(orig=orig, label=label):
            def timed(*a, **k):
                t0 = time.perf_counter()
                try:
                    return orig(*a, **k)
                finally:
                    acc[label] += time.perf_counter() - t0
                    acc[label + " calls"] += 1
            return timed

        setattr(owner, name, wrap())
        undo.append((owner, name, orig))
    def restore():
        for owner, name, orig in reversed(undo):
            setattr(owner, name, orig)
    return restore


def run_point(s, mode: str, device: str = "cuda") -> dict:
    import torch

    from runtime.serve import serve
    from validation.run import build, run_scenario

    acc: dict = defaultdict(float)
    if mode == "harness":
        from rich.progress import BarColumn, Progress, TextColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), transient=True) as bar:
            task = bar.add_task(s.name, total=None)
            restore = instrument(acc)
            t0 = time.perf_counter()
            rec = run_scenario(s, device, progress=lambda i: bar.update(task, completed=i))
            restore()
        wall_total = time.perf_counter() - t0
        makespan = rec["result"]["makespan_s"]
        device_by_pass, host_by_pass = [p[-1] for p in rec["passes"]], rec.get("pass_host_s", [])
        device = sum(device_by_pass)
        passes = len(rec["passes"])
        fwd = len(rec["strategy_passes"]) or passes
    else:
        setup, model, executor, blocks, reqs = build(s, device)
        if s.strategy.kind == "ar":
            from validation.run import warm_up

            warm_up(executor, s, blocks)
        base = dict(scenario=s.name, hardware="h", model="m", strategy=s.strategy.kind, batching=s.batching.kind,
                    weight_bytes_per_gpu=0)
        if device == "cuda":
            torch.cuda.synchronize()
        restore = instrument(acc)
        t0 = time.perf_counter()
        served = serve(reqs, s.batching, executor, blocks, base, seed=s.seed,
                       strategy=None if s.strategy.kind == "ar" else setup.strategy,
                       kv_extra=0 if s.strategy.kind == "ar" else setup.kv_extra)
        restore()
        wall_total = time.perf_counter() - t0
        makespan = served.result.makespan_s
        device_by_pass, host_by_pass = list(served.device_pass_s), list(served.host_pass_s)
        device = sum(device_by_pass)
        passes = len(served.device_pass_s)
        fwd = len(getattr(executor, "pass_log", [])) or passes
    idle = acc.get("WallClock.sleep_until", 0.0)
    return {"point": s.name, "mode": mode, "makespan_s": makespan, "device_s": device, "idle_s": idle,
            "passes": passes, "forward_passes": fwd, "host_ms_per_forward": (makespan - device - idle) / fwd * 1e3,
            "phases_ms_per_forward": {k: v / fwd * 1e3 for k, v in acc.items() if not k.endswith("calls")},
            "calls": {k[:-6]: v for k, v in acc.items() if k.endswith("calls")}, "wall_s": wall_total,
            "pass_host_ms": pass_host_ms(host_by_pass, device_by_pass),
            "series": {"host_s": host_by_pass, "device_s": device_by_pass}}


def pass_host_ms(host_s: list, device_s: list) -> dict:
    """Each pass's host time as the serving loop records it (runtime/serve.py: the wall time since the previous pass
    ended, waits for arrivals excluded, outside the pass's device time), in milliseconds: the first pass, then the
    median of the light passes (decodes) and of the heavy ones (device time over 1.5x the median: prompt chunks)."""
    import numpy as np

    if not host_s or len(host_s) != len(device_s):
        return {}
    host, dev = np.array(host_s), np.array(device_s)
    big = dev > 1.5 * np.median(dev)
    f = lambda x: float(np.median(x) * 1e3) if len(x) else None  # noqa: E731
    return {"first_ms": float(host[0] * 1e3), "decode_median_ms": f(host[1:][~big[1:]]),
            "heavy_median_ms": f(host[1:][big[1:]]), "heavy_passes": int(big[1:].sum()),
            "mean_ms_after_first": float(host[1:].mean() * 1e3) if len(host) > 1 else None}


def main() -> None:
    import argparse
    import gc

    import torch

    from validation.validate import plan_scenarios

    ap = argparse.ArgumentParser()
    ap.add_argument("plan")
    ap.add_argument("points", nargs="+")
    ap.add_argument("--out")
    ap.add_argument("--modes", default="harness,bare")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", help="run the points with this catalog model instead (CPU checks)")
    a = ap.parse_args()
    byname = {s.name: s for s in plan_scenarios(Path(a.plan))}
    out = []
    for name in a.points:
        for mode in a.modes.split(","):
            s = byname[name] if not a.model else byname[name].model_copy(update={"model": a.model})
            r = run_point(s, mode, a.device)
            out.append(r)
            ph = sorted(r["phases_ms_per_forward"].items(), key=lambda kv: -kv[1])
            print(f"{name:14s} {mode:7s} fwd {r['forward_passes']:4d} host/fwd {r['host_ms_per_forward']:6.2f} ms | "
                  + "  ".join(f"{k} {v:.2f}" for k, v in ph), flush=True)
            print(f"{'':14s} per pass: " + "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                     for k, v in r["pass_host_ms"].items()), flush=True)
            if a.out:
                Path(a.out).write_text(json.dumps(out, indent=1))
            gc.collect()
            if a.device == "cuda":
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
