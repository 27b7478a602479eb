"""Every shipped scenario file loads and simulates, and every validation plan expands into scenarios that do
(examples are documentation that must not rot)."""

from pathlib import Path

import pytest

from sim.engine import simulate
from sim.scenario import load_scenario
from validation.validate import plan_scenarios

PLANS = sorted(Path("examples/validation").glob("plan-*.yaml"))
EXAMPLES = sorted(p for p in Path("examples").rglob("*.yaml") if "sweeps" not in p.parts and p not in PLANS)


@pytest.mark.parametrize("path", EXAMPLES, ids=[str(p) for p in EXAMPLES])
def test_example_scenario_simulates(path):
    s = load_scenario(path)
    r, _ = simulate(s)
    if r.fits:
        assert r.completed + r.rejected == r.num_requests > 0
        assert r.output_throughput_tok_s > 0


@pytest.mark.parametrize("path", PLANS, ids=[str(p) for p in PLANS])
def test_validation_plan_points_simulate(path):
    scenarios = plan_scenarios(path)
    assert len({s.name for s in scenarios}) == len(scenarios) > 0
    for s in scenarios:
        r, _ = simulate(s)
        assert r.fits and r.completed == r.num_requests > 0
