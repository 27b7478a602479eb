"""Background NVML sampling during a measurement: clocks, power, temperature, memory, utilization, throttling.

Usage:
    with NvmlSampler(interval_s=0.02) as s:
        ... timed work ...
    record["telemetry"] = s.summary()

NVML (the library behind nvidia-smi, through `pynvml` from the nvidia-ml-py package) is read from a daemon thread;
each sample costs the GPU nothing. On a machine without NVML (no driver, no package, no GPU) the sampler does
nothing and `summary()` returns {"status": "unavailable", "reason": ...}, so callers need no special case.

Throttling: a measurement is flagged when any sample shows a clocks-event reason other than idle or application
settings (power cap, thermal slowdown, HW slowdown, sync boost), since the SM clock then sat below what the chip
could do and the timing understates it. Units: MHz, W (NVML reports mW), degrees C, bytes (binary, as NVML gives).
"""

from __future__ import annotations

import statistics
import threading
import time

# nvmlClocksEventReasons bits (nvml.h): the ones that mean "slower than it could be".
_THROTTLE_BITS = {
    0x0000000000000004: "sw_power_cap",
    0x0000000000000008: "hw_slowdown",
    0x0000000000000010: "sync_boost",
    0x0000000000000020: "sw_thermal_slowdown",
    0x0000000000000040: "hw_thermal_slowdown",
    0x0000000000000080: "hw_power_brake_slowdown",
}


def _nvml():
    """The initialised pynvml module, or an exception saying why not."""
    import pynvml

    pynvml.nvmlInit()
    return pynvml


class NvmlSampler:
    """Samples GPU `index` every `interval_s` seconds between start() and stop() (or inside a with block)."""

    def __init__(self, index: int = 0, interval_s: float = 0.02):
        self.index, self.interval_s = index, interval_s
        self.samples: list[dict] = []
        self.reason: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            self._nv = _nvml()
            self._handle = self._nv.nvmlDeviceGetHandleByIndex(index)
            self.device_name = self._nv.nvmlDeviceGetName(self._handle)
            self.driver = self._nv.nvmlSystemGetDriverVersion()
        except Exception as e:  # ImportError, NVMLError (no driver / no GPU), ...
            self._nv = None
            self.reason = f"{type(e).__name__}: {e}"

    @property
    def available(self) -> bool:
        return self._nv is not None

    def sample(self) -> dict:
        nv, h = self._nv, self._handle
        util = nv.nvmlDeviceGetUtilizationRates(h)
        mem = nv.nvmlDeviceGetMemoryInfo(h)
        return {
            "t_s": time.perf_counter(),
            "sm_clock_mhz": nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM),
            "mem_clock_mhz": nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM),
            "power_w": nv.nvmlDeviceGetPowerUsage(h) / 1e3,
            "temperature_c": nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU),
            "memory_used_bytes": mem.used,
            "gpu_util_pct": util.gpu,
            "mem_util_pct": util.memory,
            "throttle_reasons": self._reasons(h),
        }

    def _reasons(self, h) -> int:
        fn = getattr(self._nv, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            self._nv.nvmlDeviceGetCurrentClocksThrottleReasons  # renamed in newer NVML bindings
        return int(fn(h))

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self.sample())
            except Exception as e:  # a reading that fails mid-run ends sampling, never the measurement
                self.reason = f"sampling stopped: {type(e).__name__}: {e}"
                return
            self._stop.wait(self.interval_s)

    def start(self) -> "NvmlSampler":
        if self.available:
            self.samples.clear()
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="nvml-sampler", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def __enter__(self) -> "NvmlSampler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def summary(self) -> dict:
        """Median / min / max of each reading over the samples, the throttle reasons seen, and `throttled`."""
        if not self.available:
            return {"status": "unavailable", "reason": self.reason}
        if not self.samples:
            return {"status": "no_samples", "device": self.device_name, "driver": self.driver}
        out: dict = {"status": "ok", "device": self.device_name, "driver": self.driver,
                     "samples": len(self.samples), "interval_s": self.interval_s}
        for key in ("sm_clock_mhz", "mem_clock_mhz", "power_w", "temperature_c", "memory_used_bytes",
                    "gpu_util_pct", "mem_util_pct"):
            vals = [s[key] for s in self.samples]
            out[key] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
        seen = 0
        for s in self.samples:
            seen |= s["throttle_reasons"]
        out["throttle_reasons"] = sorted(name for bit, name in _THROTTLE_BITS.items() if seen & bit)
        out["throttled"] = bool(out["throttle_reasons"])
        if self.reason:
            out["note"] = self.reason
        return out
