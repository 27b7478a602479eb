"""Speculative decoding on the runtime (runtime/speculative.py, runtime/acceptance.py), CPU float32.

Greedy speculation must reproduce greedy AR decoding token for token (Leviathan et al. 2023: verification keeps
exactly the target's choices), for a separate draft model and for self-speculation, at batch > 1, under static and
continuous batching; forced acceptance must follow the truncated geometric law; the stochastic rule must leave the
target's distribution unchanged."""

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from rt_helpers import random_tokens, tiny_spec
from strat_helpers import drive
from runtime import acceptance
from runtime.forward import greedy_generate
from runtime.model import Transformer
from runtime.speculative import SpeculativeExecutor
from sim.scenario import Speculative as SpeculativeSpec
from sim.strategies.speculative import Speculative


@pytest.fixture(scope="module")
def draft_model():
    return Transformer.random(tiny_spec(num_layers=1), seed=2)


def strategy(k, self_draft):
    spec = SpeculativeSpec(draft="self" if self_draft else "llama-3.2-1b", draft_layers=1, k=k)
    return Speculative(spec, k, self_draft)


@pytest.mark.parametrize("self_draft", [True, False])
@pytest.mark.parametrize("batching", ["static", "continuous"])
def test_greedy_speculation_equals_greedy_ar(tiny, draft_model, self_draft, batching):
    lengths = [7, 7, 7] if batching == "static" else [5, 9, 7]  # static rows share one (unpadded) prompt length
    prompts = [random_tokens(n, seed) for seed, n in enumerate(lengths)]
    outputs = [11, 4, 13]
    ex = SpeculativeExecutor(tiny, 64, 4, draft=None if self_draft else draft_model,
                             draft_layers=1 if self_draft else None)
    got, served = drive(ex, strategy(3, self_draft), prompts, outputs, batching, kv_extra=3)
    assert got == [greedy_generate(tiny, p, n) for p, n in zip(prompts, outputs)]
    s = ex.summary()
    assert sum(s["accepted_histogram"]) == len(ex.accepted) > 0
    assert sum(served.committed_per_pass) == sum(outputs)


def test_self_draft_with_all_layers_accepts_everything(tiny):
    """A draft that is the whole target agrees with it always: every verify accepts all k drafts."""
    prompts = [random_tokens(6, 9)]
    ex = SpeculativeExecutor(tiny, 64, 4, draft_layers=tiny.spec.num_layers)
    got, _ = drive(ex, strategy(3, True), prompts, [13], kv_extra=3)
    assert got == [greedy_generate(tiny, prompts[0], 13)]
    assert ex.accepted == ex.drafted  # 1 (prefill) + 3 iterations of 4 tokens = 13


def test_forced_acceptance_histogram_matches_truncated_geometric(tiny):
    alpha, k = 0.6, 3
    prompts = [random_tokens(4, s) for s in range(16)]
    ex = SpeculativeExecutor(tiny, 512, 4, draft_layers=1, acceptance_mode="forced", alpha=alpha, seed=5)
    drive(ex, strategy(k, True), prompts, [60] * 16, batching="static", batch=16, num_blocks=512, kv_extra=k)
    acc = np.array([a for a, d in zip(ex.accepted, ex.drafted) if d == k])
    assert len(acc) > 150
    law = np.array([alpha ** n * (1 - alpha) for n in range(k)] + [alpha ** k])
    observed = np.bincount(acc, minlength=k + 1)
    assert chisquare(observed, law * len(acc)).pvalue > 1e-3
    assert ex.summary()["acceptance"] == "forced"


def test_stochastic_rule_preserves_the_target_distribution():
    """First committed token over many rows of fixed toy distributions ~ p_target (Leviathan et al., Theorem 1)."""
    p_t = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05])
    p_d = torch.tensor([0.1, 0.1, 0.4, 0.3, 0.1])
    R, k = 20000, 2
    gen = torch.Generator().manual_seed(0)
    draft = torch.multinomial(p_d.expand(R, 5), k, replacement=True, generator=gen)
    a, y = acceptance.stochastic(draft, torch.full((R,), k), p_d.expand(R, k, 5), p_t.expand(R, k + 1, 5), gen)
    first = torch.where(a > 0, draft[:, 0], y)
    observed = torch.bincount(first, minlength=5).numpy()
    assert chisquare(observed, p_t.numpy() * R).pvalue > 1e-3
    # and the draft really is rejected sometimes (the test could not fail otherwise)
    assert 0 < int((a == 0).sum()) < R


def test_stochastic_mode_runs_through_the_scheduler(tiny, draft_model):
    prompts = [random_tokens(5, s) for s in range(3)]
    ex = SpeculativeExecutor(tiny, 64, 4, draft=draft_model, acceptance_mode="stochastic", seed=3)
    got, served = drive(ex, strategy(2, False), prompts, [6, 9, 4], "continuous", kv_extra=2)
    assert [len(g) for g in got] == [6, 9, 4]
    assert all(0 <= t < tiny.spec.vocab_size for g in got for t in g)


def test_greedy_rule_by_hand():
    """Accept drafts while they equal the target's argmax; the next token is the argmax after them (the bonus token
    when every draft matched; the target's own token at the first mismatch; a row that drafted nothing takes it)."""
    accepted, nxt = acceptance.greedy([[5, 6, 7], [5, 9, 7], []], [[5, 6, 7, 8], [5, 6, 7, 8], [3]])
    assert accepted == [3, 1, 0] and nxt == [8, 6, 3]


@pytest.mark.parametrize("self_draft", [True, False])
def test_chained_passes_log_what_they_ran(tiny, draft_model, self_draft):
    """Greedy and forced iterations issue every pass back to back (drafts chained on the device, one host sync):
    each iteration logs its draft passes, then one verify, with the token counts of the shapes it staged. Continuous
    batching with prompts of different lengths gives rows of different k in one iteration (catch-up rows draft
    fewer), so later draft passes run fewer rows."""
    prompts = [random_tokens(n, s) for s, n in enumerate((5, 9, 7, 4))]
    ex = SpeculativeExecutor(tiny, 64, 4, draft=None if self_draft else draft_model,
                             draft_layers=1 if self_draft else None, acceptance_mode="forced", alpha=0.5, seed=1)
    got, _ = drive(ex, strategy(3, self_draft), prompts, [9, 14, 5, 11], "continuous", kv_extra=3)
    assert [len(g) for g in got] == [9, 14, 5, 11]
    assert [t for _, t, _ in ex.pass_log] == [s[0] for s in ex.pass_shapes]
    roles = [r for r, _, _ in ex.pass_log]
    at = 0
    for _, _, n_draft, *_ in ex.iter_log:
        assert roles[at + n_draft] == "verify" and set(roles[at:at + n_draft]) <= {"draft"}
        at += n_draft + 1
    assert at == len(ex.pass_log)
    assert sum(1 for r in roles if r == "verify") == len(ex.iter_log)
