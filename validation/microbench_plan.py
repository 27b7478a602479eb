"""What the microbenchmark suite measures (validation/microbench.py runs it): one `Case` per operator shape —
projection GEMMs/GEMVs over the catalog models' shapes and row counts, fp8 GEMMs, attention shapes, streaming
reads/copies and launch costs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from sim.runtime_layout import ROW_BUCKETS, RUNTIME_TRITON_MAX_ROWS

KINDS = ("launch", "host", "allreduce", "stream", "gemm", "attention", "paged", "fp8")
# Powers of two, and every row count a CUDA graph of the runtime replays (sim.runtime_layout.ROW_BUCKETS): cuBLAS
# picks its tiles per row count, so a 320-row product is not the log-interpolation of 256 and 512. Until session 9
# only powers of two were timed, and block-diffusion steps replaying the 320-row graph (a 256-token prompt and one
# 16- or 32-token block) ran 7% slower than priced (median over the grid of 16:54 UTC, reports/h100/
# validation-notes.md). The new rows also weigh in the compute curve's fit and add Triton cases at 96-192 rows
# (data only: the calibration leaves those kernels to the curves); the suite grew from 936 cases to 1,326.
ROWS = tuple(sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, *ROW_BUCKETS}))

# The 8B model's attention (Llama-3.1-8B: 32 query heads, 8 KV heads, head dim 128), the shape the runtime serves.
HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128
KV_BUDGET_BYTES = 8e9  # largest K+V a single attention case may allocate
LAUNCH_KERNELS = 1000  # kernels per launch-cost case


@dataclass(frozen=True)
class Case:
    """One measurement to make: its key, what it computes and its FLOPs and fewest bytes."""

    key: str
    kind: str
    dtype: str
    shape: dict
    flops: float
    bytes: float
    extra: dict = field(default_factory=dict)

    @property
    def weight(self) -> float:
        """Rough seconds this case takes (for the progress bar's ETA): its work at ~600 TFLOP/s or ~2.5 TB/s, times
        the ~20 calls of warm-up and repeats, plus the graph capture."""
        return 20 * max(self.flops / 600e12, self.bytes / 2.5e12) + 0.03


# -- the plan -----------------------------------------------------------------------------------------------------


def projection_shapes() -> dict[tuple[int, int], list[str]]:
    """Every distinct (N out, K in) projection of the catalog models at tp 1: fused QKV, O, fused gate-up, down and
    LM head, with the models that use each (nn.Linear layout: y = x @ W.T, W of shape (N, K))."""
    from sim.model import CATALOG, load_model

    shapes: dict[tuple[int, int], list[str]] = {}
    for name in CATALOG:
        m = load_model(name)
        for op, nk in {"qkv": (m.q_dim + 2 * m.kv_dim, m.hidden_size), "o": (m.hidden_size, m.q_dim),
                       "gate_up": (2 * m.intermediate_size, m.hidden_size),
                       "down": (m.hidden_size, m.intermediate_size), "lm_head": (m.vocab_size, m.hidden_size)}.items():
            shapes.setdefault(nk, []).append(f"{name}:{op}")
    return dict(sorted(shapes.items()))


def _gemm(M: int, N: int, K: int, dtype: str, models: list[str], impl: str = "cublas") -> Case:
    """A projection; impl "triton" times memwall's own GEMV/GEMM kernel (runtime/kernels/linear.py), which the
    runtime runs for up to sim.runtime_layout.RUNTIME_TRITON_MAX_ROWS rows, "cublas" torch.matmul."""
    wb = 1 if dtype == "fp8" else 2
    # fewest bytes: weights and activations read once, output written once (bf16 out for fp8 too)
    nbytes = N * K * wb + M * K * wb + M * N * 2
    suffix = "/triton" if impl == "triton" else ""
    return Case(f"{'fp8' if dtype == 'fp8' else 'gemm'}/{dtype}/M={M}/N={N}/K={K}{suffix}",
                "fp8" if dtype == "fp8" else "gemm", dtype, {"M": M, "N": N, "K": K, "impl": impl}, 2.0 * M * N * K,
                nbytes, {"models": models})


def _attention(mode: str, batch: int, q: int, c: int, heads=HEADS, kv_heads=KV_HEADS, d=HEAD_DIM) -> Case:
    # causal prefill: q == c, flash skips the masked upper triangle, so pairs = c(c+1)/2 (as sim.passes counts);
    # decode, verify and bidirectional run unmasked: every query sees all c keys (a verify's q x q triangle is under
    # 0.1% of its pairs at the contexts measured, so it is timed unmasked rather than with a lower-right mask)
    pairs = c * (c + 1) // 2 if mode == "prefill" else q * c
    flops = 4.0 * batch * heads * d * pairs  # QK^T and PV, 2 FLOPs per multiply-add (DESIGN §3)
    nbytes = batch * 2 * (2 * q * heads * d + 2 * c * kv_heads * d)  # Q in, O out, K and V read once (bf16)
    return Case(f"attention/{mode}/B={batch}/q={q}/c={c}", "attention", "bf16",
                {"mode": mode, "batch": batch, "q": q, "c": c, "heads": heads, "kv_heads": kv_heads, "head_dim": d},
                flops, nbytes, {"pairs_per_seq": pairs})


def _host(strategy: str, batch: int, prompt: int, output: int, model: str, **extra) -> Case:
    """A `host` case (validation/microbench_host.py run_host): its key names everything that shapes the loop."""
    tail = "".join(f"/{k}={v}" for k, v in sorted(extra.items()) if k != "runs")
    return Case(f"host/{strategy}/B={batch}/P={prompt}/O={output}{tail}/{model}", "host", "bf16",
                {"strategy": strategy, "batch": batch, "prompt": prompt, "output": output, "model": model, **extra},
                0.0, 0.0)


def _paged(seqs: int, rows: int, context: int, model: str = "llama-3.1-8b", causal: bool = True) -> Case:
    """memwall's paged attention kernel over `seqs` sequences of `rows` paged rows each (causal: the last row sees
    `context` positions; bidirectional, as LLaDA's diffusion steps: every row sees them all), launched as a CUDA
    graph bucket launches it (microbench.py `_run_paged`), for catalog model `model`'s attention shape. FLOPs and
    bytes are those the cost model gives the pass's attention (sim.cost.attention_ops); the calibration recomputes
    what it fits from the shape (validation/calibrate.py)."""
    from sim.cost import CostContext, attention_ops
    from sim.hardware import load_profile
    from sim.model import load_model
    from sim.passes import PassShape

    spec = load_model(model)
    n = seqs * rows
    pairs = seqs * (rows * context if not causal else sum(context - rows + i + 1 for i in range(rows)))
    op = attention_ops(CostContext(spec, load_profile("h100-sxm")),
                       PassShape(n, n, seqs, seqs * context, pairs, n, "causal" if causal else "bidirectional"))[0]
    mode = "decode" if rows == 1 else "verify" if rows <= 8 else "block" if rows <= 32 else "chunk"
    tail = ("" if causal else "/bidirectional") + ("" if model == "llama-3.1-8b" else f"/{model}")
    return Case(f"paged/{mode}/S={seqs}/r={rows}/c={context}{tail}", "paged", "bf16",
                {"mode": mode, "seqs": seqs, "rows": rows, "context": context, "causal": causal, "model": model,
                 "heads": spec.num_heads, "kv_heads": spec.num_kv_heads, "head_dim": spec.d_head},
                op.flops, op.bytes)


def plan(only: Optional[str] = None, tiny: bool = False) -> list[Case]:
    """The cases of the default suite (or of one kind), cheapest kinds first. `tiny` shrinks every size for a CPU
    test of the machinery; its numbers mean nothing."""
    kinds = [only] if only else list(KINDS)
    cases: list[Case] = []
    if "launch" in kinds:
        n = 20 if tiny else LAUNCH_KERNELS
        for mode in ("eager", "graph"):
            # one add on 256 fp32 elements: the smallest real kernel, so the time is the per-kernel floor
            cases.append(Case(f"launch/{mode}/n={n}", "launch", "fp32", {"mode": mode, "kernels": n, "elements": 256},
                              256.0, 2 * 256 * 4.0))
        # the runtime's own eager pass (prompts + decode rows, as continuous batching mixes them) on tiny widths:
        # the host's pace per kernel the cost model counts, which is what launch_overhead_us prices
        for prompts, prompt, decodes in ((1, 64, 2),) if tiny else ((1, 512, 8), (2, 512, 16), (1, 1536, 32)):
            cases.append(Case(f"launch/eager_pass/P={prompts}x{prompt}/D={decodes}/{'tiny' if tiny else '8b'}",
                              "launch", "bf16",
                              {"mode": "eager_pass", "kernels": 0, "prompts": prompts, "prompt": prompt,
                               "decodes": decodes, "layers": 2, "model": "tiny" if tiny else "llama-3.1-8b"},
                              0.0, 0.0))
    if "host" in kinds:
        # the serving loop's host time per forward pass, run as `memwall validate` runs a point (run_host): static
        # batches of the served model (random weights) with batch sizes and prompts of no validation point, few
        # or many rows per sequence (decodes; verifies of 5; block steps of 16 and 32; diffusion steps of 64), and
        # short or long block tables, so that the fit can tell rows, sequences and blocks apart (host_fit.fit_host)
        if tiny:
            cases += [_host("ar", 2, 32, 8, "smollm2-135m", runs=1),
                      _host("speculative", 2, 32, 8, "smollm2-135m", runs=1),
                      _host("block_diffusion", 2, 32, 8, "smollm2-135m", runs=1, block=8, steps=2),
                      _host("ar", 3, 32, 8, "smollm2-135m", runs=1, cont=2)]
        else:
            m8b, llada = "llama-3.1-8b", "llada-8b"
            cases += [_host("ar", b, p, 64, m8b) for b, p in ((2, 512), (16, 128), (16, 768), (48, 384))]
            cases += [_host("speculative", b, p, 64, m8b) for b, p in ((2, 512), (16, 128), (16, 768))]
            # drafts per iteration (k) and a separate draft model: the chained iteration's host time is mostly its
            # boundary, not its passes (runtime/speculative.py), which only iterations of 3 to 7 passes tell apart
            cases += [_host("speculative", 6, 384, 64, m8b, k=2), _host("speculative", 6, 384, 64, m8b, k=6),
                      _host("speculative", 4, 640, 64, m8b, draft="llama-3.2-1b")]
            cases += [_host("block_diffusion", b, p, 64, m8b, block=blk, steps=blk // 4)
                      for b, p, blk in ((2, 512, 16), (16, 128, 16), (4, 768, 32), (16, 384, 32))]
            cases += [_host("diffusion", b, p, 64, llada, steps=16, cache=c, block=32)
                      for b, p, c in ((2, 128, "none"), (4, 384, "prefix"), (4, 128, "dual"))]
            # one large eager prefill (40 prompts of 896 tokens) before a few decodes; and continuous batching (all
            # requests there at once, `cont` = max_batch, 512 tokens per pass), whose passes mix prompt chunks with
            # decodes, verifies and steps, as under Poisson load
            cases += [_host("ar", 40, 896, 16, m8b),
                      _host("ar", 40, 384, 64, m8b, cont=16),
                      _host("speculative", 24, 256, 64, m8b, cont=12),
                      _host("block_diffusion", 24, 256, 64, m8b, cont=12, block=32, steps=8),
                      _host("diffusion", 12, 96, 64, llada, cont=6, steps=16, cache="dual", block=32)]
    if "allreduce" in kinds:
        # across every GPU of the machine (run_suite drops these on a machine with one); validation/allreduce.py
        from validation.allreduce import SIZES_BYTES

        for nbytes in (4096, 1 << 20) if tiny else SIZES_BYTES:
            cases.append(Case(f"allreduce/bytes={nbytes}", "allreduce", "bf16", {"bytes": nbytes}, nbytes / 2,
                              2.0 * nbytes))
    if "stream" in kinds:
        sizes = (2**16, 2**20) if tiny else (65536, 262144, *(int(s) for s in (1e6, 4e6, 16e6, 64e6, 256e6, 1e9, 4e9)))
        for op in ("read", "copy"):
            for nbytes in sizes:  # bytes of the tensor (bf16)
                moved = nbytes if op == "read" else 2 * nbytes  # a copy reads and writes every byte
                cases.append(Case(f"stream/{op}/bytes={nbytes}", "stream", "bf16", {"op": op, "tensor_bytes": nbytes},
                                  nbytes / 2 if op == "read" else 0.0, moved))
    if "gemm" in kinds:
        shapes = {(64, 32): ["tiny"], (96, 64): ["tiny"]} if tiny else projection_shapes()
        rows = (1, 4, 16) if tiny else ROWS
        for (N, K), models in shapes.items():
            cases.extend(_gemm(M, N, K, "bf16", models) for M in rows)
            # the runtime's own kernels, up to 4x the rows it uses them for (data for choosing that limit too)
            if not tiny:  # (a CPU has no Triton)
                cases.extend(_gemm(M, N, K, "bf16", models, "triton") for M in rows if M <= 4 * RUNTIME_TRITON_MAX_ROWS)
    if "attention" in kinds:
        if tiny:
            cases += [_attention("prefill", 1, 32, 32, 4, 2, 16), _attention("decode", 2, 1, 64, 4, 2, 16)]
        else:
            def kv_bytes(b, c):  # K and V of b sequences of c positions, bf16
                return b * c * 2 * KV_HEADS * HEAD_DIM * 2

            cases += [_attention("prefill", b, c, c) for c in (128, 256, 512, 1024, 2048, 4096, 8192, 16384)
                      for b in (1, 8) if b * c <= 32768]
            cases += [_attention("decode", b, 1, c) for c in (128, 512, 1024, 2048, 4096, 8192, 16384, 32768)
                      for b in (1, 4, 16, 64, 256) if kv_bytes(b, c) <= KV_BUDGET_BYTES]
            cases += [_attention("verify", b, q, c) for q in (4, 8) for c in (512, 2048, 8192)  # k = 3 and 7
                      for b in (1, 16, 64)]
            cases += [_attention("bidirectional", b, c, c) for c in (256, 512, 1024, 2048, 4096) for b in (1, 4)]
            # a block-diffusion step: a 32-token block against a cached prefix
            cases += [_attention("block", b, 32, c) for c in (1024, 4096) for b in (1, 16)]
    if "paged" in kinds and not tiny:  # (Triton on a GPU only)
        # decodes, verifies of k + 1 rows, block steps and prefill chunks as the graphs run them (<= 1,024 rows)
        cases += [_paged(s, 1, c) for s in (1, 8, 32, 128) for c in (512, 2048, 8192)]
        cases += [_paged(s, r, c) for r in (3, 5, 8) for s in (1, 8, 32) for c in (512, 2048)]
        cases += [_paged(s, r, c) for r in (16, 32) for s in (1, 8, 32) for c in (512, 2048)]
        cases += [_paged(s, 128, c) for s in (1, 4) for c in (256, 1024)]
        # the mixes of continuous batching's small graphs: a few block steps or verifies, decodes of a big bucket
        cases += [_paged(s, r, c) for s, r in ((2, 32), (4, 32), (2, 16), (4, 5), (16, 5)) for c in (512, 1024)]
        cases += [_paged(s, 1, 1024) for s in (64, 256, 512)]
        # decodes of the buckets between (2-16 sequences: 16 runs 8 splits of its own configuration), at the
        # contexts of continuous batching
        cases += [_paged(s, 1, c) for s in (2, 4, 16) for c in (256, 640, 1024)]
        # LLaDA's diffusion steps (multi-head attention: 16 rows per K/V read), bidirectional: dual-cache steps of
        # one 32-position block, refreshes and prefix-cache steps of a whole response
        cases += [_paged(s, r, c, "llada-8b", causal=False) for s, r, c in
                  ((1, 32, 256), (2, 32, 256), (4, 32, 256), (8, 32, 256), (1, 32, 1024), (8, 32, 1024),
                   (1, 128, 640), (4, 128, 640), (1, 256, 256), (2, 256, 256), (4, 256, 256), (1, 64, 1152))]
        # the 1B draft's decodes (head_dim 64: launch configurations of its own, paged_config.default_config)
        cases += [_paged(s, 1, c, "llama-3.2-1b") for s in (1, 8, 32) for c in (512, 1024)]
    if "fp8" in kinds and not tiny:
        # torch._scaled_mm wants every dimension a multiple of 16; the 8B model's four projections
        for (N, K), models in projection_shapes().items():
            if any(m.startswith("llama-3.1-8b:") and not m.endswith("lm_head") for m in models):
                cases.extend(_gemm(M, N, K, "fp8", models) for M in (16, 64, 256, 1024, 4096, 16384))
    return cases
