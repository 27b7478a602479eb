"""Speculative decoding on the runtime (Leviathan et al., ICML 2023; Chen et al. 2023): k draft passes, one verify
pass of k + 1 tokens, per-row accepted lengths, KV of rejected drafts rolled back.

One iteration over the plan's stepping rows (row i drafts k_i = q_i - catchup_i - 1 tokens, as
sim/strategies/speculative.py decides):
  0. a separate draft model first runs over the prompt and catch-up tokens the target processes in this
     iteration (one pass; the simulator prices it with the target's prefill);
  1. draft pass j = 0 .. max k_i - 1 over the rows with k_i > j: pass 0 feeds every token the draft has not
     cached (after a full acceptance the draft never saw its last draft nor the bonus token: two), then one token
     per pass; each pass's last logits give draft token j (argmax, or a sample when acceptance is stochastic);
  2. one target pass over every plan row: catch-up tokens, the last committed token and the k_i drafts, with
     logits at the k_i + 1 verified positions;
  3. acceptance (runtime/acceptance.py: greedy, stochastic, forced) -> a_i accepted drafts + the target's token:
     the row commits a_i + 1 tokens, which go back to the scheduler as `commits`.
Rollback: the target's K/V of rejected drafts stay in their slots, past the positions the scheduler keeps; the
scheduler shrinks the row's blocks and those slots are overwritten by later passes. The draft's own cache keeps a
count of valid positions per request and is cut back the same way.

Drafts: a separate model (its own weights and a paged cache indexed by the target's block tables, positions being
the same), or the target's first `draft_layers` layers and its LM head (layer-skip self-speculation, LayerSkip,
Elhoushi et al. 2024), which shares the target's weights and, for those layers, its KV cache: the target writes
the same K/V for them in every pass, so the draft only catches up on what this iteration adds.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from runtime import acceptance
from runtime.forward import SeqInput
from runtime.plan_exec import PlanExecutor


class LayerPrefix:
    """The target's first `layers` decoder layers and its final norm + LM head, as a model the forward pass and the
    decode graphs accept (same device tensors: no copy)."""

    def __init__(self, target, layers: int):
        if not 1 <= layers <= target.spec.num_layers:
            raise ValueError(f"draft_layers must be in 1..{target.spec.num_layers}, got {layers}")
        self.spec = target.spec
        self.weights = dataclasses.replace(target.weights, layers=target.weights.layers[:layers])
        self.device, self.dtype, self.max_positions = target.device, target.dtype, target.max_positions
        self.cos, self.sin = target.cos, target.sin


class SpeculativeExecutor(PlanExecutor):
    """Runs speculative plans of `target` with a draft (`draft` model, or `draft_layers` of the target).
    `acceptance`: greedy | stochastic | forced (then `alpha` is the forced acceptance rate)."""

    def __init__(self, target, num_blocks: int, block_tokens: int, *, draft=None, draft_layers: int | None = None,
                 acceptance_mode: str = "greedy", alpha: float | None = None, seed: int = 0,
                 use_graphs: bool | None = None, max_context: int | None = None):
        super().__init__(target, num_blocks, block_tokens, use_graphs=use_graphs, max_context=max_context)
        if acceptance_mode not in acceptance.MODES:
            raise ValueError(f"acceptance must be one of {acceptance.MODES}, got {acceptance_mode!r}")
        if acceptance_mode == "forced" and alpha is None:
            raise ValueError("forced acceptance needs alpha")
        if (draft is None) == (draft_layers is None):
            raise ValueError("give a draft model or draft_layers (self-speculation), not both")
        self.mode, self.alpha = acceptance_mode, alpha
        self.shared = draft is None
        self.draft = LayerPrefix(target, draft_layers) if self.shared else draft
        self.draft_cache = self.cache if self.shared else draft.paged_cache(num_blocks, block_tokens)
        self.draft_done: dict[int, int] = {}  # request -> positions whose draft K/V are valid
        self.gen = torch.Generator(device=target.device).manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.accepted: list[int] = []  # accepted drafts of every verified row that drafted
        self.drafted: list[int] = []  # k_i of those rows
        # one entry per iteration: (draft seconds, verify seconds, draft passes, plan rows, stepping rows that drafted,
        # tokens those rows committed, tokens committed in all) -- the exact passes a run executed
        self.iter_log: list[tuple[float, float, int, int, int, int, int]] = []
        self.draft_graphs = self.make_graphs(self.draft, self.draft_cache) if use_graphs is not False else None

    def all_graphs(self) -> list:
        return super().all_graphs() + [g for g in (self.draft_graphs,) if g is not None]

    def free(self, req_id: int) -> None:
        super().free(req_id)
        self.draft_done.pop(req_id, None)

    # -- one iteration -------------------------------------------------------------------------------------------
    def execute_plan(self, plan, sched):
        kv = sched.kv
        rids = plan.req_ids.tolist()
        q, start, o = plan.q.tolist(), plan.start.tolist(), plan.o.tolist()
        catch, steps = plan.catchup.tolist(), plan.steps.tolist()
        k_of = [q[i] - catch[i] - 1 if steps[i] else 0 for i in range(len(rids))]
        tables = [kv.tables[r] for r in rids]
        committed_len = [start[i] + q[i] - k_of[i] for i in range(len(rids))]  # tokens known before drafting
        total_s = 0.0
        n_draft = 0
        # 0. a separate draft prefills (and catches up) the tokens the target does, in the same iteration
        caught = [start[i] + (catch[i] if steps[i] else q[i]) for i in range(len(rids))]
        if not self.shared:
            total_s, n_draft = self._draft_prefill(rids, start, caught, tables)
        # 1. draft passes
        drafting = [i for i in range(len(rids)) if k_of[i] > 0]
        drafts: dict[int, list[int]] = {i: [] for i in drafting}
        p_draft: dict[int, list[torch.Tensor]] = {i: [] for i in drafting}
        for i in drafting:
            r = rids[i]
            # shared: the target's layers hold exactly the positions the scheduler says are computed
            self.draft_done[r] = start[i] if self.shared else min(self.draft_done.get(r, 0), caught[i])
        for j in range(max((k_of[i] for i in drafting), default=0)):
            act = [i for i in drafting if k_of[i] > j]
            seconds, logits = self._draft_pass([(rids[i], tables[i]) for i in act])
            total_s += seconds
            n_draft += 1
            if self.mode == "stochastic":
                p = torch.softmax(logits.float(), dim=-1)
                tok = torch.multinomial(p.cpu(), 1, generator=acceptance._cpu(self.gen))[:, 0].tolist()
            else:  # (before the next replay overwrites the graph's logits)
                p, tok = None, logits.argmax(dim=-1).tolist()
            for n, i in enumerate(act):
                r = rids[i]
                self.draft_done[r] = len(self.tokens[r])
                self.tokens[r].append(tok[n])
                drafts[i].append(tok[n])
                if p is not None:
                    p_draft[i].append(p[n])
        # 2. verify: one target pass over every row of the plan
        seqs = [SeqInput(self.tokens[r][s:s + n], s, t, lo) for r, s, n, t, lo in zip(rids, start, q, tables, o)]
        seconds, logits = self.run_pass("verify", seqs)
        draft_s = total_s
        total_s += seconds
        # 3. acceptance, per stepping row
        commits = np.zeros(len(rids), dtype=np.int64)
        stepping = [i for i in range(len(rids)) if steps[i] and o[i] > 0]
        offsets = np.cumsum([0] + o)
        if stepping:
            accepted, nxt = self._decide(stepping, k_of, drafts, p_draft, logits, offsets)
            for n, i in enumerate(stepping):
                r, a = rids[i], accepted[n]
                self.tokens[r] = self.tokens[r][:committed_len[i]] + drafts.get(i, [])[:a] + [nxt[n]]
                if not self.shared and r in self.draft_done:  # K/V of rejected drafts are no longer valid
                    self.draft_done[r] = min(self.draft_done[r], len(self.tokens[r]) - 1)
                commits[i] = a + 1
                if k_of[i] > 0:
                    self.accepted.append(a)
                    self.drafted.append(k_of[i])
        drafted = [i for i in range(len(rids)) if steps[i] and o[i] > 0 and k_of[i] > 0]
        self.iter_log.append((draft_s, seconds, n_draft, len(rids), len(drafted),
                              int(sum(commits[i] for i in drafted)), int(commits.sum())))
        return total_s, commits

    def _draft_prefill(self, rids, start, upto, tables) -> tuple[float, int]:
        """One pass of a separate draft over every row's prompt / catch-up tokens (positions it lacks below
        upto[i]): the pass sim/strategies/speculative.py prices next to the target's prefill (extra_passes), so
        that the first draft pass of a decode iteration carries one or two tokens per row, not a whole prompt.
        Returns (seconds, passes)."""
        seqs, done = [], []
        for r, s, u, table in zip(rids, start, upto, tables):
            if u == s:  # a plain decode row: its lag (the last draft after a full acceptance) goes into pass 0
                continue
            d = min(self.draft_done.get(r, 0), s)  # a recomputed (preempted) request starts over at 0
            self.draft_done[r] = d
            if d < u:
                seqs.append(SeqInput(self.tokens[r][d:u], d, table, 1))
                done.append((r, u))
        if not seqs:
            return 0.0, 0
        seconds, _ = self.run_pass("draft", seqs, self.draft, self.draft_cache, self.draft_graphs)
        for r, u in done:
            self.draft_done[r] = u
        return seconds, 1

    def _draft_pass(self, rows: list[tuple[int, list[int]]]) -> tuple[float, torch.Tensor]:
        """One draft pass; each row feeds every token its draft cache lacks. Returns (seconds, logits [R, V])."""
        seqs = [SeqInput(self.tokens[r][self.draft_done[r]:], self.draft_done[r], table, 1) for r, table in rows]
        return self.run_pass("draft", seqs, self.draft, self.draft_cache, self.draft_graphs)

    def _decide(self, stepping, k_of, drafts, p_draft, logits, offsets):
        """Accepted drafts and next token per stepping row. Greedy and forced need only the target's argmaxes (one
        transfer, then host arithmetic); stochastic works on the distributions, batched over rows (padded to k)."""
        if self.mode != "stochastic":
            best = logits.argmax(dim=-1).tolist()
            rows = [best[offsets[i]:offsets[i + 1]] for i in stepping]
            if self.mode == "greedy":
                return acceptance.greedy([drafts.get(i, [])[:k_of[i]] for i in stepping], rows)
            acc = acceptance.forced(np.array([k_of[i] for i in stepping]), self.alpha, self.rng).tolist()
            return acc, [row[a] for row, a in zip(rows, acc)]
        R, V = len(stepping), logits.shape[-1]
        k = max(k_of[i] for i in stepping)
        dev = logits.device
        tl = torch.zeros((R, k + 1, V), dtype=logits.dtype, device=dev)
        dr = torch.zeros((R, k), dtype=torch.long, device=dev)
        pd = torch.zeros((R, k, V), dtype=torch.float32, device=dev)
        for n, i in enumerate(stepping):
            tl[n, :k_of[i] + 1] = logits[offsets[i]:offsets[i + 1]]
            if k_of[i]:
                dr[n, :k_of[i]] = torch.tensor(drafts[i], device=dev)
                pd[n, :k_of[i]] = torch.stack(p_draft[i])
        k_i = torch.tensor([k_of[i] for i in stepping], device=dev)
        a, y = acceptance.stochastic(dr, k_i, pd, torch.softmax(tl.float(), dim=-1), self.gen)
        return a.tolist(), y.tolist()

    def summary(self) -> dict:
        out = super().summary()
        k = max(self.drafted, default=0)
        out.update(acceptance=self.mode, accepted_histogram=acceptance.histogram(self.accepted, k),
                   draft="self" if self.shared else "model")
        if self.mode == "forced":
            out["forced_alpha"] = self.alpha
        if self.accepted:
            # alpha estimated as accepted / (accepted + rejections): a rejection ends every verify with a < k_i
            rejections = sum(a < kk for a, kk in zip(self.accepted, self.drafted))
            out["alpha_measured"] = sum(self.accepted) / max(sum(self.accepted) + rejections, 1)
            out["mean_accepted"] = float(np.mean(self.accepted))
        return out
