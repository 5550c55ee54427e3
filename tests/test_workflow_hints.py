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


STAGED = """
name: staged
workflow:
  pre_deployment:
    - capture_baseline: [error_rate]
  deployment:
    - mark_deployment_time
stages:
  canary:
    traffic: 5%
    duration: 20s
    abort_on: any_degradation
{extra}
"""


def _stage_analysis(tmp_path, extra: str = ""):
    from afdp.workflow import load_workflow
    from afdp.workflow.model import Analyze

    path = tmp_path / "staged.yaml"
    path.write_text(STAGED.format(extra=extra))
    workflow = load_workflow(path)
    (step,) = [s for s in workflow.steps if s.stage == "canary" and isinstance(s.params, Analyze)]
    return step.params


def test_a_stage_judged_by_nothing_gets_the_canary_test(tmp_path) -> None:
    """With no threshold and no statistical analyzer, `abort_on: any_degradation` could
    never fire: the stage is judged by Mann-Whitney (significance plus effect size)."""
    assert _stage_analysis(tmp_path).method == "mann_whitney"


def test_a_stage_with_thresholds_keeps_them_as_its_judge(tmp_path) -> None:
    params = _stage_analysis(tmp_path, "    thresholds:\n      error_rate_increase: 1%")
    assert params.method is None and params.thresholds
