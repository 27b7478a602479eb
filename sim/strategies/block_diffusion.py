"""Block diffusion (BD3-LM, Arriola et al. ICLR 2025; Fast-dLLM v2; SDAR): the response is generated in blocks of
`block_size` tokens, left to right; inside a block, steps of q = block_size masked positions attend to the exact
KV cache of the prompt and earlier blocks plus the block itself (block-causal attention), committing by an even
schedule (`steps_per_block`) or a confidence threshold. A finished block's KV is written by one pass over its
tokens; with `fuse_kv_write` (default) that pass rides along with the next block's first step (q = 2 * block),
which makes block_size 1 cost what AR decoding costs. Generation stops at the request's output length.
"""

from __future__ import annotations

import numpy as np

from sim.strategies.base import Step, Strategy, draw_tokens_per_step, even_schedule, mean_tokens_per_step


class BlockDiffusion(Strategy):
    kind = "block_diffusion"

    def __init__(self, spec):
        self.spec = spec
        self.B = spec.block_size
        threshold = spec.threshold if (spec.threshold is not None or spec.steps_per_block is not None) else 0.9
        self.mean = None if spec.steps_per_block is not None else mean_tokens_per_step(threshold, spec.tokens_per_step)
        self.stochastic = self.mean is not None and self.mean > 1
        self.step_with_catchup = spec.fuse_kv_write

    def kv_ready(self, P, m):
        return P + (np.maximum(m, 0) // self.B) * self.B  # prompt and every finished block

    def step(self, P, m, G, state) -> Step:
        prefix = self.kv_ready(P, m)
        q = np.full_like(prefix, self.B)
        c = prefix + self.B
        return Step(q, c, q, q * c, prefix)  # the block's own KV is not kept until it is finished

    def commit(self, P, m, G, state, rng, n=None):
        given = n
        prefix_tokens = (np.maximum(m, 0) // self.B) * self.B
        span = np.minimum(self.B, G - prefix_tokens)  # the last block stops at the output length
        left = np.maximum(prefix_tokens + span - m, 0)
        if self.mean is None:
            steps = np.minimum(self.spec.steps_per_block, np.maximum(span, 1))
            n = even_schedule(np.maximum(span, 0), steps, state)
            n = np.where((state >= steps - 1) & (left > 0), left, n)
            n = np.minimum(np.maximum(n, 0), left)
        else:
            n = draw_tokens_per_step(self.mean, left, rng)
        n = n if given is None else given
        new_state = np.where(m + n >= prefix_tokens + span, 0, state + 1)
        return n, P + prefix_tokens, new_state

    def summary(self) -> dict:
        return {"block_size": self.B, "tokens_per_step_mean": self.mean if self.mean is not None else float("nan")}
