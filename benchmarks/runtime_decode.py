"""Decode throughput of the runtime on one GPU, against the bandwidth roofline and Hugging Face eager `generate`.

Run on the GPU machine (from the repo root, with sim's wheels on PYTHONPATH):
    python3 benchmarks/runtime_decode.py --out $OUT/runtime_decode.json
Steps, each recorded in the JSON (device, driver, torch/triton versions and date at the top):
 1. Reference bandwidths: torch sum over a 4.3 GB bf16 tensor (streaming read) and a device copy of it.
 2. Hugging Face transformers: LlamaForCausalLM from a Llama-3.1-8B LlamaConfig, random init, bf16; eager
    `generate` at batch 1 after a 512-token prompt; and a logits cross-check of our model built from its weights.
 3. Projection kernels: per shape, Triton configs (and cuBLAS) timed back to back inside a CUDA graph over 16
    weight copies (cold weights, like the 32 layers of a decode step); the best config per shape is used next.
 4. Decode: batch 1..256 at 512 tokens of context (paged KV, block tables shuffled), CUDA graph per batch, CUDA
    event time of each replay (median of many after warm-up), with NVML telemetry; variants triton / cublas
    projections, and at batch 1 also without graphs.
 5. Per-kernel profile of the batch-1 and batch-64 graphs (torch.profiler).
Roofline bytes per pass = all non-embedding weights + KV read (B * (ctx + 1) * kappa) + KV written (B * kappa).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.runtime_sweeps import events_ms, sweep_attention, sweep_projections  # noqa: E402
from runtime import ops  # noqa: E402
from runtime.graphs import DecodeGraphs  # noqa: E402
from runtime.kernels import linear as L  # noqa: E402
from runtime.model import Transformer  # noqa: E402
from runtime.telemetry import NvmlSampler  # noqa: E402
from sim.model import load_model  # noqa: E402

RESULT: dict = {}


def save(path: Path) -> None:
    path.write_text(json.dumps(RESULT, indent=1, default=str))


def bandwidth() -> dict:
    n = 2**31  # 4.29 GB of bf16
    x = torch.empty(n, dtype=torch.bfloat16, device="cuda").normal_()
    y = torch.empty_like(x)
    read = statistics.median(events_ms(x.sum, 10))
    copy = statistics.median(events_ms(lambda: y.copy_(x), 10))
    x = y = None  # free the 8.6 GB before the models load
    torch.cuda.empty_cache()
    return {"bytes": 2 * n, "sum_ms": read, "read_bytes_per_s": 2 * n / (read / 1e3),
            "copy_ms": copy, "copy_bytes_per_s": 4 * n / (copy / 1e3)}


def hf_model(spec, dtype=torch.bfloat16):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=spec.vocab_size, hidden_size=spec.hidden_size,
                      intermediate_size=spec.intermediate_size,
                      num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
                      num_key_value_heads=spec.num_kv_heads, max_position_embeddings=spec.max_position_embeddings,
                      rms_norm_eps=spec.rms_norm_eps, rope_theta=spec.rope_theta, rope_scaling=spec.rope_scaling,
                      tie_word_embeddings=False)
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg)
    torch.set_default_dtype(old)
    return model.eval(), cfg


def hf_generate_tok_s(model, prompt_len: int, new: int) -> dict:
    ids = torch.randint(0, model.config.vocab_size, (1, prompt_len), device="cuda")

    def gen(n):
        torch.cuda.synchronize()
        t = time.perf_counter()
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                       pad_token_id=0)
        torch.cuda.synchronize()
        return time.perf_counter() - t

    gen(2)  # warm-up
    t1, tn = gen(1), gen(1 + new)
    return {"prompt": prompt_len, "new_tokens": new, "t_1_s": t1, "t_n_s": tn, "decode_tok_s": new / (tn - t1)}


def cross_check(spec, layers: int = 4) -> dict:
    """Our bf16 model against transformers on the same random weights: a `layers`-deep model of the full width
    (same heads, vocabulary, llama3 RoPE), transformers in float32 as the reference. Reports our bf16 error and
    transformers' own bf16 error against it, for a 64-token prefill and 6 graph-decoded tokens after it."""
    from runtime.forward import SeqInput
    short = type(spec)(**{**spec.model_dump(), "num_layers": layers})
    hf32, _ = hf_model(short, dtype=torch.float32)
    sd = hf32.state_dict()
    ids = torch.randint(0, spec.vocab_size, (70,), generator=torch.Generator().manual_seed(1)).tolist()
    with torch.no_grad():
        ref = hf32(torch.tensor([ids], device="cuda")).logits[0].float()
        hf16 = hf32.to(torch.bfloat16)
        theirs = hf16(torch.tensor([ids], device="cuda")).logits[0].float()
    model = Transformer.from_hf_state_dict(short, {k: v.float() for k, v in sd.items()}, device="cuda",
                                           max_positions=8192)
    del hf32, hf16, sd
    cache = model.paged_cache(8, 16)
    blocks = [5, 2, 7, 0, 1]
    pre = model.run(cache, [SeqInput(ids[:64], 0, blocks, num_logits=64)])
    graphs = DecodeGraphs(model, cache, max_context=80, buckets=[1])
    dec = torch.cat([graphs.run([ids[p]], [p], [blocks])[0].clone() for p in range(64, 70)])
    ours = torch.cat([pre, dec])

    def rel(a, b):
        return ((a - b).norm() / b.norm()).item()

    out = {"layers": layers, "ours_prefill_rel_err": rel(pre, ref[:64]), "ours_decode_rel_err": rel(dec, ref[64:]),
           "hf_bf16_prefill_rel_err": rel(theirs[:64], ref[:64]), "hf_bf16_decode_rel_err": rel(theirs[64:], ref[64:]),
           "ours_argmax_agree": (ours.argmax(-1) == ref.argmax(-1)).float().mean().item(),
           "hf_bf16_argmax_agree": (theirs.argmax(-1) == ref.argmax(-1)).float().mean().item()}
    del model, cache, graphs
    torch.cuda.empty_cache()
    return out


def decode_run(model, cache, batch: int, ctx: int, reps: int, kappa: float, weight_bytes: int, read_bw: float) -> dict:
    bt = cache.block_tokens
    per_seq = math.ceil((ctx + 1) / bt)
    perm = torch.randperm(cache.num_blocks, generator=torch.Generator().manual_seed(batch))[:batch * per_seq]
    tables = perm.view(batch, per_seq).tolist()
    graphs = DecodeGraphs(model, cache, max_context=ctx + 1, buckets=[batch])
    b = graphs.load([7] * batch, [ctx] * batch, tables)
    with NvmlSampler() as s:
        times = events_ms(lambda: graphs.replay(b, batch), reps, warmup=10)
    t_ms = statistics.median(times)
    bytes_pass = weight_bytes + batch * (ctx + 1) * kappa + batch * kappa
    roof_ms = bytes_pass / read_bw * 1e3
    return {"batch": batch, "context": ctx, "median_ms": t_ms, "min_ms": min(times), "max_ms": max(times),
            "reps": reps, "tok_s": batch / (t_ms / 1e3), "bytes_per_pass": bytes_pass,
            "bytes_per_token": bytes_pass / batch, "achieved_bytes_per_s": bytes_pass / (t_ms / 1e3),
            "roofline_ms": roof_ms, "fraction_of_roofline": roof_ms / t_ms, "telemetry": s.summary()}


def consistency(model, cache, ctx: int, batches=(1, 64)) -> dict:
    """The graph decode (Triton kernels, tuned configs) against the torch reference path on the same inputs."""
    from runtime.forward import SeqInput, build_meta, forward
    per_seq = math.ceil((ctx + 1) / cache.block_tokens)
    out = {}
    for b in batches:
        tables = [list(range(i * per_seq, (i + 1) * per_seq))[::-1] for i in range(b)]
        tokens = [(7 + 13 * i) % model.spec.vocab_size for i in range(b)]
        graphs = DecodeGraphs(model, cache, max_context=ctx + 1, buckets=[b])
        fast = graphs.run(tokens, [ctx] * b, tables)[0].clone()
        ops.CONFIG.triton = False
        try:
            meta = build_meta([SeqInput([t], ctx, tb) for t, tb in zip(tokens, tables)], cache, "cuda",
                              model.max_positions)
            ref = forward(model, cache, meta)
        finally:
            ops.CONFIG.triton = True
        out[str(b)] = {"rel_err": ((fast - ref).norm() / ref.norm()).item(),
                       "argmax_agree": (fast.argmax(-1) == ref.argmax(-1)).float().mean().item()}
        print(f"  consistency b={b}: {out[str(b)]}", flush=True)
    return out


def eager_decode(model, cache, ctx: int, reps: int) -> dict:
    """Batch 1 without graphs: Python launches every kernel (what graphs save)."""
    from runtime.forward import SeqInput, build_meta, forward
    blocks = list(range(math.ceil((ctx + 1) / cache.block_tokens)))
    meta = build_meta([SeqInput([7], ctx, blocks)], cache, "cuda", model.max_positions)
    times = events_ms(lambda: forward(model, cache, meta), reps, warmup=3)
    return {"median_ms": statistics.median(times), "tok_s": 1e3 / statistics.median(times)}


def profile(model, cache, batch: int, ctx: int) -> dict:
    from torch.profiler import ProfilerActivity, profile as tprofile
    per_seq = math.ceil((ctx + 1) / cache.block_tokens)
    tables = [list(range(i * per_seq, (i + 1) * per_seq)) for i in range(batch)]
    graphs = DecodeGraphs(model, cache, max_context=ctx + 1, buckets=[batch])
    b = graphs.load([7] * batch, [ctx] * batch, tables)
    for _ in range(5):
        graphs.replay(b, batch)
    torch.cuda.synchronize()
    reps = 5
    with tprofile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            graphs.replay(b, batch)
        torch.cuda.synchronize()
    kernels: dict[str, list[float]] = {}
    timeline = []
    for e in prof.events():
        if e.device_type.name == "CUDA":
            dur_ms = (e.device_time if hasattr(e, "device_time") else e.cuda_time) / 1e3
            kernels.setdefault(e.name[:90], []).append(dur_ms)
            timeline.append((e.time_range.start, e.name[:40], dur_ms))
    timeline.sort()
    per_step = len(timeline) // reps
    first = timeline[:per_step]
    # one layer's kernels in order (after the embedding lookup), with the gap before each (launch/drain time)
    layer = [{"kernel": n, "us": d * 1e3, "gap_before_us": (t - (first[i - 1][0] + first[i - 1][2] * 1e3))
              if i else 0.0} for i, (t, n, d) in enumerate(first[:14])]
    rows = sorted(({"kernel": k, "calls_per_step": len(v) / reps, "ms_per_step": sum(v) / reps}
                   for k, v in kernels.items()), key=lambda r: -r["ms_per_step"])
    span_ms = (first[-1][0] - first[0][0]) / 1e3 + first[-1][2] if first else 0.0
    return {"batch": batch, "kernels": rows[:25], "kernel_ms_per_step": sum(r["ms_per_step"] for r in rows),
            "first_step_span_ms": span_ms, "first_kernels": layer}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runtime_decode.json")
    ap.add_argument("--model", default="llama-3.1-8b")
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--batches", default="1,8,32,64,128,256")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--sweep", action="store_true",
                    help="sweep the projection and attention kernel configs first (~55 s) and use the fastest")
    args = ap.parse_args()
    out = Path(args.out)
    import triton
    props = torch.cuda.get_device_properties(0)
    probe = NvmlSampler()
    try:
        import transformers
        hf_version = transformers.__version__
    except ImportError:
        hf_version = None
    RESULT["env"] = {"device": torch.cuda.get_device_name(0), "sms": props.multi_processor_count,
                     "transformers": hf_version,
                     "driver": getattr(probe, "driver", None), "torch": torch.__version__, "triton": triton.__version__,
                     "cuda": torch.version.cuda, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                     "command": " ".join(sys.argv)}
    print(RESULT["env"], flush=True)
    spec = load_model(args.model)
    batches = [int(b) for b in args.batches.split(",")]

    def step(name, fn):
        t = time.time()
        try:
            RESULT[name] = fn()
        except Exception as e:
            RESULT[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
            print(RESULT[name]["traceback"], flush=True)
        print(f"[{name}] {time.time() - t:.1f} s", flush=True)
        save(out)
        return RESULT[name]

    bw = step("bandwidth", bandwidth)
    read_bw = bw["read_bytes_per_s"]
    print(f"stream read {read_bw / 1e12:.3f} TB/s, copy {bw['copy_bytes_per_s'] / 1e12:.3f} TB/s", flush=True)

    holder = {}
    if not args.skip_hf:
        def hf_part():
            hf, cfg = hf_model(spec)
            holder["sd"] = hf.state_dict()
            r = {"config_rope": {k: v for k, v in cfg.to_dict().items() if "rope" in k},
                 "attn_implementation": getattr(cfg, "_attn_implementation", None)}
            print("  HF config rope:", r["config_rope"], flush=True)
            r["generate_batch1"] = hf_generate_tok_s(hf, args.context, 32)
            print("  HF generate:", r["generate_batch1"], flush=True)
            holder["model"] = Transformer.from_hf_state_dict(spec, holder["sd"], device="cuda",
                                                             max_positions=8192)
            return r
        step("hf", hf_part)
        holder.pop("sd", None)
        torch.cuda.empty_cache()
        step("cross_check", lambda: cross_check(spec))
        print("  cross-check:", RESULT["cross_check"], flush=True)
    model = holder.get("model") or Transformer.random(spec, seed=0, device="cuda", max_positions=8192)
    holder.clear()
    torch.cuda.empty_cache()
    weight_bytes = model.weights.nbytes()
    kappa = spec.kv_bytes_per_token("bf16")
    max_b = max(batches)
    per_seq = math.ceil((args.context + 2) / 16)
    cache = model.paged_cache(num_blocks=max_b * per_seq, block_tokens=16)
    cache.k.normal_()  # timing does not depend on values; they only must not be NaN (the cache starts poisoned)
    cache.v.normal_()
    RESULT["model"] = {"name": spec.name, "weight_bytes_streamed": weight_bytes, "kv_bytes_per_token": kappa,
                       "cache_bytes": cache.nbytes}
    if args.sweep:
        step("projections", lambda: sweep_projections(model, cache))
        RESULT["tuned"] = {str(k): v for k, v in L.TUNED.items()}
        step("attention", lambda: sweep_attention(model, cache, args.context, batches))

    step("consistency", lambda: consistency(model, cache, args.context))

    def decode_all():
        rows = []
        # (name, Triton projections up to this many rows, cuBLAS residual GEMMs from this many rows, batches)
        variants = [("triton", 256, 64, batches), ("triton_no_addmm", 256, 10**9, [b for b in batches if b >= 64]),
                    ("cublas", 0, 0, batches)]
        for variant, max_rows, addmm_rows, bs in variants:
            ops.CONFIG.triton_max_rows, ops.CONFIG.cublas_residual_rows = max_rows, addmm_rows
            for b in bs:
                r = decode_run(model, cache, b, args.context, args.reps, kappa, weight_bytes, read_bw)
                r["variant"] = variant
                rows.append(r)
                print(f"  {variant:15s} batch {b:4d}: {r['median_ms']:8.3f} ms  {r['tok_s']:9.1f} tok/s  "
                      f"{r['fraction_of_roofline'] * 100:5.1f}% of roofline", flush=True)
        ops.CONFIG.triton_max_rows, ops.CONFIG.cublas_residual_rows = 256, 64
        return rows

    step("decode", decode_all)
    def eager_both():
        r = {"triton": eager_decode(model, cache, args.context, 10)}
        ops.CONFIG.triton = False
        try:
            r["torch"] = eager_decode(model, cache, args.context, 5)
        finally:
            ops.CONFIG.triton = True
        print("  eager (no graph) batch 1:", r, flush=True)
        return r

    step("eager_batch1", eager_both)
    step("profile_b1", lambda: profile(model, cache, 1, args.context))
    step("profile_b64", lambda: profile(model, cache, 64, args.context))

    # -- summary table -------------------------------------------------------------------------------------------
    print("\nsummary (median CUDA-event times, context", args.context, ")")
    hf_rate = (RESULT.get("hf") or {}).get("generate_batch1", {}).get("decode_tok_s")
    print(f"stream read {read_bw / 1e12:.3f} TB/s; copy {bw['copy_bytes_per_s'] / 1e12:.3f} TB/s; "
          f"HF eager batch 1: {hf_rate} tok/s; cross-check {RESULT.get('hf', {}).get('cross_check')}")
    for r in RESULT.get("decode", []) if isinstance(RESULT.get("decode"), list) else []:
        print(f"{r['variant']:15s} b={r['batch']:4d} {r['median_ms']:8.3f} ms {r['tok_s']:9.1f} tok/s "
              f"{r['achieved_bytes_per_s'] / 1e12:5.2f} TB/s {r['fraction_of_roofline'] * 100:5.1f}% roofline "
              f"throttled={r['telemetry'].get('throttled')}")
    save(out)


if __name__ == "__main__":
    main()
