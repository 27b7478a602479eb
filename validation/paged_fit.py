"""The fit of memwall's paged attention kernel (records of kind `paged`, validation/microbench.py `_run_paged`):
a compute and an HBM curve on the pass's FLOPs and unique K/V bytes, and the programs' walk
(sim.hardware.PagedPrograms: programs resident at once, a fixed time per program, ns per context position per
launch configuration). The cost model prices the kernel as the slowest of the three (sim/cost.py `price`).

Why the walk: two curves on bytes cannot tell a launch of 64 programs walking 2,048 positions each (one block step
of 32 rows; 64.6 us) from one of 512 programs walking 512 (32 decodes at 2,048 positions: 98 us for 32 times
the bytes), and the launch configuration fixed per graph bucket sets the walk's pace (BLOCK_T 32 with 2 stages
walked at ~9 GB/s per program, 64 with 3 stages at ~15; paged-kernel suite of 11:41 UTC).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from sim.hardware import Curve, HardwareProfile, PagedPrograms
from validation.host_fit import round_sig

SOFT_L1_SCALE = 0.05
MIN_RECORDS_PER_CONFIG = 2


def paged_pass(shape: dict):
    """(model spec, PassShape) of a paged record's launch: `seqs` sequences of `rows` rows at `context` keys."""
    from sim.model import load_model
    from sim.passes import PassShape

    spec = load_model(shape.get("model", "llama-3.1-8b"))
    S, R, C = shape["seqs"], shape["rows"], shape["context"]
    causal = shape.get("causal", True)
    pairs = S * (R * C if not causal else sum(C - R + i + 1 for i in range(R)))
    n = S * R
    return spec, PassShape(n, n, S, S * C, pairs, n, "causal" if causal else "bidirectional")


def paged_op(rec: dict, profile: HardwareProfile):
    """The cost model's attention operator (sim.cost.attention_ops) for a paged record, on `profile`."""
    from sim.cost import CostContext, attention_ops

    spec, shape = paged_pass(rec["shape"])
    return replace(attention_ops(CostContext(spec, profile), shape)[0], count=1)  # one layer's launch


def fit_paged(records: list[dict], base: HardwareProfile,
              overhead_s: float) -> tuple[Curve, Curve, PagedPrograms] | None:
    """Least-squares (soft-L1 on the relative error) fit of the kernel's compute and HBM curves and its programs'
    walk to the paged records; None with fewer than 8 records."""
    from scipy.optimize import least_squares

    if len(records) < 8:
        return None
    # features under a profile whose paged kernel has a walk, so that bytes are unique K/V bytes
    probe = base.model_copy(update={"efficiency": base.efficiency.model_copy(update={
        "paged_attention_programs": PagedPrograms(resident=1.0, program_overhead_us=0.0, position_ns={})})})
    ops = [paged_op(r, probe) for r in records]
    configs = sorted({op.launch.config for op in ops})
    counts = {c: sum(op.launch.config == c for op in ops) for c in configs}
    configs = [c for c in configs if counts[c] >= MIN_RECORDS_PER_CONFIG]
    keep = [i for i, op in enumerate(ops) if op.launch.config in configs]
    ops = [ops[i] for i in keep]
    meas = np.array([records[i]["median_s"] for i in keep])
    flops = np.array([op.flops for op in ops])
    nbytes = np.array([op.bytes for op in ops])
    programs = np.array([op.launch.programs for op in ops])
    positions = np.array([op.launch.positions for op in ops])
    cfg = np.array([configs.index(op.launch.config) for op in ops])
    peak_f, peak_b = base.peak_flops_per_s("bf16"), base.hbm_bandwidth_bytes_per_s

    def model(x):
        m_c, h_c, m_m, h_m, resident, t0_us = x[0], 10 ** x[1], x[2], 10 ** x[3], 10 ** x[4], x[5]
        ns = np.asarray(x[6:])[cfg]
        compute = (flops + h_c) / (peak_f * m_c)
        memory = (nbytes + h_m) / (peak_b * m_m)
        walk = np.maximum(1.0, programs / resident) * (t0_us * 1e-6 + positions * ns * 1e-9)
        return overhead_s + np.maximum(np.maximum(compute, memory), walk)

    def residual(x):
        return model(x) / meas - 1.0

    k = len(configs)
    lo = [0.02, 0.0, 0.02, 0.0, 0.0, 0.0] + [0.001] * k
    hi = [1.0, 14.0, 1.0, 12.0, 5.0, 50.0] + [1000.0] * k
    best = None
    for x0 in ([0.6, 9.0, 0.9, 7.0, 2.4, 2.0] + [50.0] * k, [0.3, 10.0, 0.7, 6.0, 2.1, 5.0] + [30.0] * k,
               [0.8, 8.0, 0.95, 7.5, 2.8, 1.0] + [80.0] * k):
        r = least_squares(residual, x0, bounds=(lo, hi), loss="soft_l1", f_scale=SOFT_L1_SCALE)
        if best is None or r.cost < best.cost:
            best = r
    x = best.x
    compute = Curve(max_fraction=float(round_sig(x[0])), half_size=float(round_sig(10 ** x[1])))
    memory = Curve(max_fraction=float(round_sig(x[2])), half_size=float(round_sig(10 ** x[3])))
    walk = PagedPrograms(resident=float(round_sig(10 ** x[4])), program_overhead_us=float(round_sig(x[5])),
                         position_ns={c: float(round_sig(v)) for c, v in zip(configs, x[6:])})
    return compute, memory, walk
