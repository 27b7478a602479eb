"""The forward pass and its caches (DESIGN §8): cached decode = recompute, paged = contiguous, chunked prefill =
whole prefill, and the model variants (MoE, QKV bias, bidirectional, llama3 RoPE)."""

import math

import pytest
import torch

from rt_helpers import random_tokens, tiny_spec
from runtime.forward import SeqInput, greedy_generate, run_pass
from runtime.model import Transformer
from runtime.rope import inv_frequencies
from sim.errors import UserError

ATOL = 2e-5  # float32; logits have unit scale


def incremental_logits(model, tokens, prefill: int, cache, blocks) -> torch.Tensor:
    """Logits of every position: a prefill of `prefill` tokens, then one decode pass per remaining token."""
    rows = [model.run(cache, [SeqInput(tokens[:prefill], 0, blocks, num_logits=prefill)])]
    for i in range(prefill, len(tokens)):
        rows.append(model.run(cache, [SeqInput(tokens[i:i + 1], i, blocks)]))
    return torch.cat(rows)


def test_cached_decode_equals_full_recompute(tiny):
    tokens = random_tokens(23, seed=0)
    cache = tiny.paged_cache(num_blocks=8, block_tokens=4)
    blocks = [5, 0, 7, 2, 6, 1]  # deliberately out of order: positions 0-3 in block 5, 4-7 in block 0, ...
    got = incremental_logits(tiny, tokens, 9, cache, blocks)
    want = tiny.full_logits(tokens)
    assert got.shape == (23, 256)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_paged_equals_contiguous(tiny):
    tokens = random_tokens(30, seed=1)
    paged = incremental_logits(tiny, tokens, 11, tiny.paged_cache(10, 4), [9, 3, 1, 8, 0, 4, 6, 2])
    contiguous = incremental_logits(tiny, tokens, 11, tiny.contiguous_cache(1, 32), [0])
    torch.testing.assert_close(paged, contiguous, atol=ATOL, rtol=0)


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_chunked_prefill_equals_whole_prefill(tiny, chunk):
    tokens = random_tokens(17, seed=2)
    whole = tiny.full_logits(tokens)
    cache = tiny.paged_cache(5, 4)
    blocks = [4, 2, 0, 3, 1]
    rows = []
    for s in range(0, 17, chunk):
        part = tokens[s:s + chunk]
        rows.append(tiny.run(cache, [SeqInput(part, s, blocks, num_logits=len(part))]))
    torch.testing.assert_close(torch.cat(rows), whole, atol=ATOL, rtol=0)


def test_one_pass_mixes_decodes_and_prefill_chunks(tiny):
    """A pass holding a decode row, a prefill chunk on a cached prefix and a fresh prompt returns, per sequence,
    the logits the sequence gets alone."""
    a, b, c = random_tokens(9, 3), random_tokens(12, 4), random_tokens(5, 5)
    cache = tiny.paged_cache(12, 4)
    ta, tb, tc = [0, 1, 2], [3, 4, 5], [6, 7]
    tiny.run(cache, [SeqInput(a[:8], 0, ta, 0), SeqInput(b[:6], 0, tb, 0)])
    got = tiny.run(cache, [SeqInput(a[8:], 8, ta), SeqInput(b[6:], 6, tb, 6), SeqInput(c, 0, tc, 2)])
    want = torch.cat([tiny.full_logits(a)[-1:], tiny.full_logits(b)[6:], tiny.full_logits(c)[-2:]])
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("variant", [
    dict(num_experts=4, experts_per_token=2),
    dict(qkv_bias=True),
    dict(num_kv_heads=4, rope_scaling=None),  # plain multi-head attention
    dict(num_kv_heads=1, tie_word_embeddings=True, rope_scaling={"rope_type": "linear", "factor": 2.0}),
])
def test_variants_cached_decode_equals_recompute(variant):
    model = Transformer.random(tiny_spec(**variant), seed=3)
    tokens = random_tokens(13, seed=6)
    got = incremental_logits(model, tokens, 5, model.paged_cache(4, 4), [3, 2, 1, 0])
    torch.testing.assert_close(got, model.full_logits(tokens), atol=ATOL, rtol=0)


def test_bidirectional_attention_sees_later_tokens():
    model = Transformer.random(tiny_spec(attention="bidirectional"), seed=4)
    tokens = random_tokens(10, seed=7)
    changed = tokens[:-1] + [(tokens[-1] + 1) % 256]
    first, first_changed = model.full_logits(tokens)[0], model.full_logits(changed)[0]
    assert (first - first_changed).abs().max() > 1e-3  # position 0 attends to the last position
    paged = model.run(model.paged_cache(3, 4), [SeqInput(tokens, 0, [2, 0, 1], num_logits=10)])
    torch.testing.assert_close(paged, model.full_logits(tokens), atol=ATOL, rtol=0)


def test_causal_attention_ignores_later_tokens(tiny):
    tokens = random_tokens(10, seed=7)
    changed = tokens[:-1] + [(tokens[-1] + 1) % 256]
    torch.testing.assert_close(tiny.full_logits(tokens)[:-1], tiny.full_logits(changed)[:-1], atol=ATOL, rtol=0)


def test_llama3_rope_scaling_by_hand():
    """head_dim 16, theta 10000: inv_freq_j = 10000^(-j/8), wavelength 2*pi/inv_freq_j; original context 64,
    low_freq_factor 1, high 4, factor 8. j=0: wavelength 6.3 < 64/4 = 16, kept. j=3: 199 > 64/1, divided by 8;
    j=7: 19,869, divided. j=1 (19.9) and j=2 (62.8) lie between: (1 - s) inv/8 + s inv, s = (64/wavelength - 1)/3,
    i.e. s = 0.740 and 0.00621."""
    inv = inv_frequencies(tiny_spec()).tolist()
    plain = (10000.0 ** (-torch.arange(0, 16, 2, dtype=torch.float64) / 16)).tolist()
    assert inv[0] == pytest.approx(1.0)
    assert inv[3] == pytest.approx(plain[3] / 8)
    assert inv[7] == pytest.approx(plain[7] / 8)
    for j, s in ((1, 0.740), (2, 0.00621)):
        assert (64 / (2 * math.pi / plain[j]) - 1) / 3 == pytest.approx(s, abs=5e-4)
        assert inv[j] == pytest.approx((1 - s) * plain[j] / 8 + s * plain[j], rel=2e-3)


def test_greedy_generate_is_independent_of_chunking(tiny):
    prompt = random_tokens(11, seed=8)
    assert greedy_generate(tiny, prompt, 8) == greedy_generate(tiny, prompt, 8, prefill_chunk=4)


def test_position_past_the_table_is_a_user_error():
    model = Transformer.random(tiny_spec(max_position_embeddings=8), seed=0)
    with pytest.raises(UserError, match="position 8"):
        run_pass(model, model.paged_cache(3, 4), [SeqInput(list(range(9)), 0, [0, 1, 2])])


def test_short_block_table_is_refused(tiny):
    with pytest.raises(ValueError, match="needs 3 blocks"):
        tiny.run(tiny.paged_cache(4, 4), [SeqInput(list(range(9)), 0, [0, 1])])


@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
def test_paged_rows_equal_one_sdpa_call_per_sequence(attention):
    """The paged-row path (one query row per new token with its own key count: what CUDA graphs replay) gives the
    logits of the per-sequence SDPA path for every mask a strategy uses: a verify of 5 tokens on a cached prefix, a
    block-causal step (explicit limits), a bidirectional block that also reads a cached suffix (dual cache), and a
    plain decode row."""
    model = Transformer.random(tiny_spec(attention=attention), seed=7)
    toks = [random_tokens(20, seed=s) for s in range(4)]
    tables = [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14], [15, 16, 17, 18, 19]]
    out = []
    for paged_max_q in (0, 128):
        cache = model.paged_cache(20, 4)
        prefix = [SeqInput(t[:20 if i == 2 else 12], 0, b, 0) for i, (t, b) in enumerate(zip(toks, tables))]
        run_pass(model, cache, prefix, paged_max_q=0)  # sequence 2 also caches the suffix 16..19
        seqs = [SeqInput(toks[0][12:17], 12, tables[0], 5),  # verify: causal over the prefix and itself
                SeqInput(toks[1][12:18], 12, tables[1], 6, attend=[13, 16, 16, 16, 16, 18]),  # block-causal
                SeqInput(toks[2][12:16], 12, tables[2], 4, context=20, attend="full"),  # dual cache
                SeqInput(toks[3][12:13], 12, tables[3], 1)]  # decode
        out.append(run_pass(model, cache, seqs, paged_max_q=paged_max_q))
    assert out[0].shape == (16, 256) and not out[0].isnan().any()
    torch.testing.assert_close(out[1], out[0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
@pytest.mark.parametrize("max_keys", [65536, 20])
def test_same_shape_spans_share_one_sdpa_call(attention, max_keys, monkeypatch):
    """Consecutive sequences whose spans have one shape (a static batch's prompts) attend in one batched SDPA call
    (capped at SPAN_BATCH_MAX_KEYS keys, here also 20 = two prompts of 10), with the logits of one pass per
    sequence; a span of another shape (a chunk on a cached prefix) starts a new call. Spans with explicit key
    limits (block-causal masks) batch when their limits are equal."""
    import runtime.forward as fw

    monkeypatch.setattr(fw, "SPAN_BATCH_MAX_KEYS", max_keys)
    model = Transformer.random(tiny_spec(attention=attention), seed=3)
    toks = [random_tokens(10, seed=s) for s in range(4)]
    tables = [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
    cache = model.paged_cache(12, 4)
    run_pass(model, cache, [SeqInput(toks[3][:4], 0, tables[3], 0)], paged_max_q=0)  # sequence 3's cached prefix
    seqs = [SeqInput(toks[i], 0, tables[i], 10) for i in range(3)] + [SeqInput(toks[3][4:], 4, tables[3], 6)]
    meta = fw.build_meta(seqs, cache, "cpu", model.max_positions, paged_max_q=0)
    assert [(s.row, s.count) for s in meta.prefills] == ([(0, 3), (30, 1)] if max_keys > 20 else
                                                         [(0, 2), (20, 1), (30, 1)])
    together = run_pass(model, cache, seqs, paged_max_q=0)
    alone = torch.cat([run_pass(model, cache, [s], paged_max_q=0) for s in seqs])
    assert together.shape == (36, 256) and not together.isnan().any()
    torch.testing.assert_close(together, alone, atol=ATOL, rtol=0)
    # block-causal prompts: two with the same limits share a call, a third with other limits does not
    lim = [6, 6, 6, 6, 6, 6, 10, 10, 10, 10]
    masked = [SeqInput(toks[i], 0, tables[i], 10, attend=lim) for i in range(2)]
    masked.append(SeqInput(toks[2], 0, tables[2], 10, attend=[p + 1 for p in range(10)]))
    meta = fw.build_meta(masked, cache, "cpu", model.max_positions, paged_max_q=0)
    assert [(s.row, s.count) for s in meta.prefills] == [(0, 2), (20, 1)]  # (2 x 10 keys fit either cap)
    together = run_pass(model, cache, masked, paged_max_q=0)
    alone = torch.cat([run_pass(model, cache, [s], paged_max_q=0) for s in masked])
    torch.testing.assert_close(together, alone, atol=ATOL, rtol=0)


def test_graph_staging_array_by_hand():
    """The inputs a graph of 8 paged rows gets for two sequences (3 verify rows at 5.., 1 decode row at 9) and 4
    padded rows: slots through each sequence's own table, padded rows on the scratch block, row groups per
    sequence (2 rows per group here)."""
    from runtime.graphs import staging_array

    b, w, bt, scratch = 8, 3, 4, 99
    a = staging_array(b, w, bt, scratch, [11, 12, 13, 21], [5, 6, 7, 9], [[7, 2], [4, 0, 5]], [6, 7, 8, 10],
                      [3, 1], qb=2)
    tokens, pos, slots, lens = a[:4 * b].reshape(4, b)
    assert tokens.tolist() == [11, 12, 13, 21, 0, 0, 0, 0]
    assert slots.tolist() == [2 * 4 + 1, 2 * 4 + 2, 2 * 4 + 3, 5 * 4 + 1] + [99 * 4] * 4
    assert lens.tolist() == [6, 7, 8, 10, 1, 1, 1, 1]
    table = a[4 * b:4 * b + b * w].reshape(b, w)
    assert table[:4].tolist() == [[7, 2, 99]] * 3 + [[4, 0, 5]] and (table[4:] == 99).all()
    groups = a[4 * b + b * w:].reshape(b, 2).tolist()
    assert groups == [[0, 2], [2, 1], [3, 1], [4, 1], [5, 1], [6, 1], [7, 1], [0, 0]]
    with pytest.raises(ValueError, match="does not fit its block table"):
        staging_array(b, w, bt, scratch, [1], [8], [[7, 2]], None, None, qb=2)  # position 8 needs a third block
