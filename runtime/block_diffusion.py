"""Block diffusion on the runtime (BD3-LM, Arriola et al. ICLR 2025; Fast-dLLM v2, Wu et al. 2025; SDAR): the
response is generated in blocks of B tokens, left to right; inside a block, steps of q = B positions attend
bidirectionally to each other and causally to the exact K/V of the prompt and the finished blocks.

Mask (block-causal): a prompt position p sees keys 0..p (the prompt is prefilled causally, as an AR model would);
a response position in block b sees every key up to the end of block b. Passes, as sim/strategies/block_diffusion.py
decides them:
  - a step: the current block's B tokens (committed or [MASK]) at positions prefix .. prefix + B - 1; its K/V are
    written to scratch slots only for this pass (the block is not finished, so nothing may keep them);
  - the KV write of a finished block (and the prompt's prefill): its tokens in their final form, written to the
    request's own blocks, exact from then on; with `fuse_kv_write` it is the front part of the next block's first
    step (one pass of q = 2B), otherwise a pass of its own.
Predictions are shifted by one position, as in Fast-dLLM v2 and SDAR, which adapt AR checkpoints to blocks: block
position j is predicted by the output at the position before it, so position 0 by the last token of the previous
block (its logits come from the KV-write pass and stay valid for the whole block: block-causal attention never
lets it see the current block). With B = 1 this is AR decoding exactly (one wasted masked position per pass).
Commit by an even schedule (steps_per_block) or a confidence threshold (at least the most confident position);
the last block stops at the request's output length.
"""

from __future__ import annotations

import numpy as np
import torch

from runtime.diffusion import mask_id, pick, scored, to_host
from runtime.forward import SeqInput
from runtime.plan_exec import PlanExecutor


def block_causal_limits(positions: range, prompt: int, block: int) -> list[int]:
    """Keys visible to each position (0 .. limit-1): causal in the prompt, up to the block's end in the response."""
    return [p + 1 if p < prompt else prompt + ((p - prompt) // block + 1) * block for p in positions]


class BlockDiffusionExecutor(PlanExecutor):
    """Runs block-diffusion plans (strategy = sim.strategies.block_diffusion.BlockDiffusion). `record` keeps, per
    step, (sequence tokens, block start, step logits) for the tests' recompute comparison."""

    def __init__(self, model, strategy, num_blocks: int, block_tokens: int, max_rows: int, seed: int = 0,
                 record: bool = False, max_context: int | None = None):
        B = strategy.B
        super().__init__(model, num_blocks, block_tokens, scratch_rows=max_rows, scratch_positions=B + block_tokens,
                         max_context=max_context)
        self.strategy, self.B = strategy, B
        self.mask = mask_id(model.spec)
        self.resp: dict[int, list[int]] = {}
        self.edge: dict[int, tuple[float, int]] = {}  # request -> (confidence, token) of its block's first position
        self.rng = np.random.default_rng(seed)
        self.record = record
        self.trace: list[tuple[list[int], int, torch.Tensor]] = []
        self.committed_per_step: list[int] = []

    def free(self, req_id: int) -> None:
        super().free(req_id)
        self.resp.pop(req_id, None)
        self.edge.pop(req_id, None)

    def output(self, req_id: int, prompt_len: int) -> list[int]:
        return list(self.resp.get(req_id, []))

    def execute_plan(self, plan, sched):
        run, B = sched.run, self.B
        rows, rids = plan.rows.tolist(), plan.req_ids.tolist()
        seqs, info = [], []
        for n, (row, r) in enumerate(zip(rows, rids)):
            P, m, G = int(run.P[row]), int(run.m[row]), int(run.G[row])
            start, q, c, stp = int(plan.start[n]), int(plan.q[n]), int(plan.catchup[n]), bool(plan.steps[n])
            resp = self.resp.setdefault(r, [self.mask] * (-(-G // B) * B))
            full = self.tokens[r] + resp
            ready = P + (m // B) * B  # prompt + finished blocks
            step_q = q - c if stp else 0
            if m >= G:  # a finished row of a static batch computes as padding until the batch ends
                full += [self.mask] * max(0, start + q - len(full))
                step_q = 0
            elif stp and (start + c != ready or step_q != B):
                raise AssertionError(f"request {r}: plan step at {start + c} of {step_q}, expected {ready} of {B}")
            edge_here = c > 0 and start + c == ready and m < G  # the exact prefix is done: keep its last logits
            o = step_q + (1 if edge_here else 0)
            span = range(start, start + q)
            limits = block_causal_limits(span, P, B)
            ctx = start + q
            seqs.append(SeqInput(full[start:start + q], start, self.table(sched.kv, r, ctx, n), o, attend=limits))
            info.append((P, m, G, ready, step_q, o, edge_here))
        seconds, (logits, conf, tok) = self.run_pass("block_step" if any(plan.steps.tolist()) else
                                                     "block_kv_write", seqs, post=scored)
        commits = np.zeros(len(rows), dtype=np.int64)
        conf_all, tok_all = to_host(conf, tok)
        want = self._scheduled(run, rows)
        off = 0
        for n, (P, m, G, ready, step_q, o, edge_here) in enumerate(info):
            r = rids[n]
            lo = off
            off += o
            if edge_here:  # only the edge's confidence and token are needed later, not its logits
                self.edge[r] = (float(conf_all[lo]), int(tok_all[lo]))
                lo += 1
            if not step_q:
                continue
            if self.record:
                self.trace.append(((self.tokens[r] + self.resp[r])[:ready + step_q], P,
                                   logits[lo:lo + step_q].clone()))
            # block position j is predicted by the output at the position before it; position 0 by the edge
            conf = np.concatenate([[self.edge[r][0]], conf_all[lo:lo + step_q - 1]])
            tok = np.concatenate([[self.edge[r][1]], tok_all[lo:lo + step_q - 1]])
            commits[n] = self._commit(r, m, G, None if want is None else int(want[n]), conf, tok)
        return seconds, commits

    def _scheduled(self, run, rows: list[int]) -> np.ndarray | None:
        """Positions the even schedule unmasks in each plan row this step (one vectorized call for the pass: a
        call per row cost ~85 us of host time each); None under a confidence threshold."""
        if self.strategy.mean is not None:
            return None
        idx = np.asarray(rows, dtype=np.int64)
        return self.strategy.commit(run.P[idx], run.m[idx], run.G[idx], run.state[idx], self.rng)[0]

    def _commit(self, r: int, m: int, G: int, want: int | None, conf_b: np.ndarray, tok_b: np.ndarray) -> int:
        """Unmask the chosen positions of the current block (conf_b, tok_b [B]: position j's prediction): the
        `want` most confident (even schedule), or those over the threshold."""
        s, B, resp = self.strategy, self.B, self.resp[r]
        first = (m // B) * B
        span = min(B, G - first)
        cand = [j for j in range(span) if resp[first + j] == self.mask]
        if not cand:
            return 0
        conf, tok = conf_b[cand], tok_b[cand]
        if want is not None:
            chosen = pick(conf, want, None)
        else:
            threshold = s.spec.threshold if s.spec.threshold is not None else 0.9
            chosen = pick(conf, None, threshold)
        for i in chosen.tolist():
            assert resp[first + cand[i]] == self.mask, "a committed token would change"
            resp[first + cand[i]] = int(tok[i])
        self.committed_per_step.append(len(chosen))
        return len(chosen)

    def summary(self) -> dict:
        out = super().summary()
        if self.committed_per_step:
            out["tokens_per_step_measured"] = float(np.mean(self.committed_per_step))
        return out
