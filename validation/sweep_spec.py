"""The sweep file (issue [sweep]): its schema, and its expansion into points.

A sweep is a base scenario (a mapping, or a scenario file) and `axes`, each a dotted scenario path, the same paths as
`memwall simulate --set`, mapped to a list of values or a range. The special axis `hardware` lists profile names
and generated what-if chips (`{profile: h100-sxm, scale: {bandwidth: [1, 2, 4]}}`). `zip` groups vary several
paths together; `grids` (a list of {name, axes, zip}) takes the union of several cross products, as scikit-learn's
ParameterGrid does with a list of grids, so that one file can ask questions about different models or chips.

    name: pareto
    base: ../default.yaml
    slo: {tpot_s: 0.05, percentile: p50}
    axes:
      hardware: [h100-sxm, h200, {profile: h100-sxm, scale: {bandwidth: [1.5, 2]}}]
      parallel.tp: [1, 2, 4, 8]
      batching.max_batch: {start: 1, stop: 256, num: 9, log: true}
    zip:
      - {workload.input_len: [128, 1024], workload.output_len: [1024, 128]}
    report: {latency: tpot_s, targets: [{metric: seq_decode_tok_s, value: 500, x: hbm_bandwidth_tb_s}]}

A point is the base plus `PATH=VALUE` overrides applied by `sim.scenario.apply_overrides`, so an axis means exactly
what a `--set` means. Its key hashes its whole scenario mapping: the same scenario met again in the same output
folder (a rerun, or the sweep after an edit) has the same key and is reused, while a changed base gives new keys
and runs again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import numpy as np
import yaml
from pydantic import ConfigDict, Field, ValidationError, model_validator

from sim.errors import UserError, explain_validation_error
from sim.hardware import Scale
from sim.numbers import NumbersNotBools
from sim.yaml_file import read_yaml
from sim.scenario import apply_overrides, read_scenario_file

# -- the sweep file -----------------------------------------------------------------------------------------------


class _Strict(NumbersNotBools):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Range(_Strict):
    """`{start, stop, step}` (stop included when it falls on the grid), `{start, stop, num}` (evenly spaced) or
    `{start, stop, num, log: true}` (geometric). Integer start and stop (and step) give integers: write 1.0 for
    floats."""

    start: int | float
    stop: int | float
    step: int | float | None = None
    num: int | None = Field(default=None, ge=1, le=100_000)
    log: bool = False

    @model_validator(mode="after")
    def _one_way(self) -> "Range":
        if not all(math.isfinite(v) for v in (self.start, self.stop, self.step or 0)):
            raise ValueError("start, stop and step must be finite numbers")
        if (self.step is None) == (self.num is None):
            raise ValueError("give exactly one of step or num")
        if self.log and (self.num is None or self.start <= 0 or self.stop <= 0):
            raise ValueError("log: true needs num and a positive start and stop")
        if self.step is not None and (self.step == 0 or (self.stop - self.start) * self.step < 0):
            raise ValueError("step must be nonzero and lead from start to stop")
        if self.step is not None and (self.stop - self.start) / self.step >= 100_000:
            raise ValueError("a range gives at most 100,000 values (as num); widen step")
        return self

    def values(self) -> list[int | float]:
        if self.num is not None:
            v = (np.geomspace if self.log else np.linspace)(self.start, self.stop, self.num)
        else:  # the 1e-9 keeps a stop that sits on the grid despite float rounding (0.1 * 3 != 0.3)
            v = self.start + self.step * np.arange(math.floor((self.stop - self.start) / self.step + 1e-9) + 1)
        if all(isinstance(x, int) for x in (self.start, self.stop, self.step or 0)):
            return list(dict.fromkeys(int(round(x)) for x in v))
        return [float(f"{x:.12g}") for x in v]  # 12 digits: 0.30000000000000004 would leak into keys and labels


Factor = Union[Annotated[float, Field(gt=0)], list[Annotated[float, Field(gt=0)]], Range]


class ScaleAxes(_Strict):
    """What-if factors of a generated chip (as `sim.hardware.Scale`), each a number, a list or a range."""

    bandwidth: Factor = 1.0
    flops: Factor = 1.0
    capacity: Factor = 1.0
    link: Factor = 1.0


class WhatIf(_Strict):
    """`{profile: h100-sxm, scale: {bandwidth: [1, 2]}}`: one chip per combination of the scale lists."""

    profile: str
    scale: ScaleAxes = Field(default_factory=ScaleAxes)

    def options(self) -> list[tuple[Any, str]]:
        """(hardware reference, label) per chip; the label is the name `HardwareProfile.scaled` gives it, and
        all-1.0 factors give the plain profile (the same scenario, so the same key)."""
        lists = {k: (v.values() if isinstance(v, Range) else v if isinstance(v, list) else [v]) for k, v in self.scale}
        out = []
        for combo in itertools.product(*lists.values()):
            factors = {k: f for k, f in zip(lists, combo) if f != 1.0}
            if not factors:
                out.append((self.profile, self.profile))
            else:
                out.append(({"profile": self.profile, "scale": factors}, f"{self.profile}[{Scale(**factors).label()}]"))
        return out


class Grid(_Strict):
    """One cross product: `axes` (path -> values) and `zip` groups (paths varied together, one dimension each)."""

    name: str = Field(default="sweep", pattern=r"^[A-Za-z0-9_.-]+$", description="names report files too")
    axes: dict[str, Any] = Field(default_factory=dict)
    zip: list[dict[str, Any]] = Field(default_factory=list)


class SweepSLO(_Strict):
    """Latency objectives applied to every point (the scenario's `slo`, so goodput uses them too) and the
    percentile a point must meet them at."""

    ttft_s: float | None = Field(default=None, gt=0)
    tpot_s: float | None = Field(default=None, gt=0)
    percentile: Literal["p50", "p90", "p99"] = "p50"


class Target(_Strict):
    """A question for the report: at which `x` does `metric` first reach `value`? (linear interpolation)"""

    metric: str = "output_throughput_tok_s"
    value: float
    x: str = "hbm_bandwidth_tb_s"
    grid: str | None = Field(default=None, description="the grid it asks about; default every grid")


class ReportSpec(_Strict):
    latency: Literal["tpot_s", "ttft_s", "e2e_s", "itl_s"] = Field(
        default="tpot_s", description="x axis of the throughput-latency plots, at the SLO's percentile")
    targets: list[Target] = Field(default_factory=list)


class SweepFile(_Strict):
    """A sweep: a base scenario and axes (or a union of `grids`, as scikit-learn's ParameterGrid takes a list)."""

    name: str = Field(default="sweep", pattern=r"^[A-Za-z0-9_.-]+$")
    base: str | dict = Field(default_factory=dict, description="scenario file (relative to the sweep file) or mapping")
    axes: dict[str, Any] = Field(default_factory=dict)
    zip: list[dict[str, Any]] = Field(default_factory=list)
    grids: list[Grid] = Field(default_factory=list)
    slo: SweepSLO = Field(default_factory=SweepSLO)
    report: ReportSpec = Field(default_factory=ReportSpec)

    @model_validator(mode="after")
    def _one_form(self) -> "SweepFile":
        if self.grids and (self.axes or self.zip):
            raise ValueError("give either axes/zip or grids, not both")
        names = [g.name for g in self.grids]
        if len(set(names)) < len(names):
            raise ValueError("grid names must be distinct")
        return self

    def all_grids(self) -> list[Grid]:
        return list(self.grids) or [Grid(name=self.name, axes=self.axes, zip=self.zip)]


def load_sweep(sweep: str | Path | dict | SweepFile) -> tuple[SweepFile, str, Path]:
    """The validated sweep, the name its errors start with, and the folder its relative paths start from."""
    if isinstance(sweep, SweepFile):
        return sweep, "sweep", Path.cwd()
    where, root, data = "sweep", Path.cwd(), sweep
    if not isinstance(sweep, dict):
        path = Path(sweep)
        if not path.exists():
            raise UserError(f"sweep file {path} does not exist")
        where, root, data = str(path), path.parent, read_yaml(path)
    try:
        return SweepFile(**data), where, root
    except ValidationError as e:
        raise UserError(explain_validation_error(e, where, SweepFile)) from None


# -- points -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One scenario of the sweep: its axis values (hardware: the chip label), the `--set` overrides that make it
    from the base, the resulting scenario mapping, and the key that identifies it across runs."""

    index: int
    grid: str
    values: dict[str, Any]
    overrides: list[str]
    data: dict
    key: str


def _yaml_value(v: Any) -> str:
    """`v` written so that apply_overrides' YAML parse returns `v` (PyYAML reads 1e-05 as a string, 1.0e-05 not)."""
    text = yaml.safe_dump(v, default_flow_style=True, width=1 << 30).strip()
    return text[:-3].strip() if text.endswith("...") else text


def _axis_options(path: str, spec: Any, at: str) -> list[tuple[str, Any]]:
    """(override, label) per value of one axis."""
    if path == "hardware":
        options = []
        for i, e in enumerate(spec if isinstance(spec, list) else [spec]):
            if isinstance(e, str):
                options.append((e, e))
                continue
            if not isinstance(e, dict):
                raise UserError(f"{at}.{i}: expected a profile name or {{profile, scale}}, got {e!r}")
            try:
                options.extend(WhatIf(**e).options())
            except ValidationError as err:
                raise UserError(explain_validation_error(err, f"{at}.{i}", WhatIf)) from None
    elif isinstance(spec, dict):
        try:
            options = [(v, v) for v in Range(**spec).values()]
        except ValidationError as err:
            raise UserError(explain_validation_error(err, at, Range)) from None
    elif isinstance(spec, list):
        options = [(v, v) for v in spec]
    else:
        options = [(spec, spec)]  # a single value: fixed for this grid, still a column of the table
    if not options:
        raise UserError(f"{at}: expected values, a list or a range {{start, stop, step}} / {{start, stop, num}}")
    return [(f"{path}={_yaml_value(v)}", label) for v, label in options]


def _dimensions(grid: Grid, at: str) -> list[list[list[tuple[str, str, Any]]]]:
    """The grid's dimensions; each is a list of options, each option a list of (path, override, label)."""
    dims, seen = [], {}
    for path, spec in grid.axes.items():
        dims.append([[(path, o, lab)] for o, lab in _axis_options(path, spec, f"{at}axes.{path}")])
        seen[path] = "axes"
    for gi, group in enumerate(grid.zip):
        opts = {p: _axis_options(p, s, f"{at}zip.{gi}.{p}") for p, s in group.items()}
        lengths = {p: len(o) for p, o in opts.items()}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{p}: {n}" for p, n in lengths.items())
            raise UserError(f"{at}zip.{gi}: axes varied together need equally many values, got {shown}")
        for p in opts:
            if p in seen:
                raise UserError(f"{at}zip.{gi}: axis '{p}' is also in {seen[p]}; give each path once")
            seen[p] = f"zip.{gi}"
        n = next(iter(lengths.values()), 0)
        dims.append([[(p, opts[p][i][0], opts[p][i][1]) for p in opts] for i in range(n)])
    return dims


def expand(spec: SweepFile, where: str = "sweep", root: Path | None = None) -> list[Point]:
    """Every point of the sweep, grid by grid, each grid's cross product in the order its axes are written
    (the last axis varies fastest)."""
    root = root or Path.cwd()
    base: dict = spec.base
    if isinstance(spec.base, str):
        path = root / spec.base if (root / spec.base).exists() else Path(spec.base)
        if not path.is_file():
            raise UserError(f"{where}: base: scenario file {spec.base} is not in {root} (where the sweep file is) nor "
                            "the working folder")
        base = read_scenario_file(path)
    slo = {k: v for k, v in spec.slo.model_dump().items() if k != "percentile" and v is not None}
    if slo:
        base = {**base, "slo": slo}
    points: list[Point] = []
    grids = spec.all_grids()
    for k, grid in enumerate(grids):
        at = f"{where}: grids.{k}." if spec.grids else f"{where}: "
        for combo in itertools.product(*_dimensions(grid, at)):
            triples = [t for option in combo for t in option]
            overrides = [o for _, o, _ in triples]
            data = apply_overrides(base, overrides)
            key = hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
            points.append(Point(len(points), grid.name, {p: lab for p, _, lab in triples}, overrides, data, key))
    return points
