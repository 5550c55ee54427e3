"""The runner against a real demo service read by the scrape collector (no Prefect).

Each test runs the pre-deployment phase against v1, switches the service (or not), then
runs the post-deployment phase: capture, analysis, decision, the action (a real
command), training record, seal; and verifies the branch offline.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from afdp.demo.service import DemoService
from afdp.evidence.trust import load_trust_policy
from afdp.pipeline.runner import DeploymentInfo, RunRequest, run_workflow
from afdp.verify.verifier import verify_branch
from afdp.workflow import load_workflow

WORKFLOW = """\
name: capture_test
version: "1"
variables:
  METRICS_URL: http://127.0.0.1:1/metrics
  MARKER: /nonexistent
  PYTHON: python3
collectors:
  svc:
    type: scrape
    url: ${workflow.METRICS_URL}
    timeout: 2s
  dead:
    type: scrape
    url: http://127.0.0.1:9/metrics
    timeout: 1s
metrics:
  latency_mean:
    collector: svc
    metric: http_request_duration_seconds
    labels: {service: "${deployment.service}"}
    unit: s
  errors_per_second:
    collector: svc
    metric: http_requests_total
    labels: {service: "${deployment.service}", code: "500"}
    unit: 1/s
  unreachable:
    collector: dead
    metric: up
    unit: count
actions:
  rollback:
    command: ["${workflow.PYTHON}", "-c", "import sys; open(sys.argv[1], 'w').write(sys.argv[2])", "${workflow.MARKER}", "${deployment.service}"]
    timeout: 20s
workflow:
  pre_deployment:
    - capture_baseline:
        duration: 4s
        interval: 400ms
        metrics: [METRICS]
  deployment:
    - mark_deployment_time
    - capture_deployment_metadata: [git_commit, deployer_id, changed_files]
  post_deployment:
    - capture_impact:
        duration: 4s
        interval: 400ms
        metrics: [same_as_baseline]
    - analyze_differences:
        METHOD
        thresholds:
          latency_mean_increase: 10ms
    - decisions
    - generate_training_record
decisions:
  rollback_on_regression:
    condition: latency_mean.degraded
    action: rollback
    training_label: regression
  all_clear:
    condition: all_metrics_within_normal
    action: mark_successful
"""


def make_workflow(tmp_path: Path, *, metrics=("latency_mean", "errors_per_second"), method=True):
    text = WORKFLOW.replace("[METRICS]", "[" + ", ".join(metrics) + "]")
    text = text.replace("METHOD", "method: mann_whitney" if method else "min_samples: 5")
    path = tmp_path / "wf.yaml"
    path.write_text(text)
    return load_workflow(path)


@pytest.fixture()
def service():
    with DemoService(name="shop", version="v1") as running:
        yield running


def run_both_phases(workflow, service, repo, signer, tsa, tmp_path, *, deploy: str | None):
    marker = tmp_path / "rolled-back"
    base = RunRequest(
        workflow=workflow,
        repository=repo,
        service="shop",
        deployment="d-7",
        signer=signer,
        tsa_urls=(tsa.url,),
        info=DeploymentInfo(commit="c0ffee", deployer="ci", changed_files=("x.py", "y.py"), deployment_size=2, environment="test", version=deploy or "v1"),
        overrides={"METRICS_URL": service.metrics_url, "MARKER": str(marker), "PYTHON": sys.executable},
        phase="pre",
        time_scale=2.0,
    )
    pre = run_workflow(base)
    assert [s.name for s in pre.steps] == ["capture_baseline"] and not pre.sealed
    deployed_at = service.deploy(deploy) if deploy else None
    from dataclasses import replace

    post = run_workflow(replace(base, phase="post", info=replace(base.info, deployed_at=deployed_at)))
    return post, marker


def test_regression_is_detected_and_rolled_back(tmp_path, service, repo, signer, tsa, trust_file):
    workflow = make_workflow(tmp_path)
    outcome, marker = run_both_phases(workflow, service, repo, signer, tsa, tmp_path, deploy="v2")
    assert outcome.sealed
    assert [s.status for s in outcome.steps] == ["ok"] * len(workflow.steps)
    assert outcome.analysis["metrics"]["latency_mean"]["degraded"] is True
    assert outcome.decision["action"] == "rollback"
    assert outcome.decision["decision"] == "rollback_on_regression"
    # The rollback command really ran, with the rendered argv, and its outcome is evidence.
    assert marker.read_text() == "shop"
    assert outcome.action["status"] == "ok" and outcome.action["kind"] == "command"
    assert outcome.action["exit_code"] == 0
    training = outcome.training
    assert training["label"] == "regression"
    cited = {c["step"] for c in training["cited"]}
    assert {"capture_baseline", "capture_impact", "analyze_differences", "decisions"} <= cited
    assert all(len(c["sha256"]) == 64 for c in training["cited"])
    report = verify_branch(repo, service="shop", deployment="d-7", policy=load_trust_policy(trust_file))
    assert report.sealed and len(report.records) == len(workflow.steps) + 2


def test_metric_series_are_attachments_and_read_back_for_the_post_phase(tmp_path, service, repo, signer, tsa):
    workflow = make_workflow(tmp_path)
    outcome, _ = run_both_phases(workflow, service, repo, signer, tsa, tmp_path, deploy="v2")
    from afdp.audit.story import read_story

    story = read_story(repo, service="shop", deployment="d-7")
    assert [r["step"] for r in story["records"]][1] == "capture_baseline"
    import pygit2

    git = pygit2.Repository(str(repo))
    tree = git.get(git.references["refs/heads/afdp/shop/d-7"].target).tree
    series = json.loads(git.get(tree["records/000/000001-capture_baseline/series-latency_mean.json"].id).data)
    assert series["metric"] == "latency_mean" and len(series["samples"]) >= 5
    # The post phase (a separate run) analysed the baseline it read back from the branch.
    counts = outcome.analysis["metrics"]["latency_mean"]["counts"]
    assert counts["baseline"] == len(series["samples"])


def test_no_regression_marks_successful(tmp_path, service, repo, signer, tsa, trust_file):
    workflow = make_workflow(tmp_path, metrics=("latency_mean",), method=False)
    outcome, marker = run_both_phases(workflow, service, repo, signer, tsa, tmp_path, deploy=None)
    assert outcome.decision["action"] == "mark_successful", outcome.decision
    assert outcome.action["status"] == "not_configured"
    assert not marker.exists()
    verify_branch(repo, service="shop", deployment="d-7", policy=load_trust_policy(trust_file))


def test_a_failing_collector_is_a_failed_step_and_the_flow_still_decides(tmp_path, service, repo, signer, tsa, trust_file, cli):
    workflow = make_workflow(tmp_path, metrics=("latency_mean", "unreachable"))
    outcome, _ = run_both_phases(workflow, service, repo, signer, tsa, tmp_path, deploy="v2")
    steps = {s.name: s for s in outcome.steps}
    for name in ("capture_baseline", "capture_impact"):
        assert steps[name].status == "failed"
        assert "unreachable" in steps[name].error and "127.0.0.1:9" in steps[name].error
    assert outcome.analysis["metrics"]["unreachable"]["status"] == "no_data"
    assert outcome.decision is not None and outcome.decision["action"] == "rollback"  # latency still seen
    assert outcome.sealed
    verify_branch(repo, service="shop", deployment="d-7", policy=load_trust_policy(trust_file))
    result = cli("verify", "--repo", str(repo), "--service", "shop", "--deployment", "d-7", "--trust", str(trust_file))
    assert result.code == 0, result.out


def test_post_phase_without_pre_takes_no_baseline_from_a_live_source(tmp_path, service, repo, signer, tsa):
    workflow = make_workflow(tmp_path, metrics=("latency_mean",))
    request = RunRequest(
        workflow=workflow,
        repository=repo,
        service="shop",
        deployment="d-8",
        signer=signer,
        tsa_urls=(tsa.url,),
        overrides={"METRICS_URL": service.metrics_url},
        phase="post",
        time_scale=4.0,
    )
    outcome = run_workflow(request)
    first = outcome.steps[0]
    assert first.name == "capture_baseline" and first.status == "failed"
    assert first.error.startswith("latency_mean: ")  # the live page cannot give a past window
    assert outcome.decision["action"] != "rollback"  # no baseline: never a silent verdict
    assert outcome.sealed


GATED = """\
name: gated
version: "1"
variables:
  METRICS_URL: http://127.0.0.1:1/metrics
  MARKER: /nonexistent
  PYTHON: python3
collectors:
  svc:
    type: scrape
    url: ${workflow.METRICS_URL}
metrics:
  latency_mean:
    collector: svc
    metric: http_request_duration_seconds
    unit: s
    better: lower
actions:
  rollback:
    command: ["${workflow.PYTHON}", "-c", "import sys; open(sys.argv[1], 'w').write('gate')", "${workflow.MARKER}"]
workflow:
  pre_deployment:
    - capture_baseline:
        duration: 4s
        interval: 400ms
        metrics: [latency_mean]
  deployment:
    - mark_deployment_time
  canary:
    - capture_impact:
        duration: 4s
        interval: 400ms
        metrics: [latency_mean]
    - analyze_differences:
        method: mann_whitney
    - gate:
        condition: latency_mean.degraded
        action: rollback
        training_label: canary_aborted
    - wait: 1_minute
    - capture:
        duration: 1_minute
        metrics: [latency_mean]
    - generate_training_record
"""


def test_a_triggered_gate_rolls_back_and_stops_the_workflow(tmp_path, service, repo, signer, tsa, trust_file):
    path = tmp_path / "gated.yaml"
    path.write_text(GATED)
    workflow = load_workflow(path)
    outcome, marker = run_both_phases(workflow, service, repo, signer, tsa, tmp_path, deploy="v2")
    steps = {s.name: s for s in outcome.steps}
    assert steps["gate"].status == "ok" and "gate triggered" in steps["gate"].summary
    assert marker.read_text() == "gate"  # the gate's rollback ran
    assert outcome.decision["action"] == "rollback" and outcome.decision["label"] == "canary_aborted"
    for name in ("wait", "capture"):  # a minute each: never run
        assert steps[name].status == "skipped" and "gate gate triggered" in steps[name].summary
    assert steps["generate_training_record"].status == "ok"
    assert outcome.training["label"] == "canary_aborted"
    assert outcome.sealed
    verify_branch(repo, service="shop", deployment="d-7", policy=load_trust_policy(trust_file))
