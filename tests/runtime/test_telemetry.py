"""The NVML sampler: degrades to 'unavailable' without NVML, and summarizes samples (with throttling) when a
(fake) NVML answers."""

import sys
import types

from runtime.telemetry import NvmlSampler


def test_without_nvml_summary_says_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    s = NvmlSampler(interval_s=0.001)
    with s:
        pass
    assert not s.available
    assert s.summary()["status"] == "unavailable" and "pynvml" in s.summary()["reason"]


def fake_nvml(reasons: list[int]) -> types.ModuleType:
    """A pynvml stand-in: SM clock steps 1980, 1700, ...; power 500 W; throttle reasons from the list in turn."""
    nv = types.ModuleType("pynvml")
    calls = {"n": 0}
    nv.NVML_CLOCK_SM, nv.NVML_CLOCK_MEM, nv.NVML_TEMPERATURE_GPU = 1, 2, 0
    nv.nvmlInit = lambda: None
    nv.nvmlDeviceGetHandleByIndex = lambda i: "h"
    nv.nvmlDeviceGetName = lambda h: "Fake H100"
    nv.nvmlSystemGetDriverVersion = lambda: "580.0"

    def clock(h, kind):
        return 2619 if kind == 2 else (1980 if calls["n"] % 2 == 0 else 1700)

    def reason(h):
        r = reasons[min(calls["n"], len(reasons) - 1)]
        calls["n"] += 1
        return r

    nv.nvmlDeviceGetClockInfo = clock
    nv.nvmlDeviceGetPowerUsage = lambda h: 500_000  # mW
    nv.nvmlDeviceGetTemperature = lambda h, k: 60
    nv.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=2**30)
    nv.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=99, memory=80)
    nv.nvmlDeviceGetCurrentClocksEventReasons = reason
    return nv


def test_summary_of_samples_flags_power_throttling(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([0x1, 0x4, 0x1]))  # idle, sw power cap, idle
    s = NvmlSampler()
    for _ in range(3):
        s.samples.append(s.sample())
    out = s.summary()
    assert out["status"] == "ok" and out["device"] == "Fake H100" and out["samples"] == 3
    assert out["power_w"]["median"] == 500.0 and out["memory_used_bytes"]["max"] == 2**30
    assert out["sm_clock_mhz"] == {"median": 1980, "min": 1700, "max": 1980}
    assert out["throttled"] and out["throttle_reasons"] == ["sw_power_cap"]


def test_background_thread_collects_until_stopped(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([0x1]))
    import time
    with NvmlSampler(interval_s=0.001) as s:
        time.sleep(0.05)
    n = len(s.samples)
    time.sleep(0.01)
    assert n >= 3 and len(s.samples) == n and not s.summary()["throttled"]
