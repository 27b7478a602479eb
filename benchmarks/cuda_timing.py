"""Timing of short CUDA work for the benchmark scripts: calls captured back to back in one CUDA graph, so that the
host's launch pace (tens of us a call from Python) does not enter the kernel's time."""


def capture(torch, fn, reps: int = 1, warmup: int = 3):
    """`reps` calls of `fn()` captured in one CUDA graph, after `warmup` calls on a side stream (torch.cuda.graphs
    docs: libraries pick their kernels and workspaces before capture)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(reps):
            fn()
    return g


def replay_us(torch, g, replays: int = 5, per: int = 1) -> float:
    """Median microseconds of one replay of graph `g` over `replays` (CUDA events), divided by `per` calls."""
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(replays):
        e0.record()
        g.replay()
        e1.record()
        torch.cuda.synchronize()
        times.append(e0.elapsed_time(e1) * 1e3 / per)
    return sorted(times)[len(times) // 2]


def graph_time_us(torch, fn, reps: int = 20) -> float:
    """Median microseconds per call of `fn()`: warmed up on a side stream, `reps` calls captured in one CUDA graph,
    the graph replayed 5 times."""
    return replay_us(torch, capture(torch, fn, reps), per=reps)


def sm_clock_reader(index: int = 0):
    """A function returning GPU `index`'s SM clock in MHz as NVML reads it now (nvidia-ml-py)."""
    import pynvml

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    return lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)


def nvml_state_reader(index: int = 0):
    """A function returning GPU `index`'s power (W) and SM clock (MHz) as NVML reads them now."""
    import pynvml

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    return lambda: {"power_w": pynvml.nvmlDeviceGetPowerUsage(handle) / 1e3,
                    "sm_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)}


def sustained_us(torch, g, sustain_s: float, per: int = 1, batch: int = 1) -> float:
    """Replay graph `g` back to back for `sustain_s` seconds (`batch` replays between host syncs), so that the chip
    reaches the power state of that load, then time 5 replays (CUDA events): microseconds per `per` units."""
    import time

    end = time.perf_counter() + sustain_s
    while time.perf_counter() < end:
        for _ in range(batch):
            g.replay()
        torch.cuda.synchronize()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    for _ in range(5):
        g.replay()
    e1.record()
    e1.synchronize()
    return e0.elapsed_time(e1) * 1e3 / 5 / per
