"""Sweep reports: Markdown and PNG figures from a sweep's table (issue [sweep]).

Per grid of the sweep: throughput against latency per chip and strategy with each series' Pareto frontier,
tokens/s per watt (TDP) and per dollar-hour, the best configuration per chip under the SLO, the points that do not
fit, and the answers to the sweep's `report.targets` ("at which bandwidth does decode reach 500 tok/s?"). Every
number in the text is computed here from the table; nothing is typed in by hand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import UserError
from validation.sweep import META_JSON


def read_table(out_dir: str | Path) -> list[dict]:
    """The rows of a sweep's table (Parquet, or CSV with numbers and booleans parsed back), in point order."""
    out_dir = Path(out_dir)
    if (out_dir / "results.parquet").exists():
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise UserError(f"{out_dir}/results.parquet needs pyarrow to read: pip install 'pyarrow>=14'") from None

        try:
            return pq.read_table(out_dir / "results.parquet").to_pylist()
        except (ValueError, OSError) as e:  # pyarrow's ArrowInvalid is a ValueError, its IO errors OSErrors
            raise UserError(f"{out_dir}/results.parquet cannot be read ({str(e).splitlines()[0][:120]}); rerun the "
                            f"sweep into {out_dir}: the table is rewritten from results.jsonl") from None
    path = out_dir / "results.csv"
    if not path.exists():
        raise UserError(f"{out_dir}: no results.parquet or results.csv; run `memwall sweep SWEEP.yaml --out {out_dir}`")
    import csv

    def parse(text: str) -> Any:
        if text in ("", "True", "False"):
            return None if text == "" else text == "True"
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for name in rows[0] if rows else ():
        # by column, as Parquet has types: a column of strings that happen to look like numbers stays strings
        values = [parse(r[name]) for r in rows]
        if all(v is None or not isinstance(v, str) for v in values):
            for r, v in zip(rows, values):
                r[name] = v
        else:
            for r in rows:
                r[name] = r[name] or None
    return rows


# -- the math ------------------------------------------------------------------------------------------------------


def pareto_front(latency: list[float], throughput: list[float]) -> list[int]:
    """Indices of the points that no other point beats on both lower latency and higher throughput, by latency."""
    order = sorted(range(len(latency)), key=lambda i: (latency[i], -throughput[i]))
    front, best = [], -math.inf
    for i in order:
        if throughput[i] > best:
            front.append(i)
            best = throughput[i]
    return front


def crossing(xs: list[float], ys: list[float], value: float) -> float | None:
    """The first x (xs ascending) at which y reaches `value`, interpolated linearly between the two points around
    it; None if y never reaches it in the range."""
    for i, (x, y) in enumerate(zip(xs, ys)):
        if y >= value:
            if i == 0:
                return x if y == value else None  # already above at the start: no crossing inside the range
            x0, y0 = xs[i - 1], ys[i - 1]
            return x0 + (value - y0) * (x - x0) / (y - y0)
    return None


def fit_inverse(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares of 1/y = a + b/x (time per token = a part that does not scale with x + a part that does):
    returns a, b and the largest relative error of the fitted y."""
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    b, a = np.polyfit(1 / x, 1 / y, 1)
    err = np.abs(1 / (a + b / x) - y) / y
    return float(a), float(b), float(err.max())


# -- formatting ----------------------------------------------------------------------------------------------------


def num(v: float | None) -> str:
    """3 significant digits, thousands separated; '-' for missing."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    a = abs(v)
    return f"{v:,.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}" if a >= 1 else f"{v:.3g}"


def ms(v: float | None) -> str:
    """A latency in ms, or in s from one second up."""
    return "-" if v is None else f"{v:.2f} s" if v >= 1 else f"{v * 1e3:.1f} ms"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _config(row: dict, varied: list[str]) -> str:
    return ", ".join(f"{p}={row[p]}" for p in varied if p != "hardware") or "-"


# -- figures -------------------------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _series(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        out.setdefault((r["chip"], f"{r.get('strategy')}/{r.get('batching')}"), []).append(r)
    return out


def _scatter_fronts(ax, rows: list[dict], lat: str, metric: str) -> None:
    """Points per (chip, strategy) series, and each series' Pareto frontier as a line."""
    chips = list(dict.fromkeys(r["chip"] for r in rows))
    strategies = list(dict.fromkeys(f"{r.get('strategy')}/{r.get('batching')}" for r in rows))
    colors = {c: f"C{i % 10}" for i, c in enumerate(chips)}
    markers = {s: "os^Dv<>p*h"[i % 10] for i, s in enumerate(strategies)}
    for (chip, strat), rs in _series(rows).items():
        x = [r[lat] * 1e3 for r in rs]
        y = [r[metric] for r in rs]
        label = chip if len(strategies) == 1 else f"{chip} {strat}"
        ax.scatter(x, y, s=14, alpha=0.45, color=colors[chip], marker=markers[strat])
        front = pareto_front(x, y)
        ax.plot([x[i] for i in front], [y[i] for i in front], "-", marker=markers[strat], ms=4, lw=1.4,
                color=colors[chip], label=label)


def _figure_pareto(path: Path, rows: list[dict], lat: str, slo_s: float | None, title: str) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    for ax, metric, ylabel in zip(axes, ("output_throughput_tok_s", "tok_s_per_w", "tok_s_per_usd_h"),
                                  ("output tokens/s", "output tokens/s per watt (TDP)", "output tokens/s per $/h")):
        use = [r for r in rows if r.get(metric) is not None]
        _scatter_fronts(ax, use, lat, metric)
        if slo_s and use and slo_s <= 2 * max(r[lat] for r in use):  # far beyond every point it would only squash them
            ax.axvline(slo_s * 1e3, color="k", ls="--", lw=1, label=f"SLO {slo_s * 1e3:g} ms")
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis, lim in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            # plain numbers at 1-2-5 steps on short log ranges (no decade inside them), decades on long ones
            axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if lim[1] / lim[0] < 100 else (1.0,)))
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"{lat} (ms)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_title("throughput vs latency (lines: Pareto frontier per chip)")
    axes[1].set_title("per watt")
    axes[2].set_title("per dollar-hour")
    axes[2].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- sections ------------------------------------------------------------------------------------------------------


def _best_tables(rows: list[dict], varied: list[str], slo: dict, pct: str) -> tuple[list[str], list[str]]:
    """Per chip: points, fitting, meeting the SLO, and the best point under the SLO by tok/s and by tok/s per $;
    then the chips with the most tokens/s per dollar and per watt (the headlines) and the points that do not fit."""
    limits = [f"{m.removesuffix('_s').upper()} {pct} <= {v * 1e3:g} ms" for m, v in slo.items()
              if m in ("ttft_s", "tpot_s") and v]
    ok = [r for r in rows if r.get("fits") and (r.get("meets_slo") if limits else (r.get("output_tokens") or 0) > 0)]
    cond = " and ".join(limits) if limits else "no SLO given: every fitting point counts"
    out = [f"Best configuration per chip under the SLO ({cond}), checked on the {pct} over each point's requests. "
           "Per watt divides by TDP (the board limit, not measured power) times the point's GPUs; per dollar by "
           "the profile's price per GPU-hour times its GPUs."]
    if any("[" in r["chip"] for r in rows):
        out[0] += (" What-if chips (names with [...]) carry their base chip's TDP and price, as if the change "
                   "came free.")
    lat = ["ttft_s", "tpot_s"] if slo.get("ttft_s") else ["tpot_s"]  # TTFT of a closed batch is mostly queueing
    header = ["chip", "points", "fit", "meet SLO", "objective", "configuration", "GPUs", "tok/s",
              *(f"{m.removesuffix('_s').upper()} {pct}" for m in lat), "tok/s/W", "tok/s per $/h", "$/Mtok"]
    lines = []
    for chip in dict.fromkeys(r["chip"] for r in rows):
        mine = [r for r in rows if r["chip"] == chip]
        good = [r for r in ok if r["chip"] == chip]
        counts = [str(len(mine)), str(sum(bool(r.get("fits")) for r in mine)), str(len(good))]
        if not good:
            tpots = [r[f"tpot_s.{pct}"] for r in mine if r.get("fits") and r.get(f"tpot_s.{pct}") is not None]
            closest = f" (lowest TPOT {pct}: {ms(min(tpots))})" if tpots else ""
            lines.append([chip, *counts, "-", f"nothing meets the SLO{closest}", *["-"] * (len(header) - 6)])
            continue
        picks: dict[int, list[str]] = {}  # point -> objectives it wins (one row when one point wins both)
        best = {}
        for objective, name in (("output_throughput_tok_s", "max tok/s"), ("tok_s_per_usd_h", "max tok/s per $")):
            cand = [r for r in good if r.get(objective) is not None]
            if cand:
                b = max(cand, key=lambda r: r[objective])
                picks.setdefault(b["point"], []).append(name)
                best[b["point"]] = b
        for point, names in picks.items():
            b = best[point]
            lines.append([chip, *counts, ", ".join(names), _config(b, varied), str(b["gpus"]),
                          num(b["output_throughput_tok_s"]), *(ms(b.get(f"{m}.{pct}")) for m in lat),
                          num(b.get("tok_s_per_w")), num(b.get("tok_s_per_usd_h")), num(b.get("usd_per_mtok"))])
    out += [""] + _table(header, lines) + [""]
    headlines = []
    for metric, what in (("tok_s_per_usd_h", "tokens/s per dollar-hour"), ("tok_s_per_w", "tokens/s per watt")):
        cand = sorted((r for r in ok if r.get(metric) is not None), key=lambda r: -r[metric])
        if cand:
            b = cand[0]
            runner = next((r for r in cand if r["chip"] != b["chip"]), None)
            tail = (f"; runner-up {runner['chip']} at {num(runner[metric])} ({b['chip']} is "
                    f"{b[metric] / runner[metric]:.2f}x higher)" if runner else "")
            cfg = _config(b, varied)
            per_mtok = f" (${num(b['usd_per_mtok'])} per million tokens)" if metric == "tok_s_per_usd_h" else ""
            headlines.append(f"- **Most {what} under the SLO: {b['chip']}**, {num(b[metric])}{per_mtok}"
                             + (f" with {cfg}" if cfg != "-" else "") + f" on {b['gpus']} GPU(s) "
                             f"({num(b['output_throughput_tok_s'])} tok/s, TPOT {pct} "
                             f"{ms(b.get(f'tpot_s.{pct}'))}){tail}.")
    out += headlines
    for chip in dict.fromkeys(r["chip"] for r in rows if not r.get("fits")):
        mine = [r for r in rows if r["chip"] == chip]
        bad = [r for r in mine if not r.get("fits")]
        # name the axis values that make it not fit: those seen only among the points that do not fit
        where = [f"{p} in {sorted(set(v))}" for p in varied if p != "hardware"
                 for v in [[r[p] for r in bad]] if set(v) < {r[p] for r in mine}]
        at = f" (all with {', '.join(where)})" if where else ""
        out.append(f"- {chip}: {len(bad)} of {len(mine)} points do not fit{at}: {bad[0].get('message')}.")
    return out + [""], headlines


def _target_section(out_dir: Path, grid: str, rows: list[dict], varied: list[str],
                    target: dict) -> tuple[list[str], list[str]]:
    """Where `metric` first reaches `value` along `x`, per group of the other varied axes, with a fit of
    1/metric = a + b/x when x is bandwidth (what scales with bandwidth and what does not)."""
    metric, value, xname = target["metric"], target["value"], target["x"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("fits") and r.get(metric) is not None and r.get(xname) is not None:
            key = (r["chip_base"], *(r[p] for p in varied if p not in ("hardware", xname)))
            groups.setdefault(key, []).append(r)
    if not groups:
        return [f"Target {metric} >= {num(value)}: no fitting points with both {metric} and {xname}.", ""], []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    out, headlines = [f"### When does {metric} reach {num(value)}?", ""], []
    for key, rs in groups.items():
        rs = sorted(rs, key=lambda r: r[xname])
        xs, ys = [r[xname] for r in rs], [r[metric] for r in rs]
        others = [p for p in varied if p not in ("hardware", xname)]
        label = ", ".join([key[0], *(f"{p}={v}" for p, v in zip(others, key[1:]))])
        ax.plot(xs, ys, "o-", ms=4, label=label)
        x_at = crossing(xs, ys, value)
        unit_base = rs[0][xname] / rs[0]["scale.bandwidth"] if xname == "hbm_bandwidth_tb_s" else None
        if x_at is None and ys[0] >= value:  # no crossing because it starts above: say so, not "does not reach"
            text = (f"- {label}: {metric} is {num(ys[0])} >= {num(value)} already at the lowest {xname} swept, "
                    f"{num(xs[0])}.")
        elif x_at is None:
            text = (f"- {label}: {metric} does not reach {num(value)} between {xname} = {num(xs[0])} and "
                    f"{num(xs[-1])} (it goes from {num(ys[0])} to {num(ys[-1])}).")
        else:
            ax.axvline(x_at, color="k", lw=0.8, ls=":")
            ratio = f" = {x_at / unit_base:.2f}x {key[0]}'s {num(unit_base)} TB/s" if unit_base else ""
            text = (f"- **{label}: {metric} reaches {num(value)} at {xname} = {num(x_at)}{ratio}** (linear "
                    f"interpolation between the swept points around it).")
        out.append(text)
        headlines.append(text)
        if unit_base and len(xs) >= 3:
            a, b, err = fit_inverse(xs, ys)
            first = 1 / ys[0]
            fit_at = b / (1 / value - a) if 1 / value > a else None
            headlines[-1] += (f" Under this model {a * 1e3:.3f} ms per token does not scale with bandwidth, capping "
                              f"it at {num(1 / a)} however fast the memory: a prediction, not a measurement.")
            out.append(f"  Fitting 1/{metric} = a + b/bandwidth to the points (largest error {err:.2%}): "
                       f"a = {a * 1e3:.3f} ms per token does not scale with bandwidth, {a / first:.0%} of the "
                       f"{first * 1e3:.2f} ms at {num(xs[0])} TB/s; so {metric} can never exceed 1/a = "
                       f"{num(1 / a)} however fast the memory"
                       + (f", and the fit puts the crossing at {num(fit_at)} TB/s "
                          f"({fit_at / unit_base:.2f}x)." if fit_at else "."))
            out.append(_model_caveat(key[0]))
    ax.axhline(value, color="k", ls="--", lw=1, label=f"target {num(value)}")
    ax.set_xlabel(xname)
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    png = f"{grid}-target-{metric}.png"
    fig.savefig(out_dir / png, dpi=110)
    plt.close(fig)
    return out + ["", f"![{metric} vs {xname}]({png})", ""], headlines


def _model_caveat(chip: str) -> str:
    """What the bandwidth what-if keeps fixed, read from the chip's profile."""
    try:
        from sim.hardware import load_profile

        eff = load_profile(chip).efficiency
    except UserError:
        return "  This is a prediction of memwall's cost model, not a measurement."
    return (f"  This is a prediction of memwall's cost model, not a measurement: scaling bandwidth keeps {chip}'s "
            f"efficiency curves (HBM up to {eff.memory.max_fraction:.0%} of peak, half-efficiency at "
            f"{eff.memory.half_size / 1e6:g} MB; source: {eff.source}) and its fixed {eff.kernel_overhead_us:g} us "
            "per kernel, and the compute and interconnect, unchanged; those fixed parts are the `a` above.")


# -- the report ----------------------------------------------------------------------------------------------------


def report_sweep(out_dir: str | Path) -> Path:
    """Write report.md and its PNG figures into a sweep's output folder; returns the Markdown path."""
    out_dir = Path(out_dir)
    if not (out_dir / META_JSON).exists():
        raise UserError(f"{out_dir}: no {META_JSON}; run `memwall sweep SWEEP.yaml --out {out_dir}` first")
    try:
        meta = json.loads((out_dir / META_JSON).read_text())
    except ValueError:
        meta = None
    if not (isinstance(meta, dict) and {"slo", "report", "name", "points", "source", "grids"} <= set(meta)
            and isinstance(meta["slo"], dict) and isinstance(meta["grids"], list)
            and all(isinstance(g, dict) and {"name", "axes"} <= set(g) for g in meta["grids"])
            and isinstance(meta["report"], dict) and "latency" in meta["report"]
            and isinstance(meta["report"].get("targets", []), list)
            and all(isinstance(t, dict) for t in meta["report"].get("targets", []))):
        raise UserError(f"{out_dir / META_JSON}: not the metadata `memwall sweep` writes; rerun the sweep into "
                        f"{out_dir} (finished points are kept)")
    rows = read_table(out_dir)
    columns = set().union(*(r.keys() for r in rows)) if rows else set()
    for i, t in enumerate(meta["report"].get("targets", [])):
        for field in ("metric", "x"):
            if rows and t.get(field) not in columns:
                raise UserError(f"{meta['source']}: report.targets.{i}.{field}: {t.get(field)!r} is not a column of the "
                                f"sweep's table; columns: {', '.join(sorted(columns))}")
    slo, pct = meta["slo"], meta["slo"].get("percentile", "p50")
    lat = f"{meta['report']['latency']}.{pct}"
    table = next(p.name for p in (out_dir / "results.parquet", out_dir / "results.csv") if p.exists())
    lines = [f"# Sweep `{meta['name']}`", "",
             f"{len(rows)} of {meta['points']} points from `{meta['source']}`, simulated by memwall "
             f"{meta.get('memwall') or '(version unknown)'} (predictions of its cost model, not measurements). "
             f"Table: [{table}]({table}), one row per point; raw records: `results.jsonl`. Regenerate: "
             f"`memwall sweep {meta['source']} --out DIR` then `memwall report sweep DIR`.",
             ""]
    intro, summary = len(lines), []  # the answers of every grid go first, once they are computed
    for grid in meta["grids"]:
        rs = [r for r in rows if r["grid"] == grid["name"]]
        if not rs:
            continue
        varied = [p for p in grid["axes"] if len({json.dumps(r.get(p)) for r in rs}) > 1]
        fixed = [f"{p}={rs[0].get(p)}" for p in grid["axes"] if p not in varied]
        lines += [f"## {grid['name']}", "", f"{len(rs)} points; axes varied: "
                  + (", ".join(f"`{p}` ({len({json.dumps(r.get(p)) for r in rs})} values)" for p in varied) or "none")
                  + (f"; fixed: {', '.join(fixed)}" if fixed else "")
                  + f". Model: {', '.join(dict.fromkeys(str(r.get('result.model', r.get('model'))) for r in rs))}.", ""]
        section, headlines = _best_tables(rs, varied, slo, pct)
        lines += section
        if len({r["chip_base"] for r in rs}) > 1:  # "which chip" needs more than one chip to compare
            summary += [f"- {grid['name']}: " + h.removeprefix("- ") for h in headlines]
        done = [r for r in rs if r.get("fits") and r.get(lat) is not None and r.get("output_throughput_tok_s")]
        if done:
            png = f"{grid['name']}-pareto.png"
            title = f"{meta['name']}: {grid['name']}"
            _figure_pareto(out_dir / png, done, lat, slo.get(meta["report"]["latency"]), title)
            lines += [f"![throughput, per watt and per dollar against {lat}]({png})", ""]
        for t in meta["report"]["targets"]:
            if t.get("grid") in (None, grid["name"]):
                section, headlines = _target_section(out_dir, grid["name"], rs, varied, t)
                lines += section
                summary += [f"- {grid['name']}: " + h.removeprefix("- ") for h in headlines]
    if summary:
        lines[intro:intro] = ["## Answers", "", *summary, ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path
