"""Recording what happens during a run and summarizing it into a `Result`.

The recorder is fed by whoever executes passes (the SimPy engine, or the GPU runtime with wall-clock times), so
both produce the same metrics from the same events: arrivals, first tokens, finishes, and one row per pass.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field

import numpy as np

from sim.result import Result, Stats


@dataclass
class Recorder:
    """Per-request times and a per-pass log (kept as column chunks, one chunk per run of passes)."""

    num_requests: int
    arrival_s: np.ndarray = field(init=False)
    admitted_s: np.ndarray = field(init=False)
    first_token_s: np.ndarray = field(init=False)
    finish_s: np.ndarray = field(init=False)
    _chunks: list[tuple] = field(default_factory=list)  # runs of passes: per-pass arrays + shared scalars
    _rows: list[tuple] = field(default_factory=list)  # single passes: scalars in PASS_COLUMNS order + first tokens

    PASS_COLUMNS = ("replica", "start_s", "duration_s", "seqs", "tokens", "committed", "kv_used_blocks",
                    "running", "waiting", "flops", "bytes", "memory_bound_s", "host_s")

    def __post_init__(self) -> None:
        n = self.num_requests
        self.arrival_s = np.full(n, np.nan)
        self.admitted_s = np.full(n, np.nan)
        self.first_token_s = np.full(n, np.nan)
        self.finish_s = np.full(n, np.nan)

    def passes_done(self, replica: int, starts, durations, seqs: int, tokens: int, committed, kv_used: int,
                    running: int, waiting: int, flops, nbytes, mem_s, first_tokens: int, host_s=0.0) -> None:
        """Log a run of passes (arrays, one entry per pass) that share their batch; first tokens come from the
        first pass only. The KV and queue columns are the state after the run. `mem_s` is each pass's time in
        memory-bound operators, `host_s` its time on the host (and links) with the GPU idle: the rest is
        compute-bound."""
        self._chunks.append((replica, starts, durations, seqs, tokens, committed, kv_used, running, waiting, flops,
                             nbytes, mem_s, host_s, first_tokens))

    def pass_done(self, replica: int, start: float, duration: float, seqs: int, tokens: int, committed: int,
                  kv_used: int, running: int, waiting: int, flops: float, nbytes: float, mem_s: float,
                  first_tokens: int, host_s: float = 0.0) -> None:
        """Log one pass (scalars)."""
        self._rows.append((replica, start, duration, seqs, tokens, committed, kv_used, running, waiting, flops,
                           nbytes, mem_s, host_s, first_tokens))

    def _arrays(self) -> np.ndarray:
        """Every pass as a row of PASS_COLUMNS + first tokens, ordered by start time (cached until a new pass)."""
        key = (len(self._rows), len(self._chunks))
        if getattr(self, "_cache_key", None) == key:
            return self._cache
        parts = [np.array(self._rows, dtype=float).reshape(-1, len(self.PASS_COLUMNS) + 1)]
        for ch in self._chunks:
            k = len(ch[1])
            block = np.empty((k, len(self.PASS_COLUMNS) + 1))
            for j, v in enumerate(ch):
                block[:, j] = v
            block[1:, -1] = 0  # first tokens come from the first pass of a run
            parts.append(block)
        allrows = np.concatenate(parts)
        self._cache_key, self._cache = key, allrows[np.argsort(allrows[:, 1], kind="stable")]
        return self._cache

    def columns(self) -> dict[str, np.ndarray]:
        """The per-pass log as arrays, one per column of PASS_COLUMNS."""
        a = self._arrays()
        return {name: a[:, j] for j, name in enumerate(self.PASS_COLUMNS)}

    def itl_samples(self) -> tuple[np.ndarray, np.ndarray]:
        """(pass duration, sequences that got a token after an earlier one) for every pass: ITL samples."""
        a = self._arrays()
        return a[:, 2], a[:, 5] - a[:, -1]  # first tokens are TTFT, not inter-token latency

    @property
    def passes(self) -> list[tuple]:
        """The per-pass log as rows (tuples in PASS_COLUMNS order)."""
        cols = self.columns()
        return list(zip(*(cols[c].tolist() for c in self.PASS_COLUMNS)))

    def write_timeseries(self, path: str) -> None:
        """The per-pass log as CSV: batch size, KV occupancy, running/waiting counts over time."""
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(self.PASS_COLUMNS)
            w.writerows(self.passes)


def summarize(rec: Recorder, requests, base: dict, *, gpus: int, executors: int, peak_bw: float, peak_flops: float,
              kv_blocks: int, kv_block_tokens: int, slo=None, rejected: int = 0, preemptions: int = 0,
              extra: dict | None = None, useful=None) -> Result:
    """A `Result` from a recorder's events. `gpus` is how many GPUs shared the work (replicas x tp x pp) and the
    peaks are per GPU, so MBU/MFU are averages over all GPUs of the makespan; `executors` is how many passes can
    run at once (replicas x pipeline micro-batches), for the busy fraction."""
    prompts = np.array([r.prompt_tokens for r in requests], dtype=float)
    # output tokens each request really gets (a diffusion gen_length below the asked length truncates)
    outputs = np.array([useful(r.output_tokens) if useful else r.output_tokens for r in requests], dtype=float)
    done = ~np.isnan(rec.finish_s)
    completed = int(done.sum())
    cols = rec.columns()
    start, dur, seqs, tokens, committed, kv_used = (cols[c] for c in ("start_s", "duration_s", "seqs", "tokens",
                                                                       "committed", "kv_used_blocks"))
    flops, nbytes, mem_s, host_s = cols["flops"], cols["bytes"], cols["memory_bound_s"], cols["host_s"]
    if len(dur):
        t0 = float(np.nanmin(rec.arrival_s)) if len(requests) else 0.0
        makespan = float((start + dur).max()) - t0
    else:
        makespan = 0.0
    busy = float(dur.sum())
    out_tokens = int(outputs[done].sum())
    ttft = rec.first_token_s[done] - rec.arrival_s[done]
    e2e = rec.finish_s[done] - rec.arrival_s[done]
    multi = done & (outputs > 1)
    tpot = (rec.finish_s[multi] - rec.first_token_s[multi]) / (outputs[multi] - 1)
    queue = rec.admitted_s[done] - rec.arrival_s[done]
    goodput = None
    if slo is not None and (slo.ttft_s or slo.tpot_s) and makespan > 0:
        ok = np.ones(completed, dtype=bool)
        if slo.ttft_s:
            ok &= ttft <= slo.ttft_s
        if slo.tpot_s:
            tp_all = np.where(outputs[done] > 1, (rec.finish_s[done] - rec.first_token_s[done])
                              / np.maximum(outputs[done] - 1, 1), 0.0)
            ok &= tp_all <= slo.tpot_s
        goodput = float(ok.sum()) / makespan
    gpu_s = makespan * gpus
    occupancy = kv_used / kv_blocks if kv_blocks else np.zeros_like(kv_used)
    return Result(
        **base,
        num_requests=len(requests),
        completed=completed,
        rejected=rejected,
        preemptions=preemptions,
        prompt_tokens=int(prompts[done].sum()),
        output_tokens=out_tokens,
        makespan_s=makespan,
        output_throughput_tok_s=out_tokens / makespan if makespan > 0 else 0.0,
        request_throughput_req_s=completed / makespan if makespan > 0 else 0.0,
        goodput_req_s=goodput,
        ttft_s=Stats.of(ttft),
        tpot_s=Stats.of(tpot),
        itl_s=Stats.of(*rec.itl_samples()),
        e2e_s=Stats.of(e2e),
        queue_s=Stats.of(queue),
        passes=len(dur),
        pass_time_s=Stats.of(dur),
        mean_batch=float(seqs.mean()) if len(seqs) else 0.0,
        tokens_per_pass=float(tokens.mean()) if len(tokens) else 0.0,
        committed_per_pass=float(committed.mean()) if len(committed) else 0.0,
        mbu=float(nbytes.sum()) / (gpu_s * peak_bw) if gpu_s > 0 else 0.0,
        mfu=float(flops.sum()) / (gpu_s * peak_flops) if gpu_s > 0 else 0.0,
        arithmetic_intensity_flop_per_byte=float(flops.sum() / nbytes.sum()) if nbytes.sum() > 0 else 0.0,
        memory_bound_fraction=float(mem_s.sum()) / busy if busy > 0 else 0.0,
        compute_bound_fraction=max(0.0, 1.0 - float(mem_s.sum() + host_s.sum()) / busy) if busy > 0 else 0.0,
        host_bound_fraction=float(host_s.sum()) / busy if busy > 0 else 0.0,
        busy_fraction=busy / (makespan * executors) if makespan > 0 else 0.0,
        kv_capacity_tokens=kv_blocks * kv_block_tokens,
        kv_peak_occupancy=float(occupancy.max()) if len(occupancy) else 0.0,
        kv_mean_occupancy=float(occupancy.mean()) if len(occupancy) else 0.0,
        extra=extra or {},
    )
