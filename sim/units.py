"""Unit constants and the byte widths of the number formats memwall knows.

Rates and sizes from datasheets are decimal (1 TB/s = 1e12 B/s, 1 GB = 1e9 B); binary units appear only where a
tool reports GiB (NVML, torch.cuda). Every conversion in memwall goes through the names below, so a reader can
grep for GiB to find the few places where binary units are used on purpose.
"""

from __future__ import annotations

KB = 1e3
MB = 1e6
GB = 1e9
TB = 1e12
GiB = 2**30
MiB = 2**20

US = 1e-6  # one microsecond in seconds
MS = 1e-3

TFLOPS = 1e12  # FLOP/s

# Bytes per element of each storage format. int4/fp4 pack two values per byte; quantization scales are ignored
# (for group size 128 with bf16 scales they add 1.6% to weight bytes; a profile that cares can model it as fp8+).
BYTES_PER_ELEMENT: dict[str, float] = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
    "fp4": 0.5,
}

# Which tensor-core rate a weight format runs its matrix products at. int4/fp4 weights without native fp4 math are
# dequantized to bf16 in the kernel (weight-only quantization, as in Marlin / AWQ kernels), so they save bytes but
# not FLOP time; the cost model falls back through this chain to the first rate the chip lists.
COMPUTE_DTYPE_FALLBACK: dict[str, tuple[str, ...]] = {
    "fp32": ("fp32", "bf16"),
    "bf16": ("bf16", "fp16"),
    "fp16": ("fp16", "bf16"),
    "fp8": ("fp8", "bf16"),
    "int8": ("int8", "fp8", "bf16"),
    "int4": ("bf16", "fp16"),
    "fp4": ("fp4", "fp8", "bf16"),
}


def bytes_per_element(dtype: str) -> float:
    """Bytes one element of `dtype` occupies in memory."""
    return BYTES_PER_ELEMENT[dtype]
