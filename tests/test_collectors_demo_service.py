"""The demo service: its metrics page, versions, and the command-line entry point."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from afdp.demo.service import DemoService
from afdp.errors import UsageError


def families(url: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(httpx.get(url).text)}


def test_exports_the_catalog_metrics_with_the_service_label() -> None:
    with DemoService("checkout") as service:
        time.sleep(0.2)
        found = families(service.metrics_url)
        assert found["http_request_duration_seconds"].type == "histogram"
        assert found["http_requests"].type == "counter"
        assert found["active_users"].type == "gauge"
        codes = {s.labels["code"] for s in found["http_requests"].samples if s.name.endswith("_total")}
        assert codes == {"200", "500"}
        assert all(s.labels["service"] == "checkout" for f in found.values() for s in f.samples)
        info = [s.labels["version"] for s in found["demo_service_version_info"].samples]
        assert info == ["v1"]
        assert httpx.get(service.url + "/").json() == {"service": "checkout", "version": "v1"}
        assert httpx.get(service.url + "/healthz").text == "ok\n"
        assert httpx.get(service.url + "/nope").status_code == 404
        deployed = service.deploy("v2")
        assert service.version == "v2" and service.deployed_at == deployed
        info = [s.labels["version"] for s in families(service.metrics_url)["demo_service_version_info"].samples]
        assert info == ["v2"]


def test_own_registry_not_the_global_one() -> None:
    from prometheus_client import REGISTRY

    with DemoService("a") as first, DemoService("b") as second:  # two at once: no clash
        assert first.registry is not REGISTRY and first.port != second.port
    assert "http_requests" not in {m.name for m in REGISTRY.collect()}


def test_unknown_versions_are_refused() -> None:
    with pytest.raises(UsageError, match="unknown demo version"):
        DemoService(version="v9")
    with DemoService() as service, pytest.raises(UsageError, match="unknown demo version"):
        service.deploy("v3")


def test_close_stops_serving() -> None:
    service = DemoService()
    url = service.metrics_url
    service.close()
    service.close()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=1)


def test_runs_from_the_command_line() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "afdp.demo.service", "--port", "0", "--version", "v2"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()  # "demo-api v2 serving http://127.0.0.1:PORT/metrics ..."
        assert " v2 serving http://127.0.0.1:" in line
        url = line.split()[3]
        assert "demo_service_version_info" in httpx.get(url, timeout=5).text
    finally:
        process.terminate()
        process.wait(timeout=10)
