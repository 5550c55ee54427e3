"""Which metrics a ``business_impact`` analyzer's ``correlate:`` groups mean.

The guide writes ``correlate: [technical_metrics, revenue_data, user_behavior]``. Each
group is the set of metrics the analysis compares whose unit says what they are:

- ``revenue_data``: money per time (``unit: $/hour``, ``€/min``): the revenue rate;
- ``user_behavior``: a count per time that users make happen (``unit: 1/hour``, ``/min``)
  other than the catalog's ``request_rate``: orders, checkouts, sign-ups;
- ``technical_metrics``: everything else the analysis compares in time, a ratio or a
  plain count/byte (latencies, error rates, request rate, CPU, memory).

:func:`resolve_groups` gives the metrics of each group; the compiler reports a listed group
with no metric as an error (located at the analysis), so a run never lacks its inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

GROUPS = ("technical_metrics", "revenue_data", "user_behavior")

#: Counts per time that measure the service, not its users.
TECHNICAL_RATES = frozenset({"request_rate"})


def group_of(name: str, dimension: str) -> str | None:
    """Return the group of a metric called ``name`` with unit dimension ``dimension``."""
    base, _, per = dimension.partition("/")
    if per == "time" and base not in ("number", "time", "ratio", "bytes") and base:
        return "revenue_data"
    if per == "time" and base == "number" and name not in TECHNICAL_RATES:
        return "user_behavior"
    return "technical_metrics"


def resolve_groups(metrics: Iterable[str], units: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Return ``{group: metrics}`` for the compared ``metrics`` (``units``: name -> Unit)."""
    out: dict[str, list[str]] = {group: [] for group in GROUPS}
    for name in metrics:
        out[group_of(name, units[name].dimension)].append(name)  # type: ignore[index]
    return {group: tuple(names) for group, names in out.items()}


GROUP_NEEDS = {
    "revenue_data": "a metric in money per time (unit: $/hour), e.g. revenue_per_hour",
    "user_behavior": "a count per time made by users (unit: 1/hour), e.g. orders_per_hour",
    "technical_metrics": "a technical metric (response_time, error_rate, ...)",
}
