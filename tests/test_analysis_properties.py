"""Properties of the analysis over arbitrary input: it never raises and never emits NaN."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from afdp.evidence.canonical import canonical_bytes
from afdp.evidence.schemas import validate
from afdp.pipeline.analysis import MAX_PAIRS, AnalysisResult, _hodges_lehmann, analyze_metric
from afdp.workflow.model import Metric, Threshold
from afdp.workflow.units import parse_quantity, parse_unit

METRIC = Metric("latency", "prometheus", parse_unit("ms"), "lower")
THRESHOLDS = (
    Threshold("latency", "increase", parse_quantity("10ms"), "absolute", "latency_increase"),
    Threshold("latency", "change", parse_quantity("20%"), "relative", "latency_change"),
    Threshold("latency", "decrease", parse_quantity("2x"), "factor", "latency_decrease"),
)
samples = st.lists(
    st.floats(allow_nan=True, allow_infinity=True, width=64) | st.integers(-5, 5).map(float),
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(baseline=samples, impact=samples, method=st.sampled_from([None, "mann_whitney", "welch_t"]))
def test_any_input_gives_a_valid_canonical_document(
    baseline: list[float], impact: list[float], method: str | None
) -> None:
    result = analyze_metric(
        METRIC, baseline, impact, thresholds=THRESHOLDS, method=method, min_samples=3
    )
    document = AnalysisResult("b", "i", method, 0.95, 3, (result,)).to_json()
    validate("analysis.v1", document)
    canonical_bytes(document)  # raises on NaN or infinity
    counts = document["metrics"]["latency"]["counts"]
    assert counts["baseline"] + counts["baseline_dropped"] == len(baseline)
    assert counts["impact"] + counts["impact_dropped"] == len(impact)
    if result.status != "ok":
        assert result.degraded is not False or result.status == "insufficient_samples"
        assert result.reasons


@settings(max_examples=60, deadline=None)
@given(
    baseline=st.lists(st.floats(0, 1e3), min_size=5, max_size=30),
    impact=st.lists(st.floats(0, 1e3), min_size=5, max_size=30),
)
def test_swapping_sides_mirrors_the_result(baseline: list[float], impact: list[float]) -> None:
    forward = analyze_metric(METRIC, baseline, impact, method="mann_whitney")
    backward = analyze_metric(METRIC, impact, baseline, method="mann_whitney")
    assert forward.increase == pytest.approx(-backward.increase, abs=1e-9)
    assert forward.p_value == pytest.approx(backward.p_value, rel=1e-9, abs=1e-12)
    assert forward.status == backward.status
    if forward.test is None:  # too few independent samples (dependent series): both sides
        assert backward.test is None and forward.status == "insufficient_samples"
        return
    assert forward.test.effect_size == pytest.approx(-backward.test.effect_size, abs=1e-9)


def test_hodges_lehmann_on_large_samples_is_close_to_exact() -> None:
    r = np.random.default_rng(0)
    x = r.lognormal(0.0, 0.5, 2500)
    y = r.lognormal(0.1, 0.5, 2500)
    assert x.size * y.size > MAX_PAIRS  # the quantile-grid path
    approx = _hodges_lehmann(x, y)
    exact = float(np.median(np.subtract.outer(x, y)))
    assert math.isclose(approx, exact, rel_tol=0.02, abs_tol=1e-3)


@settings(max_examples=60, deadline=None)
@given(
    x=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=25),
    y=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=25),
)
def test_hodges_lehmann_is_the_median_of_pairwise_differences(
    x: list[float], y: list[float]
) -> None:
    exact = float(np.median(np.subtract.outer(np.array(x), np.array(y))))
    assert _hodges_lehmann(np.array(x), np.array(y)) == pytest.approx(exact, abs=1e-6)
