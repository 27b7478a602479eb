"""Timing one piece of device work: CUDA events around it on a GPU (the device's own clock, host overhead between
launches excluded only where the work is asynchronous), perf_counter on the CPU."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

import torch

T = TypeVar("T")


def device_seconds(on_cuda: bool, fn: Callable[[], T]) -> tuple[float, T]:
    """(seconds, fn()) — the time from the start to the end of fn's work on the device."""
    if on_cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3, out
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out
