"""Triggers are real, and what ran is stored in the evidence (issue 12).

Real parts: ``afdp run`` through the CLI entry point (``--no-prefect``), the embedded
TSA over loopback HTTP, a real evidence repository, ``afdp verify`` with an auditor's
trust policy; the tampering is done with plain pygit2 (tests/tamper.py), as someone
bypassing AFDP would.

* ``afdp run --trigger NAME`` (default ``manual_trigger``) records the trigger in the
  genesis record; a trigger the workflow's ``triggers:`` does not list is refused (exit 2)
  before anything is written; a workflow without ``triggers:`` takes any.
* The genesis record carries ``workflow.yaml`` and ``admission-policy.yaml``, byte for
  byte as read, with their SHA-256 in its metadata; ``afdp verify`` checks them
  (check 5 the bytes, check ``sources`` the metadata), and fails on a tampered copy.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from tamper import read_branch, write_branch

from afdp.evidence import records as rec
from afdp.evidence.ledger import append_record, decode_envelope, seal
from afdp.evidence.signing import load_signer
from afdp.evidence.store import EvidenceStore

WORKFLOW = """\
# the workflow as the team wrote it (comments and all: stored byte for byte)
name: triggered
version: "1"
triggers: [deployment_completed]
workflow:
  deployment:
    - mark_deployment_time
    - capture_deployment_metadata: [git_commit, deployer_id]
"""
NO_TRIGGERS = WORKFLOW.replace("triggers: [deployment_completed]\n", "")
POLICY = "version: 1\nname: team-policy   # ours\nallowed_collector_types: [prometheus, scrape, sql, rest]\n"


def _run(cli, tmp_path, keys, tsa, text: str, *extra: str, deployment: str = "d-1"):
    workflow = tmp_path / "wf.yaml"
    workflow.write_text(text, encoding="utf-8")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    repo = tmp_path / "evidence"
    if not repo.exists():
        assert cli("init", str(repo)).code == 0
    result = cli(
        "run", str(workflow), "--service", "api", "--deployment", deployment, "--commit", "4f2a9c1",
        "--deployer", "alice", "--repo", str(repo), "--key", str(keys / "dev.key"), "--tsa", tsa.url,
        "--policy", str(policy), "--no-prefect", "--json", *extra,
    )
    return repo, result


def _genesis(repo: Path, deployment: str = "d-1") -> tuple[dict, dict[str, bytes]]:
    entries = read_branch(repo, "api", deployment)
    files = entries[0].files
    return decode_envelope(files[rec.ENVELOPE_FILE])["predicate"], files


def test_trigger_is_recorded_and_the_workflow_and_policy_are_stored(cli, tmp_path, keys, tsa, trust_file):
    repo, result = _run(cli, tmp_path, keys, tsa, WORKFLOW, "--trigger", "deployment_completed")
    assert result.code == 0, result.err
    predicate, files = _genesis(repo)
    metadata = predicate["result"]["metadata"]
    assert metadata["trigger"] == "deployment_completed"
    # Exactly the bytes that were read, and the digests in the signed record match them.
    assert files["workflow.yaml"] == WORKFLOW.encode()
    assert files["admission-policy.yaml"] == POLICY.encode()
    assert metadata["workflow"]["file"] == {
        "path": "workflow.yaml",
        "sha256": hashlib.sha256(WORKFLOW.encode()).hexdigest(),
        "size": len(WORKFLOW.encode()),
    }
    assert metadata["admission_policy"]["name"] == "team-policy"
    assert metadata["admission_policy"]["file"]["sha256"] == hashlib.sha256(POLICY.encode()).hexdigest()
    assert metadata["workflow"]["sha256"] == predicate["workflow"]["sha256"]
    verified = cli("verify", "--repo", str(repo), "--service", "api", "--deployment", "d-1", "--trust", str(trust_file))
    assert verified.code == 0, verified.out
    # The audit report says what started the run, what ran and what admitted it.
    out = tmp_path / "report.html"
    report = cli("report", "--repo", str(repo), "--service", "api", "--deployment", "d-1", "--trust", str(trust_file), "--out", str(out))
    assert report.code == 0, report.out + report.err
    html = out.read_text(encoding="utf-8")
    assert "started by (trigger)" in html and "deployment_completed" in html
    assert f"triggered (workflow.yaml, sha256 {hashlib.sha256(WORKFLOW.encode()).hexdigest()[:16]}" in html
    assert "team-policy (admission-policy.yaml" in html
    # Plain git shows the workflow that ran.
    store = EvidenceStore(repo)
    head = store.head("refs/heads/afdp/api/d-1")
    tree = store.history(head)[0].tree
    assert store.read_blob(tree, f"{rec.record_dir(0, 'genesis')}/workflow.yaml") == WORKFLOW.encode()


def test_cli_default_trigger_is_manual_and_a_trigger_not_listed_is_refused(cli, tmp_path, keys, tsa):
    repo, result = _run(cli, tmp_path, keys, tsa, WORKFLOW)  # default: manual_trigger
    assert result.code == 2, result.out
    assert "not started by manual_trigger" in result.err
    assert "--trigger deployment_completed" in result.err
    assert "Traceback" not in result.err
    assert EvidenceStore(repo).head("refs/heads/afdp/api/d-1") is None  # nothing written
    unknown = _run(cli, tmp_path, keys, tsa, WORKFLOW, "--trigger", "cron")[1]
    assert unknown.code == 2 and "cron" in unknown.err


def test_a_workflow_without_triggers_takes_any_and_records_it(cli, tmp_path, keys, tsa):
    repo, result = _run(cli, tmp_path, keys, tsa, NO_TRIGGERS)
    assert result.code == 0, result.err
    assert _genesis(repo)[0]["result"]["metadata"]["trigger"] == "manual_trigger"


def test_tampering_with_the_stored_workflow_fails_verify(cli, tmp_path, keys, tsa, trust_file):
    repo, result = _run(cli, tmp_path, keys, tsa, WORKFLOW, "--trigger", "deployment_completed")
    assert result.code == 0, result.err
    entries = read_branch(repo, "api", "d-1")
    edited = WORKFLOW.replace("git_commit, deployer_id", "git_commit").encode()
    entries[0].files["workflow.yaml"] = edited
    write_branch(repo, entries, "api", "d-1")
    verified = cli(
        "verify", "--repo", str(repo), "--service", "api", "--deployment", "d-1", "--trust", str(trust_file), "--json"
    )
    assert verified.code == 1, verified.out
    assert "artifact 'workflow.yaml' does not match its recorded digest" in verified.out, verified.out


def test_sources_check_fails_a_signed_genesis_whose_metadata_names_other_bytes(tmp_path, keys, tsa, trust_file, cli):
    """A genesis record signed by a trusted key (an insider, a buggy writer) whose stored
    workflow is not the one its metadata names: check 5 passes (the artifact matches its
    own listing), check ``sources`` does not."""
    from afdp.evidence.store import init_repository

    repo = tmp_path / "evidence"
    init_repository(repo)
    signer = load_signer(str(keys / "dev.key"))
    stored = b"name: not-what-ran\n"
    metadata = {
        "workflow": {
            "name": "x",
            "sha256": "a" * 64,
            "file": {"path": "workflow.yaml", "sha256": hashlib.sha256(b"name: what-ran\n").hexdigest(), "size": 15},
        }
    }
    draft = rec.RecordDraft(kind=rec.KIND_STEP, step="one", result={"ok": True}, workflow_digest="a" * 64)
    append_record(
        repo, service="api", deployment="d-9", draft=draft, signer=signer, tsa_urls=[tsa.url],
        genesis_metadata=metadata, genesis_attachments={"workflow.yaml": stored},
    )
    seal(repo, service="api", deployment="d-9", signer=signer, tsa_urls=[tsa.url], workflow_digest="a" * 64)
    verified = cli(
        "verify", "--repo", str(repo), "--service", "api", "--deployment", "d-9", "--trust", str(trust_file), "--json"
    )
    assert verified.code == 1, verified.out
    assert "sources" in verified.out and "does not match the digest recorded in metadata.workflow.file" in verified.out


@pytest.mark.parametrize("trigger", ["deployment_completed"])
def test_the_action_passes_deployment_completed(trigger):
    from afdp.audit.action import _run_command

    class Inputs:
        workflow = Path("wf.yaml")
        service, deployment, repository = "api", "d-1", Path("repo")
        tsa_urls, phase, deployed_at = ("http://tsa",), "all", None
        commit = deployer = environment = version = team = git_branch = None
        args = ("--trigger", "manual_trigger")

    command = _run_command(Inputs(), "key.pem", None)  # type: ignore[arg-type]
    assert command[command.index("--trigger") + 1] == trigger
    # The user's own args come last: click keeps the last value given.
    assert command[-2:] == ["--trigger", "manual_trigger"]
