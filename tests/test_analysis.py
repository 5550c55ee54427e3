"""Analysis: known regressions are found, no change is not flagged, every edge case is explicit."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from afdp.evidence.canonical import canonical_bytes
from afdp.evidence.schemas import validate
from afdp.pipeline.analysis import (
    AnalysisResult,
    analysis_values,
    analyze,
    analyze_metric,
)
from afdp.workflow.compiler import compile_document
from afdp.workflow.expressions import EvaluationError, parse_expression
from afdp.workflow.loader import load, parse
from afdp.workflow.model import Analyze, Metric, Threshold, Workflow
from afdp.workflow.units import Quantity, parse_quantity, parse_unit

EXAMPLES = Path(__file__).resolve().parents[1] / "afdp" / "workflow" / "examples"


def example(name: str) -> Workflow:
    return compile_document(load(EXAMPLES / f"{name}.yaml"))


def compile_text(text: str) -> Workflow:
    return compile_document(parse(textwrap.dedent(text), name="w.yaml"))


def metric(name: str = "latency", unit: str = "s", better: str = "lower") -> Metric:
    return Metric(name=name, collector="prometheus", unit=parse_unit(unit), better=better)  # type: ignore[arg-type]


def threshold(metric_name: str, direction: str, limit: str, mode: str) -> Threshold:
    return Threshold(
        metric_name,
        direction,  # type: ignore[arg-type]
        parse_quantity(limit),
        mode,  # type: ignore[arg-type]
        f"{metric_name}_{direction}",
    )


def checked(result: AnalysisResult) -> dict[str, Any]:
    """Validate against the schema and canonical JSON, as the ledger will."""
    document = result.to_json()
    validate("analysis.v1", document, what="analysis")
    canonical_bytes(document)
    # a document read back from evidence decides exactly as the live result does
    again = analysis_values(json.loads(canonical_bytes(document)))
    live = result.values()
    assert again.keys() == live.keys()
    for name, fields in live.items():
        if not isinstance(fields, dict):
            assert again[name] == fields
            continue
        for key, value in fields.items():
            other = again[name][key]
            if isinstance(value, Quantity):
                assert other.dimension == value.dimension
                assert other.base == pytest.approx(value.base, rel=1e-12, abs=1e-300)
            else:
                assert other == value
    return document


def rng(seed: int = 7) -> np.random.Generator:
    return np.random.default_rng(seed)


def latency(
    r: np.random.Generator, median: float, n: int = 300, spread: float = 0.25
) -> np.ndarray:
    return r.lognormal(math.log(median), spread, n)


# --- known regressions ---------------------------------------------------------------


def test_latency_regression_is_detected_with_threshold_in_ms_on_a_seconds_metric() -> None:
    workflow = example("api_deployment_impact")
    params = workflow.step("analyze_differences").params
    assert isinstance(params, Analyze)
    r = rng()
    baseline = {"response_time_p99": latency(r, 0.200)}
    impact = {"response_time_p99": latency(r, 0.240)}
    params = Analyze(
        params.baseline,
        params.impact,
        ("response_time_p99",),
        params.thresholds,
        params.method,
        params.confidence,
        params.min_samples,
    )
    result = analyze(params, workflow, baseline, impact)
    checked(result)
    m = result.metric("response_time_p99")
    assert m.status == "ok" and m.central == "median"
    assert m.degraded is True and m.significant is True and m.exceeded is True
    assert 0.030 < m.increase < 0.050  # seconds
    (t,) = m.thresholds
    assert t.limit.text == "10ms" and t.exceeded is True
    assert 30 < t.observed < 50  # reported in the limit's unit: milliseconds
    assert m.test is not None and m.test.effect_size > 0.3 and m.test.shift > 0.03
    low, high = m.test.shift_interval
    assert 0 < low < m.test.shift < high  # the shift's 95% interval excludes no change
    assert m.to_json()["test"]["shift"]["confidence"] == 0.95
    assert result.any_degradation is True and result.significant_degradation is True
    assert result.all_metrics_within_normal is False
    assert result.exceeded == ["response_time_p99"]


def test_error_rate_regression_against_half_a_percent() -> None:
    m = metric("error_rate", "ratio")
    r = rng(3)
    base = r.normal(0.010, 0.002, 200)
    impact = r.normal(0.030, 0.002, 200)
    result = analyze_metric(
        m,
        base,
        impact,
        thresholds=[threshold("error_rate", "increase", "0.5%", "absolute")],
        method="mann_whitney",
    )
    assert result.degraded is True and result.exceeded is True
    assert result.thresholds[0].observed == pytest.approx(2.0, abs=0.2)  # in %
    assert result.change == pytest.approx(2.0, rel=0.1)


def test_no_change_is_not_flagged_across_seeds() -> None:
    m = metric()
    flagged = []
    for seed in range(20):
        r = rng(seed)
        result = analyze_metric(
            m,
            # p99 over 1-minute windows: a 20ms spread; the 10ms limit is ~5 standard
            # errors of the median difference, so noise alone does not cross it
            latency(r, 0.2, spread=0.1),
            latency(r, 0.2, spread=0.1),
            thresholds=[threshold("latency", "increase", "10ms", "absolute")],
            method="mann_whitney",
        )
        assert result.status == "ok"
        if result.degraded:
            flagged.append(seed)
    assert flagged == []


def test_significant_but_negligible_shift_is_not_a_degradation() -> None:
    m = metric()
    r = rng(11)
    base = r.normal(0.200, 0.020, 5000)
    impact = r.normal(0.2012, 0.020, 5000)  # a real but tiny shift (Cliff's delta ~0.03)
    result = analyze_metric(m, base, impact, method="mann_whitney", confidence=0.5)
    assert result.test is not None and result.test.trivial is True
    assert result.degraded is False


def test_improvement_is_not_a_degradation_but_is_significant() -> None:
    m = metric()
    r = rng(5)
    result = analyze_metric(
        m,
        latency(r, 0.2),
        latency(r, 0.1),
        thresholds=[threshold("latency", "change", "10ms", "absolute")],
        method="mann_whitney",
    )
    assert result.significant is True and result.exceeded is True
    assert result.degraded is False
    assert result.increase < 0 and result.decrease > 0 and result.direction == "decrease"


def test_higher_is_better_metric_degrades_when_it_falls() -> None:
    m = metric("users", "count", better="higher")
    r = rng(9)
    falls = analyze_metric(
        m, r.normal(1000, 20, 100), r.normal(900, 20, 100), method="mann_whitney"
    )
    rises = analyze_metric(
        m, r.normal(1000, 20, 100), r.normal(1100, 20, 100), method="mann_whitney"
    )
    assert falls.degraded is True and falls.test.alternative_worse == "less"
    assert rises.degraded is False and rises.significant is True


def test_better_none_degrades_only_through_a_threshold() -> None:
    m = metric("rps", "1/s", better="none")
    r = rng(2)
    base, impact = r.normal(100, 5, 100), r.normal(150, 5, 100)
    untested = analyze_metric(m, base, impact, method="mann_whitney")
    assert untested.significant is True and untested.degraded is False
    assert untested.test.p_value_worse is None
    limited = analyze_metric(
        m, base, impact, thresholds=[threshold("rps", "change", "20%", "relative")]
    )
    assert limited.degraded is True


def test_welch_t_on_the_ab_example() -> None:
    workflow = example("feature_flag_analysis")
    params = workflow.step("statistical_comparison").params
    assert isinstance(params, Analyze) and params.method == "welch_t"
    r = rng(4)
    n = 60
    baseline = {
        "conversion_rate": r.normal(0.05, 0.005, n),
        "session_duration": r.normal(300, 30, n),
        "feature_adoption": r.normal(0.3, 0.02, n),
        "revenue_per_user": r.normal(12.0, 0.8, n),
    }
    impact = dict(baseline)
    impact["revenue_per_user"] = r.normal(10.8, 0.8, n)  # a $1.20 (10%) drop
    impact["conversion_rate"] = r.normal(0.05, 0.005, n)
    result = analyze(params, workflow, baseline, impact)
    document = checked(result)
    revenue = result.metric("revenue_per_user")
    assert revenue.central == "mean" and revenue.test.method == "welch_t"
    assert revenue.test.effect_size_name == "cohens_d" and revenue.test.effect_size < -0.8
    assert revenue.degraded is True and revenue.exceeded is True
    assert document["metrics"]["revenue_per_user"]["thresholds"][0]["mode"] == "relative"
    values = result.values()
    roll_back = next(d for d in workflow.decisions if d.name == "roll_back_feature")
    keep = next(d for d in workflow.decisions if d.name == "keep_feature")
    assert roll_back.condition.evaluate(values) is True
    assert keep.condition.evaluate(values) is False
    assert result.metric("conversion_rate").degraded is False


# --- thresholds in each mode, with units ---------------------------------------------


@pytest.mark.parametrize(
    ("limit", "mode", "direction", "base", "impact", "expected"),
    [
        ("10ms", "absolute", "increase", 0.200, 0.209, False),
        ("10ms", "absolute", "increase", 0.200, 0.211, True),
        ("10ms", "absolute", "increase", 0.200, 0.190, False),  # fell: increase is negative
        ("10ms", "absolute", "decrease", 0.200, 0.185, True),
        ("10ms", "absolute", "change", 0.200, 0.185, True),
        ("10ms", "absolute", "change", 0.200, 0.205, False),
        ("25%", "relative", "increase", 0.200, 0.240, False),
        ("25%", "relative", "increase", 0.200, 0.260, True),
        ("25%", "relative", "decrease", 0.200, 0.140, True),
        ("25%", "relative", "change", 0.200, 0.140, True),
        ("2x", "factor", "increase", 0.200, 0.390, False),
        ("2x", "factor", "increase", 0.200, 0.410, True),
        ("2x", "factor", "decrease", 0.200, 0.090, True),
        ("2x", "factor", "change", 0.200, 0.090, True),
        ("2x", "factor", "change", 0.200, 0.300, False),
    ],
)
def test_threshold_modes(
    limit: str, mode: str, direction: str, base: float, impact: float, expected: bool
) -> None:
    m = metric()
    result = analyze_metric(
        m, [base] * 3, [impact] * 3, thresholds=[threshold("latency", direction, limit, mode)]
    )
    assert result.thresholds[0].exceeded is expected


def test_a_limit_reached_exactly_is_not_exceeded() -> None:
    m = metric("error_rate", "%")  # samples in percent
    result = analyze_metric(
        m, [1.0], [1.5], thresholds=[threshold("error_rate", "increase", "0.5%", "absolute")]
    )
    assert result.thresholds[0].observed == pytest.approx(0.5)
    assert result.thresholds[0].exceeded is False


def test_currency_per_hour_threshold_and_condition() -> None:
    workflow = example("api_deployment_impact")
    m = workflow.metric("revenue_per_hour")
    assert m.unit.symbol == "$/h" and m.better == "higher"
    limit = threshold("revenue_per_hour", "decrease", "$1000_per_hour", "absolute")
    small = analyze_metric(m, [50_000.0] * 5, [49_500.0] * 5, thresholds=[limit])
    large = analyze_metric(m, [50_000.0] * 5, [48_000.0] * 5, thresholds=[limit])
    assert small.exceeded is False and large.exceeded is True and large.degraded is True
    condition = parse_expression("revenue_per_hour.decrease > $1000_per_hour")
    for result, expected in ((small, False), (large, True)):
        values = analysis_values({"metrics": {"revenue_per_hour": result.to_json()}, "summary": {}})
        assert condition.evaluate(values) is expected
    assert isinstance(values["revenue_per_hour"]["decrease"], Quantity)
    assert values["revenue_per_hour"]["decrease"].base == pytest.approx(2000 / 3600)


# --- edge cases: never a silent pass -------------------------------------------------


def test_empty_and_missing_samples_are_no_data() -> None:
    workflow = compile_text(
        """\
        name: t
        workflow:
          - capture_baseline: {duration: 1m, metrics: [error_rate, response_time_p99]}
          - mark_deployment_time
          - capture_impact: {duration: 1m}
          - analyze_differences:
              method: mann_whitney
              thresholds: {error_rate_increase: 1%}
        """
    )
    params = workflow.step("analyze_differences").params
    assert isinstance(params, Analyze)
    result = analyze(params, workflow, {"error_rate": []}, {"error_rate": [0.1] * 10})
    document = checked(result)
    for name in ("error_rate", "response_time_p99"):
        m = result.metric(name)
        assert m.status == "no_data"
        assert m.degraded is None and m.significant is None and m.increase is None
        assert m.reasons
    assert result.metric("error_rate").thresholds[0].exceeded is None
    assert document["metrics"]["error_rate"]["impact"] == pytest.approx(0.1)
    assert result.any_degradation is None and result.all_metrics_within_normal is False
    assert result.inconclusive == ["error_rate", "response_time_p99"]
    with pytest.raises(EvaluationError):
        parse_expression("error_rate.increase < 1%").evaluate(result.values())
    with pytest.raises(EvaluationError):
        parse_expression("not any_degradation").evaluate(result.values())


def test_insufficient_samples_skips_the_test_but_still_checks_thresholds() -> None:
    m = metric()
    limit = threshold("latency", "increase", "10ms", "absolute")
    exceeded = analyze_metric(
        m, [0.2, 0.21, 0.2], [0.3, 0.31, 0.3], thresholds=[limit], method="mann_whitney"
    )
    assert exceeded.status == "insufficient_samples"
    assert exceeded.test is None and exceeded.p_value is None and exceeded.significant is None
    assert exceeded.degraded is True  # a limit clearly exceeded still counts
    within = analyze_metric(
        m, [0.2, 0.21, 0.2], [0.201, 0.2, 0.2], thresholds=[limit], method="mann_whitney"
    )
    assert within.exceeded is False and within.degraded is None  # cannot say it is fine
    assert any("needs at least 5 samples" in r for r in within.reasons)


def test_min_samples_from_the_workflow() -> None:
    m = metric()
    # shuffled: a monotone ramp is strongly autocorrelated and holds few independent samples
    samples = list(np.random.default_rng(3).permutation(np.linspace(0.1, 0.2, 19)))
    few = analyze_metric(m, samples, samples, method="welch_t", min_samples=20)
    enough = analyze_metric(m, samples + [0.15], samples + [0.15], method="welch_t", min_samples=20)
    assert few.status == "insufficient_samples" and enough.status == "ok"


def test_zero_baseline_makes_relative_change_undefined_but_absolute_limits_apply() -> None:
    m = metric("error_rate", "ratio")
    result = analyze_metric(
        m,
        [0.0] * 10,
        [0.02] * 10,
        thresholds=[
            threshold("error_rate", "increase", "1%", "absolute"),
            threshold("error_rate", "increase", "2x", "factor"),
        ],
        method="mann_whitney",
    )
    checked(AnalysisResult("b", "i", "mann_whitney", 0.95, 5, (result,)))  # nulls are schema-valid
    assert result.change is None and result.factor is None
    absolute, factor = result.thresholds
    assert absolute.exceeded is True and factor.exceeded is None and factor.reason
    assert result.degraded is True  # the absolute limit decides
    assert result.significant is True  # constant but different: the test still works
    assert any("baseline is 0" in r for r in result.reasons)


def test_zero_to_zero_is_no_change() -> None:
    m = metric("error_rate", "ratio")
    result = analyze_metric(
        m,
        [0.0] * 10,
        [0.0] * 10,
        thresholds=[threshold("error_rate", "increase", "50%", "absolute")],
        method="mann_whitney",
    )
    assert result.change == 0.0 and result.factor == 1.0
    assert result.p_value == 1.0 and result.significant is False
    assert result.degraded is False and result.exceeded is False
    assert any("same value" in r for r in result.reasons)


def test_zero_baseline_with_only_a_relative_threshold_is_inconclusive() -> None:
    m = metric("errors", "count")
    result = analyze_metric(
        m, [0.0, 0.0], [3.0, 4.0], thresholds=[threshold("errors", "increase", "10%", "relative")]
    )
    assert result.exceeded is None and result.degraded is None


def test_non_finite_samples_are_dropped_and_counted() -> None:
    m = metric()
    base = [0.2] * 8 + [math.nan, math.inf]
    impact = [0.2] * 8 + [-math.inf, None, "x"]  # type: ignore[list-item]
    result = analyze_metric(m, base, impact, method="mann_whitney")  # type: ignore[arg-type]
    document = result.to_json()
    assert document["counts"] == {
        "baseline": 8,
        "impact": 8,
        "baseline_dropped": 2,
        "impact_dropped": 3,
    }
    assert result.status == "ok" and result.baseline == 0.2
    assert any("non-finite" in r for r in result.reasons)


def test_collector_metric_data_is_accepted() -> None:
    class MetricData:  # the shape of afdp.pipeline.collectors.MetricData: samples via values()
        def values(self) -> list[float]:
            return [0.2, 0.3, 0.25]

    result = analyze_metric(metric(), MetricData(), [0.2])  # type: ignore[arg-type]
    assert result.baseline_stats.count == 3 and result.baseline == 0.25


def test_all_nan_is_no_data() -> None:
    result = analyze_metric(metric(), [math.nan] * 5, [0.2] * 5)
    assert result.status == "no_data" and result.baseline_stats.dropped == 5


def test_identical_constant_series_are_not_significant() -> None:
    for method in ("mann_whitney", "welch_t"):
        result = analyze_metric(metric(), [0.2] * 30, [0.2] * 30, method=method)
        assert result.p_value == 1.0 and result.significant is False
        assert result.degraded is False
        assert any("same value" in r for r in result.reasons)


def test_welch_undefined_for_two_different_constants() -> None:
    result = analyze_metric(metric(), [0.2] * 30, [0.3] * 30, method="welch_t")
    assert result.p_value is None and result.significant is None
    assert result.degraded is None
    limited = analyze_metric(
        metric(),
        [0.2] * 30,
        [0.3] * 30,
        method="welch_t",
        thresholds=[threshold("latency", "increase", "10ms", "absolute")],
    )
    assert limited.degraded is True


def test_no_threshold_and_no_test_is_reported() -> None:
    m = analyze_metric(metric(), [0.2], [0.5])
    assert m.status == "ok" and m.degraded is False and m.factor == pytest.approx(2.5)
    assert any("nothing can degrade it" in r for r in m.reasons)
    assert m.significant_degradation is None  # no test was asked for


def test_a_comparison_that_declares_nothing_is_judged_by_the_defaults() -> None:
    """The guide's `compare: before_vs_after` (issue 10): it used to judge nothing, so a
    2.5x latency was "not degraded". Now Mann-Whitney confirms a move beyond the default
    10% tolerance; with one sample a side (no test can run) the tolerance alone decides."""
    workflow = example("my_first_workflow")
    params = workflow.step("compare").params
    assert isinstance(params, Analyze)
    assert params.method == "mann_whitney" and params.tolerance_decides
    assert [(t.direction, t.mode, str(t.limit)) for t in params.thresholds] == [("increase", "relative", "10%")]
    worse = analyze(params, workflow, {"response_time": [0.2]}, {"response_time": [0.5]})
    checked(worse)
    assert worse.metric("response_time").degraded is True
    same = analyze(params, workflow, {"response_time": [0.2]}, {"response_time": [0.21]})
    assert same.metric("response_time").degraded is False  # +5%: within the tolerance
    better = analyze(params, workflow, {"response_time": [0.2]}, {"response_time": [0.1]})
    assert better.metric("response_time").degraded is False
    # With samples, a shift the test confirms and the tolerance exceeds degrades it; a
    # smooth 0.5% drift that is "significant" does not (rate(...[1m]) series are smooth).
    base = [0.2 + 0.0001 * i for i in range(30)]
    assert analyze(params, workflow, {"response_time": base}, {"response_time": [x * 1.3 for x in base]}).metric("response_time").degraded is True
    assert analyze(params, workflow, {"response_time": base}, {"response_time": [x * 1.005 + 0.0031 for x in base]}).metric("response_time").degraded is False


def test_bad_method_and_confidence_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown statistical method"):
        analyze_metric(metric(), [1.0], [1.0], method="t_test")
    with pytest.raises(ValueError, match="confidence"):
        analyze_metric(metric(), [1.0], [1.0], confidence=1.0)


def test_schema_rejects_a_broken_document() -> None:
    result = analyze_metric(metric(), [0.2] * 6, [0.3] * 6, method="mann_whitney")
    document = AnalysisResult("b", "i", "mann_whitney", 0.95, 5, (result,)).to_json()
    validate("analysis.v1", document)
    document["metrics"]["latency"]["status"] = "fine"
    from afdp.errors import SchemaError

    with pytest.raises(SchemaError, match="status"):
        validate("analysis.v1", document)


# --- every example's conditions evaluate over the values -------------------------------


def _synthetic(workflow: Workflow, params: Analyze, *, regress: bool) -> AnalysisResult:
    r = rng(21)
    baseline: dict[str, Any] = {}
    impact: dict[str, Any] = {}
    for name in params.metrics:
        m = workflow.metric(name)
        level = {"time": 0.2, "ratio": 0.02, "USD/time": 50_000.0, "USD": 12.0}.get(
            m.unit.dimension, 1000.0
        )
        n = 200  # at this size a chance p < 0.05 comes with a negligible effect
        baseline[name] = r.normal(level, level * 0.05, n)
        worse = {"lower": 1.6, "higher": 0.6}.get(m.better, 1.0) if regress else 1.0
        impact[name] = r.normal(level * worse, level * 0.05, n)
    return analyze(params, workflow, baseline, impact)


@pytest.mark.parametrize(
    "name",
    [
        "api_deployment_impact",
        "canary_rollout",
        "database_migration_impact",
        "feature_flag_analysis",
        "my_first_workflow",
    ],
)
def test_example_conditions_evaluate(name: str) -> None:
    workflow = example(name)
    analyses = [s for s in workflow.steps if isinstance(s.params, Analyze)]
    assert analyses
    for regress in (False, True):
        for step in analyses:
            assert isinstance(step.params, Analyze)
            result = _synthetic(workflow, step.params, regress=regress)
            checked(result)
            values = {**workflow.values(), **result.values(), "success_criteria_met": True}
            conditions = [c for c in workflow.success_criteria]
            conditions += [d.condition for d in workflow.decisions]
            conditions += [s.params.condition for s in workflow.steps if s.kind.value == "gate"]  # type: ignore[union-attr]
            for condition in conditions:
                assert isinstance(condition.evaluate(values), bool), condition.source
            judged = bool(step.params.method or step.params.thresholds)
            assert result.any_degradation is (regress and judged)
            assert result.all_metrics_within_normal is (not (regress and judged))


def test_false_alarm_rate_and_power_of_the_test_path() -> None:
    """No change: degraded by chance at most ~(1 - confidence)/2; a 20% shift: found."""
    m = metric()
    r = rng(1234)
    runs = 400
    false_alarms = sum(
        bool(
            analyze_metric(
                m, latency(r, 0.2, n=30), latency(r, 0.2, n=30), method="mann_whitney"
            ).degraded
        )
        for _ in range(runs)
    )
    detected = sum(
        bool(
            analyze_metric(
                m, latency(r, 0.2, n=30), latency(r, 0.24, n=30, spread=0.1), method="mann_whitney"
            ).degraded
        )
        for _ in range(100)
    )
    assert false_alarms / runs < 0.045  # expected 0.025; a one-sided rule would give 0.05
    assert detected >= 95


def test_shift_intervals_cover_a_known_shift() -> None:
    m = metric()
    r = rng(77)
    for method in ("mann_whitney", "welch_t"):
        covered = 0
        for _ in range(200):
            result = analyze_metric(
                m, latency(r, 0.2, n=30), latency(r, 0.2, n=30) + 0.01, method=method
            )
            low, high = result.test.shift_interval
            covered += low <= 0.01 <= high
        assert covered >= 180, method  # 95% intervals: ~190 expected
    tiny = analyze_metric(m, [0.1, 0.2, 0.3], [0.2, 0.3, 0.4], method="mann_whitney", min_samples=2)
    assert tiny.test.shift_interval is None  # too few samples for a 95% interval
