"""Masked diffusion decoding, LLaDA style (Nie et al. 2025), with Fast-dLLM's approximate caches (Wu et al. 2025).

The response starts as masks; each step is one bidirectional pass over prompt + response window and commits some
masked positions: an even schedule (`steps` spread over the response) or every position above a confidence
`threshold` (at least one; Fast-dLLM's published tokens-per-step means, see base.py). Without a cache every step
recomputes everything (q = c = prompt + window). Fast-dLLM decodes the response in blocks of `cache_block`: at each
block start one full pass refreshes the cache, then steps compute only the suffix from the current block on
(`prefix`), or only the current block (`dual`, which also caches the suffix). `window: full` computes the whole
gen_length every step and commits it all (padding past the real output is waste); `dynamic` computes up to the
committed frontier plus `lookahead` and stops at the request's real output length.
"""

from __future__ import annotations

import numpy as np

from sim.strategies.base import Step, Strategy, draw_tokens_per_step, even_schedule, mean_tokens_per_step


class Diffusion(Strategy):
    kind = "diffusion"

    def __init__(self, spec):
        self.spec = spec
        self.threshold = spec.threshold if (spec.threshold is not None or spec.steps is not None) else 0.9
        self.stochastic = spec.steps is None and mean_tokens_per_step(self.threshold, spec.tokens_per_step) > 1
        self.mean = mean_tokens_per_step(self.threshold, spec.tokens_per_step) if spec.steps is None else None

    def tokens_to_commit(self, prompt: int, output: int) -> int:
        g = self.spec.gen_length
        if self.spec.window == "full":
            return g if g is not None else output
        return min(output, g) if g is not None else output

    def useful(self, output: int) -> int:
        g = self.spec.gen_length
        return min(output, g) if g is not None else output

    def kv_ready(self, P, m):
        return np.zeros_like(m)  # nothing exact to cache: every step (re)computes what it needs

    def _span(self, m, G):
        """Start and length of the span whose masks the next step commits (whole response, or a cache block)."""
        if self.spec.cache == "none":
            return np.zeros_like(m), G.copy()
        b = self.spec.cache_block
        start = (np.minimum(m, np.maximum(G - 1, 0)) // b) * b
        return start, np.minimum(b, G - start)

    def _window(self, m, G, span_end):
        if self.spec.window == "full":
            return G
        return np.minimum(G, np.maximum(span_end, m + self.spec.lookahead))

    def step(self, P, m, G, state) -> Step:
        start, length = self._span(m, G)
        W = self._window(m, G, start + length)
        N = P + W
        cache = self.spec.cache
        refresh = state == 0  # first step of a block: a full pass that (re)builds the cache
        if cache == "none":
            q, hold = N, np.zeros_like(N)
        elif cache == "prefix":
            q = np.where(refresh, N, N - (P + start))
            hold = P + start
        else:  # dual: prefix and suffix cached, steps compute the current block only
            q = np.where(refresh, N, np.minimum(length, W - start))
            hold = N
        return Step(q, N, q, q * N, hold)

    def _commits(self, m, G, state, rng):
        start, length = self._span(m, G)
        left = np.maximum(start + length - m, 0)  # masks still open in the span
        if self.mean is None:  # even schedule: steps for this span, in proportion to its share of the response
            total = self.spec.gen_length or np.maximum(G, 1)
            steps_span = np.maximum(1, -(-self.spec.steps * length // total))
            n = even_schedule(length, steps_span, state)
            n = np.where((state >= steps_span - 1) & (left > 0), left, n)  # a last step takes what is left
            return np.minimum(np.maximum(n, 0), left), start + length
        return draw_tokens_per_step(self.mean, left, rng), start + length

    def commit(self, P, m, G, state, rng, n=None):
        step = self.step(P, m, G, state)
        drawn, span_end = self._commits(m, G, state, rng)
        n = drawn if n is None else n
        new_state = np.where(m + n >= span_end, 0, state + 1)
        return n, step.hold, new_state

    def summary(self) -> dict:
        s = self.spec
        out = {"cache": s.cache, "window": s.window}
        out["tokens_per_step_mean"] = self.mean if self.mean is not None else float("nan")
        if s.steps is not None:
            out["steps"] = s.steps
        return out
