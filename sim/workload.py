"""Workloads: the requests a scenario serves, each with an arrival time, a prompt length and an output length.

Synthetic workloads draw from a seeded `numpy.random.Generator` (same scenario + seed => the same requests);
traces are read from the formats production systems publish:
- Azure LLM inference trace CSV `TIMESTAMP,ContextTokens,GeneratedTokens` (timestamps as dates or seconds);
- Vidur's processed layout `arrived_at,num_prefill_tokens,num_decode_tokens` (data/traces/ ships two);
- JSONL lines `{"arrival_s": .., "prompt_tokens": .., "output_tokens": ..}`;
- length-only CSVs `num_prefill_tokens,num_decode_tokens,...` (arrivals then come from `rate_qps`, else t=0).
A malformed line is reported with file, line number and what was expected.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from sim.errors import UserError
from sim.scenario import Closed, Fixed, Gamma, LogNormal, Poisson, Trace, Uniform


@dataclass(frozen=True, slots=True)
class Request:
    id: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int


def sample_lengths(spec, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` lengths from a length spec: an int, or a fixed / uniform / lognormal distribution."""
    if isinstance(spec, int):
        return np.full(n, spec, dtype=np.int64)
    if isinstance(spec, Fixed):
        return np.full(n, spec.value, dtype=np.int64)
    if isinstance(spec, Uniform):
        return rng.integers(spec.low, spec.high + 1, size=n)
    if isinstance(spec, LogNormal):
        # choose mu so that the (unclipped) mean is spec.mean: E[X] = exp(mu + sigma^2 / 2)
        mu = np.log(spec.mean) - spec.sigma**2 / 2
        return np.clip(np.rint(rng.lognormal(mu, spec.sigma, size=n)), spec.min, spec.max).astype(np.int64)
    raise TypeError(f"unknown length spec {spec!r}")


def shortest(spec) -> int:
    """The smallest length a length spec can give."""
    if isinstance(spec, int):
        return spec
    return {Fixed: lambda: spec.value, Uniform: lambda: spec.low, LogNormal: lambda: spec.min}[type(spec)]()


def positions_needed(prompt: int, output: int, strategy) -> int:
    """Positions one request occupies at its end: its prompt and what the strategy commits for it (diffusion with a
    full window pads to gen_length)."""
    return prompt + strategy.tokens_to_commit(prompt, output)


def context_problem(workload, strategy, model_name: str, context_tokens: int | None) -> str | None:
    """Why no request of a synthetic workload can fit the model's context (its shortest possible request does not),
    or None. A sample whose requests all happen to be too long is caught once drawn (all_over_context).

    Such a workload cannot be served at all (vLLM's OpenAI-compatible server refuses a request whose prompt plus
    max_tokens exceeds max_model_len), so it is reported like weights that do not fit. Workloads where only some
    requests are too long (wide distributions, traces) are priced, and the result counts those requests
    (`requests_over_context`): refusing them would refuse a real trace on a short-context model. A model whose spec
    does not state its context (an inline spec without max_position_embeddings) is not checked."""
    if isinstance(workload, Trace) or context_tokens is None:
        return None
    prompt = shortest(workload.input_len)
    least = positions_needed(prompt, shortest(workload.output_len), strategy)
    if least > context_tokens:
        return (f"workload: every request needs at least {least:,} positions (input_len + output_len, or the "
                f"strategy's gen_length), beyond {model_name}'s context of {context_tokens:,} "
                "(max_position_embeddings); shorten them or choose a model with a longer context")
    return None


def all_over_context(n: int, model_name: str, context_tokens: int) -> str:
    """The does-not-fit message of a workload whose drawn (or recorded) requests are all past the context."""
    return (f"workload: all {n:,} requests need more positions than {model_name}'s context of {context_tokens:,} "
            "(max_position_embeddings); shorten them or choose a model with a longer context")


def over_context(requests: list[Request], strategy, context_tokens: int | None) -> int:
    """How many requests need more positions than the model has (0 when its context is not stated)."""
    if context_tokens is None:
        return 0
    return sum(1 for r in requests if positions_needed(r.prompt_tokens, r.output_tokens, strategy) > context_tokens)


def _arrivals(workload, n: int, rng: np.random.Generator) -> np.ndarray:
    if isinstance(workload, Closed):
        return np.zeros(n)
    if isinstance(workload, Poisson):
        return np.cumsum(rng.exponential(1.0 / workload.rate_qps, size=n))
    if isinstance(workload, Gamma):
        # gamma gaps with mean 1/rate and coefficient of variation cv: shape k = 1/cv^2, scale = 1/(rate k)
        shape = 1.0 / workload.cv**2
        return np.cumsum(rng.gamma(shape, 1.0 / (workload.rate_qps * shape), size=n))
    raise TypeError(f"unknown workload {workload!r}")


def generate_requests(workload, seed: int) -> list[Request]:
    """The requests of a workload, sorted by arrival (ties by id)."""
    if isinstance(workload, Trace):
        return read_trace(workload, seed)
    rng = np.random.default_rng(seed)
    n = workload.num_requests
    arrivals = _arrivals(workload, n, rng)
    prompts = sample_lengths(workload.input_len, n, rng)
    outputs = sample_lengths(workload.output_len, n, rng)
    return [Request(i, float(arrivals[i]), int(prompts[i]), int(outputs[i])) for i in range(n)]


# -- traces ---------------------------------------------------------------------------------------------------------

_LAYOUTS = {
    # header columns (lower-case) -> (arrival column or None, prompt column, output column)
    "azure": ("timestamp", "contexttokens", "generatedtokens"),
    "processed": ("arrived_at", "num_prefill_tokens", "num_decode_tokens"),
    "lengths": (None, "num_prefill_tokens", "num_decode_tokens"),
}


def _finite(t: float) -> float:
    """t, or ValueError for nan and infinities (which would sort anywhere and stretch the makespan to inf)."""
    if not math.isfinite(t):
        raise ValueError(f"not a finite time: {t}")
    return t


def _parse_time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    # Azure 2023 traces print e.g. "2023-11-16 18:15:46.6805900" (7 fractional digits); trim to microseconds
    head, _, frac = text.strip().partition(".")
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}" if frac else head).timestamp()


def read_trace(trace: Trace, seed: int = 0) -> list[Request]:
    """Requests from a trace file, arrivals rebased to the first request and multiplied by `time_scale`. A
    length-only trace's requests arrive at t = 0, or as a Poisson process of `rate_qps` (seeded, in file order)."""
    path = Path(trace.path)
    if not path.exists():
        raise UserError(f"workload.path: trace file {path} does not exist")
    if path.is_dir():
        raise UserError(f"workload.path: {path} is a folder; expected a CSV or JSONL trace file")
    try:
        rows, timed = (_read_jsonl(path), True) if path.suffix in (".jsonl", ".ndjson") else _read_csv(path)
    except UnicodeDecodeError:
        raise UserError(f"workload.path: {path} is not UTF-8 text; expected a CSV or JSONL trace") from None
    if not rows:
        raise UserError(f"workload.path: {path} holds no requests")
    if trace.rate_qps is not None:
        if timed:
            raise UserError(f"workload.rate_qps: {path} has arrival times of its own; rate_qps sets arrivals only "
                            "for a length-only trace (use time_scale to replay it faster or slower)")
        rng = np.random.default_rng(trace.seed if trace.seed is not None else seed)
        gaps = rng.exponential(1.0 / trace.rate_qps, size=len(rows))
        rows = [(float(t), p, o) for t, (_, p, o) in zip(np.cumsum(gaps) - gaps[0], rows)]
    rows.sort(key=lambda r: r[0])
    if rows:
        t0 = rows[0][0]
        rows = [((t - t0) * trace.time_scale, p, o) for t, p, o in rows]
    rows = [r for r in rows if r[0] >= trace.start_s * trace.time_scale]
    if trace.max_requests is not None:
        rows = rows[: trace.max_requests]
    return [Request(i, t, p, o) for i, (t, p, o) in enumerate(rows)]


def _lengths(path: Path, line: int, prompt: str, output: str) -> tuple[int, int]:
    try:
        p, o = int(float(prompt)), int(float(output))
    except (TypeError, ValueError):
        raise UserError(f"{path}:{line}: expected whole-number token counts, got {prompt!r} and {output!r}") from None
    if p < 1 or o < 1:
        raise UserError(f"{path}:{line}: token counts must be >= 1, got prompt {p} and output {o}")
    return p, o


def _read_csv(path: Path) -> tuple[list[tuple[float, int, int]], bool]:
    """The rows (arrival, prompt, output) and whether the file has arrival times."""
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        layout = next((cols for cols in _LAYOUTS.values() if all(c is None or c in header for c in cols)), None)
        if layout is None:
            raise UserError(
                f"{path}:1: unknown trace header {','.join(header)!r}; expected TIMESTAMP,ContextTokens,"
                "GeneratedTokens or arrived_at,num_prefill_tokens,num_decode_tokens"
            )
        t_col, p_col, o_col = (header.index(c) if c else None for c in layout)
        rows = []
        for line, rec in enumerate(reader, start=2):
            if not rec or all(not x.strip() for x in rec):
                continue
            if len(rec) < len(header):
                raise UserError(f"{path}:{line}: expected {len(header)} comma-separated fields, got {len(rec)}")
            try:
                t = _parse_time(rec[t_col]) if t_col is not None else 0.0
                _finite(t)
            except ValueError:
                raise UserError(f"{path}:{line}: expected an arrival time (seconds or a date), got {rec[t_col]!r}") from None
            rows.append((t, *_lengths(path, line, rec[p_col], rec[o_col])))
    return rows, t_col is not None


def _read_jsonl(path: Path) -> list[tuple[float, int, int]]:
    rows = []
    with path.open() as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                rec = json.loads(text)
                t = _finite(float(rec["arrival_s"]))
                p, o = rec["prompt_tokens"], rec["output_tokens"]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise UserError(
                    f"{path}:{line}: expected a JSON object with arrival_s, prompt_tokens, output_tokens"
                ) from None
            rows.append((t, *_lengths(path, line, p, o)))
    return rows
