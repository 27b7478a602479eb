"""Every shipped scenario file loads and simulates (examples are documentation that must not rot)."""

from pathlib import Path

import pytest

from sim.engine import simulate
from sim.scenario import load_scenario

EXAMPLES = sorted(p for p in Path("examples").rglob("*.yaml") if "sweeps" not in p.parts)


@pytest.mark.parametrize("path", EXAMPLES, ids=[str(p) for p in EXAMPLES])
def test_example_scenario_simulates(path):
    s = load_scenario(path)
    r, _ = simulate(s)
    if r.fits:
        assert r.completed + r.rejected == r.num_requests > 0
        assert r.output_throughput_tok_s > 0
