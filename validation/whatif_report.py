"""The what-if report: the memory wall in numbers. For one scenario (default: llama-3.1-8b on h100-sxm, batch 1)
every strategy is simulated on the base chip and on chips with 2x bandwidth, 2x compute and 2x capacity; the
report tabulates tokens/s, the gain over the base chip and the binding roof, and says in words (computed from the
numbers, not written in advance) which strategies are bandwidth-bound and which compute-bound.
"""

from __future__ import annotations

import re
from pathlib import Path

from sim.errors import UserError
from sim.scenario import Scenario
from validation.compare import parse_strategies, variants, whatif
from validation.format import bound_of

SCALES = ["bandwidth=2", "flops=2", "capacity=2"]


def _png(rows: list[dict], chips: list[str], strategies: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 4.2))
    width = 0.8 / len(chips)
    x = np.arange(len(strategies))
    for j, chip in enumerate(chips):
        vals = [next(r["result"].output_throughput_tok_s for r in rows if r["chip"] == chip and r["strategy"] == s)
                for s in strategies]
        ax.bar(x + j * width, vals, width, label=chip)
    ax.set_xticks(x + width * (len(chips) - 1) / 2, strategies)
    ax.set_ylabel("output tokens/s (simulated)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _roofline_png(s: Scenario, names: list[str], path: Path) -> list[str]:
    """Every pass of each strategy placed by arithmetic intensity (FLOP/byte) and achieved FLOP/s, under the chip's
    datasheet roofline. Returns one line per strategy with its median pass position."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from sim.engine import simulate
    from validation.compare import with_strategy

    hw = s.resolve_hardware()
    peak, bw = hw.matmul_flops_per_s(s.precision.weights, s.precision.activations), hw.hbm_bandwidth_bytes_per_s
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = np.logspace(-1, 4.5, 200)
    ax.loglog(xs, np.minimum(peak, bw * xs) / 1e12, "k-", lw=1.5, label=f"{hw.name} roofline (datasheet)")
    lines = []
    for kind in names:
        res, rec = simulate(with_strategy(s, kind))
        if not res.fits:  # no passes to place on the roofline
            lines.append(f"- **{kind}**: does not fit ({res.message})")
            continue
        cols = rec.columns()
        ok = (cols["bytes"] > 0) & (cols["duration_s"] > 0)
        intensity = cols["flops"][ok] / cols["bytes"][ok]
        achieved = cols["flops"][ok] / cols["duration_s"][ok] / max(s.parallel.tp, 1)
        ax.scatter(intensity, achieved / 1e12, s=8, alpha=0.5, label=kind)
        lines.append(f"- **{kind}**: median pass at {np.median(intensity):,.1f} FLOP/byte, "
                     f"{np.median(achieved) / 1e12:,.1f} TFLOP/s achieved ({np.median(achieved) / peak:.0%} of peak; "
                     f"ridge point {peak / bw:,.0f} FLOP/byte)")
    ax.axvline(peak / bw, color="grey", ls=":", lw=1)
    ax.set_xlabel("arithmetic intensity of the pass (FLOP / HBM byte)")
    ax.set_ylabel("achieved TFLOP/s per GPU (simulated)")
    ax.set_title(f"passes on the roofline: {s.resolve_model().name} on {hw.name}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return lines


def _batch_png(s: Scenario, names: list[str], path: Path, batches=(1, 2, 4, 8, 16, 32, 64, 128)) -> list[str]:
    """Tokens/s versus static batch size per strategy (each point: one batch of that many requests)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sim.engine import simulate
    from sim.scenario import scenario_from_dict
    from validation.compare import with_strategy

    fig, ax = plt.subplots(figsize=(7, 4.2))
    table = ["| strategy | " + " | ".join(f"batch {b}" for b in batches) + " |",
             "|---|" + "---:|" * len(batches)]
    for kind in names:
        ys = []
        for b in batches:
            data = with_strategy(s, kind).model_dump(mode="json")
            data["batching"] = {"kind": "static", "batch_size": b}
            data["workload"] = {**data["workload"], "kind": "closed", "num_requests": b}
            data["workload"].pop("rate_qps", None)
            data["workload"].pop("cv", None)
            r = simulate(scenario_from_dict(data))[0]
            ys.append(r.output_throughput_tok_s if r.fits else float("nan"))
        ax.loglog(batches, ys, "o-", label=kind)
        table.append(f"| {kind} | " + " | ".join("does not fit" if y != y else f"{y:,.0f}" for y in ys) + " |")
    ax.set_xlabel("static batch size")
    ax.set_ylabel("output tokens/s (simulated)")
    ax.set_title("tokens/s versus batch size", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return table


def write_report(scenarios: list[tuple[str, Scenario]], out_dir: Path, strategies: str = "all") -> Path:
    """Run the what-if comparison for each (label, scenario) and write whatif.md (+ one PNG per scenario)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = parse_strategies(strategies)
    lines = ["# What-if: where each decoding strategy hits the wall", "",
             "Generated by `memwall report whatif` from simulations with the shipped (datasheet, uncalibrated) "
             "profiles; every number below is a prediction of the simulator, not a measurement. Gain = tokens/s "
             "on the variant over tokens/s on the base chip for the same strategy.", ""]
    for label, s in scenarios:
        chips = variants(s, SCALES, [])
        rows = whatif(s, chips, names)
        chip_names = [c.label for c in chips]
        if not any(r["result"].fits for r in rows):  # a report of empty cells would say nothing
            raise UserError(f"{label}: no strategy fits on any chip of the report: {rows[0]['result'].message}")
        lines += [f"## {label}", "", f"Model `{rows[0]['result'].model}`, {s.batching.kind} batching, "
                  f"strategies with their default parameters unless the scenario sets them.", ""]
        lines.append("| strategy | " + " | ".join(chip_names) + " | bound on base |")
        lines.append("|---|" + "---:|" * len(chip_names) + "---|")
        for kind in names:
            cells = []
            for c in chip_names:
                r = next(x for x in rows if x["chip"] == c and x["strategy"] == kind)
                res = r["result"]
                cells.append("does not fit" if not res.fits else f"{res.output_throughput_tok_s:,.0f}"
                             + ("" if c == chip_names[0] or r["gain"] is None else f" ({r['gain']:.2f}x)"))
            base = next(x for x in rows if x["chip"] == chip_names[0] and x["strategy"] == kind)["result"]
            bound = (f"{bound_of(base)} ({base.memory_bound_fraction:.0%} of time memory-bound)" if base.fits
                     else "does not fit")
            lines.append(f"| {kind} | " + " | ".join(cells) + f" | {bound} |")
        lines.append("")
        gains = {(r["strategy"], r["chip"]): r["gain"] for r in rows}
        bw, fl = chip_names[1], chip_names[2]
        for kind in names:
            g_bw, g_fl = gains[(kind, bw)], gains[(kind, fl)]
            if g_bw is None or g_fl is None:
                continue
            # what the what-ifs say, which may differ from the time split of the bound column: a run 48% memory-bound
            # can still gain more from bandwidth (its compute-bound passes may be few and short)
            wall = ("more HBM bandwidth helps it most" if g_bw > g_fl + 0.02 else "more compute helps it most"
                    if g_fl > g_bw + 0.02 else "bandwidth and compute help it about equally")
            res = next(x for x in rows if x["chip"] == chip_names[0] and x["strategy"] == kind)["result"]
            g_cap = gains.get((kind, chip_names[3])) if len(chip_names) > 3 else None
            cap = f", 2x capacity {g_cap:.2f}x" if g_cap else ""
            lines.append(f"- **{kind}**: {res.output_throughput_tok_s:,.0f} tok/s, "
                         f"{res.committed_per_pass:.2f} tokens per iteration at "
                         f"{res.arithmetic_intensity_flop_per_byte:,.1f} FLOP/byte (MBU {res.mbu:.0%}, MFU "
                         f"{res.mfu:.0%}). 2x bandwidth gives {g_bw:.2f}x, 2x compute {g_fl:.2f}x{cap}: "
                         f"{wall}.")
        png = out_dir / ("whatif-" + re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") + ".png")
        _png(rows, chip_names, names, png, label)
        lines += ["", f"![{label}]({png.name})", ""]
    first = scenarios[0][1]
    lines += ["## Passes on the roofline", "",
              f"Every pass of each strategy for the first scenario ({scenarios[0][0]}), placed by its arithmetic "
              "intensity and the FLOP/s it achieves in the simulation. Left of the ridge point a pass is bound by "
              "HBM bandwidth, right of it by compute.", ""]
    lines += _roofline_png(first, names, out_dir / "roofline.png")
    lines += ["", "![roofline](roofline.png)", "", "## Tokens/s versus batch size", "",
              "Static batches of 1 to 128 requests of the first scenario's lengths: batching amortizes the weight "
              "reads of memory-bound strategies until they turn compute-bound.", ""]
    lines += _batch_png(first, names, out_dir / "batch.png")
    lines += ["", "![tokens/s versus batch size](batch.png)", ""]
    path = out_dir / "whatif.md"
    path.write_text("\n".join(lines) + "\n")
    return path
