"""First-call and steady time of SDPA per backend for shapes never seen before in the process (the chunk shapes
a continuous-batching run meets one after another). Run on the GPU machine:
    python3 benchmarks/sdpa_first_call.py --out $OUT/sdpa-first-call.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    out = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "rows": []}
    shapes = [(q, c) for q, c in ((301, 301), (517, 517), (733, 1201), (1031, 1031), (1499, 2011))]
    for name, be in BACKENDS.items():
        for i, (q, c) in enumerate(shapes):
            q_, k_, v_ = (torch.randn(1, 32, n, 128, device="cuda", dtype=torch.bfloat16) for n in (q + i, c + i, c + i))
            times = []
            for _ in range(4):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                try:
                    with sdpa_kernel([be]):
                        F.scaled_dot_product_attention(q_, k_, v_, is_causal=(q == c))
                except RuntimeError as e:
                    times.append(str(e)[:80])
                    break
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            out["rows"].append({"backend": name, "q": q + i, "c": c + i, "first_s": times[0], "then_s": times[1:]})
            first = times[0] if isinstance(times[0], str) else f"{times[0] * 1e3:8.2f} ms"
            then = f"{times[-1] * 1e3:6.3f} ms" if not isinstance(times[-1], str) else ""
            print(f"{name:9s} q={q + i:5d} c={c + i:5d} first {first} then {then}", flush=True)
    a.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
