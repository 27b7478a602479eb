"""Timing one piece of device work: CUDA events around it on a GPU (the device's own clock, host overhead between
launches excluded only where the work is asynchronous), perf_counter on the CPU."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

import torch

T = TypeVar("T")


def device_seconds(on_cuda: bool, fn: Callable[[], T]) -> tuple[float, T]:
    """(seconds, fn()) — the time from the start to the end of fn's work on the device."""
    timer = PassTimer(on_cuda)
    out = timer.run(fn)
    return timer.settle()[0], out


class PassTimer:
    """Device times of passes issued back to back, with no host sync between them: CUDA events around each, read
    once `settle` has waited for the last (perf_counter times on the CPU, where every pass is synchronous). While
    the device runs one pass the host stages the next, so host time hides under device time."""

    def __init__(self, on_cuda: bool):
        self.on_cuda = on_cuda
        self.marks: list = []

    def run(self, fn: Callable[[], T]) -> T:
        """fn() (which issues one pass), timed on the device."""
        if not self.on_cuda:
            t0 = time.perf_counter()
            out = fn()
            self.marks.append(time.perf_counter() - t0)
            return out
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        end.record()
        self.marks.append((start, end))
        return out

    def settle(self) -> list[float]:
        """Wait for the last pass; the seconds of every pass run since the last settle, in order."""
        marks, self.marks = self.marks, []
        if not self.on_cuda:
            return marks
        if marks:
            marks[-1][1].synchronize()
        return [start.elapsed_time(end) / 1e3 for start, end in marks]
