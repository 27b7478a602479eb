"""The default scenario run on the H100 (`memwall run examples/validation/static-batch8.yaml`, committed in
reports/h100/validation-runs.jsonl) and `memwall simulate` of the same scenario produce the same schema, field for
field, and the shared scheduler made the same number of passes in both."""

import json
from pathlib import Path

from sim.engine import simulate
from sim.result import Result
from sim.scenario import scenario_from_dict

RUNS = Path("reports/h100/validation-runs.jsonl")


def test_gpu_run_of_the_default_scenario_diffs_field_by_field_with_the_simulation():
    records = [json.loads(line) for line in RUNS.read_text().splitlines()]
    rec = next(r for r in records if r["scenario"]["name"] == "static-batch8" and r["status"] == "ok")
    assert "H100" in rec["device"]["gpu"]
    measured = Result(**rec["result"])
    predicted, _ = simulate(scenario_from_dict(rec["scenario"]))
    assert set(measured.model_dump()) == set(predicted.model_dump())
    assert measured.source == "measured" and predicted.source == "simulated"
    for field in ("num_requests", "completed", "output_tokens", "passes", "prompt_tokens"):
        assert getattr(measured, field) == getattr(predicted, field), field
    # the numbers themselves are compared in reports/h100/validation.md; here only a sanity bound
    assert 0.5 < measured.output_throughput_tok_s / predicted.output_throughput_tok_s < 2
