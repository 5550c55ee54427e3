"""Across services: which degraded and in what order, how their series move together,
and the money they lose together (``services:`` + ``correlate:``).

The inputs are what the per-service analysis already established (each service's
analysis document, :func:`afdp.pipeline.analysis.analyze` run once per service) and the
impact window's series with their timestamps. Nothing here re-judges a service: a
service *degraded* exactly when its analysis says a metric degraded.

- :func:`cascade_failures`: for every metric the analysis found degraded, its **onset**
  is the time its series changed level: the least-squares change point of the baseline
  samples followed by the impact samples (the split in the impact window that minimizes
  the squared deviations of both segments from their own means; the later segment at
  least ``min_segment`` samples), kept when the later segment's median is beyond the
  metric's **limit** (a single sample beyond it is noise, not an onset; a regression
  present from the window's start has its onset at the first impact sample). The limit is where the analysis' watching threshold starts to be exceeded,
  from the baseline's central value: ``baseline + limit`` (absolute), ``baseline x (1 +
  limit)`` (relative), ``baseline x factor`` (factor), mirrored for ``better: higher``;
  of several, the one crossed first. A metric degraded by the test alone (no threshold
  watches it) uses the baseline's worst sample (its maximum, or minimum for ``better:
  higher``). A service's onset is its earliest metric onset; the degraded services are
  ordered by onset (a degraded service whose onset cannot be found comes last, with the
  reason). ``cascade_detected`` is true when two or more services degraded, null when
  fewer did but services that could not be judged could make it two, else false.
- :func:`performance_dependencies`: for each metric and each pair of services, Pearson's
  r of their impact-window series, samples paired by time (each sample with the other
  series' nearest one within half the sampling interval). Below ``minimum`` pairs the
  figure is ``not enough samples``; a constant series gives ``undefined``. r measures
  co-movement in this window, not cause, and consecutive samples are not independent:
  no p-value is claimed.
- :func:`business_impact_combined`: each service's money lost per hour (positive: lost)
  is its business_impact analyzer's ``loss_per_hour`` when it ran, else the
  baseline-minus-impact of its first money-per-time metric, per hour; the combined
  figure is their sum over the services where it is known, null with the reason when
  none is (or when currencies differ).
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from afdp.workflow.business import group_of
from afdp.workflow.model import Threshold

NOT_ENOUGH_SAMPLES = "not enough samples"
_SECONDS_PER_HOUR = 3600.0

#: One service's impact series of one metric: (unix seconds, value) samples.
Samples = Sequence[tuple[float, float]]


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def worse_sign(metric: Mapping[str, Any]) -> int:
    """Return +1 when a larger value is worse for ``metric`` (an analysis' metric
    document), -1 when smaller is worse; ``better: none`` takes the way it moved."""
    better = metric.get("better")
    if better == "higher":
        return -1
    if better == "lower":
        return 1
    increase = metric.get("increase")
    return -1 if isinstance(increase, (int, float)) and increase < 0 else 1


def limit_level(
    metric: Mapping[str, Any], thresholds: Sequence[Threshold], factor: float
) -> tuple[float | None, str]:
    """Return the value beyond which ``metric`` (an analysis' metric document; ``factor``
    its unit's factor to base units) counts as past its limit, and how it was found.

    Returns:
        ``(level, how)``; ``level`` is None (and ``how`` the reason) when no limit can be
        placed (no baseline).
    """
    baseline = metric.get("baseline")
    if not isinstance(baseline, (int, float)):
        return None, "no baseline value"
    sign = worse_sign(metric)
    watched = "increase" if sign > 0 else "decrease"
    levels: list[tuple[float, str]] = []
    for threshold in thresholds:
        if threshold.metric != metric.get("metric") or threshold.direction not in (watched, "change"):
            continue
        limit = threshold.limit.base
        if threshold.mode == "absolute":
            level = baseline + sign * limit / factor
        elif threshold.mode == "relative":
            level = baseline + sign * limit * abs(baseline)
        else:  # factor: impact / baseline (increase) or baseline / impact (decrease)
            if limit <= 0:
                continue
            level = baseline * limit if sign > 0 else baseline / limit
        levels.append((level, f"{threshold.key} {threshold.limit} from the baseline {baseline:.6g}"))
    if levels:
        # The limit crossed first: the one closest to the baseline on the worse side.
        level, how = min(levels, key=lambda item: sign * item[0])
        return level, how
    extreme = ((metric.get("statistics") or {}).get("baseline") or {}).get("max" if sign > 0 else "min")
    if not isinstance(extreme, (int, float)):
        return None, "no threshold watches it and the baseline has no samples"
    return float(extreme), f"the baseline's worst sample ({extreme:.6g}): no threshold watches it"


def change_point(before: Sequence[float], after: Sequence[float], min_segment: int) -> int | None:
    """Return where in ``after`` the series ``before + after`` changes level: the index
    ``k`` of ``after`` that minimizes the squared deviations of the two segments
    ``before + after[:k]`` and ``after[k:]`` from their own means (a least-squares
    single change point), the later segment holding at least ``min_segment`` samples.
    None when ``after`` is shorter than that.
    """
    values = [*before, *after]
    total = len(values)
    if len(after) < max(min_segment, 1):
        return None
    sums = [0.0]
    squares = [0.0]
    for value in values:
        sums.append(sums[-1] + value)
        squares.append(squares[-1] + value * value)

    def sse(i: int, j: int) -> float:
        if j <= i:
            return 0.0
        s = sums[j] - sums[i]
        return squares[j] - squares[i] - s * s / (j - i)

    offset = len(before)
    best = min(
        range(0, len(after) - max(min_segment, 1) + 1),
        key=lambda k: (sse(0, offset + k) + sse(offset + k, total), k),
    )
    return best


def onset(
    baseline: Sequence[float], samples: Samples, level: float, sign: int, min_segment: int
) -> float | None:
    """Return the time the impact ``samples`` shifted beyond ``level`` the worse way
    (``sign``): the :func:`change_point` after the ``baseline`` values, when the median
    of the samples from there on is beyond the level (a median: one spike does not make
    a shift); None otherwise."""
    values = [value for _, value in samples]
    k = change_point(baseline, values, min_segment)
    if k is None:
        return None
    if sign * (statistics.median(values[k:]) - level) <= 0:
        return None
    return samples[k][0]


def cascade_failures(
    services: Sequence[str],
    analyses: Mapping[str, Mapping[str, Any]],
    series: Mapping[str, Mapping[str, Samples]],
    thresholds: Sequence[Threshold],
    *,
    baselines: Mapping[str, Mapping[str, Sequence[float]]],
    min_segment: int,
) -> dict[str, Any]:
    """Return which services degraded and in what order (see the module docstring).

    ``analyses``: each service's analysis document; ``series``: each service's impact
    series per metric; ``baselines``: each service's baseline values per metric.
    """
    per_service: dict[str, Any] = {}
    for service in services:
        document = analyses.get(service) or {}
        degraded = (document.get("summary") or {}).get("any_degradation")
        metrics: dict[str, Any] = {}
        for name, metric in (document.get("metrics") or {}).items():
            if metric.get("degraded") is not True:
                continue
            factor = float((metric.get("unit") or {}).get("factor") or 1.0)
            level, how = limit_level(metric, thresholds, factor)
            samples = (series.get(service) or {}).get(name) or ()
            before = (baselines.get(service) or {}).get(name) or ()
            found = onset(before, samples, level, worse_sign(metric), min_segment) if level is not None else None
            entry: dict[str, Any] = {"limit": level, "limit_from": how, "onset": _iso(found), "onset_unix": found}
            if found is None:
                entry["reason"] = (
                    how if level is None
                    else f"no shift of the impact samples beyond the limit ({len(samples)} samples)"
                )
            metrics[name] = entry
        onsets = [(m["onset_unix"], name) for name, m in metrics.items() if m["onset_unix"] is not None]
        first = min(onsets) if onsets else None
        per_service[service] = {
            "degraded": degraded,
            "degraded_metrics": sorted(metrics),
            "onset": _iso(first[0]) if first else None,
            "onset_unix": first[0] if first else None,
            "first_metric": first[1] if first else None,
            "metrics": metrics,
        }
    known = [s for s in services if per_service[s]["degraded"] is True]
    unknown = [s for s in services if per_service[s]["degraded"] is None]
    timed = sorted((per_service[s]["onset_unix"], s) for s in known if per_service[s]["onset_unix"] is not None)
    untimed = [s for s in known if per_service[s]["onset_unix"] is None]
    start = timed[0][0] if timed else None
    order = [
        {
            "service": s,
            "onset": per_service[s]["onset"],
            "metric": per_service[s]["first_metric"],
            "lag_seconds": round(t - start, 3) if start is not None else None,
        }
        for t, s in timed
    ] + [{"service": s, "onset": None, "metric": None, "lag_seconds": None} for s in untimed]
    detected: bool | None
    if len(known) >= 2:
        detected = True
    elif len(known) + len(unknown) >= 2 and unknown:
        detected = None
    else:
        detected = False
    reasons = []
    if untimed:
        reasons.append(f"degraded with no onset found (listed last): {', '.join(untimed)}")
    if unknown:
        reasons.append(f"could not be judged: {', '.join(unknown)}")
    return {
        "status": "ok",
        "method": "least-squares change point of the baseline then impact samples; onset when "
        "the later segment's median is beyond the metric's limit",
        "min_segment": min_segment,
        "cascade_detected": detected,
        "degraded_in_order": [item["service"] for item in order],
        "first_degraded": order[0]["service"] if order else None,
        "order": order,
        "not_judged": unknown,
        "services": per_service,
        "reasons": reasons,
    }


def _pairs(a: Samples, b: Samples) -> list[tuple[float, float]]:
    """Pair each sample of ``a`` with the nearest sample of ``b`` within half the
    median sampling interval of ``a`` (each ``b`` sample used once)."""
    if len(a) < 2 or not b:
        return []
    gaps = [t2 - t1 for (t1, _), (t2, _) in zip(a, a[1:], strict=False)]
    tolerance = statistics.median(gaps) / 2
    times = [t for t, _ in b]
    used: set[int] = set()
    out = []
    for t, value in a:
        index = bisect.bisect_left(times, t)
        candidates = [i for i in (index - 1, index) if 0 <= i < len(times) and i not in used]
        if not candidates:
            continue
        best = min(candidates, key=lambda i: abs(times[i] - t))
        if abs(times[best] - t) <= tolerance:
            used.add(best)
            out.append((value, b[best][1]))
    return out


def performance_dependencies(
    services: Sequence[str],
    metrics: Sequence[str],
    series: Mapping[str, Mapping[str, Samples]],
    *,
    minimum: int,
) -> dict[str, Any]:
    """Return Pearson's r for each metric and each pair of services (``a~b``)."""
    figures: dict[str, dict[str, Any]] = {}
    for metric in metrics:
        pairs: dict[str, Any] = {}
        for i, first in enumerate(services):
            for second in services[i + 1 :]:
                paired = _pairs(
                    (series.get(first) or {}).get(metric) or (), (series.get(second) or {}).get(metric) or ()
                )
                entry: dict[str, Any] = {"n": len(paired), "r": None}
                if len(paired) < minimum:
                    entry["status"] = NOT_ENOUGH_SAMPLES
                    entry["reason"] = f"{len(paired)} paired samples; at least {minimum} are needed"
                else:
                    xs, ys = zip(*paired, strict=True)
                    try:
                        r = statistics.correlation(xs, ys)
                    except statistics.StatisticsError:
                        entry["status"] = "undefined"
                        entry["reason"] = "a series is constant in the window: no correlation"
                    else:
                        entry["status"] = "ok"
                        entry["r"] = r if math.isfinite(r) else None
                pairs[f"{first}~{second}"] = entry
        figures[metric] = pairs
    return {
        "method": "pearson",
        "pairing": "each sample with the other service's nearest sample within half the sampling interval",
        "minimum": minimum,
        "metrics": figures,
    }


def service_money(document: Mapping[str, Any]) -> dict[str, Any]:
    """Return one service's money lost per hour from its analysis document:
    ``{status, loss_per_hour, currency, currency_dimension, source | reason}``."""
    for item in document.get("analyzers") or ():
        if item.get("type") == "business_impact" and item.get("status") == "ok":
            return {
                "status": "ok",
                "loss_per_hour": item.get("loss_per_hour"),
                "currency": item.get("currency"),
                "currency_dimension": item.get("currency_dimension"),
                "source": f"analyzer {item.get('name')} (business_impact)",
            }
    for name, metric in (document.get("metrics") or {}).items():
        unit = metric.get("unit") or {}
        dimension = str(unit.get("dimension") or "")
        if group_of(name, dimension) != "revenue_data":
            continue
        baseline, impact = metric.get("baseline"), metric.get("impact")
        if not isinstance(baseline, (int, float)) or not isinstance(impact, (int, float)):
            return {"status": "not_enough_data", "loss_per_hour": None, "reason": f"{name}: no data on one side"}
        factor = float(unit.get("factor") or 1.0)
        return {
            "status": "ok",
            "loss_per_hour": (baseline - impact) * factor * _SECONDS_PER_HOUR,
            "currency": str(unit.get("symbol") or "").partition("/")[0],
            "currency_dimension": dimension.partition("/")[0],
            "source": f"metric {name} (baseline - impact, per hour)",
        }
    return {
        "status": "not_enough_data",
        "loss_per_hour": None,
        "reason": "no business_impact analyzer result and no money-per-time metric in its analysis",
    }


def business_impact_combined(
    services: Sequence[str], analyses: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """Return the services' money lost per hour, summed where known (see the module
    docstring): ``{status, loss_per_hour, currency, currency_dimension, included,
    missing, complete, services, reason}``."""
    per = {s: service_money(analyses.get(s) or {}) for s in services}
    known = [s for s in services if per[s]["status"] == "ok" and per[s]["loss_per_hour"] is not None]
    missing = [s for s in services if s not in known]
    out: dict[str, Any] = {"services": per, "included": known, "missing": missing, "complete": not missing}
    currencies = {(per[s]["currency"], per[s]["currency_dimension"]) for s in known}
    if not known:
        unknown = "no service's money impact is known: " + "; ".join(
            f"{s}: {per[s].get('reason')}" for s in services
        )
        return {**out, "status": "not_enough_data", "loss_per_hour": None, "currency": None,
                "currency_dimension": None, "reason": unknown}  # fmt: skip
    if len(currencies) > 1:
        return {**out, "status": "not_comparable", "loss_per_hour": None, "currency": None,
                "currency_dimension": None, "reason": "the services' money is in different currencies: "
                + ", ".join(sorted(str(c) for c, _ in currencies))}  # fmt: skip
    currency, dimension = next(iter(currencies))
    total = sum(float(per[s]["loss_per_hour"]) for s in known)
    reason = None if not missing else f"sum over {', '.join(known)}; not known for {', '.join(missing)}"
    return {**out, "status": "ok", "loss_per_hour": total, "currency": currency,
            "currency_dimension": dimension, "unit": f"{currency}/hour", "reason": reason}  # fmt: skip


__all__ = [
    "NOT_ENOUGH_SAMPLES",
    "business_impact_combined",
    "cascade_failures",
    "limit_level",
    "change_point",
    "onset",
    "performance_dependencies",
    "service_money",
]
