"""Host-side profile (cProfile) of the block-diffusion executor serving the plan point block-22 on the GPU:
where the serving loop spends time outside device work. python3 benchmarks/profile_block_host.py"""
import cProfile, pstats, sys, time
sys.path.insert(0, ".")
from validation.validate import plan_scenarios
from validation.run import build
from runtime.serve import serve
from pathlib import Path
s = [x for x in plan_scenarios(Path("examples/validation/plan-h100.yaml")) if x.name == "block-22"][0]
setup, model, ex, blocks, reqs = build(s, "cuda")
base = dict(scenario="p", hardware="h", model="m", strategy="block_diffusion", batching="static", weight_bytes_per_gpu=0)
pr = cProfile.Profile()
t0 = time.perf_counter(); pr.enable()
res = serve(reqs, s.batching, ex, blocks, base, strategy=setup.strategy, kv_extra=setup.kv_extra)
pr.disable()
print("wall", time.perf_counter() - t0, "device", sum(t for _, _, t in ex.pass_log))
pstats.Stats(pr).sort_stats("tottime").print_stats(22)
