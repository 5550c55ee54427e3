"""Decisions and gates over the example workflows' real conditions and real analysis values."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from afdp.pipeline.analysis import AnalysisResult, analyze
from afdp.pipeline.decide import decide, evaluate_gate
from afdp.workflow.compiler import compile_document
from afdp.workflow.loader import load, parse
from afdp.workflow.model import Analyze, Decide, Gate, Workflow

EXAMPLES = Path(__file__).resolve().parents[1] / "afdp" / "workflow" / "examples"


def example(name: str) -> Workflow:
    return compile_document(load(EXAMPLES / f"{name}.yaml"))


def compile_text(text: str) -> Workflow:
    return compile_document(parse(textwrap.dedent(text), name="w.yaml"))


def analysis_params(workflow: Workflow, step: str) -> Analyze:
    params = workflow.step(step).params
    assert isinstance(params, Analyze)
    return params


def decide_params(workflow: Workflow) -> Decide:
    params = workflow.step("decisions").params
    assert isinstance(params, Decide)
    return params


def samples(seed: int, level: float, n: int = 200, spread: float = 0.05) -> np.ndarray:
    return np.random.default_rng(seed).normal(level, abs(level) * spread, n)


def api_samples(
    *, p99: float = 0.200, errors: float = 0.010, revenue: float = 50_000.0
) -> tuple[dict[str, Any], dict[str, Any]]:
    baseline = {
        "response_time_p50": samples(1, 0.050),
        "response_time_p99": samples(2, 0.200),
        "active_users": samples(3, 1000.0),
        "error_rate": samples(4, 0.010),
        "revenue_per_hour": samples(5, 50_000.0, spread=0.005),
    }
    impact = {
        "response_time_p50": samples(11, 0.050),
        "response_time_p99": samples(12, p99),
        "active_users": samples(13, 1000.0),
        "error_rate": samples(14, errors),
        "revenue_per_hour": samples(15, revenue, spread=0.005),
    }
    return baseline, impact


def run_api(baseline: dict[str, Any], impact: dict[str, Any]) -> tuple[AnalysisResult, Any]:
    workflow = example("api_deployment_impact")
    result = analyze(analysis_params(workflow, "analyze_differences"), workflow, baseline, impact)
    values = {**workflow.values(deployment={"service": "api"}), **result.values()}
    return result, decide(workflow, decide_params(workflow), values)


def test_api_healthy_deployment_is_all_clear() -> None:
    result, outcome = run_api(*api_samples())
    assert result.all_metrics_within_normal is True
    assert outcome.decision == "all_clear" and outcome.action == "mark_successful"
    assert outcome.label == "safe_deployment" and outcome.success_criteria_met is True
    assert [c.result for c in outcome.criteria] == [True, True]
    assert [e.name for e in outcome.evaluated] == ["auto_rollback", "alert_only", "all_clear"]
    document = outcome.to_json()
    assert document["decision"] == "all_clear" and document["criteria"][0]["error"] is None


def test_api_latency_regression_alerts() -> None:
    _, outcome = run_api(*api_samples(p99=0.240))
    assert outcome.decision == "alert_only" and outcome.action == "alert"
    assert outcome.severity == "warning" and outcome.success_criteria_met is False
    assert outcome.criteria[0].result is False


def test_api_revenue_loss_rolls_back_first() -> None:
    _, outcome = run_api(*api_samples(p99=0.240, revenue=48_000.0))
    assert outcome.decision == "auto_rollback" and outcome.action == "rollback"
    assert outcome.notify == ("oncall", "management") and outcome.label == "rollback"
    assert len(outcome.evaluated) == 1  # first match wins: later decisions are not evaluated


def test_error_rate_criterion_fails_plainly_and_labels_degraded() -> None:
    workflow = compile_text(
        """\
        name: t
        workflow:
          - capture_baseline: {duration: 1m, metrics: [error_rate]}
          - mark_deployment_time
          - capture_impact: {duration: 1m}
          - analyze_differences: {thresholds: {error_rate_increase: 0.5%}}
          - decisions
        success_criteria:
          - error_rate.increase < 0.5%
        """
    )
    result = analyze(
        analysis_params(workflow, "analyze_differences"),
        workflow,
        {"error_rate": [0.010] * 5},
        {"error_rate": [0.020] * 5},
    )
    outcome = decide(workflow, decide_params(workflow), {**workflow.values(), **result.values()})
    assert outcome.action == "alert" and outcome.label == "degraded"
    assert "error_rate.increase < 0.5%" in outcome.reason


def test_missing_revenue_data_is_not_a_pass() -> None:
    baseline, impact = api_samples()
    del impact["revenue_per_hour"]  # its collection failed
    result, outcome = run_api(baseline, impact)
    assert result.inconclusive == ["revenue_per_hour"]
    assert outcome.evaluated[0].name == "auto_rollback" and outcome.evaluated[0].error
    assert outcome.success_criteria_met is True  # p99 and error rate are fine
    assert outcome.decision is None and outcome.action == "alert"
    assert outcome.label == "inconclusive"
    assert "could not be evaluated" in outcome.reason


def test_missing_data_does_not_hide_a_matching_alert() -> None:
    baseline, impact = api_samples(p99=0.240)
    del baseline["revenue_per_hour"]
    _, outcome = run_api(baseline, impact)
    assert outcome.decision == "alert_only" and outcome.action == "alert"


def test_mark_successful_after_an_unevaluable_decision_is_not_trusted() -> None:
    workflow = compile_text(
        """\
        name: t
        workflow:
          - capture_baseline: {duration: 1m, metrics: [error_rate, response_time_p99]}
          - mark_deployment_time
          - capture_impact: {duration: 1m}
          - analyze_differences
          - decisions
        decisions:
          bad:
            condition: error_rate.increase > 1%
            action: rollback
          good:
            condition: response_time_p99.increase < 10ms
            action: mark_successful
        """
    )
    result = analyze(
        analysis_params(workflow, "analyze_differences"),
        workflow,
        {"response_time_p99": [0.2] * 5},
        {"response_time_p99": [0.2] * 5},
    )
    outcome = decide(workflow, decide_params(workflow), {**workflow.values(), **result.values()})
    assert [e.result for e in outcome.evaluated] == [None, True]
    assert outcome.action == "alert" and outcome.label == "inconclusive"
    assert "'bad' could not be evaluated" in outcome.reason


def test_nothing_matches_and_nothing_failed_is_successful() -> None:
    workflow = compile_text(
        """\
        name: t
        workflow:
          - capture_baseline: {duration: 1m, metrics: [error_rate]}
          - mark_deployment_time
          - capture_impact: {duration: 1m}
          - analyze_differences: {thresholds: {error_rate_increase: 1%}}
          - decisions
        decisions:
          bad:
            condition: error_rate.degraded
            action: rollback
        """
    )
    result = analyze(
        analysis_params(workflow, "analyze_differences"),
        workflow,
        {"error_rate": [0.01] * 5},
        {"error_rate": [0.011] * 5},
    )
    outcome = decide(workflow, decide_params(workflow), {**workflow.values(), **result.values()})
    assert outcome.action == "mark_successful" and outcome.decision is None
    assert outcome.label == "safe_deployment" and outcome.evaluated[0].result is False


def test_feature_flag_decisions() -> None:
    workflow = example("feature_flag_analysis")
    params = analysis_params(workflow, "statistical_comparison")
    names = params.metrics
    base = {name: samples(i, 10.0, n=60) for i, name in enumerate(names)}
    same = {name: samples(100 + i, 10.0, n=60) for i, name in enumerate(names)}
    harmful = dict(same, revenue_per_user=samples(99, 9.0, n=60))
    missing = {k: v for k, v in same.items() if k != "revenue_per_user"}
    outcomes = {}
    for case, impact in (("same", same), ("harmful", harmful), ("missing", missing)):
        result = analyze(params, workflow, base, impact)
        values = {**workflow.values(), **result.values()}
        outcomes[case] = decide(workflow, decide_params(workflow), values)
    assert outcomes["same"].decision == "keep_feature"
    assert outcomes["same"].label == "safe_feature"
    assert outcomes["harmful"].decision == "roll_back_feature"
    assert outcomes["harmful"].label == "harmful_feature"
    assert outcomes["missing"].action == "alert" and outcomes["missing"].label == "inconclusive"
    assert all(e.error for e in outcomes["missing"].evaluated)


def test_canary_gates_and_decisions() -> None:
    workflow = example("canary_rollout")
    gate_step = workflow.step("canary_gate")
    gate = gate_step.params
    assert isinstance(gate, Gate) and gate.analysis == "canary_analysis"
    params = analysis_params(workflow, "canary_analysis")
    base = {
        "response_time_p99": samples(1, 0.2),
        "error_rate": samples(2, 0.01),
        "request_rate": samples(3, 100.0),
    }
    healthy = {
        "response_time_p99": samples(11, 0.2),
        "error_rate": samples(12, 0.01),
        "request_rate": samples(13, 120.0),  # better: none, no threshold: not a degradation
    }
    bad = dict(healthy, error_rate=samples(14, 0.03))
    no_data = {k: v for k, v in healthy.items() if k != "error_rate"}
    gates = {}
    for case, impact in (("healthy", healthy), ("bad", bad), ("no_data", no_data)):
        result = analyze(params, workflow, base, impact)
        gates[case] = evaluate_gate(workflow, gate, {**workflow.values(), **result.values()})
    assert gates["healthy"].triggered is False and gates["healthy"].stop is False
    assert gates["bad"].triggered is True and gates["bad"].action == "rollback"
    assert gates["bad"].label == "rollback" and gates["bad"].values() == {"triggered": True}
    assert gates["no_data"].triggered is False and gates["no_data"].inconclusive
    assert gates["no_data"].stop is True and gates["no_data"].action == "alert"
    assert gates["no_data"].to_json()["error"]

    final = analyze(analysis_params(workflow, "analyze_differences"), workflow, base, bad)
    outcome = decide(workflow, decide_params(workflow), {**workflow.values(), **final.values()})
    assert outcome.decision == "roll_back" and outcome.action == "rollback"


def test_a_condition_with_a_nan_like_null_does_not_raise() -> None:
    workflow = example("api_deployment_impact")
    values: dict[str, Any] = {**workflow.values()}
    for name in ("response_time_p99", "error_rate", "revenue_per_hour"):
        values[name] = {"increase": None, "decrease": None}
    values.update(
        any_degradation=None,
        significant_degradation=None,
        all_metrics_within_normal=False,
        exceeded=[],
        inconclusive=["x"],
    )
    outcome = decide(workflow, decide_params(workflow), values)
    assert outcome.action == "alert" and not outcome.success_criteria_met
    assert all(c.error for c in outcome.criteria)


def test_unknown_decision_name_is_a_key_error() -> None:
    workflow = example("api_deployment_impact")
    with pytest.raises(KeyError):
        decide(workflow, Decide(("nope",), None), workflow.values())
