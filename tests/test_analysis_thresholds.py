"""Practical and statistical significance together, and tests that survive dependent samples.

A threshold that watches a metric's worse direction says how much movement matters:
``degraded`` needs it exceeded, and (when a test ran on enough independent samples) the
test must confirm the worse shift. Only a metric no threshold watches is judged by the
test and its effect size alone. Series sampled faster than they change (a Prometheus
range query with a 1 s step over a ``rate(...[5s])``, AR(1) noise) are thinned to their
effective sample size before the test.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest

from afdp.evidence.schemas import validate
from afdp.pipeline.analysis import AnalysisResult, analyze, analyze_metric
from afdp.workflow.compiler import compile_document
from afdp.workflow.expressions import parse_expression
from afdp.workflow.loader import parse
from afdp.workflow.model import Analyze, Metric, Threshold
from afdp.workflow.units import parse_quantity, parse_unit

MS = Metric(name="latency", collector="prometheus", unit=parse_unit("ms"), better="lower")
LIMIT_15MS = Threshold("latency", "increase", parse_quantity("15ms"), "absolute", "latency_increase")


def document(result) -> dict:  # type: ignore[no-untyped-def]
    doc = AnalysisResult("b", "i", "mann_whitney", 0.95, 5, (result,)).to_json()
    validate("analysis.v1", doc)
    return doc["metrics"][result.metric]


def ar1(r: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    """A stationary AR(1) series with marginal standard deviation ``sd``."""
    noise = r.normal(0.0, sd * math.sqrt(1.0 - phi * phi), n)
    out = np.empty(n)
    out[0] = r.normal(0.0, sd)
    for t in range(1, n):
        out[t] = phi * out[t - 1] + noise[t]
    return out


def moving_average(r: np.random.Generator, n: int, width: int, sd: float) -> np.ndarray:
    """A rate over a ``width``-sample window read every sample: overlapping means."""
    raw = r.normal(0.0, sd, n + width - 1)
    return np.convolve(raw, np.ones(width) / width, mode="valid")


# --- the QA report: v2 against v2 rolled back ------------------------------------------

QA_WORKFLOW = """
name: qa_no_change
version: "1.0"
triggers: [manual_trigger]
metrics:
  shop_latency_mean:
    query: avg(rate(shop_latency_sum[5s])) / avg(rate(shop_latency_count[5s]))
    unit: ms
    better: lower
  shop_errors:
    query: sum(rate(shop_errors_total[5s]))
    unit: 1/s
    better: lower
workflow:
  pre_deployment:
    - capture_baseline:
        duration: 5_minutes
        metrics: [shop_latency_mean, shop_errors]
  post_deployment:
    - capture_impact:
        duration: 5_minutes
        metrics: [same_as_baseline]
    - analyze_differences:
        method: mann_whitney
        thresholds:
          shop_latency_mean_increase: 15ms
          shop_errors_increase: 1_per_second
    - decisions
decisions:
  roll_back:
    condition: shop_latency_mean.degraded or shop_errors.degraded
    action: rollback
"""


def test_qa_report_a_significant_shift_within_the_users_threshold_is_not_degraded() -> None:
    workflow = compile_document(parse(textwrap.dedent(QA_WORKFLOW), name="qa.yaml"))
    (step,) = [s for s in workflow.steps if isinstance(s.params, Analyze)]
    assert isinstance(step.params, Analyze)
    r = np.random.default_rng(2026)
    # independent samples, 87.59 ms -> 88.00 ms (+0.47%): the test finds it, it is tiny
    baseline = {"shop_latency_mean": r.normal(87.59, 1.0, 300), "shop_errors": r.normal(0.5, 0.05, 300)}
    impact = {"shop_latency_mean": r.normal(88.00, 1.0, 300), "shop_errors": r.normal(0.5, 0.05, 300)}
    result = analyze(step.params, workflow, baseline, impact)
    latency = result.metric("shop_latency_mean")
    assert latency.exceeded is False
    assert latency.significant is True and latency.test is not None
    assert latency.test.trivial is False  # a non-trivial Cliff's delta, as in the report
    assert latency.degraded is False and latency.decided_by == "threshold_and_test"
    assert result.any_degradation is False and result.significant_degradation is False
    values = result.values()
    assert parse_expression("shop_latency_mean.degraded or shop_errors.degraded").evaluate(values) is False
    assert document(latency)["decided_by"] == "threshold_and_test"


def test_threshold_exceeded_and_confirmed_by_the_test_is_degraded() -> None:
    r = np.random.default_rng(5)
    result = analyze_metric(
        MS, r.normal(87, 5, 120), r.normal(127, 5, 120), thresholds=[LIMIT_15MS], method="mann_whitney"
    )
    assert result.exceeded is True and result.test is not None and result.test.p_value_worse < 0.05
    assert result.degraded is True and result.significant_degradation is True
    assert result.decided_by == "threshold_and_test"
    welch = analyze_metric(
        MS, r.normal(87, 5, 120), r.normal(127, 5, 120), thresholds=[LIMIT_15MS], method="welch_t"
    )
    assert welch.degraded is True and welch.decided_by == "threshold_and_test"


def test_threshold_exceeded_by_noise_without_a_significant_test_is_not_degraded() -> None:
    baseline = [70.0, 90.0, 100.0, 130.0, 75.0]  # median 90
    impact = [72.0, 110.0, 140.0, 95.0, 125.0]  # median 110: +20 ms over a 15 ms limit
    result = analyze_metric(MS, baseline, impact, thresholds=[LIMIT_15MS], method="mann_whitney")
    assert result.exceeded is True and result.thresholds[0].observed == pytest.approx(20.0)
    assert result.test is not None and result.test.p_value_worse >= 0.05
    assert result.degraded is False and result.significant_degradation is False
    assert any("does not confirm" in reason for reason in result.reasons)
    # the same exceedance with no test configured: the threshold alone decides, as before
    alone = analyze_metric(MS, baseline, impact, thresholds=[LIMIT_15MS])
    assert alone.degraded is True and alone.decided_by == "threshold"
    # and with too few samples for the test: the threshold alone decides too
    few = analyze_metric(MS, baseline[:3], impact[:3], thresholds=[LIMIT_15MS], method="mann_whitney")
    assert few.status == "insufficient_samples" and few.degraded is True
    assert few.decided_by == "threshold"


def test_a_threshold_on_the_better_direction_leaves_the_test_in_charge() -> None:
    r = np.random.default_rng(8)
    better_only = Threshold("latency", "decrease", parse_quantity("15ms"), "absolute", "latency_decrease")
    for thresholds in ((), (better_only,)):
        worse = analyze_metric(MS, r.normal(87, 5, 100), r.normal(95, 5, 100), thresholds=thresholds, method="mann_whitney")
        assert worse.degraded is True and worse.decided_by == "test"
        assert worse.significant_degradation is True
        negligible = analyze_metric(
            MS, r.normal(87, 5, 4000), r.normal(87.5, 5, 4000), thresholds=thresholds, method="mann_whitney"
        )
        assert negligible.significant is True and negligible.test is not None
        assert negligible.test.trivial is True and negligible.degraded is False
        assert negligible.decided_by == "test"


# --- dependent samples -------------------------------------------------------------------


def test_independent_samples_are_recorded_as_such() -> None:
    r = np.random.default_rng(11)
    result = analyze_metric(MS, r.normal(87, 5, 200), r.normal(87, 5, 200), method="mann_whitney")
    assert result.dependence is not None and result.dependence.corrected is False
    independence = document(result)["independence"]
    assert independence["method"] == "independent" and independence["variance_inflation"] == 1.0
    assert independence["n"] == {"baseline": 200, "impact": 200}
    assert independence["n_effective"] == {"baseline": 200.0, "impact": 200.0}


@pytest.mark.parametrize("method", ["mann_whitney", "welch_t"])
def test_autocorrelated_no_change_is_not_flagged_and_a_real_shift_is(method: str) -> None:
    """AR(1) with phi 0.9 (an integrated autocorrelation time of 19 samples), 300 a side."""
    r = np.random.default_rng(90)
    runs = 200
    flagged = 0
    for _ in range(runs):
        result = analyze_metric(MS, 87 + ar1(r, 300, 0.9, 10.0), 87 + ar1(r, 300, 0.9, 10.0), method=method)
        flagged += result.degraded is True
    assert flagged / runs <= 0.05
    detected = 0
    for _ in range(50):
        result = analyze_metric(MS, 87 + ar1(r, 300, 0.9, 10.0), 127 + ar1(r, 300, 0.9, 10.0), method=method)
        detected += result.degraded is True
    assert detected >= 47
    shifted = analyze_metric(MS, 87 + ar1(r, 300, 0.9, 10.0), 127 + ar1(r, 300, 0.9, 10.0), method=method)
    independence = document(shifted)["independence"]
    assert independence["method"] == "ar1_effective_sample_size"
    assert independence["lag1_autocorrelation"] > 0.7
    assert 5 <= independence["n_effective"]["baseline"] < 60  # ~16 of 300
    assert independence["degrees_of_freedom"] is not None


def test_overlapping_rate_windows_are_not_flagged() -> None:
    """rate(...[5s]) read every second: a 5-sample moving average of white noise."""
    r = np.random.default_rng(55)
    runs = 200
    flagged = sum(
        analyze_metric(MS, 87 + moving_average(r, 300, 5, 10.0), 87 + moving_average(r, 300, 5, 10.0), method="mann_whitney").degraded
        is True
        for _ in range(runs)
    )
    assert flagged / runs <= 0.05
    detected = sum(
        analyze_metric(MS, 87 + moving_average(r, 300, 5, 10.0), 97 + moving_average(r, 300, 5, 10.0), method="mann_whitney").degraded
        is True
        for _ in range(50)
    )
    assert detected >= 47


def test_too_few_independent_samples_skip_the_test_and_say_so() -> None:
    r = np.random.default_rng(4)
    base, shifted = 87 + ar1(r, 60, 0.97, 10.0), 127 + ar1(r, 60, 0.97, 10.0)
    untested = analyze_metric(MS, base, 87 + ar1(r, 60, 0.97, 10.0), method="mann_whitney")
    assert untested.status == "insufficient_samples" and untested.test is None
    assert untested.degraded is None  # unknown, never a silent pass
    assert any("independent samples" in reason for reason in untested.reasons)
    assert untested.dependence is not None and untested.dependence.n_effective_baseline < 5
    limited = analyze_metric(MS, base, shifted, thresholds=[LIMIT_15MS], method="mann_whitney")
    assert limited.degraded is True and limited.decided_by == "threshold"
