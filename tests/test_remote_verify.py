"""``afdp verify --all``: every branch of a repository (or of a remote, fetched into a
scratch repository) checked in parallel processes, a summary table, ``--json``."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from conftest import build_deployment
from tamper import edit, with_file

from afdp.evidence.remote import push_branches
from afdp.evidence.trust import load_trust_policy
from afdp.verify.verifier import check_all


@pytest.fixture()
def fleet(repo: Path, signer, tsa) -> Path:
    """Three deployments of two services; d-2's second record is tampered with (the
    rewritten commits also lose their SSH signatures: the first failure is record 0's)."""
    build_deployment(repo, signer, tsa, service="api", deployment="d-1", steps=2)
    build_deployment(repo, signer, tsa, service="api", deployment="d-2", steps=2)
    build_deployment(repo, signer, tsa, service="web", deployment="w-1", steps=1, sealed=False)
    edit(repo, 1, lambda e: with_file(e, "envelope.json", e.files["envelope.json"].replace(b'"payload"', b'"payload" ')), deployment="d-2")
    return repo


def test_verify_all_prints_a_summary_table_and_exits_1_when_any_fails(cli, fleet, trust_file):
    result = cli("verify", "--repo", str(fleet), "--all", "--trust", str(trust_file), "--allow-unsealed")
    assert result.code == 1, result.out
    lines = result.out.splitlines()
    assert lines[0].split("\t") == ["branch", "service", "deployment", "records", "result", "first failing check"]
    rows = {line.split("\t")[0]: line.split("\t") for line in lines[1:4]}
    assert rows["afdp/api/d-1"][1:5] == ["api", "d-1", "4", "VERIFIED"] and rows["afdp/api/d-1"][5] == "-"
    assert rows["afdp/web/w-1"][4] == "UNSEALED"
    assert rows["afdp/api/d-2"][4] == "FAILED" and rows["afdp/api/d-2"][5] == "commit-signature (record 0 (genesis))"
    assert "FAILED api/d-2" in result.out  # then every failure, per branch
    assert "3 branch(es): 2 passed, 1 failed" in result.out


def test_verify_all_json_summary(cli, fleet, trust_file):
    result = cli("verify", "--repo", str(fleet), "--all", "--trust", str(trust_file), "--allow-unsealed", "--json")
    assert result.code == 1
    document = result.json()
    assert document["ok"] is False
    summary = {row["branch"]: row for row in document["summary"]}
    assert summary["afdp/api/d-1"] == {"branch": "afdp/api/d-1", "service": "api", "deployment": "d-1", "records": 4, "result": "verified", "first_failure": None}
    failed = next(b for b in document["branches"] if b["deployment"] == "d-2")
    first = {k: failed["failures"][0][k] for k in ("where", "check", "reason")}
    assert summary["afdp/api/d-2"]["result"] == "failed" and summary["afdp/api/d-2"]["first_failure"] == first
    assert any(f["check"] == "envelope" for f in failed["failures"])
    assert len(document["branches"]) == 3  # the full transcripts stay


def test_verify_all_all_good_exits_0(cli, repo, signer, tsa, trust_file):
    build_deployment(repo, signer, tsa, deployment="d-1", steps=1)
    build_deployment(repo, signer, tsa, deployment="d-2", steps=1)
    result = cli("verify", "--repo", str(repo), "--all", "--trust", str(trust_file), "--jobs", "2")
    assert result.code == 0 and "2 branch(es): 2 passed, 0 failed" in result.out


def test_parallel_and_sequential_verification_say_the_same(fleet, trust_file):
    policy = load_trust_policy(trust_file)
    parallel = check_all(fleet, policy=policy, allow_unsealed=True, jobs=2)
    sequential = check_all(fleet, policy=policy, allow_unsealed=True, jobs=1)

    def essence(reports):
        return [(r.ref, r.state, r.head, [r.envelope_sha256 for r in r.records], [(f.where, f.check, f.reason) for f in r.failures]) for r in reports]

    assert essence(parallel) == essence(sequential)
    assert [r.state for r in parallel] == ["verified", "failed", "unsealed"]


def test_verify_remote_fetches_into_a_scratch_repository(cli, repo, signer, tsa, trust_file, tmp_path):
    build_deployment(repo, signer, tsa, deployment="d-1", steps=1)
    build_deployment(repo, signer, tsa, deployment="d-2", steps=1)
    central = tmp_path / "central.git"
    assert cli("init", str(central), "--bare").code == 0
    assert push_branches(repo, str(central)).ok
    good = cli("verify", "--remote", central.as_uri(), "--all", "--trust", str(trust_file), "--json")
    assert good.code == 0, good.out
    assert good.json()["remote"] == central.as_uri() and [r["result"] for r in good.json()["summary"]] == ["verified", "verified"]
    one = cli("verify", "--remote", str(central), "--service", "api", "--deployment", "d-2", "--trust", str(trust_file))
    assert one.code == 0 and "VERIFIED api/d-2" in one.out
    # someone with write access to the central repository rewrites a record there
    edit(central, 1, lambda e: with_file(e, "timestamp-0.tsr", e.files["timestamp-0.tsr"] + b"\x00"), deployment="d-1")
    bad = cli("verify", "--remote", str(central), "--all", "--trust", str(trust_file))
    assert bad.code == 1 and "FAILED api/d-1" in bad.out and "VERIFIED api/d-2" in bad.out


def test_verify_remote_bad_input(cli, repo, trust_file, tmp_path):
    both = cli("verify", "--repo", str(repo), "--remote", str(repo), "--all", "--trust", str(trust_file))
    assert both.code == 2 and "--remote replaces --repo" in both.err
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = cli("verify", "--remote", f"http://u:pw@127.0.0.1:{port}/e.git", "--all", "--trust", str(trust_file))
    assert down.code == 3 and "cannot fetch evidence" in down.err and "pw@" not in down.err
    # a trust policy inside a local remote is refused like one inside --repo
    central = tmp_path / "central.git"
    assert cli("init", str(central), "--bare").code == 0
    inside = central / "trust.yaml"
    inside.write_bytes(trust_file.read_bytes())
    refused = cli("verify", "--remote", str(central), "--all", "--trust", str(inside))
    assert refused.code == 2


def test_verify_remote_reports_notes_refs_and_names_the_remote_when_empty(cli, repo, signer, tsa, trust_file, tmp_path):
    central = tmp_path / "central.git"
    assert cli("init", str(central), "--bare").code == 0
    empty = cli("verify", "--remote", str(central), "--all", "--trust", str(trust_file))
    assert empty.code == 2 and f"no AFDP evidence branches in {central}" in empty.err and "afdp-remote-" not in empty.err
    build_deployment(repo, signer, tsa, steps=1)
    assert push_branches(repo, str(central)).ok
    import pygit2

    server = pygit2.Repository(str(central))
    server.references.create("refs/notes/commits", server.references["refs/heads/afdp/api/d-42"].target)
    noted = cli("verify", "--remote", str(central), "--all", "--trust", str(trust_file))
    assert noted.code == 1 and "refs/notes/commits" in noted.out and "repository" in noted.out
