"""The central evidence remote with real Git: file:// bare remotes made by ``afdp init
--bare``, a ``git daemon`` on loopback for a network URL, two writers racing through
git's receive-pack, an attacker's force-push, an unreachable remote and its queue."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pygit2
import pytest
from conftest import add_step, build_deployment

from afdp.evidence.ledger import seal
from afdp.evidence.names import branch_ref
from afdp.evidence.remote import (
    RECEIVING_CONFIG,
    pending_pushes,
    push_after_run,
    push_branches,
)
from afdp.evidence.store import init_repository
from afdp.evidence.trust import load_trust_policy
from afdp.verify.verifier import check_branch

REF = branch_ref("api", "d-42")


def git(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=check)


def head_of(repo: Path, ref: str = REF) -> str | None:
    found = pygit2.Repository(str(repo)).references.get(ref)
    return None if found is None else str(found.target)


def history(repo: Path, ref: str = REF) -> list[str]:
    return git("--git-dir", str(pygit2.Repository(str(repo)).path), "rev-list", "--first-parent", ref).stdout.split()


@pytest.fixture()
def remote(tmp_path: Path, cli) -> Path:
    path = tmp_path / "central.git"
    made = cli("init", str(path), "--bare", "--json")
    assert made.code == 0, made.err
    return path


def clone_of(remote: Path, path: Path) -> Path:
    """A second writer's evidence repository: a clone of the remote's evidence branches."""
    init_repository(path)
    git("-C", str(path), "fetch", "--quiet", str(remote), "refs/heads/afdp/*:refs/heads/afdp/*")
    return path


def test_init_bare_sets_the_receiving_config(remote):
    config = pygit2.Repository(str(remote)).config
    for name, value in RECEIVING_CONFIG.items():
        assert config[name] == value, name


def test_push_creates_then_is_up_to_date_then_fast_forwards(cli, repo, remote, signer, tsa, trust_file):
    build_deployment(repo, signer, tsa, steps=2, sealed=False)
    url = remote.as_uri()  # file://
    first = cli("push", "--repo", str(repo), "--remote", url, "--all", "--json")
    assert first.code == 0, first.err
    branch = first.json()["remotes"][0]["branches"][0]
    assert (branch["outcome"], branch["remote_before"], branch["remote_after"]) == ("created", None, head_of(repo))
    again = cli("push", "--repo", str(repo), "--remote", url, "--branch", "afdp/api/d-42")
    assert again.code == 0 and "up-to-date" in again.out
    seal(repo, service="api", deployment="d-42", signer=signer, tsa_urls=[tsa.url])
    forward = push_branches(repo, str(remote), refs=[REF])
    assert forward.branches[0].outcome == "pushed" and forward.ok
    assert head_of(remote) == head_of(repo)
    assert history(remote) == history(repo)  # the same linear chain, every record
    report = check_branch(remote, service="api", deployment="d-42", policy=load_trust_policy(trust_file))
    assert report.ok and report.sealed


def test_remote_ahead_on_the_same_chain_is_behind_and_nothing_moves(cli, repo, remote, signer, tsa, tmp_path):
    build_deployment(repo, signer, tsa, steps=1, sealed=False)
    assert push_branches(repo, str(remote)).ok
    late = clone_of(remote, tmp_path / "late")  # a writer that saw the branch at this point
    add_step(repo, signer, tsa, "capture_impact", {"p99_ms": 130})
    assert push_branches(repo, str(remote)).branches[0].outcome == "pushed"
    before = head_of(late)
    result = cli("push", "--repo", str(late), "--remote", str(remote), "--all", "--json")
    assert result.code == 0, result.err
    branch = result.json()["remotes"][0]["branches"][0]
    assert branch["outcome"] == "behind" and "1 record(s) ahead" in branch["detail"]
    assert head_of(late) == before  # the local branch is left alone
    assert head_of(remote) == head_of(repo)  # and the remote keeps its longer chain


def test_diverged_branch_is_refused_reported_and_the_remote_is_unchanged(cli, repo, remote, signer, tsa, tmp_path):
    build_deployment(repo, signer, tsa, steps=1, sealed=False)
    assert push_branches(repo, str(remote)).ok
    other = clone_of(remote, tmp_path / "other")
    base = head_of(repo)
    add_step(repo, signer, tsa, "capture_impact", {"p99_ms": 130})
    add_step(other, signer, tsa, "capture_impact", {"p99_ms": 999})  # another story from the same base
    assert push_branches(repo, str(remote)).ok
    winner = head_of(remote)
    result = cli("push", "--repo", str(other), "--remote", str(remote), "--all", "--json")
    assert result.code == 1, (result.out, result.err)
    branch = result.json()["remotes"][0]["branches"][0]
    assert branch["outcome"] == "diverged" and branch["ok"] is False
    assert (branch["common_ancestor"], branch["local_only"], branch["remote_only"]) == (base, 1, 1)
    assert "refused" in branch["detail"]
    assert head_of(remote) == winner  # never overwritten
    human = cli("push", "--repo", str(other), "--remote", str(remote), "--all")
    assert human.code == 1 and "diverged" in human.out


def test_two_writers_race_one_wins_the_other_retries_and_the_chain_stays_linear(repo, remote, signer, tsa, tmp_path, trust_file):
    """Both writers list the remote at the same head; a pre-receive hook holds both pushes
    until both are in flight, so git's receive-pack compare-and-swap decides: the loser's
    update is rejected, it lists and fetches again and settles on the same chain."""
    build_deployment(repo, signer, tsa, steps=1, sealed=False)
    assert push_branches(repo, str(remote)).ok
    longer = clone_of(remote, tmp_path / "longer")
    add_step(repo, signer, tsa, "capture_impact", {"p99_ms": 130})  # writer A: one more record
    git("-C", str(longer), "fetch", "--quiet", str(repo), f"{REF}:{REF}")  # writer B continues A's chain
    add_step(longer, signer, tsa, "analyze_differences", {"verdict": "ok"})
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\ncat >/dev/null\nsleep 1\n")
    hook.chmod(0o755)
    results = {}

    def push(name: str, path: Path) -> None:
        results[name] = push_branches(path, str(remote))

    threads = [threading.Thread(target=push, args=(n, p)) for n, p in (("a", repo), ("b", longer))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    a, b = results["a"].branches[0], results["b"].branches[0]
    assert a.ok and b.ok, (a, b)
    assert head_of(remote) == head_of(longer)  # whoever landed first, the longer chain is there
    assert a.outcome in ("pushed", "behind") and b.outcome == "pushed"
    # the loser of the compare-and-swap took another round (or A found B already ahead)
    assert b.attempts > 1 or a.outcome == "behind"
    assert history(remote) == history(longer)
    hook.unlink()
    report = check_branch(remote, service="api", deployment="d-42", policy=load_trust_policy(trust_file), allow_unsealed=True)
    assert report.ok, report.failures


def test_force_push_and_delete_by_another_client_are_refused_by_the_remote(repo, remote, signer, tsa, tmp_path):
    build_deployment(repo, signer, tsa, steps=2, sealed=False)
    assert push_branches(repo, str(remote)).ok
    kept = head_of(remote)
    attacker = tmp_path / "attacker"
    git("clone", "--quiet", "--bare", str(remote), str(attacker))
    git("--git-dir", str(attacker), "update-ref", REF, f"{REF}~1")  # drop the last record
    forced = git("--git-dir", str(attacker), "push", "--force", str(remote), REF, check=False)
    assert forced.returncode != 0 and "non-fast-forward" in forced.stderr
    deleted = git("--git-dir", str(attacker), "push", str(remote), f":{REF}", check=False)
    assert deleted.returncode != 0 and "deletion prohibited" in deleted.stderr
    assert head_of(remote) == kept
    # the negative: without the receiving config, the same force-push rewrites history
    plain = tmp_path / "plain.git"
    pygit2.init_repository(str(plain), bare=True)
    assert push_branches(repo, str(plain)).ok
    assert git("--git-dir", str(attacker), "push", "--force", str(plain), REF, check=False).returncode == 0
    assert head_of(plain) != kept


def test_unreachable_remote_keeps_the_evidence_queues_it_and_a_later_push_sends_it(cli, repo, signer, tsa, tmp_path):
    build_deployment(repo, signer, tsa, steps=1)
    later = tmp_path / "later.git"
    done = push_after_run(repo, str(later), REF)  # no repository there yet
    assert done.report is None and done.queued is not None and done.queued.exists()
    assert "evidence kept locally" in done.warning and "afdp push --repo" in done.warning
    [queued] = pending_pushes(repo)
    assert (queued.remote, queued.ref, queued.head) == (str(later), REF, head_of(repo))
    assert cli("push", "--repo", str(repo), "--pending").code == 3  # still unreachable: kept queued
    assert len(pending_pushes(repo)) == 1
    assert cli("init", str(later), "--bare").code == 0
    sent = cli("push", "--repo", str(repo), "--pending", "--json")
    assert sent.code == 0, sent.err
    assert sent.json()["remotes"][0]["branches"][0]["outcome"] == "created"
    assert head_of(later) == head_of(repo)
    assert pending_pushes(repo) == []
    assert cli("push", "--repo", str(repo), "--pending").out.strip() == "nothing queued to push"


def test_credentials_in_the_url_are_never_printed_or_queued(cli, repo, signer, tsa):
    build_deployment(repo, signer, tsa, steps=1)
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://deployer:s3cret-token@127.0.0.1:{port}/evidence.git"
    done = push_after_run(repo, url, REF)
    assert done.queued is not None and "s3cret" not in done.warning
    assert "s3cret" not in done.queued.read_text()
    assert json.loads(done.queued.read_text())["remote"] == f"http://deployer@127.0.0.1:{port}/evidence.git"
    result = cli("push", "--repo", str(repo), "--remote", url, "--all")
    assert result.code == 3 and "s3cret" not in result.err and "***@" in result.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give --branch"),
        (("--all", "--pending"), "give --branch"),
        (("--all",), "--remote URL is required"),
        (("--remote", "x", "--branch", "api/../x"), "is not an AFDP evidence branch"),
        (("--remote", "ext::sh -c touch% /tmp/pwned", "--all"), "transport is not allowed"),
        (("--remote", "-upload-pack=x", "--all"), "is not a Git remote"),
    ],
)
def test_push_bad_input_is_one_line_and_exit_2(cli, repo, args, message):
    result = cli("push", "--repo", str(repo), *args)
    assert result.code == 2, (result.out, result.err)
    assert message in result.err and len(result.err.strip().splitlines()) == 1


def test_push_of_an_unknown_branch_or_empty_repository_is_a_usage_error(cli, repo, remote):
    assert cli("push", "--repo", str(repo), "--remote", str(remote), "--all").code == 2
    missing = cli("push", "--repo", str(repo), "--remote", str(remote), "--branch", "afdp/api/nope")
    assert missing.code == 2 and "no evidence branch" in missing.err


@pytest.fixture()
def git_daemon(tmp_path: Path, remote: Path):
    """``git daemon`` on a loopback port serving the hardened remote (push enabled)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    # Ready when it accepts a connection (a loaded machine may take a while to start it).
    # The port was free a moment before: if another process took it meanwhile, the daemon
    # exits and another port is tried.
    for _attempt in range(3):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        process = subprocess.Popen(
            ["git", "daemon", "--reuseaddr", "--export-all", "--enable=receive-pack", "--listen=127.0.0.1",
             f"--port={port}", f"--base-path={remote.parent}", str(remote.parent)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            with socket.socket() as attempt:
                if attempt.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        if process.poll() is None and time.monotonic() < deadline:
            break
        process.kill()
        process.wait(10)
    else:
        pytest.fail(f"git daemon did not listen on a loopback port (last: {port})")
    yield f"git://127.0.0.1:{port}/{remote.name}"
    process.terminate()
    process.wait(10)


def test_network_remote_over_git_daemon(repo, remote, git_daemon, signer, tsa, tmp_path):
    build_deployment(repo, signer, tsa, steps=1, sealed=False)
    created = push_branches(repo, git_daemon)
    assert created.branches[0].outcome == "created" and head_of(remote) == head_of(repo)
    other = clone_of(remote, tmp_path / "other")
    add_step(repo, signer, tsa, "capture_impact", {"p99_ms": 130})
    add_step(other, signer, tsa, "capture_impact", {"p99_ms": 999})
    assert push_branches(repo, git_daemon).branches[0].outcome == "pushed"
    diverged = push_branches(other, git_daemon)
    assert diverged.branches[0].outcome == "diverged" and diverged.exit_code == 1
    assert head_of(remote) == head_of(repo)
    assert os.environ.get("GIT_TERMINAL_PROMPT") is None  # the test changed nothing global


def test_a_look_alike_ref_is_never_pushed(cli, repo, remote, signer, tsa):
    build_deployment(repo, signer, tsa, steps=1)
    store = pygit2.Repository(str(repo))
    store.references.create("refs/heads/afdp/web", store.references[REF].target)  # not <service>/<deployment>
    result = cli("push", "--repo", str(repo), "--remote", str(remote), "--all", "--json")
    assert result.code == 1
    outcomes = {b["ref"]: b["outcome"] for b in result.json()["remotes"][0]["branches"]}
    assert outcomes == {"refs/heads/afdp/web": "invalid", REF: "created"}
    assert pygit2.Repository(str(remote)).references.get("refs/heads/afdp/web") is None


def test_a_remote_that_keeps_refusing_is_rejected_with_its_reason_exit_3(cli, repo, remote, signer, tsa):
    build_deployment(repo, signer, tsa, steps=1)
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\ncat >/dev/null\necho 'evidence freeze in effect' >&2\nexit 1\n")
    hook.chmod(0o755)
    result = cli("push", "--repo", str(repo), "--remote", str(remote), "--all", "--json")
    assert result.code == 3
    [branch] = result.json()["remotes"][0]["branches"]
    assert branch["outcome"] == "rejected" and branch["attempts"] == 8 and "pre-receive hook declined" in branch["detail"]
    assert head_of(remote) is None


def test_pending_for_one_remote_and_any_settling_push_clears_markers(cli, repo, signer, tsa, tmp_path):
    build_deployment(repo, signer, tsa, deployment="d-1", steps=1)
    build_deployment(repo, signer, tsa, deployment="d-2", steps=1)
    first, second = tmp_path / "first.git", tmp_path / "second.git"
    push_after_run(repo, str(first), branch_ref("api", "d-1"))
    push_after_run(repo, str(second), branch_ref("api", "d-2"))
    assert len(pending_pushes(repo)) == 2
    for path in (first, second):
        assert cli("init", str(path), "--bare").code == 0
    only = cli("push", "--repo", str(repo), "--pending", "--remote", str(first), "--json")
    assert only.code == 0 and [b["ref"] for b in only.json()["remotes"][0]["branches"]] == [branch_ref("api", "d-1")]
    assert [p.ref for p in pending_pushes(repo)] == [branch_ref("api", "d-2")]
    assert cli("push", "--repo", str(repo), "--remote", str(second), "--all").code == 0  # settles d-2 there
    assert pending_pushes(repo) == []


def test_a_remote_branch_that_points_at_a_tag_is_diverged_not_overwritten(repo, remote, signer, tsa):
    build_deployment(repo, signer, tsa, steps=1, sealed=False)
    assert push_branches(repo, str(remote)).ok
    add_step(repo, signer, tsa, "capture_impact", {"p99_ms": 130})
    git("--git-dir", str(remote), "tag", "-a", "t", "-m", "not evidence", REF)
    tag = git("--git-dir", str(remote), "rev-parse", "refs/tags/t").stdout.strip()
    pygit2.Repository(str(remote)).references.create(REF, tag, force=True)  # git itself refuses; libgit2 does not
    [branch] = push_branches(repo, str(remote)).branches
    assert branch.outcome == "diverged" and "not a commit" in branch.detail and branch.attempts == 1
    assert head_of(remote) == tag
