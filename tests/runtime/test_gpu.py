"""CUDA-only behaviour: decode under CUDA graphs, the executor's graph path, and the no-GPU error on a CPU box."""

import pytest
import torch

from rt_helpers import Item, random_tokens, tiny_spec
from runtime.executor import Executor
from runtime.forward import SeqInput, build_meta, forward
from runtime.model import Transformer, resolve_device
from sim.errors import UserError

CUDA = torch.cuda.is_available()
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


@pytest.mark.skipif(CUDA, reason="checks the message on a machine without CUDA")
def test_cuda_without_gpu_is_one_sentence():
    with pytest.raises(UserError, match="no CUDA GPU; run with --device cpu"):
        resolve_device("cuda")


def spec():
    return tiny_spec(hidden_size=256, num_heads=8, num_kv_heads=2, intermediate_size=512, num_layers=3,
                     vocab_size=512)


@gpu
@needs_cuda
def test_graph_decode_equals_eager_decode():
    """Three sequences (one past 64 positions, so several context splits hold work) decode 3 steps back to back
    under a graph (no host sync between steps); a second cache replays the same steps eagerly."""
    from runtime.graphs import DecodeGraphs
    model = Transformer.random(spec(), seed=0, device="cuda")
    prompts = [random_tokens(n, seed=n, vocab=512) for n in (8, 75, 20)]
    tables = [[3, 9], [0, 1, 2, 4, 5, 6], [7, 8]]
    caches = [model.paged_cache(64, 16), model.paged_cache(64, 16)]
    for cache in caches:
        for p, t in zip(prompts, tables):
            model.run(cache, [SeqInput(p[:-3], 0, t, 0)])
    graphs = DecodeGraphs(model, caches[0], max_context=96, buckets=[4])
    fast, slow = [], []
    for step in (3, 2, 1):
        toks = [p[-step] for p in prompts]
        pos = [len(p) - step for p in prompts]
        fast.append(graphs.run(toks, pos, tables)[0].clone())
        meta = build_meta([SeqInput([t], q, tb) for t, q, tb in zip(toks, pos, tables)], caches[1], "cuda",
                          model.max_positions)
        slow.append(forward(model, caches[1], meta))
    fast, slow = torch.stack(fast), torch.stack(slow)
    assert fast.shape == (3, 3, 512) and not fast.isnan().any()
    torch.testing.assert_close(fast, slow, atol=2e-2, rtol=2e-2)


@gpu
@needs_cuda
def test_executor_graph_path_runs_plans():
    model = Transformer.random(spec(), seed=1, device="cuda")
    ex = Executor(model, model.paged_cache(32, 16), max_context=64)
    for r, n in ((0, 12), (1, 30)):
        ex.add_request(r, n, seed=r)
    dt, new = ex.execute([Item(0, 12, 0, 1, [0]), Item(1, 20, 0, 0, [1, 2])])  # eager: prefill + chunk
    assert dt > 0 and set(new) == {0}
    dt, new = ex.execute([Item(0, 1, 12, 1, [0]), Item(1, 10, 20, 1, [1, 2])])  # 11 paged rows: graph bucket 16
    assert set(new) == {0, 1} and 16 in ex.graphs.graphs
    for _ in range(3):  # decode-only: CUDA graph of bucket 2
        plan = [Item(r, 1, len(ex.tokens[r]) - 1, 1, blocks) for r, blocks in ((0, [0]), (1, [1, 2, 3]))]
        dt, new = ex.execute(plan)
        assert dt > 0 and set(new) == {0, 1}
    assert ex.graphs is not None and 2 in ex.graphs.graphs
    assert len(ex.output(0, 12)) == 5 and len(ex.output(1, 30)) == 4


@gpu
@needs_cuda
def test_speculative_draft_catches_up_through_graphs():
    """A separate draft with the target's own weights agrees with it (nearly) always, so after each full
    acceptance the draft lags two tokens and catches up in its first draft pass, a graph of two paged rows per
    sequence; verifies replay graphs of k + 1 rows per sequence. If either wrote wrong K/V, the draft would drift
    and acceptance would collapse."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from strat_helpers import drive

    from runtime.speculative import SpeculativeExecutor
    from sim.scenario import Speculative as SpeculativeSpec
    from sim.strategies.speculative import Speculative

    target = Transformer.random(spec(), seed=4, device="cuda")
    draft = Transformer.random(spec(), seed=4, device="cuda")
    ex = SpeculativeExecutor(target, 64, 16, draft=draft, max_context=128)
    prompts = [random_tokens(12, seed=s, vocab=512) for s in range(3)]
    strategy = Speculative(SpeculativeSpec(draft="llama-3.2-1b", k=3), 3, self_draft=False)
    got, served = drive(ex, strategy, prompts, [40, 40, 40], "static", batch=3, num_blocks=64, block_tokens=16,
                        kv_extra=3)
    assert [len(g) for g in got] == [40, 40, 40]
    full = sum(1 for a in ex.accepted if a == 3)
    assert full >= 0.8 * len(ex.accepted), ex.summary()
    assert any(role == "draft" for role, _, _ in ex.pass_log)
    assert ex.target_graphs.graphs and ex.draft_graphs.graphs  # verifies and drafts replayed graphs


@gpu
@needs_cuda
def test_graph_of_paged_rows_equals_eager_sdpa_pass():
    """A verify (5 causal rows), a block-causal step and a decode, staged by DecodeGraphs.load_seqs and replayed,
    give the logits of the eager pass that runs one SDPA call per sequence (bf16 tolerance)."""
    from runtime.forward import run_pass
    from runtime.graphs import ROW_BUCKETS, DecodeGraphs

    model = Transformer.random(spec(), seed=5, device="cuda")
    toks = [random_tokens(40, seed=s, vocab=512) for s in range(3)]
    tables = [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    out = []
    for graph in (False, True):
        cache = model.paged_cache(16, 16)
        run_pass(model, cache, [SeqInput(t[:30], 0, b, 0) for t, b in zip(toks, tables)], paged_max_q=0)
        seqs = [SeqInput(toks[0][30:35], 30, tables[0], 5),
                SeqInput(toks[1][30:38], 30, tables[1], 8, attend=[31, 34, 34, 34, 38, 38, 38, 38]),
                SeqInput(toks[2][30:31], 30, tables[2], 1)]
        if graph:
            graphs = DecodeGraphs(model, cache, max_context=48, buckets=ROW_BUCKETS, capture=False)
            out.append(graphs.replay_logits(*graphs.load_seqs(seqs)).clone())
            assert list(graphs.graphs) == [16]
        else:
            out.append(run_pass(model, cache, seqs, paged_max_q=0))
    assert out[0].shape == (14, 512) and not out[1].isnan().any()
    torch.testing.assert_close(out[1], out[0], atol=2e-2, rtol=2e-2)
