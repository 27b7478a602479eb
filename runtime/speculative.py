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
Greedy and forced acceptance chain steps 1-2 on the device: draft pass j + 1 reads pass j's tokens from the device and
the verify reads every draft from there, so all passes are issued back to back and the host stages each pass while
the device runs the one before; the drafts and the verify's argmaxes come to the host once, for step 3 (one sync
per iteration instead of one per pass: host time per iteration 0.44x on the H100, benchmarks/README.md).
Stochastic acceptance needs each draft's distribution on the host and runs the passes one at a time.
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
from runtime.graphs import index_to_device
from runtime.plan_exec import PlanExecutor
from runtime.timing import PassTimer


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
        prefill_s, n_prefill = 0.0, 0
        # 0. a separate draft prefills (and catches up) the tokens the target does, in the same iteration
        caught = [start[i] + (catch[i] if steps[i] else q[i]) for i in range(len(rids))]
        if not self.shared:
            prefill_s, n_prefill = self._draft_prefill(rids, start, caught, tables)
        drafting = [i for i in range(len(rids)) if k_of[i] > 0]
        for i in drafting:
            r = rids[i]
            # shared: the target's layers hold exactly the positions the scheduler says are computed
            self.draft_done[r] = start[i] if self.shared else min(self.draft_done.get(r, 0), caught[i])
        stepping = [i for i in range(len(rids)) if steps[i] and o[i] > 0]
        offsets = np.cumsum([0] + o)
        if self.mode == "stochastic":  # 1.-3. pass by pass: each draft needs its distribution on the host
            drafts, p_draft, draft_s, n_draft = self._draft_passes(rids, tables, k_of, drafting)
            seqs = [SeqInput(self.tokens[r][s:s + n], s, t, lo) for r, s, n, t, lo in zip(rids, start, q, tables, o)]
            verify_s, logits = self.run_pass("verify", seqs)
            accepted, nxt = self._decide(stepping, k_of, drafts, p_draft, logits, offsets) if stepping else ([], [])
        else:  # 1.-3. every pass issued back to back, drafts chained on the device, one host sync
            drafts, best, draft_s, verify_s, n_draft = self._chained_passes(rids, start, q, o, tables, k_of,
                                                                            committed_len, drafting)
            accepted, nxt = self._decide_greedy(stepping, k_of, drafts, best, offsets) if stepping else ([], [])
        # commit a_i accepted drafts + the target's token, per stepping row
        commits = np.zeros(len(rids), dtype=np.int64)
        for n, i in enumerate(stepping):
            r, a = rids[i], accepted[n]
            self.tokens[r] = self.tokens[r][:committed_len[i]] + drafts.get(i, [])[:a] + [nxt[n]]
            if not self.shared and r in self.draft_done:  # K/V of rejected drafts are no longer valid
                self.draft_done[r] = min(self.draft_done[r], len(self.tokens[r]) - 1)
            commits[i] = a + 1
            if k_of[i] > 0:
                self.accepted.append(a)
                self.drafted.append(k_of[i])
        drafted = [i for i in stepping if k_of[i] > 0]
        self.iter_log.append((prefill_s + draft_s, verify_s, n_prefill + n_draft, len(rids), len(drafted),
                              int(sum(commits[i] for i in drafted)), int(commits.sum())))
        return prefill_s + draft_s + verify_s, commits

    def _draft_passes(self, rids, tables, k_of, drafting):
        """Stochastic drafts, one pass at a time: each token is sampled on the host from its distribution and fed to
        the next pass. Returns ({row: drafts}, {row: draft distributions}, seconds, passes); the drafts are appended
        to the rows' tokens."""
        drafts: dict[int, list[int]] = {i: [] for i in drafting}
        p_draft: dict[int, list[torch.Tensor]] = {i: [] for i in drafting}
        total_s, passes = 0.0, 0
        for j in range(max((k_of[i] for i in drafting), default=0)):
            act = [i for i in drafting if k_of[i] > j]
            seconds, logits = self._draft_pass([(rids[i], tables[i]) for i in act])
            total_s += seconds
            passes += 1
            p = torch.softmax(logits.float(), dim=-1)  # (before the next replay overwrites the graph's logits)
            tok = torch.multinomial(p.cpu(), 1, generator=acceptance._cpu(self.gen))[:, 0].tolist()
            for n, i in enumerate(act):
                r = rids[i]
                self.draft_done[r] = len(self.tokens[r])
                self.tokens[r].append(tok[n])
                drafts[i].append(tok[n])
                p_draft[i].append(p[n])
        return drafts, p_draft, total_s, passes

    def _chained_passes(self, rids, start, q, o, tables, k_of, committed_len, drafting):
        """Greedy drafts and the verify, issued back to back with no host sync: draft pass j + 1 takes its tokens
        from pass j's argmax on the device, and the verify takes every draft from there too, so the host stages
        each pass while the device runs the one before (vLLM's and EAGLE's proposers keep drafting on the device
        for the same reason). The drafts come to the host once, with the verify's argmaxes.
        Returns ({row: drafts}, verify argmaxes of the wanted rows, draft seconds, verify seconds, draft passes)."""
        timer = PassTimer(self.on_cuda)
        dev = self.model.device
        # rows by falling k_i: the rows of draft pass j + 1 are then the first rows of pass j
        order = sorted(drafting, key=lambda i: -k_of[i])
        k_max = k_of[order[0]] if order else 0
        out = torch.zeros((len(order), max(k_max, 1)), dtype=torch.long, device=dev)  # row n's draft j: out[n, j]
        tokens_of = []
        for j in range(k_max):
            n = sum(1 for i in order if k_of[i] > j)
            if j == 0:  # every token the draft's cache lacks, all known to the host
                seqs = [SeqInput(self.tokens[rids[i]][self.draft_done[rids[i]]:], self.draft_done[rids[i]],
                                 tables[i], 1) for i in order]
            else:  # one token per row, draft j - 1, still on the device
                seqs = [SeqInput([0], committed_len[i] + j - 1, tables[i], 1) for i in order[:n]]
            p = self.stage(seqs, self.draft, self.draft_cache, self.draft_graphs)
            if j:
                p.token_ids.copy_(out[:n, j - 1])
            out[:n, j].copy_(timer.run(p.greedy))
            tokens_of.append(p.tokens)
            for i in order[:n]:
                self.draft_done[rids[i]] = committed_len[i] + j
        # the verify: every plan row, its drafts placed from the device
        seqs, dst, src = [], [], []
        row, slot = 0, {i: n for n, i in enumerate(order)}
        for i, r in enumerate(rids):
            known = q[i] - k_of[i]
            seqs.append(SeqInput(self.tokens[r][start[i]:start[i] + known] + [0] * k_of[i], start[i], tables[i], o[i]))
            dst += range(row + known, row + q[i])
            src += range(slot[i] * out.shape[1], slot[i] * out.shape[1] + k_of[i]) if k_of[i] else []
            row += q[i]
        p = self.stage(seqs)
        if dst:
            placed = out.view(-1).index_select(0, index_to_device(src, dev))
            p.token_ids.index_copy_(0, index_to_device(dst, dev), placed)
        best = timer.run(p.greedy)
        seconds = timer.settle()
        for t, s in zip(tokens_of, seconds):
            self.pass_log.append(("draft", t, s))
        self.pass_log.append(("verify", p.tokens, seconds[-1]))
        both = torch.cat([out.view(-1), best]).tolist()  # one transfer
        width = out.shape[1]
        drafts = {i: both[slot[i] * width:slot[i] * width + k_of[i]] for i in order}
        return drafts, both[out.numel():], float(sum(seconds[:-1])), seconds[-1], k_max

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

    def _decide_greedy(self, stepping, k_of, drafts, best, offsets):
        """Accepted drafts and next token per stepping row, for greedy and forced acceptance: the target's argmax
        of each verified position (`best`, wanted rows in plan order) is all they need."""
        rows = [best[offsets[i]:offsets[i + 1]] for i in stepping]
        if self.mode == "greedy":
            return acceptance.greedy([drafts.get(i, [])[:k_of[i]] for i in stepping], rows)
        acc = acceptance.forced(np.array([k_of[i] for i in stepping]), self.alpha, self.rng).tolist()
        return acc, [row[a] for row, a in zip(rows, acc)]

    def _decide(self, stepping, k_of, drafts, p_draft, logits, offsets):
        """Stochastic acceptance: on the distributions, batched over rows (padded to k)."""
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
