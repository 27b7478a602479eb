"""The Triton kernels against float32 torch references on the same inputs.

On a CUDA machine they run compiled in bf16 (marked gpu); without CUDA they run under Triton's interpreter
(TRITON_INTERPRET=1, float32 numpy), which checks the index arithmetic and masks but not the compiler. Skipped
where Triton is not installed (the CPU CI installs only the runtime extra's packages)."""

import os

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the first import of the kernels
pytest.importorskip("triton", reason="Triton is not installed")

from rt_helpers import random_tokens, tiny_spec  # noqa: E402
from runtime import ops  # noqa: E402
from runtime.forward import SeqInput, build_meta, forward  # noqa: E402
from runtime.kernels import linear as L  # noqa: E402
from runtime.kernels import paged_attention as PA  # noqa: E402
from runtime.model import Transformer  # noqa: E402
from runtime.rope import apply_rope  # noqa: E402

DEV = "cuda" if CUDA else "cpu"
DT = torch.bfloat16 if CUDA else torch.float32
TOL = 1e-2 if CUDA else 1e-5  # bf16 outputs round at 2^-9 relative
pytestmark = pytest.mark.gpu if CUDA else []


def rel(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def rnd(*shape, scale=1.0):
    return (torch.randn(*shape, device=DEV) * scale).to(DT)


GEMM_CFGS = [None, dict(BM=16, BN=16, BK=32, num_warps=4, num_stages=2)]
if CUDA:  # the configs that gave wrong answers before the RMSNorm scale moved to its own kernel
    GEMM_CFGS += [dict(BM=64, BN=64, BK=128, num_warps=4, num_stages=4), dict(BM=64, BN=64, BK=64, num_warps=4,
                                                                              num_stages=5)]


@pytest.mark.parametrize("m", [1, 5, 64])
@pytest.mark.parametrize("cfg_i", range(len(GEMM_CFGS)))
def test_linear_epilogues(m, cfg_i):
    if m == 1 and cfg_i:
        pytest.skip("one row runs the GEMV kernel, which takes no GEMM config")
    torch.manual_seed(m)
    cfg = GEMM_CFGS[cfg_i] if m > 1 else None
    K, N = (512, 384) if CUDA else (96, 64)
    x, w, eps = rnd(m, K), rnd(N, K, scale=K ** -0.5), 1e-5
    xf, wf = x.float(), w.float()
    rs = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    assert rel(L.linear(x, w, norm_eps=eps, out_dtype=torch.float32, config=cfg), (xf @ wf.T) * rs) < TOL
    h = rnd(m, N)
    want = h.float() + xf @ wf.T
    assert rel(L.linear(x, w, epi=L.EPI_RESIDUAL, out=h, config=cfg), want) < TOL
    g, u = ((xf @ wf.T) * rs).chunk(2, -1)
    assert rel(L.linear(x, w, epi=L.EPI_SWIGLU, norm_eps=eps, config=cfg), torch.nn.functional.silu(g) * u) < TOL


@pytest.mark.parametrize("m", [1, 5, 64])
@pytest.mark.parametrize("cfg_i", range(len(GEMM_CFGS)))
def test_linear_qkv_rope_writes_cache(m, cfg_i):
    if m == 1 and cfg_i:
        pytest.skip("one row runs the GEMV kernel, which takes no GEMM config")
    torch.manual_seed(10 + m)
    cfg = GEMM_CFGS[cfg_i] if m > 1 else None
    H, KVH, D, K, P, NB, BT = (8, 2, 64, 256, 512, 40, 16) if CUDA else (4, 2, 16, 64, 64, 20, 4)
    x, w, bias = rnd(m, K), rnd((H + 2 * KVH) * D, K, scale=K ** -0.5), rnd((H + 2 * KVH) * D)
    ang = torch.arange(P, dtype=torch.float64)[:, None] * torch.rand(D // 2, dtype=torch.float64)[None]
    cos, sin = ang.cos().float().to(DEV), ang.sin().float().to(DEV)
    kc = torch.full((NB, BT, KVH, D), float("nan"), device=DEV, dtype=DT)
    vc = kc.clone()
    pos = torch.randint(0, P, (m,), device=DEV)
    slots = torch.randperm(NB * BT, device=DEV)[:m]
    q = L.linear(x, w, epi=L.EPI_ROPE_QKV, norm_eps=1e-5, bias=bias, config=cfg,
                 rope=dict(cos=cos, sin=sin, positions=pos, slots=slots, k_cache=kc, v_cache=vc, n_q_heads=H,
                           n_kv_heads=KVH))
    ref = (x.float() @ w.float().T) * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-5) + bias.float()
    qr, kr, vr = ref.split([H * D, KVH * D, KVH * D], -1)
    assert rel(q.view(m, H, D), apply_rope(qr.view(m, H, D), cos[pos], sin[pos])) < TOL
    assert rel(kc.view(-1, KVH, D)[slots], apply_rope(kr.view(m, KVH, D), cos[pos], sin[pos])) < TOL
    assert rel(vc.view(-1, KVH, D)[slots], vr.view(m, KVH, D)) < TOL
    written = torch.zeros(NB * BT, dtype=torch.bool, device=DEV)
    written[slots] = True
    assert kc.view(NB * BT, -1)[~written].isnan().all()  # nothing else was touched


@pytest.mark.parametrize("splits", [1, 4, 16])
def test_paged_decode_reads_only_its_context(splits):
    """Unwritten slots hold NaN, as a fresh cache does: any read past a sequence's context would show."""
    torch.manual_seed(splits)
    B, H, KVH, D, NB, BT = 4, 8, 2, 64, 48, 16
    lens = [1, 17, 65, 130]
    kc = torch.full((NB, BT, KVH, D), float("nan"), device=DEV, dtype=DT)
    vc = kc.clone()
    perm = torch.randperm(NB).tolist()
    tables, start = [], 0
    for c in lens:
        n = -(-c // BT) + 1  # one spare block in each table, never written
        tables.append(perm[start:start + n])
        start += n
        for p in range(c):
            kc[tables[-1][p // BT], p % BT] = rnd(KVH, D)
            vc[tables[-1][p // BT], p % BT] = rnd(KVH, D)
    width = max(map(len, tables))
    bt = torch.tensor([t + [NB - 1] * (width - len(t)) for t in tables], device=DEV, dtype=torch.int32)
    q = rnd(B, H, D)
    out = PA.paged_decode(q, kc, vc, bt, torch.tensor(lens, device=DEV, dtype=torch.int32), D ** -0.5,
                          config=dict(splits=splits, block_t=32 if CUDA else 16, num_warps=4, num_stages=2))
    for b, c in enumerate(lens):
        sl = torch.tensor([tables[b][p // BT] * BT + p % BT for p in range(c)], device=DEV)
        k = kc.view(-1, KVH, D)[sl].float().repeat_interleave(H // KVH, 1)
        v = vc.view(-1, KVH, D)[sl].float().repeat_interleave(H // KVH, 1)
        att = torch.einsum("hd,chd->hc", q[b].float(), k) * D ** -0.5
        want = torch.einsum("hc,chd->hd", att.softmax(-1), v)
        assert rel(out[b], want) < TOL, (b, c)


@pytest.mark.parametrize("heads,kv_heads,splits", [(8, 2, 1), (8, 2, 4), (4, 4, 1), (4, 4, 2)])
def test_grouped_rows_equal_one_row_per_program(heads, kv_heads, splits):
    """Paged rows grouped per sequence (one K/V read serves up to rows_per_group rows, each with its own key count:
    causal verify rows, a block-causal step, a decode) give what one program per row gives."""
    torch.manual_seed(heads + splits)
    D, NB, BT = 32, 40, 8
    kc, vc = rnd(NB, BT, kv_heads, D), rnd(NB, BT, kv_heads, D)
    perm = torch.randperm(NB - 1).tolist()
    spans = [(5, [20 + i for i in range(5)]), (6, [33, 40, 40, 40, 40, 46]), (1, [9]), (9, list(range(30, 39)))]
    rows_lens, tables, seq_rows = [], [], []
    for i, (n, lens) in enumerate(spans):
        t = perm[i * 7:(i + 1) * 7]
        tables += [t] * n
        rows_lens += lens
        seq_rows.append(n)
    B = len(rows_lens)
    bt = torch.tensor(tables, device=DEV, dtype=torch.int32)
    lens = torch.tensor(rows_lens, device=DEV, dtype=torch.int32)
    q = rnd(B, heads, D)
    cfg = dict(splits=splits, block_t=16, num_warps=4, num_stages=2)
    want = PA.paged_decode(q, kc, vc, bt, lens, D ** -0.5, config=cfg)
    qb = PA.rows_per_group(heads, kv_heads)
    groups = torch.tensor(PA.row_groups(seq_rows, qb, size=B), device=DEV, dtype=torch.int64)
    assert qb > 1 and (groups[:, 1] > 1).any()
    got = PA.paged_decode(q, kc, vc, bt, lens, D ** -0.5, config=cfg, groups=groups)
    assert rel(got, want) < TOL


def test_triton_forward_equals_torch_forward():
    """A whole mixed pass (prompt chunks and decodes) through the kernels against the torch path."""
    spec = tiny_spec(qkv_bias=True, hidden_size=128, head_dim=32) if not CUDA else \
        tiny_spec(hidden_size=256, num_heads=8, num_kv_heads=2, intermediate_size=512, num_layers=3)
    model = Transformer.random(spec, seed=2, device=DEV, dtype=DT)
    seqs = [random_tokens(n, seed=n) for n in (9, 21, 4)]
    tables = [[0, 5, 7], [1, 2, 3, 4, 6, 8], [9]]

    def run(fast: bool):
        ops.CONFIG.triton_on_cpu = fast and not CUDA
        ops.CONFIG.triton = fast
        try:
            cache = model.paged_cache(12, 4)
            a = model.run(cache, [SeqInput(s[:-1], 0, t, num_logits=2) for s, t in zip(seqs, tables)])
            meta = build_meta([SeqInput(s[-1:], len(s) - 1, t) for s, t in zip(seqs, tables)], cache, DEV,
                              model.max_positions)
            return a, forward(model, cache, meta)
        finally:
            ops.CONFIG.triton_on_cpu, ops.CONFIG.triton = False, True

    (pa, da), (pb, db) = run(True), run(False)
    assert rel(pa, pb) < 3 * TOL and rel(da, db) < 3 * TOL


def test_prefill_kernels_match_torch():
    """rope_write and silu_mul (the many-row path's elementwise kernels) against apply_rope + cache writes."""
    from runtime.kernels import prefill as PF

    T, H, KVH, D = 37, 4, 2, 32
    qkv = rnd(T, (H + 2 * KVH) * D)
    P = 64
    ang = torch.rand(P, D // 2, device=DEV) * 6
    cos, sin = ang.cos(), ang.sin()
    pos = torch.randint(0, P, (T,), device=DEV)
    slots = torch.randperm(48, device=DEV)[:T]
    kc = torch.full((12, 4, KVH, D), float("nan"), device=DEV, dtype=DT)
    vc = kc.clone()
    q = PF.rope_write(qkv, cos, sin, pos, slots, kc, vc, H, KVH)
    qr, kr, vr = qkv.float().split([H * D, KVH * D, KVH * D], dim=-1)
    want_q = apply_rope(qr.reshape(T, H, D), cos[pos], sin[pos])
    want_k = apply_rope(kr.reshape(T, KVH, D), cos[pos], sin[pos])
    assert rel(q, want_q) < TOL
    assert rel(kc.view(-1, KVH, D)[slots], want_k) < TOL
    assert rel(vc.view(-1, KVH, D)[slots], vr.reshape(T, KVH, D)) < TOL
    gu = rnd(T, 2 * 48)
    g, u = gu.float().chunk(2, dim=-1)
    assert rel(PF.silu_mul(gu), torch.nn.functional.silu(g) * u) < TOL


def test_many_row_path_equals_torch_forward():
    """A pass whose spans exceed triton_max_rows through the fused many-row path against the torch reference."""
    spec = tiny_spec(qkv_bias=True, hidden_size=128, head_dim=32) if not CUDA else \
        tiny_spec(hidden_size=256, num_heads=8, num_kv_heads=2, intermediate_size=512, num_layers=3)
    model = Transformer.random(spec, seed=3, device=DEV, dtype=DT)
    seqs = [random_tokens(n, seed=n) for n in (19, 26)]
    tables = [[0, 5, 7, 10, 11], [1, 2, 3, 4, 6, 8, 9]]

    def run(fast: bool):
        ops.CONFIG.triton_on_cpu = fast and not CUDA
        ops.CONFIG.fast_prefill, ops.CONFIG.triton_max_rows = fast, 8
        try:
            cache = model.paged_cache(12, 4)
            return model.run(cache, [SeqInput(s, 0, t, num_logits=len(s)) for s, t in zip(seqs, tables)])
        finally:
            ops.CONFIG.triton_on_cpu, ops.CONFIG.fast_prefill, ops.CONFIG.triton_max_rows = False, True, 256

    assert rel(run(True), run(False)) < 3 * TOL


def test_confidence_kernel_equals_max_and_logsumexp():
    """One streaming read per row gives torch's max softmax probability and argmax, across chunk edges
    (V = 5,000 is not a multiple of the kernel's 2,048), for peaked and flat rows, and the first column on ties."""
    from runtime.kernels.confidence import confidence

    torch.manual_seed(0)
    x = torch.randn(6, 5000, device=DEV) * 3
    x[1, 4999] = 40.0  # a peak in the masked-tail chunk
    x[2] = 0.0  # flat: every column ties, probability 1 / V
    x[3, 7], x[3, 4100] = 25.0, 25.0  # a tie across chunks: the first column wins
    conf, tok = confidence(x)
    mx, ref_tok = x.max(dim=-1)
    ref_conf = torch.exp(mx - torch.logsumexp(x, dim=-1))
    assert torch.allclose(conf, ref_conf, rtol=1e-4, atol=1e-7)
    assert tok[1].item() == 4999 and tok[2].item() == 0 and tok[3].item() == 7
    assert torch.equal(tok[[0, 4, 5]], ref_tok[[0, 4, 5]])
    assert abs(conf[2].item() - 1 / 5000) < 1e-8


@pytest.mark.skipif(not CUDA, reason="the interpreter compiles nothing")
def test_compile_watch_sees_a_new_variant_and_restores_the_hooks():
    """A kernel variant built inside the watch is counted under its kernel's name; the same call again is cached
    (no event); Triton's hooks are as before afterwards."""
    import triton.knobs as knobs

    from runtime.compile_watch import CompileWatch
    from runtime.kernels.confidence import confidence

    before = (knobs.runtime.jit_cache_hook, knobs.runtime.jit_post_compile_hook)
    x = torch.randn(3, 4099, device=DEV, dtype=torch.float64)  # float64 logits: a variant nothing else builds
    with CompileWatch() as w:
        confidence(x)
        first = w.summary()["count"]
        confidence(x)
    assert first >= 1 and w.summary()["count"] == first
    assert w.summary()["kernels"] == {"_confidence_kernel": first}
    assert (knobs.runtime.jit_cache_hook, knobs.runtime.jit_post_compile_hook) == before
