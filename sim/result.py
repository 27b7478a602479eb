"""The result schema shared by the simulator (predicted) and the runtime (measured): comparing the two is a diff of
two objects of this class (DESIGN §2)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict


class Stats(BaseModel):
    """Mean and percentiles of one latency metric, in seconds (None when there were no samples)."""

    model_config = ConfigDict(frozen=True)

    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    n: int = 0

    @classmethod
    def of(cls, values, weights=None) -> "Stats":
        """Stats of samples, optionally weighted (a pass duration counted once per sequence it served)."""
        v = np.asarray(values, dtype=float)
        if v.size == 0:
            return cls()
        if weights is None:
            p50, p90, p99 = np.percentile(v, [50, 90, 99])
            return cls(mean=float(v.mean()), p50=float(p50), p90=float(p90), p99=float(p99), n=int(v.size))
        w = np.asarray(weights, dtype=float)
        keep = w > 0
        v, w = v[keep], w[keep]
        if v.size == 0:
            return cls()
        order = np.argsort(v, kind="stable")
        v, w = v[order], w[order]
        cdf = np.cumsum(w) / w.sum()
        pick = lambda p: float(v[min(np.searchsorted(cdf, p), v.size - 1)])  # noqa: E731 - tiny inline helper
        return cls(mean=float(np.average(v, weights=w)), p50=pick(0.5), p90=pick(0.9), p99=pick(0.99),
                   n=int(w.sum()))


class Result(BaseModel):
    """Throughput, latency and what bounds them, for one scenario."""

    model_config = ConfigDict(frozen=True)

    source: Literal["simulated", "measured"] = "simulated"
    scenario: str
    hardware: str
    model: str
    strategy: str
    batching: str
    fits: bool = True
    message: str | None = None  # why nothing ran (e.g. the weights do not fit)

    num_requests: int = 0
    completed: int = 0
    rejected: int = 0
    preemptions: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    makespan_s: float = 0.0

    output_throughput_tok_s: float = 0.0
    request_throughput_req_s: float = 0.0
    goodput_req_s: float | None = None  # requests/s that met every given SLO
    ttft_s: Stats = Stats()
    tpot_s: Stats = Stats()
    itl_s: Stats = Stats()
    e2e_s: Stats = Stats()
    queue_s: Stats = Stats()

    passes: int = 0
    pass_time_s: Stats = Stats()
    mean_batch: float = 0.0  # sequences per pass
    tokens_per_pass: float = 0.0  # query tokens per pass
    committed_per_pass: float = 0.0  # output tokens committed per pass
    mbu: float = 0.0  # achieved HBM bytes/s over peak, over the makespan
    mfu: float = 0.0  # achieved FLOP/s over dense peak, over the makespan
    arithmetic_intensity_flop_per_byte: float = 0.0
    memory_bound_fraction: float = 0.0  # of busy time
    compute_bound_fraction: float = 0.0
    host_bound_fraction: float = 0.0  # busy time spent on the host (scheduling, launches not hidden) or links
    busy_fraction: float = 0.0  # of the makespan, time a pass was running

    kv_capacity_tokens: int = 0  # per replica
    kv_peak_occupancy: float = 0.0
    kv_mean_occupancy: float = 0.0
    weight_bytes_per_gpu: float = 0.0
    extra: dict = {}  # strategy-specific numbers (acceptance, waste, ...)
