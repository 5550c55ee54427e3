"""End to end: ``afdp run`` against a real Prometheus scraping a demo service with a regression.

Debian's Prometheus (tests/infra.py) scrapes a :class:`DemoService` every second. The
service runs v1, then v2 (+40 ms, ~5% errors). ``afdp run --phase post --deployed-at``
takes the baseline from Prometheus' history (the window before the deployment), waits,
captures the impact with a range query, analyses, decides (rollback: exit 1), and the
branch verifies with ``afdp verify``.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from infra import wait_for_series

from afdp.demo.service import DemoService

WORKFLOW = """\
name: e2e_prometheus
version: "1"
variables:
  PROM_URL: http://127.0.0.1:9090
collectors:
  prom:
    type: prometheus
    url: ${workflow.PROM_URL}
    step: 1s
    timeout: 5s
metrics:
  latency_mean:
    collector: prom
    query: sum(rate(http_request_duration_seconds_sum{service="${deployment.service}"}[3s])) / sum(rate(http_request_duration_seconds_count{service="${deployment.service}"}[3s]))
    unit: s
  error_ratio:
    collector: prom
    query: sum(rate(http_requests_total{service="${deployment.service}",code="500"}[3s])) / sum(rate(http_requests_total{service="${deployment.service}"}[3s]))
    unit: ratio
workflow:
  pre_deployment:
    - capture_baseline:
        duration: 8s
        metrics: [latency_mean, error_ratio]
  deployment:
    - mark_deployment_time
    - capture_deployment_metadata: [git_commit, deployer_id]
  post_deployment:
    - wait: 4s
    - capture_impact:
        duration: 8s
        metrics: [same_as_baseline]
    - analyze_differences:
        method: mann_whitney
        thresholds:
          latency_mean_increase: 10ms
          error_ratio_increase: 1%
    - decisions
    - generate_training_record
decisions:
  rollback_on_regression:
    condition: latency_mean.degraded or error_ratio.degraded
    action: rollback
    training_label: regression
  all_clear:
    condition: all_metrics_within_normal
    action: mark_successful
"""


@pytest.mark.slow
def test_afdp_run_against_real_prometheus(tmp_path, cli, prometheus_server, keys, tsa, trust_file):
    repo = tmp_path / "evidence"
    assert cli("init", str(repo)).code == 0
    path = tmp_path / "workflow.yaml"
    path.write_text(WORKFLOW)
    with DemoService(name="api", version="v1") as service:
        prometheus = prometheus_server([service.metrics_url])
        wait_for_series(prometheus, 'http_requests_total{service="api"}')
        time.sleep(10)  # v1 history for the baseline window
        deployed_at = service.deploy("v2")
        result = cli(
            "run", str(path), "--service", "api", "--deployment", "d-42", "--commit", "4f2a9c1",
            "--deployer", "alice", "--repo", str(repo), "--key", str(keys / "dev.key"),
            "--tsa", tsa.url, "--set", f"PROM_URL={prometheus}", "--phase", "post",
            "--deployed-at", deployed_at.astimezone(UTC).isoformat(), "--no-prefect", "--json",
        )
    assert result.code == 1, result.err  # rollback decided: exit 1 so a pipeline stops
    outcome = json.loads(result.out)
    statuses = {s["name"]: s["status"] for s in outcome["steps"]}
    assert set(statuses.values()) == {"ok"}, outcome["steps"]
    assert outcome["decision"]["action"] == "rollback"
    metrics = outcome["analysis"]["metrics"]
    assert metrics["latency_mean"]["degraded"] is True
    assert metrics["latency_mean"]["increase"] > 0.02
    assert metrics["latency_mean"]["counts"]["baseline"] >= 5
    assert outcome["sealed"]
    # The baseline came from Prometheus' history: the window ending at the deployment.
    story = cli("log", "--repo", str(repo), "--service", "api", "--deployment", "d-42", "--json").json()
    assert [r["step"] for r in story["records"]][:2] == ["genesis", "capture_baseline"]
    verified = cli("verify", "--repo", str(repo), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file), "--json")
    assert verified.code == 0, verified.out
    assert verified.json()["branches"][0]["state"] == "verified"
    baseline = _record(repo, "000001-capture_baseline")
    window = baseline["result"]["window"]
    assert window["from_history"] is True
    assert datetime.fromisoformat(window["end"].replace("Z", "+00:00")) <= deployed_at
    provenance = baseline["provenance"]["latency_mean"]
    assert provenance["type"] == "prometheus" and "rate(" in provenance["query"]


def _record(repo, name: str) -> dict:
    import base64

    import pygit2

    git = pygit2.Repository(str(repo))
    tree = git.get(git.references["refs/heads/afdp/api/d-42"].target).tree
    envelope = json.loads(git.get(tree[f"records/000/{name}/envelope.json"].id).data)
    return json.loads(base64.b64decode(envelope["payload"]))["predicate"]
