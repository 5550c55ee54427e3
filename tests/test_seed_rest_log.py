"""Issue 12, the rest: ``afdp log`` shows how a run started and what ran.

The genesis record stores the trigger, ``workflow.yaml`` and ``admission-policy.yaml``
byte for byte (tests/test_run_triggers_sources.py). ``afdp log`` shows the trigger and
each stored file's name, size and SHA-256, in text and ``--json``; ``--show-source NAME``
prints the file's bytes. With ``--trust`` the branch is verified first and they are shown
as verified; without it they are marked unverified; on a branch that fails verification
``--trust`` refuses to present them as verified (exit 1), and without it the tampered
bytes are marked NOT VERIFIED.

Real parts: ``afdp run --no-prefect`` through the CLI entry point, the embedded TSA over
loopback HTTP, a real evidence repository, the auditor's trust policy; tampering with
plain pygit2 (tests/tamper.py).
"""

from __future__ import annotations

import base64
import hashlib

from tamper import read_branch, write_branch
from test_run_triggers_sources import POLICY, WORKFLOW, _run

ARGS = ("--service", "api", "--deployment", "d-1")


def _log(cli, repo, *extra):
    return cli("log", "--repo", str(repo), *ARGS, *extra)


def _recorded(cli, tmp_path, keys, tsa):
    repo, result = _run(cli, tmp_path, keys, tsa, WORKFLOW, "--trigger", "deployment_completed")
    assert result.code == 0, result.err
    return repo


def test_log_with_trust_shows_the_verified_trigger_and_sources(cli, tmp_path, keys, tsa, trust_file):
    repo = _recorded(cli, tmp_path, keys, tsa)
    text = _log(cli, repo, "--trust", str(trust_file))
    assert text.code == 0, text.out + text.err
    workflow_sha = hashlib.sha256(WORKFLOW.encode()).hexdigest()
    policy_sha = hashlib.sha256(POLICY.encode()).hexdigest()
    assert "trigger: deployment_completed\n" in text.out
    assert (
        f"source workflow: workflow.yaml, {len(WORKFLOW.encode())} bytes, sha256:{workflow_sha} "
        "(verified; afdp log --show-source workflow)"
    ) in text.out
    assert f"source admission-policy: admission-policy.yaml, {len(POLICY.encode())} bytes, sha256:{policy_sha} (verified" in text.out
    assert "Verified against the trust policy (verified)." in text.out
    as_json = _log(cli, repo, "--trust", str(trust_file), "--json").json()
    assert as_json["verified"] is True and as_json["verification"]["state"] == "verified"
    assert as_json["trigger"] == {"name": "deployment_completed", "verified": True}
    assert as_json["sources"] == [
        {"name": "workflow", "file": "workflow.yaml", "size": len(WORKFLOW.encode()), "sha256": workflow_sha,
         "stored": True, "verified": True, "note": "verified"},
        {"name": "admission-policy", "file": "admission-policy.yaml", "size": len(POLICY.encode()),
         "sha256": policy_sha, "stored": True, "verified": True, "note": "verified"},
    ]
    # The bytes, exactly as they were read when the run started (comments and all).
    shown = _log(cli, repo, "--trust", str(trust_file), "--show-source", "workflow")
    assert shown.code == 0 and shown.out == WORKFLOW and shown.err == ""
    policy = _log(cli, repo, "--trust", str(trust_file), "--show-source", "admission-policy", "--json").json()
    assert base64.b64decode(policy["content_base64"]) == POLICY.encode() and policy["verified"] is True


def test_log_without_trust_says_everything_is_unverified(cli, tmp_path, keys, tsa):
    repo = _recorded(cli, tmp_path, keys, tsa)
    text = _log(cli, repo)
    assert text.code == 0
    assert "trigger: deployment_completed [unverified]" in text.out
    assert "(not verified: pass --trust" in text.out
    assert "Not verified: pass --trust (or run 'afdp verify') for a verdict." in text.out
    as_json = _log(cli, repo, "--json").json()
    assert as_json["verified"] is False and as_json["verification"]["state"] == "not checked"
    assert as_json["trigger"]["verified"] is False
    assert all(s["verified"] is False for s in as_json["sources"])
    shown = _log(cli, repo, "--show-source", "workflow")
    assert shown.code == 0 and shown.out == WORKFLOW
    assert shown.err.startswith("afdp: warning: workflow.yaml is not verified: pass --trust")


def test_a_tampered_source_is_never_shown_as_verified(cli, tmp_path, keys, tsa, trust_file):
    repo = _recorded(cli, tmp_path, keys, tsa)
    entries = read_branch(repo, "api", "d-1")
    edited = WORKFLOW.replace("git_commit, deployer_id", "git_commit").encode()
    entries[0].files["workflow.yaml"] = edited
    write_branch(repo, entries, "api", "d-1")
    text = _log(cli, repo, "--trust", str(trust_file))
    assert text.code == 1
    assert "VERIFICATION FAILED" in text.out and "verified;" not in text.out
    assert "[unverified]" in text.out
    shown = _log(cli, repo, "--trust", str(trust_file), "--show-source", "workflow")
    assert shown.code == 1 and shown.out == ""
    assert "workflow.yaml: NOT VERIFIED" in shown.err
    # Without --trust the bytes on the branch are shown, marked as not matching the record.
    plain = _log(cli, repo, "--show-source", "workflow")
    assert plain.code == 0 and plain.out == edited.decode()
    assert "does not match the digest the genesis record names" in plain.err
    as_json = _log(cli, repo, "--json").json()
    workflow = as_json["sources"][0]
    assert workflow["verified"] is False and "does not match" in workflow["note"]


def test_show_source_of_a_branch_without_sources_is_a_usage_error(cli, repo, signer, tsa):
    from conftest import build_deployment

    build_deployment(repo, signer, tsa, deployment="d-1")
    result = _log(cli, repo, "--show-source", "workflow")
    assert result.code == 2
    assert "no stored workflow to show" in result.err and "Traceback" not in result.err
    as_json = _log(cli, repo, "--json").json()
    assert as_json["sources"] == [] and as_json["trigger"]["name"] is None
