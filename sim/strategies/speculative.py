"""Speculative decoding (Leviathan et al., ICML 2023; Chen et al. 2023): a cheap draft proposes k tokens one pass
at a time; the target checks all of them in one pass of k+1 query tokens and keeps the longest accepted prefix plus
one token of its own. With acceptance rate alpha per draft token, the tokens committed per iteration follow
P(n) = alpha^(n-1) (1 - alpha) for n <= k and alpha^k for n = k+1, so E[n] = (1 - alpha^(k+1)) / (1 - alpha).

Draft: another catalog model (its own weights and KV, which the KV pool accounts per token), or `self`: the
target's first `draft_layers` layers and its LM head (layer-skip self-speculation, e.g. LayerSkip, Elhoushi et al.
2024), which shares the target's KV. Acceptance is an input: a constant alpha, one alpha per draft position, or a
file of accepted draft counts sampled with replacement.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sim.errors import UserError
from sim.passes import NO_SPANS, PassShape
from sim.strategies.base import Step, Strategy, causal_pairs


def expected_committed(alpha: float, k: int) -> float:
    """E[tokens per iteration] = (1 - alpha^(k+1)) / (1 - alpha); k+1 when alpha = 1."""
    if alpha >= 1.0:
        return k + 1.0
    return (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


def expected_committed_positional(alphas, k: int) -> float:
    """E[tokens per iteration] when draft position j is accepted with probability alphas[j] given all before it
    were: 1 + sum over j <= k of alphas[0] * ... * alphas[j-1]."""
    return 1.0 + float(np.sum(np.cumprod(np.asarray(alphas[:k], dtype=float))))


def read_acceptance_trace(path: str) -> np.ndarray:
    """Accepted draft counts, one whole number per line (blank lines and '#' comments skipped)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"strategy.acceptance_trace: file {p} does not exist")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise UserError(f"strategy.acceptance_trace: cannot read {p}: {why}; expected one whole number per line") from None
    values = []
    for line_no, text in enumerate(lines, start=1):
        text = text.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            v = int(text)
        except ValueError:
            raise UserError(f"{p}:{line_no}: expected a whole number of accepted draft tokens, got {text!r}") from None
        if v < 0:
            raise UserError(f"{p}:{line_no}: accepted draft tokens must be >= 0, got {v}")
        values.append(v)
    if not values:
        raise UserError(f"{p}: no accepted lengths in the file")
    return np.array(values, dtype=np.int64)


class Speculative(Strategy):
    kind = "speculative"
    stochastic = True
    extra_models = ("draft",)

    def __init__(self, spec, k: int, self_draft: bool):
        self.k = k
        self.self_draft = self_draft
        self.alphas = np.asarray(spec.alpha if isinstance(spec.alpha, list) else [spec.alpha] * k, dtype=float)[:k]
        self.trace = read_acceptance_trace(spec.acceptance_trace) if spec.acceptance_trace else None

    def kv_ready(self, P, m):
        return P + np.maximum(m, 0) - 1

    def _drafts(self, m, G):
        # no drafting before the first token (it comes from the prefill) nor past the request's last token
        return np.where(m >= 1, np.clip(G - m - 1, 0, self.k), 0)

    def step(self, P, m, G, state) -> Step:
        k = self._drafts(m, G)
        q = k + 1  # the last committed token and k drafts, verified in one pass
        c = P + m + k
        return Step(q, c, q, causal_pairs(q, c), c)

    def accepted(self, k: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Accepted draft tokens per row (0..k_i)."""
        if self.trace is not None:
            return np.minimum(rng.choice(self.trace, size=len(k)), k)
        if np.all(self.alphas == self.alphas[0]):
            alpha = self.alphas[0] if len(self.alphas) else 0.0
            if alpha <= 0:
                return np.zeros_like(k)
            if alpha >= 1:
                return k.copy()
            # geometric: P(a >= j) = alpha^j, truncated at k
            u = 1.0 - rng.random(len(k))
            return np.minimum(np.floor(np.log(u) / np.log(alpha)).astype(np.int64), k)
        u = rng.random((len(k), self.k))
        run = np.cumprod(u < self.alphas[None, :], axis=1).sum(axis=1)  # accepted until the first rejection
        return np.minimum(run, k)

    def commit(self, P, m, G, state, rng, n=None):
        k = self._drafts(m, G)
        if n is None:
            n = self.accepted(k, rng) + 1  # accepted drafts plus the target's own next token
        # the verify pass wrote KV for the last token and k drafts; rejected drafts are freed
        return n, P + m + n - 1, state

    def extra_passes(self, P, m, G, state, catchup_shape: PassShape) -> list[tuple[str, PassShape]]:
        passes = []
        if not self.self_draft and catchup_shape.tokens:
            passes.append(("draft", catchup_shape))  # a separate draft model prefills the prompt too
        k = self._drafts(m, G)
        for j in range(int(k.max()) if len(k) else 0):
            rows = k > j
            c = P[rows] + m[rows] + j  # the draft's query at position P+m-1+j attends to everything before it
            n = int(rows.sum())
            c_sum = int(c.sum())
            passes.append(("draft", PassShape(n, n, n, c_sum, c_sum, n, "causal", NO_SPANS)))
        return passes

    def summary(self) -> dict:
        out = {"k": self.k, "draft": "self" if self.self_draft else "model"}
        if self.trace is None:
            out["expected_tokens_per_iteration"] = expected_committed_positional(self.alphas, self.k)
        return out


def auto_k(alphas: list[float], batch: int, context: int, target_cost, draft_cost, k_max: int = 12,
           per_position: bool = False) -> int:
    """The k that maximizes expected committed tokens per second of iteration time, for `batch` sequences at
    `context` positions: E[n](k) / (k * t_draft + t_verify(k+1)). One alpha is every position's; a list gives one per
    draft position, and k then goes no further than the list."""
    from sim.passes import decode_shape

    if per_position:
        k_max = min(k_max, len(alphas))
    positional = list(alphas) if per_position else [alphas[0]] * k_max
    t_draft = draft_cost.pass_time(decode_shape(batch, context)).time_s
    best, best_rate = 1, -1.0
    for k in range(1, k_max + 1):
        q = k + 1
        c = context + k
        verify = PassShape(batch * q, batch * q, batch, batch * c, batch * (q * (c - q) + q * (q + 1) // 2), batch * q,
                           "causal", NO_SPANS)  # k + 1 <= 17 rows a sequence
        rate = expected_committed_positional(positional, k) / (k * t_draft + target_cost.pass_time(verify).time_s)
        if rate > best_rate:
            best, best_rate = k, rate
    return best
