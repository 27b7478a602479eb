"""Hardware profiles: what a chip can move and compute, how much of it real kernels get, and where each number
came from.

A profile is a YAML file in `hw_profiles/` (or `hw_profiles/hypothetical/`), validated by `HardwareProfile`. Sizes
and rates are written in the datasheet's decimal units with the unit in the key (`hbm_bandwidth_tb_s: 3.35`);
properties give them in base units (`hbm_bandwidth_bytes_per_s`). A what-if chip is a YAML file with `base:` (another
profile's name) and `scale:` (factors on bandwidth, flops, capacity, link), so adding a chip is adding one file.

Efficiency (DESIGN §3): a single roofline constant is wrong by up to 3x on small operators, so each roof has a
curve, the achieved fraction of peak as a function of the operator's size. The curve is Hockney's (r_inf, n_1/2)
model [R. W. Hockney, "The Parallel Computers 2", 1988]: time = (n + n_1/2) / r_inf, i.e. fraction(n) =
max_fraction * n / (n + half_size). It is cheap, has two numbers that a fit can pin down, and is stated relative to
the peak, so a curve fitted on one chip can be carried to another (issue [validation]). A measured table of points
(log-interpolated) may replace it where the shape is not Hockney-like.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import ConfigDict, Field, NonNegativeFloat, ValidationError, model_validator

from sim.errors import UserError, explain_validation_error, unknown_name
from sim.numbers import NumbersNotBools
from sim.units import GB, MB, TB, TFLOPS, US
from sim.yaml_file import read_yaml

# the scenario's strategy kinds (sim.scenario's strategy models), which the host terms per strategy are keyed by
StrategyKind = Literal["ar", "speculative", "diffusion", "block_diffusion"]

PROFILES_DIR = Path(__file__).resolve().parent.parent / "hw_profiles"

ComputeDtype = Literal["fp32", "bf16", "fp16", "fp8", "int8", "fp4"]


class _Frozen(NumbersNotBools):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Curve(_Frozen):
    """Achieved fraction of a peak rate as a function of an operator's size (bytes or FLOPs)."""

    max_fraction: float = Field(gt=0, le=1, description="fraction of peak reached by very large operators")
    half_size: float = Field(ge=0, description="size at which half of max_fraction is reached (Hockney's n_1/2)")
    points: tuple[tuple[float, float], ...] | None = Field(
        default=None, description="optional measured (size, fraction) table; replaces the formula when given"
    )

    @model_validator(mode="after")
    def _points_sorted(self) -> "Curve":
        if self.points is not None:
            if len(self.points) < 2:
                raise ValueError("points needs at least two (size, fraction) pairs")
            sizes = [p[0] for p in self.points]
            if any(b <= a for a, b in zip(sizes, sizes[1:])) or sizes[0] <= 0:
                raise ValueError("points must have positive, strictly increasing sizes")
            if any(not (0 < p[1] <= 1) for p in self.points):
                raise ValueError("points fractions must lie in (0, 1]")
        return self

    def fraction(self, size: float | np.ndarray) -> float | np.ndarray:
        """Achieved fraction of peak for an operator of this size."""
        if self.points is not None:
            xs = np.log([p[0] for p in self.points])
            ys = np.array([p[1] for p in self.points])
            return np.interp(np.log(np.maximum(size, 1e-30)), xs, ys)
        return self.max_fraction * size / (size + self.half_size)

    def time_s(self, size: float | np.ndarray, peak_per_s: float) -> float | np.ndarray:
        """Seconds to process `size` units at `peak_per_s` with this curve's efficiency (0 for size 0)."""
        if self.points is not None:
            size = np.asarray(size, dtype=float)
            safe = np.where(size > 0, size, 1.0)
            return np.where(size > 0, safe / (peak_per_s * self.fraction(safe)), 0.0)
        # (n + n_1/2) / r_inf, written so that a zero-size operator costs nothing
        return np.where(np.asarray(size) > 0, (size + self.half_size) / (peak_per_s * self.max_fraction), 0.0)


class PagedWalk(_Frozen):
    """The walk of one launch configuration's programs: each takes program_overhead_us plus position_ns per context
    position of its share, and a launch with more programs than `resident` takes proportionally longer."""

    resident: float = Field(gt=0, description="programs of this configuration the GPU runs at once")
    program_overhead_us: float = Field(ge=0, description="fixed time of one program (loads, softmax, stores)")
    position_ns: float = Field(ge=0, description="time per context position of one program's walk")

    def time_s(self, programs, positions):
        """Seconds of a launch of `programs` programs walking `positions` each (floats or arrays)."""
        return np.maximum(1.0, programs / self.resident) * (self.program_overhead_us * US
                                                            + positions * self.position_ns * 1e-9)


class PagedPrograms(_Frozen):
    """The walk of memwall's paged attention programs over their contexts (sim/paged_launch.py), per launch
    configuration ('<heads>x<kv heads>x<head dim>/<BLOCK_T>x<stages>', sim.paged_launch.config_key). Fitted to the
    paged-kernel microbenchmarks (validation/paged_fit.py); priced next to the HBM and compute roofs, whichever is
    slowest. A configuration not listed is priced by the roofs alone."""

    by_config: dict[str, PagedWalk] = Field(description="the walk of each measured launch configuration")

    def time_s(self, programs: float, positions: float, config: str) -> float:
        """Seconds of one launch's walk (0 for an unmeasured configuration)."""
        w = self.by_config.get(config)
        return 0.0 if w is None or programs <= 0 else float(w.time_s(programs, positions))


class Efficiency(_Frozen):
    """The curves that turn peak rates into what kernels achieve, per roof and operator family."""

    memory: Curve = Field(description="HBM traffic of weights/activations; size = bytes of the operator")
    compute: Curve = Field(description="matrix products; size = FLOPs of the operator")
    attention_memory: Curve | None = Field(default=None, description="KV reads of attention; defaults to memory")
    attention_compute: Curve | None = Field(default=None, description="attention math; defaults to compute")
    gemv_memory: Curve | None = Field(default=None, description="one-row products (GEMV kernels, e.g. batch-1 "
                                                                "decode projections); defaults to memory")
    paged_attention_memory: Curve | None = Field(
        default=None, description="KV reads of memwall's paged attention kernel (every row of a graph-replayed "
                                  "pass); defaults to attention_memory")
    paged_attention_compute: Curve | None = Field(
        default=None, description="attention math of that kernel; defaults to attention_compute")
    paged_attention_programs: PagedPrograms | None = Field(
        default=None, description="the paged kernel's programs (launch-aware price, with paged_attention_memory "
                                  "on the pass's unique K/V bytes); unset: row-group bytes on the curves alone")
    kernel_overhead_us: float = Field(
        ge=0, description="fixed time per kernel as the runtime issues them (back to back inside a CUDA graph)"
    )
    projection_factors: dict[str, tuple[tuple[float, float], ...]] = Field(
        default_factory=dict,
        description="measured time over the curves' time of the projections of known weight shapes, keyed "
                    "'<outputs>x<inputs>' (projection_key), as (rows, factor) pairs; interpolated in log rows. Shapes "
                    "not listed, and rows outside a shape's measured range, are priced by the curves alone.")
    source: str = Field(description="where these numbers come from: a measurement, or 'assumed' with the reason")

    @model_validator(mode="after")
    def _factors_sorted(self) -> "Efficiency":
        for key, pts in self.projection_factors.items():
            rows = [p[0] for p in pts]
            if not pts or rows[0] < 1 or any(b <= a for a, b in zip(rows, rows[1:])):
                raise ValueError(f"projection_factors[{key}] needs (rows, factor) pairs with rows >= 1, increasing")
            if any(not 0 < p[1] < 10 for p in pts):
                raise ValueError(f"projection_factors[{key}] factors must lie in (0, 10)")
        return self

    def projection_factor(self, n_out: float, n_in: float, rows: float) -> float:
        """Correction of the curves' time for a projection of this weight shape at `rows` rows (1 outside the
        measured shapes and rows).

        A two-parameter curve per roof cannot follow cuBLAS's tile choices across row counts: on the H100 the
        calibrated curves priced the 8B model's projections 6% fast at 256 rows and 6% slow at 512 (reports/h100/
        calibration.json), and a 256-row block step spent 13% more in its GEMMs than predicted
        (benchmarks/pass_breakdown.py). Vidur prices operators from measured tables for the same reason (Agrawal et
        al. 2024); here the table corrects the curves only for shapes that were measured."""
        pts = self.projection_factors.get(projection_key(n_out, n_in))
        if not pts or rows <= 0:
            return 1.0
        return _interp_log_rows(pts, rows)

    @property
    def attn_memory(self) -> Curve:
        return self.attention_memory or self.memory

    @property
    def attn_compute(self) -> Curve:
        return self.attention_compute or self.compute

    @property
    def gemv_mem(self) -> Curve:
        return self.gemv_memory or self.memory

    @property
    def paged_attn_memory(self) -> Curve:
        return self.paged_attention_memory or self.attn_memory

    @property
    def paged_attn_compute(self) -> Curve:
        return self.paged_attention_compute or self.attn_compute

    @property
    def kernel_overhead_s(self) -> float:
        return self.kernel_overhead_us * US


def projection_key(n_out: float, n_in: float) -> str:
    """Key of a weight shape in Efficiency.projection_factors: '<outputs>x<inputs>' (e.g. '4096x14336')."""
    return f"{n_out:g}x{n_in:g}"


def _interp_log_rows(pts: tuple[tuple[float, float], ...], rows: float) -> float:
    if rows < pts[0][0] or rows > pts[-1][0]:
        return 1.0
    for (r0, f0), (r1, f1) in zip(pts, pts[1:]):
        if rows <= r1:
            w = math.log(rows / r0) / math.log(r1 / r0)
            return f0 + w * (f1 - f0)
    return pts[-1][1]


class Calibration(_Frozen):
    """Where a calibrated profile's curves were measured."""

    device: str
    driver: str | None = None
    torch: str | None = None
    cuda: str | None = None
    date: str
    residuals: dict[str, float] = Field(default_factory=dict, description="fit residuals per curve (relative)")
    measured: list[str] = Field(default_factory=list, description="curves fitted on this device")
    carried_over: list[str] = Field(default_factory=list, description="curves carried from another chip")
    records: str | None = Field(default=None, description="path of the microbenchmark records that fed the fit")


class Provenance(_Frozen):
    datasheet: str = Field(description="URL (or document name) of the vendor datasheet for the peak numbers")
    notes: str | None = None
    calibration: Calibration | None = None


class Scale(_Frozen):
    """Factors for a what-if chip: bandwidth, compute, capacity and interconnect relative to a base chip."""

    bandwidth: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    flops: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    capacity: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    link: float = Field(default=1.0, gt=0, allow_inf_nan=False)

    @property
    def is_identity(self) -> bool:
        return self.bandwidth == self.flops == self.capacity == self.link == 1.0

    def label(self) -> str:
        parts = [f"{k}x{v:g}" for k, v in self.model_dump().items() if v != 1.0]
        return ",".join(parts)


class HardwareProfile(_Frozen):
    """One accelerator: datasheet peaks, efficiency curves, power, price and provenance."""

    name: str
    vendor: str
    description: str = ""
    hbm_capacity_gb: float = Field(gt=0, description="device memory, decimal GB (1e9 bytes), as the driver reports "
                                                     "the card's total (NVIDIA's '80GB' is 80 GiB less a reserve, "
                                                     "~85.5 GB); the KV pool takes a utilization share of it")
    hbm_bandwidth_tb_s: float = Field(gt=0, description="device memory bandwidth, decimal TB/s")
    peak_tflops: dict[ComputeDtype, float] = Field(description="dense tensor-core peak per dtype, TFLOP/s (no sparsity)")
    sm_count: int = Field(gt=0, description="SMs (NVIDIA) or CUs (AMD)")
    l2_cache_mb: float = Field(gt=0, description="last-level on-chip cache, MB")
    link_bandwidth_gb_s: float = Field(gt=0, description="per-GPU interconnect bandwidth, one direction, GB/s")
    link_latency_us: float = Field(ge=0, description="one hop of a collective on that link")
    link_kind: str = Field(description="e.g. NVLink 4, PCIe Gen5, Infinity Fabric")
    launch_overhead_us: float = Field(ge=0, description="host launch cost of one kernel outside a CUDA graph")
    host_pass_overhead_us: float = Field(
        default=0.0, ge=0, description="host time of the serving loop per forward pass (scheduling, staging inputs, "
                                       "reading the sampled tokens back), serialized with the GPU's work; 0 in "
                                       "datasheet profiles, measured by 'memwall microbench' (kind host)")
    host_row_overhead_us: float = Field(
        default=0.0, ge=0, description="host time per pass that grows with its rows (staging each row's inputs), "
                                       "per row; fitted with host_pass_overhead_us")
    host_seq_overhead_us: float = Field(
        default=0.0, ge=0, description="host time per pass that grows with its sequences (the executor's loop over "
                                       "them: inputs, commit rules), per sequence; fitted with host_pass_overhead_us")
    host_block_overhead_us: float = Field(
        default=0.0, ge=0, description="host time per pass that grows with the KV blocks of its sequences' block "
                                       "tables (copying each table into the graph's inputs), per block; fitted with "
                                       "host_pass_overhead_us")
    host_pass_overhead_by_strategy_us: dict[StrategyKind, NonNegativeFloat] = Field(
        default_factory=dict, description="host_pass_overhead_us of the strategies whose executor has a fixed cost "
                                          "of its own (e.g. block_diffusion: its commit rules), by strategy kind")
    host_eager_pass_overhead_us: float | None = Field(
        default=None, ge=0, description="host time of the serving loop for a pass that runs without a CUDA graph (a "
                                        "prompt past the graphs' rows: its token lists and metadata built once), "
                                        "fixed part; unset: such passes take the graph passes' terms")
    host_eager_row_overhead_us: float = Field(
        default=0.0, ge=0, description="host time of an eager pass per row; fitted with host_eager_pass_overhead_us")
    host_iteration_overhead_us: float = Field(
        default=0.0, ge=0, description="host time of the serving loop per iteration on top of its forward passes' "
                                       "(the scheduler, the recorder, the wait for an iteration's results: what a "
                                       "runtime that chains its passes cannot hide); fitted with host_pass_overhead_us")
    host_iteration_overhead_by_strategy_us: dict[StrategyKind, NonNegativeFloat] = Field(
        default_factory=dict, description="host_iteration_overhead_us of the strategies whose iterations chain "
                                          "several forward passes (speculative: drafts and a verify, one wait), by "
                                          "strategy kind; an iteration of one pass has its part in the pass's")
    tdp_w: float = Field(gt=0)
    price_per_gpu_hour_usd: float | None = Field(default=None, gt=0)
    price_source: str | None = None
    efficiency: Efficiency
    provenance: Provenance
    scale: Scale = Field(default_factory=Scale, description="what-if factors already applied to the numbers above")

    @model_validator(mode="after")
    def _check(self) -> "HardwareProfile":
        if "bf16" not in self.peak_tflops and "fp16" not in self.peak_tflops:
            raise ValueError("peak_tflops must list bf16 or fp16")
        for dtype, v in self.peak_tflops.items():
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"peak_tflops.{dtype}: expected a positive TFLOP/s rate, got {v:g}")
        if self.price_per_gpu_hour_usd is not None and not self.price_source:
            raise ValueError("price_per_gpu_hour_usd needs price_source (where the price was read)")
        return self

    # -- base units -------------------------------------------------------------------------------------------
    @property
    def hbm_capacity_bytes(self) -> float:
        return self.hbm_capacity_gb * GB

    def host_pass_s(self, rows, seqs=0, strategy: str | None = None, blocks=0):
        """Host time of the serving loop for one forward pass of `rows` flattened tokens of `seqs` sequences whose
        block tables hold `blocks` KV blocks in all, under `strategy` (calibrated, affine in rows, sequences and
        blocks; arrays welcome)."""
        fixed = self.host_pass_overhead_by_strategy_us.get(strategy, self.host_pass_overhead_us)
        return (fixed + self.host_row_overhead_us * rows + self.host_seq_overhead_us * seqs
                + self.host_block_overhead_us * blocks) * 1e-6

    def host_iteration_s(self, strategy: str | None = None) -> float:
        """Host time of the serving loop per iteration under `strategy`, on top of its passes' (calibrated; 0 in
        datasheets)."""
        return self.host_iteration_overhead_by_strategy_us.get(strategy, self.host_iteration_overhead_us) * 1e-6

    def host_eager_pass_s(self, rows):
        """Host time of the serving loop for one eager forward pass of `rows` flattened tokens (calibrated; None
        where the profile has no eager terms)."""
        if self.host_eager_pass_overhead_us is None:
            return None
        return (self.host_eager_pass_overhead_us + self.host_eager_row_overhead_us * rows) * 1e-6

    @property
    def hbm_bandwidth_bytes_per_s(self) -> float:
        return self.hbm_bandwidth_tb_s * TB

    @property
    def link_bandwidth_bytes_per_s(self) -> float:
        return self.link_bandwidth_gb_s * GB

    @property
    def link_latency_s(self) -> float:
        return self.link_latency_us * US

    @property
    def l2_cache_bytes(self) -> float:
        return self.l2_cache_mb * MB

    def peak_flops_per_s(self, dtype: str) -> float:
        """Dense peak FLOP/s for matrix products whose operands are `dtype`, falling back to a slower format the
        chip has (int4 weights run bf16 math after dequantization; fp8 on a chip without fp8 runs bf16)."""
        from sim.units import COMPUTE_DTYPE_FALLBACK

        for d in COMPUTE_DTYPE_FALLBACK.get(dtype, (dtype,)) + ("bf16", "fp16"):
            if d in self.peak_tflops:
                return self.peak_tflops[d] * TFLOPS
        raise AssertionError("validator guarantees bf16 or fp16")

    def matmul_flops_per_s(self, weights: str, activations: str) -> float:
        """Dense peak of a product of `weights` by `activations`: the slower of the two formats' rates, since the
        tensor cores take both operands in one format. Weight-only quantization (fp8 or int8 weights, bf16
        activations) dequantizes to bf16 and runs bf16 math; fp8 x fp8 runs at the fp8 rate."""
        return min(self.peak_flops_per_s(weights), self.peak_flops_per_s(activations))

    def ridge_point_flop_per_byte(self, dtype: str = "bf16") -> float:
        """Arithmetic intensity above which an operator is compute-bound on the datasheet roofs."""
        return self.peak_flops_per_s(dtype) / self.hbm_bandwidth_bytes_per_s

    def scaled(self, scale: Scale) -> "HardwareProfile":
        """A what-if copy with bandwidth, compute, capacity and link multiplied by `scale` (the efficiency curves,
        fractions of the peaks, unchanged).

        The paged kernel's walk (Efficiency.paged_attention_programs) is in absolute time, so it would cap what a
        bandwidth factor does for attention at the calibrated chip's walk rate (about 4 TB/s of KV on the H100): a
        what-if chip of b x the bandwidth walks each position in 1/b of the time, i.e. its kernel is assumed to keep
        b x the bytes in flight, as a kernel tuned for that chip would. (Carrying a calibration to a real chip of the
        same SMs, validation/carry.py, keeps the walk instead: that predicts this kernel as it is.)"""
        if scale.is_identity:
            return self
        combined = Scale(**{k: getattr(self.scale, k) * v for k, v in scale.model_dump().items()})
        base = self.name.split("[")[0]
        if combined.is_identity:
            name = base
        elif "[" in self.name or self.scale.is_identity:  # the factors from the base chip
            name = f"{base}[{combined.label()}]"
        else:  # a named what-if file (h100-2x-bandwidth): its name says its own factors
            name = f"{self.name}[{scale.label()}]"
        eff = self.efficiency
        if eff.paged_attention_programs is not None and scale.bandwidth != 1.0:
            walks = {k: w.model_copy(update={"position_ns": w.position_ns / scale.bandwidth})
                     for k, w in eff.paged_attention_programs.by_config.items()}
            eff = eff.model_copy(update={"paged_attention_programs": PagedPrograms(by_config=walks)})
        return self.model_copy(
            update={
                "efficiency": eff,
                "name": name,
                "hbm_bandwidth_tb_s": self.hbm_bandwidth_tb_s * scale.bandwidth,
                "hbm_capacity_gb": self.hbm_capacity_gb * scale.capacity,
                "peak_tflops": {k: v * scale.flops for k, v in self.peak_tflops.items()},
                "link_bandwidth_gb_s": self.link_bandwidth_gb_s * scale.link,
                "scale": combined,
            }
        )


# -- catalog ----------------------------------------------------------------------------------------------------


def _profile_files(directory: Path = PROFILES_DIR) -> dict[str, Path]:
    return {p.stem: p for p in sorted(directory.rglob("*.yaml"))}


def profile_names(directory: Path = PROFILES_DIR) -> list[str]:
    """Names of all shipped profiles, real and hypothetical."""
    return sorted(_profile_files(directory))


def profile_from_dict(data: dict, where: str = "hardware", _depth: int = 0) -> HardwareProfile:
    """Build a profile from a mapping; `base:` + `scale:` derives a what-if chip from another profile."""
    data = dict(data)
    if "base" in data:
        if _depth > 4:
            raise UserError(f"{where}: 'base' chains more than 4 profiles deep")
        base = load_profile(data.pop("base"), _depth=_depth + 1)
        try:
            scale = Scale.model_validate(data.pop("scale", {}) or {})
        except ValidationError as e:
            raise UserError(explain_validation_error(e, f"{where}.scale", Scale)) from None
        derived = base.scaled(scale).model_dump()
        derived.update(data)  # name, description, provenance notes of the what-if file win
        data = derived
    try:
        return HardwareProfile(**data)
    except ValidationError as e:
        raise UserError(explain_validation_error(e, where, HardwareProfile)) from None


def load_profile(name_or_path: str, directory: Path = PROFILES_DIR, _depth: int = 0) -> HardwareProfile:
    """A profile by catalog name (e.g. 'h100-sxm') or by path to a YAML file."""
    return _load_cached(str(name_or_path), str(directory), _depth)


def _load_uncached(name_or_path: str, directory: str, depth: int) -> HardwareProfile:
    path = Path(name_or_path)
    if name_or_path.endswith((".yaml", ".yml")) and not path.is_file():
        raise UserError(f"hardware profile file {path} " + ("is a folder" if path.is_dir() else "does not exist"))
    if not name_or_path.endswith((".yaml", ".yml")):
        files = _profile_files(Path(directory))
        if name_or_path not in files:
            raise unknown_name("chip", name_or_path, files)
        path = files[name_or_path]
    return profile_from_dict(read_yaml(path), where=str(path), _depth=depth)


_cache: dict[tuple[str, str, int], HardwareProfile] = {}


def _load_cached(name_or_path: str, directory: str, depth: int) -> HardwareProfile:
    key = (name_or_path, directory, depth)
    if key not in _cache:
        _cache[key] = _load_uncached(name_or_path, directory, depth)
    return _cache[key]


def describe(profile: HardwareProfile) -> dict[str, float | str]:
    """Key numbers of a chip for listings: capacity, bandwidth, bf16 peak, ridge point, TDP, price."""
    return {
        "name": profile.name,
        "hbm_gb": profile.hbm_capacity_gb,
        "bw_tb_s": profile.hbm_bandwidth_tb_s,
        "bf16_tflops": profile.peak_tflops.get("bf16", profile.peak_tflops.get("fp16", math.nan)),
        "fp8_tflops": profile.peak_tflops.get("fp8", math.nan),
        "ridge_flop_per_byte": profile.ridge_point_flop_per_byte("bf16"),
        "tdp_w": profile.tdp_w,
        "usd_per_h": profile.price_per_gpu_hour_usd or math.nan,
    }
