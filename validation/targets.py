"""The accuracy targets of issue [validation] ("Done when"), checked against a report's summary: per-pass time and
throughput median <= 5% and p90 <= 10% for every strategy; TTFT and ITL p50 under Poisson load median <= 10%. The
report states each one met or missed (validation/validation_report.py), so that no table of them is typed by hand.
"""

from __future__ import annotations

# metric of validation_report.summarize -> (largest median, largest p90 or None) of |pred - meas| / meas
TARGETS: dict[str, tuple[float, float | None]] = {
    "pass_time_s": (0.05, 0.10),
    "output_throughput_tok_s": (0.05, 0.10),
    "ttft_p50_s (poisson)": (0.10, None),
    "itl_p50_s (poisson)": (0.10, None),
}


def check_targets(summary: dict) -> dict[str, dict[str, dict]]:
    """strategy -> metric -> {median, p90, met} for every target metric the strategy has points of (n > 0);
    `met` is None where it has none (nothing to judge)."""
    out: dict[str, dict[str, dict]] = {}
    for strategy, metrics in summary.items():
        if strategy == "transfer" or not isinstance(metrics, dict):
            continue
        out[strategy] = {}
        for name, (median_max, p90_max) in TARGETS.items():
            st = metrics.get(name)
            if not st or not st.get("n"):
                out[strategy][name] = {"median": None, "p90": None, "met": None}
                continue
            met = st["median"] <= median_max and (p90_max is None or st["p90"] <= p90_max)
            out[strategy][name] = {"median": st["median"], "p90": st["p90"] if p90_max is not None else None,
                                   "met": met}
    return out


def targets_table(checked: dict[str, dict[str, dict]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows for the report: one row per strategy, one column per target, "median / p90 met|MISSED"."""
    header = ["strategy", *(f"{name} (median <= {m:.0%}" + (f", p90 <= {p:.0%})" if p is not None else ")")
                            for name, (m, p) in TARGETS.items())]
    rows = []
    for strategy, metrics in checked.items():
        cells = []
        for name in TARGETS:
            c = metrics[name]
            if c["met"] is None:
                cells.append("no points")
                continue
            value = f"{c['median']:.1%}" + (f" / {c['p90']:.1%}" if c["p90"] is not None else "")
            cells.append(f"{value} {'met' if c['met'] else 'MISSED'}")
        rows.append([strategy, *cells])
    return header, rows


def missed_targets(checked: dict[str, dict[str, dict]]) -> list[str]:
    """'strategy metric' of every target missed."""
    return [f"{s} {m}" for s, ms in checked.items() for m, c in ms.items() if c["met"] is False]


def target_blocks(summary: dict) -> list[tuple]:
    """The report's blocks (validation_report.build's): one sentence and the table of met / missed targets."""
    checked = check_targets(summary)
    missed = missed_targets(checked)
    return [("p", "Against the targets of issue [validation] (validation/targets.py): "
                  + ("every target met." if not missed else f"missed: {', '.join(missed)}.")),
            ("table", *targets_table(checked))]
