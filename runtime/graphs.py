"""Decode passes under CUDA graphs, one graph per batch-size bucket, so that Python does not set the pace.

(The same graphs replay any pass of *paged rows*, forward.build_meta: a verify of k + 1 tokens or a block step is
k + 1 or B rows of its sequence, each with its own context length; `load_seqs` stages such a pass.)

A decode pass at batch 1 is ~160 kernel launches; launched from Python they take longer than the GPU needs to run
them (DESIGN §6: 54 tok/s eager vs 118 tok/s under one graph for the same minimal model). Here `forward.forward`
itself is captured over static PassMeta buffers for each bucket (1, 2, 4, ..., 256 sequences); a call pads its
batch up to the next bucket, copies one int64 array of inputs into the buffers, and replays. Padded rows decode a
dummy token at position 0 into the cache's scratch block, so they never touch a live sequence.

All graphs share one memory pool: intermediates of one bucket's graph may reuse another's, which is safe because
replays run one at a time on one stream, and each bucket's outputs (logits, next tokens) are its own tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from runtime.forward import PassMeta, SeqInput, forward, row_groups, rows_per_group, token_limits
from sim.runtime_layout import GRAPH_MAX_ROWS, ROW_BUCKETS  # noqa: F401 - the buckets live with the layout
from sim.errors import UserError

BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    staging: torch.Tensor  # pinned host int64 [4B + B*W]
    inputs: torch.Tensor  # device int64, same layout: tokens, positions, slots, context_lens, block tables
    logits: torch.Tensor  # [B, V] float32 (output of the last replay)
    next_tokens: torch.Tensor  # [B] greedy argmax of `logits`
    copied: torch.cuda.Event  # the last copy out of `staging` has run: it may be overwritten


def staging_array(b: int, width: int, block_tokens: int, scratch: int, tokens, positions, tables, context_lens,
                  seq_rows, qb: int) -> np.ndarray:
    """The int64 inputs of a graph of b paged rows: tokens, positions, cache slots, context lengths [b each], block
    tables [b, width], row groups [b, 2]; rows past len(tokens) are padding (a dummy token at position 0 of the
    scratch block). Vectorized over rows: a python loop per row cost ~10 ms for 512 rows (profile_block_host.py)."""
    n = len(tokens)
    seq_rows = np.ones(len(tables), dtype=np.int64) if seq_rows is None else np.asarray(seq_rows, dtype=np.int64)
    if int(seq_rows.sum()) != n:
        raise ValueError(f"{n} rows but the sequences' rows add up to {int(seq_rows.sum())}")
    a = np.zeros(4 * b + b * width + 2 * b, dtype=np.int64)
    table = a[4 * b:4 * b + b * width].reshape(b, width)
    table[:] = scratch
    per_seq = np.full((len(tables), width), scratch, dtype=np.int64)
    for i, t in enumerate(tables):  # once per sequence
        k = min(len(t), width)
        per_seq[i, :k] = t[:k]
    table[:n] = np.repeat(per_seq, seq_rows, axis=0)
    pos = np.asarray(positions, dtype=np.int64)
    lens = pos + 1 if context_lens is None else np.asarray(context_lens, dtype=np.int64)
    have = np.repeat(np.array([len(t) for t in tables], dtype=np.int64), seq_rows) * block_tokens
    last = np.maximum(pos, lens - 1)
    bad = (last >= width * block_tokens) | (last >= have) | (lens < 1)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"row {i} (position {pos[i]}, {lens[i]} keys) does not fit its block table "
                         f"({have[i] // block_tokens} blocks, width {width})")
    a[0:n] = tokens
    a[b:b + n] = pos
    a[2 * b:2 * b + n] = table[np.arange(n), pos // block_tokens] * block_tokens + pos % block_tokens
    a[2 * b + n:3 * b] = scratch * block_tokens  # padded rows: position 0 of the scratch block
    a[3 * b:3 * b + n] = lens
    a[3 * b + n:4 * b] = 1
    groups = row_groups(list(seq_rows) + [1] * (b - n), qb, size=b)
    a[4 * b + b * width:] = np.asarray(groups, dtype=np.int64).reshape(-1)
    return a


def index_to_device(values: Sequence[int], device) -> torch.Tensor:
    """A small int64 index on the device without waiting for the device: `torch.tensor(values, device=...)` copies
    from pageable memory and synchronizes the stream, which stalled the host behind every queued pass; a pinned
    copy is asynchronous (the pinned-memory allocator does not hand the block out again before the copy ran)."""
    t = torch.tensor(values, dtype=torch.long)
    return t.pin_memory().to(device, non_blocking=True) if torch.device(device).type == "cuda" else t.to(device)


class DecodeGraphs:
    """Captured decode passes of `model` over `cache` for sequences of at most `max_context` positions."""

    def __init__(self, model, cache, max_context: int, buckets: Sequence[int] = BUCKETS, capture: bool = True):
        if not cache.k.is_cuda:
            raise ValueError("CUDA graphs need a CUDA cache")
        self.model, self.cache = model, cache
        self.width = cache.blocks_for(max_context)  # block-table columns
        self.buckets = tuple(sorted(buckets))
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: dict[int, _Graph] = {}
        if capture:
            for b in self.buckets:
                self.capture(b)

    def bucket_for(self, n: int) -> int | None:
        return next((b for b in self.buckets if b >= n), None)

    def _size(self, b: int) -> int:
        return 4 * b + b * self.width + 2 * b  # tokens, positions, slots, lens | block tables | row groups

    def _meta(self, inputs: torch.Tensor, b: int) -> PassMeta:
        tokens, positions, slots, lens = inputs[:4 * b].view(4, b)
        w = 4 * b + b * self.width
        return PassMeta(tokens=tokens, positions=positions, slots=slots, logit_rows=None, decode_rows=None,
                        block_tables=inputs[4 * b:w].view(b, self.width), context_lens=lens, num_decode=b,
                        groups=inputs[w:].view(b, 2))

    def _fill(self, g: _Graph, b: int, tokens, positions, tables, context_lens=None, seq_rows=None) -> None:
        """Write a batch (padded to b rows) into the pinned staging array and copy it to the device buffers.
        `tables`: one block table per sequence, seq_rows[i] consecutive rows each (default one row per table: a
        decode)."""
        spec = self.cache.spec
        a = staging_array(b, self.width, self.cache.block_tokens, self.cache.scratch_block, tokens, positions,
                          tables, context_lens, seq_rows, rows_per_group(spec.num_heads, spec.num_kv_heads))
        # The previous step's asynchronous copy may still be queued behind its replay: overwriting the pinned
        # staging array before it ran would hand that step this step's inputs (seen as a decode that read a
        # never-written KV slot, NaN, when steps were issued back to back).
        g.copied.synchronize()
        g.staging.copy_(torch.from_numpy(a))
        g.inputs.copy_(g.staging, non_blocking=True)
        g.copied.record()

    def capture(self, b: int) -> None:
        """Warm up (compiles the Triton kernels) and capture the decode pass of bucket b."""
        size = self._size(b)
        staging = torch.zeros(size, dtype=torch.long, pin_memory=True)
        inputs = torch.zeros(size, dtype=torch.long, device=self.model.device)
        g = _Graph(torch.cuda.CUDAGraph(), staging, inputs, None, None, torch.cuda.Event())
        self._fill(g, b, [], [], [])
        meta = self._meta(inputs, b)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                forward(self.model, self.cache, meta)
        torch.cuda.current_stream().wait_stream(side)
        with torch.cuda.graph(g.graph, pool=self.pool):
            g.logits = forward(self.model, self.cache, meta)
            g.next_tokens = g.logits.argmax(dim=-1)
        self.graphs[b] = g

    def load(self, tokens: Sequence[int], positions: Sequence[int], tables: Sequence[Sequence[int]],
             context_lens: Sequence[int] | None = None, seq_rows: Sequence[int] | None = None) -> int:
        """Stage one pass of paged rows (token i at position positions[i], attending to its sequence's first
        context_lens[i] positions, default positions[i] + 1: a decode step) into the buffers of its bucket; tables
        holds one block table per row, or per sequence when seq_rows gives each sequence's consecutive rows.
        Returns the bucket. Host work, kept apart from `replay` so timing sees none."""
        b = self.bucket_for(len(tokens))
        if b is None:
            raise ValueError(f"batch {len(tokens)} exceeds the largest captured bucket {self.buckets[-1]}")
        if b not in self.graphs:
            self.capture(b)
        self._fill(self.graphs[b], b, tokens, positions, tables, context_lens, seq_rows)
        return b

    def load_seqs(self, seqs: Sequence[SeqInput]) -> tuple[int, int, torch.Tensor | None] | None:
        """Stage a pass of whole sequences (forward.SeqInput) as paged rows, one per new token with the keys
        forward.token_limits gives it; returns (bucket, rows, device index of the rows whose logits are wanted,
        None for all), or None when the pass has more rows than the largest bucket or reaches past the context
        the graphs were sized for: the caller then runs it eagerly. (Any span fits, a whole prompt included: inside a graph its attention is paged rows too.)"""
        causal = self.cache.spec.attention == "causal"
        if sum(len(s.token_ids) for s in seqs) > self.buckets[-1]:
            return None
        tokens, positions, tables, lens, wanted = [], [], [], [], []
        for s in seqs:
            q = len(s.token_ids)
            c = max(s.start + q, s.context or 0)
            if c > self.width * self.cache.block_tokens or c > len(s.block_ids) * self.cache.block_tokens:
                return None  # past the context the graphs were sized for (e.g. a warm-up prompt): eager
            if c > self.model.max_positions:
                raise UserError(f"a sequence reaches position {c - 1}, past the model's {self.model.max_positions} "
                                f"positions; use shorter prompts/outputs or raise max_positions")
            wanted += range(len(tokens) + q - s.num_logits, len(tokens) + q)
            tokens += s.token_ids
            positions += range(s.start, s.start + q)
            tables.append(s.block_ids)
            lens += token_limits(s, q, c, causal)
        if self.bucket_for(len(tokens)) is None:
            return None
        b = self.load(tokens, positions, tables, lens, [len(s.token_ids) for s in seqs])
        index = None if len(wanted) == len(tokens) else index_to_device(wanted, self.graphs[b].inputs.device)
        return b, len(tokens), index

    def replay_logits(self, b: int, n: int, index: torch.Tensor | None) -> torch.Tensor:
        """Replay a pass staged by load_seqs; the wanted logits [O, V] (a view when all rows are wanted)."""
        logits, _ = self.replay(b, n)
        return logits if index is None else logits.index_select(0, index)

    def replay_tokens(self, b: int, n: int, index: torch.Tensor | None) -> torch.Tensor:
        """Replay a pass staged by load_seqs; the greedy tokens of the wanted rows [O] (the graph's own argmax: no
        logits leave it)."""
        _, tokens = self.replay(b, n)
        return tokens if index is None else tokens.index_select(0, index)

    def token_inputs(self, b: int, n: int) -> torch.Tensor:
        """The device view of a staged pass's n token ids (the first field of bucket b's inputs): a caller may
        overwrite entries with tokens that are still on the device, after `load` and before the replay (stream
        order keeps the staging copy first)."""
        return self.graphs[b].inputs[:n]

    def replay(self, b: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Run bucket b's graph; returns (logits [n, V], next tokens [n]) as views into the graph's outputs
        (valid until its next replay)."""
        g = self.graphs[b]
        g.graph.replay()
        return g.logits[:n], g.next_tokens[:n]

    def run(self, tokens: Sequence[int], positions: Sequence[int], tables: Sequence[Sequence[int]]):
        """load + replay."""
        return self.replay(self.load(tokens, positions, tables), len(tokens))
