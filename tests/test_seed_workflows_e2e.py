"""The guide's workflows, pasted as written, judge a real deployment in both directions.

Real parts: the project's demo service exporting Prometheus metrics, Debian's Prometheus
scraping it every second (tests/infra.py), the embedded TSA over loopback HTTP, a real
evidence repository, ``afdp run`` through the CLI entry point (``--no-prefect``: the
Prefect path is covered by tests/test_flows.py).

Example 1 declares no ``decisions``: before, a real regression found three degraded
metrics and yet no decision was made, the training label was empty and the exit code 0.
Now AFDP adds a decisions step after the analysis: degradation decides ``alert``
(label ``degraded``), no change decides ``mark_successful``.

``--time-scale 30`` shrinks the guide's 5/2/10 minutes to 10/4/20 seconds; ``--phase
post --deployed-at`` takes the baseline from Prometheus' history before the deploy.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC
from pathlib import Path

import pytest
from infra import wait_for_series

from afdp.demo.service import DemoService

SEED = Path(__file__).parent / "workflow" / "seed_api_deployment_impact.yaml"
FIRST = Path(__file__).parent / "workflow" / "seed_my_first_workflow.yaml"

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus is not installed")


def _deploy_and_run(tmp_path, cli, prometheus_server, keys, tsa, *, to: str, deployment: str):
    repo = tmp_path / "evidence"
    assert cli("init", str(repo)).code == 0
    with DemoService(name="api", version="v1") as service:
        prometheus = prometheus_server([service.metrics_url])
        wait_for_series(prometheus, 'http_requests_total{service="api"}')
        time.sleep(12)  # v1 history for the baseline window (10 s scaled)
        deployed_at = service.deploy(to)
        result = cli(
            "run", str(SEED), "--service", "api", "--deployment", deployment, "--commit", "4f2a9c1",
            "--deployer", "alice", "--repo", str(repo), "--key", str(keys / "dev.key"),
            "--tsa", tsa.url, "--set", f"PROMETHEUS_URL={prometheus}", "--phase", "post",
            "--deployed-at", deployed_at.astimezone(UTC).isoformat(), "--time-scale", "30",
            "--no-prefect", "--json",
        )
    return repo, result


@pytest.mark.slow
def test_seed_example1_regression_is_decided_alert_with_a_label(tmp_path, cli, prometheus_server, keys, tsa, trust_file):
    repo, result = _deploy_and_run(tmp_path, cli, prometheus_server, keys, tsa, to="v2", deployment="reg-1")
    assert result.code == 0, result.err  # alert: the run completed; only rollback exits 1
    outcome = json.loads(result.out)
    names = [s["name"] for s in outcome["steps"]]
    assert names.index("decisions") == names.index("analyze_differences") + 1
    assert names[-1] == "generate_training_record"
    degraded = [m for m, v in outcome["analysis"]["metrics"].items() if v["degraded"]]
    assert degraded, outcome["analysis"]["metrics"]
    assert outcome["decision"]["action"] == "alert"
    assert outcome["decision"]["label"] == "degraded"
    assert "degradation" in outcome["decision"]["reason"]
    assert outcome["training"]["label"] == "degraded"
    verified = cli("verify", "--repo", str(repo), "--service", "api", "--deployment", "reg-1", "--trust", str(trust_file))
    assert verified.code == 0, verified.out


@pytest.mark.slow
def test_seed_example1_no_change_is_a_success(tmp_path, cli, prometheus_server, keys, tsa):
    _, result = _deploy_and_run(tmp_path, cli, prometheus_server, keys, tsa, to="v1", deployment="same-1")
    assert result.code == 0, result.err
    outcome = json.loads(result.out)
    assert not [m for m, v in outcome["analysis"]["metrics"].items() if v["degraded"]], outcome["analysis"]["metrics"]
    assert outcome["decision"]["action"] == "mark_successful", outcome["decision"]
    assert outcome["training"]["label"] == "safe_deployment"


def _first_workflow(tmp_path, cli, prometheus_server, keys, tsa, *, to: str):
    """Getting Started, Step 1: `wait_for: deployment` comes first, so both captures run
    after the deployment; each is written without a duration (one sample, before)."""
    repo = tmp_path / "evidence"
    assert cli("init", str(repo)).code == 0
    with DemoService(name="api", version="v1") as service:
        prometheus = prometheus_server([service.metrics_url])
        wait_for_series(prometheus, 'http_requests_total{service="api"}')
        time.sleep(15)  # v1 history: the baseline is read back, ending at the deployment
        deployed_at = service.deploy(to)
        result = cli(
            "run", str(FIRST), "--service", "api", "--deployment", "first-1", "--repo", str(repo),
            "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--set", f"PROMETHEUS_URL={prometheus}",
            "--signal", "deployment", "--deployed-at", deployed_at.astimezone(UTC).isoformat(),
            "--time-scale", "30", "--no-prefect", "--json",
        )
    assert result.code == 0, result.err
    outcome = json.loads(result.out)
    baseline = next(s for s in outcome["steps"] if s["name"] == "capture")
    assert baseline["status"] == "ok", baseline
    return outcome


@pytest.mark.slow
def test_seed_first_workflow_catches_a_latency_regression(tmp_path, cli, prometheus_server, keys, tsa):
    outcome = _first_workflow(tmp_path, cli, prometheus_server, keys, tsa, to="v2")
    metric = outcome["analysis"]["metrics"]["response_time"]
    assert metric["counts"]["baseline"] >= 5 and metric["counts"]["impact"] >= 5, metric["counts"]
    assert metric["change"] > 0.10
    assert metric["degraded"] is True, metric["reasons"]
    assert outcome["decision"]["action"] == "alert" and outcome["decision"]["label"] == "degraded"


@pytest.mark.slow
def test_seed_first_workflow_no_change_is_a_success(tmp_path, cli, prometheus_server, keys, tsa):
    outcome = _first_workflow(tmp_path, cli, prometheus_server, keys, tsa, to="v1")
    metric = outcome["analysis"]["metrics"]["response_time"]
    assert metric["degraded"] is False, metric
    assert outcome["decision"]["action"] == "mark_successful", outcome["decision"]
