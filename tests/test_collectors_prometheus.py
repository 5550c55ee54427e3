"""Prometheus collector against Debian's real prometheus scraping a real DemoService.

Fault cases use what a real Prometheus cannot be made to do on demand: a closed port
(down), and a loopback HTTP server that answers too late or answers HTML (slow, wrong).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from collectors.helpers import VALUES, Answer, make_workflow, now, serve
from infra import free_port, wait_for_series

from afdp.demo.service import DemoService
from afdp.errors import UsageError
from afdp.pipeline.collectors import CollectorFailed, capture_metric
from afdp.pipeline.collectors.base import SystemClock

LATENCY = (
    'sum(rate(http_request_duration_seconds_sum{{service="{s}"}}[3s])) / '
    'sum(rate(http_request_duration_seconds_count{{service="{s}"}}[3s]))'
)


def prometheus_workflow(url: str, **extra_collector: object):
    return make_workflow(
        {"prom": {"type": "prometheus", "url": url, "step": "1s", **extra_collector}},
        {
            "users": {
                "collector": "prom",
                "query": 'sum(active_users{service="${deployment.service}"})',
                "unit": "count",
            },
            "latency": {
                "collector": "prom",
                "query": LATENCY.format(s="${deployment.service}"),
                "unit": "s",
            },
            "error_rate": {
                "collector": "prom",
                "query": (
                    'sum(rate(http_requests_total{service="${deployment.service}",code=~"5.."}[3s]))'
                    ' / sum(rate(http_requests_total{service="${deployment.service}"}[3s]))'
                ),
                "unit": "ratio",
            },
            "missing": {"collector": "prom", "query": "sum(afdp_no_such_metric)", "unit": "count"},
            "by_code": {
                "collector": "prom",
                "query": 'http_requests_total{service="${deployment.service}"}',
                "unit": "count",
            },
            "broken": {"collector": "prom", "query": "sum(rate(", "unit": "count"},
        },
    )


class WatchedClock(SystemClock):
    """The wall clock, noting every wait a collector asks of it.

    "Answered from history, no waiting" is then checked on what the collector did, not on
    wall time, which a loaded CI machine stretches (a query to Prometheus there can take
    longer than a bound that a real wait would exceed).
    """

    def __init__(self) -> None:
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        super().sleep(seconds)


@dataclass(frozen=True)
class Setup:
    url: str
    regress: DemoService  # a second service, only for the deploy test


@pytest.fixture(scope="module")
def setup(prometheus_server) -> Iterator[Setup]:
    with DemoService("demo-api") as service, DemoService("regress", seed=7) as regress:
        url = prometheus_server([service.metrics_url, regress.metrics_url])
        wait_for_series(url, 'sum(active_users{service="demo-api"})')
        wait_for_series(url, 'sum(active_users{service="regress"})')
        time.sleep(4.5)  # rates over [3s] and a few seconds of v1 history
        yield Setup(url, regress)


@pytest.fixture()
def demo_prometheus(setup: Setup) -> str:
    return setup.url


def test_instant_query(demo_prometheus: str) -> None:
    workflow = prometheus_workflow(demo_prometheus)
    at = now()
    data = capture_metric(workflow, "users", values=VALUES, env={}, start=at, end=at)
    assert len(data.samples) == 1
    assert 50 <= data.values()[0] <= 150
    p = data.provenance
    assert (p["type"], p["api"], p["sample_count"], p["dropped"]) == ("prometheus", "query", 1, 0)
    assert p["source"] == demo_prometheus
    assert p["query"] == 'sum(active_users{service="demo-api"})'  # rendered
    assert p["window"]["start"] == p["window"]["end"]


def test_range_query_over_the_recent_past(demo_prometheus: str) -> None:
    workflow = prometheus_workflow(demo_prometheus)
    end = now()
    clock = WatchedClock()
    data = capture_metric(
        workflow, "latency", values=VALUES, env={}, start=end - timedelta(seconds=3), end=end, clock=clock
    )
    assert clock.waits == []  # history: no waiting
    assert 3 <= len(data.samples) <= 4
    times = [t for t, _ in data.samples]
    assert times == sorted(times)
    assert all(0.03 < v < 0.08 for v in data.values())  # v1's ~47 ms mean
    assert data.provenance["api"] == "query_range" and data.provenance["step"] == 1.0
    assert data.to_json()["samples"][0] == list(data.samples[0])


def test_future_window_waits_until_its_end(demo_prometheus: str) -> None:
    workflow = prometheus_workflow(demo_prometheus)
    start = now()
    began = time.monotonic()
    data = capture_metric(
        workflow, "users", values=VALUES, env={}, start=start, end=start + timedelta(seconds=2)
    )
    assert time.monotonic() - began >= 2
    assert len(data.samples) == 3  # t, t+1s, t+2s


def test_no_data_fails(demo_prometheus: str) -> None:
    workflow = prometheus_workflow(demo_prometheus)
    at = now()
    with pytest.raises(CollectorFailed, match="no data") as failure:
        capture_metric(workflow, "missing", values=VALUES, env={}, start=at, end=at)
    assert failure.value.metric == "missing" and failure.value.collector == "prom"
    with pytest.raises(CollectorFailed, match="no data"):
        capture_metric(
            workflow, "missing", values=VALUES, env={}, start=at - timedelta(seconds=5), end=at
        )


def test_several_series_fail_with_advice(demo_prometheus: str) -> None:
    workflow = prometheus_workflow(demo_prometheus)
    at = now()
    with pytest.raises(CollectorFailed, match=r"returned 2 series.*sum\(") as failure:
        capture_metric(workflow, "by_code", values=VALUES, env={}, start=at, end=at)
    assert failure.value.exit_code == 3


def test_bad_query_is_reported(demo_prometheus: str) -> None:
    workflow = prometheus_workflow(demo_prometheus)
    at = now()
    with pytest.raises(CollectorFailed, match=r"refused the query \(bad_data\)"):
        capture_metric(workflow, "broken", values=VALUES, env={}, start=at, end=at)


def test_prometheus_down_fails_quickly() -> None:
    workflow = prometheus_workflow(f"http://127.0.0.1:{free_port()}")
    at = now()
    began = time.monotonic()
    with pytest.raises(CollectorFailed, match="unreachable") as failure:
        capture_metric(workflow, "users", values=VALUES, env={}, start=at, end=at)
    assert time.monotonic() - began < 2
    assert "\n" not in str(failure.value)


def test_slow_prometheus_times_out() -> None:
    # The server answers after 60 s; giving up at the 500 ms timeout takes well under the
    # 10 s bound even on a loaded machine, and waiting for the answer could not pass it.
    slow = Answer(body=b'{"status":"success","data":{"resultType":"vector","result":[]}}', delay=60)
    with serve(slow) as server:
        workflow = prometheus_workflow(server.url, timeout="500ms")
        at = now()
        began = time.monotonic()
        with pytest.raises(CollectorFailed, match=r"did not answer in full within 0\.5s"):
            capture_metric(workflow, "users", values=VALUES, env={}, start=at, end=at)
        assert time.monotonic() - began < 10


def test_html_instead_of_the_api_fails() -> None:
    page = Answer(content_type="text/html", body=b"<!doctype html><html><title>login</title></html>")
    with serve(page) as server:
        workflow = prometheus_workflow(server.url)
        at = now()
        with pytest.raises(CollectorFailed, match="HTML page"):
            capture_metric(workflow, "users", values=VALUES, env={}, start=at, end=at)


def test_window_must_be_ordered_and_aware(demo_prometheus: str) -> None:
    workflow = prometheus_workflow(demo_prometheus)
    at = now()
    with pytest.raises(UsageError, match="before it starts"):
        capture_metric(workflow, "users", values=VALUES, env={}, start=at, end=at - timedelta(seconds=1))
    with pytest.raises(UsageError, match="timezone"):
        capture_metric(workflow, "users", values=VALUES, env={}, start=at.replace(tzinfo=None), end=at)
    with pytest.raises(UsageError, match="no metric"):
        capture_metric(workflow, "nope", values=VALUES, env={}, start=at, end=at)


def test_baseline_from_history_before_the_deploy_shows_the_regression(setup: Setup) -> None:
    """The post-deploy run's situation: the baseline window is in the past, before the deploy."""
    deployed = setup.regress.deploy("v2")
    time.sleep(6.2)
    values = {**VALUES, "deployment": {"service": "regress"}}
    workflow = prometheus_workflow(setup.url)
    clock = WatchedClock()
    baseline = {
        name: capture_metric(
            workflow, name, values=values, env={},
            start=deployed - timedelta(seconds=4), end=deployed - timedelta(milliseconds=500), clock=clock,
        )
        for name in ("latency", "error_rate")
    }  # fmt: skip
    assert clock.waits == []  # answered from history, no waiting
    impact = {
        name: capture_metric(
            workflow, name, values=values, env={},
            start=deployed + timedelta(seconds=3.5), end=deployed + timedelta(seconds=6),
        )
        for name in ("latency", "error_rate")
    }  # fmt: skip
    assert len(baseline["latency"].samples) >= 3 and len(impact["latency"].samples) >= 2
    # v2 adds 40 ms to every request: every impact sample is above every baseline one.
    assert min(impact["latency"].values()) > max(baseline["latency"].values()) + 0.02
    mean = sum(impact["error_rate"].values()) / len(impact["error_rate"].samples)
    assert mean > sum(baseline["error_rate"].values()) / len(baseline["error_rate"].samples)
    window = baseline["latency"].provenance["window"]
    assert window["end"] < impact["latency"].provenance["window"]["start"]


def test_secret_echoed_by_a_broken_server_is_scrubbed() -> None:
    token = "prom-token-123"

    def echo(request: dict) -> Answer:
        return Answer(content_type="text/plain", body=f"denied: {request['headers']['Authorization']}".encode())

    with serve(echo) as server:
        workflow = prometheus_workflow(server.url, headers={"Authorization": "Bearer ${env.PROM_TOKEN}"})
        at = now()
        with pytest.raises(CollectorFailed, match="not the Prometheus API") as failure:
            capture_metric(workflow, "users", values=VALUES, env={"PROM_TOKEN": token}, start=at, end=at)
    assert server.requests[0]["headers"]["Authorization"] == f"Bearer {token}"
    assert token not in str(failure.value) and "[redacted env.PROM_TOKEN]" in str(failure.value)
