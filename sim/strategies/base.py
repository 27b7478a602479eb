"""What every decoding strategy tells the scheduler, vectorized over the sequences of a batch.

The scheduler keeps, per running sequence: effective prompt P, tokens to commit G, output committed so far m, and
`computed` (KV positions cached). A strategy answers three questions, as numpy arrays over many rows at once:

- `kv_ready(P, m)`: positions whose KV must be cached before the next step (AR: all but the last committed token,
  block diffusion: prompt + finished blocks, diffusion: nothing). The scheduler prefills (in chunks, if asked)
  up to it; the same rule recomputes a preempted sequence.
- `step(...)`: the work of one step for rows that are ready: query tokens q, attended positions c, logit rows o,
  attended pairs, and KV positions held during the pass. The scheduler sums these into the pass (DESIGN §3).
- `commit(...)`: tokens committed by the step (drawn from the seeded generator where the strategy is stochastic),
  and the KV positions kept afterwards (e.g. speculative decoding frees rejected drafts).

Extra passes on another model (speculative drafting) come from `extra_passes`. Adding a strategy is one file
here plus one line in `sim/strategies/__init__.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.passes import PassShape


@dataclass(slots=True)
class Step:
    """Per-row work of one step (arrays over the stepping rows)."""

    q: np.ndarray  # query tokens
    c: np.ndarray  # positions attended, the step's own included
    o: np.ndarray  # logit rows
    pairs: np.ndarray  # attended (query, key) pairs
    hold: np.ndarray  # KV positions the row holds during the pass


def causal_pairs(q: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Pairs of q new causal tokens at the end of c positions (sim/passes.attended_pairs, vectorized)."""
    return q * (c - q) + q * (q + 1) // 2


class Strategy:
    """Base: the defaults describe autoregressive decoding."""

    kind = "base"
    stochastic = False  # commits drawn from the generator
    repeatable = False  # steps identical but for context length (lets the engine price runs of passes at once)
    step_with_catchup = True  # a row may prefill its last positions and step in the same pass
    extra_models: tuple[str, ...] = ()  # roles of other models whose passes this strategy adds ("draft")

    def tokens_to_commit(self, prompt: int, output: int) -> int:
        """How many positions a request commits (its output; diffusion with a full window pads to gen_length)."""
        return output

    def useful(self, output: int) -> int:
        """Committed tokens that count as output (diffusion may truncate at gen_length)."""
        return output

    def kv_ready(self, P: np.ndarray, m: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def step(self, P: np.ndarray, m: np.ndarray, G: np.ndarray, state: np.ndarray) -> Step:
        raise NotImplementedError

    def commit(self, P, m, G, state, rng: np.random.Generator, n: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tokens committed per row, KV positions kept per row, new state per row). `n`, when given, is what an
        executor decided (e.g. the GPU runtime's measured acceptance) and replaces the draw."""
        raise NotImplementedError

    def extra_passes(self, P, m, G, state, catchup_shape: PassShape) -> list[tuple[str, PassShape]]:
        """Passes on other models in this iteration (role, shape); `catchup_shape` is the target's prefill part."""
        return []

    def summary(self) -> dict:
        """Strategy-specific numbers for the result (e.g. chosen k, expected acceptance)."""
        return {}


def even_schedule(span: np.ndarray, steps: np.ndarray, step_index: np.ndarray) -> np.ndarray:
    """Tokens committed at step `step_index` (0-based) when `span` tokens are spread over `steps` steps: the
    remainder goes to the earliest steps, so the counts sum to `span` (LLaDA's transfer schedule, Nie et al. 2025)."""
    base, extra = span // steps, span % steps
    return np.where(step_index < steps, base + (step_index < extra), 0)


# Fast-dLLM (Wu et al. 2025, arXiv:2505.22618), GSM8K with LLaDA: mean tokens committed per step at each
# confidence threshold, as published (issue [strategies-sim] quotes the table). Between entries: linear.
FAST_DLLM_TOKENS_PER_STEP = {0.5: 7.01, 0.6: 6.17, 0.7: 5.12, 0.8: 4.24, 0.9: 3.25, 1.0: 1.00}


def mean_tokens_per_step(threshold: float, override: float | None = None) -> float:
    """Mean tokens per step for a confidence threshold (Fast-dLLM's table, clamped at its ends)."""
    if override is not None:
        return override
    if threshold >= 1.0:
        return 1.0
    xs = sorted(FAST_DLLM_TOKENS_PER_STEP)
    return float(np.interp(threshold, xs, [FAST_DLLM_TOKENS_PER_STEP[x] for x in xs]))


def draw_tokens_per_step(mean: float, cap: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Tokens committed by a threshold step: at least one (the most confident position always commits), on average
    `mean`, modelled as 1 + Poisson(mean - 1) (an assumption: Fast-dLLM publishes means, not distributions), and
    never more than the positions still masked (`cap`)."""
    n = 1 + rng.poisson(max(mean - 1.0, 0.0), size=len(cap)) if mean > 1 else np.ones(len(cap), dtype=np.int64)
    return np.minimum(n, np.maximum(cap, 0))
