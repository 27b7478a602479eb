"""What the executors of the non-AR strategies share: token ids per request, block tables, timing, a pass log.

The scheduler (sim/scheduler.py) decides each iteration as a `Plan` and the executor runs it; unlike the AR
executor (executor.py), which returns one token per row, a strategy executor decides how many tokens each row
commits (accepted drafts, unmasked positions) and hands those counts back: `execute_plan(plan, sched) ->
(device seconds, commits per row)`, then `sched.update(plan, commits=...)`.

Block tables come from the scheduler's block manager. Some strategies compute positions the scheduler does not
hold KV for: a diffusion step without cache recomputes everything (holds nothing), a block-diffusion step writes
its block's K/V before the block is finished (BD3-LM keeps it only once the block is done). Such positions go to
per-row scratch blocks past the scheduler's pool: every pass writes them before it reads them, so nothing stale is
ever read. Positions the scheduler rolled back (rejected drafts, shrunk tables) are simply overwritten later.
"""

from __future__ import annotations



from runtime.requests import RequestTokens
from runtime.timing import device_seconds


class PlanExecutor(RequestTokens):
    """Base of the strategy executors. `scratch_rows` rows of a pass may each use `scratch_positions` positions
    beyond their block table (see the module doc); `cache` has the scheduler's `num_blocks` blocks first."""

    def __init__(self, model, num_blocks: int, block_tokens: int, scratch_rows: int = 0, scratch_positions: int = 0):
        self.model = model
        self.pool_blocks = num_blocks
        self.block_tokens = block_tokens
        self.per_row = -(-scratch_positions // block_tokens) if scratch_rows else 0
        self.scratch_rows = scratch_rows
        self.cache = model.paged_cache(num_blocks + scratch_rows * self.per_row, block_tokens)
        self.on_cuda = self.cache.k.is_cuda
        RequestTokens.__init__(self)
        self.pass_log: list[tuple[str, int, float]] = []  # (role, query tokens, device seconds) of every pass

    # -- tables and timing -----------------------------------------------------------------------------------------
    def table(self, kv, req_id: int, positions: int, row: int = 0) -> list[int]:
        """Block ids covering positions 0..positions-1 of a request: its own blocks, then row `row`'s scratch."""
        own = list(kv.tables.get(int(req_id), ()))
        need = -(-positions // self.block_tokens) - len(own)
        if need <= 0:
            return own
        if row >= self.scratch_rows or need > self.per_row:
            raise ValueError(f"request {req_id} needs {need} scratch blocks in pass row {row}; the executor has "
                             f"{self.scratch_rows} rows of {self.per_row}")
        first = self.pool_blocks + row * self.per_row
        return own + list(range(first, first + need))

    def timed(self, role: str, tokens: int, fn):
        """Run fn() and log its device time (CUDA events on a GPU, perf_counter on the CPU)."""
        seconds, out = device_seconds(self.on_cuda, fn)
        self.pass_log.append((role, tokens, seconds))
        return seconds, out

    def execute_plan(self, plan, sched):
        """Run one iteration of `plan` (sim.scheduler.Plan); returns (device seconds, commits per plan row)."""
        raise NotImplementedError

    def summary(self) -> dict:
        """Strategy numbers for Result.extra (acceptance, per-role pass times)."""
        out: dict = {}
        for role in sorted({r for r, _, _ in self.pass_log}):
            times = [t for r, _, t in self.pass_log if r == role]
            out[f"{role}_passes"] = len(times)
            out[f"{role}_pass_s_median"] = float(sorted(times)[len(times) // 2])
        return out
