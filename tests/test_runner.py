"""The runner without Prefect: real Git repositories, the embedded TSA over loopback HTTP.

Steps that need no collector (waits, signals, marks, metadata, segments, conditions)
are exercised here; captures, analysis and decisions against a real demo service are in
``test_runner_capture.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from afdp.errors import PolicyViolation, UsageError
from afdp.evidence import records as rec
from afdp.evidence.ledger import decode_envelope
from afdp.evidence.names import branch_ref
from afdp.evidence.store import EvidenceStore
from afdp.evidence.trust import load_trust_policy
from afdp.pipeline.runner import DeploymentInfo, RunRequest, StepExecutor, run_workflow
from afdp.verify.verifier import check_branch, verify_branch
from afdp.workflow import load_workflow

SIMPLE = """\
name: simple
version: "1"
variables:
  FLAG: "off"
workflow:
  pre_deployment:
    - wait: 2s
    - wait_for_signal: go
  deployment:
    - mark_deployment_time
    - capture_deployment_metadata: [git_commit, deployer_id, changed_files]
  post_deployment:
    - segment_users:
        control: 40%
        treatment: 60%
    - wait: 1s
      when: workflow.FLAG == 'on'
    - wait: 1s
      unless: deployment.environment == 'production'
"""


#: These workflows exercise steps one by one, without the baseline/impact captures the
#: shipped admission policy demands, so they are admitted by this permissive one.
PERMISSIVE = "version: 1\nname: test-permissive\nallowed_collector_types: [prometheus, scrape, sql, rest]\n"


def workflow_from(tmp_path: Path, text: str, name: str = "wf.yaml"):
    path = tmp_path / name
    path.write_text(text)
    policy = tmp_path / "permissive-policy.yaml"
    policy.write_text(PERMISSIVE)
    return load_workflow(path, policy=policy)


def request_for(workflow, repo: Path, signer, tsa, **extra) -> RunRequest:
    options = {
        "workflow": workflow,
        "repository": repo,
        "service": "api",
        "deployment": "d-1",
        "signer": signer,
        "tsa_urls": (tsa.url,),
        "info": DeploymentInfo(commit="abc123", deployer="alice", environment="production", changed_files=("a.py",)),
        "time_scale": 100.0,
        "signals": frozenset({"go"}),
    }
    options.update(extra)
    return RunRequest(**options)


def predicates(repo: Path, deployment: str = "d-1") -> list[dict]:
    store = EvidenceStore(repo)
    head = store.head(branch_ref("api", deployment))
    found = []
    for commit in store.history(head):
        info = {k: v for k, v in (line.split(": ", 1) for line in commit.message.splitlines() if line.startswith("AFDP-"))}
        envelope = store.read_blob(commit.tree, f"{rec.record_dir(int(info['AFDP-Record']), info['AFDP-Step'])}/envelope.json")
        found.append(decode_envelope(envelope)["predicate"])
    return found


def test_every_step_is_one_record_then_a_seal(tmp_path, repo, signer, tsa, trust_file):
    workflow = workflow_from(tmp_path, SIMPLE)
    seen = []
    outcome = run_workflow(request_for(workflow, repo, signer, tsa, progress=seen.append))
    assert outcome.sealed
    assert [s.name for s in outcome.steps] == [s.name for s in workflow.steps]
    assert [s.name for s in seen] == [s.name for s in workflow.steps]
    found = predicates(repo)
    assert [p["step"]["name"] for p in found] == ["genesis", *[s.name for s in workflow.steps], "seal"]
    steps = {p["step"]["name"]: p for p in found}
    assert steps["wait"]["status"] == "ok" and steps["wait"]["result"]["waited_seconds"] == 0.02
    assert steps["wait_for_signal"]["result"]["outputs"]["signal"] == "go"
    assert steps["capture_deployment_metadata"]["result"]["outputs"] == {
        "git_commit": "abc123",
        "deployer_id": "alice",
        "changed_files": ["a.py"],
    }
    assert steps["segment_users"]["result"]["outputs"] == {"control": 0.4, "treatment": 0.6}
    # when false / unless true: recorded as skipped with the reason.
    assert steps["wait_2"]["status"] == "skipped"
    assert "when workflow.FLAG == 'on' is false" in steps["wait_2"]["summary"]
    assert steps["wait_3"]["status"] == "skipped"
    assert "unless" in steps["wait_3"]["result"]["reason"]
    for predicate in found[1:-1]:
        assert predicate["workflow"]["sha256"] == workflow.digest
        assert predicate["context"]["time_scale"] == 100
        assert predicate["context"]["run_id"] == outcome.run_id
        assert predicate["step"]["index"] == workflow.step(predicate["step"]["name"]).index
    genesis = found[0]["result"]["metadata"]
    assert genesis["deployment"]["commit"] == "abc123"
    assert genesis["workflow"]["sha256"] == workflow.digest
    report = verify_branch(repo, service="api", deployment="d-1", policy=load_trust_policy(trust_file))
    assert report.sealed and len(report.records) == len(workflow.steps) + 2


def test_conditions_see_overrides(tmp_path, repo, signer, tsa):
    workflow = workflow_from(tmp_path, SIMPLE)
    outcome = run_workflow(
        request_for(workflow, repo, signer, tsa, overrides={"FLAG": "on"}, info=DeploymentInfo(environment="staging"))
    )
    statuses = {s.name: s.status for s in outcome.steps}
    assert statuses["wait_2"] == "ok" and statuses["wait_3"] == "ok"


def test_a_condition_that_cannot_be_evaluated_is_a_failed_step(tmp_path, repo, signer, tsa, trust_file):
    text = SIMPLE.replace("when: workflow.FLAG == 'on'", "when: steps.wait_for_signal.signal == 'go'")
    workflow = workflow_from(tmp_path, text)
    outcome = run_workflow(request_for(workflow, repo, signer, tsa, signals=frozenset()))
    by_name = {s.name: s for s in outcome.steps}
    assert by_name["wait_for_signal"].status == "failed"
    assert "was not given (--signal go)" in by_name["wait_for_signal"].error
    assert by_name["wait_2"].status == "failed"
    assert "could not be evaluated" in by_name["wait_2"].error
    assert outcome.sealed  # the flow went on
    verify_branch(repo, service="api", deployment="d-1", policy=load_trust_policy(trust_file))


def test_signal_from_a_signal_directory(tmp_path, repo, signer, tsa):
    workflow = workflow_from(tmp_path, SIMPLE)
    signals = tmp_path / "signals"
    signals.mkdir()
    (signals / "go").touch()
    outcome = run_workflow(request_for(workflow, repo, signer, tsa, signals=frozenset(), signal_dir=signals))
    step = next(s for s in outcome.steps if s.name == "wait_for_signal")
    assert step.status == "ok" and "file" in step.summary


def test_signal_timeout_with_an_empty_signal_directory(tmp_path, repo, signer, tsa):
    text = SIMPLE.replace("- wait_for_signal: go", "- wait_for_signal:\n        signal: go\n        timeout: 30s")
    workflow = workflow_from(tmp_path, text)
    signals = tmp_path / "signals"
    signals.mkdir()
    outcome = run_workflow(request_for(workflow, repo, signer, tsa, signals=frozenset(), signal_dir=signals))
    step = next(s for s in outcome.steps if s.name == "wait_for_signal")
    assert step.status == "failed" and "not received within 30s" in step.error


class Crash(BaseException):
    """Stands for a kill between two steps (not an Exception: nothing may catch it)."""


class CrashingExecutor(StepExecutor):
    def __init__(self, at: str) -> None:
        self.at = at

    def run(self, step, work):
        if step.name == self.at:
            raise Crash(step.name)
        return super().run(step, work)


def test_resume_after_a_crash_continues_without_duplicates(tmp_path, repo, signer, tsa, trust_file):
    workflow = workflow_from(tmp_path, SIMPLE)
    with pytest.raises(Crash):
        run_workflow(request_for(workflow, repo, signer, tsa), executor=CrashingExecutor("segment_users"))
    before = predicates(repo)
    assert [p["step"]["name"] for p in before][-1] == "capture_deployment_metadata"
    # The branch is at its last complete record, unsealed, and verifies as such.
    report = check_branch(repo, service="api", deployment="d-1", policy=load_trust_policy(trust_file), allow_unsealed=True)
    assert report.ok and not report.sealed
    outcome = run_workflow(request_for(workflow, repo, signer, tsa))
    assert outcome.resumed == 4
    assert [s.resumed for s in outcome.steps] == [True] * 4 + [False] * 3
    after = predicates(repo)
    assert after[: len(before)] == before  # nothing rewritten
    names = [p["step"]["name"] for p in after]
    assert len(names) == len(set(names))  # nothing duplicated
    verify_branch(repo, service="api", deployment="d-1", policy=load_trust_policy(trust_file))
    # Running a sealed deployment again writes nothing.
    again = run_workflow(request_for(workflow, repo, signer, tsa))
    assert again.sealed and again.resumed == len(workflow.steps)
    assert predicates(repo) == after


def test_pre_then_post_phase_on_one_branch(tmp_path, repo, signer, tsa, trust_file):
    workflow = workflow_from(tmp_path, SIMPLE)
    pre = run_workflow(request_for(workflow, repo, signer, tsa, phase="pre"))
    assert [s.name for s in pre.steps] == ["wait", "wait_for_signal"]
    assert not pre.sealed
    with pytest.raises(Exception, match="not sealed"):
        verify_branch(repo, service="api", deployment="d-1", policy=load_trust_policy(trust_file))
    post = run_workflow(request_for(workflow, repo, signer, tsa, phase="post"))
    assert post.sealed and post.resumed == 2
    assert [p["context"]["phase"] for p in predicates(repo)[1:-1]] == ["pre", "pre"] + ["post"] * 5
    verify_branch(repo, service="api", deployment="d-1", policy=load_trust_policy(trust_file))
    with pytest.raises(PolicyViolation):
        run_workflow(request_for(workflow, repo, signer, tsa, phase="pre"))


def test_post_with_other_deployment_facts_than_pre_is_refused(tmp_path, repo, signer, tsa):
    """One deployment's evidence tells one story: --phase post may not name another
    commit or deployer than --phase pre opened the branch with (nothing is written)."""
    workflow = workflow_from(tmp_path, SIMPLE)
    run_workflow(request_for(workflow, repo, signer, tsa, phase="pre"))
    before = predicates(repo)
    other = DeploymentInfo(commit="fff999", deployer="mallory", environment="production")
    with pytest.raises(UsageError, match="was opened with commit 'abc123'; this run says 'fff999'"):
        run_workflow(request_for(workflow, repo, signer, tsa, phase="post", info=other))
    assert predicates(repo) == before
    # The same facts (or facts not given again) continue the branch.
    same = DeploymentInfo(commit="abc123")
    assert run_workflow(request_for(workflow, repo, signer, tsa, phase="post", info=same)).sealed


def test_post_without_pre_records_the_missed_steps_as_skipped(tmp_path, repo, signer, tsa):
    workflow = workflow_from(tmp_path, SIMPLE)
    post = run_workflow(request_for(workflow, repo, signer, tsa, phase="post"))
    statuses = [(s.name, s.status) for s in post.steps]
    assert statuses[:2] == [("wait", "skipped"), ("wait_for_signal", "skipped")]
    assert "pre-deployment phase was not recorded" in post.steps[0].summary
    assert post.sealed


def test_a_branch_of_another_workflow_is_refused(tmp_path, repo, signer, tsa):
    run_workflow(request_for(workflow_from(tmp_path, SIMPLE), repo, signer, tsa, phase="pre"))
    other = workflow_from(tmp_path, SIMPLE.replace("name: simple", "name: other"), "other.yaml")
    with pytest.raises(UsageError, match="recorded with workflow"):
        run_workflow(request_for(other, repo, signer, tsa))


def test_secrets_never_reach_the_records(tmp_path, repo, signer, tsa, monkeypatch):
    text = SIMPLE.replace(
        "workflow:\n", "actions:\n  alert:\n    webhook: https://hooks.invalid/x\n    secret: ${env.HOOK_SECRET}\nworkflow:\n", 1
    )
    workflow = workflow_from(tmp_path, text)
    secret = "s3cr3t-value-42"
    info = DeploymentInfo(commit=f"commit-{secret}", deployer="alice")
    run_workflow(request_for(workflow, repo, signer, tsa, info=info, env={"HOOK_SECRET": secret}))
    store = EvidenceStore(repo)
    head = store.head(branch_ref("api", "d-1"))
    blobs = b"".join(data for _, data, _ in store._walk(head.tree, ""))
    import base64

    decoded = b"".join(
        base64.b64decode(__import__("json").loads(d)["payload"]) for p, d, _ in store._walk(head.tree, "") if p.endswith("envelope.json")
    )
    assert secret.encode() not in blobs + decoded
    assert b"[redacted env.HOOK_SECRET]" in decoded


def test_bad_requests(tmp_path, repo, signer, tsa):
    workflow = workflow_from(tmp_path, SIMPLE)
    with pytest.raises(UsageError, match="invalid phase"):
        request_for(workflow, repo, signer, tsa, phase="middle")
    with pytest.raises(UsageError, match="TSA"):
        request_for(workflow, repo, signer, tsa, tsa_urls=())
    with pytest.raises(UsageError, match="deployment name"):
        request_for(workflow, repo, signer, tsa, deployment="../x")
    nomark = workflow_from(tmp_path, "name: n\nversion: '1'\nworkflow:\n  - wait: 1s\n", "n.yaml")
    with pytest.raises(UsageError, match="no mark_deployment_time"):
        run_workflow(request_for(nomark, repo, signer, tsa, phase="pre"))


def test_cli_run_without_prefect(tmp_path, cli, repo, keys, tsa, trust_file):
    path = tmp_path / "wf.yaml"
    path.write_text(SIMPLE)
    policy = tmp_path / "policy.yaml"
    policy.write_text(PERMISSIVE)
    result = cli(
        "run", str(path), "--policy", str(policy), "--service", "api", "--deployment", "d-9", "--commit", "abc", "--deployer", "bob",
        "--repo", str(repo), "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--signal", "go",
        "--set", "FLAG=on", "--fast", "--no-prefect", "--json",
    )
    assert result.code == 0, result.err
    document = result.json()
    assert document["sealed"] and len(document["steps"]) == 7
    assert document["steps"][5]["status"] == "ok"  # FLAG=on
    verified = cli("verify", "--repo", str(repo), "--service", "api", "--deployment", "d-9", "--trust", str(trust_file))
    assert verified.code == 0, verified.out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--set", "novalue"), "expected NAME=VALUE"),
        (("--set", "deployment.service=x"), "deployment values come from their options"),
        (("--deployed-at", "yesterday"), "not an RFC 3339 time"),
        (("--tsa", "ftp://x"), "not an http(s) URL"),
        (("--deployment", "a/b"), "invalid deployment name"),
    ],
)
def test_cli_run_bad_input(tmp_path, cli, repo, keys, tsa, args, message):
    path = tmp_path / "wf.yaml"
    path.write_text(SIMPLE)
    policy = tmp_path / "policy.yaml"
    policy.write_text(PERMISSIVE)
    base = ["run", str(path), "--policy", str(policy), "--service", "api", "--repo", str(repo), "--key", str(keys / "dev.key"), "--no-prefect"]
    if "--deployment" not in args:
        base += ["--deployment", "d-1"]
    if "--tsa" not in args:
        base += ["--tsa", tsa.url]
    result = cli(*base, *args)
    assert result.code == 2, (result.out, result.err)
    assert message in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_cli_run_missing_workflow_and_invalid_workflow(tmp_path, cli, repo, keys, tsa):
    base = ["--service", "api", "--deployment", "d-1", "--repo", str(repo), "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--no-prefect"]
    assert cli("run", str(tmp_path / "missing.yaml"), *base).code == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nworkflow:\n  - wait: forever\n")
    result = cli("run", str(bad), *base)
    assert result.code == 1 and "forever" in result.err
    assert EvidenceStore(repo).head(branch_ref("api", "d-1")) is None


INTERRUPTIBLE = """\
name: interruptible
version: "1"
workflow:
  pre_deployment:
    - wait: 1s
  deployment:
    - mark_deployment_time
  post_deployment:
    - wait: 2_minutes
    - capture_deployment_metadata: [git_commit]
"""


def test_ctrl_c_leaves_the_branch_at_its_last_record_and_a_rerun_completes(tmp_path, repo, keys, tsa, trust_file):
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "wf.yaml"
    path.write_text(INTERRUPTIBLE)
    policy = tmp_path / "policy.yaml"
    policy.write_text(PERMISSIVE)
    argv = [
        sys.executable, "-m", "afdp", "run", str(path), "--policy", str(policy), "--service", "api",
        "--deployment", "d-int", "--commit", "abc", "--repo", str(repo), "--key", str(keys / "dev.key"),
        "--tsa", tsa.url, "--no-prefect",
    ]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        head = EvidenceStore(repo).head(branch_ref("api", "d-int")) if (repo / "refs").exists() or (repo / ".git").exists() else None
        if head is not None and "AFDP-Step: mark_deployment_time" in head.message:
            break
        time.sleep(0.1)
    else:
        process.kill()
        pytest.fail("the run never reached the mark")
    time.sleep(0.5)  # inside the 2-minute wait now
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "Traceback" not in err and ("interrupted" in err or "aborted" in err)
    steps = [p["step"]["name"] for p in predicates(repo, "d-int")]
    assert steps == ["genesis", "wait", "mark_deployment_time"]
    report = check_branch(repo, service="api", deployment="d-int", policy=load_trust_policy(trust_file), allow_unsealed=True)
    assert report.ok and not report.sealed
    # Same workflow, same deployment: continues after the mark (waits shortened this time).
    done = subprocess.run([*argv, "--time-scale", "120", "--json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    import json

    outcome = json.loads(done.stdout)
    assert [s["resumed"] for s in outcome["steps"]] == [True, True, False, False]
    steps = [p["step"]["name"] for p in predicates(repo, "d-int")]
    assert steps == ["genesis", "wait", "mark_deployment_time", "wait_2", "capture_deployment_metadata", "seal"]
    verify_branch(repo, service="api", deployment="d-int", policy=load_trust_policy(trust_file))


EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "afdp" / "workflow" / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_shipped_example_runs_to_a_verified_seal_when_no_source_answers(example, tmp_path, repo, signer, tsa, trust_file):
    """No collector, database or webhook answers (closed loopback ports, secrets set to
    values nothing accepts): every step is still recorded, failures with their reasons,
    and the branch verifies."""
    from infra import free_port

    from afdp.pipeline.runner import env_names

    dead = f"http://127.0.0.1:{free_port()}"
    text = example.read_text()
    for url in ("http://prometheus:9090", "https://hooks.example.com", "https://analytics.internal"):
        text = text.replace(url, dead)
    path = tmp_path / example.name
    path.write_text(text)
    workflow = load_workflow(path)
    signals = frozenset(s.params.signal for s in workflow.steps if s.kind.value == "signal")
    outcome = run_workflow(
        request_for(
            workflow, repo, signer, tsa, deployment="ex-1", time_scale=100000.0, signals=signals,
            env={name: f"{dead}/not-a-secret" for name in env_names(workflow)},
        )
    )
    assert outcome.sealed
    assert [s.name for s in outcome.steps] == [s.name for s in workflow.steps]
    failed = [s for s in outcome.steps if s.status == "failed"]
    assert failed and all(s.error for s in failed)
    verify_branch(repo, service="api", deployment="ex-1", policy=load_trust_policy(trust_file))
