"""The guide's Getting Started runs as written, against real sources, in both directions.

Real parts: the project's demo service (latency histogram, requests by code), a small
business exporter (order revenue, sessions, orders per minute, support tickets) made
with prometheus_client on a loopback port, Debian's Prometheus scraping both every
second, the embedded TSA, a real evidence repository and ``afdp run`` through the CLI.

- Step 1 verbatim (``- store: results``): a +40 ms regression is degraded and decided
  alert; no change is a success; the store step records that the results are on the
  evidence branch.
- Steps 1-3 together (the guide builds them up): ``context:`` metrics are captured and
  shown but not judged (one of them is not exported at all), the four success criteria
  read as documented, and ``store: {results: results.json}`` writes the results file.
"""

from __future__ import annotations

import json
import random
import shutil
import threading
import time
from datetime import UTC
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from infra import wait_for_series
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import MetricsHandler

from afdp.demo.service import DemoService

SEEDS = Path(__file__).parent / "seeds"
STEP1 = SEEDS / "getting_started_step1.yaml"
STEP2 = SEEDS / "getting_started_step2_context.yaml"
STEP3 = SEEDS / "getting_started_step3_success_criteria.yaml"

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus is not installed")


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):  # a scraper that gave up
            super().handle_error(request, client_address)


class BusinessExporter:
    """Order revenue (a counter) and three business gauges for service ``api``, on a
    loopback port; values wander a little around fixed levels (nothing changes)."""

    def __init__(self, service: str = "api") -> None:
        self.registry = CollectorRegistry()
        self._revenue = Counter("order_revenue_dollars_total", "Revenue.", ["service"], registry=self.registry)
        self._gauges = {
            name: Gauge(name, name, ["service"], registry=self.registry)
            for name in ("user_sessions_active", "orders_per_minute", "support_tickets_rate")
        }
        self._levels = {"user_sessions_active": 500.0, "orders_per_minute": 120.0, "support_tickets_rate": 0.5}
        self._service = service
        self._random = random.Random(3)
        self._stop = threading.Event()
        handler = MetricsHandler.factory(self.registry)
        self._server = _QuietServer(("127.0.0.1", 0), handler)
        self._threads = [
            threading.Thread(target=self._server.serve_forever, daemon=True),
            threading.Thread(target=self._tick, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/metrics"

    def _tick(self) -> None:
        while not self._stop.wait(0.05):
            self._revenue.labels(service=self._service).inc(2.5 * (1 + self._random.uniform(-0.05, 0.05)))
            for name, gauge in self._gauges.items():
                gauge.labels(service=self._service).set(self._levels[name] * (1 + self._random.uniform(-0.02, 0.02)))

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()


def _run(tmp_path, cli, prometheus_server, keys, tsa, workflow: Path, *, to: str, deployment: str, business: bool = False):
    repo = tmp_path / "evidence"
    assert cli("init", str(repo)).code == 0
    exporter = BusinessExporter() if business else None
    try:
        # 2,000 requests a second, not the default 200: the guide's error_rate (1% of them,
        # over Prometheus' 1-minute rate of a few seconds' history) is judged by the 10%
        # default alone (its series are too dependent for the test to run), and at 200/s
        # its no-change value moved by -16% to +6% between runs here: one run in several
        # would have called it degraded. Ten times the requests cut that noise ~3x; the
        # regression (1% -> 5% errors, +40 ms) is as plain as before.
        with DemoService(name="api", version="v1", requests_per_second=2000) as service:
            targets = [service.metrics_url] + ([exporter.metrics_url] if exporter else [])
            prometheus = prometheus_server(targets)
            wait_for_series(prometheus, 'http_requests_total{service="api"}')
            if exporter:
                wait_for_series(prometheus, 'order_revenue_dollars_total{service="api"}')
            time.sleep(15)  # v1 history: the baseline is read back, ending at the deployment
            deployed_at = service.deploy(to)
            result = cli(
                "run", str(workflow), "--service", "api", "--deployment", deployment, "--repo", str(repo),
                "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--set", f"PROMETHEUS_URL={prometheus}",
                "--signal", "deployment", "--deployed-at", deployed_at.astimezone(UTC).isoformat(),
                "--results-dir", str(tmp_path / "results"), "--time-scale", "30", "--no-prefect", "--json",
            )
    finally:
        if exporter:
            exporter.close()
    assert result.code == 0, result.err
    return repo, json.loads(result.out)


@pytest.mark.slow
def test_step1_verbatim_catches_a_latency_regression(tmp_path, cli, prometheus_server, keys, tsa, trust_file):
    repo, outcome = _run(tmp_path, cli, prometheus_server, keys, tsa, STEP1, to="v2", deployment="gs1-reg")
    names = [s["name"] for s in outcome["steps"]]
    assert names[-3:] == ["compare", "decisions", "store"], names
    metric = outcome["analysis"]["metrics"]["response_time"]
    assert metric["degraded"] is True, metric["reasons"]
    assert outcome["decision"]["action"] == "alert" and outcome["decision"]["label"] == "degraded"
    store = outcome["steps"][-1]
    assert store["status"] == "ok" and "evidence refs/heads/afdp/api/gs1-reg" in store["summary"], store
    verified = cli("verify", "--repo", str(repo), "--service", "api", "--deployment", "gs1-reg", "--trust", str(trust_file))
    assert verified.code == 0, verified.out


@pytest.mark.slow
def test_step1_verbatim_no_change_is_a_success(tmp_path, cli, prometheus_server, keys, tsa):
    _, outcome = _run(tmp_path, cli, prometheus_server, keys, tsa, STEP1, to="v1", deployment="gs1-same")
    metric = outcome["analysis"]["metrics"]["response_time"]
    assert metric["degraded"] is False, metric
    assert outcome["decision"]["action"] == "mark_successful", outcome["decision"]
    assert outcome["steps"][-1]["status"] == "ok"


def _guide_workflow(tmp_path: Path) -> Path:
    """Steps 1, 2 and 3 as the guide builds them up: its context and criteria sections
    verbatim; the captures list what the criteria judge; the results also go to a file."""
    steps = STEP1.read_text("utf-8").replace(
        "capture: response_time", "capture: [response_time, error_rate, revenue_per_hour, user_satisfaction]"
    ).replace("- store: results", "- store: {results: results.json}")
    path = tmp_path / "guide.yaml"
    path.write_text(STEP2.read_text("utf-8") + STEP3.read_text("utf-8") + steps, "utf-8")
    return path


def _criteria(outcome: dict) -> list[bool | None]:
    return [c["result"] for c in outcome["decision"]["criteria"]]


@pytest.mark.slow
def test_guide_criteria_and_context_on_a_regression(tmp_path, cli, prometheus_server, keys, tsa):
    _, outcome = _run(
        tmp_path, cli, prometheus_server, keys, tsa, _guide_workflow(tmp_path), to="v2", deployment="gs3-reg", business=True
    )
    # +40 ms and 1% -> 5% errors: the first two criteria fail, revenue and Apdex hold.
    assert _criteria(outcome) == [False, False, True, True], outcome["decision"]
    assert outcome["decision"]["action"] == "alert" and outcome["decision"]["label"] == "degraded"
    metrics = outcome["analysis"]["metrics"]
    assert metrics["response_time"]["increase"] > 0.010
    assert metrics["orders_per_minute"]["context"] is True and metrics["orders_per_minute"]["degraded"] is None


@pytest.mark.slow
def test_guide_criteria_and_context_no_change_is_a_success(tmp_path, cli, prometheus_server, keys, tsa, trust_file):
    repo, outcome = _run(
        tmp_path, cli, prometheus_server, keys, tsa, _guide_workflow(tmp_path), to="v1", deployment="gs3-same", business=True
    )
    assert _criteria(outcome) == [True, True, True, True], outcome["decision"]
    assert outcome["decision"]["action"] == "mark_successful", outcome["decision"]
    analysis = outcome["analysis"]
    # Context: captured and shown (with numbers), marked, not judged; custom_kpi_metric is
    # exported by nobody: shown as missing, and still no failure and no false alarm.
    assert analysis["summary"]["context"] == [
        "user_sessions_active", "orders_per_minute", "support_tickets_rate", "custom_kpi_metric"
    ]  # fmt: skip
    sessions = analysis["metrics"]["user_sessions_active"]
    assert sessions["context"] is True and 450 < sessions["baseline"] < 550
    assert analysis["metrics"]["custom_kpi_metric"]["status"] != "ok"
    capture = next(s for s in outcome["steps"] if s["name"] == "capture")
    assert capture["status"] == "ok" and "context not captured: custom_kpi_metric" in capture["summary"]
    # The results file holds the same decision.
    document = json.loads((tmp_path / "results" / "results.json").read_text("utf-8"))
    assert document["decision"]["action"] == "mark_successful"
    assert document["analysis"]["metrics"]["orders_per_minute"]["context"] is True
    # The report shows the context metrics, marked as not judged.
    out = tmp_path / "report.html"
    report = cli("report", "--repo", str(repo), "--service", "api", "--deployment", "gs3-same", "--trust", str(trust_file), "--out", str(out))
    assert report.code == 0, report.out
    html = out.read_text("utf-8")
    assert "orders_per_minute" in html and "context (not judged)" in html
