"""`true` / `false` where a number belongs is an error naming the field (sim/numbers.py)."""

from typing import Literal, Optional, Union

import pytest

from sim.errors import UserError
from sim.numbers import bool_where_number, takes_number_not_bool
from sim.scenario import scenario_from_dict


@pytest.mark.parametrize("annotation, expected", [
    (int, True), (float, True), (Optional[int], True), (Union[int, str], True), (int | None, True),
    (bool, False), (Optional[bool], False), (Union[bool, int], False), (str, False), (Literal[1, 2], False),
    (dict[str, float], False),  # a mapping of numbers: its items are checked, not the field as a number
])
def test_which_types_take_a_number_but_not_a_bool(annotation, expected):
    assert takes_number_not_bool(annotation) is expected


@pytest.mark.parametrize("value, annotation, where", [
    (True, int, ""), (True, bool, None), (8, int, None), ([0.5, True], float | list[float], "[1]"),
    ({"bf16": True}, dict[str, float], ".bf16"), (((1.0, 2.0), (3.0, False)), tuple[tuple[float, float], ...], "[1][1]"),
    ({"x": True}, dict[str, bool], None), ([True], list[bool | int], None),
    ([True], list[bool] | list[float], None),  # one member of the value's shape takes it
    ([True], float | list[float], "[0]"), (True, float | list[float], ""),
])
def test_where_a_bool_stands_for_a_number(value, annotation, where):
    assert bool_where_number(value, annotation) == where


@pytest.mark.parametrize("data, field", [
    ({"batching": {"kind": "static", "batch_size": True}}, "batching.batch_size"),
    ({"workload": {"kind": "poisson", "rate_qps": False}}, "workload.rate_qps"),
    ({"strategy": {"kind": "speculative", "k": True}}, "strategy.k"),
    ({"strategy": {"kind": "speculative", "alpha": [0.8, True]}}, r"strategy.alpha: expected a number at \[1\], not a boolean \(got true\)"),
])
def test_a_bool_in_a_numeric_field_names_the_field(data, field):
    with pytest.raises(UserError, match=field if "expected" in field else rf"{field}: expected a number, not a boolean \(got (true|false)\)"):
        scenario_from_dict(data)


def test_a_length_says_a_mapping_is_allowed_too():
    with pytest.raises(UserError, match=r"workload.input_len: expected a number or a mapping, not a boolean \(got true\)"):
        scenario_from_dict({"workload": {"input_len": True}})


def test_a_bool_in_a_profile_names_the_field():
    s = scenario_from_dict({"hardware": {"base": "h100-sxm", "name": "x", "sm_count": True}})
    with pytest.raises(UserError, match="sm_count: expected a number, not a boolean"):
        s.resolve_hardware()
    s = scenario_from_dict({"hardware": {"base": "h100-sxm", "name": "x", "peak_tflops": {"bf16": True}}})
    with pytest.raises(UserError, match=r"peak_tflops: expected a number at \.bf16"):
        s.resolve_hardware()


def test_numbers_written_as_floats_and_real_flags_still_read():
    s = scenario_from_dict({"batching": {"kind": "static", "batch_size": 8.0},
                            "execution": {"fused_epilogues": False}})
    assert s.batching.batch_size == 8 and s.execution.fused_epilogues is False


def test_a_mapping_key_with_a_dot_is_named_not_looked_up():
    s = scenario_from_dict({"hardware": {"base": "h100-sxm", "name": "x", "peak_tflops": {"fp8.e4m3": True}}})
    with pytest.raises(UserError, match=r"peak_tflops: expected a number at \.fp8\.e4m3, not a boolean \(got true\)"):
        s.resolve_hardware()

