"""Autoregressive decoding: each step feeds the last committed token (q = 1) and commits the next one."""

from __future__ import annotations

import numpy as np

from sim.strategies.base import Step, Strategy


class AR(Strategy):
    kind = "ar"
    repeatable = True

    def __init__(self, spec=None, **_):
        pass

    def kv_ready(self, P, m):
        # every committed token but the last is cached; the last is the next step's query
        return P + np.maximum(m, 0) - 1

    def step(self, P, m, G, state) -> Step:
        c = P + m  # the query token attends to everything before it and itself
        ones = np.ones_like(c)
        return Step(ones, c, ones, c, c)

    def commit(self, P, m, G, state, rng, n=None):
        ones = np.ones_like(m) if n is None else n
        return ones, P + m + ones - 1, state
