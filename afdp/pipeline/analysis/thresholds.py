"""Thresholds checked against the observed movement of a metric, with units.

``absolute``, ``relative`` and ``factor`` limits are compared in base units; the observed
value is reported in the limit's unit (:class:`ThresholdResult`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from afdp.workflow.units import Quantity

if TYPE_CHECKING:
    from afdp.workflow.model import Metric, Threshold


@dataclass(frozen=True)
class ThresholdResult:
    """One threshold checked against the observed movement.

    ``observed`` is the movement in the limit's unit (``12.5`` for 12.5ms against
    ``10ms``; a fraction-based ratio in ``%`` for relative limits; ``x`` for factors),
    None when it cannot be computed (``reason``). ``exceeded`` is ``observed > limit``
    in base units, None when unknown. ``watches_worse`` is True when the threshold
    looks at the metric's worse direction (so exceeding it is a degradation).
    """

    key: str
    direction: str
    mode: str
    limit: Quantity
    observed: float | None
    exceeded: bool | None
    watches_worse: bool
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the threshold, its limit and what was observed."""
        return {
            "key": self.key,
            "direction": self.direction,
            "mode": self.mode,
            "limit": self.limit.to_json(),
            "observed": self.observed,
            "unit": self.limit.unit.symbol,
            "exceeded": self.exceeded,
            "watches_worse": self.watches_worse,
            "reason": self.reason,
        }


def _check_threshold(
    threshold: Threshold, metric: Metric, baseline: float | None, impact: float | None
) -> ThresholdResult:
    worse_dir = {"lower": "increase", "higher": "decrease"}.get(metric.better)
    watches = metric.better == "none" or threshold.direction in ("change", worse_dir)

    def result(observed_base: float | None, reason: str | None = None) -> ThresholdResult:
        if observed_base is None:
            return ThresholdResult(
                threshold.key,
                threshold.direction,
                threshold.mode,
                threshold.limit,
                None,
                None,
                watches,
                reason,
            )
        return ThresholdResult(
            threshold.key,
            threshold.direction,
            threshold.mode,
            threshold.limit,
            observed_base / threshold.limit.unit.factor,
            observed_base > threshold.limit.base,
            watches,
            reason,
        )

    if baseline is None or impact is None:
        return result(None, "no data to compare")
    direction = threshold.direction
    if threshold.mode == "absolute":
        moved = (impact - baseline) * metric.unit.factor
        return result({"increase": moved, "decrease": -moved, "change": abs(moved)}[direction])
    if threshold.mode == "relative":
        change = _relative(baseline, impact)
        if change is None:
            return result(None, "the baseline is 0: a relative change is undefined")
        return result({"increase": change, "decrease": -change, "change": abs(change)}[direction])
    up = _ratio(impact, baseline)
    down = _ratio(baseline, impact)
    if direction == "increase":
        if up is None:
            return result(None, "the baseline is 0: a factor is undefined")
        return result(up)
    if direction == "decrease":
        if down is None:
            return result(None, "the impact is 0: a decrease factor is undefined")
        return result(down)
    if up is None or down is None or up <= 0:
        return result(None, "a value is 0 or the sign changed: a factor is undefined")
    return result(max(up, down))


def _relative(baseline: float, impact: float) -> float | None:
    if baseline == 0:
        return 0.0 if impact == 0 else None
    return (impact - baseline) / abs(baseline)


def _ratio(numerator: float, denominator: float) -> float | None:
    if denominator == 0:
        return 1.0 if numerator == 0 else None
    return numerator / denominator
