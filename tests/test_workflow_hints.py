"""Type errors in conditions say the likely fix, not a generic one."""

from __future__ import annotations

import pytest

from afdp.workflow.expressions import ANY, LIST, parse_expression

TYPES = {
    ("bad_rows", "increase"): "number",  # a count metric's absolute movement
    ("bad_rows", "change"): "ratio",
    ("latency", "increase"): "time",
    ("steps", "check", "failed"): LIST,
}


def problems(text: str) -> list[str]:
    return parse_expression(text).check(lambda ref: TYPES.get(ref.parts, ANY))


def test_percentage_on_an_absolute_movement_points_to_change() -> None:
    (problem,) = problems("bad_rows.increase > 5%")
    assert "for a relative change compare bad_rows.change" in problem
    (problem,) = problems("5% < latency.increase")
    assert "compare latency.change" in problem


def test_list_compared_with_a_number_points_to_in() -> None:
    (problem,) = problems("steps.check.failed > 0")
    assert "test a list with 'in'" in problem
    assert "give the number a unit" not in problem


@pytest.mark.parametrize("text", ["latency.increase > 10", "bad_rows.change > 0.5ms"])
def test_other_mismatches_keep_the_unit_hint_or_none(text: str) -> None:
    (problem,) = problems(text)
    assert "relative change" not in problem and "'in'" not in problem


def test_well_typed_conditions_have_no_problem() -> None:
    assert problems("bad_rows.change > 5% and latency.increase > 10ms") == []
