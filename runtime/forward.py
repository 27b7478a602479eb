"""One forward pass over a flattened batch: the runtime side of DESIGN §3's (q, c, o) pass description.

Each sequence i contributes q_i new tokens at positions start_i .. start_i + q_i - 1 (so it attends to
c_i = start_i + q_i positions: its cached prefix plus the new tokens), a block table naming the cache blocks that
hold positions 0 .. c_i - 1, and o_i, the number of its last positions whose logits are wanted. AR decode is q=1;
a prompt is q = prompt with start = 0; a chunk of a chunked prefill is q = chunk with start = tokens done so far.
All sequences' tokens are concatenated into T = sum q_i rows for the projections and the MLP; attention is per
sequence. The pass writes the new tokens' K/V into their slots and returns the requested logits, in order.

`PassMeta` is that description as device tensors; building it is host work kept out of `forward`, so a CUDA graph
can capture `forward` over static PassMeta buffers (graphs.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from runtime import ops
from sim.runtime_layout import PAGED_MAX_Q, rows_per_kv_read
from sim.errors import UserError


@dataclass
class SeqInput:
    """One sequence's share of a pass."""

    token_ids: Sequence[int]  # the q new tokens
    start: int  # position of the first new token = tokens already in the cache
    block_ids: Sequence[int]  # cache blocks of positions 0 .. start + q - 1, in order
    num_logits: int = 1  # o: logits of the last o new positions
    # Non-AR strategies (runtime/speculative.py, diffusion.py, block_diffusion.py) need two more things:
    context: int | None = None  # positions attended, default start + q; more reads cached positions past the
    #                             new tokens (Fast-dLLM's dual cache: the current block attends to a cached suffix)
    attend: str | Sequence[int] | None = None  # None: the model's own mask; "full": every new token sees all
    #                             `context` positions (bidirectional); a list: new token i sees keys 0 .. attend[i]-1
    #                             (block-causal masks, BD3-LM)


@dataclass
class PrefillSpan:
    """`count` sequences' spans of the same shape, one after another in the batch: rows row .. row + count * q - 1
    (a static batch's prompts are one such span of 32 sequences; their attention is one batched SDPA call)."""

    row: int  # first row of the (first) span in the flattened batch
    q: int
    start: int
    block_ids: torch.Tensor  # [count, blocks] long, on the device
    context: int = 0  # positions attended (0: start + q)
    full: bool = False  # every new token sees all `context` positions
    limits: torch.Tensor | None = None  # [q] long: new token i sees keys 0 .. limits[i] - 1
    count: int = 1


@dataclass
class PassMeta:
    """A pass as device tensors (T = flattened new tokens, Bd = sequences with q = 1)."""

    tokens: torch.Tensor  # [T] token ids
    positions: torch.Tensor  # [T] position of each token
    slots: torch.Tensor  # [T] long: flat cache slot each token's K/V goes to
    logit_rows: torch.Tensor | None  # [O] rows whose logits are returned; None = every row
    decode_rows: torch.Tensor | None  # [Bd] rows that are decode rows; None = every row is one
    block_tables: torch.Tensor  # [Bd, max_blocks] int64, padded with the scratch block
    context_lens: torch.Tensor  # [Bd] int64: c of each decode row
    num_decode: int  # paged rows: one query token each with its own context length (a decode row is one)
    prefills: list[PrefillSpan] = field(default_factory=list)
    decode_tables: list[list[int]] = field(default_factory=list)  # host copies, for the torch reference path
    decode_lens: list[int] = field(default_factory=list)
    # [G, 2] (first paged row, rows): rows of one sequence that one attention program serves with one read of its
    # K/V (row_groups below); None: one program per row
    groups: torch.Tensor | None = None


# In eager passes, spans of at most PAGED_MAX_Q new tokens attend as paged rows, one per token (see build_meta);
# longer ones (prompts) through SDPA, which reads each K/V tile once for many queries. (The cost model owns the
# constant: it prices paged rows apart, sim.cost.CostContext.kv_read_positions.)
# Consecutive spans of one shape share an SDPA call (a batch) up to this many keys in all: one call per sequence
# per layer issued ~8 launches each, and a static prefill of 32 x 256 tokens ran at the host's pace (218-341 ms
# against 178 predicted, reports/h100/validation-notes.md); the cap bounds the gathered K/V (16 Ki keys of
# Llama-3-8B with its KV heads repeated for GQA: 2 x 128 MiB; 64 Ki ran a 64 x 1,024 prefill out of memory next
# to a 90% KV pool).
SPAN_BATCH_MAX_KEYS = 16384


def rows_per_group(n_heads: int, n_kv_heads: int) -> int:
    """Rows of one sequence that share a program (and one read of its K/V): as many as fill a 16-row dot tile with
    their query heads, 4 for Llama-3's GQA (4 heads per KV head), 16 for multi-head attention (the cost model
    prices the reads with the same rule, sim.runtime_layout.rows_per_kv_read)."""
    return rows_per_kv_read(n_heads, n_kv_heads)


def row_groups(seq_rows, qb: int, size: int | None = None) -> list[tuple[int, int]]:
    """(first row, rows) of each program for sequences of seq_rows[i] consecutive rows: chunks of at most qb rows
    that never cross a sequence; padded with (0, 0) (empty programs) up to `size` entries."""
    out, row = [], 0
    for n in seq_rows:
        for j in range(0, n, qb):
            out.append((row + j, min(qb, n - j)))
        row += n
    if size is not None:
        out += [(0, 0)] * (size - len(out))
    return out


def token_limits(s: SeqInput, q: int, c: int, causal: bool) -> list[int]:
    """Keys visible to each of a sequence's q new tokens (token i sees positions 0 .. limit_i - 1)."""
    if s.attend is None:
        return [s.start + i + 1 for i in range(q)] if causal else [c] * q
    return [c] * q if isinstance(s.attend, str) else [int(x) for x in s.attend]


def build_meta(seqs: Sequence[SeqInput], cache, device, max_positions: int,
               table_width: int | None = None, paged_max_q: int = PAGED_MAX_Q) -> PassMeta:
    """PassMeta of a batch of sequences (host lists turned into a handful of device tensors).

    A sequence with at most `paged_max_q` new tokens becomes that many *paged rows*: token i is a query of its own
    that reads the keys 0 .. limit_i - 1 through the sequence's block table, so the whole pass's attention is one
    batched paged kernel (a decode is the case q = 1) and the pass can replay a CUDA graph (graphs.py). Speculative
    verifies, block-diffusion steps and small prefill chunks are such passes; one SDPA call per sequence per layer
    made them tens of milliseconds slower than a graph-replayed decode (reports/h100/runtime-strategies.md).
    Longer spans (prompts, full diffusion steps) attend through SDPA, one call per layer for consecutive
    sequences of the same shape (PrefillSpan.count)."""
    causal = cache.spec.attention == "causal"
    bt = cache.block_tokens
    tokens, positions, slots, logit_rows = [], [], [], []  # numpy parts, one per sequence
    dec_rows, dec_tables, dec_lens = [], [], []
    paged_tables: list[np.ndarray] = []  # block table of each sequence that became paged rows, in order
    prefills: list[PrefillSpan] = []
    paged_spans: list[int] = []  # rows of each sequence that became paged rows, in order
    spans: list[list] = []  # SDPA spans: [shape key, first row, count, block tables, start, q, c, full, limits]
    row = 0
    for s in seqs:
        q = len(s.token_ids)
        c = max(s.start + q, s.context or 0)
        if q == 0 or s.start < 0 or not 0 <= s.num_logits <= q:
            raise ValueError(f"bad sequence input: q={q}, start={s.start}, num_logits={s.num_logits}")
        if s.attend is not None and not isinstance(s.attend, str) and len(s.attend) != q:
            raise ValueError(f"attend lists {len(s.attend)} limits for {q} new tokens")
        if c > max_positions:
            raise UserError(f"a sequence reaches position {c - 1}, past the model's {max_positions} positions; "
                            f"use shorter prompts/outputs or raise max_positions")
        blocks = np.asarray(s.block_ids[:cache.blocks_for(c)], dtype=np.int64)
        if s.start + q > len(blocks) * bt:
            raise ValueError(f"position {s.start + q - 1} needs {(s.start + q - 1) // bt + 1} blocks, the block "
                             f"table has {len(blocks)}")
        pos = np.arange(s.start, s.start + q)
        tokens.append(np.asarray(s.token_ids, dtype=np.int64))
        positions.append(pos)
        slots.append(blocks[pos // bt] * bt + pos % bt)
        logit_rows.append(np.arange(row + q - s.num_logits, row + q))
        limits = token_limits(s, q, c, causal)
        if q <= paged_max_q:  # one paged row per token, each with its own number of visible keys
            dec_rows.append(np.arange(row, row + q))
            dec_tables += [blocks.tolist()] * q
            dec_lens += limits
            paged_tables.append(blocks)
            paged_spans.append(q)
        else:
            full, masked = s.attend == "full", s.attend is not None and not isinstance(s.attend, str)
            # one shape = one mask: explicit limits (block-causal prompts of a static batch) must match too
            key = (q, s.start, c, full, len(blocks), tuple(limits) if masked else None)
            last = spans[-1] if spans else None
            if (last is not None and last[0] == key and last[1] + last[2] * q == row
                    and (last[2] + 1) * c <= SPAN_BATCH_MAX_KEYS):
                last[2] += 1  # the next sequence of the same shape joins the batch
                last[3].append(blocks)
            else:
                spans.append([key, row, 1, [blocks], s.start, q, c, full,
                              torch.tensor(limits, dtype=torch.long, device=device) if masked else None])
        row += q
    for _, first, count, tables, start, q, c, full, limits in spans:
        prefills.append(PrefillSpan(first, q, start, torch.from_numpy(np.stack(tables)).to(device), c, full, limits,
                                    count))
    # Paged rows' block tables as one array (a row per query token, padded with the scratch block), built per
    # sequence and repeated: a python list per row cost ~5 ms for 1,024 rows on the H100's host
    # (benchmarks/host_phases.py).
    width = table_width or max((len(t) for t in paged_tables), default=1)
    table = np.full((len(paged_tables), width), cache.scratch_block, dtype=np.int64)
    for i, t in enumerate(paged_tables):
        table[i, :len(t)] = t
    table = np.repeat(table, paged_spans, axis=0) if paged_tables else table[:0]

    def dev(parts, dtype=torch.long):
        x = parts if isinstance(parts, np.ndarray) else np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return torch.from_numpy(np.ascontiguousarray(x)).to(device=device, dtype=dtype)

    n_dec = len(dec_lens)
    logit_all = np.concatenate(logit_rows) if logit_rows else np.zeros(0, np.int64)
    groups = None
    if paged_spans:  # (also for decodes alone: the eager pass then runs the kernel variant its graphs compiled)
        qb = rows_per_group(cache.spec.num_heads, cache.spec.num_kv_heads)
        groups = dev(np.asarray(row_groups(paged_spans, qb), dtype=np.int64).reshape(-1, 2))
    return PassMeta(
        tokens=dev(tokens), positions=dev(positions), slots=dev(slots),
        logit_rows=None if len(logit_all) == row and (logit_all == np.arange(row)).all() else dev(logit_all),
        decode_rows=None if n_dec == row else dev(dec_rows),
        # int64, as in the graphs' input buffers (graphs.py): the paged kernel is compiled per pointer type, and
        # an eager pass must reuse the variants the graph captures compiled before the clock started
        block_tables=dev(table if n_dec else np.full((1, width), cache.scratch_block)),
        context_lens=dev(np.asarray(dec_lens or [1], dtype=np.int64)), num_decode=n_dec,
        prefills=prefills, decode_tables=dec_tables, decode_lens=dec_lens, groups=groups)


@torch.inference_mode()
def forward(model, cache, meta: PassMeta) -> torch.Tensor:
    """Run one pass: writes the new tokens' K/V into `cache`, returns float32 logits [O, V] (rows in seq order)."""
    spec, w = model.spec, model.weights
    eps, causal = spec.rms_norm_eps, spec.attention == "causal"
    h = w.embed.index_select(0, meta.tokens)  # [T, d]: the residual stream, updated in place below
    for layer, lw in enumerate(w.layers):
        q = ops.qkv_rope_write(h, lw, layer, model, cache, meta)  # [T, h, d_h]
        ops.add_linear(h, ops.attention(q, cache, layer, meta, causal), lw.o)
        if spec.is_moe:
            ops.moe(h, lw, spec.experts_per_token, eps)
        else:
            ops.add_linear(h, ops.swiglu(h, lw.gate_up, eps), lw.down)
    x = h if meta.logit_rows is None else h.index_select(0, meta.logit_rows)
    return ops.lm_head(x, w.lm_head, eps)


def run_pass(model, cache, seqs: Sequence[SeqInput], paged_max_q: int = PAGED_MAX_Q) -> torch.Tensor:
    """build_meta + forward: logits [sum o_i, V] of one eager pass."""
    return forward(model, cache, build_meta(seqs, cache, model.device, model.max_positions, paged_max_q=paged_max_q))


def greedy_generate(model, prompt: Sequence[int], new_tokens: int, block_tokens: int = 16,
                    prefill_chunk: int | None = None) -> list[int]:
    """Greedy continuation of one prompt with its own paged cache (prefill, optionally in chunks, then decode)."""
    from runtime.kv_cache import PagedKVCache

    total = len(prompt) + new_tokens
    cache = PagedKVCache(model.spec, -(-total // block_tokens), block_tokens, model.dtype, model.device)
    blocks = list(range(cache.num_blocks))
    tokens = list(prompt)
    done = 0
    chunk = prefill_chunk or len(prompt)
    while done < len(prompt):  # prefill; the last chunk's logits give the first new token
        q = min(chunk, len(prompt) - done)
        logits = run_pass(model, cache, [SeqInput(tokens[done:done + q], done, blocks)])
        done += q
    for i in range(new_tokens):
        tokens.append(int(logits[-1].argmax()))
        if i + 1 < new_tokens:
            logits = run_pass(model, cache, [SeqInput(tokens[-1:], len(tokens) - 1, blocks)])
    return tokens[len(prompt):]
