"""Masked diffusion decoding on the runtime, LLaDA style (Nie et al. 2025), with Fast-dLLM's approximate caches
(Wu et al. 2025, arXiv:2505.22618). One loop for every cache mode and window, parameterized by the geometry that
sim/strategies/diffusion.py decides (so the runtime runs exactly the passes the simulator prices).

A request's response starts as `gen_length` mask tokens (spec.mask_token_id, else the last vocabulary id). Each
step is one bidirectional pass; the positions it computes and the keys they see:
  cache none:   positions 0 .. N-1 (N = prompt + window), every step;
  cache prefix: at a block start (state 0) the full N (refresh, writes the prefix K/V), then only the suffix
                P + block start .. N-1, attending to the cached prefix (approximate: written while the block was
                still masked);
  cache dual:   refresh as above, then only the current block, attending to the cached prefix and suffix.
`window: dynamic` computes the response up to the committed frontier + lookahead, `full` all of it.
Commit (LLaDA's low-confidence remasking, greedy): predict argmax at every masked position of the current span
(the whole response without cache, the cache block with one); confidence = its softmax probability; commit the
scheduled count (even schedule) of the most confident, or every one with confidence >= threshold and at least the
most confident (Fast-dLLM's parallel decoding rule). A committed token is never changed.
"""

from __future__ import annotations

import numpy as np
import torch

from runtime import ops
from runtime.forward import SeqInput
from runtime.plan_exec import PlanExecutor


def mask_id(spec) -> int:
    """The [MASK] token: the model's own, else the last vocabulary id (random-weight models)."""
    return spec.mask_token_id if spec.mask_token_id is not None else spec.vocab_size - 1


def pick(conf: np.ndarray, n: int | None, threshold: float | None) -> np.ndarray:
    """Indices of the candidates to commit: the n most confident, or all with conf >= threshold (at least one)."""
    if n is None:
        chosen = np.flatnonzero(conf >= threshold)
        return chosen if len(chosen) else np.array([int(np.argmax(conf))])
    return np.argsort(-conf, kind="stable")[:min(n, len(conf))]


def scored(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits, softmax probability of the argmax, argmax) of every row: the `post` step of a diffusion pass
    (plan_exec.run_pass), device work timed with the pass as the cost model's `sampling` operator prices it."""
    conf, tok = ops.confidence(logits)
    return logits, conf, tok


def to_host(conf: torch.Tensor, tok: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The commit rules run on the host, from one transfer of each: a device sync per committed token cost
    milliseconds per pass."""
    return conf.cpu().numpy(), tok.cpu().numpy()


class DiffusionExecutor(PlanExecutor):
    """Runs diffusion plans (strategy = sim.strategies.diffusion.Diffusion) of a bidirectional `model`."""

    def __init__(self, model, strategy, num_blocks: int, block_tokens: int, max_rows: int, max_positions: int,
                 seed: int = 0, max_context: int | None = None):
        super().__init__(model, num_blocks, block_tokens, scratch_rows=max_rows, scratch_positions=max_positions,
                         max_context=max_context)
        self.strategy = strategy
        self.mask = mask_id(model.spec)
        self.resp: dict[int, list[int]] = {}  # request -> response (mask ids where not committed)
        self.refreshed: dict[int, int] = {}  # request -> N of its last refresh (positions with cached K/V)
        self.rng = np.random.default_rng(seed)
        self.committed_per_step: list[int] = []

    def free(self, req_id: int) -> None:
        super().free(req_id)
        self.resp.pop(req_id, None)
        self.refreshed.pop(req_id, None)

    def output(self, req_id: int, prompt_len: int) -> list[int]:
        return list(self.resp.get(req_id, []))

    def geometry(self, P: int, m: int, G: int, state: int) -> tuple[int, int, int, int, int]:
        """(first computed position, query tokens, context, span start, span end) of one step, in positions of the
        sequence; span bounds are response offsets (sim/strategies/diffusion.py, Diffusion.step)."""
        s = self.strategy
        m_, G_ = np.array([m]), np.array([G])
        start, length = (int(x[0]) for x in s._span(m_, G_))
        W = int(s._window(m_, G_, np.array([start + length]))[0])
        N, cache, refresh = P + W, s.spec.cache, state == 0
        if cache == "none" or refresh:
            return 0, N, N, start, start + length
        if cache == "prefix":
            return P + start, N - (P + start), N, start, start + length
        q = min(length, W - start)  # dual: the current block against the cached prefix and suffix
        return P + start, q, N, start, start + length

    def execute_plan(self, plan, sched):
        run, s = sched.run, self.strategy
        rows = plan.rows.tolist()
        rids = plan.req_ids.tolist()
        seqs, geo = [], []
        for n, (row, r) in enumerate(zip(rows, rids)):
            P, m, G, state = (int(a[row]) for a in (run.P, run.m, run.G, run.state))
            resp = self.resp.setdefault(r, [self.mask] * G)
            first, q, ctx, a, b = self.geometry(P, m, G, state)
            if s.spec.cache == "dual" and state != 0:
                ctx = self.refreshed[r]  # the suffix K/V the last refresh wrote (the window may have grown since)
            elif state == 0:
                self.refreshed[r] = first + q
            if q != int(plan.q[n]):
                raise AssertionError(f"runtime step of request {r} computes {q} tokens, the plan says {plan.q[n]}")
            toks = (self.tokens[r] + resp)[first:first + q]
            seqs.append(SeqInput(toks, first, self.table(sched.kv, r, ctx, n), q, context=ctx, attend="full"))
            geo.append((P, m, G, state, first, q, a, b))
        seconds, (_, conf, tok) = self.run_pass("diffusion_step", seqs, post=scored)
        commits = np.zeros(len(rows), dtype=np.int64)
        conf_all, tok_all = to_host(conf, tok)
        if s.mean is None:  # even schedule: the counts sim's strategy schedules for this step, one call per pass
            idx = np.asarray(rows, dtype=np.int64)
            want = s._commits(run.m[idx], run.G[idx], run.state[idx], self.rng)[0]
        off = 0
        for n, (P, m, G, state, first, q, a, b) in enumerate(geo):
            r = rids[n]
            base = off
            off += q
            resp = self.resp[r]
            end = first + q - P  # response positions this step computed end here
            cand = [j for j in range(a, min(b, end)) if resp[j] == self.mask]
            if not cand:
                continue
            rows_of = np.array([base + P + j - first for j in cand])
            conf, tok = conf_all[rows_of], tok_all[rows_of]
            if s.mean is None:
                chosen = pick(conf, int(want[n]), None)
            else:
                chosen = pick(conf, None, s.threshold)
            for c in chosen.tolist():
                assert resp[cand[c]] == self.mask, "a committed token would change"
                resp[cand[c]] = int(tok[c])
            commits[n] = len(chosen)
            self.committed_per_step.append(len(chosen))
        return seconds, commits

    def summary(self) -> dict:
        out = super().summary()
        if self.committed_per_step:
            out["tokens_per_step_measured"] = float(np.mean(self.committed_per_step))
        return out
