"""Kernels compiled while a measurement runs: a compile inside a timed pass is charged to that pass (Triton builds
a variant per constexpr configuration and per integer/pointer specialization, 0.3-0.9 s each on the H100's host),
so a validation record says how many happened while the clock ran, and of which kernels.

Uses Triton's own hooks (`triton.knobs.runtime.jit_cache_hook`, called before a variant that is not in the
in-process cache is built, and `jit_post_compile_hook` once it is); a variant loaded from Triton's on-disk cache
also passes through them, quickly. Without Triton the watcher records nothing.
"""

from __future__ import annotations

import time


class CompileWatch:
    """with CompileWatch() as w: ... ; w.summary() -> {"count", "seconds", "kernels": {name: count}}."""

    def __init__(self) -> None:
        self.events: list[tuple[str, float]] = []  # (kernel name, seconds to build or load)
        self._start: dict = {}
        self._knobs = None
        self._saved = (None, None)

    def _before(self, *args, **kw) -> bool:
        self._start[kw.get("key")] = time.perf_counter()
        return False  # go on compiling

    def _after(self, *args, **kw) -> None:
        t0 = self._start.pop(kw.get("key"), None)
        fn = kw.get("fn")
        name = getattr(getattr(fn, "fn", fn), "__name__", str(kw.get("repr", "?")).split("[")[0])
        self.events.append((name, time.perf_counter() - t0 if t0 is not None else 0.0))

    def __enter__(self) -> "CompileWatch":
        try:
            import triton.knobs as knobs
        except ImportError:
            return self
        self._knobs = knobs.runtime
        self._saved = (self._knobs.jit_cache_hook, self._knobs.jit_post_compile_hook)
        self._knobs.jit_cache_hook, self._knobs.jit_post_compile_hook = self._before, self._after
        return self

    def __exit__(self, *exc) -> None:
        if self._knobs is not None:
            self._knobs.jit_cache_hook, self._knobs.jit_post_compile_hook = self._saved
            self._knobs = None

    def summary(self) -> dict:
        kernels: dict[str, int] = {}
        for name, _ in self.events:
            kernels[name] = kernels.get(name, 0) + 1
        return {"count": len(self.events), "seconds": round(sum(s for _, s in self.events), 3), "kernels": kernels}
