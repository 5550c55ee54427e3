"""Named quantities in decisions: ``latency_increase``, ``error_rate_increase``, ``revenue_drop``...

The guide writes decisions over names no metric has (``revenue_drop > $1000_per_hour``,
``latency_increase > 20ms``). Each such name reads one analysed metric, found by
:func:`source_metric` from the analysis's metrics (the same function at validation and at
run time, so the plan and the run read the same metric), and is the change of that
metric between the baseline and the impact in the metric's own unit:

- the Hodges-Lehmann shift (the median of every impact-minus-baseline difference) when
  the analysis ran Mann-Whitney, the mean difference when it ran Welch's t-test: robust
  to a few outliers, and the same estimate the test judged;
- otherwise the difference of the central values (``impact - baseline``).

``*_increase`` is that change, ``*_drop`` its negative (baseline minus impact); both may
be negative (an improvement). Missing data gives null, and a condition over null is not
met (fail closed). ``all_metrics_within_normal`` is the analysis summary's own (every
analysed metric known not degraded and no threshold exceeded).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from afdp.workflow.units import Quantity, Unit


@dataclass(frozen=True)
class NamedQuantity:
    """A name usable in a decision's condition and the metric it reads.

    ``names`` are the preferred metric names in order; otherwise the first analysed metric
    whose name contains one of ``contains`` and whose dimension is one of ``dimensions``
    (a dimension ending in ``/time`` matches ``*/time``). ``sign`` +1 for impact minus
    baseline (an increase), -1 for baseline minus impact (a drop). ``declare`` says what
    to declare when no analysed metric fits.
    """

    name: str
    names: tuple[str, ...]
    contains: tuple[str, ...]
    dimensions: tuple[str, ...]
    sign: Literal[1, -1]
    meaning: str
    declare: str


NAMED_QUANTITIES: tuple[NamedQuantity, ...] = (
    NamedQuantity(
        "latency_increase",
        ("response_time", "response_time_p50", "response_time_p95", "response_time_p99"),
        ("latency", "response_time", "duration"),
        ("time",),
        1,
        "how much the latency grew (impact minus baseline), in the metric's time unit",
        "capture and analyse response_time (built in) or a time metric named *latency*",
    ),
    NamedQuantity(
        "error_rate_increase",
        ("error_rate",),
        ("error",),
        ("ratio",),
        1,
        "how much the error rate grew, in percentage points",
        "capture and analyse error_rate (built in) or a ratio metric named *error*",
    ),
    NamedQuantity(
        "revenue_drop",
        (),
        ("revenue",),
        ("*/time",),
        -1,
        "how much revenue per unit of time fell (baseline minus impact), e.g. $/hour",
        "declare a metric whose name contains 'revenue' with a currency per time unit "
        "(e.g. revenue_per_hour, unit: $/hour) and capture and analyse it",
    ),
    NamedQuantity(
        "throughput_drop",
        ("request_rate",),
        ("request", "throughput"),
        ("number/time",),
        -1,
        "how much the request rate fell (baseline minus impact), per second",
        "capture and analyse request_rate (built in) or a rate metric named *request*",
    ),
    NamedQuantity(
        "active_users_drop",
        ("active_users",),
        ("users",),
        ("number",),
        -1,
        "how much the number of active users fell (baseline minus impact)",
        "capture and analyse active_users (built in) or a count metric named *users*",
    ),
)
BY_NAME: Mapping[str, NamedQuantity] = {q.name: q for q in NAMED_QUANTITIES}


def _fits(dimension: str, dimensions: Sequence[str]) -> bool:
    return any(
        dimension == d or (d == "*/time" and dimension.endswith("/time") and dimension != "number/time")
        for d in dimensions
    )


def source_metric(quantity: NamedQuantity, metrics: Sequence[tuple[str, str]]) -> str | None:
    """Return the metric ``quantity`` reads among ``metrics`` ((name, dimension) in the
    analysis's order), or None when none fits."""
    for preferred in quantity.names:
        for name, dimension in metrics:
            if name == preferred and _fits(dimension, quantity.dimensions):
                return name
    for name, dimension in metrics:
        if any(word in name.lower() for word in quantity.contains) and _fits(
            dimension, quantity.dimensions
        ):
            return name
    return None


def quantity_values(document: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return ``(values, evidence)`` of every named quantity for an analysis document.

    ``values`` maps each name whose metric was analysed to a :class:`Quantity` in the
    metric's unit (None when the change is unknown); ``evidence`` maps the same names to
    ``{metric, value, unit, method, baseline, impact, meaning}`` for the record.
    """
    metrics = document.get("metrics") or {}
    listed = [(name, (item.get("unit") or {}).get("dimension", "")) for name, item in metrics.items()]
    values: dict[str, Any] = {}
    evidence: dict[str, Any] = {}
    for quantity in NAMED_QUANTITIES:
        metric = source_metric(quantity, listed)
        if metric is None:
            continue
        item = metrics[metric]
        spec = item["unit"]
        unit = Unit(spec["symbol"], spec["dimension"], spec["factor"])
        change, method = _change(item)
        value = None if change is None else quantity.sign * change
        values[quantity.name] = None if value is None else Quantity(float(value), unit)
        evidence[quantity.name] = {
            "metric": metric,
            "value": value,
            "unit": unit.symbol,
            "method": method,
            "baseline": item.get("baseline"),
            "impact": item.get("impact"),
            "meaning": quantity.meaning,
        }
    return values, evidence


def _change(item: Mapping[str, Any]) -> tuple[float | None, str | None]:
    """Return impact minus baseline (the test's shift when it ran) and how it was found."""
    shift = ((item.get("test") or {}).get("shift")) or {}
    if isinstance(shift.get("value"), (int, float)):
        return float(shift["value"]), str(shift.get("name") or "shift")
    increase = item.get("increase")
    if isinstance(increase, (int, float)):
        return float(increase), f"difference of the {item.get('central') or 'central'} values"
    return None, None


__all__ = ["BY_NAME", "NAMED_QUANTITIES", "NamedQuantity", "quantity_values", "source_metric"]
