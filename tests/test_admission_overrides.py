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
from infra import PREFECT_GROUP

from afdp.errors import PolicyViolation
from afdp.pipeline.runner import DeploymentInfo, RunRequest, run_workflow
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


# --- every value known before the run, every path that runs (issue 9, item 2 again) ----
#
# The allowed source is 127.0.0.2, a loopback address where nothing listens (a refused
# connection, no DNS); the forbidden one is the recording server on 127.0.0.1.

KNOWN_WORKFLOW = """\
name: guarded_known
version: "1"
variables:
  METRICS_URL: http://127.0.0.2:9/metrics
collectors:
  page: {type: scrape, url: "COLLECTOR_URL", timeout: 1s}
metrics:
  latency: {collector: page, metric: http_request_duration_seconds, unit: s}
workflow:
  pre_deployment:
    - capture_baseline: {duration: 1s, interval: 500ms, metrics: [latency]}
  deployment:
    - mark_deployment_time
  post_deployment:
    - capture_impact: {duration: 1s, interval: 500ms, metrics: [same_as_baseline]}
    - analyze_differences: {thresholds: {latency_increase: 1ms}}
"""

# unresolved_hosts: allow lets `afdp validate` pass a host only the run knows; the run
# itself knows it, and judges it.
KNOWN_POLICY = """\
version: 1
name: platform
allowed_collector_types: [scrape]
allowed_collector_hosts: [127.0.0.2]
unresolved_hosts: allow
"""


#: Where the collector's URL comes from: a variable, the environment, a deployment value.
URLS = {
    "page": "${workflow.METRICS_URL}",
    "from_env": "${env.AFDP_TEST_METRICS_URL}",
    "from_deployment": "http://${deployment.environment}/metrics",
}


def _known_files(tmp_path: Path, collector: str) -> tuple[Path, Path, Path]:
    workflow, policy, evidence = tmp_path / "wf.yaml", tmp_path / "policy.yaml", tmp_path / "evidence"
    workflow.write_text(KNOWN_WORKFLOW.replace("COLLECTOR_URL", URLS[collector]))
    policy.write_text(KNOWN_POLICY)
    return workflow, policy, evidence


def _known_run(cli, tmp_path, keys, tsa, collector, *extra, deployment="k-1"):
    workflow, policy, evidence = _known_files(tmp_path, collector)
    if not evidence.exists():
        assert cli("init", str(evidence)).code == 0
    return cli(
        "run", str(workflow), "--service", "api", "--deployment", deployment, "--repo", str(evidence),
        "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--policy", str(policy), "--no-prefect",
        "--fast", *extra,
    )


def _head(tmp_path: Path, deployment: str) -> str | None:
    import pygit2

    ref = pygit2.Repository(str(tmp_path / "evidence")).references.get(f"refs/heads/afdp/api/{deployment}")
    return None if ref is None else str(ref.target)


def test_a_collector_url_from_the_environment_is_judged_with_its_value(cli, tmp_path, keys, tsa, forbidden_server, monkeypatch):
    url, seen = forbidden_server
    monkeypatch.setenv("AFDP_TEST_METRICS_URL", url)
    result = _known_run(cli, tmp_path, keys, tsa, "from_env")
    assert result.code == 1, (result.code, result.err)
    assert "allowed_collector_hosts" in result.err and "a host from ${env.*}" in result.err
    assert url not in result.err and "127.0.0.1" not in result.err  # judged, never shown
    assert seen == []
    assert _head(tmp_path, "k-1") is None


def test_an_allowed_url_from_the_environment_runs(cli, tmp_path, keys, tsa, monkeypatch):
    monkeypatch.setenv("AFDP_TEST_METRICS_URL", "http://127.0.0.2:9/metrics")
    result = _known_run(cli, tmp_path, keys, tsa, "from_env")
    assert result.code in (0, 1), result.err  # admitted: it ran (the source is down)
    assert "allowed_collector_hosts" not in result.err
    assert _head(tmp_path, "k-1") is not None


def test_a_collector_url_from_deployment_values_is_judged_with_them(cli, tmp_path, keys, tsa, forbidden_server):
    url, seen = forbidden_server
    host = url.split("/")[2]  # 127.0.0.1:PORT, given as the deployment's environment
    result = _known_run(cli, tmp_path, keys, tsa, "from_deployment", "--environment", host)
    assert result.code == 1, (result.code, result.err)
    assert "allowed_collector_hosts" in result.err and "'127.0.0.1'" in result.err
    assert seen == []
    assert _head(tmp_path, "k-1") is None


def test_a_resumed_run_is_judged_with_its_own_set_values(cli, tmp_path, keys, tsa, forbidden_server):
    """`--phase pre` with the admitted default, then `--phase post` (a resumed run, as a
    crashed run is resumed) with a forbidden --set: refused, nothing contacted or written."""
    url, seen = forbidden_server
    first = _known_run(cli, tmp_path, keys, tsa, "page", "--phase", "pre", deployment="k-2")
    assert first.code in (0, 1), first.err
    head = _head(tmp_path, "k-2")
    assert head is not None
    second = _known_run(cli, tmp_path, keys, tsa, "page", "--phase", "post", "--set", f"METRICS_URL={url}", deployment="k-2")
    assert second.code == 1, (second.code, second.err)
    assert "allowed_collector_hosts" in second.err and "'127.0.0.1'" in second.err
    assert seen == []
    assert _head(tmp_path, "k-2") == head  # nothing written after the refusal
    third = _known_run(cli, tmp_path, keys, tsa, "page", "--set", f"METRICS_URL={url}", deployment="k-2")
    assert third.code == 1 and seen == [] and _head(tmp_path, "k-2") == head  # a plain re-run too


def test_the_github_action_refuses_a_forbidden_set_value(tmp_path, keys, tsa, forbidden_server):
    """The Action's entry point (afdp.audit.action.main) runs `afdp run` with the user's args:
    a --set the policy forbids stops it; nothing is contacted, recorded or pushed."""
    import shutil

    import pygit2

    from afdp.audit.action import main

    if shutil.which("git") is None:
        pytest.skip("the action pushes with git")
    url, seen = forbidden_server
    workspace = tmp_path / "workspace"
    (workspace / ".afdp").mkdir(parents=True)
    (workspace / ".afdp" / "deploy.yaml").write_text(KNOWN_WORKFLOW.replace("COLLECTOR_URL", URLS["page"]))
    (workspace / ".afdp" / "policy.yaml").write_text(KNOWN_POLICY)
    remote = tmp_path / "evidence-remote.git"
    pygit2.init_repository(str(remote), bare=True)
    (tmp_path / "runner-temp").mkdir()
    for name in ("summary.md", "output.txt"):
        (tmp_path / name).write_text("")
    env = {
        "GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": str(workspace), "GITHUB_RUN_ID": "7",
        "GITHUB_RUN_ATTEMPT": "1", "GITHUB_SHA": "0f3c2a9d1e", "GITHUB_ACTOR": "octocat",
        "GITHUB_REF_NAME": "main", "GITHUB_REPOSITORY": "org/shop",
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"), "GITHUB_OUTPUT": str(tmp_path / "output.txt"),
        "RUNNER_TEMP": str(tmp_path / "runner-temp"), "HOME": str(tmp_path),
        "PATH": __import__("os").environ["PATH"],
        "INPUT_WORKFLOW": ".afdp/deploy.yaml", "INPUT_SERVICE": "web", "INPUT_EVIDENCE_REMOTE": str(remote),
        "INPUT_TSA": tsa.url, "INPUT_SIGNER": "key", "INPUT_KEY": (keys / "dev.key").read_text(),
        "INPUT_PHASE": "all",
        "INPUT_ARGS": f"--no-prefect --fast --policy .afdp/policy.yaml --set workflow.METRICS_URL={url}",
    }
    assert main(env=env) != 0
    assert seen == []
    assert not [r for r in pygit2.Repository(str(remote)).references if r.startswith("refs/heads/afdp/")]


@pytest.mark.slow
@pytest.mark.xdist_group(PREFECT_GROUP)
def test_a_prefect_worker_admits_the_flow_parameters_again(tmp_path, keys, tsa, forbidden_server, prefect_api):
    """A worker gets only the flow's parameters and prepares the request itself: a
    forbidden --set among them is refused before any task runs."""
    from afdp.evidence.store import init_repository
    from afdp.pipeline.flow import run_with_prefect

    url, seen = forbidden_server
    workflow, policy, evidence = _known_files(tmp_path, "page")
    init_repository(evidence)
    params = {
        "workflow_path": str(workflow), "service": "api", "deployment": "k-3", "repository": str(evidence),
        "key": str(keys / "dev.key"), "tsa_urls": [tsa.url], "time_scale": 10.0,
        "overrides": {"METRICS_URL": url}, "policy": str(policy),
    }
    with prefect_api.in_this_process(), pytest.raises(PolicyViolation, match="allowed_collector_hosts"):
        run_with_prefect(params)
    assert seen == []
    assert _head(tmp_path, "k-3") is None


def test_plan_judges_deployment_values_as_the_run_does(cli, tmp_path, keys, tsa, forbidden_server):
    url, seen = forbidden_server
    host = url.split("/")[2]
    workflow, policy, _ = _known_files(tmp_path, "from_deployment")
    plan = cli("plan", str(workflow), "--policy", str(policy), "--set", f"deployment.environment={host}")
    run = _known_run(cli, tmp_path, keys, tsa, "from_deployment", "--environment", host)
    assert plan.code == run.code == 1, (plan.err, run.err)
    assert "'127.0.0.1'" in plan.err
    allowed = cli("plan", str(workflow), "--policy", str(policy), "--set", "deployment.environment=127.0.0.2:9")
    assert allowed.code == 0, allowed.err
    assert seen == []
