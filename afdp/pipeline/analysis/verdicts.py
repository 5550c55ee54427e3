"""One metric's verdict: statistics, test and thresholds combined into ``degraded``.

:func:`analyze_metric` compares one metric's baseline and impact samples and returns a
:class:`MetricAnalysis`: the central values, the movement, the test, every threshold,
``degraded`` and which rule decided it (``decided_by``, see the package docstring), and
the reasons for anything that could not be computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from afdp.evidence.canonical import json_safe
from afdp.pipeline.analysis.dependence import Dependence, _test_dependence
from afdp.pipeline.analysis.samples import SampleStats
from afdp.pipeline.analysis.statistics import TestResult, _mann_whitney, _welch
from afdp.pipeline.analysis.thresholds import ThresholdResult, _check_threshold, _ratio, _relative
from afdp.workflow.units import Unit

if TYPE_CHECKING:
    from afdp.workflow.model import Metric, Threshold


# What decided ``degraded`` (recorded as ``decided_by``).
DECIDED_BY_THRESHOLD_AND_TEST = "threshold_and_test"
DECIDED_BY_THRESHOLD = "threshold"
DECIDED_BY_TEST = "test"
DECIDED_BY_NOTHING = "nothing"

STATUS_OK = "ok"
STATUS_NO_DATA = "no_data"
STATUS_INSUFFICIENT = "insufficient_samples"


@dataclass(frozen=True)
class MetricAnalysis:
    """Everything measured and judged for one metric (see the module docstring)."""

    metric: str
    unit: Unit
    better: str
    status: str
    central: str
    baseline_stats: SampleStats
    impact_stats: SampleStats
    baseline: float | None
    impact: float | None
    increase: float | None
    change: float | None
    factor: float | None
    test: TestResult | None
    significant: bool | None
    thresholds: tuple[ThresholdResult, ...]
    exceeded: bool | None
    degraded: bool | None
    significant_degradation: bool | None
    reasons: tuple[str, ...]
    dependence: Dependence | None = None
    decided_by: str | None = None
    #: A business context metric (``context:``): measured and shown, never judged.
    context: bool = False

    @property
    def decrease(self) -> float | None:
        """Return baseline - impact (None when unknown)."""
        return None if self.increase is None else -self.increase

    @property
    def p_value(self) -> float | None:
        """Return the two-sided p-value (None when no test ran or it is undefined)."""
        return self.test.p_value if self.test is not None else None

    @property
    def direction(self) -> str | None:
        """Return ``increase``, ``decrease`` or ``none`` (None when unknown)."""
        if self.increase is None:
            return None
        return "increase" if self.increase > 0 else "decrease" if self.increase < 0 else "none"

    def to_json(self) -> dict[str, Any]:
        """Return the metric's analysis as canonical-JSON-safe evidence."""
        b, i = self.baseline_stats, self.impact_stats
        return json_safe(
            {
                "metric": self.metric,
                "unit": {
                    "symbol": self.unit.symbol,
                    "dimension": self.unit.dimension,
                    "factor": self.unit.factor,
                },
                "better": self.better,
                "status": self.status,
                "central": self.central,
                "baseline": self.baseline,
                "impact": self.impact,
                "increase": self.increase,
                "decrease": self.decrease,
                "change": self.change,
                "factor": self.factor,
                "direction": self.direction,
                "p_value": self.p_value,
                "significant": self.significant,
                "exceeded": self.exceeded,
                "degraded": self.degraded,
                "significant_degradation": self.significant_degradation,
                "counts": {
                    "baseline": b.count,
                    "impact": i.count,
                    "baseline_dropped": b.dropped,
                    "impact_dropped": i.dropped,
                },
                "percentiles": {
                    "baseline": {"p50": b.p50, "p95": b.p95, "p99": b.p99},
                    "impact": {"p50": i.p50, "p95": i.p95, "p99": i.p99},
                },
                "statistics": {"baseline": b.to_json(), "impact": i.to_json()},
                "test": self.test.to_json() if self.test is not None else None,
                "thresholds": [t.to_json() for t in self.thresholds],
                "independence": self.dependence.to_json() if self.dependence else None,
                "decided_by": self.decided_by,
                "reasons": list(self.reasons),
                **({"context": True} if self.context else {}),
            }
        )


def analyze_metric(
    metric: Metric,
    baseline: Sequence[float] | None,
    impact: Sequence[float] | None,
    *,
    thresholds: Sequence[Threshold] = (),
    method: str | None = None,
    confidence: float = 0.95,
    min_samples: int = 5,
    tolerance_decides: bool = False,
) -> MetricAnalysis:
    """Compare one metric's ``baseline`` samples with its ``impact`` samples.

    ``None`` for a side means its collection failed (analyzed as no data).
    ``tolerance_decides``: when the test cannot run, a watching threshold that is not
    exceeded means "not degraded" (the default tolerance of a comparison that declares
    nothing), instead of unknown.

    Returns:
        The :class:`MetricAnalysis`; never raises for bad data, it reports it.

    Raises:
        ValueError: ``method`` is not ``mann_whitney``, ``welch_t`` or None, or
            ``confidence`` is not strictly between 0 and 1.
    """
    if method not in (None, "mann_whitney", "welch_t"):
        raise ValueError(f"unknown statistical method {method!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    # Samples near the float limits overflow to infinity in sums and squares; such
    # results are written as null (json_safe) instead of warning on stderr.
    with np.errstate(all="ignore"):
        return _analyze_metric(
            metric, baseline, impact, thresholds, method, confidence, min_samples,
            tolerance_decides,
        )  # fmt: skip


def _analyze_metric(
    metric: Metric,
    baseline: Sequence[float] | None,
    impact: Sequence[float] | None,
    thresholds: Sequence[Threshold],
    method: str | None,
    confidence: float,
    min_samples: int,
    tolerance_decides: bool = False,
) -> MetricAnalysis:
    reasons: list[str] = []
    b = SampleStats.of(baseline)
    i = SampleStats.of(impact)
    for side, stats_, raw in (("baseline", b, baseline), ("impact", i, impact)):
        if raw is None:
            reasons.append(f"no {side} samples: the collection failed or returned nothing")
        elif stats_.count == 0:
            reasons.append(f"no {side} samples" + _dropped_note(stats_))
        elif stats_.dropped:
            reasons.append(f"{side}: {stats_.dropped} non-finite sample(s) dropped")
    central = "mean" if method == "welch_t" else "median"
    metric_thresholds = tuple(t for t in thresholds if t.metric == metric.name)

    if b.count == 0 or i.count == 0:
        checked = tuple(_check_threshold(t, metric, None, None) for t in metric_thresholds)
        return MetricAnalysis(
            metric.name,
            metric.unit,
            metric.better,
            STATUS_NO_DATA,
            central,
            b,
            i,
            _central(b, central),
            _central(i, central),
            None,
            None,
            None,
            None,
            None,
            checked,
            None,
            None,
            None,
            tuple(reasons),
        )

    base_value = _central(b, central)
    impact_value = _central(i, central)
    assert base_value is not None and impact_value is not None
    increase = impact_value - base_value
    change = _relative(base_value, impact_value)
    factor = _ratio(impact_value, base_value)
    if base_value == 0 and impact_value == 0:
        reasons.append("baseline and impact are both 0: no change (change 0%, factor 1x)")
    elif base_value == 0:
        reasons.append("the baseline is 0: relative change and factor are undefined")

    status = STATUS_OK
    test: TestResult | None = None
    dependence: Dependence | None = None
    need = max(min_samples, 2)
    if method is not None:
        if b.count < need or i.count < need:
            status = STATUS_INSUFFICIENT
            reasons.append(
                f"{method} needs at least {need} samples on each side, got baseline "
                f"{b.count} and impact {i.count}: test not run"
            )
        else:
            dependence = _test_dependence(method, b, i)
            eff_b, eff_i = dependence.n_effective_baseline, dependence.n_effective_impact
            if dependence.corrected:
                reasons.append(
                    f"consecutive samples are dependent (lag-1 autocorrelation "
                    f"{dependence.lag1:.2f}): the test counts about {eff_b:.1f} baseline and "
                    f"{eff_i:.1f} impact independent samples (variance inflated "
                    f"{dependence.inflation:.2f}x)"
                )
            if eff_b < need or eff_i < need:
                status = STATUS_INSUFFICIENT
                reasons.append(
                    f"{method} needs at least {need} independent samples on each side, the "
                    f"series hold about {eff_b:.1f} (baseline) and {eff_i:.1f} (impact): "
                    "test not run; capture longer or less often"
                )
            else:
                test = (_mann_whitney if method == "mann_whitney" else _welch)(
                    b, i, metric.better, confidence, dependence
                )
                if test.reason:
                    reasons.append(test.reason)

    alpha = 1.0 - confidence
    significant = None if test is None or test.p_value is None else test.p_value < alpha

    checked = tuple(
        _check_threshold(t, metric, base_value, impact_value) for t in metric_thresholds
    )
    for result in checked:
        if result.reason:
            reasons.append(f"threshold {result.key}: {result.reason}")
    exceeded = _any3(t.exceeded for t in checked)

    moved_worse = (metric.better == "lower" and increase > 0) or (
        metric.better == "higher" and increase < 0
    )
    watching = tuple(t for t in checked if t.watches_worse)
    # Did a threshold on the worse direction see the central value move that way by more
    # than its limit? (None when a watching threshold could not be evaluated.)
    over_limit = _any3(
        None if t.exceeded is None else bool(t.exceeded and (metric.better == "none" or moved_worse))
        for t in watching
    )
    usable_test = test is not None and test.p_value is not None

    decided_by: str
    if watching:
        if not usable_test:
            # No test to confirm it: a limit exceeded the worse way degrades the metric
            # on its own. A limit not exceeded is "not degraded" only when no test was
            # asked for; with a test that could not run, it stays unknown (as before).
            decided_by = DECIDED_BY_THRESHOLD
            degraded: bool | None = over_limit
            if method is not None and over_limit is False and not tolerance_decides:
                degraded = None
            if method is not None and over_limit:
                reasons.append("the test could not run: the exceeded threshold alone decides")
        else:
            assert test is not None
            decided_by = DECIDED_BY_THRESHOLD_AND_TEST
            # The threshold says how much movement matters; the test says it is not noise:
            # one-sided in the worse direction (two-sided when ``better: none``).
            p_confirm = test.p_value if metric.better == "none" else test.p_value_worse
            confirmed = None if p_confirm is None else p_confirm < alpha
            degraded = _all3((over_limit, confirmed))
            if over_limit and confirmed is False:
                reasons.append(
                    f"a threshold is exceeded but the test does not confirm a worse shift "
                    f"(p = {p_confirm:.3g} >= {alpha:.3g}): not degraded"
                )
    elif method is None:
        decided_by = DECIDED_BY_NOTHING
        degraded = False
        if not metric_thresholds:
            reasons.append("no threshold and no statistical test apply: nothing can degrade it")
        else:
            reasons.append(
                "no threshold watches the worse direction and no test runs: nothing can "
                "degrade it"
            )
    elif metric.better == "none":
        decided_by = DECIDED_BY_NOTHING
        degraded = False if test is not None else None
        reasons.append("better: none and no threshold: nothing can degrade it")
    elif not usable_test:
        decided_by = DECIDED_BY_TEST
        degraded = None
    else:
        assert test is not None and test.p_value is not None
        decided_by = DECIDED_BY_TEST
        if test.trivial is None:
            degraded = None
        else:
            effect = test.effect_size or 0.0
            effect_worse = effect > 0 if metric.better == "lower" else effect < 0
            # Significant two-sided (as ``significant`` says) with a non-negligible effect
            # pointing the worse way: a false alarm rate of at most alpha/2 per metric.
            degraded = bool(test.p_value < alpha and not test.trivial and effect_worse)

    # Degradations the test took part in (None when no test could run).
    significant_degradation = None if method is None or not usable_test else degraded
    if method is not None and degraded is False:
        # Known not degraded (a watching threshold decided it while the test could not
        # run): there is no degradation, significant or not. A stage's
        # `abort_on: significant_degradation` must not stop a rollout that changed nothing
        # because its window was too short for the test.
        significant_degradation = False
    if degraded is None:
        reasons.append("degradation unknown: see the reasons above")

    return MetricAnalysis(
        metric.name,
        metric.unit,
        metric.better,
        status,
        central,
        b,
        i,
        base_value,
        impact_value,
        increase,
        change,
        factor,
        test,
        significant,
        checked,
        exceeded,
        degraded,
        significant_degradation,
        tuple(reasons),
        dependence,
        decided_by,
    )


def _central(stats_: SampleStats, central: str) -> float | None:
    return stats_.mean if central == "mean" else stats_.median


def _dropped_note(stats_: SampleStats) -> str:
    return f" ({stats_.dropped} non-finite sample(s) dropped)" if stats_.dropped else ""


def _all3(flags: Any) -> bool | None:
    """Three-valued AND: False if any is False, None if none is but some are unknown."""
    seen_unknown = False
    for flag in flags:
        if flag is False:
            return False
        if flag is None:
            seen_unknown = True
    return None if seen_unknown else True


def _any3(flags: Any) -> bool | None:
    """Three-valued OR: True if any is True, None if none is but some are unknown."""
    seen_unknown = False
    for flag in flags:
        if flag is True:
            return True
        if flag is None:
            seen_unknown = True
    return None if seen_unknown else False
