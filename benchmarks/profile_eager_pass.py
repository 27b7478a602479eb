"""Why an eager pass that mixes a 512-token prompt with decode rows takes ~2x the host's issuing time predicted for
it (reports/h100/validation-notes.md): the AR executor of plan point load-36 runs such a pass after its graphs are
captured and its kernels compiled; this times it (wall, CUDA events) and profiles one with torch.profiler, listing
the host-side CUDA runtime calls that can stall the host (synchronizations, allocations, pageable copies).

    python3 benchmarks/profile_eager_pass.py [--decodes 16] [--prompt 512] [--context 600] [--out F.txt]
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from runtime.serve import Item
    from validation.run import build, warm_up
    from validation.validate import plan_scenarios

    ap = argparse.ArgumentParser()
    ap.add_argument("--plan", default="examples/validation/plan-h100.yaml")
    ap.add_argument("--point", default="load-36")
    ap.add_argument("--decodes", type=int, default=16)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--context", type=int, default=600)
    ap.add_argument("--out")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", help="another catalog model (CPU checks of the script)")
    a = ap.parse_args()
    s = [x for x in plan_scenarios(Path(a.plan)) if x.name == a.point][0]
    if a.model:
        s = s.model_copy(update={"model": a.model})
    setup, model, ex, blocks, reqs = build(s, a.device)
    warm_up(ex, s, blocks)
    bt = s.batching.kv_block_tokens
    per = -(-(max(a.context, a.prompt) + 8) // bt)
    n = a.decodes + 1
    for i in range(n):  # requests 0..D-1 hold a context of `context` tokens; request D is the new prompt
        ex.add_request(i, a.prompt if i == a.decodes else a.context, i)
        if i < a.decodes:
            ex.execute([Item(i, a.context, 0, 1, list(range(i * per, (i + 1) * per)))])
    if a.device == "cuda":
        torch.cuda.synchronize()

    def mixed():
        items = [Item(i, 1, len(ex.tokens[i]) - 1, 1, list(range(i * per, (i + 1) * per))) for i in range(a.decodes)]
        items.append(Item(a.decodes, a.prompt, 0, 1, list(range(a.decodes * per, n * per))))
        t0 = time.perf_counter()
        dev_s, _ = ex.execute(items)
        wall = time.perf_counter() - t0
        for i in range(a.decodes):  # keep the contexts as they were (the pass appended a token)
            ex.tokens[i].pop()
        return wall, dev_s

    for _ in range(3):
        mixed()
    runs = [mixed() for _ in range(5)]
    lines = [f"mixed eager pass: {a.prompt}-token prompt + {a.decodes} decode rows at {a.context} positions "
             f"({a.prompt + a.decodes} rows), {model.spec.name} random weights",
             "wall / event-timed device ms per run: " + ", ".join(f"{w * 1e3:.1f}/{d * 1e3:.1f}" for w, d in runs)]
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        mixed()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    stalls = [e for e in prof.key_averages() if any(k in e.key for k in (
        "Synchronize", "cudaMalloc", "cudaFree", "cudaMemcpy", "cudaHostAlloc", "item", "_local_scalar"))]
    lines += ["", "host calls that can stall the host:"]
    lines += [f"  {e.key}: {e.count} calls, {e.cpu_time_total / 1e3:.2f} ms host" for e in stalls]
    lines += ["", table]
    text = "\n".join(lines)
    print(text)
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
