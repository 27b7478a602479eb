"""External check (DESIGN §7.4): predict Vidur's per-operator H100 timings with a profile, operator by operator.

Vidur (github.com/microsoft/vidur) profiled one transformer layer of Llama-2-7B, Llama-2-70B and CodeLlama-34B on
an H100 with sarathi-serve's kernels, fp16, for 1..4096 tokens and tensor-parallel degrees 1, 2, 4, 8 emulated by
shard sizes (data/vidur/README.md). Each `time_stats.<op>.median` is the sum of the CUDA kernel durations inside
that operator, in milliseconds, per layer. None of it was used to fit anything here, and it was measured with
another software stack, so predicting it tests whether the cost model and its curves transfer.

Every Vidur operator is priced by the cost model's own operator of the same layer (`sim.cost.linear_ops` of that
model at that TP degree, one layer, fp16, all-reduces left out as Vidur profiles them separately) through
`sim.cost.price`; the residual add, which the cost model folds into its norms, is priced as an elementwise operator
reading two and writing one activation. Written: reports/h100/vidur-check.md, .json and a scatter plot.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from sim.errors import UserError
from validation.calibrate import CALIBRATED_H100, REPO, error_stats
from validation.clikit import user_errors
from validation.records_file import iter_records

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "vidur" / "h100"
SMALL_TOKENS = 64  # at or below this many tokens a layer's operators are decode-sized (microseconds)
# Vidur operator -> the cost model's operator of the same layer (None: built here)
OPS = {"emb": "embedding", "input_layernorm": "attn_norm", "attn_pre_proj": "qkv_proj", "attn_rope": "rope",
       "attn_post_proj": "o_proj", "post_attention_layernorm": "mlp_norm", "mlp_up_proj": "gate_up_proj",
       "mlp_act": "swiglu", "mlp_down_proj": "down_proj", "add": None}
GEMMS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")


def read_rows(data_dir: Path = DATA_DIR, max_rows: int | None = None) -> list[dict]:
    """Vidur's rows from every `<model>/mlp.csv` under `data_dir` (optionally the first `max_rows` of each)."""
    files = sorted(Path(data_dir).glob("*/mlp.csv"))
    if not files:
        raise UserError(f"no Vidur profiling data under {data_dir}: expected <model>/mlp.csv files "
                        "(see data/vidur/README.md)")
    rows = []
    for path in files:
        with path.open(newline="") as f:
            for i, row in enumerate(csv.DictReader(f)):
                if max_rows is not None and i >= max_rows:
                    break
                rows.append({"model": path.parent.name, **row})
    return rows


@lru_cache(maxsize=64)
def _context(model: str, d: int, heads: int, kv_heads: int, inter: int, vocab: int, tp: int, profile_name: str):
    from sim.cost import CostContext
    from sim.model import ModelSpec

    spec = ModelSpec(name=model, hidden_size=d, num_layers=1, num_heads=heads, num_kv_heads=kv_heads,
                     intermediate_size=inter, vocab_size=vocab, source="Vidur mlp.csv columns")
    return CostContext(spec, _profile(profile_name), weights="fp16", kv="fp16", activations="fp16", tp=tp, layers=1)


@lru_cache(maxsize=8)
def _profile(name: str):
    from sim.hardware import load_profile

    return load_profile(name)


def predict_row(row: dict, profile_name: str) -> dict[str, tuple[float, float]]:
    """Predicted (seconds, fewest bytes) of each Vidur operator of one row (one layer at `num_tokens` tokens and
    its TP degree)."""
    from sim.cost import Op, linear_ops, price

    d, tokens, tp = int(row["n_embd"]), int(row["num_tokens"]), int(row["num_tensor_parallel_workers"])
    ctx = _context(row["model"], d, int(row["n_head"]), int(row["n_kv_head"]), int(row["n_expanded_embd"]),
                   int(row["vocab_size"]), tp, profile_name)
    ops = {op.name: op for op in linear_ops(ctx, tokens, 0, head=False)}
    ops["add"] = Op("add", 1, 1, tokens * d, 3 * tokens * d * 2.0, "elementwise")  # x + residual -> out, fp16
    priced = {vop: price(replace(ops[cop or vop], count=1), ctx) for vop, cop in OPS.items()}
    return {vop: (c.time_s, c.bytes) for vop, c in priced.items()}


def compare(rows: list[dict], profile_name: str) -> list[dict]:
    """One point per (row, operator): model, tokens, TP, operator, measured and predicted seconds."""
    points = []
    for row in rows:
        pred = predict_row(row, profile_name)
        for op in OPS:
            cell = row.get(f"time_stats.{op}.median", "")
            if cell in ("", "nan"):
                continue
            meas_s = float(cell) * 1e-3  # Vidur writes milliseconds
            if meas_s <= 0:
                continue
            points.append({"model": row["model"], "tokens": int(row["num_tokens"]),
                           "tp": int(row["num_tensor_parallel_workers"]), "op": op, "measured_s": meas_s,
                           "predicted_s": pred[op][0], "bytes": pred[op][1]})
    return points


def summarize(points: list[dict]) -> dict:
    """Per operator and overall: |relative error| stats for all rows, small (<= 64 tokens) and large ones, and the
    signed median (positive: the model predicts too slow)."""
    def block(sel):
        rel = [p["predicted_s"] / p["measured_s"] - 1 for p in sel]
        small = [r for r, p in zip(rel, sel) if p["tokens"] <= SMALL_TOKENS]
        large = [r for r, p in zip(rel, sel) if p["tokens"] > SMALL_TOKENS]
        bands = {}
        for lo, hi in ((0, 64), (64, 512), (512, 1 << 30)):  # signed medians: where the misses sit
            sel_rel = [r for r, p in zip(rel, sel) if lo < p["tokens"] <= hi]
            bands[f"{lo + 1}-{hi if hi < 1 << 30 else 'max'}"] = float(np.median(sel_rel)) if sel_rel else None
        return {"all": error_stats(rel), "small": error_stats(small), "large": error_stats(large),
                "signed_median": float(np.median(rel)) if rel else None, "signed_median_by_tokens": bands}

    out = {op: block([p for p in points if p["op"] == op]) for op in OPS}
    out["overall"] = block(points)
    out["gemms"] = block([p for p in points if p["op"] in GEMMS])
    return out


def plot(results: dict[str, list[dict]], path: Path) -> None:
    """Predicted against measured, log-log, one panel per profile, one colour per operator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6.2 * len(results), 5.6), squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, (name, points) in zip(axes[0], results.items()):
        for i, op in enumerate(OPS):
            sel = [p for p in points if p["op"] == op]
            ax.scatter([p["measured_s"] * 1e6 for p in sel], [p["predicted_s"] * 1e6 for p in sel], s=4, alpha=0.5,
                       color=colors(i), label=op)
        lim = [0.5, 2e4]
        ax.plot(lim, lim, "k-", lw=0.8)
        ax.plot(lim, [v * 1.25 for v in lim], "k:", lw=0.6)
        ax.plot(lim, [v / 1.25 for v in lim], "k:", lw=0.6)
        ax.set(xscale="log", yscale="log", xlim=lim, ylim=lim, xlabel="Vidur measured per layer (us)",
               ylabel="memwall predicted (us)", title=f"profile {name}")
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].legend(fontsize=7, markerscale=3, loc="upper left")
    fig.suptitle("Vidur H100 per-operator timings (fp16, sarathi kernels) vs the cost model; dotted: ±25%", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pct(v) -> str:
    return "–" if v is None else f"{v:.0%}"


def write_markdown(summary: dict, meta: dict, path: Path) -> None:
    names = list(summary)
    lines = ["# External check: Vidur's H100 operator timings", "",
             f"Command: `memwall report vidur` (profiles: {', '.join(names)}). Data: "
             f"{meta['points']} (row, operator) points from {', '.join(meta['files'])} (Vidur commit 7d47513, "
             "see data/vidur/README.md): one layer, fp16, 1..4096 tokens, TP 1/2/4/8 emulated by shard sizes, "
             "medians of ~20 repetitions in ms. Nothing here was used to fit a profile.", "",
             "|relative error| = |predicted − measured| / measured. *small*: ≤ 64 tokens (decode-sized); *bias*: the "
             "signed median (+: predicted too slow).", ""]
    head = "| operator | " + " | ".join(f"{n}: median / p90 / max (small; large) | bias" for n in names) + " |"
    lines += [head, "|---|" + "---|---|" * len(names)]
    for op in [*OPS, "gemms", "overall"]:
        cells = []
        for n in names:
            s = summary[n][op]
            a = s["all"]
            cells.append(f"{_pct(a['median'])} / {_pct(a['p90'])} / {_pct(a['max'])} "
                         f"({_pct(s['small']['median'])}; {_pct(s['large']['median'])}) | {s['signed_median']:+.0%}"
                         if a["n"] else "– | –")
        label = {"gemms": "**4 GEMMs**", "overall": "**all operators**"}.get(op, f"`{op}`")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "![predicted vs measured](vidur-check.png)", "", "## Where the model misses, and why", ""]
    lines += [f"- {t}" for t in meta["notes"]]
    path.write_text("\n".join(lines) + "\n")


def notes(summary: dict, points: dict[str, list[dict]]) -> list[str]:
    """Explanations of the misses, with the numbers they rest on taken from this run's points."""
    pts = list(points.values())[-1]  # the last profile given (the calibrated one by default)
    out = []
    tiny = [p["measured_s"] for p in pts if p["op"] in ("add", "mlp_act", "attn_rope") and p["tokens"] <= 8]
    if tiny:
        out.append(f"Tiny elementwise operators (add, SiLU-and-mul, RoPE at ≤ 8 tokens) take a median "
                   f"{np.median(tiny) * 1e6:.1f} us in Vidur, and its CSV's resolution is 1 us (0.001 ms). Vidur "
                   "sums kernel durations only, while the cost model charges every kernel its in-graph floor "
                   "(`kernel_overhead_us`: a tiny kernel plus the gap to the next) plus the memory curve's fixed "
                   "time, so at this size the relative error measures the overhead, not the bandwidth.")
    big = max((p["tokens"] for p in pts), default=0)
    rates = {}
    for op in ("emb", "input_layernorm", "mlp_act", "add"):
        sel = [p["bytes"] / p["measured_s"] for p in pts if p["op"] == op and p["tokens"] == big and p["tp"] == 1]
        if sel:
            rates[op] = float(np.median(sel)) / 1e12
    if rates:
        listed = ", ".join(f"{op} {r:.2f}" for op, r in rates.items())
        out.append(f"At {big} tokens and TP 1, Vidur's elementwise operators move their fewest bytes at ({listed}) "
                   "TB/s. The embedding and RMSNorm are far below a streaming kernel, so they are predicted too fast; "
                   "the likely cause (not checked against sarathi's code) is several kernels or fp32 intermediates "
                   "per operator, which a one-kernel fewest-bytes price cannot see. The residual "
                   "add streams faster than the profile's memory ceiling (fitted on our reads and GEMVs), so it is "
                   "predicted too slow.")
    for n, s in summary.items():
        g = s["gemms"]
        band = ", ".join(f"{k} tokens {v:+.0%}" for k, v in g["signed_median_by_tokens"].items() if v is not None)
        out.append(f"Profile {n}: the four GEMMs have a median |error| of {_pct(g['all']['median'])}; signed "
                   f"medians by size: {band}.")
    def vidur_us(tokens):
        sel = [p["measured_s"] for p in pts if p["model"] == "Llama-2-7b-hf" and p["op"] == "mlp_up_proj"
               and p["tp"] == 1 and p["tokens"] == tokens]
        return float(np.median(sel)) * 1e6 if sel else None

    ours = _our_gemm_us(28672, 4096, (64, 256))
    v64, v256 = vidur_us(64), vidur_us(256)
    if v64 and v256:
        text = (f"Most GEMM misses sit between 64 and 512 tokens, where Vidur's fp16 kernels (sarathi-serve, "
                f"mid-2024 cuBLAS) slow down sooner than ours: Llama-2-7B's up-projection takes {v64:.0f} us at 64 "
                f"tokens and {v256:.0f} us at 256 (x{v256 / v64:.2f})")
        if ours:
            text += (f", while our bf16 torch.matmul (torch 2.11) on the larger 28672x4096 matrix takes {ours[0]:.0f} "
                     f"and {ours[1]:.0f} us at 64 and 256 rows (x{ours[1] / ours[0]:.2f}, "
                     "reports/h100/microbench.jsonl)")
        out.append(text + ". The curves were fitted on our stack, so this part of the error is the software stack, "
                   "which is what this check is for. TP shards also make narrow matrices that sit low on the curves.")
    out.append("Vidur does not say whether its H100 is the SXM (3.35 TB/s) or NVL (3.9 TB/s) part; its 70B "
               "up-projection at 1 token streams ~3.0 TB/s (data/vidur/README.md), consistent with either.")
    return out


def _our_gemm_us(N: int, K: int, rows: tuple[int, ...]) -> list[float] | None:
    """Our microbenchmark's medians (us) for an (N, K) projection at the given rows, if the records are there."""
    path = REPO / "reports" / "h100" / "microbench.jsonl"
    if not path.exists():
        return None
    want = {f"gemm/bf16/M={m}/N={N}/K={K}": m for m in rows}
    got = {}
    for _, rec in iter_records(path, "microbenchmark records"):
        if rec.get("key") in want and rec.get("status") == "ok":
            got[want[rec["key"]]] = rec["median_s"] * 1e6
    return [got[m] for m in rows] if len(got) == len(rows) else None


def run_check(profiles: list[str], data_dir: Path = DATA_DIR, out_dir: Path = Path("reports/h100"),
              max_rows: int | None = None) -> dict:
    """Predict every row with every profile; write vidur-check.md/.json/.png under `out_dir`; return the summary."""
    rows = read_rows(data_dir, max_rows)
    results = {_profile(name).name: compare(rows, name) for name in profiles}
    summary = {name: summarize(points) for name, points in results.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    files = sorted({f"data/vidur/h100/{r['model']}/mlp.csv" for r in rows})
    meta = {"points": len(next(iter(results.values()))), "files": files, "notes": notes(summary, results)}
    plot(results, out_dir / "vidur-check.png")
    write_markdown(summary, meta, out_dir / "vidur-check.md")
    (out_dir / "vidur-check.json").write_text(json.dumps(
        {"source": "Vidur commit 7d47513 (data/vidur/README.md)", "files": files, "rows": len(rows),
         "small_tokens": SMALL_TOKENS, "profiles": summary, "notes": meta["notes"]}, indent=1) + "\n")
    return summary


@user_errors
def report_vidur_command(
    profile: Optional[list[str]] = typer.Option(None, help="profile(s) to check (default: h100-sxm, and the "
                                                           "calibrated H100 profile when it exists)"),
    out: Path = typer.Option(Path("reports/h100"), help="output folder"),
    data: Path = typer.Option(DATA_DIR, help="folder of Vidur <model>/mlp.csv files"),
):
    """Predict Vidur's per-operator H100 timings (an external software stack) and report the error per operator."""
    from rich.console import Console

    names = list(profile or ["h100-sxm"] + ([str(CALIBRATED_H100)] if CALIBRATED_H100.exists() else []))
    for n in names:
        _profile(n)  # an unknown name fails here, in one sentence
    summary = run_check(names, data, out)
    for n, s in summary.items():
        a = s["overall"]["all"]
        Console().print(f"{n}: overall |rel err| median {a['median']:.1%}, p90 {a['p90']:.1%} over {a['n']} points; "
                        f"GEMMs median {s['gemms']['all']['median']:.1%}")
    Console().print(f"wrote {out / 'vidur-check.md'}, {out / 'vidur-check.json'}, {out / 'vidur-check.png'}")
