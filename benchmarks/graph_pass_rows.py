"""Graph-replayed passes of R paged rows (8 sequences x R/8 new tokens at 256 cached positions): device time per
pass with the projections of up to 256 rows on memwall's Triton kernels or on cuBLAS (ops.CONFIG.triton_max_rows
256 or 64), and the kernels of a 256-row pass. llama-3.1-8b (GQA, causal rows) and llada-8b (MHA, bidirectional).

Run on the GPU machine (repo root, sim's wheels on PYTHONPATH):
    python3 benchmarks/graph_pass_rows.py --out $OUT/graph-rows.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime import ops  # noqa: E402
from runtime.forward import SeqInput  # noqa: E402
from runtime.graphs import DecodeGraphs  # noqa: E402
from runtime.model import Transformer  # noqa: E402
from sim.model import load_model  # noqa: E402

ROWS = (8, 64, 96, 128, 192, 256, 384, 512)
SEQS, PREFIX, BT = 8, 256, 16


def seqs_of(model, rows: int) -> list[SeqInput]:
    q = rows // SEQS
    per = -(-(PREFIX + q) // BT)
    causal = model.spec.attention == "causal"
    return [SeqInput(list(range(1, q + 1)), PREFIX, list(range(i * per, (i + 1) * per)), q,
                     attend=None if causal else "full") for i in range(SEQS)]


def time_pass(model, cache, rows: int, profile: bool = False) -> dict:
    graphs = DecodeGraphs(model, cache, max_context=PREFIX + 512, buckets=(rows,), capture=False)
    staged = graphs.load_seqs(seqs_of(model, rows))
    times = []
    for i in range(25):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        graphs.replay_logits(*staged)
        b.record()
        b.synchronize()
        if i >= 5:
            times.append(a.elapsed_time(b) / 1e3)
    out = {"s": statistics.median(times)}
    if profile:
        from torch.profiler import ProfilerActivity, profile as prof

        with prof(activities=[ProfilerActivity.CUDA]) as p:
            for _ in range(3):
                graphs.replay_logits(*staged)
            torch.cuda.synchronize()
        ev = sorted(p.key_averages(), key=lambda e: -e.device_time_total)
        total = sum(e.device_time_total for e in ev) / 3
        out["kernel_us_per_pass"] = total
        out["top"] = [(e.key[:80], round(e.device_time_total / 3, 1), e.count // 3) for e in ev[:10]]
    del graphs
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    res: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "rows": ROWS}
    for name in ("llama-3.1-8b", "llada-8b"):
        model = Transformer.random(load_model(name), seed=0, device="cuda", max_positions=1024)
        cache = model.paged_cache(SEQS * -(-(PREFIX + 512) // BT), BT)
        for limit in (256, 64):
            ops.CONFIG.triton_max_rows = limit
            for r in ROWS:
                t = time_pass(model, cache, r, profile=(r == 256))
                res.setdefault(name, {}).setdefault(str(limit), {})[str(r)] = t
                print(f"{name:13s} triton<= {limit:3d} rows {r:4d}: {t['s'] * 1e3:7.2f} ms", flush=True)
                a.out.write_text(json.dumps(res, indent=1))
        del model, cache
        torch.cuda.empty_cache()
    for name in ("llama-3.1-8b", "llada-8b"):
        for limit in ("256", "64"):
            print(f"\n{name} triton<= {limit}, 256 rows, kernels per pass "
                  f"{res[name][limit]['256']['kernel_us_per_pass']:.0f} us:")
            for k, us, n in res[name][limit]["256"]["top"]:
                print(f"  {us:8.1f} us {n:4d}x {k}")


if __name__ == "__main__":
    main()
