"""The built-in collector, variables and metric catalog: what ``metrics: [error_rate]``
and the guide's examples use without declaring anything.

Queries follow common Prometheus naming (http_request_duration_seconds histogram,
http_requests_total with a ``code`` label, series labelled ``service``); a workflow
overrides any of them by declaring a metric or a collector with the same name. Read
through :mod:`afdp.workflow.catalog`, which re-exports every name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "AB_METRICS",
    "DEFAULT_COLLECTORS",
    "DEFAULT_METRICS",
    "DEFAULT_VARIABLES",
    "FLAG_FILE_USER",
    "REVENUE_METRIC",
    "SATISFACTION_METRICS",
]

#: The pseudo-collector name under which ``DEFAULT_VARIABLES`` lists ``FLAG_FILE``: the
#: flagd file an ``enable_feature`` step writes when it names no provider.
FLAG_FILE_USER = "@enable_feature"
DEFAULT_COLLECTORS: Mapping[str, Mapping[str, Any]] = {
    "prometheus": {"type": "prometheus", "url": "${workflow.PROMETHEUS_URL}"},
}
#: Variables a workflow has without declaring them, each only while the workflow does not
#: declare the collector that reads it: ``--set PROMETHEUS_URL=...`` points the built-in
#: collector at a Prometheus, so a workflow written with the catalog's metrics alone (the
#: guide's Example 1) runs as written.
DEFAULT_VARIABLES: Mapping[str, tuple[str, str]] = {
    "PROMETHEUS_URL": ("prometheus", "http://localhost:9090"),
    # Not a collector: kept while an enable_feature step writes the default flag file.
    "FLAG_FILE": (FLAG_FILE_USER, "flags.flagd.json"),
}


def _latency(quantile: str) -> dict[str, Any]:
    return {
        "collector": "prometheus",
        "query": (
            f"histogram_quantile({quantile}, sum by (le) "
            '(rate(http_request_duration_seconds_bucket{service="${deployment.service}"}[1m])))'
        ),
        "unit": "s",
        "better": "lower",
    }


DEFAULT_METRICS: Mapping[str, Mapping[str, Any]] = {
    "response_time": {
        "collector": "prometheus",
        "query": (
            'sum(rate(http_request_duration_seconds_sum{service="${deployment.service}"}[1m])) / '
            'sum(rate(http_request_duration_seconds_count{service="${deployment.service}"}[1m]))'
        ),
        "unit": "s",
        "better": "lower",
    },
    "response_time_p50": _latency("0.5"),
    "response_time_p95": _latency("0.95"),
    "response_time_p99": _latency("0.99"),
    "error_rate": {
        "collector": "prometheus",
        "query": (
            'sum(rate(http_requests_total{service="${deployment.service}",code=~"5.."}[1m])) / '
            'sum(rate(http_requests_total{service="${deployment.service}"}[1m]))'
        ),
        "unit": "ratio",
        "better": "lower",
    },
    "request_rate": {
        "collector": "prometheus",
        "query": 'sum(rate(http_requests_total{service="${deployment.service}"}[1m]))',
        "unit": "1/s",
        "better": "none",
    },
    "active_users": {
        "collector": "prometheus",
        "query": 'sum(active_users{service="${deployment.service}"})',
        "unit": "count",
        "better": "higher",
    },
    # Revenue from a counter of order revenue (the name the docs' examples use).
    "revenue_per_hour": {
        "collector": "prometheus",
        "query": 'sum(rate(order_revenue_dollars_total{service="${deployment.service}"}[1m])) * 3600',
        "unit": "$/hour",
        "better": "higher",
    },
    # Apdex with T = 250 ms from the latency histogram: (satisfied + tolerating / 2) / all,
    # satisfied answering within T, tolerating within 4T (le "1" or "1.0", by exporter).
    "user_satisfaction": {
        "collector": "prometheus",
        "query": (
            '(sum(rate(http_request_duration_seconds_bucket{service="${deployment.service}",le="0.25"}[1m])) + '
            'sum(rate(http_request_duration_seconds_bucket{service="${deployment.service}",le=~"1|1\\\\.0"}[1m]))) / 2 / '
            'sum(rate(http_request_duration_seconds_count{service="${deployment.service}"}[1m]))'
        ),
        "unit": "ratio",
        "better": "higher",
    },
    "cpu_usage": {
        "collector": "prometheus",
        "query": 'sum(rate(process_cpu_seconds_total{service="${deployment.service}"}[1m]))',
        "unit": "count",
        "better": "lower",
    },
    "memory_usage": {
        "collector": "prometheus",
        "query": 'sum(process_resident_memory_bytes{service="${deployment.service}"})',
        "unit": "B",
        "better": "lower",
    },
}


def _per_group(numerator: str, denominator: str) -> str:
    labels = '{service="${deployment.service}",group="${segment.group}"}'
    window = "[${segment.window}]"
    return f"sum(rate({numerator}{labels}{window})) / sum(rate({denominator}{labels}{window}))"


#: A/B metrics (the guide's Example 3), per group: each series carries a ``group`` label
#: whose values are the groups of ``segment_users`` (what the OpenFeature evaluation's
#: variant is). ``${segment.group}`` makes a capture after ``segment_users`` capture the
#: metric once per group. A session is one user visit.
AB_METRICS: Mapping[str, Mapping[str, Any]] = {
    "conversion_rate": {
        "collector": "prometheus",
        "query": _per_group("ab_conversions_total", "ab_sessions_total"),
        "unit": "ratio",
        "better": "higher",
    },
    "session_duration": {
        "collector": "prometheus",
        "query": _per_group("ab_session_duration_seconds_sum", "ab_session_duration_seconds_count"),
        "unit": "s",
        "better": "higher",
    },
    "feature_adoption": {
        "collector": "prometheus",
        "query": _per_group("ab_feature_used_total", "ab_sessions_total"),
        "unit": "ratio",
        "better": "higher",
    },
    "revenue_per_user": {
        "collector": "prometheus",
        "query": _per_group("ab_revenue_dollars_total", "ab_sessions_total"),
        "unit": "$",
        "better": "higher",
    },
}
DEFAULT_METRICS = {**DEFAULT_METRICS, **AB_METRICS}
#: The metric business_impact reads revenue from, and those it judges satisfaction by.
REVENUE_METRIC = "revenue_per_user"
SATISFACTION_METRICS = ("conversion_rate", "session_duration")
