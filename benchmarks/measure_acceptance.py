"""Measure real speculative acceptance with real weights: SmolLM2-135M-Instruct on the CPU, greedy verification.

Drafters:
  - self-speculation (layer skip): the target's first `draft_layers` layers and its LM head, run through the
    runtime's SpeculativeExecutor and the shared scheduler (continuous batching over all prompts at once);
  - prompt lookup (Saxena 2023, "prompt lookup decoding"): the last n-gram of the sequence (n = 3, 2, 1) is looked
    up earlier in the prompt + output and the k tokens after its latest earlier match are the draft; no model.
    Under greedy verification a draft is accepted while it equals the target's greedy continuation, so its
    acceptance is computed exactly from the target's greedy output (which speculative greedy decoding reproduces
    token for token: tests/runtime/test_speculative_runtime.py).
Output (data/acceptance/): smollm2.json (alpha, mean accepted, accepted-length histogram per drafter and k) and one
trace file per setting, `smollm2-<drafter>-k<k>.txt`, one accepted-draft count per verify pass, which
`strategy.acceptance_trace` of the simulator reads. alpha is the maximum-likelihood estimate under the truncated
geometric law: accepted drafts / (accepted drafts + rejections), a rejection being a verify with a < k.

    /work/venv/bin/python benchmarks/measure_acceptance.py [--new-tokens 64] [--draft-layers 8 16]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.assets import smollm2_gguf  # noqa: E402
from runtime.forward import greedy_generate  # noqa: E402
from runtime.loaders import load_gguf  # noqa: E402
from runtime.serve import VirtualClock, serve  # noqa: E402
from runtime.speculative import SpeculativeExecutor  # noqa: E402
from runtime.tokenizer import from_gguf  # noqa: E402
from sim.scenario import Continuous, Speculative as SpeculativeSpec  # noqa: E402
from sim.strategies.speculative import Speculative  # noqa: E402
from sim.workload import Request  # noqa: E402

OUT = ROOT / "data" / "acceptance"
CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"  # SmolLM2-Instruct's chat template


def lookup_draft(seq: list[int], k: int, max_ngram: int = 3) -> list[int]:
    """Prompt-lookup draft: the k tokens after the latest earlier occurrence of the longest matching suffix n-gram."""
    for n in range(max_ngram, 0, -1):
        if len(seq) <= n:
            continue
        tail = seq[-n:]
        for i in range(len(seq) - n - 1, -1, -1):
            if seq[i:i + n] == tail:
                return seq[i + n:i + n + k]
    return []


def lookup_acceptance(prompt: list[int], reference: list[int], k: int) -> list[tuple[int, int]]:
    """(drafted, accepted) per verify when decoding `reference` (the target's greedy output) with prompt lookup."""
    out, t = [], 0
    while t < len(reference):
        draft = lookup_draft(prompt + reference[:t], min(k, len(reference) - t - 1))
        a = 0
        while a < len(draft) and draft[a] == reference[t + a]:
            a += 1
        out.append((len(draft), a))
        t += a + 1
    return out


def stats(pairs: list[tuple[int, int]], k: int) -> dict:
    drafted = np.array([d for d, _ in pairs])
    acc = np.array([a for _, a in pairs])
    rejections = int((acc < drafted).sum())
    return {"verifies": len(pairs), "alpha": float(acc.sum() / max(acc.sum() + rejections, 1)),
            "mean_accepted": float(acc.mean()), "mean_tokens_per_verify": float(acc.mean() + 1),
            "accepted_histogram": np.bincount(acc, minlength=k + 1)[:k + 1].tolist(),
            "verifies_without_draft": int((drafted == 0).sum())}


def self_speculation(model, prompts, new_tokens, layers, k):
    """(drafted, accepted) per verify, and the outputs, of greedy self-speculation through the runtime."""
    blocks = sum(-(-(len(p) + new_tokens + k) // 16) for p in prompts)  # every request's KV at once
    ex = SpeculativeExecutor(model, blocks, 16, draft_layers=layers, acceptance_mode="greedy")
    reqs = [Request(i, 0.0, len(p), new_tokens) for i, p in enumerate(prompts)]
    for i, p in enumerate(prompts):
        ex.add_tokens(i, p)
    outs = {}
    free = ex.free
    ex.free = lambda r: (outs.__setitem__(r, ex.output(r, len(prompts[r]))), free(r))
    batching = Continuous(max_batch=len(prompts), max_tokens_per_iter=8192, kv_block_tokens=16)
    strat = Speculative(SpeculativeSpec(draft="self", draft_layers=layers, k=k), k, True)
    serve(reqs, batching, ex, blocks, {"scenario": "acceptance", "hardware": "cpu", "model": "smollm2",
                                      "strategy": "speculative", "batching": "continuous"},
          clock=VirtualClock(), strategy=strat, kv_extra=k)
    ex.free = free  # break the cycle through the wrapper so the cache is freed now
    return list(zip(ex.drafted, ex.accepted)), [outs[i] for i in range(len(prompts))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--draft-layers", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--ks", type=int, nargs="+", default=[2, 3, 4, 5, 6])
    args = ap.parse_args()
    torch.manual_seed(0)
    path = smollm2_gguf()
    model = load_gguf(path)
    tok = from_gguf(path)
    texts = [t for t in (OUT / "prompts.txt").read_text().splitlines() if t.strip()]
    prompts = [tok.encode(CHAT.format(t)).ids for t in texts]
    t0 = time.time()
    reference = [greedy_generate(model, p, args.new_tokens) for p in prompts]
    record = {"model": "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to float32)", "device": "cpu",
              "torch": torch.__version__, "python": platform.python_version(), "verification": "greedy",
              "prompts": "data/acceptance/prompts.txt (chat template applied)", "new_tokens": args.new_tokens,
              "command": "python benchmarks/measure_acceptance.py " + " ".join(sys.argv[1:]), "settings": {}}
    for k in args.ks:
        pairs = [x for p, ref in zip(prompts, reference) for x in lookup_acceptance(p, ref, k)]
        name = f"lookup-k{k}"
        record["settings"][name] = {"drafter": "prompt_lookup", "max_ngram": 3, "k": k, **stats(pairs, k)}
        (OUT / f"smollm2-{name}.txt").write_text("".join(f"{a}\n" for _, a in pairs))
        print(name, record["settings"][name]["alpha"], flush=True)
    for layers in args.draft_layers:
        for k in args.ks:
            pairs, outs = self_speculation(model, prompts, args.new_tokens, layers, k)
            if outs != reference:  # greedy speculation must reproduce greedy decoding exactly
                raise AssertionError(f"self-speculation ({layers} layers, k={k}) changed the greedy output")
            name = f"self{layers}-k{k}"
            record["settings"][name] = {"drafter": "self", "draft_layers": layers, "k": k, **stats(pairs, k)}
            (OUT / f"smollm2-{name}.txt").write_text("".join(f"{a}\n" for _, a in pairs))
            print(name, record["settings"][name]["alpha"], flush=True)
            (OUT / "smollm2.json").write_text(json.dumps(record, indent=1) + "\n")  # partial results survive
    record["elapsed_s"] = round(time.time() - t0, 1)
    (OUT / "smollm2.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
