"""All-reduce microbenchmark: the time of one NCCL all-reduce of a bf16 tensor across every GPU of the machine, per
payload size, so that `memwall calibrate` can fit the link numbers the cost model prices tensor parallelism with
(sim/cost.py `_allreduce`: 2 (t - 1) / t x payload / link bandwidth + 2 (t - 1) x link latency, a ring).

One process per GPU (torch.multiprocessing, NCCL through torch.distributed); each size is warmed up, then timed as
5 sets of 20 back-to-back all-reduces between CUDA events on rank 0 (the collective ends together on every rank).
Issued eagerly from Python: on 2 H100s every all-reduce up to 8 MiB took ~52-59 us, which is the host's pace
issuing them, not the link's latency (a runtime under CUDA graphs would see less). Capturing the all-reduces in a
CUDA graph instead hung the processes on that machine (not investigated), so the latency fitted from these
records is an upper bound.
All sizes are measured in one launch of the processes (NCCL's setup takes seconds) and handed to the microbenchmark
runner one record at a time. NVLink multicast stays off (NCCL_NVLS_ENABLE=0): the device machines require it.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from pathlib import Path

SIZES_BYTES = (4096, 65536, 1 << 20, 8 << 20, 64 << 20, 256 << 20)
ITERS, SETS = 20, 5


def _worker(rank: int, world: int, sizes: list[int], init_file: str, out_file: str, cuda: bool = True) -> None:
    import time

    import torch
    import torch.distributed as dist

    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    if cuda:
        torch.cuda.set_device(rank)
        dist.init_process_group("nccl", init_method=f"file://{init_file}", rank=rank, world_size=world,
                                device_id=torch.device("cuda", rank))
    else:  # gloo on the CPU: the tests' check of the machinery (its times mean nothing)
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    results = {}
    for nbytes in sizes:
        x = (torch.ones(nbytes // 2, dtype=torch.bfloat16, device="cuda") if cuda
             else torch.ones(nbytes // 4, dtype=torch.float32))
        for _ in range(3):
            dist.all_reduce(x)
        if cuda:
            torch.cuda.synchronize()
        times = []
        for _ in range(SETS):
            dist.barrier()
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
            t0 = time.perf_counter()
            for _ in range(ITERS):
                dist.all_reduce(x)
            if cuda:
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) * 1e-3 / ITERS)
            else:
                times.append((time.perf_counter() - t0) / ITERS)
        x.fill_(1.0)
        dist.all_reduce(x)  # a check that the collective ran: every element is the world size
        ok = bool((x == world).all().item())
        results[nbytes] = {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
                           "repeats": SETS, "inner": ITERS, "sum_correct": ok}
    if rank == 0:
        Path(out_file).write_text(json.dumps({str(k): v for k, v in results.items()}))
    dist.destroy_process_group()


def measure(world: int, sizes=SIZES_BYTES, cuda: bool = True) -> dict[int, dict]:
    """{payload bytes: timing} of all-reduces across `world` GPUs (spawns `world` processes; cuda=False: gloo on
    the CPU, for tests)."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        init, out = str(Path(tmp) / "init"), str(Path(tmp) / "out.json")
        mp.spawn(_worker, args=(world, list(sizes), init, out, cuda), nprocs=world, join=True)
        return {int(k): v for k, v in json.loads(Path(out).read_text()).items()}


def fit_link(records: list[dict]) -> tuple[float, float] | None:
    """(link GB/s, link latency us) from `allreduce` records through the cost model's ring formula, by non-negative
    least squares (scipy.optimize.lsq_linear) on the relative error (each record weighted by 1 / its time, so
    that the 4 KiB all-reduces, which measure the latency, count as much as the 256 MiB ones)."""
    import numpy as np
    from scipy.optimize import lsq_linear

    pts = [(r["shape"]["world"], r["shape"]["bytes"], r["median_s"]) for r in records
           if r["kind"] == "allreduce" and r.get("status") == "ok"]
    if len(pts) < 2:
        return None
    t, b, s = (np.array(v, dtype=float) for v in zip(*pts))
    a = np.vstack([2 * (t - 1) / t * b, 2 * (t - 1)]).T / s[:, None]
    sol = lsq_linear(a, np.ones_like(s), bounds=(0, np.inf))
    inv_bw, lat = sol.x
    return (float(f"{1 / inv_bw / 1e9:.4g}") if inv_bw > 0 else float("inf"), float(f"{lat * 1e6:.4g}"))
