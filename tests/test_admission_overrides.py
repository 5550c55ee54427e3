"""The admission policy judges what will run: the workflow with the run's own values
(issue 9, item 2). Before, `afdp run` admitted the `${workflow.*}` defaults and then ran
with the `--set` values, so a forbidden collector URL or action program ran anyway.

Real parts: a loopback HTTP server that records every request it gets (nothing may
reach it), the embedded TSA over loopback HTTP, a real evidence repository, the CLI.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from afdp.errors import PolicyViolation
from afdp.runner import DeploymentInfo, RunRequest, run_workflow
from afdp.workflow import load_workflow

WORKFLOW = """\
name: guarded
version: "1"
variables:
  METRICS_URL: http://metrics.allowed.example:9100/metrics
  ROLLBACK_PROGRAM: /usr/bin/true
collectors:
  page: {type: scrape, url: "${workflow.METRICS_URL}", timeout: 2s}
metrics:
  latency: {collector: page, metric: http_request_duration_seconds, unit: s}
actions:
  rollback:
    command: ["${workflow.ROLLBACK_PROGRAM}"]
    timeout: 5s
workflow:
  pre_deployment:
    - capture_baseline: {duration: 1s, interval: 500ms, metrics: [latency]}
  deployment:
    - mark_deployment_time
  post_deployment:
    - capture_impact: {duration: 1s, interval: 500ms, metrics: [same_as_baseline]}
    - analyze_differences: {thresholds: {latency_increase: 1ms}}
    - decisions
decisions:
  back:
    condition: deployment.service == 'api'
    action: rollback
"""

POLICY = """\
version: 1
name: platform
allowed_collector_types: [scrape]
allowed_collector_hosts: [metrics.allowed.example]
allowed_action_commands: [/usr/bin/true]
"""


class _Recorder(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        type(self).seen.append(self.path)
        body = b"http_request_duration_seconds 0.1\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002
        pass


@pytest.fixture()
def forbidden_server():
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics", _Recorder.seen
    server.shutdown()
    server.server_close()


def _files(tmp_path: Path) -> tuple[Path, Path, Path]:
    workflow, policy, evidence = tmp_path / "wf.yaml", tmp_path / "policy.yaml", tmp_path / "evidence"
    workflow.write_text(WORKFLOW)
    policy.write_text(POLICY)
    return workflow, policy, evidence


def _run(cli, tmp_path, keys, tsa, *settings):
    workflow, policy, evidence = _files(tmp_path)
    if not evidence.exists():
        assert cli("init", str(evidence)).code == 0
    return cli(
        "run", str(workflow), "--service", "api", "--deployment", "d-1", "--repo", str(evidence),
        "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--policy", str(policy), "--no-prefect",
        *[x for s in settings for x in ("--set", s)],
    )


def _no_branch(tmp_path: Path) -> bool:
    import pygit2

    return not [r for r in pygit2.Repository(str(tmp_path / "evidence")).references if r.startswith("refs/heads/afdp/")]


def test_a_set_collector_url_the_policy_forbids_is_refused_and_never_contacted(cli, tmp_path, keys, tsa, forbidden_server):
    url, seen = forbidden_server
    result = _run(cli, tmp_path, keys, tsa, f"workflow.METRICS_URL={url}")
    assert result.code == 1, (result.code, result.err)
    assert "allowed_collector_hosts" in result.err and "'127.0.0.1'" in result.err
    assert seen == []  # nothing was contacted
    assert _no_branch(tmp_path)  # nothing was written


def test_a_set_action_program_the_policy_forbids_is_refused(cli, tmp_path, keys, tsa):
    result = _run(cli, tmp_path, keys, tsa, "workflow.ROLLBACK_PROGRAM=/usr/bin/touch")
    assert result.code == 1, (result.code, result.err)
    assert "allowed_action_commands" in result.err and "/usr/bin/touch" in result.err
    assert _no_branch(tmp_path)  # refused before anything ran or was written


def test_plan_and_run_agree(cli, tmp_path, keys, tsa, forbidden_server):
    url, _ = forbidden_server
    workflow, policy, _ = _files(tmp_path)
    plan = cli("plan", str(workflow), "--policy", str(policy), "--set", f"workflow.METRICS_URL={url}")
    run = _run(cli, tmp_path, keys, tsa, f"workflow.METRICS_URL={url}")
    assert plan.code == run.code == 1


def test_a_request_built_directly_is_admitted_with_its_overrides(tmp_path, repo, signer, tsa, forbidden_server):
    """The demo and library callers build a RunRequest themselves: the runner admits it
    with the overrides it carries, whatever built it."""
    url, seen = forbidden_server
    workflow, policy, _ = _files(tmp_path)
    admitted = load_workflow(workflow, policy=policy)
    request = RunRequest(
        workflow=admitted, repository=repo, service="api", deployment="d-2", signer=signer,
        tsa_urls=(tsa.url,), info=DeploymentInfo(commit="abc"), overrides={"METRICS_URL": url}, time_scale=10.0,
    )
    with pytest.raises(PolicyViolation, match="allowed_collector_hosts"):
        run_workflow(request)
    assert seen == []


def test_a_workflow_no_policy_admitted_does_not_run(tmp_path, repo, signer, tsa):
    from afdp.workflow.compiler import compile_document
    from afdp.workflow.loader import load

    workflow, _, _ = _files(tmp_path)
    never_admitted = compile_document(load(workflow))
    request = RunRequest(workflow=never_admitted, repository=repo, service="api", deployment="d-3", signer=signer, tsa_urls=(tsa.url,))
    with pytest.raises(PolicyViolation, match="not admitted"):
        run_workflow(request)


def test_allowed_values_still_run(cli, tmp_path, keys, tsa):
    result = _run(cli, tmp_path, keys, tsa, "workflow.ROLLBACK_PROGRAM=/usr/bin/true")
    assert result.code in (0, 1), result.err  # admitted: it ran (the source is down: failed steps)
    assert not _no_branch(tmp_path)
