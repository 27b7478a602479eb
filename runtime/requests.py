"""The token ids of the requests an executor serves: prompts (seeded random ids, or given), then what the passes
generate. Shared by the AR executor and the strategy executors; the scheduler owns everything else about a request.
"""

from __future__ import annotations

from typing import Sequence

import torch


class RequestTokens:
    """`tokens[req_id]` is the request's prompt followed by its generated tokens. Subclasses set `self.model`."""

    def __init__(self) -> None:
        self.tokens: dict[int, list[int]] = {}

    def add_request(self, req_id: int, prompt_len: int, seed: int) -> None:
        """A request whose prompt is `prompt_len` seeded random token ids (timing does not depend on the ids)."""
        gen = torch.Generator().manual_seed(seed)
        self.add_tokens(req_id, torch.randint(0, self.model.spec.vocab_size, (prompt_len,), generator=gen).tolist())

    def add_tokens(self, req_id: int, token_ids: Sequence[int]) -> None:
        """A request with the given prompt token ids."""
        if req_id in self.tokens:
            raise ValueError(f"request {req_id} already exists")
        self.tokens[req_id] = list(token_ids)

    def free(self, req_id: int) -> None:
        self.tokens.pop(req_id, None)

    def output(self, req_id: int, prompt_len: int) -> list[int]:
        """Tokens generated so far (everything after the first prompt_len)."""
        return self.tokens[req_id][prompt_len:]
