"""The GPU runtime: a compact Llama-architecture inference transformer that executes the simulator's passes.

    model = Transformer.random(load_model("llama-3.1-8b"), device="cuda")   # or loaders.load_hf_checkpoint / load_gguf
    cache = model.paged_cache(num_blocks, block_tokens=16)                  # block ids owned by the caller
    ex = Executor(model, cache)                                             # CUDA graphs for decode-only passes
    ex.add_request(req_id, prompt_len, seed)
    duration_s, new_tokens = ex.execute(plan)                               # plan items: req_id, q, start, o, block_ids

Files: model.py (the model), weights.py (fused layout), rope.py, kv_cache.py, forward.py (one pass), ops.py (layer
ops: torch reference / Triton), kernels/ (Triton), graphs.py (CUDA graphs), executor.py, telemetry.py (NVML),
loaders.py + tokenizer.py + assets.py (real checkpoints). Only torch (and triton on CUDA) at import time; sim's
schema (pydantic) for ModelSpec and UserError.
"""
