"""The scenario: one description of hardware, model, precision, parallelism, strategy, batching and workload that
the simulator prices and the runtime executes (DESIGN §2).

Every field has a default, so `Scenario()` is a complete scenario (llama-3.1-8b on h100-sxm). Files are YAML or
JSON; `apply_overrides` applies `--set a.b=value` before validation, so an override may switch a union's `kind`.
Unions (`strategy`, `batching`, `workload`, lengths) are tagged by `kind`/`dist`, with a default tag when omitted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, model_validator

from sim.errors import UserError, explain_validation_error
from sim.hardware import HardwareProfile, Scale, load_profile, profile_from_dict
from sim.model import ModelSpec, load_model
from sim.numbers import NumbersNotBools


class Strict(NumbersNotBools):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _tagged(default: str, key: str = "kind"):
    """Discriminator that reads `key` from a mapping (or model), falling back to `default` when it is missing."""

    def pick(v: Any) -> str:
        if isinstance(v, dict):
            return v.get(key, default)
        return getattr(v, key, default)

    return Discriminator(pick)


# -- precision and parallelism --------------------------------------------------------------------------------------


class Precision(Strict):
    weights: Literal["bf16", "fp16", "fp8", "int8", "int4"] = "bf16"
    kv: Literal["bf16", "fp16", "fp8"] = "bf16"
    activations: Literal["bf16", "fp16", "fp8"] = "bf16"


class Execution(Strict):
    """How the serving software issues a pass: what the cost model assumes of the runtime, not of the chip."""

    graphs: Literal["paged", "decode", "all", "none"] = Field(
        default="paged", description="which passes replay a CUDA graph: paged = every pass of up to 1,024 tokens "
                                     "(memwall's runtime), decode = one-token-per-sequence passes only (vLLM's "
                                     "default), all, none (the rest pay the host's launch time)")
    fused_epilogues: bool = Field(
        default=True, description="RMSNorm, RoPE and SwiGLU fused into the projections of small passes "
                                  "(memwall's runtime); false prices them as kernels of their own")
    attention_reads: Literal["row_groups", "sequence"] = Field(
        default="row_groups", description="how often attention over paged rows (verifies, block and diffusion "
                                          "steps) reads a sequence's K/V: once per group of 16 query-head rows "
                                          "(memwall's runtime), or once per sequence")


class Parallel(Strict):
    tp: int = Field(default=1, ge=1, le=64, description="tensor-parallel degree")
    pp: int = Field(default=1, ge=1, le=64, description="pipeline stages")
    replicas: int = Field(default=1, ge=1, le=4096, description="independent copies behind a router")
    router: Literal["round_robin", "least_outstanding"] = "round_robin"


# -- lengths and workloads ------------------------------------------------------------------------------------------


class Fixed(Strict):
    dist: Literal["fixed"] = "fixed"
    value: int = Field(ge=1)


class Uniform(Strict):
    dist: Literal["uniform"] = "uniform"
    low: int = Field(ge=1)
    high: int = Field(ge=1)

    @model_validator(mode="after")
    def _order(self) -> "Uniform":
        if self.high < self.low:
            raise ValueError("high must be >= low")
        return self


class LogNormal(Strict):
    """Lognormal lengths with the given mean and sigma (the spread of log length), clipped to [min, max]."""

    dist: Literal["lognormal"] = "lognormal"
    mean: float = Field(gt=0)
    sigma: float = Field(default=0.5, ge=0)
    min: int = Field(default=1, ge=1)
    max: int = Field(default=32768, ge=1)

    @model_validator(mode="after")
    def _range(self) -> "LogNormal":
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


def _length_tag(v: Any) -> str:
    if isinstance(v, dict):
        return v.get("dist", "fixed")
    return getattr(v, "dist", "int")


# A length is a plain positive integer or a distribution; tagged so that errors speak of the member the user meant.
Length = Annotated[
    Union[
        Annotated[int, Field(ge=1), Tag("int")],
        Annotated[Fixed, Tag("fixed")],
        Annotated[Uniform, Tag("uniform")],
        Annotated[LogNormal, Tag("lognormal")],
    ],
    Discriminator(_length_tag),
]


class _Synthetic(Strict):
    num_requests: int = Field(default=32, ge=0, le=10_000_000)
    input_len: Length = 512
    output_len: Length = 256
    seed: int | None = Field(default=None, ge=0, description="defaults to the scenario's seed")


class Closed(_Synthetic):
    """All requests arrive at t = 0."""

    kind: Literal["closed"] = "closed"


class Poisson(_Synthetic):
    kind: Literal["poisson"] = "poisson"
    rate_qps: float = Field(gt=0, allow_inf_nan=False, description="mean arrivals per second")


class Gamma(_Synthetic):
    """Bursty arrivals: gamma-distributed gaps with the given rate and coefficient of variation (cv=1 is Poisson)."""

    kind: Literal["gamma"] = "gamma"
    rate_qps: float = Field(gt=0, allow_inf_nan=False)
    cv: float = Field(default=2.0, gt=0, allow_inf_nan=False)


class Trace(Strict):
    """Recorded arrivals: Azure CSV (TIMESTAMP,ContextTokens,GeneratedTokens), processed CSV
    (arrived_at,num_prefill_tokens,num_decode_tokens) or JSONL {arrival_s, prompt_tokens, output_tokens}."""

    kind: Literal["trace"] = "trace"
    path: str
    time_scale: float = Field(default=1.0, gt=0, description=">1 replays slower, <1 faster")
    max_requests: int | None = Field(default=None, ge=0)
    start_s: float = Field(default=0.0, ge=0, description="skip requests that arrived before this time")
    rate_qps: float | None = Field(default=None, gt=0, allow_inf_nan=False,
                                   description="Poisson arrivals for a length-only trace (one without times)")
    seed: int | None = Field(default=None, ge=0)


Workload = Annotated[
    Union[
        Annotated[Closed, Tag("closed")],
        Annotated[Poisson, Tag("poisson")],
        Annotated[Gamma, Tag("gamma")],
        Annotated[Trace, Tag("trace")],
    ],
    _tagged("closed"),
]


# -- batching -------------------------------------------------------------------------------------------------------


class _Memory(Strict):
    kv_block_tokens: int = Field(default=16, ge=1, le=4096, description="tokens per KV-cache block (page)")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1, description="fraction of HBM memwall may use")
    activation_reserve_gb: float | None = Field(
        default=None, ge=0, description="HBM kept for activations; default from the largest pass"
    )


class Static(_Memory):
    """Fixed batches: `batch_size` requests run together until the longest finishes."""

    kind: Literal["static"] = "static"
    batch_size: int = Field(default=8, ge=1, le=65536)


class Continuous(_Memory):
    """Iteration-level scheduling (Orca / vLLM) with paged KV and optional chunked prefill (Sarathi)."""

    kind: Literal["continuous"] = "continuous"
    max_batch: int = Field(default=256, ge=1, le=65536, description="sequences per iteration")
    max_tokens_per_iter: int = Field(default=8192, ge=1, description="token budget of one pass")
    chunked_prefill: bool = False
    preemption: Literal["recompute"] = "recompute"


Batching = Annotated[Union[Annotated[Static, Tag("static")], Annotated[Continuous, Tag("continuous")]], _tagged("static")]


# -- strategy -------------------------------------------------------------------------------------------------------


class AR(Strict):
    """Autoregressive decoding: one token per sequence per pass."""

    kind: Literal["ar"] = "ar"


class Speculative(Strict):
    """Draft k tokens, verify them in one target pass of k+1 (Leviathan et al., ICML 2023)."""

    kind: Literal["speculative"] = "speculative"
    draft: str = Field(default="llama-3.2-1b", description="catalog model or config.json path, or 'self'")
    draft_layers: int | None = Field(default=None, ge=1, description="self-speculation: the target's first layers")
    k: int | Literal["auto"] = Field(default=4, description="draft tokens per iteration (1..16), or 'auto'")
    alpha: float | list[float] = Field(default=0.8, description="acceptance rate, or one per draft position")
    acceptance_trace: str | None = Field(default=None, description="file of accepted lengths (one int per line)")

    @model_validator(mode="after")
    def _check(self) -> "Speculative":
        if self.draft == "self" and self.draft_layers is None:
            raise ValueError("draft 'self' needs draft_layers (how many of the target's layers draft)")
        if isinstance(self.k, int) and not 1 <= self.k <= 16:
            raise ValueError("k must be between 1 and 16, or 'auto'")
        alphas = self.alpha if isinstance(self.alpha, list) else [self.alpha]
        if not alphas or any(not 0 <= a <= 1 for a in alphas):
            raise ValueError("alpha must lie in [0, 1] (one value or one per draft position)")
        if isinstance(self.alpha, list) and isinstance(self.k, int) and len(self.alpha) < self.k:
            raise ValueError(f"alpha lists {len(self.alpha)} positions but k is {self.k}")
        return self


class Diffusion(Strict):
    """LLaDA-style masked diffusion: every step is a bidirectional pass over prompt + response window."""

    kind: Literal["diffusion"] = "diffusion"
    gen_length: int | None = Field(default=None, ge=1, description="response length; default each request's")
    steps: int | None = Field(default=None, ge=1, description="even schedule: steps over gen_length")
    threshold: float | None = Field(default=None, gt=0, description="commit every position above this confidence")
    tokens_per_step: float | None = Field(default=None, ge=1, description="mean tokens per step (threshold mode)")
    cache: Literal["none", "prefix", "dual"] = "none"
    cache_block: int = Field(default=32, ge=1, description="Fast-dLLM block (refresh at each block start)")
    window: Literal["full", "dynamic"] = "full"
    lookahead: int = Field(default=32, ge=1, description="dynamic window: positions past the committed frontier")

    @model_validator(mode="after")
    def _check(self) -> "Diffusion":
        if self.steps is not None and self.threshold is not None:
            raise ValueError("give steps (even schedule) or threshold (confidence), not both")
        if self.steps is not None and self.gen_length is not None and self.steps > self.gen_length:
            raise ValueError(f"steps {self.steps} exceeds gen_length {self.gen_length}: every step commits at least "
                             "one token")
        return self


class BlockDiffusion(Strict):
    """Block diffusion (BD3-LM, Fast-dLLM v2, SDAR): diffusion inside blocks, autoregressive across them."""

    kind: Literal["block_diffusion"] = "block_diffusion"
    block_size: int = Field(default=32, ge=1)
    steps_per_block: int | None = Field(default=None, ge=1)
    threshold: float | None = Field(default=None, gt=0)
    tokens_per_step: float | None = Field(default=None, ge=1)
    fuse_kv_write: bool = Field(default=True, description="write a finished block's KV in the next block's first step")

    @model_validator(mode="after")
    def _check(self) -> "BlockDiffusion":
        if self.steps_per_block is not None and self.threshold is not None:
            raise ValueError("give steps_per_block or threshold, not both")
        if self.steps_per_block is not None and self.steps_per_block > self.block_size:
            raise ValueError(f"steps_per_block {self.steps_per_block} exceeds block_size {self.block_size}: every "
                             "step commits at least one token")
        return self


Strategy = Annotated[
    Union[
        Annotated[AR, Tag("ar")],
        Annotated[Speculative, Tag("speculative")],
        Annotated[Diffusion, Tag("diffusion")],
        Annotated[BlockDiffusion, Tag("block_diffusion")],
    ],
    _tagged("ar"),
]


class SLO(Strict):
    ttft_s: float | None = Field(default=None, gt=0)
    tpot_s: float | None = Field(default=None, gt=0)


# -- the scenario ---------------------------------------------------------------------------------------------------


class Scenario(Strict):
    """Everything memwall needs to price (simulate) or execute (run) one configuration."""

    name: str = "default"
    hardware: str | dict = Field(default="h100-sxm", description="profile name, YAML path, or {profile, scale}")
    model: str | dict = Field(default="llama-3.1-8b", description="catalog name, config.json path, or inline spec")
    precision: Precision = Field(default_factory=Precision)
    execution: Execution = Field(default_factory=Execution)
    parallel: Parallel = Field(default_factory=Parallel)
    strategy: Strategy = Field(default_factory=AR)
    batching: Batching = Field(default_factory=Static)
    workload: Workload = Field(default_factory=Closed)
    slo: SLO = Field(default_factory=SLO)
    seed: int = Field(default=0, ge=0)

    def resolve_hardware(self) -> HardwareProfile:
        """The profile this scenario runs on, with any `scale` applied."""
        return resolve_hardware(self.hardware)

    def resolve_model(self) -> ModelSpec:
        return load_model(self.model)

    @property
    def workload_seed(self) -> int:
        return self.workload.seed if self.workload.seed is not None else self.seed


def resolve_hardware(ref: str | dict) -> HardwareProfile:
    """A profile from a name, a YAML path, `{profile: NAME, scale: {...}}`, or a full inline profile."""
    if isinstance(ref, str):
        return load_profile(ref)
    if "profile" in ref:
        extra = set(ref) - {"profile", "scale"}
        if extra:
            raise UserError(f"hardware: unknown key '{sorted(extra)[0]}'; valid keys with 'profile': profile, scale")
        base = load_profile(ref["profile"])
        try:
            return base.scaled(Scale.model_validate(ref.get("scale") or {}))
        except ValidationError as e:
            raise UserError(explain_validation_error(e, "hardware.scale", Scale)) from None
    return profile_from_dict(ref, where="hardware")


# -- loading --------------------------------------------------------------------------------------------------------


def read_scenario_file(path: str | Path) -> dict:
    """The raw mapping in a YAML or JSON scenario file (errors name file, line and column)."""
    from sim.yaml_file import read_yaml

    path = Path(path)
    if not path.exists():
        raise UserError(f"scenario file {path} does not exist")
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}:{e.colno}: malformed JSON: {e.msg}") from None
        except UnicodeDecodeError:
            raise UserError(f"{path}: not UTF-8 text; expected JSON") from None
        except OSError as e:
            raise UserError(f"cannot read {path}: {e.strerror}") from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: expected a JSON object at the top level")
        return data
    return read_yaml(path)


def _kinds() -> dict[str, dict[str, type[BaseModel]]]:
    """Each tagged section's kinds and their models."""
    sections = {"strategy": (AR, Speculative, Diffusion, BlockDiffusion), "batching": (Static, Continuous),
                "workload": (Closed, Poisson, Gamma, Trace)}
    return {sec: {m.model_fields["kind"].default: m for m in models} for sec, models in sections.items()}


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides (value parsed as YAML: numbers, booleans, lists) to a raw scenario mapping.

    `--set batching.kind=continuous` on a file whose batching is static drops the file's keys that the new kind
    has no field for (its batch_size), so that switching a section's kind from the command line works; keys given
    by --set are never dropped."""
    data = json.loads(json.dumps(data))  # deep copy of plain data
    from_file = {sec: set(data[sec]) for sec in ("strategy", "batching", "workload") if isinstance(data.get(sec), dict)}
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected PATH=VALUE, e.g. batching.batch_size=32")
        path, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        keys = [k for k in path.strip().split(".") if k]
        if not keys:
            raise UserError(f"--set {item!r}: empty field path")
        if keys[0] == "hardware" and len(keys) > 1 and not isinstance(data.get("hardware"), dict):
            data["hardware"] = {"profile": data.get("hardware", Scenario.model_fields["hardware"].default)}
        node = data
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        if len(keys) == 2 and keys[1] == "kind" and keys[0] in from_file and node.get("kind") != value:
            model = _kinds()[keys[0]].get(value) if isinstance(value, str) else None
            if model is not None:
                for k in from_file[keys[0]] - set(model.model_fields):
                    node.pop(k, None)
        node[keys[-1]] = value
    return data


def scenario_from_dict(data: dict, where: str = "scenario") -> Scenario:
    try:
        return Scenario(**data)
    except ValidationError as e:
        raise UserError(explain_validation_error(e, where, Scenario)) from None
    except TypeError as e:  # a non-mapping where a section was expected
        raise UserError(f"{where}: {e}") from None


def load_scenario(path: str | Path | None = None, overrides: list[str] | None = None) -> Scenario:
    """A validated scenario from a file (or the defaults) plus `--set` overrides."""
    data = read_scenario_file(path) if path else {}
    data = apply_overrides(data, overrides or [])
    return scenario_from_dict(data, where=str(path) if path else "scenario")
