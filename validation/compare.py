"""Side-by-side strategy comparison, and the same comparison on what-if chips.

`compare` answers "which decoding strategy wins on this chip, and why": one scenario, its strategy swapped for
each of the requested ones (a strategy the scenario already names keeps its parameters; the others take their
defaults). `whatif` reruns that comparison on chip variants (scaled bandwidth / compute / capacity, or named
profiles) and reports each strategy's gain over the base chip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.engine import simulate
from sim.errors import UserError
from sim.hardware import Scale
from sim.result import Result
from sim.scenario import Scenario, resolve_hardware, scenario_from_dict
from sim.strategies import STRATEGIES

ALL = tuple(STRATEGIES)


def parse_strategies(text: str) -> list[str]:
    """`ar,speculative` or `all` -> names, each checked against the strategy catalog."""
    names = list(ALL) if text.strip() == "all" else [t.strip() for t in text.split(",") if t.strip()]
    for n in names:
        if n not in STRATEGIES:
            raise UserError(f"--strategies: unknown strategy '{n}'; known: {', '.join(ALL)} (or all)")
    if not names:
        raise UserError("--strategies: name at least one strategy")
    return names


def with_strategy(s: Scenario, kind: str) -> Scenario:
    data = s.model_dump(mode="json")
    if s.strategy.kind != kind:
        data["strategy"] = {"kind": kind}
    return scenario_from_dict(data)


def compare(s: Scenario, strategies: list[str]) -> list[tuple[str, Result]]:
    """Simulate the scenario once per strategy."""
    return [(kind, simulate(with_strategy(s, kind))[0]) for kind in strategies]


@dataclass(frozen=True)
class Variant:
    label: str
    hardware: str | dict  # a scenario `hardware` value


def parse_scale(text: str) -> Scale:
    """`bandwidth=2` or `bandwidth=2,flops=2` -> Scale (factors on the base chip)."""
    factors = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        key = key.strip()
        if key not in Scale.model_fields:
            raise UserError(f"--scale: unknown factor '{key}'; allowed: {', '.join(Scale.model_fields)}")
        if key in factors:
            raise UserError(f"--scale {text!r}: {key} is given twice")
        try:
            factors[key] = float(value)
        except ValueError:
            raise UserError(f"--scale {text!r}: expected NAME=NUMBER, e.g. bandwidth=2") from None
        if not math.isfinite(factors[key]) or factors[key] <= 0:
            raise UserError(f"--scale {key}: must be a finite number > 0, got {value}")
    return Scale(**factors)


def variants(s: Scenario, scales: list[str], hardware: list[str]) -> list[Variant]:
    """The base chip first, then one variant per --scale (applied to the base) and per --hardware name."""
    base = resolve_hardware(s.hardware)
    base_ref = s.hardware if isinstance(s.hardware, str) else s.hardware
    out = [Variant(base.name, base_ref)]
    for text in scales:
        sc = parse_scale(text)
        if isinstance(base_ref, str):
            ref = {"profile": base_ref, "scale": sc.model_dump()}
        elif "profile" in base_ref:
            combined = Scale(**base_ref.get("scale", {})).model_dump()
            ref = {"profile": base_ref["profile"], "scale": {k: v * combined[k] for k, v in sc.model_dump().items()}}
        else:
            raise UserError("--scale needs a named base chip (hardware: NAME or {profile: NAME})")
        out.append(Variant(f"{base.name} {sc.label()}", ref))
    for name in hardware:
        out.append(Variant(resolve_hardware(name).name, name))
    return out


def whatif(s: Scenario, chips: list[Variant], strategies: list[str]) -> list[dict]:
    """Rows of {chip, strategy, result, gain}: gain = tokens/s over the same strategy on the first chip."""
    rows: list[dict] = []
    base_tok: dict[str, float] = {}
    for v in chips:
        data = s.model_dump(mode="json")
        data["hardware"] = v.hardware
        sv = scenario_from_dict(data)
        for kind, result in compare(sv, strategies):
            if v is chips[0]:
                base_tok[kind] = result.output_throughput_tok_s
            ref = base_tok.get(kind, 0.0)
            gain = result.output_throughput_tok_s / ref if ref > 0 else None
            rows.append({"chip": v.label, "strategy": kind, "result": result, "gain": gain})
    return rows
