"""What the scheduler hands the executor (`Plan`: one iteration's rows, tokens and passes) and what the executor's
result changes (`Update`): the boundary of plan -> execute -> update, shared by the simulator and the runtime."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.passes import PassShape


@dataclass(slots=True)
class Plan:
    """One iteration: rows of the running arrays, tokens each computes, the passes to run, and what was decided
    to make room. `q = catchup + step q`; rows with `steps` True take a strategy step in this iteration."""

    rows: np.ndarray  # indices into the running arrays
    req_ids: np.ndarray  # request id of each row
    q: np.ndarray  # query tokens of each row in the target pass
    start: np.ndarray  # KV positions each row had cached before the pass
    o: np.ndarray  # logit rows of each row
    catchup: np.ndarray  # prefill tokens of each row (written to the KV cache)
    steps: np.ndarray  # bool: the row takes a strategy step
    shape: PassShape  # the target pass
    passes: list[tuple[str, PassShape]]  # every pass of the iteration in order: ("target", ...), ("draft", ...)
    preempted: list[int] = field(default_factory=list)
    admitted: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Update:
    """What executed iterations changed: requests that produced their first output token (first iteration only),
    those that finished (with the 1-based index of the iteration), useful tokens committed by each iteration, and
    positions computed by steps but not committed (waste)."""

    first_token: list[int]
    finished: list[tuple[int, int]]
    committed: np.ndarray
    wasted_positions: int = 0
    padding_tokens: int = 0

    @property
    def committed_tokens(self) -> int:
        return int(self.committed.sum())


class _Ones:
    """The step of n AR decode rows as `_make_plan` reads it (only q)."""

    __slots__ = ("q",)

    def __init__(self, q: np.ndarray):
        self.q = q
