"""Per-pass cost model: FLOPs, bytes, time and the binding roof of every operator of one forward pass (DESIGN §3).

time(op) = kernels * kernel_overhead + max(flops / (peak_flops * eta_c(flops)), bytes / (peak_bw * eta_m(bytes)))

with eta_c and eta_m the profile's efficiency curves (sim/hardware.py). Operators that repeat in every layer are
priced once and multiplied by the layer count. Weights are read once per pass whatever its batch; KV reads grow with
the attended positions; the LM head runs only on the rows whose logits are needed, but its weights are read in full.

Two entry points:
- `pass_cost(ctx, shape)` returns the whole breakdown (`PassCost`), for tables and reports;
- `CostModel.pass_time(shape)` returns the four numbers the engine needs, memoizing the linear operators by
  (tokens, logit rows), which repeat across iterations, and adding attention (which depends on every context
  length) with a handful of float operations. It is called hundreds of thousands of times per simulation.

Tensor parallelism (degree t, Megatron-style) splits heads and MLP width: FLOPs and weight bytes per GPU divide by t,
and each layer adds two all-reduces of Q*d activations, each 2(t-1)/t * bytes / link_bw + 2(t-1) * link_latency
(ring all-reduce, Patarasuk & Yuan 2009).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from sim.hardware import Curve, HardwareProfile
from sim.model import ModelSpec
from sim.paged_launch import PagedLaunch, paged_launch, split_walk
from sim.passes import NO_SPANS, PassShape
from sim.runtime_layout import (FUSED_OPS, GRAPH_LOGITS_EVERY_ROW, GRAPH_MAX_ROWS, PAGED_MAX_Q,  # noqa: F401
                                RUNTIME_TRITON_MAX_ROWS, graph_bucket, rows_per_kv_read)
from sim.units import BYTES_PER_ELEMENT


@dataclass(frozen=True, slots=True)
class Op:
    """One operator of a pass, before pricing: work per occurrence and how many times it occurs."""

    name: str
    count: int  # occurrences per pass (e.g. once per layer)
    kernels: int  # kernel launches per occurrence
    flops: float
    bytes: float  # fewest bytes moved through HBM per occurrence (weights + activations + KV)
    family: str  # "linear" | "gemv" (a one-row product) | "attention" | "paged_attention" | "elementwise" | "comm"
    weight_bytes: float = 0.0
    comm_s: float = 0.0  # interconnect time per occurrence (all-reduce)
    dims: tuple[float, float] | None = None  # (outputs, inputs) of a dense projection's weight, for
    #                                          Efficiency.projection_factor (None: curves alone, e.g. MoE experts)
    rows: float = 0.0  # rows of that projection
    launch: PagedLaunch | None = None  # the paged kernel's programs (family "paged_attention")


@dataclass(frozen=True, slots=True)
class OpCost:
    name: str
    count: int
    flops: float  # totals over all occurrences
    bytes: float
    time_s: float
    compute_s: float
    memory_s: float
    bound: str  # "memory" | "compute" | "overhead" | "link"

    @property
    def intensity_flop_per_byte(self) -> float:
        return self.flops / self.bytes if self.bytes else float("inf")


@dataclass(frozen=True)
class PassCost:
    """Every operator's cost and the totals of one pass."""

    ops: tuple[OpCost, ...]
    shape: PassShape
    time_s: float = field(init=False)
    flops: float = field(init=False)
    bytes: float = field(init=False)
    memory_bound_s: float = field(init=False)  # in operators bound by memory or by their fixed per-kernel time
    host_launch_s: float = field(init=False)  # an eager pass's wait for the host to issue its kernels

    def __post_init__(self) -> None:
        object.__setattr__(self, "time_s", sum(o.time_s for o in self.ops))
        object.__setattr__(self, "flops", sum(o.flops for o in self.ops))
        object.__setattr__(self, "bytes", sum(o.bytes for o in self.ops))
        memory = [o for o in self.ops if o.bound in ("memory", "overhead") and o.name != "host_launch"]
        object.__setattr__(self, "memory_bound_s", sum(o.time_s for o in memory))
        object.__setattr__(self, "host_launch_s", sum(o.time_s for o in self.ops if o.name == "host_launch"))

    @property
    def achieved_flops_per_s(self) -> float:
        return self.flops / self.time_s if self.time_s else 0.0

    @property
    def achieved_bytes_per_s(self) -> float:
        return self.bytes / self.time_s if self.time_s else 0.0

    @property
    def intensity_flop_per_byte(self) -> float:
        return self.flops / self.bytes if self.bytes else float("inf")

    @property
    def bound(self) -> str:
        """The roof that holds most of this pass's time (the host, where issuing its kernels does)."""
        if self.host_launch_s >= self.time_s / 2:
            return "host"
        return "memory" if self.memory_bound_s >= self.time_s / 2 else "compute"


@dataclass(frozen=True)
class CostContext:
    """Everything a pass's price depends on besides its shape."""

    model: ModelSpec
    hardware: HardwareProfile
    weights: str = "bf16"
    kv: str = "bf16"
    activations: str = "bf16"
    tp: int = 1
    layers: int | None = None  # layers on this GPU group (pipeline stage); default all
    lm_head: bool = True  # whether this stage runs the LM head and sampling
    # how passes are issued: "paged" = passes of at most GRAPH_MAX_ROWS tokens replay a CUDA graph, larger ones are
    # launched eagerly from the host (memwall's runtime); "decode" =
    # only decode passes (one token per sequence) replay a graph (vLLM's default); "all" / "none": every pass
    graphs: str = "paged"
    # memwall's runtime folds RMSNorm, RoPE and SwiGLU into its Triton projections (runtime/kernels/linear.py) for
    # passes of at most RUNTIME_TRITON_MAX_ROWS tokens of a dense model: those passes have no such kernels of their
    # own. False prices them as separate kernels at every size (vLLM's layout).
    fused_epilogues: bool = True
    # "row_groups": the attention of paged rows reads a sequence's K/V once per group of rows_per_kv_read rows
    # (memwall's runtime); "sequence": once per sequence (kernels that tile whole spans, the ideal)
    attention_reads: str = "row_groups"

    def fused(self, tokens: int) -> bool:
        """Whether a pass of `tokens` rows has its elementwise operators fused into its projections."""
        return self.fused_epilogues and tokens <= RUNTIME_TRITON_MAX_ROWS and not self.model.is_moe

    def eager(self, shape: PassShape) -> bool:
        """Whether the host launches this pass's kernels one by one (no CUDA graph)."""
        if self.graphs == "all":
            return False
        if self.graphs == "paged":
            return shape.tokens > GRAPH_MAX_ROWS
        return self.graphs == "none" or shape.tokens != shape.seqs

    def paged_kernel(self, shape: PassShape) -> bool:
        """Whether the pass's attention runs memwall's paged kernel (runtime/kernels/paged_attention.py), priced on
        the paged_attention curves: every row of a graph-replayed pass, and an eager pass whose spans are paged rows
        (at most PAGED_MAX_Q per sequence). Eager prompts attend through SDPA, the attention curves' own kernel."""
        if self.attention_reads != "row_groups" or not shape.seqs:
            return False
        if not self.eager(shape):
            return True
        if shape.spans is not None:  # the pass's own spans (a pass mixing both kinds is split: attention_parts)
            return shape.spans[0] < shape.tokens
        return shape.tokens <= PAGED_MAX_Q * shape.seqs  # totals alone: by the mean rows per sequence

    def attention_parts(self, shape: PassShape) -> list[tuple[PassShape, bool]]:
        """The pass's attention as (part, runs the paged kernel): one part, or, for an eager pass mixing spans of
        more than PAGED_MAX_Q new tokens (prompt chunks, through SDPA, each K/V read once for many queries) with
        paged rows (decodes), two. Pricing such a pass by its mean rows per sequence made the chunk's rows paged
        rows that re-read their prefix once per group of rows_per_kv_read: 321 GB of K/V for a 1,661-token chunk
        beside 96 decodes of the 8B model, where its parts read 109 GB."""
        paged = self.paged_kernel(shape)
        sp = shape.spans
        if not (paged and self.eager(shape) and sp is not None and 0 < sp[0] < shape.tokens):
            return [(shape, paged)]
        writes = min(sp[0], shape.kv_write_tokens)  # a prompt chunk writes its KV
        long = PassShape(sp[0], 0, sp[1], sp[2], sp[3], writes, shape.attention, sp)
        short = PassShape(shape.tokens - sp[0], 0, shape.seqs - sp[1], shape.kv_read_tokens - sp[2],
                          shape.attn_pairs - sp[3], shape.kv_write_tokens - writes, shape.attention, NO_SPANS)
        return [(short, True), (long, False)]

    def replayed(self, shape: PassShape) -> bool:
        """Whether the pass replays one of memwall's CUDA graphs, so that it runs the graph's padded rows
        (runtime/graphs.py). MoE models run eagerly there (routing cannot be captured), which only this and the
        logit rows know of: `eager` still treats their passes of up to GRAPH_MAX_ROWS tokens as graph-paced (no host
        launch floor), an older simplification."""
        return self.graphs == "paged" and not self.eager(shape) and not self.model.is_moe

    def priced_rows(self, shape: PassShape) -> int:
        """Rows the projections run on: the pass's tokens, or the rows of the graph it replays, which a pass pads
        up to (sim.runtime_layout.graph_bucket: a prompt chunk of 384 rows plus 3 decodes runs the 512-row graph's
        GEMMs, 12.9 ms measured against 11.2 for the 384-row chunk alone, H100, benchmarks/plans/host-diag.yaml).
        Attention is priced on the pass's own rows: a padded row attends one position of a scratch block."""
        return graph_bucket(shape.tokens) if shape.tokens and self.replayed(shape) else shape.tokens

    def priced_logit_rows(self, shape: PassShape) -> int:
        """Rows the LM head runs on: those whose logits the pass wants, or every row of a pass that replays one of
        memwall's CUDA graphs (sim.runtime_layout.GRAPH_LOGITS_EVERY_ROW), padding included."""
        if GRAPH_LOGITS_EVERY_ROW and shape.logit_rows and self.replayed(shape):
            return self.priced_rows(shape)
        return shape.logit_rows

    def walk_priced(self, shape: PassShape, paged: bool | None = None) -> bool:
        """Whether the pass's paged kernel has a measured walk (Efficiency.paged_attention_programs lists its launch
        configuration): then its HBM bytes are each context once and the walk prices the rest; otherwise (an
        unmeasured shape, tensor-parallel heads, a datasheet profile) the row-group bytes on the curves do."""
        progs = self.hardware.efficiency.paged_attention_programs
        paged = self.paged_kernel(shape) if paged is None else paged
        return progs is not None and paged and paged_launch_of(self, shape).config in progs.by_config

    @property
    def num_layers(self) -> int:
        return self.layers if self.layers is not None else self.model.num_layers

    def kv_read_positions(self, shape: PassShape, paged: bool | None = None) -> float:
        """K/V positions (per layer) the pass's attention reads. Paged rows (every row of a graph-replayed pass,
        spans of at most PAGED_MAX_Q tokens of an eager one) read them once per group of rows_per_kv_read rows of
        a sequence, each group up to the largest of its rows' key limits: with r = tokens / seqs rows per
        sequence, ceil(r / group) groups per sequence, each reading about the mean limit per row, attn_pairs /
        tokens. A verify of 5 rows of Llama-3 (groups of 4) reads its context twice, a 32-row block step 8 times;
        a decode (r = 1) reads it once, as before."""
        kv = shape.kv_read_tokens
        if self.attention_reads != "row_groups" or not shape.seqs or shape.tokens <= shape.seqs:
            return kv
        paged = self.paged_kernel(shape) if paged is None else paged  # (`paged`: a part of a pass, given)
        if not paged or self.walk_priced(shape, paged):
            return kv  # SDPA reads each K/V once; or HBM does and the groups' re-reads (L2) are the programs' walk
        rows = shape.tokens / shape.seqs
        groups = -(-rows // rows_per_kv_read(self.model.num_heads, self.model.num_kv_heads))
        return max(kv, shape.attn_pairs / rows * groups)


# -- operators ------------------------------------------------------------------------------------------------------


def experts_touched(num_experts: int, top_k: int, tokens: int) -> float:
    """Expected distinct experts a pass of `tokens` tokens routes to, with uniform top-k routing:
    E * (1 - (1 - k/E)^T) (DESIGN §3)."""
    if num_experts <= 1:
        return 1.0
    return num_experts * (1.0 - (1.0 - top_k / num_experts) ** tokens)


def linear_ops(ctx: CostContext, tokens: int, logit_rows: int, touched: float | None = None,
               head: bool | None = None) -> list[Op]:
    """Operators whose cost depends only on how many token rows and logit rows the pass has. `touched` (MoE
    experts read) and `head` (whether the LM head runs) default to what `tokens` and `logit_rows` imply."""
    m, t, L = ctx.model, ctx.tp, ctx.num_layers
    wb, ab = BYTES_PER_ELEMENT[ctx.weights], BYTES_PER_ELEMENT[ctx.activations]
    d, Q = m.hidden_size, tokens
    qkv_out = m.q_dim / t + 2 * m.kv_dim_per_gpu(t)  # (KV heads replicated where GPUs outnumber them)
    inter = m.intermediate_size / t
    ops: list[Op] = []

    def linear(name: str, n_in: float, n_out: float, rows: float, count: int, weights: float = 1.0) -> Op:
        # weights: how many weight matrices of this shape are read (experts touched for MoE)
        w = n_in * n_out * wb * weights
        # one row is a GEMV: a kernel of its own that streams the weights (efficiency.gemv_memory)
        return Op(name, count, 1, 2.0 * rows * n_in * n_out, w + rows * (n_in + n_out) * ab,
                  "gemv" if rows == 1 else "linear", w, dims=(n_out, n_in) if weights == 1 else None, rows=rows)

    def elementwise(name: str, elems_rw: float, count: int, flops_per_elem: float = 2.0) -> Op:
        return Op(name, count, 1, flops_per_elem * elems_rw / 2, elems_rw * ab, "elementwise")

    ops.append(Op("embedding", 1, 1, 0.0, 2 * Q * d * ab, "elementwise"))
    ops.append(elementwise("attn_norm", 2 * Q * d, L, 4.0))
    ops.append(linear("qkv_proj", d, qkv_out, Q, L))
    ops.append(elementwise("rope", 2 * Q * (m.q_dim / t + m.kv_dim_per_gpu(t)), L, 3.0))
    ops.append(linear("o_proj", m.q_dim / t, d, Q, L))
    if t > 1:
        ops.extend(_allreduce(ctx, Q * d * ab, 2 * L))
    ops.append(elementwise("mlp_norm", 2 * Q * d, L, 4.0))
    if m.is_moe:
        ops.append(linear("router", d, m.num_experts, Q, L))
        if touched is None:
            touched = experts_touched(m.num_experts, m.experts_per_token, Q)
        rows = Q * m.experts_per_token  # each token runs through k experts
        ops.append(linear("gate_up_proj", d, 2 * inter, rows, L, touched))
        ops.append(elementwise("swiglu", 3 * rows * inter, L, 4.0))
        ops.append(linear("down_proj", inter, d, rows, L, touched))
    else:
        ops.append(linear("gate_up_proj", d, 2 * inter, Q, L))
        ops.append(elementwise("swiglu", 3 * Q * inter, L, 4.0))
        ops.append(linear("down_proj", inter, d, Q, L))
    if head if head is not None else (ctx.lm_head and logit_rows > 0):
        ops.append(elementwise("final_norm", 2 * logit_rows * d, 1, 4.0))
        # the LM head's weights are read in full even for one row; logits are written in fp32 for sampling
        w = d * m.vocab_size / t * wb
        ops.append(
            Op("lm_head", 1, 1, 2.0 * logit_rows * d * m.vocab_size / t,
               w + logit_rows * (d * ab + m.vocab_size / t * 4), "gemv" if logit_rows == 1 else "linear", w,
               dims=(m.vocab_size / t, d), rows=logit_rows)
        )
        ops.append(Op("sampling", 1, 2, 5.0 * logit_rows * m.vocab_size, logit_rows * m.vocab_size * 4, "elementwise"))
    return ops


def attention_ops(ctx: CostContext, shape: PassShape) -> list[Op]:
    """Attention proper: scores and values over the attended pairs, KV read and written (DESIGN §3 formulas); an
    eager pass mixing prompt chunks with paged rows has one operator for each (CostContext.attention_parts)."""
    m, t, L = ctx.model, ctx.tp, ctx.num_layers
    kvb, ab = BYTES_PER_ELEMENT[ctx.kv], BYTES_PER_ELEMENT[ctx.activations]
    kv_per_token_layer = 2 * m.kv_dim_per_gpu(t) * kvb  # K and V of one position in one layer on one GPU
    ops = []
    for part, paged in ctx.attention_parts(shape):
        flops = 4.0 * (m.q_dim / t) * part.attn_pairs
        kv_read = ctx.kv_read_positions(part, paged) * kv_per_token_layer
        kv_write = part.kv_write_tokens * kv_per_token_layer
        io = 2 * part.tokens * (m.q_dim / t) * ab  # queries in, outputs out
        launch = paged_launch_of(ctx, part) if paged else None
        name = "attention" if not ops else "attention_spans"
        ops.append(Op(name, L, launch.kernels if launch else 1, flops, kv_read + kv_write + io,
                      "paged_attention" if paged else "attention", launch=launch))
    return ops


def paged_launch_of(ctx: CostContext, shape: PassShape) -> PagedLaunch:
    """The paged kernel's launch for the pass (per GPU: heads split by tensor parallelism)."""
    m, t = ctx.model, ctx.tp
    return paged_launch(shape.tokens, shape.seqs, shape.attn_pairs, max(1, m.num_heads // t),
                        max(1, m.num_kv_heads // t), m.d_head)


def _allreduce(ctx: CostContext, payload_bytes: float, count: int) -> list[Op]:
    t, hw = ctx.tp, ctx.hardware
    seconds = 2 * (t - 1) / t * payload_bytes / hw.link_bandwidth_bytes_per_s + 2 * (t - 1) * hw.link_latency_s
    return [Op("allreduce", count, 1, payload_bytes / 2, 2 * payload_bytes, "comm", 0.0, seconds)]


# -- pricing ----------------------------------------------------------------------------------------------------------


def _hockney_s(curve: Curve, size: float, peak: float) -> float:
    if size <= 0:
        return 0.0
    if curve.points is not None:
        return float(curve.time_s(size, peak))
    return (size + curve.half_size) / (peak * curve.max_fraction)


def price(op: Op, ctx: CostContext) -> OpCost:
    """Time of `op` on the context's chip: overhead plus the slower of its compute and memory times."""
    hw = ctx.hardware
    eff = hw.efficiency
    paged = op.family == "paged_attention"
    attn = paged or op.family == "attention"
    peak_flops = hw.peak_flops_per_s(ctx.activations) if attn else hw.matmul_flops_per_s(ctx.weights, ctx.activations)
    cmp_curve = eff.paged_attn_compute if paged else eff.attn_compute if attn else eff.compute
    compute = _hockney_s(cmp_curve, op.flops, peak_flops) if op.family in ("linear", "gemv") or attn else 0.0
    mem_curve = (eff.paged_attn_memory if paged else eff.attn_memory if attn else eff.gemv_mem if op.family == "gemv"
                 else eff.memory)
    memory = _hockney_s(mem_curve, op.bytes, hw.hbm_bandwidth_bytes_per_s)
    if op.launch is not None and eff.paged_attention_programs is not None:  # the programs' walk bounds it too
        memory = max(memory, eff.paged_attention_programs.time_s(op.launch.programs, op.launch.positions,
                                                                 op.launch.config))
    overhead = op.kernels * eff.kernel_overhead_s
    if op.family == "comm":
        core, bound = op.comm_s, "link"
    elif compute > memory:
        core, bound = compute, "compute"
    else:
        core, bound = memory, "memory"
    if op.dims is not None:
        core *= eff.projection_factor(*op.dims, op.rows)
    if overhead > core and bound != "link":
        bound = "overhead"
    n = op.count
    return OpCost(op.name, n, op.flops * n, op.bytes * n, (overhead + core) * n, compute * n, memory * n, bound)


def host_launch_s(ctx: CostContext, kernels: float) -> float:
    return kernels * ctx.hardware.launch_overhead_us * 1e-6


def pass_cost(ctx: CostContext, shape: PassShape) -> PassCost:
    """Full breakdown of one pass: every operator's FLOPs, bytes, time and binding roof, plus totals.

    An eagerly launched pass (see CostContext.graphs) cannot finish before the host has issued its kernels: when
    issuing them (kernels x launch_overhead) takes longer than the GPU work, the difference shows as a
    `host_launch` operator bound by "overhead" (the host and the GPU run as a two-stage pipeline)."""
    rows = ctx.priced_rows(shape)
    fused = ctx.fused(rows)
    ops = [op for op in linear_ops(ctx, rows, ctx.priced_logit_rows(shape)) + attention_ops(ctx, shape)
           if op.count > 0 and not (fused and op.name in FUSED_OPS)]
    costs = [price(op, ctx) for op in ops]
    if ctx.eager(shape):
        gpu_s = sum(o.time_s for o in costs)
        launch_s = host_launch_s(ctx, sum(op.kernels * op.count for op in ops))
        if launch_s > gpu_s:
            costs.append(OpCost("host_launch", 1, 0.0, 0.0, launch_s - gpu_s, 0.0, 0.0, "overhead"))
    return PassCost(tuple(costs), shape)


@dataclass(frozen=True, slots=True)
class PassTime:
    """What the engine needs of one pass."""

    time_s: float
    flops: float
    bytes: float
    memory_bound_s: float  # time spent in operators bound by memory (or their fixed per-kernel time)
    host_launch_s: float = 0.0  # time an eager pass waits for the host to issue its kernels (the rest: compute)


HEAD_OPS = ("final_norm", "lm_head", "sampling")


class CostModel:
    """Pricing for the engine's hot loop, equal to `pass_cost` but fast.

    Every linear operator's FLOPs, bytes and link time are affine in (tokens Q, logit rows O, experts touched T),
    so they are evaluated once at four basis points and afterwards priced for any (Q, O) with a few vector
    operations (memoized as well, as pass shapes repeat). Attention is added with a handful of float operations.
    """

    def __init__(self, ctx: CostContext):
        self.ctx = ctx
        self._linear = lru_cache(maxsize=1 << 16)(self._linear_uncached)
        m, t = ctx.model, ctx.tp
        hw, eff = ctx.hardware, ctx.hardware.efficiency
        kvb, ab = BYTES_PER_ELEMENT[ctx.kv], BYTES_PER_ELEMENT[ctx.activations]
        # linear operators: coefficients of (1, Q, O, T) for flops, bytes and link seconds
        basis = [(0, 0, 0.0), (1, 0, 0.0), (0, 1, 0.0), (0, 0, 1.0)]
        evals = [linear_ops(ctx, q, o, touched=t_, head=ctx.lm_head) for q, o, t_ in basis]
        ops0 = evals[0]
        self._names = [op.name for op in ops0]

        def coeffs(attr: str) -> np.ndarray:
            v = np.array([[getattr(op, attr) for op in ops] for ops in evals])  # (4 basis, n ops)
            return np.vstack([v[0], v[1] - v[0], v[2] - v[0], v[3] - v[0]])

        self._F, self._B, self._C = coeffs("flops"), coeffs("bytes"), coeffs("comm_s")
        kinds = ["comm" if op.family == "comm" else "flops" if op.family == "linear" else "bytes" for op in ops0]
        # products that become GEMVs at one token (projections; the LM head at one logit row)
        one = linear_ops(ctx, 1, 1, touched=1.0 if m.is_moe else 0.0, head=ctx.lm_head)
        gemv = [op.family == "gemv" for op in one]
        # weight shapes with measured corrections (Efficiency.projection_factor), per operator
        dims = [op.dims if eff.projection_factors else None for op in ops0]
        self._table = [
            (tuple(self._F[:, i]), tuple(self._B[:, i]), tuple(self._C[:, i]), op.count,
             op.kernels * eff.kernel_overhead_s, op.name in HEAD_OPS, kinds[i], op.name in FUSED_OPS, gemv[i],
             dims[i])
            for i, op in enumerate(ops0)
        ]
        self._eff = eff
        self._peak_w = hw.matmul_flops_per_s(ctx.weights, ctx.activations)
        self._cmp_curve, self._mem_curve, self._gemv_curve = eff.compute, eff.memory, eff.gemv_mem
        self._kernels = sum(op.kernels * op.count for op in ops0 if op.name not in HEAD_OPS)
        self._head_kernels = sum(op.kernels * op.count for op in ops0 if op.name in HEAD_OPS)
        self._fused_kernels = sum(op.kernels * op.count for op in ops0 if op.name in FUSED_OPS - set(HEAD_OPS))
        self._fused_head_kernels = sum(op.kernels * op.count for op in ops0 if op.name in FUSED_OPS & set(HEAD_OPS))
        # attention constants, so that `pass_time` does a few multiplications per call
        self._L = ctx.num_layers
        self._kv_per_tok = 2 * m.kv_dim_per_gpu(t) * kvb
        self._flops_per_pair = 4.0 * m.q_dim / t
        self._io_per_tok = 2 * m.q_dim / t * ab
        self._attn_curves = {False: (eff.attn_compute, eff.attn_memory),
                             True: (eff.paged_attn_compute, eff.paged_attn_memory)}  # by ctx.paged_kernel
        self._bw = hw.hbm_bandwidth_bytes_per_s
        self._peak = hw.peak_flops_per_s(ctx.activations)
        self._overhead = eff.kernel_overhead_s
        self._programs = eff.paged_attention_programs  # the paged kernel's walk (None: roofs alone)

    def _linear_uncached(self, tokens: int, logit_rows: int) -> PassTime:
        # plain floats over ~15 operators: faster than numpy at this size, and called once per new (Q, O). The
        # Hockney times (n + n_1/2) / (peak * max_fraction) are inlined when both curves are formulas.
        m = self.ctx.model
        touched = experts_touched(m.num_experts, m.experts_per_token, tokens) if m.is_moe else 0.0
        head = logit_rows > 0 and self.ctx.lm_head
        cc, mc, gc = self._cmp_curve, self._mem_curve, self._gemv_curve
        inline = cc.points is None and mc.points is None and gc.points is None
        c_half, c_rate = cc.half_size, self._peak_w * cc.max_fraction
        total_s = flops_sum = bytes_sum = mem_s = 0.0
        fused = self.ctx.fused(tokens)
        for row in self._table:
            (f0, f1, f2, f3), (b0, b1, b2, b3), (c0, c1, c2, c3), count, ovh, is_head, kind, fusable, gemv, dims = row
            if (is_head and not head) or (fused and fusable):
                continue
            flops = f0 + f1 * tokens + f2 * logit_rows + f3 * touched
            nbytes = b0 + b1 * tokens + b2 * logit_rows + b3 * touched
            if kind == "comm":
                core, memory_bound = c0 + c1 * tokens + c2 * logit_rows + c3 * touched, False
            else:
                one_row = gemv and (logit_rows if is_head else tokens) == 1
                curve = gc if one_row else mc
                if inline:
                    compute = (flops + c_half) / c_rate if kind == "flops" and flops > 0 else 0.0
                    memory = (nbytes + curve.half_size) / (self._bw * curve.max_fraction) if nbytes > 0 else 0.0
                else:
                    compute = _hockney_s(cc, flops, self._peak_w) if kind == "flops" else 0.0
                    memory = _hockney_s(curve, nbytes, self._bw)
                core = compute if compute > memory else memory
                if dims is not None:
                    core *= self._eff.projection_factor(*dims, logit_rows if is_head else tokens)
                memory_bound = memory >= compute or ovh > core
            t = count * (ovh + core)
            total_s += t
            flops_sum += count * flops
            bytes_sum += count * nbytes
            if memory_bound:
                mem_s += t
        return PassTime(total_s, flops_sum, bytes_sum, mem_s)

    def repeated_times(self, shape: PassShape, steps: int) -> tuple[np.ndarray, ...]:
        """Per-pass (time, flops, bytes, memory-bound time, host-launch time) of `steps` decode passes that repeat
        `shape` with every sequence one position further each pass (sum c and attended pairs grow by `shape.seqs`
        per pass)."""
        if shape.tokens != shape.seqs:  # (decodes read each context once: kv_read_positions is kv_read_tokens)
            raise ValueError("repeated_times prices decode passes (one token per sequence)")
        lin = self._linear(self.ctx.priced_rows(shape), self.ctx.priced_logit_rows(shape))
        grow = np.arange(steps, dtype=float) * shape.seqs
        pairs = shape.attn_pairs + grow
        flops = self._flops_per_pair * pairs
        nbytes = (shape.kv_read_tokens + grow + shape.kv_write_tokens) * self._kv_per_tok + shape.tokens * self._io_per_tok
        paged = self.ctx.paged_kernel(shape)
        attn_cmp, attn_mem = self._attn_curves[paged]
        compute = attn_cmp.time_s(flops, self._peak)
        memory = attn_mem.time_s(nbytes, self._bw)
        la = paged_launch_of(self.ctx, shape) if paged else None
        if la is not None and self._programs is not None and la.config in self._programs.by_config:
            working, per = split_walk(pairs / shape.tokens, la.splits, la.block_t)  # contexts grow by one a pass
            memory = np.maximum(memory, self._programs.by_config[la.config].time_s(la.lanes * working, per))
        core = np.maximum(compute, memory)
        overhead = self._overhead * (la.kernels if la is not None else 1)
        attn_s = (overhead + core) * self._L
        mem_s = np.where((memory >= compute) | (overhead > core), attn_s, 0.0)
        time_s, mem_s = lin.time_s + attn_s, lin.memory_bound_s + mem_s
        host_s = np.zeros_like(time_s)
        if self.ctx.eager(shape):  # as pass_time: the host issuing kernels one by one may set the pace
            launch_s = host_launch_s(self.ctx, self.kernels(shape))
            host_s = np.maximum(launch_s - time_s, 0.0)
            time_s = np.maximum(time_s, launch_s)
        return time_s, lin.flops + flops * self._L, lin.bytes + nbytes * self._L, mem_s, host_s

    def kernels(self, shape: PassShape) -> int:
        """Kernels the cost model counts for one pass (what an eager pass's host issues; the `launch` microbenchmark
        divides a measured eager pass by this count to get launch_overhead_us)."""
        head = shape.logit_rows and self.ctx.lm_head
        attention = sum(paged_launch_of(self.ctx, part).kernels if paged else 1  # (a split launch: + the merge)
                        for part, paged in self.ctx.attention_parts(shape))
        kernels = self._kernels + self._L * attention + (self._head_kernels if head else 0)
        if self.ctx.fused(self.ctx.priced_rows(shape)):
            kernels -= self._fused_kernels + (self._fused_head_kernels if head else 0)
        return kernels

    def _attention(self, part: PassShape, paged: bool) -> tuple[float, float, float, float]:
        """(FLOPs, bytes per layer; seconds, memory-bound seconds over all layers) of one part of a pass's
        attention (CostContext.attention_parts), as attention_ops prices it."""
        flops = self._flops_per_pair * part.attn_pairs
        nbytes = ((self.ctx.kv_read_positions(part, paged) + part.kv_write_tokens) * self._kv_per_tok
                  + part.tokens * self._io_per_tok)
        attn_cmp, attn_mem = self._attn_curves[paged]
        compute = _hockney_s(attn_cmp, flops, self._peak)
        memory = _hockney_s(attn_mem, nbytes, self._bw)
        overhead = self._overhead
        if paged:
            la = paged_launch_of(self.ctx, part)
            overhead *= la.kernels
            if self._programs is not None:
                walk = self._programs.time_s(la.programs, la.positions, la.config)
                memory = walk if walk > memory else memory
        core = compute if compute > memory else memory
        attn_s = (overhead + core) * self._L
        return flops, nbytes, attn_s, attn_s if memory >= compute or overhead > core else 0.0

    def pass_time(self, shape: PassShape) -> PassTime:
        """Time, FLOPs, bytes and memory-bound time of one pass (equal to `pass_cost` totals)."""
        if shape.tokens == 0:
            return PassTime(0.0, 0.0, 0.0, 0.0)
        lin = self._linear(self.ctx.priced_rows(shape), self.ctx.priced_logit_rows(shape))
        flops = nbytes = attn_s = mem_s = 0.0
        for part, paged in self.ctx.attention_parts(shape):
            f, b, t, m = self._attention(part, paged)
            flops, nbytes, attn_s, mem_s = flops + f, nbytes + b, attn_s + t, mem_s + m
        time_s, mem_s = lin.time_s + attn_s, lin.memory_bound_s + mem_s
        host_s = 0.0
        if self.ctx.eager(shape):  # the host issuing kernels one by one may be the slower pipeline stage
            launch_s = host_launch_s(self.ctx, self.kernels(shape))
            if launch_s > time_s:
                host_s = launch_s - time_s
                time_s = launch_s
        return PassTime(time_s, lin.flops + flops * self._L, lin.bytes + nbytes * self._L, mem_s, host_s)
