"""Collectors: where a workflow's metric samples and SQL rows come from.

One module per source -- :mod:`~afdp.pipeline.collectors.prometheus` (HTTP API, with history),
:mod:`~afdp.pipeline.collectors.scrape` (a ``/metrics`` page), :mod:`~afdp.pipeline.collectors.sql`
(read-only SQL through SQLAlchemy) and :mod:`~afdp.pipeline.collectors.rest` (a JSON API) --
behind two functions the flows call:

- :func:`capture_metric`: samples of one workflow metric over a time window;
- :func:`run_query`: the rows of one read-only SQL query (``Query``/``Check`` steps).

Every failure of a source is a :class:`CollectorFailed` (exit code 3) with a one-line
reason; every result carries its provenance, with secrets redacted.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from afdp.errors import UsageError
from afdp.pipeline.collectors.base import (
    SYSTEM_CLOCK,
    Clock,
    CollectorFailed,
    MetricData,
    QueryResult,
    ScaledClock,
    SystemClock,
    check_window,
)
from afdp.pipeline.collectors.sql import QueryRefused, check_read_only
from afdp.workflow.interpolation import Template
from afdp.workflow.model import Workflow


def capture_metric(
    workflow: Workflow,
    metric: str,
    *,
    values: Mapping[str, Any],
    env: Mapping[str, str] | None,
    start: datetime,
    end: datetime,
    interval: float | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> MetricData:
    """Collect ``metric`` (a name in ``workflow``) over ``[start, end]``.

    ``values`` are :meth:`Workflow.values` namespaces for ``${...}``; ``env`` the
    environment for ``${env.*}`` (never written anywhere). ``start == end`` takes one
    snapshot; a window reaching into the future is sampled until ``end`` (Prometheus:
    waits, then one range query); a past window is answered from history by Prometheus
    and refused by the live sources. ``interval`` (seconds) overrides the collector's
    ``step``/``interval``.

    Returns:
        The :class:`MetricData`.

    Raises:
        UsageError: no such metric or collector in the workflow, naive or inverted window.
        CollectorFailed: the source failed (its ``reason`` says how).
    """
    check_window(start, end)
    if interval is not None and not interval > 0:
        raise UsageError(f"sampling interval must be positive, not {interval}")
    try:
        spec = workflow.metric(metric)
        collector = workflow.collector(spec.collector)
    except KeyError as exc:
        raise UsageError(f"workflow {workflow.name!r} has no metric or collector {exc}") from None
    if collector.type == "prometheus":
        from afdp.pipeline.collectors import prometheus as source
    elif collector.type == "scrape":
        from afdp.pipeline.collectors import scrape as source  # type: ignore[no-redef]
    elif collector.type == "sql":
        from afdp.pipeline.collectors import sql as source  # type: ignore[no-redef]
    else:
        from afdp.pipeline.collectors import rest as source  # type: ignore[no-redef]
    return source.capture(
        collector,
        spec,
        values=values,
        env=env,
        start=start,
        end=end,
        interval=interval,
        clock=clock,
    )


def run_query(
    workflow: Workflow,
    collector_name: str,
    query: Template,
    *,
    values: Mapping[str, Any],
    env: Mapping[str, str] | None,
    limit: int | None = None,
) -> QueryResult:
    """Run one read-only SQL ``query`` on the sql collector ``collector_name``.

    Returns:
        The :class:`QueryResult`: at most ``limit`` rows (default 10,000) as JSON-safe
        dicts, and provenance (``truncated`` says if rows were left out).

    Raises:
        UsageError: no such collector, or it is not a sql collector.
        QueryRefused: the text is not one read-only statement (nothing was sent).
        CollectorFailed: the database failed or refused the query.
    """
    from afdp.pipeline.collectors.sql import query_rows

    try:
        collector = workflow.collector(collector_name)
    except KeyError:
        raise UsageError(f"workflow {workflow.name!r} has no collector {collector_name!r}") from None
    if collector.type != "sql":
        raise UsageError(f"collector {collector_name!r} is a {collector.type} collector, not sql")
    rows, provenance = query_rows(collector, query, values=values, env=env, limit=limit)
    return QueryResult(rows, provenance)


__all__ = [
    "SYSTEM_CLOCK",
    "Clock",
    "CollectorFailed",
    "MetricData",
    "QueryRefused",
    "QueryResult",
    "ScaledClock",
    "SystemClock",
    "capture_metric",
    "check_read_only",
    "run_query",
]
