import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sim.cost import CostContext, CostModel, attention_ops, experts_touched, linear_ops, pass_cost
from sim.hardware import PagedPrograms, PagedWalk, load_profile
from sim.model import ModelSpec, load_model
from sim.paged_launch import paged_launch
from sim.passes import PassShape, batch_shape, decode_shape, prefill_shape, seq_shape

TINY = ModelSpec(name="tiny", hidden_size=8, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=16,
                 vocab_size=32)
H100 = load_profile("h100-sxm")
H100_CALIBRATED = load_profile("hw_profiles/calibrated/h100-sxm-calibrated.yaml")


def ops_by_name(ops):
    return {o.name: o for o in ops}


def test_tiny_model_linear_counts_by_hand():
    ctx = CostContext(TINY, H100)
    ops = ops_by_name(linear_ops(ctx, tokens=3, logit_rows=1))
    # head_dim 4: q 8 wide, k and v 4 wide each -> QKV is 8 x 16; 2 FLOPs per MAC, 3 rows
    assert ops["qkv_proj"].flops == 2 * 3 * 8 * 16
    assert ops["qkv_proj"].weight_bytes == 8 * 16 * 2
    assert ops["qkv_proj"].bytes == 8 * 16 * 2 + 3 * (8 + 16) * 2  # weights once + activations in and out
    assert ops["qkv_proj"].count == 2  # once per layer
    assert ops["gate_up_proj"].flops == 2 * 3 * 8 * 32
    assert ops["down_proj"].flops == 2 * 3 * 16 * 8
    # LM head: weights read in full for a single logit row; fp32 logits out
    assert ops["lm_head"].flops == 2 * 1 * 8 * 32
    assert ops["lm_head"].bytes == 8 * 32 * 2 + 1 * (8 * 2 + 32 * 4)


def test_tiny_model_attention_by_hand():
    ctx = CostContext(TINY, H100)
    # one sequence: 2 new tokens after 3 cached ones (c = 5), causal: 2*3 + (1+2) = 9 pairs
    shape = seq_shape(q=2, c=5, o=1)
    assert shape.attn_pairs == 9
    (attn,) = attention_ops(ctx, shape)
    assert attn.flops == 4 * 8 * 9  # 4 * q_dim * pairs
    kv_per_token_layer = 2 * 4 * 2  # K and V, 1 head of 4, bf16
    assert attn.bytes == (5 + 2) * kv_per_token_layer + 2 * 2 * 8 * 2  # KV read + written, q in + out


def test_paged_rows_read_kv_once_per_row_group():
    """Llama-3.1-8B (4 query heads per KV head: groups of 4 paged rows per K/V read): a 32-row block step that sees
    1,000 keys per row reads them 8 times; a 5-row verify ending at 1,000 reads twice its mean limit (998 = pairs
    / rows); a decode once; an eager 2,048-token prompt (SDPA) once; and with attention_reads = sequence, once."""
    from sim.passes import PassShape

    ctx = CostContext(load_model("llama-3.1-8b"), H100)
    block = PassShape(32, 32, 1, 1000, 32 * 1000, 32)
    verify_pairs = sum(range(996, 1001))
    verify = PassShape(5, 5, 1, 1000, verify_pairs, 5)
    assert ctx.kv_read_positions(block) == 8 * 1000
    assert ctx.kv_read_positions(verify) == pytest.approx(2 * verify_pairs / 5)
    assert ctx.kv_read_positions(PassShape(8, 8, 8, 8000, 8000, 8)) == 8000
    prompt = seq_shape(q=2048, c=2048, o=1)
    assert ctx.kv_read_positions(prompt) == prompt.kv_read_tokens
    flat = CostContext(load_model("llama-3.1-8b"), H100, attention_reads="sequence")
    assert flat.kv_read_positions(block) == 1000
    assert CostModel(ctx).pass_time(block).bytes > CostModel(flat).pass_time(block).bytes


def test_one_row_products_use_the_gemv_curve():
    """With a GEMV curve half as efficient as the memory curve, a one-token decode's projections and the LM head
    of an eager prefill's single logit row take the GEMV price; a two-token pass's projections do not; the fast
    path agrees with the breakdown."""
    from sim.hardware import Curve

    eff = H100.efficiency
    slow_gemv = H100.model_copy(update={"efficiency": eff.model_copy(update={"gemv_memory": Curve(
        max_fraction=eff.memory.max_fraction / 2, half_size=eff.memory.half_size)})})
    model = load_model("llama-3.1-8b")
    base, gemv = CostContext(model, H100), CostContext(model, slow_gemv)

    def op_s(ctx, shape, name):
        return next(o.time_s for o in pass_cost(ctx, shape).ops if o.name == name)

    one, two, prompt = decode_shape(1, 100), decode_shape(2, 100), seq_shape(q=1200, c=1200, o=1)  # (1,200: eager)
    assert op_s(gemv, one, "qkv_proj") > 1.6 * op_s(base, one, "qkv_proj")
    assert op_s(gemv, two, "qkv_proj") == pytest.approx(op_s(base, two, "qkv_proj"))
    assert op_s(gemv, prompt, "lm_head") > 1.6 * op_s(base, prompt, "lm_head")
    assert op_s(gemv, prompt, "gate_up_proj") == pytest.approx(op_s(base, prompt, "gate_up_proj"))
    for shape in (one, two, prompt):
        assert CostModel(gemv).pass_time(shape).time_s == pytest.approx(pass_cost(gemv, shape).time_s, rel=1e-9)


def test_graph_passes_price_every_rows_logits():
    """A 64-token prompt chunk wanting one logit row replays a graph, whose LM head runs on all 64 rows (as
    memwall's runtime does); the same chunk launched eagerly, or under vLLM's decode-only graphs, runs it on one."""
    model = load_model("llama-3.1-8b")
    chunk = seq_shape(q=64, c=64, o=1)
    ours, eager, vllm = (CostContext(model, H100, graphs=g) for g in ("paged", "none", "decode"))
    head = {name: next(o for o in pass_cost(c, chunk).ops if o.name == "lm_head")
            for name, c in (("ours", ours), ("eager", eager), ("vllm", vllm))}
    assert head["ours"].flops == pytest.approx(64 * head["eager"].flops)
    assert head["vllm"].flops == head["eager"].flops
    assert ours.priced_logit_rows(chunk) == 64 and ours.priced_logit_rows(seq_shape(q=1200, c=1200, o=1)) == 1
    assert CostModel(ours).pass_time(chunk).time_s == pytest.approx(pass_cost(ours, chunk).time_s, rel=1e-9)


def test_bidirectional_attends_everything():
    assert seq_shape(4, 10, 4, "bidirectional").attn_pairs == 40
    assert seq_shape(4, 10, 4, "causal").attn_pairs == 4 * 6 + 10


def test_batch1_decode_between_roofline_and_1_5x():
    m = load_model("llama-3.1-8b")
    ctx = CostContext(m, H100)
    context = 512
    t = pass_cost(ctx, decode_shape(1, context)).time_s
    roofline_s = (m.weight_bytes() + context * m.kv_bytes_per_token()) / H100.hbm_bandwidth_bytes_per_s
    assert roofline_s < t < 1.5 * roofline_s
    assert pass_cost(ctx, decode_shape(1, context)).bound == "memory"


def test_large_prefill_is_compute_bound():
    pc = pass_cost(CostContext(load_model("llama-3.1-8b"), H100), prefill_shape(512, 2048))
    assert pc.bound == "compute"
    assert pc.intensity_flop_per_byte > H100.ridge_point_flop_per_byte()


def test_tensor_parallel_splits_weights_and_adds_allreduce():
    m = load_model("llama-3.1-70b")
    one = ops_by_name(linear_ops(CostContext(m, H100, tp=1), 1, 1))
    four = ops_by_name(linear_ops(CostContext(m, H100, tp=4), 1, 1))
    assert four["gate_up_proj"].weight_bytes == one["gate_up_proj"].weight_bytes / 4
    assert "allreduce" not in one
    ar = four["allreduce"]
    assert ar.count == 2 * 80
    payload = 1 * 8192 * 2
    assert ar.comm_s == pytest.approx(2 * 3 / 4 * payload / H100.link_bandwidth_bytes_per_s + 2 * 3 * 3e-6)


def test_experts_touched():
    assert experts_touched(8, 2, 1) == pytest.approx(2.0)
    assert experts_touched(8, 2, 1000) == pytest.approx(8.0)
    assert experts_touched(1, 1, 50) == 1.0
    m = load_model("mixtral-8x7b")
    one = ops_by_name(linear_ops(CostContext(m, H100), 1, 1))["down_proj"].weight_bytes
    many = ops_by_name(linear_ops(CostContext(m, H100), 512, 1))["down_proj"].weight_bytes
    assert many == pytest.approx(4 * one)  # 2 experts touched by one token, all 8 by 512


def test_quantized_weights_move_fewer_bytes():
    m = load_model("llama-3.1-8b")
    bf16 = pass_cost(CostContext(m, H100, weights="bf16"), decode_shape(1, 100))
    int4 = pass_cost(CostContext(m, H100, weights="int4"), decode_shape(1, 100))
    assert int4.bytes < 0.3 * bf16.bytes
    assert int4.time_s < bf16.time_s


@settings(max_examples=80, deadline=None)
@given(seqs=st.lists(st.tuples(st.integers(1, 300), st.integers(0, 3000)), min_size=1, max_size=12),
       tp=st.sampled_from([1, 2, 8]), model=st.sampled_from(["llama-3.1-8b", "mixtral-8x7b", "smollm2-135m"]),
       graphs=st.sampled_from(["paged", "decode", "none", "all"]), calibrated=st.booleans())
@example(seqs=[(5, 1000)], tp=1, model="llama-3.1-8b", graphs="decode", calibrated=True)  # eager verify, 8 splits
@example(seqs=[(5, 1000)], tp=1, model="smollm2-135m", graphs="none", calibrated=False)
def test_fast_path_equals_breakdown(seqs, tp, model, graphs, calibrated):
    """CostModel.pass_time (memoized, used by the engine) must equal the full per-operator breakdown, eager passes
    through the paged kernel (whose split launch adds a merge kernel for the host to issue) included."""
    ctx = CostContext(load_model(model), H100_CALIBRATED if calibrated else H100, tp=tp, graphs=graphs)
    shape = batch_shape([(q, q + c, 1) for q, c in seqs])
    full, fast = pass_cost(ctx, shape), CostModel(ctx).pass_time(shape)
    assert fast.time_s == pytest.approx(full.time_s, rel=1e-9)
    assert fast.flops == pytest.approx(full.flops, rel=1e-9)
    assert fast.bytes == pytest.approx(full.bytes, rel=1e-9)
    assert fast.memory_bound_s == pytest.approx(full.memory_bound_s, rel=1e-9)
    assert fast.host_launch_s == pytest.approx(full.host_launch_s, rel=1e-9, abs=1e-15)


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(1, 256), context=st.integers(1, 8192))
def test_never_faster_than_the_datasheet_roofline(batch, context):
    m = load_model("llama-3.1-8b")
    pc = pass_cost(CostContext(m, H100), decode_shape(batch, context))
    assert pc.time_s >= pc.bytes / H100.hbm_bandwidth_bytes_per_s
    assert pc.time_s >= pc.flops / H100.peak_flops_per_s("bf16")


def test_graph_passes_price_attention_on_the_paged_kernel_curves():
    """With paged-kernel curves half as fast as the attention curves, a graph-replayed decode and verify take them,
    an eager 2,048-token prompt (SDPA) does not, vLLM-style settings never do, and the fast path agrees."""
    from sim.hardware import Curve

    eff = H100.efficiency
    slow = H100.model_copy(update={"efficiency": eff.model_copy(update={
        "paged_attention_memory": Curve(max_fraction=eff.attn_memory.max_fraction / 2,
                                        half_size=eff.attn_memory.half_size),
        "paged_attention_compute": Curve(max_fraction=eff.attn_compute.max_fraction / 2,
                                         half_size=eff.attn_compute.half_size)})})
    model = load_model("llama-3.1-8b")
    ours, plain = CostContext(model, slow), CostContext(model, H100)
    vllm = CostContext(model, slow, graphs="decode", attention_reads="sequence")

    def attn_s(ctx, shape):
        return next(o.time_s for o in pass_cost(ctx, shape).ops if o.name == "attention")

    decode, verify, prompt = decode_shape(64, 4000), seq_shape(5, 4000, 5), seq_shape(2048, 2048, 1)
    for shape in (decode, verify):
        assert ours.paged_kernel(shape) and attn_s(ours, shape) > 1.6 * attn_s(plain, shape)
        assert not vllm.paged_kernel(shape) and attn_s(vllm, shape) < attn_s(ours, shape)
    assert not ours.paged_kernel(prompt) and attn_s(ours, prompt) == pytest.approx(attn_s(plain, prompt))
    for shape in (decode, verify, prompt):
        assert CostModel(ours).pass_time(shape).time_s == pytest.approx(pass_cost(ours, shape).time_s, rel=1e-9)
    steps = CostModel(ours).repeated_times(decode, 3)[0]
    assert steps[0] == pytest.approx(CostModel(ours).pass_time(decode).time_s, rel=1e-9)


# a profile whose paged kernel has a programs' walk (numbers of the size the H100 fit gives; made up for the test)
WALK = H100.model_copy(update={"efficiency": H100.efficiency.model_copy(update={
    "paged_attention_programs": PagedPrograms(by_config={
        "32x8x128/64x2": PagedWalk(resident=250.0, program_overhead_us=3.0, position_ns=40.0),
        "32x8x128/32x2": PagedWalk(resident=300.0, program_overhead_us=3.5, position_ns=55.0),
        "32x8x128/64x3": PagedWalk(resident=250.0, program_overhead_us=3.0, position_ns=30.0),
        "16x4x128/64x2": PagedWalk(resident=250.0, program_overhead_us=3.0, position_ns=40.0)})})})


def test_paged_launch_counts_programs_and_positions_by_hand():
    """Llama-3.1-8B (32 heads, 8 KV heads, d 128; 4 rows per program). A block step of 32 rows whose last row sees
    576 keys replays the 32-row graph (paged_config.TUNED[32]: 1 split, BLOCK_T 64, 3 stages): 8 groups x 8 KV
    heads = 64 programs, each walking the mean 560.5 keys rounded up to 9 steps of 64 = 576 positions, one kernel.
    One decode at 512 keys (TUNED[1]: 16 splits of BLOCK_T 64): each split's share, 32 keys, rounds up to one step
    of 64, so splits 0-7 cover the context and 8-15 walk nothing: 8 x 8 = 64 programs, and a second kernel merges
    the splits. At 2,048 keys all 16 splits work (128 keys each): 128 programs."""
    block = paged_launch(32, 1, sum(range(545, 577)), 32, 8, 128)
    assert (block.programs, block.positions, block.config, block.kernels) == (64, 576, "32x8x128/64x3", 1)
    one = paged_launch(1, 1, 512, 32, 8, 128)
    assert (one.programs, one.positions, one.config, one.splits, one.kernels) == (64, 64, "32x8x128/64x2", 16, 2)
    long = paged_launch(1, 1, 2048, 32, 8, 128)
    assert (long.programs, long.positions) == (128, 128)


def test_walk_price_by_hand():
    """250 programs at once, 3 us + 40 ns per position: 125 programs of 100 positions take 3 + 4 = 7 us; 1,000
    take 4 rounds of that, 28 us; a configuration never measured adds nothing."""
    walk = WALK.efficiency.paged_attention_programs
    assert walk.time_s(125, 100, "32x8x128/64x2") == pytest.approx(7e-6)
    assert walk.time_s(1000, 100, "32x8x128/64x2") == pytest.approx(28e-6)
    assert walk.time_s(1000, 100, "32x32x128/64x2") == 0.0


def test_walk_bounds_attention_and_bytes_become_unique():
    """With a walk, a 32-row block step reads its context once from HBM (not once per row group) and its
    attention takes the slower of bytes and walk: here the walk, 64 programs x (3 us + 576 x 30 ns) per layer."""
    model = load_model("llama-3.1-8b")
    shape = seq_shape(32, 576, 1)
    walk_ctx, plain = CostContext(model, WALK), CostContext(model, H100)
    assert walk_ctx.kv_read_positions(shape) == 576
    assert plain.kv_read_positions(shape) > 576 * 7
    att = next(o for o in pass_cost(walk_ctx, shape).ops if o.name == "attention")
    per_layer = att.time_s / model.num_layers - WALK.efficiency.kernel_overhead_s
    assert per_layer == pytest.approx(3e-6 + 576 * 30e-9, rel=1e-9)


def test_unmeasured_launch_configurations_keep_row_group_bytes():
    """A walk is priced only for measured launch configurations; any other (here the 1B draft's head dim of 64)
    keeps the row-group bytes on the curves, exactly as a profile without a walk prices it."""
    model = load_model("llama-3.2-1b")
    shape = seq_shape(32, 576, 1)
    walk_ctx, plain = CostContext(model, WALK), CostContext(model, H100)
    assert not walk_ctx.walk_priced(shape)
    assert walk_ctx.kv_read_positions(shape) == plain.kv_read_positions(shape) > 576 * 7
    assert pass_cost(walk_ctx, shape).time_s == pytest.approx(pass_cost(plain, shape).time_s, rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(seqs=st.lists(st.tuples(st.integers(1, 64), st.integers(0, 3000)), min_size=1, max_size=12),
       tp=st.sampled_from([1, 2]))
def test_fast_path_equals_breakdown_with_a_walk(seqs, tp):
    ctx = CostContext(load_model("llama-3.1-8b"), WALK, tp=tp)
    shape = batch_shape([(q, q + c, 1) for q, c in seqs])
    full, fast = pass_cost(ctx, shape), CostModel(ctx).pass_time(shape)
    assert fast.time_s == pytest.approx(full.time_s, rel=1e-9)
    assert fast.memory_bound_s == pytest.approx(full.memory_bound_s, rel=1e-9)
    assert fast.host_launch_s == pytest.approx(full.host_launch_s, rel=1e-9, abs=1e-15)


@given(batch=st.integers(1, 1500), context=st.integers(1, 5000), steps=st.integers(1, 40))
@settings(max_examples=40, deadline=None)
def test_repeated_decodes_price_each_step_as_a_pass(batch, context, steps):
    """The vectorized decode run (the engine's fast path) prices step i as a decode pass i positions further, past
    1,024 sequences too (eager passes, where the host's launch pace may bind)."""
    cm = CostModel(CostContext(load_model("llama-3.1-8b"), WALK))
    times = cm.repeated_times(decode_shape(batch, context), steps)[0]
    for i in (0, steps - 1):
        assert times[i] == pytest.approx(cm.pass_time(decode_shape(batch, context + i)).time_s, rel=1e-9)


def test_graph_passes_price_their_projections_at_the_bucket_rows():
    """A pass replaying one of memwall's CUDA graphs runs the graph's rows (runtime/graphs.py pads up to the next
    bucket): a 384-row prompt chunk plus 3 decodes prices its projections as a 512-row pass and its attention on its
    own rows; a decode batch of 9 runs the 16-row graph; an eager pass (past GRAPH_MAX_ROWS, or graphs = none) is
    priced on its own rows."""
    m = load_model("llama-3.1-8b")
    prof = load_profile("h100-sxm")
    ctx, eager = CostContext(m, prof), CostContext(m, prof, graphs="none")
    mixed = batch_shape([(384, 384, 1)] + [(1, 700, 1)] * 3)
    assert (ctx.priced_rows(mixed), ctx.priced_logit_rows(mixed)) == (512, 512)
    assert (eager.priced_rows(mixed), eager.priced_logit_rows(mixed)) == (387, 4)
    lin = {o.name: o for o in pass_cost(ctx, mixed).ops}
    full = {o.name: o for o in pass_cost(ctx, batch_shape([(512, 512, 1)])).ops}
    own = {o.name: o for o in pass_cost(eager, mixed).ops}  # the same pass on its own 387 rows
    assert lin["gate_up_proj"].flops == full["gate_up_proj"].flops > own["gate_up_proj"].flops
    # attention keeps the pass's own rows (eagerly, as two parts: the prompt chunk through SDPA, decodes paged)
    assert lin["attention"].flops == own["attention"].flops + own["attention_spans"].flops
    assert ctx.priced_rows(decode_shape(9, 300)) == 16 and ctx.priced_rows(decode_shape(16, 300)) == 16
    big = batch_shape([(2048, 2048, 1)])
    assert ctx.priced_rows(big) == 2048
    cm = CostModel(ctx)
    for shape in (mixed, decode_shape(9, 300), big):  # the fast path prices the same rows
        assert cm.pass_time(shape).time_s == pytest.approx(pass_cost(ctx, shape).time_s, rel=1e-9)
    t, *_ = cm.repeated_times(decode_shape(9, 300), 3)
    assert t[0] == pytest.approx(cm.pass_time(decode_shape(9, 300)).time_s, rel=1e-9)


def test_weight_only_quantization_runs_products_at_the_activations_rate():
    """fp8 weights with bf16 activations are dequantized and multiplied in bf16 (the tensor cores take one format):
    a compute-bound prefill is no faster than bf16's, while fp8 x fp8 runs at the fp8 rate."""
    m = load_model("llama-3.1-8b")
    shape = prefill_shape(8, 2048)
    bf16 = pass_cost(CostContext(m, H100, weights="bf16"), shape)
    w8a16 = pass_cost(CostContext(m, H100, weights="fp8", activations="bf16"), shape)
    w8a8 = pass_cost(CostContext(m, H100, weights="fp8", activations="fp8"), shape)
    assert w8a16.time_s == pytest.approx(bf16.time_s, rel=0.02)
    assert w8a8.time_s < 0.7 * bf16.time_s
    assert H100.matmul_flops_per_s("fp8", "bf16") == H100.peak_flops_per_s("bf16")
    assert H100.matmul_flops_per_s("fp8", "fp8") == H100.peak_flops_per_s("fp8")
    for ctx in (CostContext(m, H100, weights="fp8"), CostContext(m, H100, weights="fp8", activations="fp8")):
        assert CostModel(ctx).pass_time(shape).time_s == pytest.approx(pass_cost(ctx, shape).time_s, rel=1e-9)


def test_an_eager_pass_mixing_a_prompt_chunk_with_decodes_prices_each_as_it_runs():
    """The runtime attends an eager pass's spans of more than PAGED_MAX_Q tokens through SDPA and its decodes as
    paged rows; priced by the mean rows per sequence (18 here) the chunk's rows were paged rows re-reading their
    prefix once per group of 4: 321 GB of K/V a pass where the parts read 109 GB."""
    m = load_model("llama-3.1-8b")
    ctx = CostContext(m, H100)
    chunk, decodes = batch_shape([(1661, 5661, 0)]), batch_shape([(1, 8500, 1)] * 96)
    mixed = chunk + decodes
    assert mixed.spans == (1661, 1, 5661, chunk.attn_pairs) and decodes.spans == (0, 0, 0, 0)
    ops = ops_by_name(attention_ops(ctx, mixed))
    alone = ops_by_name(attention_ops(ctx, chunk))["attention"], ops_by_name(attention_ops(ctx, decodes))["attention"]
    assert ops["attention_spans"].family == "attention" and ops["attention"].family == "paged_attention"
    assert ops["attention_spans"].bytes == pytest.approx(alone[0].bytes)
    assert ops["attention"].bytes == pytest.approx(alone[1].bytes)
    assert CostModel(ctx).pass_time(mixed).time_s == pytest.approx(pass_cost(ctx, mixed).time_s, rel=1e-9)
    # the same totals without the spans (a recorded pass) go by the mean rows, as before
    totals = PassShape(mixed.tokens, mixed.logit_rows, mixed.seqs, mixed.kv_read_tokens, mixed.attn_pairs,
                       mixed.kv_write_tokens)
    assert len(attention_ops(ctx, totals)) == 1 and attention_ops(ctx, totals)[0].bytes > 2.5 * ops["attention"].bytes
