"""The unit of cost: one forward pass, described by its batch (DESIGN §3).

For each sequence i in the batch: q_i new query tokens, c_i KV positions attended (the new ones included), o_i
positions whose logits are needed, and whether the pass writes the new tokens' KV. Every strategy is a sequence of
such passes: AR decode is q=1, c=context+1; prefill q=c=prompt; a speculative verify q=k+1; a diffusion step
q=c=N, bidirectional, o=N; a block-diffusion step q=block against a cached prefix.

Flattened-token operators (projections, MLP, norms) only see the totals, and attention only needs two sums, so a
pass is stored as aggregates (`PassShape`); that keeps the engine's per-iteration work to a few additions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal

import numpy as np

from sim.runtime_layout import PAGED_MAX_Q

AttentionKind = Literal["causal", "bidirectional", "block_causal"]


def attended_pairs(q: int, c: int, attention: AttentionKind) -> int:
    """Query-key pairs one sequence computes. Causal: the q new tokens are the last q of c positions, so the
    q x q block among them is a triangle (about half, as flash attention skips masked tiles); bidirectional and
    block-causal (a block sees its whole self and everything before): q * c."""
    if attention == "causal":
        return q * (c - q) + q * (q + 1) // 2
    return q * c


@dataclass(frozen=True, slots=True)
class PassShape:
    """Aggregates of one forward pass over a batch of sequences."""

    tokens: int  # Q = sum q_i: rows of every flattened-token operator
    logit_rows: int  # O = sum o_i: rows of the LM head and sampling
    seqs: int  # sequences in the batch
    kv_read_tokens: int  # sum c_i: KV positions read by attention
    attn_pairs: int  # sum of attended (query, key) pairs
    kv_write_tokens: int  # new KV entries written (0 for a pass whose KV is thrown away)
    attention: AttentionKind = "causal"
    # (tokens, seqs, kv_read_tokens, attn_pairs) of the sequences with more than PAGED_MAX_Q new tokens, which an
    # eager pass of memwall's runtime attends through SDPA while the rest are paged rows; None where a shape was
    # rebuilt from its totals alone (recorded passes): the cost model then goes by the mean rows per sequence
    spans: tuple[int, int, int, int] | None = None

    def __add__(self, other: "PassShape") -> "PassShape":
        """Two groups of sequences in one pass (e.g. decodes plus a prefill chunk)."""
        kind = self.attention if self.tokens >= other.tokens else other.attention
        spans = (None if self.spans is None or other.spans is None
                 else tuple(a + b for a, b in zip(self.spans, other.spans)))
        return PassShape(
            self.tokens + other.tokens,
            self.logit_rows + other.logit_rows,
            self.seqs + other.seqs,
            self.kv_read_tokens + other.kv_read_tokens,
            self.attn_pairs + other.attn_pairs,
            self.kv_write_tokens + other.kv_write_tokens,
            kind,
            spans,
        )


NO_SPANS = (0, 0, 0, 0)


def long_spans(q: np.ndarray, c: np.ndarray, pairs: np.ndarray) -> tuple[int, int, int, int]:
    """PassShape.spans of a pass whose sequences have q new tokens, c positions and `pairs` pairs (arrays)."""
    long = q > PAGED_MAX_Q
    if not long.any():
        return NO_SPANS
    return int(q[long].sum()), int(long.sum()), int(c[long].sum()), int(pairs[long].sum())


EMPTY = PassShape(0, 0, 0, 0, 0, 0, spans=NO_SPANS)


def seq_shape(q: int, c: int, o: int = 1, attention: AttentionKind = "causal", writes_kv: bool = True) -> PassShape:
    """One sequence's share of a pass."""
    if q < 0 or c < q or o < 0 or o > q:
        raise ValueError(f"need 0 <= q <= c and 0 <= o <= q, got q={q}, c={c}, o={o}")
    pairs = attended_pairs(q, c, attention)
    spans = (q, 1, c, pairs) if q > PAGED_MAX_Q else NO_SPANS
    return PassShape(q, o, 1, c, pairs, q if writes_kv else 0, attention, spans)


def batch_shape(
    seqs: Iterable[tuple[int, int, int]], attention: AttentionKind = "causal", writes_kv: bool = True
) -> PassShape:
    """A pass over many sequences given as (q, c, o) triples."""
    total = EMPTY
    for q, c, o in seqs:
        total = total + seq_shape(q, c, o, attention, writes_kv)
    return total


def decode_shape(batch: int, context: int) -> PassShape:
    """`batch` AR decode steps, each attending to `context` positions (the new token included)."""
    return PassShape(batch, batch, batch, batch * context, batch * context, batch, "causal", NO_SPANS)


def prefill_shape(batch: int, prompt: int) -> PassShape:
    """`batch` prompts of `prompt` tokens each, logits of the last position only."""
    pairs = batch * attended_pairs(prompt, prompt, "causal")
    spans = (batch * prompt, batch, batch * prompt, pairs) if prompt > PAGED_MAX_Q else NO_SPANS
    return PassShape(batch * prompt, batch, batch, batch * prompt, pairs, batch * prompt, "causal", spans)
