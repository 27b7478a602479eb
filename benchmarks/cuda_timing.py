"""Timing of short CUDA work for the benchmark scripts: calls captured back to back in one CUDA graph, so that the
host's launch pace (tens of us a call from Python) does not enter the kernel's time."""


def graph_time_us(torch, fn, reps: int = 20) -> float:
    """Median microseconds per call of `fn()`: warmed up on a side stream, `reps` calls captured in one CUDA graph,
    the graph replayed 5 times."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(reps):
            fn()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(5):
        e0.record()
        g.replay()
        e1.record()
        torch.cuda.synchronize()
        times.append(e0.elapsed_time(e1) * 1e3 / reps)
    return sorted(times)[len(times) // 2]
