"""Scrape collector against a real DemoService, and against malformed pages on loopback."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from collectors.helpers import VALUES, Answer, make_workflow, now, serve
from infra import free_port

from afdp.demo.service import DemoService
from afdp.pipeline.collectors import CollectorFailed, capture_metric
from afdp.pipeline.collectors.scrape import bucket_quantile

METRICS = {
    "users": {"collector": "app", "metric": "active_users", "unit": "count"},
    "rps": {"collector": "app", "metric": "http_requests_total", "unit": "1/s"},
    "errors_per_s": {
        "collector": "app",
        "metric": "http_requests_total",
        "labels": {"code": "500", "service": "${deployment.service}"},
        "unit": "1/s",
    },
    "latency": {"collector": "app", "metric": "http_request_duration_seconds", "unit": "s"},
    "p99": {
        "collector": "app",
        "metric": "http_request_duration_seconds",
        "labels": {"quantile": "0.99"},
        "unit": "s",
    },
    "count_rate": {"collector": "app", "metric": "http_request_duration_seconds_count", "unit": "1/s"},
    "other_service": {
        "collector": "app",
        "metric": "active_users",
        "labels": {"service": "nobody"},
        "unit": "count",
    },
    "absent": {"collector": "app", "metric": "http_requests_totl", "unit": "count"},
}


def scrape_workflow(url: str, **extra: object):
    return make_workflow({"app": {"type": "scrape", "url": url, "interval": "1s", **extra}}, METRICS)


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoService]:
    with DemoService("demo-api") as service:
        time.sleep(0.3)
        yield service


def snap(workflow, name: str, **kwargs):
    at = now()
    return capture_metric(workflow, name, values=VALUES, env={}, start=at, end=at, **kwargs)


def test_gauge_snapshot_is_one_read(demo: DemoService) -> None:
    data = snap(scrape_workflow(demo.metrics_url), "users")
    assert len(data.samples) == 1 and 50 <= data.values()[0] <= 150
    p = data.provenance
    assert (p["metric_type"], p["reads"], p["source"]) == ("gauge", 1, demo.metrics_url)
    assert p["query"] == "sum(active_users)"


def test_counter_is_a_rate_between_reads(demo: DemoService) -> None:
    workflow = scrape_workflow(demo.metrics_url)
    data = snap(workflow, "rps", interval=0.5)  # a snapshot of a counter reads twice
    assert data.provenance["reads"] == 2 and len(data.samples) == 1
    assert 120 < data.values()[0] < 300  # ~200 requests per second
    errors = snap(workflow, "errors_per_s", interval=0.5).values()[0]
    assert 0 <= errors < 20
    assert data.provenance["query"] == "sum(http_requests_total)"
    assert snap(workflow, "count_rate", interval=0.3).provenance["metric_type"] == "counter"


def test_histogram_mean_and_quantile(demo: DemoService) -> None:
    workflow = scrape_workflow(demo.metrics_url)
    mean = snap(workflow, "latency", interval=0.5).values()[0]
    quantile = snap(workflow, "p99", interval=0.5)
    p99 = quantile.values()[0]
    assert 0.035 < mean < 0.065
    assert 0.07 < p99 < 0.2 and p99 > mean
    assert "0.99 quantile" in quantile.provenance["meaning"]


def test_window_samples_every_interval(demo: DemoService) -> None:
    start = now()
    data = capture_metric(
        scrape_workflow(demo.metrics_url), "latency", values=VALUES, env={},
        start=start, end=start + timedelta(seconds=1.5), interval=0.5,
    )  # fmt: skip
    assert data.provenance["reads"] == 4 and len(data.samples) == 3  # n reads, n-1 intervals
    assert data.provenance["interval"] == 0.5


def test_v2_regression_is_visible() -> None:
    with DemoService("demo-api", seed=3) as service:
        workflow = scrape_workflow(service.metrics_url)
        start = now()
        before = capture_metric(
            workflow, "latency", values=VALUES, env={}, start=start,
            end=start + timedelta(seconds=1.2), interval=0.4,
        )  # fmt: skip
        service.deploy("v2")
        start = now()
        after = capture_metric(
            workflow, "latency", values=VALUES, env={}, start=start,
            end=start + timedelta(seconds=1.2), interval=0.4,
        )  # fmt: skip
    assert min(after.values()) > max(before.values()) + 0.025


def test_labels_that_match_nothing_fail(demo: DemoService) -> None:
    with pytest.raises(CollectorFailed, match="no series of 'active_users'.*nobody"):
        snap(scrape_workflow(demo.metrics_url), "other_service")


def test_unknown_metric_names_similar_ones(demo: DemoService) -> None:
    with pytest.raises(CollectorFailed, match="no metric named 'http_requests_totl'.*similar: http_"):
        snap(scrape_workflow(demo.metrics_url), "absent")


def test_past_window_fails_no_history(demo: DemoService) -> None:
    end = now() - timedelta(minutes=5)
    with pytest.raises(CollectorFailed, match="keeps no history"):
        capture_metric(
            scrape_workflow(demo.metrics_url), "users", values=VALUES, env={},
            start=end - timedelta(minutes=1), end=end,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (Answer(content_type="text/plain", body=b'active_users{service="x" 3\n'), "malformed exposition page"),
        (Answer(content_type="text/plain", body=b"active_users 1\nactive_users 2\n"), "appears twice"),
        (Answer(content_type="text/html", body=b"<html><body>Sign in</body></html>"), "HTML page"),
        (Answer(content_type="text/plain", body=b"<!DOCTYPE html><p>x</p>"), "HTML page"),
        (Answer(status=503, content_type="text/plain", body=b"down"), "HTTP 503"),
        (Answer(content_type="text/plain", body=b""), "no metric named 'active_users'"),
        (Answer(content_type="text/plain", body=b"# TYPE active_users gauge\nactive_users NaN\n"), "no value"),
    ],
)
def test_bad_pages_fail_with_a_clear_reason(answer: Answer, reason: str) -> None:
    with serve(answer) as server, pytest.raises(CollectorFailed, match=reason) as failure:
        snap(scrape_workflow(server.url + "/metrics"), "users")
    assert "\n" not in str(failure.value) and failure.value.metric == "users"


def test_down_and_slow_endpoints_fail_quickly() -> None:
    # The slow page comes after 60 s: giving up at the 500 ms timeout stays far under the
    # 10 s bound on a loaded machine, while waiting for the page could not pass it.
    began = time.monotonic()
    with pytest.raises(CollectorFailed, match="unreachable"):
        snap(scrape_workflow(f"http://127.0.0.1:{free_port()}/metrics"), "users")
    slow = Answer(content_type="text/plain", body=b"active_users 1\n", delay=60)
    with serve(slow) as server, pytest.raises(CollectorFailed, match=r"within 0\.5s"):
        snap(scrape_workflow(server.url + "/metrics", timeout="500ms"), "users")
    assert time.monotonic() - began < 10


def test_counter_reset_counts_from_zero() -> None:
    pages = iter([b"# TYPE jobs counter\njobs_total 100\n", b"# TYPE jobs counter\njobs_total 5\n"])
    with serve(lambda request: Answer(content_type="text/plain", body=next(pages))) as server:
        workflow = make_workflow(
            {"app": {"type": "scrape", "url": server.url, "interval": "1s"}},
            {"jobs": {"collector": "app", "metric": "jobs_total", "unit": "1/s"}},
        )
        data = snap(workflow, "jobs")
    # 5 new jobs after the reset, over ~1 s (the snapshot's second read).
    assert 3 < data.values()[0] <= 5.5


def test_bucket_quantile_interpolates_like_prometheus() -> None:
    buckets = {0.1: 50.0, 0.2: 90.0, 0.5: 100.0, math.inf: 100.0}
    assert bucket_quantile(0.5, buckets) == pytest.approx(0.1)
    assert bucket_quantile(0.7, buckets) == pytest.approx(0.15)
    assert bucket_quantile(0.25, buckets) == pytest.approx(0.05)  # first bucket starts at 0
    assert bucket_quantile(0.99, {0.1: 1.0, math.inf: 10.0}) == 0.1  # +Inf: largest finite bound
    assert math.isnan(bucket_quantile(0.5, {0.1: 0.0, math.inf: 0.0}))
    assert math.isnan(bucket_quantile(0.5, {0.1: 1.0}))  # no +Inf bucket


def test_a_series_that_appears_between_reads_has_no_rate_yet() -> None:
    pages = iter(
        [
            b'# TYPE req counter\nreq_total{code="200"} 10\n',
            b'# TYPE req counter\nreq_total{code="200"} 12\nreq_total{code="500"} 1000\n',
        ]
    )
    with serve(lambda request: Answer(content_type="text/plain", body=next(pages))) as server:
        workflow = make_workflow(
            {"app": {"type": "scrape", "url": server.url, "interval": "1s"}},
            {"req": {"collector": "app", "metric": "req_total", "unit": "1/s"}},
        )
        data = snap(workflow, "req", interval=0.5)
    assert 2 < data.values()[0] < 5  # 2 requests in ~0.5 s; the new 500 series is not a spike
