"""The transfer check of the validation report (issue [validation], item 6): the H100-fitted curves carried to
another chip's datasheet (`memwall calibrate --carry-to`, validation/carry.py `carry_over`) price a subset of
the grid on that chip; once the subset is measured there, the report gives the errors, as for the H100 grid.

Until then the section lists the predictions themselves, so that they are on record before any measurement.
Paths are the repository's (the report runs from its root); a chip whose plan or profile is missing is skipped
with a sentence saying so.
"""

from __future__ import annotations

from pathlib import Path

# chip -> its transfer plan, the profile carried from the H100's calibration, and where its measured runs go
TRANSFERS = {
    "h200": {"plan": "examples/validation/plan-h200.yaml", "profile": "hw_profiles/calibrated/h200-from-h100.yaml",
             "runs": "reports/h200/validation-runs.jsonl"},
}


def _ms(v) -> str:
    return "–" if v is None else f"{v * 1e3:.2f}"


def _err(m: dict | None) -> str:
    return "–" if not m or m.get("rel_error") is None else f"{m['rel_error']:+.1%}"


def transfer_blocks(root: Path = Path(".")) -> tuple[list, dict]:
    """Report blocks (as validation_report.build's) for every chip of TRANSFERS, and the summary per chip (the
    per-strategy error statistics over its measured points; empty while none is measured)."""
    from sim.hardware import load_profile
    from validation.second_hand import second_hand_blocks
    from validation.validate import plan_scenarios, predict_plan, read_runs
    from validation.validation_report import summarize

    blocks: list = []
    summaries: dict = {}
    for chip, t in TRANSFERS.items():
        plan, profile, runs_path = (root / t[k] for k in ("plan", "profile", "runs"))
        blocks.append(("h", f"Transfer check: {chip} (H100-fitted curves on its datasheet)"))
        if not plan.exists() or not profile.exists():
            blocks.append(("p", f"Skipped: {plan if not plan.exists() else profile} is not in this checkout."))
            continue
        runs = read_runs(runs_path) if runs_path.exists() else {}
        rows = predict_plan(plan_scenarios(plan), runs, str(profile))
        measured = [r for r in rows if r["measured_s"]]
        source = load_profile(str(profile)).efficiency.source or "its efficiency curves' source unstated"
        blocks.append(("p", f"Plan `{t['plan']}` ({len(rows)} points), priced with `{t['profile']}` ({source}); "
                            f"measured runs: `{t['runs']}` ({len(measured)} of {len(rows)} points measured)."))
        table = []
        for r in rows:
            m = r["metrics"]
            tp, ttft, itl = (m.get(k) or {} for k in ("output_throughput_tok_s", "ttft_p50_s", "itl_p50_s"))
            meas = "–" if tp.get("measured") is None else f"{tp['measured']:,.1f}"
            pred = "–" if tp.get("predicted") is None else f"{tp['predicted']:,.1f}"
            table.append([r["name"], f"{r['strategy']} ({r['batching']})", pred, meas,
                          _err(tp), _ms(ttft.get("predicted")), _err(ttft), _ms(itl.get("predicted")), _err(itl)])
        blocks.append(("table", ["point", "strategy", "tok/s predicted", "tok/s measured", "error",
                                 "TTFT p50 predicted ms", "error", "ITL p50 predicted ms", "error"], table))
        if measured:
            summaries[chip] = summarize(measured)
            blocks.append(("table", ["strategy", "metric", "median abs err", "p90", "max", "n"],
                           [[s, k, f"{st['median']:.1%}", f"{st['p90']:.1%}", f"{st['max']:.1%}", str(st["n"])]
                            for s, metrics in summaries[chip].items() for k, st in metrics.items() if st["n"]]))
        else:
            blocks.append(("p", f"Not measured on the {chip.upper()} yet: these are the predictions, on record before any "
                                f"measurement on that chip (`memwall validate {t['plan']} --out {t['runs']}` on one, "
                                "then this report gives the errors)."))
        blocks += second_hand_blocks(chip, profile, root)
    return blocks, summaries
