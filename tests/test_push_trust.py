"""``afdp push --trust``: evidence is verified before it leaves for the central remote.

Real Git throughout: ``file://`` bare remotes made by ``afdp init --bare`` and a ``git
daemon`` on loopback; the tampering is an attacker's commit appended after the seal with
plain pygit2 (AFDP's committer line copied), as someone with write access to a worker's
evidence repository would do it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pygit2
import pytest
import test_remote
from conftest import add_step, build_deployment
from tamper import read_branch

from afdp.evidence.names import branch_ref
from afdp.evidence.remote import pending_pushes, push_after_run, push_branches
from afdp.evidence.trust import load_trust_policy, write_trust_policy
from afdp.verify.gate import TrustGate

GOOD, FORGED = branch_ref("api", "d-1"), branch_ref("api", "d-2")

# the fixtures of tests/test_remote.py: a remote made by `afdp init --bare`, a git daemon serving it
remote = test_remote.remote
git_daemon = test_remote.git_daemon


def head_of(repo: Path, ref: str) -> str | None:
    found = pygit2.Repository(str(repo)).references.get(ref)
    return None if found is None else str(found.target)


def forge_after_seal(repo: Path, deployment: str) -> str:
    """Append a record to a branch (after its seal) the way an attacker would: a copy of
    an earlier record (its signature and time-stamp are genuine) committed with pygit2 on
    top of the head, AFDP's committer line copied. Returns the forged commit's id."""
    git = pygit2.Repository(str(repo))
    ref = branch_ref("api", deployment)
    seal = git.references[ref].peel(pygit2.Commit)
    entries = read_branch(repo, deployment=deployment)
    replayed = entries[-2] if len(entries) > 1 else entries[-1]  # the last step before the seal
    assert replayed.directory is not None
    index = pygit2.Index()
    index.read_tree(seal.tree)
    for name, data in replayed.files.items():
        path = f"records/000/{len(entries):06d}-decide/{name}"
        index.add(pygit2.IndexEntry(path, git.create_blob(data), pygit2.enums.FileMode.BLOB))
    sig = pygit2.Signature("AFDP", "afdp@evidence.invalid", seal.commit_time + 1, 0)
    forged = git.create_commit(None, sig, sig, "decide: ok - mark_successful\n", index.write_tree(git), [seal.id])
    git.references.create(ref, forged, force=True)
    return str(forged)


@pytest.fixture()
def fleet(repo: Path, signer, tsa) -> Path:
    """d-1 sealed and genuine; d-2 sealed, then a forged record appended after its seal."""
    build_deployment(repo, signer, tsa, deployment="d-1", steps=2)
    build_deployment(repo, signer, tsa, deployment="d-2", steps=2)
    forge_after_seal(repo, "d-2")
    return repo


def test_a_branch_forged_after_its_seal_is_refused_with_trust_and_the_remote_is_unchanged(cli, repo, remote, signer, tsa, trust_file):
    build_deployment(repo, signer, tsa, deployment="d-2", steps=2)
    url = remote.as_uri()
    assert cli("push", "--repo", str(repo), "--remote", url, "--all", "--trust", str(trust_file)).code == 0
    sealed = head_of(remote, FORGED)
    forged = forge_after_seal(repo, "d-2")
    result = cli("push", "--repo", str(repo), "--remote", url, "--branch", "afdp/api/d-2", "--trust", str(trust_file))
    assert result.code == 1, (result.out, result.err)
    line = next(line for line in result.out.splitlines() if "afdp/api/d-2" in line and "refused" in line)
    # the line names the branch, the policy, the first failing record and check, and why
    assert re.fullmatch(
        rf"\s*refused afdp/api/d-2: fails verification against {re.escape(str(trust_file))}: "
        r"(record|commit) [^:]+: [a-z0-9-]+: .+ \(and \d+ more\); not pushed, the remote is unchanged",
        line,
    ), line
    assert "1 refused (failed verification): afdp/api/d-2" in result.out
    assert head_of(remote, FORGED) == sealed  # the forged commit never reached the remote
    assert not pygit2.Repository(str(remote)).odb.exists(forged)  # not even its objects
    # the same push without --trust sends it (documented): which is what --trust is for
    unchecked = cli("push", "--repo", str(repo), "--remote", url, "--branch", "afdp/api/d-2")
    assert unchecked.code == 0 and "(unverified)" in unchecked.out
    assert head_of(remote, FORGED) == forged


def test_a_good_branch_is_verified_at_the_head_sent_then_pushed(cli, repo, remote, signer, tsa, trust_file):
    build_deployment(repo, signer, tsa, deployment="d-1", steps=2, sealed=False)
    result = cli("push", "--repo", str(repo), "--remote", str(remote), "--all", "--trust", str(trust_file), "--json")
    assert result.code == 0, result.err
    report = result.json()["remotes"][0]
    [branch] = report["branches"]
    # a deployment in progress is pushed phase by phase: unsealed, every check passed
    assert (branch["outcome"], branch["verification"], branch["verified_head"]) == ("created", "unsealed", head_of(repo, GOOD))
    assert report["trust_policy"] == str(trust_file) and report["refused"] == []
    from afdp.evidence.ledger import seal

    seal(repo, service="api", deployment="d-1", signer=signer, tsa_urls=[tsa.url])
    human = cli("push", "--repo", str(repo), "--remote", str(remote), "--all", "--trust", str(trust_file))
    assert human.code == 0 and "pushed afdp/api/d-1: fast-forward from" in human.out and "(verified)" in human.out
    assert head_of(remote, GOOD) == head_of(repo, GOOD)
    # nothing left to send: not verified again, and it says so
    again = cli("push", "--repo", str(repo), "--remote", str(remote), "--all", "--trust", str(trust_file), "--json")
    [settled] = again.json()["remotes"][0]["branches"]
    assert again.code == 0 and (settled["outcome"], settled["verification"]) == ("up-to-date", "unchecked")


def test_check_0_of_the_evidence_repository_refuses_the_push(cli, repo, remote, signer, tsa, trust_file):
    """A git note in the evidence repository (git log would show text verification never
    read) fails every branch in afdp verify; the push gate sees the evidence repository's
    refs, not its scratch repository's."""
    build_deployment(repo, signer, tsa, deployment="d-1", steps=1)
    subprocess.run(["git", "-C", str(repo), "notes", "add", "-m", "approved by the CISO", GOOD], check=True, capture_output=True)
    result = cli("push", "--repo", str(repo), "--remote", str(remote), "--all", "--trust", str(trust_file), "--json")
    assert result.code == 1, (result.out, result.err)
    [branch] = result.json()["remotes"][0]["branches"]
    assert branch["outcome"] == "refused" and branch["failure"]["check"] == "repository"
    assert "refs/notes/" in branch["failure"]["reason"] and head_of(remote, GOOD) is None


def test_a_mixed_set_pushes_the_good_refuses_the_forged_and_json_says_why(cli, fleet, remote, trust_file):
    result = cli("push", "--repo", str(fleet), "--remote", str(remote), "--all", "--trust", str(trust_file), "--json")
    assert result.code == 1, (result.out, result.err)
    document = result.json()
    assert document["ok"] is False
    report = document["remotes"][0]
    outcomes = {b["ref"]: (b["outcome"], b["verification"], b["ok"]) for b in report["branches"]}
    assert outcomes == {GOOD: ("created", "verified", True), FORGED: ("refused", "failed", False)}
    [refused] = report["refused"]
    assert refused["ref"] == FORGED and refused["outcome"] == "refused"
    assert refused["head"] == head_of(fleet, FORGED) and refused["failure_count"] >= 1
    assert set(refused["failure"]) == {"where", "check", "reason"} and refused["failure"]["where"].startswith(("record ", "commit "))
    assert head_of(remote, GOOD) == head_of(fleet, GOOD)
    assert head_of(remote, FORGED) is None


def test_without_trust_every_branch_is_pushed_and_says_it_was_not_verified(cli, fleet, remote):
    """Documented choice (docs/service.md): like ``afdp find`` without --trust, push then
    verifies nothing and says so on every branch; ``afdp verify --remote`` fails the
    forged branch on the remote."""
    result = cli("push", "--repo", str(fleet), "--remote", str(remote), "--all", "--json")
    assert result.code == 0, result.err
    report = result.json()["remotes"][0]
    assert report["trust_policy"] is None and report["refused"] == []
    assert {b["verification"] for b in report["branches"]} == {"unchecked"}
    human = cli("push", "--repo", str(fleet), "--remote", str(remote), "--all")
    assert human.code == 0 and "unverified" not in human.out  # up-to-date: nothing was sent
    assert head_of(remote, FORGED) == head_of(fleet, FORGED)


def test_without_trust_the_human_output_names_what_went_unverified(cli, fleet, remote):
    result = cli("push", "--repo", str(fleet), "--remote", str(remote), "--all")
    assert result.code == 0, result.err
    assert "created afdp/api/d-2: new branch on the remote (unverified)" in result.out
    assert "2 branch(es) pushed unverified: pass --trust POLICY" in result.out


def test_a_remote_ahead_with_a_forged_record_is_remote_failed_and_never_overwritten(cli, repo, remote, signer, tsa, trust_file, tmp_path):
    build_deployment(repo, signer, tsa, deployment="d-2", steps=2)
    assert push_branches(repo, str(remote)).ok
    sealed = head_of(repo, FORGED)
    # the attacker's copy: the forged record appended, pushed as a fast-forward
    attacker = tmp_path / "attacker"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(remote), str(attacker)], check=True)
    forged = forge_after_seal(attacker, "d-2")
    subprocess.run(["git", "--git-dir", str(attacker), "push", "--quiet", str(remote), f"{FORGED}:{FORGED}"], check=True)
    result = cli("push", "--repo", str(repo), "--remote", str(remote), "--all", "--trust", str(trust_file), "--json")
    assert result.code == 1, (result.out, result.err)
    [branch] = result.json()["remotes"][0]["branches"]
    assert (branch["outcome"], branch["verification"], branch["verified_head"]) == ("remote-failed", "failed", forged)
    assert "fails verification" in branch["detail"] and "never overwritten" in branch["detail"]
    assert head_of(remote, FORGED) == forged and head_of(repo, FORGED) == sealed  # nothing moved either way
    # without --trust it is only 'behind' (nothing to push), as before
    unchecked = push_branches(repo, str(remote))
    assert unchecked.branches[0].outcome == "behind" and unchecked.ok


def test_a_diverged_remote_stays_refused_with_trust(cli, repo, remote, signer, tsa, trust_file, tmp_path):
    build_deployment(repo, signer, tsa, deployment="d-2", steps=1, sealed=False)
    assert push_branches(repo, str(remote)).ok
    attacker = tmp_path / "attacker"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(remote), str(attacker)], check=True)
    forged = forge_after_seal(attacker, "d-2")  # on the remote: a forged record after the last genuine one
    subprocess.run(["git", "--git-dir", str(attacker), "push", "--quiet", str(remote), f"{FORGED}:{FORGED}"], check=True)
    add_step(repo, signer, tsa, "capture_impact", {"p99_ms": 130}, deployment="d-2")  # the genuine next record
    result = cli("push", "--repo", str(repo), "--remote", str(remote), "--all", "--trust", str(trust_file), "--json")
    assert result.code == 1, (result.out, result.err)
    [branch] = result.json()["remotes"][0]["branches"]
    assert branch["outcome"] == "diverged" and (branch["local_only"], branch["remote_only"]) == (1, 1)
    assert head_of(remote, FORGED) == forged  # never overwritten, whichever side is genuine


def test_over_git_daemon_the_forged_branch_is_refused_and_the_good_one_pushed(fleet, remote, git_daemon, trust_file):
    with TrustGate(load_trust_policy(trust_file)) as gate:
        report = push_branches(fleet, git_daemon, gate=gate)
    outcomes = {b.ref: b.outcome for b in report.branches}
    assert outcomes == {GOOD: "created", FORGED: "refused"} and report.exit_code == 1
    assert head_of(remote, GOOD) == head_of(fleet, GOOD) and head_of(remote, FORGED) is None


def test_pending_with_trust_refuses_a_queued_branch_that_was_forged_meanwhile(cli, fleet, tmp_path, trust_file):
    later = tmp_path / "later.git"
    for ref in (GOOD, FORGED):
        assert push_after_run(fleet, str(later), ref).queued is not None  # no remote yet: queued
    assert cli("init", str(later), "--bare").code == 0
    result = cli("push", "--repo", str(fleet), "--pending", "--trust", str(trust_file), "--json")
    assert result.code == 1, (result.out, result.err)
    outcomes = {b["ref"]: b["outcome"] for b in result.json()["remotes"][0]["branches"]}
    assert outcomes == {GOOD: "created", FORGED: "refused"}
    assert [p.ref for p in pending_pushes(fleet)] == [FORGED]  # still queued, not sent
    assert head_of(later, FORGED) is None


def test_a_run_push_refused_by_the_gate_removes_the_branch_from_the_queue(cli, fleet, tmp_path, trust_file):
    """Queued while the remote was unreachable, forged meanwhile: the next run's push
    with the policy refuses it and takes it out of the queue, so a timer's plain
    ``afdp push --pending`` cannot send it."""
    later = tmp_path / "later.git"
    assert push_after_run(fleet, str(later), FORGED).queued is not None  # unreachable: queued
    assert cli("init", str(later), "--bare").code == 0
    with TrustGate(load_trust_policy(trust_file)) as gate:
        refused = push_after_run(fleet, str(later), FORGED, gate=gate)
    assert refused.queued is None and refused.warning is not None and "not queued" in refused.warning
    assert pending_pushes(fleet) == [] and head_of(later, FORGED) is None
    assert cli("push", "--repo", str(fleet), "--pending").out.strip() == "nothing queued to push"


def test_the_gate_verifies_the_head_it_is_given_not_where_the_ref_points(fleet, trust_file):
    good_head = head_of(fleet, FORGED)
    assert good_head is not None
    seal_commit = str(pygit2.Repository(str(fleet)).get(good_head).parents[0].id)
    with TrustGate(load_trust_policy(trust_file)) as gate:
        git_dir = Path(pygit2.Repository(str(fleet)).path)
        assert gate(git_dir, FORGED, seal_commit).state == "verified"  # the chain up to the seal
        failed = gate(git_dir, FORGED, good_head)
    assert failed.state == "failed" and failed.first_failure is not None
    assert head_of(fleet, FORGED) == good_head  # the evidence repository was not touched


def test_a_trust_policy_that_cannot_be_read_is_a_usage_error_before_anything_is_pushed(cli, fleet, remote, tmp_path, trust_file):
    missing = cli("push", "--repo", str(fleet), "--remote", str(remote), "--all", "--trust", str(tmp_path / "none.yaml"))
    assert missing.code == 2 and missing.err.count("\n") == 1
    inside = fleet / "trust.yaml"
    inside.write_bytes(trust_file.read_bytes())  # a policy the evidence could carry
    refused = cli("push", "--repo", str(fleet), "--remote", str(remote), "--all", "--trust", str(inside))
    assert refused.code == 2 and "trust policy" in refused.err
    assert head_of(remote, GOOD) is None


# -- the run path: afdp run --trust T --push URL verifies with T first ---------------

SHIP = """\
name: ship
version: "1"
workflow:
  deployment:
    - mark_deployment_time
  post_deployment:
    - decisions
decisions:
  ship_it:
    condition: deployment.service == 'api'
    action: mark_successful
"""


@pytest.fixture()
def run_ship(tmp_path: Path, cli, repo: Path, keys: Path, tsa):
    workflow = tmp_path / "ship.yaml"
    workflow.write_text(SHIP)
    admission = tmp_path / "admission.yaml"
    admission.write_text("version: 1\nname: test-permissive\nallowed_collector_types: [prometheus, scrape, sql, rest]\n")

    def run(deployment: str, *extra: str):
        return cli(
            "run", str(workflow), "--policy", str(admission), "--service", "api", "--deployment", deployment,
            "--repo", str(repo), "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--fast", "--no-prefect", *extra,
        )  # fmt: skip

    return run


def test_run_with_trust_verifies_its_branch_before_pushing_it(run_ship, repo, remote, trust_file):
    ran = run_ship("d-1", "--trust", str(trust_file), "--push", remote.as_uri(), "--json")
    assert ran.code == 0, ran.err
    push = ran.json()["push"]
    [branch] = push["report"]["branches"]
    assert (branch["outcome"], branch["verification"], branch["verified_head"]) == ("created", "verified", head_of(repo, GOOD))
    assert push["report"]["trust_policy"] == str(trust_file)
    human = run_ship("d-2", "--trust", str(trust_file), "--push", remote.as_uri())
    assert human.code == 0 and "pushed: afdp/api/d-2 created on " in human.out and human.out.rstrip().endswith("(verified)")
    unchecked = run_ship("d-3", "--push", remote.as_uri())  # no policy: pushed, and it says so
    assert unchecked.code == 0 and unchecked.out.rstrip().endswith("(unverified)")


def test_run_whose_branch_fails_the_trust_policy_keeps_it_local_unqueued(run_ship, repo, remote, keys, tsa, tmp_path):
    """The policy trusts another signer than the run's key: the branch fails verification,
    so it is not pushed and not queued (a timer's 'afdp push --pending' would send it);
    the run itself keeps its exit code."""
    other = tmp_path / "other-team" / "trust.yaml"
    other.parent.mkdir()
    write_trust_policy(other, keys=[keys / "attacker.key.pub"], tsa_roots=[tsa.directory / "root.pem"])
    ran = run_ship("d-1", "--trust", str(other), "--push", remote.as_uri(), "--json")
    assert ran.code == 0, ran.err
    push = ran.json()["push"]
    assert push["ok"] is False and push["queued"] is None
    assert push["report"]["branches"][0]["outcome"] == "refused"
    assert "afdp: warning: evidence kept locally, not pushed and not queued: afdp/api/d-1 fails verification" in ran.err
    assert pending_pushes(repo) == [] and head_of(remote, GOOD) is None
    assert head_of(repo, GOOD) is not None  # the evidence is kept
