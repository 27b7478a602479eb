"""Paged KV-cache accounting (vLLM's PagedAttention, Kwon et al., SOSP 2023): the cache is a pool of fixed-size
blocks of `block_tokens` positions; a sequence holds ceil(tokens / block_tokens) blocks, listed in its block table.

`KVBlockManager` is shared by the simulator and the GPU runtime (which indexes its page pool by these block ids),
so both make the same admission and preemption decisions. `kv_capacity_bytes` is the capacity rule both use:
utilization * HBM - weights - activation reserve, per GPU of a tensor-parallel group.
"""

from __future__ import annotations

from sim.hardware import HardwareProfile
from sim.model import ModelSpec
from sim.units import BYTES_PER_ELEMENT


def blocks_for(tokens: int, block_tokens: int) -> int:
    """Blocks needed to hold `tokens` positions."""
    return -(-tokens // block_tokens)


def activation_reserve_bytes(model: ModelSpec, tokens_per_pass: int, logit_rows: int, tp: int, act: str) -> float:
    """HBM kept free for one pass's activations: the widest intermediate tensors of `tokens_per_pass` rows (the
    fused QKV and gate/up outputs, the residual stream twice) and fp32 logits of `logit_rows` rows. A rough upper
    bound in the spirit of vLLM's profiling run, which measures the peak of a maximal dummy pass."""
    ab = BYTES_PER_ELEMENT[act]
    widest = (2 * model.intermediate_size + model.q_dim) / tp + 2 * model.kv_dim_per_gpu(tp) + 2 * model.hidden_size
    return tokens_per_pass * widest * ab + logit_rows * model.vocab_size / tp * 4


def kv_capacity_bytes(
    hw: HardwareProfile,
    model: ModelSpec,
    weights: str,
    utilization: float,
    reserve_bytes: float,
    tp: int = 1,
    pp: int = 1,
    extra_weight_bytes: float = 0.0,
) -> float:
    """KV bytes one GPU can hold: utilization * HBM - its share of the weights - the activation reserve.
    Negative when the weights alone do not fit."""
    weight_share = ((model.weight_bytes(weights) + extra_weight_bytes) / tp
                    + model.replicated_kv_weight_bytes(tp, weights)) / pp
    return utilization * hw.hbm_capacity_bytes - weight_share - reserve_bytes


class KVBlockManager:
    """Owns the block pool: which sequence holds which blocks. No knowledge of time, SimPy or torch."""

    def __init__(self, num_blocks: int, block_tokens: int):
        if block_tokens < 1:
            raise ValueError("block_tokens must be >= 1")
        self.num_blocks = max(0, int(num_blocks))
        self.block_tokens = block_tokens
        # returned ids (pop() hands out the most recently freed first) and ids never handed out yet (a counter, so
        # a pool of millions of blocks costs nothing to create)
        self._free: list[int] = []
        self._fresh = 0
        self.tables: dict[int, list[int]] = {}

    @property
    def free_blocks(self) -> int:
        return len(self._free) + self.num_blocks - self._fresh

    @property
    def used_blocks(self) -> int:
        return self._fresh - len(self._free)

    def held(self, seq_id: int) -> int:
        table = self.tables.get(seq_id)
        return len(table) if table else 0

    def needed(self, seq_id: int, tokens: int) -> int:
        """Additional blocks `seq_id` needs to hold `tokens` positions."""
        return max(0, blocks_for(tokens, self.block_tokens) - self.held(seq_id))

    def can_fit(self, tokens: int) -> bool:
        """Whether a sequence of `tokens` positions could ever fit in the whole pool."""
        return blocks_for(tokens, self.block_tokens) <= self.num_blocks

    def grow(self, seq_id: int, tokens: int) -> int:
        """Make `seq_id` hold enough blocks for `tokens` positions. Returns the blocks it now holds, or -1 (and
        no change) if the pool is short."""
        table = self.tables.get(seq_id)
        if table is None:
            table = self.tables[seq_id] = []
        need = -(-tokens // self.block_tokens) - len(table)
        if need <= 0:
            return len(table)
        free = self._free
        if need > len(free) + self.num_blocks - self._fresh:
            return -1
        reuse = min(need, len(free))
        if reuse:
            taken = free[-reuse:]
            del free[-reuse:]
            table.extend(reversed(taken))
        if need > reuse:
            table.extend(range(self._fresh, self._fresh + need - reuse))
            self._fresh += need - reuse
        return len(table)

    def take(self, count: int) -> list[int]:
        """`count` free block ids (the caller has checked there are enough), for callers that hand them out to
        several sequences at once (the scheduler's decode fast path)."""
        free = self._free
        reuse = min(count, len(free))
        ids = free[len(free) - reuse:][::-1]
        del free[len(free) - reuse:]
        if count > reuse:
            ids.extend(range(self._fresh, self._fresh + count - reuse))
            self._fresh += count - reuse
        return ids

    def shrink(self, seq_id: int, tokens: int) -> None:
        """Give back blocks beyond what `tokens` positions need (e.g. rejected speculative tokens)."""
        table = self.tables.get(seq_id)
        if not table:
            return
        keep = blocks_for(tokens, self.block_tokens)
        while len(table) > keep:
            self._free.append(table.pop())

    def free(self, seq_id: int) -> int:
        """Release all of `seq_id`'s blocks; returns how many."""
        table = self.tables.pop(seq_id, None)
        if not table:
            return 0
        self._free.extend(reversed(table))
        return len(table)
