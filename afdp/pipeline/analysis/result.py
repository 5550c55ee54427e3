"""The whole analysis of a step: every metric, the summary, and what conditions read.

:func:`analyze` runs :func:`analyze_metric` for each metric of an analysis step and returns
an :class:`AnalysisResult` (its evidence document and summary); :func:`analysis_values`
turns such a document into the namespace workflow conditions evaluate over.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from afdp.evidence.canonical import json_safe
from afdp.pipeline.analysis.analyzers import analyzer_values, run_analyzers
from afdp.pipeline.analysis.verdicts import MetricAnalysis, _any3, analyze_metric
from afdp.workflow.units import Quantity, Unit

if TYPE_CHECKING:
    from afdp.workflow.model import Analyze, Workflow


SCHEMA = "analysis.v1"


_CHANGE_UNIT = Unit("%", "ratio", 0.01)
_FACTOR_UNIT = Unit("x", "ratio", 1.0)


@dataclass(frozen=True)
class AnalysisResult:
    """An analysis step's result: every metric and the summary conditions read."""

    baseline_step: str
    impact_step: str
    method: str | None
    confidence: float
    min_samples: int
    metrics: tuple[MetricAnalysis, ...]
    #: The outcomes of the guide's analyzers (logic, business_impact, ml_predictor):
    #: :mod:`afdp.pipeline.analysis.analyzers`. Empty for an analysis with none.
    analyzers: tuple[dict[str, Any], ...] = ()

    def metric(self, name: str) -> MetricAnalysis:
        """Return the analysis of metric ``name``.

        Raises:
            KeyError: the metric was not analyzed.
        """
        for item in self.metrics:
            if item.metric == name:
                return item
        raise KeyError(name)

    @property
    def any_degradation(self) -> bool | None:
        """Return True if a metric degraded (or a logic analyzer's verdict is a
        degradation), None if none did but some are unknown. Unjudged business context
        never counts."""
        flags = [m.degraded for m in self.judged]
        flags += [a.get("degraded") for a in self.analyzers if a.get("type") == "logic"]
        return _any3(flags)

    @property
    def significant_degradation(self) -> bool | None:
        """Return the same as :attr:`any_degradation`, for degradations the test found."""
        if self.method is None:
            return None
        return _any3(m.significant_degradation for m in self.judged)

    @property
    def all_metrics_within_normal(self) -> bool:
        """Return True when every judged metric is known not degraded and nothing is
        exceeded (and no logic analyzer's verdict is, or may be, a degradation)."""
        return all(m.degraded is False and m.exceeded is False for m in self.judged) and all(
            a.get("degraded") is False for a in self.analyzers if a.get("type") == "logic"
        )

    @property
    def exceeded(self) -> list[str]:
        """Return the metrics with an exceeded threshold."""
        return [m.metric for m in self.judged if m.exceeded]

    @property
    def inconclusive(self) -> list[str]:
        """Return the judged metrics (and ``analyzers.<name>`` logic analyzers) whose
        degradation is unknown."""
        return [m.metric for m in self.judged if m.degraded is None] + [
            f"analyzers.{a['name']}"
            for a in self.analyzers
            if a.get("type") == "logic" and a.get("degraded") is None
        ]

    @property
    def judged(self) -> tuple[MetricAnalysis, ...]:
        """Return the metrics that are judged (all but unjudged business context)."""
        return tuple(m for m in self.metrics if not m.context)

    def summary(self) -> dict[str, Any]:
        """Return the summary fields (``any_degradation`` ... ``inconclusive``), and
        ``context``: the metrics shown as business context, not judged (when any)."""
        context = [m.metric for m in self.metrics if m.context]
        return {
            "any_degradation": self.any_degradation,
            "significant_degradation": self.significant_degradation,
            "all_metrics_within_normal": self.all_metrics_within_normal,
            "exceeded": self.exceeded,
            "inconclusive": self.inconclusive,
            **({"context": context} if context else {}),
        }

    def to_json(self) -> dict[str, Any]:
        """Return the analysis as evidence (schema ``evidence-schema/analysis.v1``)."""
        extra = {"analyzers": list(self.analyzers)} if self.analyzers else {}
        return json_safe(
            {
                **extra,
                "schema": SCHEMA,
                "baseline_step": self.baseline_step,
                "impact_step": self.impact_step,
                "method": self.method,
                "confidence": self.confidence,
                "alpha": 1.0 - self.confidence,
                "min_samples": self.min_samples,
                "metrics": {m.metric: m.to_json() for m in self.metrics},
                "summary": self.summary(),
            }
        )

    def values(self) -> dict[str, Any]:
        """Return the namespace conditions evaluate over (see :func:`analysis_values`)."""
        return analysis_values(self.to_json())


def analysis_values(document: Mapping[str, Any]) -> dict[str, Any]:
    """Return the expression namespace for an analysis document (``to_json()`` output).

    ``{metric: {baseline, impact, increase, decrease: Quantity in the metric's unit;
    change: Quantity in %; factor: Quantity in x; p_value: float; significant, exceeded,
    degraded: bool}}`` (None where unknown), plus the summary names at the top level.
    Works on a document read back from evidence, so a resumed run decides exactly as
    the original would have.
    """
    out: dict[str, Any] = {}
    for name, item in document.get("metrics", {}).items():
        spec = item["unit"]
        unit = Unit(spec["symbol"], spec["dimension"], spec["factor"])
        fields: dict[str, Any] = {}
        for key in ("baseline", "impact", "increase", "decrease"):
            fields[key] = _quantity(item.get(key), unit)
        change = item.get("change")
        fields["change"] = None if change is None else Quantity(change * 100.0, _CHANGE_UNIT)
        fields["factor"] = _quantity(item.get("factor"), _FACTOR_UNIT)
        fields["p_value"] = item.get("p_value")
        # The test's location shift (Hodges-Lehmann for Mann-Whitney, the mean difference
        # for Welch); without a test, the difference of the central values.
        shift = ((item.get("test") or {}).get("shift") or {}).get("value")
        fields["shift"] = _quantity(item.get("increase") if shift is None else shift, unit)
        for key in ("significant", "exceeded", "degraded"):
            fields[key] = item.get(key)
        out[name] = fields
    out.update(document.get("summary", {}))
    out.update(analyzer_values(document.get("analyzers") or ()))
    return out


def _quantity(value: float | None, unit: Unit) -> Quantity | None:
    return None if value is None else Quantity(float(value), unit)


def analyze(
    params: Analyze,
    workflow: Workflow,
    baseline: Mapping[str, Sequence[float] | None],
    impact: Mapping[str, Sequence[float] | None],
    *,
    context: frozenset[str] | set[str] = frozenset(),
) -> AnalysisResult:
    """Analyze every metric of an analysis step, baseline samples against impact samples.

    ``baseline`` and ``impact`` map metric names to samples in the metric's unit (a
    sequence of numbers, or a collector's ``MetricData``); a metric missing from either
    (its collection failed) is analyzed as ``no_data``.

    Returns:
        The :class:`AnalysisResult`.

    ``context`` names business context metrics that are measured and shown but not
    judged: ``degraded`` null (``decided_by: context``), left out of the summary.

    Raises:
        KeyError: ``params`` names a metric the workflow does not define.
        ValueError: an unknown method or a confidence outside (0, 1).
    """
    results = tuple(
        analyze_metric(
            workflow.metric(name),
            baseline.get(name),
            impact.get(name),
            thresholds=params.thresholds,
            method=params.method,
            confidence=params.confidence,
            min_samples=params.min_samples,
            tolerance_decides=params.tolerance_decides,
        )
        for name in params.metrics
    )
    results = tuple(
        replace(
            r,
            degraded=None,
            significant_degradation=None,
            exceeded=None,
            decided_by="context",
            context=True,
        )
        if r.metric in context
        else r
        for r in results
    )
    chosen = [a for a in workflow.analyzers if a.name in params.analyzers]
    return AnalysisResult(
        params.baseline,
        params.impact,
        params.method,
        params.confidence,
        params.min_samples,
        results,
        tuple(run_analyzers(chosen, results)),
    )
