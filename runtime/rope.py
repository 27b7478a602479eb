"""Rotary position embedding (RoPE) tables: inverse frequencies with the model's theta and scaling, and cos/sin.

RoPE (Su et al. 2021, "RoFormer", eq. 34) rotates each pair (x_j, x_{j+d/2}) of a query or key head by the angle
pos * inv_freq_j, inv_freq_j = theta^(-2j/d). This is the "rotate half" layout of the Hugging Face Llama code;
GGUF files store Q/K rows permuted for the interleaved layout, and `loaders.py` undoes that on load.

Scaling variants the runtime supports (the `rope_scaling` dict of a config.json):
- none / "default": plain frequencies;
- "linear" (Chen et al. 2023, position interpolation): every frequency divided by `factor`;
- "llama3" (Llama 3.1 report, section 3.3 / Meta's reference `apply_scaling`): frequencies with wavelength longer
  than original_max_position_embeddings / low_freq_factor are divided by `factor`, those shorter than
  original / high_freq_factor are kept, and the band between is interpolated linearly in 1/wavelength.

Angles are computed in float64 and only then cast, so a table entry at position 100,000 is exact to float32
rounding (float32 angles, as in some reference code, are off by ~1e-2 rad there).
"""

from __future__ import annotations

import math

import torch

from sim.errors import UserError
from sim.model import ModelSpec


def inv_frequencies(spec: ModelSpec) -> torch.Tensor:
    """Inverse frequencies (float64, [head_dim/2]) after the model's rope scaling."""
    d = spec.d_head
    inv = 1.0 / (spec.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    scaling = spec.rope_scaling or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return inv
    if kind == "linear":
        return inv / float(scaling["factor"])
    if kind == "llama3":
        factor = float(scaling["factor"])
        low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        original = float(scaling["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv
        smooth = (original / wavelen - low) / (high - low)  # 0 at the low-frequency edge, 1 at the high one
        scaled = torch.where(wavelen > original / low, inv / factor, inv)
        medium = (wavelen <= original / low) & (wavelen >= original / high)
        return torch.where(medium, (1 - smooth) * inv / factor + smooth * inv, scaled)
    raise UserError(f"{spec.name}: rope_scaling type '{kind}' is not supported by the runtime "
                    f"(supported: default, linear, llama3)")


def cos_sin_tables(spec: ModelSpec, max_positions: int,
                   device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of pos * inv_freq for pos < max_positions: two float32 tensors [max_positions, head_dim/2]."""
    pos = torch.arange(max_positions, dtype=torch.float64)
    angles = pos[:, None] * inv_frequencies(spec)[None, :]
    return angles.cos().float().to(device).contiguous(), angles.sin().float().to(device).contiguous()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [T, heads, head_dim] by per-token tables cos/sin [T, head_dim/2] ("rotate half" layout);
    the arithmetic is float32 and the result keeps x's dtype."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half].float(), x[..., half:].float()
    c, s = cos[:, None, :], sin[:, None, :]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).to(x.dtype)
