"""The fit of memwall's paged attention kernel (records of kind `paged`, validation/microbench.py `_run_paged`):
a compute and an HBM curve on the pass's FLOPs and unique K/V bytes, and the programs' walk
(sim.hardware.PagedPrograms: per launch configuration, programs resident at once, a fixed time per program and
ns per context position). The cost model prices the kernel as the slowest of the three (sim/cost.py `price`).

Why the walk: two curves on bytes cannot tell a launch of 64 programs walking 2,048 positions each (one block step
of 32 rows; 64.6 us) from one of 256 programs walking 2,048 (32 decodes: 98 us for 32 times the
bytes), and the launch configuration fixed per graph bucket sets the walk's pace (BLOCK_T 32 with 2 stages
walked at ~9 GB/s per program, 64 with 3 stages at ~15; paged-kernel suite of 11:41 UTC).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from sim.hardware import Curve, HardwareProfile, PagedPrograms, PagedWalk
from validation.host_fit import round_sig

SOFT_L1_SCALE = 0.05
MIN_RECORDS_PER_CONFIG = 3  # the walk's three numbers


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
    """Least-squares (soft-L1 on the relative error) fit of the kernel's compute and HBM curves and, per launch
    configuration with at least MIN_RECORDS_PER_CONFIG records, its programs' walk (programs at once, time per
    program, time per position); None with fewer than 8 records. On the H100's suite of 11:41 UTC one walk for
    every configuration fitted at 6.5% / 25% (median / p90), a walk per configuration at 3.8% / 15%: LLaDA's
    multi-head launches fill the GPU at ~200 programs, the 8B shape's at 250-570 (suite of 12:03: 4.1% / 15.8%)."""
    from scipy.optimize import least_squares

    if len(records) < 8:
        return None
    # features under a profile with a walk for every configuration met, so that bytes are unique K/V bytes
    met = {paged_op(r, base).launch.config for r in records}
    probe = base.model_copy(update={"efficiency": base.efficiency.model_copy(update={
        "paged_attention_programs": PagedPrograms(by_config={
            c: PagedWalk(resident=1.0, program_overhead_us=0.0, position_ns=0.0) for c in met})})})
    ops = [paged_op(r, probe) for r in records]
    counts: dict[str, int] = {}
    for op in ops:
        counts[op.launch.config] = counts.get(op.launch.config, 0) + 1
    configs = sorted(c for c, n in counts.items() if n >= MIN_RECORDS_PER_CONFIG)
    keep = [i for i, op in enumerate(ops) if op.launch.config in configs]
    ops = [ops[i] for i in keep]
    meas = np.array([records[i]["median_s"] for i in keep])
    flops = np.array([op.flops for op in ops])
    nbytes = np.array([op.bytes for op in ops])
    programs = np.array([op.launch.programs for op in ops])
    positions = np.array([op.launch.positions for op in ops])
    cfg = np.array([configs.index(op.launch.config) for op in ops])
    fixed_s = overhead_s * np.array([op.kernels for op in ops])  # split launches add the kernel that merges them
    peak_f, peak_b = base.peak_flops_per_s("bf16"), base.hbm_bandwidth_bytes_per_s
    k = len(configs)

    def model(x):
        m_c, h_c, m_m, h_m = x[0], 10 ** x[1], x[2], 10 ** x[3]
        t0_us, ns, resident = (np.asarray(x[4 + j * k:4 + (j + 1) * k])[cfg] for j in range(3))
        compute = (flops + h_c) / (peak_f * m_c)
        memory = (nbytes + h_m) / (peak_b * m_m)
        walk = np.maximum(1.0, programs / 10 ** resident) * (t0_us * 1e-6 + positions * ns * 1e-9)
        return fixed_s + np.maximum(np.maximum(compute, memory), walk)

    def residual(x):
        return model(x) / meas - 1.0

    # per configuration: overhead (us), ns per position, log10 programs at once (30 .. 3,000)
    lo = [0.02, 0.0, 0.02, 0.0] + [0.0] * k + [0.0] * k + [1.5] * k
    hi = [1.0, 14.0, 1.0, 12.0] + [50.0] * k + [1000.0] * k + [3.5] * k
    best = None
    for head, t0, ns, res in (([0.6, 9.0, 0.9, 7.0], 3.0, 40.0, 2.4), ([0.3, 10.0, 0.7, 6.0], 6.0, 30.0, 2.2),
                              ([0.8, 8.0, 0.95, 7.5], 1.0, 50.0, 2.6)):
        x0 = head + [t0] * k + [ns] * k + [res] * k
        r = least_squares(residual, x0, bounds=(lo, hi), loss="soft_l1", f_scale=SOFT_L1_SCALE)
        if best is None or r.cost < best.cost:
            best = r
    x = best.x
    compute = Curve(max_fraction=float(round_sig(x[0])), half_size=float(round_sig(10 ** x[1])))
    memory = Curve(max_fraction=float(round_sig(x[2])), half_size=float(round_sig(10 ** x[3])))
    walk = PagedPrograms(by_config={
        c: PagedWalk(resident=float(round_sig(10 ** x[4 + 2 * k + i])), program_overhead_us=float(round_sig(x[4 + i])),
                     position_ns=float(round_sig(x[4 + k + i])))
        for i, c in enumerate(configs)})
    return compute, memory, walk
