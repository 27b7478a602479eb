"""Helpers shared by the runtime tests: tiny model specs, seeded token lists, a plan item like the scheduler's."""

from dataclasses import dataclass, field

import torch

from sim.model import ModelSpec

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}


def tiny_spec(**over) -> ModelSpec:
    """2 layers, d=64, 4 query heads sharing 2 KV heads (GQA), head_dim 16, vocabulary 256, llama3 RoPE."""
    kw = dict(name="tiny", hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128,
              vocab_size=256, max_position_embeddings=256, rope_theta=10000.0, rope_scaling=LLAMA3_ROPE)
    kw.update(over)
    return ModelSpec(**kw)


def random_tokens(n: int, seed: int, vocab: int = 256) -> list[int]:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@dataclass
class Item:
    """The fields of the scheduler's per-sequence plan item that the executor reads."""

    req_id: int
    q: int
    start: int
    o: int
    block_ids: list[int] = field(default_factory=list)
