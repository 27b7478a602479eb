"""KV cache storage: a paged pool addressed by per-sequence block tables, and a contiguous cache to compare with.

Paged (vLLM, Kwon et al. 2023): K and V are each one tensor [layers, num_blocks + 1, block_tokens, kv_heads, head_dim].
Position p of a sequence whose block table is `block_ids` lives in slot `block_ids[p // block_tokens] *
block_tokens + p % block_tokens` of the flattened [slots, kv_heads, head_dim] view. The caller (the scheduler's
block manager) owns the ids 0..num_blocks-1; the extra last block is scratch that padded rows of a CUDA-graph
batch write into, so a padded row never touches a live sequence.

Contiguous: the same storage with one block per sequence that is as long as the longest sequence; attention then
reads a plain slice (`k[layer, row, :c]`) instead of gathering pages, which is what the tests compare against.

Capacity rule (the one the simulator's block manager uses, DESIGN §4): a budget of B bytes holds
floor(B / (block_tokens * kappa)) blocks, kappa = kv bytes per token of the model (`ModelSpec.kv_bytes_per_token`).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from sim.model import ModelSpec


def blocks_that_fit(spec: ModelSpec, budget_bytes: float, block_tokens: int, kv_dtype: str = "bf16") -> int:
    """Blocks of `block_tokens` tokens that `budget_bytes` holds for this model's KV cache."""
    return int(budget_bytes // (block_tokens * spec.kv_bytes_per_token(kv_dtype)))


class PagedKVCache:
    """K and V pools for every layer, addressed by block tables. `k[layer]` is [num_blocks + 1, block_tokens,
    kv_heads, head_dim]; the last block is scratch (see module doc)."""

    contiguous = False

    def __init__(self, spec: ModelSpec, num_blocks: int, block_tokens: int = 16,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        if num_blocks <= 0 or block_tokens <= 0:
            raise ValueError(f"need num_blocks > 0 and block_tokens > 0, got {num_blocks}, {block_tokens}")
        self.spec = spec
        self.num_blocks = num_blocks
        self.block_tokens = block_tokens
        shape = (spec.num_layers, num_blocks + 1, block_tokens, spec.num_kv_heads, spec.d_head)
        # Poisoned rather than zeroed: a read of a slot nothing wrote shows up as NaN in the logits.
        self.k = torch.full(shape, float("nan"), dtype=dtype, device=device)
        self.v = torch.full(shape, float("nan"), dtype=dtype, device=device)

    @property
    def scratch_block(self) -> int:
        return self.num_blocks

    @property
    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()

    def blocks_for(self, tokens: int) -> int:
        """Blocks a sequence of `tokens` positions occupies."""
        return math.ceil(tokens / self.block_tokens)

    def slots(self, block_ids: Sequence[int], positions: range) -> list[int]:
        """Flat slot index of each position (see module doc); raises if the table is too short."""
        bt = self.block_tokens
        last = positions[-1] if len(positions) else -1
        if last >= len(block_ids) * bt:
            raise ValueError(f"position {last} needs {last // bt + 1} blocks, the block table has {len(block_ids)}")
        return [block_ids[p // bt] * bt + p % bt for p in positions]

    def write(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store k, v [T, kv_heads, head_dim] at flat `slots` [T] of one layer."""
        flat = (-1, self.spec.num_kv_heads, self.spec.d_head)
        self.k[layer].view(flat).index_copy_(0, slots, k.to(self.k.dtype))
        self.v[layer].view(flat).index_copy_(0, slots, v.to(self.v.dtype))

    def read(self, layer: int, block_ids: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V of positions 0..length-1 of one sequence, [length, kv_heads, head_dim] each (gathered pages)."""
        n = self.blocks_for(length)
        shape = (-1, self.spec.num_kv_heads, self.spec.d_head)
        k = self.k[layer].index_select(0, block_ids[:n]).reshape(shape)[:length]
        v = self.v[layer].index_select(0, block_ids[:n]).reshape(shape)[:length]
        return k, v

    def read_many(self, layer: int, block_ids: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V of positions 0..length-1 of n sequences with block tables `block_ids` [n, blocks]:
        [n, length, kv_heads, head_dim] each, one gather for all of them."""
        n, nb = block_ids.shape[0], self.blocks_for(length)
        shape = (n, -1, self.spec.num_kv_heads, self.spec.d_head)
        ids = block_ids[:, :nb].reshape(-1)
        k = self.k[layer].index_select(0, ids).reshape(shape)[:, :length]
        v = self.v[layer].index_select(0, ids).reshape(shape)[:, :length]
        return k, v


class ContiguousKVCache(PagedKVCache):
    """One row of `max_len` positions per sequence: block_ids of a sequence is `[row]`, and reads are slices."""

    contiguous = True

    def __init__(self, spec: ModelSpec, max_seqs: int, max_len: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        super().__init__(spec, num_blocks=max_seqs, block_tokens=max_len, dtype=dtype, device=device)

    def read(self, layer: int, block_ids: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = int(block_ids[0])
        return self.k[layer, row, :length], self.v[layer, row, :length]

    def read_many(self, layer: int, block_ids: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = block_ids[:, 0]
        return self.k[layer].index_select(0, rows)[:, :length], self.v[layer].index_select(0, rows)[:, :length]
