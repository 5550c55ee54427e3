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


def test_a_time_scale_shrinks_the_collectors_own_interval(tmp_path) -> None:
    """--time-scale divides a window; the samples taken in it must shrink with it, or a
    scaled window holds too few samples for any test (a capture's own interval is scaled
    where it is read)."""
    from afdp.pipeline.runner import scaled_collector_interval
    from afdp.workflow import load_workflow

    path = tmp_path / "rest.yaml"
    path.write_text(
        "name: rest\n"
        "collectors:\n  api: {type: rest, url: 'http://127.0.0.1:1/m', interval: 2s}\n"
        "  plain: {type: rest, url: 'http://127.0.0.1:1/n'}\n"
        "metrics:\n  value: {collector: api, select: value, unit: count}\n"
        "  other: {collector: plain, select: value, unit: count}\n"
        "workflow:\n  - capture_baseline: [value, other]\n  - mark_deployment_time\n"
        "  - capture_impact: [value, other]\n  - analyze_differences\n"
    )
    workflow = load_workflow(path)
    assert scaled_collector_interval(workflow, "value", 1.0) is None
    assert scaled_collector_interval(workflow, "value", 10.0) == 0.2
    # No interval of its own: the default (15s) is scaled.
    assert scaled_collector_interval(workflow, "other", 15.0) == 1.0
