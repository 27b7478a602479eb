"""Model architectures: the catalog, Hugging Face config.json loading, and derived sizes.

A `ModelSpec` holds what the cost model and the runtime need of a Llama-family decoder (GQA, RoPE, RMSNorm, SwiGLU,
optional mixture-of-experts, causal or bidirectional attention). Everything else is derived: parameter counts,
weight bytes per precision, KV bytes per token, FLOPs per token. The catalog is a plain dict of presets, with the
numbers copied from each model's published config.json (named in `source`).

Hand-checked (tests/test_model.py): llama-3.1-8b has 8.03e9 parameters and 2 * 32 layers * 8 KV heads * 128 * 2 B
= 131,072 bytes of bf16 KV per token.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, ValidationError, model_validator

from sim.errors import UserError, explain_validation_error, unknown_name
from sim.numbers import NumbersNotBools
from sim.units import BYTES_PER_ELEMENT


class ModelSpec(NumbersNotBools):
    """Architecture of one decoder-only transformer (Llama family), with derived sizes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    hidden_size: int = Field(gt=0)
    num_layers: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    head_dim: int | None = Field(default=None, gt=0, description="defaults to hidden_size / num_heads")
    intermediate_size: int = Field(gt=0, description="SwiGLU hidden width (per expert for MoE)")
    vocab_size: int = Field(gt=0)
    tie_word_embeddings: bool = False
    num_experts: int = Field(default=1, ge=1, description="1 = dense MLP")
    experts_per_token: int = Field(default=1, ge=1)
    attention: Literal["causal", "bidirectional"] = "causal"
    qkv_bias: bool = False
    rope_theta: float = Field(default=10000.0, gt=0)
    rope_scaling: dict | None = None
    max_position_embeddings: int = Field(default=4096, gt=0, description="context in positions; 4,096 when unstated, "
                                         "which the runtime sizes its RoPE tables by but the simulator does not check "
                                         "requests against (context_tokens)")
    rms_norm_eps: float = Field(default=1e-5, gt=0)
    mask_token_id: int | None = Field(default=None, description="masked-diffusion models: the [MASK] token")
    source: str = Field(default="", description="where the numbers come from (HF repo id or file)")

    @model_validator(mode="after")
    def _check(self) -> "ModelSpec":
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
        if self.head_dim is None and self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must divide by num_heads when head_dim is not given")
        if self.experts_per_token > self.num_experts:
            raise ValueError("experts_per_token cannot exceed num_experts")
        return self

    @property
    def context_tokens(self) -> int | None:
        """The context the spec states (catalog, config.json, an inline spec that sets it), or None: a default of
        4,096 that nobody wrote is no ground for refusing or counting requests."""
        return self.max_position_embeddings if "max_position_embeddings" in self.model_fields_set else None

    # -- shapes -----------------------------------------------------------------------------------------------
    @property
    def d_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.d_head

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.d_head

    def kv_heads_per_gpu(self, tp: int) -> float:
        """KV heads on each GPU of a tensor-parallel group of `tp`: an even share, and one, replicated, where GPUs
        outnumber KV heads (how Megatron-LM and vLLM shard grouped-query attention)."""
        return max(self.num_kv_heads / tp, 1.0)

    def kv_dim_per_gpu(self, tp: int) -> float:
        return self.kv_heads_per_gpu(tp) * self.d_head

    def replicated_kv_weight_bytes(self, tp: int, weights: str = "bf16") -> float:
        """Bytes of K and V projection weights each GPU holds beyond an even 1/tp share (replicated KV heads)."""
        extra = self.kv_dim_per_gpu(tp) - self.kv_dim / tp
        return self.num_layers * 2 * extra * (self.hidden_size + self.qkv_bias) * BYTES_PER_ELEMENT[weights]

    def kv_bytes_per_token_per_gpu(self, kv: str = "bf16", tp: int = 1) -> float:
        """KV cache bytes one token occupies on each GPU of a tensor-parallel group (replicated heads included)."""
        return 2 * self.num_layers * self.kv_dim_per_gpu(tp) * BYTES_PER_ELEMENT[kv]

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1

    # -- parameters -------------------------------------------------------------------------------------------
    @cached_property
    def attn_params_per_layer(self) -> int:
        """Q, K, V and O projections (plus QKV biases where the model has them)."""
        d = self.hidden_size
        weights = d * self.q_dim + 2 * d * self.kv_dim + self.q_dim * d
        return weights + (self.q_dim + 2 * self.kv_dim if self.qkv_bias else 0)

    @cached_property
    def mlp_params_per_expert(self) -> int:
        """SwiGLU: gate and up (d -> I) and down (I -> d)."""
        return 3 * self.hidden_size * self.intermediate_size

    @cached_property
    def router_params_per_layer(self) -> int:
        return self.hidden_size * self.num_experts if self.is_moe else 0

    @cached_property
    def norm_params_per_layer(self) -> int:
        return 2 * self.hidden_size

    @cached_property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @cached_property
    def lm_head_params(self) -> int:
        """Output projection; shares storage with the embedding when tied, but is still read every pass."""
        return self.vocab_size * self.hidden_size

    @cached_property
    def layer_params(self) -> int:
        return (
            self.attn_params_per_layer
            + self.num_experts * self.mlp_params_per_expert
            + self.router_params_per_layer
            + self.norm_params_per_layer
        )

    @cached_property
    def param_count(self) -> int:
        """All stored parameters (a tied LM head is counted once)."""
        head = 0 if self.tie_word_embeddings else self.lm_head_params
        return self.embedding_params + self.num_layers * self.layer_params + self.hidden_size + head

    @cached_property
    def active_params_per_token(self) -> int:
        """Parameters one token multiplies through: top-k experts only, the embedding as a lookup (not counted)."""
        per_layer = (
            self.attn_params_per_layer
            + self.experts_per_token * self.mlp_params_per_expert
            + self.router_params_per_layer
        )
        return self.num_layers * per_layer + self.lm_head_params

    # -- bytes --------------------------------------------------------------------------------------------------
    def weight_bytes(self, weights: str = "bf16", other: str = "bf16") -> float:
        """Bytes of all stored weights: projection and MLP matrices (and an untied LM head) in `weights`, the
        embedding table and norms in `other` (quantized deployments usually keep those in 16 bits)."""
        wb, ob = BYTES_PER_ELEMENT[weights], BYTES_PER_ELEMENT[other]
        linear = self.num_layers * (self.layer_params - self.norm_params_per_layer)
        head = 0 if self.tie_word_embeddings else self.lm_head_params
        norms = self.num_layers * self.norm_params_per_layer + self.hidden_size
        return (linear + head) * wb + (self.embedding_params + norms) * ob

    def kv_bytes_per_token(self, kv: str = "bf16") -> float:
        """KV cache bytes one token occupies: kappa = 2 * layers * kv_heads * head_dim * bytes (DESIGN §3)."""
        return 2 * self.num_layers * self.kv_dim * BYTES_PER_ELEMENT[kv]

    def flops_per_token(self, context_len: int = 0) -> float:
        """Forward FLOPs of one decoded token attending to `context_len` positions (2 per MAC)."""
        attention = 4 * self.num_layers * self.q_dim * context_len
        return 2 * self.active_params_per_token + attention


# -- catalog ------------------------------------------------------------------------------------------------------

_LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}

CATALOG: dict[str, dict] = {
    "smollm2-135m": dict(hidden_size=576, num_layers=30, num_heads=9, num_kv_heads=3, intermediate_size=1536,
                         vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0,
                         max_position_embeddings=8192, source="HuggingFaceTB/SmolLM2-135M-Instruct"),
    "llama-3.2-1b": dict(hidden_size=2048, num_layers=16, num_heads=32, num_kv_heads=8, head_dim=64,
                         intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0,
                         rope_scaling={**_LLAMA3_ROPE, "factor": 32.0}, max_position_embeddings=131072,
                         source="meta-llama/Llama-3.2-1B"),
    "llama-3.2-3b": dict(hidden_size=3072, num_layers=28, num_heads=24, num_kv_heads=8, head_dim=128,
                         intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0,
                         rope_scaling={**_LLAMA3_ROPE, "factor": 32.0}, max_position_embeddings=131072,
                         source="meta-llama/Llama-3.2-3B"),
    "llama-3.1-8b": dict(hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=8, intermediate_size=14336,
                         vocab_size=128256, rope_theta=500000.0, rope_scaling=_LLAMA3_ROPE,
                         max_position_embeddings=131072, source="meta-llama/Llama-3.1-8B"),
    "llama-3.1-70b": dict(hidden_size=8192, num_layers=80, num_heads=64, num_kv_heads=8, intermediate_size=28672,
                          vocab_size=128256, rope_theta=500000.0, rope_scaling=_LLAMA3_ROPE,
                          max_position_embeddings=131072, source="meta-llama/Llama-3.1-70B"),
    "llama-2-7b": dict(hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=32, intermediate_size=11008,
                       vocab_size=32000, max_position_embeddings=4096, source="meta-llama/Llama-2-7b-hf"),
    "llama-2-70b": dict(hidden_size=8192, num_layers=80, num_heads=64, num_kv_heads=8, intermediate_size=28672,
                        vocab_size=32000, max_position_embeddings=4096, source="meta-llama/Llama-2-70b-hf"),
    "mistral-7b": dict(hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=8, intermediate_size=14336,
                       vocab_size=32768, rope_theta=1000000.0, max_position_embeddings=32768,
                       source="mistralai/Mistral-7B-v0.3"),
    "qwen2.5-7b": dict(hidden_size=3584, num_layers=28, num_heads=28, num_kv_heads=4, intermediate_size=18944,
                       vocab_size=152064, qkv_bias=True, rope_theta=1000000.0, rms_norm_eps=1e-6,
                       max_position_embeddings=131072, source="Qwen/Qwen2.5-7B"),
    "mixtral-8x7b": dict(hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=8, intermediate_size=14336,
                         vocab_size=32000, num_experts=8, experts_per_token=2, rope_theta=1000000.0,
                         max_position_embeddings=32768, source="mistralai/Mixtral-8x7B-v0.1"),
    "llada-8b": dict(hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=32, intermediate_size=12288,
                     vocab_size=126464, attention="bidirectional", rope_theta=500000.0, max_position_embeddings=4096,
                     mask_token_id=126336, source="GSAI-ML/LLaDA-8B-Instruct"),
}


def model_names() -> list[str]:
    return sorted(CATALOG)


# where config.json files state the context, by family (Llama/Mistral/Qwen, LLaDA, GPT-2 style, others)
_CONTEXT_KEYS = ("max_position_embeddings", "max_sequence_length", "n_positions", "seq_length", "max_seq_len")


def from_hf_config(config: dict, name: str) -> ModelSpec:
    """A spec from a Hugging Face `config.json` mapping (Llama, Mistral, Qwen2, Mixtral and LLaDA layouts)."""
    get = config.get
    hidden = get("hidden_size", get("d_model"))
    kwargs = dict(
        name=name,
        hidden_size=hidden,
        num_layers=get("num_hidden_layers", get("n_layers")),
        num_heads=get("num_attention_heads", get("n_heads")),
        num_kv_heads=get("num_key_value_heads") or get("n_kv_heads") or get("num_attention_heads", get("n_heads")),
        head_dim=get("head_dim"),
        intermediate_size=get("intermediate_size", get("mlp_hidden_size")),
        vocab_size=get("vocab_size", get("embedding_size")),
        tie_word_embeddings=bool(get("tie_word_embeddings", get("weight_tying", False))),
        num_experts=get("num_local_experts", 1) or 1,
        experts_per_token=get("num_experts_per_tok", 1) or 1,
        attention="bidirectional" if get("model_type") == "llada" or get("is_causal") is False else "causal",
        qkv_bias=bool(get("attention_bias", get("model_type") == "qwen2")),
        rope_theta=get("rope_theta", 10000.0),
        rope_scaling=get("rope_scaling"),
        max_position_embeddings=next((get(k) for k in _CONTEXT_KEYS if get(k) is not None), None),
        rms_norm_eps=get("rms_norm_eps", 1e-5),
        mask_token_id=get("mask_token_id"),
        source=name,
    )
    if kwargs["max_position_embeddings"] is None:  # unstated: the spec's default, and no context check (context_tokens)
        del kwargs["max_position_embeddings"]
    else:
        key = next(k for k in _CONTEXT_KEYS if get(k) is not None)
        value = kwargs["max_position_embeddings"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{name}: config.json {key}: expected a positive integer (the context), got {value!r}")
    missing = [k for k, v in kwargs.items() if v is None and k not in ("head_dim", "rope_scaling", "mask_token_id")]
    if missing:
        raise UserError(f"{name}: config.json lacks {', '.join(missing)} (needed for a Llama-family model)")
    try:
        return ModelSpec(**kwargs)
    except ValidationError as e:
        raise UserError(explain_validation_error(e, name, ModelSpec)) from None


def load_model(name_or_path: str | dict) -> ModelSpec:
    """A spec by catalog name, by path to a Hugging Face config.json (or its directory), or from an inline mapping."""
    if isinstance(name_or_path, dict):
        try:
            return ModelSpec(**name_or_path)
        except ValidationError as e:
            missing = [".".join(map(str, err["loc"])) for err in e.errors() if err["type"] == "missing"]
            if len(missing) > 1:  # e.g. `--set model.num_layers=2` on a catalog model made an inline one of one key
                raise UserError(f"model: an inline model needs {', '.join(missing)} as well (got only "
                                f"{', '.join(sorted(name_or_path)) or 'nothing'}); a catalog model is named by a "
                                "string (memwall models), or give a config.json path") from None
            raise UserError(explain_validation_error(e, "model", ModelSpec)) from None
    if not str(name_or_path).strip():
        raise unknown_name("model", name_or_path, CATALOG)
    if name_or_path in CATALOG:
        return ModelSpec(name=name_or_path, **CATALOG[name_or_path])
    path = Path(name_or_path)
    if path.is_dir():
        path = path / "config.json"
    if path.suffix == ".json" or path.name == "config.json":
        if not path.exists():
            raise UserError(f"model config {path} does not exist")
        try:
            config = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}:{e.colno}: malformed JSON: {e.msg}") from None
        if not isinstance(config, dict):
            raise UserError(f"{path}: expected a JSON object (a Hugging Face config.json), got a "
                            f"{type(config).__name__}")
        return from_hf_config(config, name=str(name_or_path))
    raise unknown_name("model", name_or_path, CATALOG)
