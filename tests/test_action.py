"""The GitHub Action's script (afdp.audit.action) in a simulated GitHub environment.

Real parts: a real ``afdp run`` subprocess (an offline workflow), the embedded TSA over
loopback HTTP, real Git (a bare repository as the evidence remote, pushed to with the
git CLI as on a runner). Simulated: the GITHUB_* variables, the summary and output
files, and the OIDC variables (no OIDC provider exists offline).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pygit2
import pytest
import yaml
from conftest import build_deployment
from test_report import build_run_deployment

from afdp.audit.action import build_summary, main, read_inputs, redact
from afdp.audit.report import build_report
from afdp.errors import UsageError
from afdp.evidence import records as rec
from afdp.evidence.names import branch_ref
from afdp.evidence.store import EvidenceStore, init_repository
from afdp.evidence.trust import load_trust_policy

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="the action pushes with git")

WORKFLOW = """\
name: gh-action-test
version: "1"
workflow:
  pre_deployment:
    - wait: 1s
  deployment:
    - mark_deployment_time
    - capture_deployment_metadata: [git_commit, deployer_id]
"""
ROLLBACK_WORKFLOW = """\
name: gh-action-rollback
version: "1"
workflow:
  deployment:
    - mark_deployment_time
    - capture_deployment_metadata: [git_commit, deployer_id]
  post_deployment:
    - decisions
decisions:
  roll_back_production:
    condition: deployment.environment == 'production'
    action: trigger_rollback
    training_label: forced
"""
PERMISSIVE = "version: 1\nname: test-permissive\nallowed_collector_types: [prometheus, scrape, sql, rest]\n"
ACTION_YML = Path(__file__).resolve().parent.parent / ".github" / "actions" / "afdp" / "action.yml"


@pytest.fixture()
def github(tmp_path, keys, tsa, trust_file) -> dict[str, str]:
    """A simulated GitHub Actions environment: workspace, runner temp, summary/output files,
    a bare repository as the evidence remote."""
    workspace = tmp_path / "workspace"
    (workspace / ".afdp").mkdir(parents=True)
    (workspace / ".afdp" / "deploy.yaml").write_text(WORKFLOW)
    (workspace / ".afdp" / "policy.yaml").write_text(PERMISSIVE)
    shutil.copy(trust_file, workspace / ".afdp" / "trust.yaml")
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    remote = tmp_path / "evidence-remote.git"
    pygit2.init_repository(str(remote), bare=True)
    (tmp_path / "summary.md").write_text("")
    (tmp_path / "output.txt").write_text("")
    return {
        "GITHUB_ACTIONS": "true",
        "GITHUB_WORKSPACE": str(workspace),
        "GITHUB_RUN_ID": "123",
        "GITHUB_RUN_ATTEMPT": "1",
        "GITHUB_SHA": "0f3c2a9d1e",
        "GITHUB_ACTOR": "octocat",
        "GITHUB_REF_NAME": "main",
        "GITHUB_REPOSITORY": "org/shop",
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "GITHUB_OUTPUT": str(tmp_path / "output.txt"),
        "RUNNER_TEMP": str(runner_temp),
        "PATH": __import__("os").environ["PATH"],
        "HOME": str(tmp_path),
        "INPUT_WORKFLOW": ".afdp/deploy.yaml",
        "INPUT_SERVICE": "web",
        "INPUT_EVIDENCE_REMOTE": str(remote),
        "INPUT_TSA": tsa.url,
        "INPUT_SIGNER": "key",
        "INPUT_KEY": (keys / "dev.key").read_text(),
        "INPUT_TRUST": ".afdp/trust.yaml",
        "INPUT_ARGS": "--no-prefect --fast --policy .afdp/policy.yaml",
        "INPUT_PHASE": "all",
    }


def outputs(env: dict[str, str]) -> dict[str, str]:
    return dict(line.split("=", 1) for line in Path(env["GITHUB_OUTPUT"]).read_text().splitlines())


def remote_head(env: dict[str, str], ref: str) -> str | None:
    head = EvidenceStore(env["INPUT_EVIDENCE_REMOTE"]).head(ref)
    return str(head.id) if head is not None else None


def test_action_runs_pushes_verifies_and_summarizes(github, trust_file, cli, monkeypatch):
    monkeypatch.chdir(github["GITHUB_WORKSPACE"])  # INPUT_ARGS paths are relative to the workspace
    github = {**github, "INPUT_TEAM": "payments"}
    assert main(env=github) == 0
    ref = branch_ref("web", "gh-123-1")
    out = outputs(github)
    assert out == {
        "decision": "none",
        "action": "none",
        "record-count": "5",  # genesis, wait, mark, metadata, seal
        "branch": "afdp/web/gh-123-1",
        "head": remote_head(github, ref),
        "verified": "verified",
        "pushed": "true",
        "report": str(Path(github["RUNNER_TEMP"]) / "afdp-report-web-gh-123-1.html"),
    }
    assert "<title>VERIFIED - AFDP compliance report: web/gh-123-1" in Path(out["report"]).read_text()
    summary = Path(github["GITHUB_STEP_SUMMARY"]).read_text()
    assert summary.startswith("## AFDP evidence: web/gh-123-1 (phase all)")
    assert "**Verify: VERIFIED**" in summary
    assert f"5 record(s) on `afdp/web/gh-123-1` at `{out['head'][:12]}` pushed to" in summary
    assert "| 2 | mark_deployment_time | ok |" in summary
    # what was pushed verifies on its own, and the deployer/commit came from GITHUB_*
    result = cli("verify", "--repo", github["INPUT_EVIDENCE_REMOTE"], "--service", "web", "--deployment", "gh-123-1", "--trust", str(trust_file), "--json")
    assert result.code == 0, result.out
    story = cli("report", "--repo", github["INPUT_EVIDENCE_REMOTE"], "--service", "web", "--deployment", "gh-123-1", "--trust", str(trust_file), "--out", str(Path(github["RUNNER_TEMP"]) / "r.json"))
    assert story.code == 0
    facts = __import__("json").loads((Path(github["RUNNER_TEMP"]) / "r.json").read_text())["deployments"][0]["deployment_facts"]
    assert facts["deployer"] == "octocat" and facts["commit"] == "0f3c2a9d1e"
    assert facts["team"] == "payments"  # the action's team input
    # the signing key written for the run is gone
    assert list(Path(github["RUNNER_TEMP"]).glob("afdp-action-*")) == []


def test_key_given_as_a_path_on_the_runner(github, keys, monkeypatch):
    monkeypatch.chdir(github["GITHUB_WORKSPACE"])
    assert main(env={**github, "INPUT_KEY": str(keys / "dev.key"), "INPUT_DEPLOYMENT": "by-path"}) == 0
    assert outputs(github)["verified"] == "verified"


def test_pre_and_post_phases_in_separate_jobs(github, tmp_path, monkeypatch):
    monkeypatch.chdir(github["GITHUB_WORKSPACE"])
    ref = branch_ref("web", "d-7")
    pre = {**github, "INPUT_DEPLOYMENT": "d-7", "INPUT_PHASE": "pre", "INPUT_EVIDENCE_REPOSITORY": str(tmp_path / "job1")}
    assert main(env=pre) == 0
    assert outputs(pre)["verified"] == "unsealed" and outputs(pre)["record-count"] == "2"
    first = remote_head(github, ref)
    assert first is not None
    Path(github["GITHUB_OUTPUT"]).write_text("")
    post = {**github, "INPUT_DEPLOYMENT": "d-7", "INPUT_PHASE": "post", "INPUT_EVIDENCE_REPOSITORY": str(tmp_path / "job2")}
    assert main(env=post) == 0
    out = outputs(post)
    assert out["verified"] == "verified" and out["record-count"] == "5"
    store = EvidenceStore(github["INPUT_EVIDENCE_REMOTE"])
    history = [str(c.id) for c in store.history(store.head(ref))]
    assert first in history  # the post job appended to what the pre job pushed


@pytest.mark.parametrize("fail_on_rollback, code", [("true", 1), ("false", 0)])
def test_rollback_decision_output_and_exit(github, monkeypatch, fail_on_rollback, code):
    monkeypatch.chdir(github["GITHUB_WORKSPACE"])
    (Path(github["GITHUB_WORKSPACE"]) / ".afdp" / "rollback.yaml").write_text(ROLLBACK_WORKFLOW)
    env = {**github, "INPUT_WORKFLOW": ".afdp/rollback.yaml", "INPUT_ENVIRONMENT": "production", "INPUT_FAIL_ON_ROLLBACK": fail_on_rollback}
    assert main(env=env) == code
    out = outputs(env)
    assert (out["decision"], out["action"], out["verified"], out["pushed"]) == ("roll_back_production", "rollback", "verified", "true")
    summary = Path(github["GITHUB_STEP_SUMMARY"]).read_text()
    assert "**Decision: rollback** (roll_back_production): decision 'roll_back_production' matched: deployment.environment == 'production'" in summary
    assert "`afdp run` exited 1." in summary


def test_verification_failure_fails_the_step(github, keys, tsa, monkeypatch):
    """Trusting the wrong key: the evidence is pushed (it is what happened), the step fails."""
    from afdp.evidence.trust import write_trust_policy

    monkeypatch.chdir(github["GITHUB_WORKSPACE"])
    wrong = Path(github["GITHUB_WORKSPACE"]) / ".afdp" / "wrong-trust.yaml"
    write_trust_policy(wrong, keys=[keys / "attacker.key.pub"], tsa_roots=[tsa.directory / "root.pem"])
    env = {**github, "INPUT_TRUST": ".afdp/wrong-trust.yaml"}
    assert main(env=env) == 1
    out = outputs(env)
    assert out["verified"] == "failed" and out["pushed"] == "true"
    summary = Path(github["GITHUB_STEP_SUMMARY"]).read_text()
    assert "**Verify: FAILED**" in summary and ": signer: " in summary


def test_keyless_without_oidc_token_stops_before_anything(github, capsys):
    env = {**github, "INPUT_SIGNER": "keyless", "INPUT_KEY": ""}
    assert main(env=env) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "::error title=AFDP::keyless signing needs the job's OIDC token, but ACTIONS_ID_TOKEN_REQUEST_URL "
        "and ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set: add 'permissions: id-token: write' to the job"
    )
    assert list(pygit2.Repository(github["INPUT_EVIDENCE_REMOTE"]).references) == []
    assert Path(github["GITHUB_OUTPUT"]).read_text() == ""
    assert Path(github["GITHUB_STEP_SUMMARY"]).read_text() == ""
    assert not (Path(github["RUNNER_TEMP"]) / "afdp-evidence").exists()
    # with the (simulated) OIDC variables present, the inputs are accepted
    with_token = {**env, "ACTIONS_ID_TOKEN_REQUEST_URL": "https://token.invalid/", "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "t"}
    assert read_inputs(with_token).signer == "keyless"


def test_diverged_remote_is_never_overwritten(github, signer, tsa, tmp_path, monkeypatch, capsys):
    """The remote already holds other evidence for this deployment: fetch refuses, nothing is pushed."""
    monkeypatch.chdir(github["GITHUB_WORKSPACE"])
    local = tmp_path / "local"
    init_repository(local)
    build_deployment(local, signer, tsa, service="web", deployment="d-9", steps=1, sealed=False)
    other = tmp_path / "other"
    init_repository(other)
    build_deployment(other, signer, tsa, service="web", deployment="d-9", steps=2)
    ref = branch_ref("web", "d-9")
    repo = pygit2.Repository(str(other))
    remote = pygit2.Repository(github["INPUT_EVIDENCE_REMOTE"])
    remote.remotes.create("src", str(other))
    remote.remotes["src"].fetch([f"{ref}:{ref}"])
    before = remote_head(github, ref)
    assert before == str(repo.references[ref].target)
    env = {**github, "INPUT_DEPLOYMENT": "d-9", "INPUT_EVIDENCE_REPOSITORY": str(local)}
    assert main(env=env) == 3
    assert "cannot fetch refs/heads/afdp/web/d-9" in capsys.readouterr().err
    assert remote_head(github, ref) == before


def test_bad_inputs(github, capsys):
    assert main(env={**github, "INPUT_WORKFLOW": ""}) == 2
    assert "inputs 'workflow' and 'service' are required" in capsys.readouterr().err
    assert main(env={**github, "INPUT_SERVICE": "../etc"}) == 2
    assert main(env={**github, "INPUT_PHASE": "during"}) == 2
    assert main(env={**github, "INPUT_TSA": ""}) == 2
    assert main(env={**github, "INPUT_KEY": ""}) == 2
    assert main(env={**github, "INPUT_KEY": "/nowhere/key.pem"}) == 2
    assert "input 'key' is neither a PEM block nor a file on the runner" in capsys.readouterr().err
    assert not (Path(github["RUNNER_TEMP"]) / "afdp-evidence").exists()
    assert main(env={**github, "INPUT_WORKFLOW": "missing.yaml"}) == 2
    assert "does not exist" in capsys.readouterr().err
    assert list(pygit2.Repository(github["INPUT_EVIDENCE_REMOTE"]).references) == []


def test_summary_shows_decision_and_impact_table(repo, signer, tsa, trust_file, github):
    """The summary over a branch with an analysis and a decision (built with the ledger)."""
    build_run_deployment(repo, signer, tsa)
    report = build_report(repo, policy=load_trust_policy(trust_file), service="api", deployment="d-42")
    inputs = read_inputs({**github, "INPUT_SERVICE": "api", "INPUT_DEPLOYMENT": "d-42"})
    summary = build_summary(inputs=inputs, outcome=None, report=report, run_exit=1, head="ab" * 20, record_count=8, pushed=True)
    assert "**Decision: rollback** (auto_rollback): response_time_p99.increase > 20ms" in summary
    # The same numbers, units and verdicts as the compliance report (afdp.audit.report.html.impact_cells).
    # (values and units are joined by a no-break space, as in the report)
    assert "| response_time_p99 | 122\u00a0ms | 162\u00a0ms | +40.1\u00a0ms | +32.9% | 1.0e-9 | degraded: significant change: p = 1.0e-9 |" in summary
    assert "| error_rate | 2.9% | 7% | +4.1% | +141.4% | 1.0e-8 | degraded:" in summary
    assert "**Verify: VERIFIED**" in summary


def test_redact_hides_credentials():
    assert redact("push to https://x-access-token:ghs_SECRET@github.com/org/ev.git failed") == (
        "push to https://***@github.com/org/ev.git failed"
    )


def test_action_yml_maps_every_input_and_output():
    spec = yaml.safe_load(ACTION_YML.read_text())
    assert spec["runs"]["using"] == "composite"
    step = next(s for s in spec["runs"]["steps"] if s.get("id") == "afdp")
    assert step["run"] == "python -m afdp.audit.action"
    passed = {name.removeprefix("INPUT_").lower().replace("_", "-") for name in step["env"]}
    assert passed == set(spec["inputs"]) - {"afdp-version"}
    for name, value in step["env"].items():
        assert value == "${{ inputs." + name.removeprefix("INPUT_").lower().replace("_", "-") + " }}"
    written = {"decision", "action", "record-count", "branch", "head", "verified", "report"}
    assert {k for k in spec["outputs"]} == written
    for name, output in spec["outputs"].items():
        assert output["value"] == "${{ steps.afdp.outputs." + name + " }}"


BASELINE_WORKFLOW = """\
name: gh-action-default
version: "1"
collectors:
  prom: {type: prometheus, url: "http://127.0.0.1:9", timeout: 1s}
metrics:
  latency: {collector: prom, query: "up", unit: s}
workflow:
  pre_deployment:
    - capture_baseline: {duration: 5m, metrics: [latency]}
  deployment:
    - mark_deployment_time
  post_deployment:
    - capture_impact: {duration: 1s, metrics: [same_as_baseline]}
"""


@pytest.mark.parametrize("given", [None, "2026-12-01T10:00:00Z"])
def test_the_default_compares_the_window_before_the_deploy(github, tmp_path, monkeypatch, given):
    """Issue 10, item 7: with no phase input the action runs after the deploy, so its
    default is phase post with the deploy time (the input, or when the step starts): the
    baseline is the window that ENDS at the deploy, read back from Prometheus history,
    never a post-deploy window labelled "baseline"."""
    monkeypatch.chdir(github["GITHUB_WORKSPACE"])
    (Path(github["GITHUB_WORKSPACE"]) / ".afdp" / "deploy.yaml").write_text(BASELINE_WORKFLOW)
    env = {k: v for k, v in github.items() if k != "INPUT_PHASE"}
    if given:
        env["INPUT_DEPLOYED_AT"] = given
    before = rec.utc_now()
    inputs = read_inputs(env)
    assert inputs.phase == "post"
    deployed = rec.parse_time(inputs.deployed_at)
    if given:
        assert deployed == rec.parse_time(given)
    else:
        assert deployed >= before.replace(microsecond=0)
    main(env=env)
    store = EvidenceStore(inputs.repository)
    head = store.head(branch_ref("web", inputs.deployment))
    from afdp.evidence.ledger import decode_envelope

    baseline = None
    for commit in store.history(head):
        for path, data in store.commit_files(commit).added.items():
            if path.endswith("capture_baseline/envelope.json"):
                baseline = decode_envelope(data)["predicate"]["result"]
    assert baseline is not None
    window = baseline["window"]
    assert window["from_history"] is True
    end = rec.parse_time(window["end"])  # the baseline ends at the deploy
    if given:
        assert end == deployed
    else:  # when the action's step started (main reads its inputs again)
        assert before.replace(microsecond=0) <= end <= rec.utc_now()


def test_bad_deployed_at_input_is_a_usage_error(github):
    with pytest.raises(UsageError, match="deployed-at"):
        read_inputs({**github, "INPUT_PHASE": "post", "INPUT_DEPLOYED_AT": "yesterday"})
