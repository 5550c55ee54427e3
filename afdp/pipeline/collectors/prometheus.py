"""Prometheus HTTP API collector: instant and range queries, history for past windows.

- ``start == end``: one instant query (``/api/v1/query``) at that time.
- otherwise: a range query (``/api/v1/query_range``) over ``[start, end]`` every ``step``
  seconds (the capture's ``interval`` when given, else the collector's ``step``). If
  ``end`` is in the future the collector first waits until then. A window in the past
  is answered from Prometheus' own history: that is how a ``--phase post`` run gets its
  baseline from the window before the deployment time.

The query must give exactly one series (aggregate with ``sum(...)`` / ``avg(...)``);
an empty answer, several series, only NaN values, an error answer or anything that is
not Prometheus' JSON is a :class:`CollectorFailed`. One sample is the query's value at a
step's time, as Prometheus evaluates it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx

from afdp.pipeline.collectors.base import (
    Clock,
    CollectorFailed,
    MetricData,
    finite_samples,
    render,
    rfc3339,
    seconds_of,
    shown,
)
from afdp.pipeline.collectors.transport import Endpoint, client, describe_body, endpoint, send
from afdp.workflow.catalog import DEFAULT_PROMETHEUS_STEP
from afdp.workflow.model import Collector, Metric
from afdp.workflow.units import parse_duration

DEFAULT_STEP_SECONDS = parse_duration(DEFAULT_PROMETHEUS_STEP).seconds
MAX_POINTS = 10_000  # Prometheus refuses more than 11,000 points per series
# Prometheus stores a scrape a moment after its timestamp; wait this long past the window.
SETTLE_SECONDS = 1.0


def capture(
    collector: Collector,
    metric: Metric,
    *,
    values: Mapping[str, Any],
    env: Mapping[str, str] | None,
    start: datetime,
    end: datetime,
    interval: float | None,
    clock: Clock,
) -> MetricData:
    """Collect ``metric`` over ``[start, end]`` from the Prometheus at ``collector.url``.

    Returns:
        The samples and their provenance.

    Raises:
        CollectorFailed: see the module docstring.
    """
    target = endpoint(collector, values, env)
    rendered = render(metric.query, values, env)
    query = target.redactor.reveal(rendered)
    if not query.strip():
        raise CollectorFailed("the metric has no query", collector=collector.name, metric=metric.name)
    step = float(interval) if interval else seconds_of(collector.step, DEFAULT_STEP_SECONDS)
    span = (end - start).total_seconds()
    if span > 0 and span / step > MAX_POINTS:
        step = math.ceil(span / MAX_POINTS)
    wait = (end - clock.now()).total_seconds()
    if wait > 0:
        clock.sleep(wait + SETTLE_SECONDS)
    provenance: dict[str, Any] = {
        "collector": collector.name,
        "type": "prometheus",
        **target.provenance(),
        "query": shown(rendered),
        "window": {"start": rfc3339(start), "end": rfc3339(end)},
    }
    try:
        with client(target) as http:
            if span == 0:
                provenance["meaning"] = "the query's value at the instant"
                provenance["api"] = "query"
                raw = _instant(http, target, query, end)
            else:
                provenance["meaning"] = f"the query's value every {step:g}s"
                provenance["api"] = "query_range"
                provenance["step"] = step
                raw = _range(http, target, query, start, end, step)
    except CollectorFailed as exc:
        raise CollectorFailed(
            target.redactor.scrub(exc.reason), collector=collector.name, metric=metric.name
        ) from None
    samples, dropped = finite_samples(raw)
    if not samples:
        reason = (
            f"the query returned only NaN/Inf values ({dropped})"
            if dropped
            else "the query returned no data"
        )
        raise CollectorFailed(
            f"{reason} for {rfc3339(start)}..{rfc3339(end)}: {shown(rendered)[:120]}",
            collector=collector.name,
            metric=metric.name,
        )
    provenance["sample_count"] = len(samples)
    provenance["dropped"] = dropped
    return MetricData(metric.name, metric.unit.symbol, samples, provenance)


def _instant(
    http: httpx.Client, target: Endpoint, query: str, at: datetime
) -> list[tuple[float, float]]:
    data = _call(
        http,
        target,
        "/api/v1/query",
        {"query": query, "time": f"{at.timestamp():.3f}", "timeout": f"{target.timeout:g}"},
    )
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        return [(float(result[0]), _number(result[1]))]
    if kind != "vector" or not isinstance(result, list):
        raise CollectorFailed(f"expected a vector or scalar answer, got {kind!r}")
    _one_series(result)
    value = result[0].get("value") if result else None
    if not result or not isinstance(value, list) or len(value) != 2:
        return []
    return [(float(value[0]), _number(value[1]))]


def _range(
    http: httpx.Client, target: Endpoint, query: str, start: datetime, end: datetime, step: float
) -> list[tuple[float, float]]:
    data = _call(
        http,
        target,
        "/api/v1/query_range",
        {
            "query": query,
            "start": f"{start.timestamp():.3f}",
            "end": f"{end.timestamp():.3f}",
            "step": f"{step:g}",
            "timeout": f"{target.timeout:g}",
        },
    )
    if data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
        raise CollectorFailed(f"expected a matrix answer, got {data.get('resultType')!r}")
    result = data["result"]
    _one_series(result)
    if not result:
        return []
    points = result[0].get("values")
    if not isinstance(points, list):
        raise CollectorFailed("malformed matrix answer (no values)")
    return [(float(t), _number(v)) for t, v in points]


def _call(
    http: httpx.Client, target: Endpoint, path: str, params: Mapping[str, str]
) -> dict[str, Any]:
    response = send(http, target, "GET", target.url + path, what="prometheus", params=params)
    try:
        answer = response.json()
    except ValueError:
        raise CollectorFailed(
            f"prometheus at {target.public} answered HTTP {response.status_code} with "
            f"{describe_body(response, target.redactor.scrub)}, not the Prometheus API's JSON"
        ) from None
    if not isinstance(answer, dict):
        raise CollectorFailed(f"prometheus at {target.public} answered JSON that is not an object")
    if answer.get("status") != "success":
        error = target.redactor.scrub(str(answer.get("error", "no error message")))
        kind = answer.get("errorType", f"HTTP {response.status_code}")
        raise CollectorFailed(f"prometheus refused the query ({kind}): {error}")
    data = answer.get("data")
    if not isinstance(data, dict):
        raise CollectorFailed("prometheus answered without data")
    return data


def _one_series(result: list[Any]) -> None:
    if len(result) > 1:
        first = result[0].get("metric", {}) if isinstance(result[0], dict) else {}
        shown_labels = ",".join(f'{k}="{v}"' for k, v in sorted(first.items()))[:100]
        raise CollectorFailed(
            f"the query returned {len(result)} series; aggregate it to one with sum(...), "
            f"avg(...) or max(...), or aggregate: sum on the metric (first: {{{shown_labels}}})"
        )


def _number(text: Any) -> float:
    try:
        return float(text)  # Prometheus sends "NaN", "+Inf": float() reads them
    except (TypeError, ValueError):
        raise CollectorFailed(f"prometheus sent a value that is not a number: {str(text)[:40]!r}") from None
