"""The central evidence remote over real HTTPS: ``git http-backend`` (smart HTTP) behind a
TLS server on loopback with HTTP Basic auth on pushes (the ``https_git`` fixture,
tests/https_git.py), reached by AFDP through the ``git`` command.

What is checked: push creates / fast-forwards / is up-to-date / is behind / refuses a
diverged branch / wins or retries a race; ``verify --all --remote https://``; a branch
fetched from the remote into a fresh repository re-verifies; the server's certificate is
verified (never turned off, the CA given the standard git way); wrong or missing
credentials are one line and exit 3; credentials given in the URL, by a credential
helper or by ``http.extraHeader`` never show in any output, nor on git's command line.
"""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import threading
from pathlib import Path

import pygit2
import pytest
from conftest import add_step, build_deployment
from https_git import make_certificates, serve_git_https
from infra import HTTPS_GIT_USERS

from afdp.evidence.ledger import seal
from afdp.evidence.names import branch_ref
from afdp.evidence.remote import push_after_run, push_branches
from afdp.evidence.store import init_repository
from afdp.evidence.trust import load_trust_policy
from afdp.verify.verifier import check_branch

REF = branch_ref("api", "d-42")
USER, PASSWORD = next(iter(HTTPS_GIT_USERS.items()))


def head_of(repo: Path, ref: str = REF) -> str | None:
    found = pygit2.Repository(str(repo)).references.get(ref)
    return None if found is None else str(found.target)


def history(repo: Path, ref: str = REF) -> list[str]:
    done = subprocess.run(["git", "--git-dir", pygit2.Repository(str(repo)).path, "rev-list", "--first-parent", ref],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout.split()


def git_config_env(monkeypatch: pytest.MonkeyPatch, settings: dict[str, str]) -> None:
    """Git configuration for every git this test runs, as a user's config file would give it."""
    monkeypatch.setenv("GIT_CONFIG_COUNT", str(len(settings)))
    for i, (key, value) in enumerate(settings.items()):
        monkeypatch.setenv(f"GIT_CONFIG_KEY_{i}", key)
        monkeypatch.setenv(f"GIT_CONFIG_VALUE_{i}", value)


@pytest.fixture()
def central(https_git, cli) -> Path:
    """The hardened bare repository ``afdp init --bare`` makes, served as ``central.git``."""
    path = https_git.root / "central.git"
    assert cli("init", str(path), "--bare").code == 0
    return path


@pytest.fixture()
def trusted(https_git, monkeypatch: pytest.MonkeyPatch):
    """git trusts the test CA the standard way (GIT_SSL_CAINFO); nothing else is changed."""
    monkeypatch.delenv("GIT_SSL_NO_VERIFY", raising=False)
    monkeypatch.setenv("GIT_SSL_CAINFO", str(https_git.certificates.ca))
    return https_git


def pusher(server) -> str:
    return server.url("central.git", user=USER, password=PASSWORD)


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_push_over_https_creates_is_up_to_date_fast_forwards_and_verifies(cli, repo, central, trusted, signer, tsa, trust_file, tmp_path):
    build_deployment(repo, signer, tsa, steps=2, sealed=False)
    first = cli("push", "--repo", str(repo), "--remote", pusher(trusted), "--all", "--json")
    assert first.code == 0, first.err
    [branch] = first.json()["remotes"][0]["branches"]
    assert (branch["outcome"], branch["remote_after"]) == ("created", head_of(repo))
    assert head_of(central) == head_of(repo)
    assert [r.user for r in trusted.pushes_received()] == [USER]  # Basic auth was required and given
    again = cli("push", "--repo", str(repo), "--remote", pusher(trusted), "--branch", "afdp/api/d-42")
    assert again.code == 0 and "up-to-date" in again.out
    assert len(trusted.pushes_received()) == 1  # nothing sent
    seal(repo, service="api", deployment="d-42", signer=signer, tsa_urls=[tsa.url])
    forward = push_branches(repo, pusher(trusted))
    assert forward.branches[0].outcome == "pushed" and forward.ok
    assert history(central) == history(repo)
    # the auditor's side: anonymous read over HTTPS, every branch verified
    checked = cli("verify", "--remote", trusted.url("central.git"), "--all", "--trust", str(trust_file), "--json")
    assert checked.code == 0, checked.out
    assert [r["result"] for r in checked.json()["summary"]] == ["verified"]
    # fetched by plain git into a fresh repository, the branch re-verifies there
    fresh = tmp_path / "fresh"
    init_repository(fresh)
    subprocess.run(["git", "-C", str(fresh), "fetch", "--quiet", trusted.url("central.git"), "refs/heads/afdp/*:refs/heads/afdp/*"],
                   check=True, capture_output=True)  # fmt: skip
    assert head_of(fresh) == head_of(repo)
    report = check_branch(fresh, service="api", deployment="d-42", policy=load_trust_policy(trust_file))
    assert report.ok and report.sealed
    assert cli("verify", "--repo", str(fresh), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file)).code == 0


def test_verify_all_remote_https_checks_every_branch_and_fails_a_rewritten_one(cli, repo, central, trusted, signer, tsa, trust_file):
    from tamper import edit, with_file

    build_deployment(repo, signer, tsa, deployment="d-1", steps=1)
    build_deployment(repo, signer, tsa, service="web", deployment="w-1", steps=2)
    assert push_branches(repo, pusher(trusted)).ok
    url = pusher(trusted)  # credentials in the URL: used for the read, never shown
    good = cli("verify", "--remote", url, "--all", "--trust", str(trust_file), "--json")
    assert good.code == 0, good.out
    assert {r["branch"]: r["result"] for r in good.json()["summary"]} == {"afdp/api/d-1": "verified", "afdp/web/w-1": "verified"}
    assert good.json()["remote"] == trusted.url("central.git").replace("https://", "https://***@") and PASSWORD not in good.out
    # whoever can write the server's files rewrites a record: the HTTPS read shows it
    edit(central, 1, lambda e: with_file(e, "timestamp-0.tsr", e.files["timestamp-0.tsr"] + b"\x00"), service="web", deployment="w-1")
    bad = cli("verify", "--remote", url, "--all", "--trust", str(trust_file))
    assert bad.code == 1 and "FAILED web/w-1" in bad.out and "VERIFIED api/d-1" in bad.out


def test_behind_and_diverged_over_https_never_move_the_remote(cli, repo, central, trusted, signer, tsa, tmp_path):
    build_deployment(repo, signer, tsa, steps=1, sealed=False)
    assert push_branches(repo, pusher(trusted)).ok
    other, late = tmp_path / "other", tmp_path / "late"
    for path in (other, late):
        init_repository(path)
        subprocess.run(["git", "-C", str(path), "fetch", "--quiet", str(central), "refs/heads/afdp/*:refs/heads/afdp/*"], check=True)
    base = head_of(repo)
    add_step(repo, signer, tsa, "capture_impact", {"p99_ms": 130})
    add_step(other, signer, tsa, "capture_impact", {"p99_ms": 999})  # another story from the same base
    assert push_branches(repo, pusher(trusted)).branches[0].outcome == "pushed"
    winner = head_of(central)
    behind = cli("push", "--repo", str(late), "--remote", pusher(trusted), "--all", "--json")
    assert behind.code == 0 and behind.json()["remotes"][0]["branches"][0]["outcome"] == "behind"
    sent = len(trusted.pushes_received())
    diverged = cli("push", "--repo", str(other), "--remote", pusher(trusted), "--all", "--json")
    assert diverged.code == 1, diverged.err
    [branch] = diverged.json()["remotes"][0]["branches"]
    assert branch["outcome"] == "diverged" and (branch["common_ancestor"], branch["local_only"], branch["remote_only"]) == (base, 1, 1)
    assert head_of(central) == winner and len(trusted.pushes_received()) == sent  # refused before sending
    # a forced push by plain git over the same HTTPS remote is refused by the server
    forced = subprocess.run(["git", "-C", str(other), "push", "--force", pusher(trusted), f"{REF}:{REF}"],
                            capture_output=True, text=True, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})  # fmt: skip
    assert forced.returncode != 0 and "non-fast-forward" in forced.stderr
    assert head_of(central) == winner


def test_two_writers_race_over_https_the_loser_fetches_and_retries(repo, central, trusted, signer, tsa, tmp_path, trust_file):
    """Both writers list the remote at one head; a pre-receive hook on the server holds
    each push for a second, so receive-pack's compare-and-swap (old value sent in the
    POST, checked under the ref lock) decides: the loser lists, fetches and retries."""
    build_deployment(repo, signer, tsa, steps=1, sealed=False)
    assert push_branches(repo, pusher(trusted)).ok
    longer = tmp_path / "longer"
    init_repository(longer)
    add_step(repo, signer, tsa, "capture_impact", {"p99_ms": 130})  # writer A: one more record
    subprocess.run(["git", "-C", str(longer), "fetch", "--quiet", str(repo), f"{REF}:{REF}"], check=True)
    add_step(longer, signer, tsa, "analyze_differences", {"verdict": "ok"})  # writer B continues A's chain
    hook = central / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\ncat >/dev/null\nsleep 1\n")
    hook.chmod(0o755)
    results = {}

    def push(name: str, path: Path) -> None:
        results[name] = push_branches(path, pusher(trusted))

    threads = [threading.Thread(target=push, args=(n, p)) for n, p in (("a", repo), ("b", longer))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    a, b = results["a"].branches[0], results["b"].branches[0]
    assert a.ok and b.ok, (a, b)
    assert a.outcome in ("pushed", "behind") and b.outcome == "pushed"
    assert b.attempts > 1 or a.outcome == "behind"
    assert head_of(central) == head_of(longer) and history(central) == history(longer)
    hook.unlink()
    report = check_branch(central, service="api", deployment="d-42", policy=load_trust_policy(trust_file), allow_unsealed=True)
    assert report.ok, report.failures


@pytest.mark.parametrize("ca", ["none", "another CA"])
def test_an_untrusted_certificate_is_one_line_exit_3_and_nothing_is_pushed(cli, repo, central, https_git, signer, tsa, trust_file, tmp_path, monkeypatch, ca):
    build_deployment(repo, signer, tsa, steps=1)
    monkeypatch.delenv("GIT_SSL_NO_VERIFY", raising=False)
    if ca == "none":
        monkeypatch.delenv("GIT_SSL_CAINFO", raising=False)  # the system's CAs only
    else:
        monkeypatch.setenv("GIT_SSL_CAINFO", str(make_certificates(tmp_path / "elsewhere", name="Another CA").ca))
    result = cli("push", "--repo", str(repo), "--remote", pusher(https_git), "--all")
    assert result.code == 3, (result.out, result.err)
    line = one_line(result.err)
    assert "certificate" in line and "GIT_SSL_CAINFO" in line and PASSWORD not in line
    assert https_git.requests == [] and head_of(central) is None  # no request got through TLS
    read = cli("verify", "--remote", https_git.url("central.git"), "--all", "--trust", str(trust_file))
    assert read.code == 3 and "certificate" in one_line(read.err)
    run = push_after_run(repo, pusher(https_git), REF)  # a run keeps its evidence and queues it
    assert run.queued is not None and "certificate" in run.warning and PASSWORD not in run.queued.read_text()


def test_certificate_verification_cannot_be_turned_off(cli, repo, central, https_git, signer, tsa, monkeypatch):
    """GIT_SSL_NO_VERIFY and a URL-specific ``http.<url>.sslVerify false`` are refused by
    name (exit 2); a general ``http.sslVerify false`` is overridden, so the untrusted
    certificate is still refused. Plain git with the same settings does connect: the
    settings are real, AFDP is what keeps verification on."""
    build_deployment(repo, signer, tsa, steps=1)
    monkeypatch.delenv("GIT_SSL_CAINFO", raising=False)
    url = pusher(https_git)

    def plain_git_connects() -> bool:
        listed = subprocess.run(["git", "ls-remote", https_git.url("central.git")], capture_output=True, text=True,
                                env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})  # fmt: skip
        return listed.returncode == 0

    monkeypatch.setenv("GIT_SSL_NO_VERIFY", "1")
    assert plain_git_connects()
    refused = cli("push", "--repo", str(repo), "--remote", url, "--all")
    assert refused.code == 2 and "GIT_SSL_NO_VERIFY" in one_line(refused.err) and PASSWORD not in refused.err
    monkeypatch.setenv("GIT_SSL_NO_VERIFY", "")  # set but empty: git still turns verification off
    assert plain_git_connects()
    assert cli("push", "--repo", str(repo), "--remote", url, "--all").code == 2
    monkeypatch.delenv("GIT_SSL_NO_VERIFY")
    git_config_env(monkeypatch, {f"http.{https_git.base}/.sslVerify": "false"})
    assert plain_git_connects()
    specific = cli("push", "--repo", str(repo), "--remote", url, "--all")
    assert specific.code == 2 and "sslVerify" in one_line(specific.err)
    git_config_env(monkeypatch, {"http.sslVerify": "false"})
    assert plain_git_connects()
    general = cli("push", "--repo", str(repo), "--remote", url, "--all")
    assert general.code == 3 and "certificate" in one_line(general.err)
    assert https_git.pushes_received() == [] and head_of(central) is None


@pytest.mark.parametrize("credentials", ["wrong password", "none"])
def test_wrong_or_missing_credentials_are_one_line_exit_3(cli, repo, central, trusted, signer, tsa, credentials):
    build_deployment(repo, signer, tsa, steps=1)
    url = trusted.url("central.git", user=USER, password="not-the-token") if credentials != "none" else trusted.url("central.git")
    result = cli("push", "--repo", str(repo), "--remote", url, "--all")
    assert result.code == 3, (result.out, result.err)
    line = one_line(result.err)
    assert "not-the-token" not in line and "cannot push to evidence remote" in line
    if credentials == "none":
        assert "configure a git credential helper" in line
    else:
        assert "Authentication failed" in line
    assert trusted.pushes_received() == [] and head_of(central) is None
    assert any(r.status == 401 for r in trusted.requests)  # the server asked, and refused


@pytest.fixture()
def git_argv_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every git command line this test starts, as ``ps`` shows it to any user: a
    logging shim in front of the real git on PATH (the real git then runs)."""
    real = subprocess.run(["sh", "-c", "command -v git"], capture_output=True, text=True, check=True).stdout.strip()
    shim_dir, log = tmp_path / "shim", tmp_path / "git-argv.log"
    shim_dir.mkdir()
    shim = shim_dir / "git"
    shim.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\nexec {real} "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{shim_dir}{os.pathsep}{os.environ['PATH']}")
    return log


@pytest.mark.parametrize("way", ["url", "helper", "extra-header"])
def test_credentials_never_appear_in_output_errors_or_git_command_lines(cli, repo, central, trusted, signer, tsa, trust_file, monkeypatch, git_argv_log, way):
    build_deployment(repo, signer, tsa, steps=1, sealed=False)

    def give(password: str) -> tuple[str, list[str]]:
        """The URL to use, and the secrets that must never show."""
        token = base64.b64encode(f"{USER}:{password}".encode()).decode()
        if way == "url":
            return trusted.url("central.git", user=USER, password=password), [password]
        if way == "helper":
            git_config_env(monkeypatch, {"credential.helper": f"!f() {{ echo username={USER}; echo password={password}; }}; f"})
        else:
            git_config_env(monkeypatch, {"http.extraHeader": f"Authorization: Basic {token}"})
        return trusted.url("central.git"), [password, token]

    # git's own curl trace on, as a user debugging a push might leave it
    monkeypatch.setenv("GIT_CURL_VERBOSE", "1")
    monkeypatch.setenv("GIT_TRACE_REDACT", "0")
    url, secrets = give(PASSWORD)
    outputs = []
    pushed = cli("push", "--repo", str(repo), "--remote", url, "--all", "--json")
    assert pushed.code == 0, pushed.err
    assert pushed.json()["remotes"][0]["branches"][0]["outcome"] == "created"
    assert [r.user for r in trusted.pushes_received()] == [USER]  # these credentials are what let it in
    outputs += [pushed.out, pushed.err, cli("push", "--repo", str(repo), "--remote", url, "--all").out]
    verified = cli("verify", "--remote", url, "--all", "--trust", str(trust_file), "--allow-unsealed", "--json")
    assert verified.code == 0, verified.out
    outputs += [verified.out, verified.err]
    add_step(repo, signer, tsa, "capture_impact", {"p99_ms": 130})
    url, bad_secrets = give("wrong-" + PASSWORD)
    refused = cli("push", "--repo", str(repo), "--remote", url, "--all", "--json")
    # refused by the server (a wrong header makes git fall back to asking for a username)
    assert refused.code == 3 and "cannot push to evidence remote" in one_line(refused.err)
    assert trusted.pushes_received()[1:] == [] and any(r.status == 401 for r in trusted.requests)
    outputs += [refused.out, refused.err]
    run = push_after_run(repo, url, REF)
    assert run.queued is not None
    outputs += [run.warning or "", run.queued.read_text()]
    for text in outputs:
        for secret in secrets + bad_secrets:
            assert secret not in text
    argv = git_argv_log.read_text()
    assert f"{USER}@127.0.0.1" in argv or way != "url"  # the log sees URLs: it would see a password
    for secret in secrets + bad_secrets:
        assert secret not in argv


def test_a_private_remote_needs_credentials_to_read_too(cli, repo, signer, tsa, trust_file, tmp_path, monkeypatch):
    """Reads behind auth as well (a private evidence remote): verify --remote with the
    credentials in the URL reads it; without them it is one line, exit 3."""
    from https_git import git_http_backend_missing

    if git_http_backend_missing():
        pytest.skip(git_http_backend_missing())
    certificates = make_certificates(tmp_path / "tls")
    root = tmp_path / "served"
    root.mkdir()
    assert cli("init", str(root / "central.git"), "--bare").code == 0
    monkeypatch.setenv("GIT_SSL_CAINFO", str(certificates.ca))
    build_deployment(repo, signer, tsa, steps=1)
    with serve_git_https(root, certificates, HTTPS_GIT_USERS, private=True) as server:
        assert push_branches(repo, pusher(server)).ok
        good = cli("verify", "--remote", pusher(server), "--all", "--trust", str(trust_file))
        assert good.code == 0 and "VERIFIED api/d-42" in good.out and PASSWORD not in good.out
        anonymous = cli("verify", "--remote", server.url("central.git"), "--all", "--trust", str(trust_file))
        assert anonymous.code == 3 and "cannot fetch evidence" in one_line(anonymous.err)
        assert all(r.user is None for r in server.requests if r.status == 401)


def test_a_queued_https_push_is_sent_later_with_a_credential_helper(cli, repo, central, https_git, signer, tsa, monkeypatch):
    """A run whose push failed (here: the CA not trusted yet, or verification turned
    off) keeps its evidence and queues the URL without its password; once the CA is
    trusted, ``push --pending`` sends it with the credentials of a git credential
    helper, and without one says what to configure."""
    build_deployment(repo, signer, tsa, steps=1)
    monkeypatch.delenv("GIT_SSL_CAINFO", raising=False)
    monkeypatch.setenv("GIT_SSL_NO_VERIFY", "1")
    refused = push_after_run(repo, pusher(https_git), REF)
    assert refused.queued is not None and "GIT_SSL_NO_VERIFY" in refused.warning
    monkeypatch.delenv("GIT_SSL_NO_VERIFY")
    untrusted = push_after_run(repo, pusher(https_git), REF)
    assert untrusted.queued == refused.queued and "certificate" in untrusted.warning
    assert PASSWORD not in untrusted.queued.read_text() and https_git.pushes_received() == []
    monkeypatch.setenv("GIT_SSL_CAINFO", str(https_git.certificates.ca))
    no_helper = cli("push", "--repo", str(repo), "--pending")
    assert no_helper.code == 3 and "configure a git credential helper" in one_line(no_helper.err)
    git_config_env(monkeypatch, {"credential.helper": f"!f() {{ echo password={PASSWORD}; }}; f"})
    sent = cli("push", "--repo", str(repo), "--pending", "--json")
    assert sent.code == 0, sent.err
    assert sent.json()["remotes"][0]["branches"][0]["outcome"] == "created" and PASSWORD not in sent.out
    assert head_of(central) == head_of(repo) and [r.user for r in https_git.pushes_received()] == [USER]
    assert cli("push", "--repo", str(repo), "--pending").out.strip() == "nothing queued to push"


def _unrelated_history(repo: Path, commits: int) -> None:
    """``commits`` commits on a branch of their own (refs/heads/scratch): what a busy
    evidence repository's other history adds to a fetch negotiation."""
    script = []
    for i in range(commits):
        script.append(f"commit refs/heads/scratch\ncommitter T <t@example> {1_900_000_000 + i} +0000\ndata 2\n{i % 10}\n")
    git_dir = pygit2.Repository(str(repo)).path
    subprocess.run(["git", "--git-dir", git_dir, "fast-import", "--quiet"], input="".join(script).encode(), check=True)


def test_a_large_push_goes_chunked_and_a_long_negotiation_gzipped(cli, repo, central, trusted, signer, tsa, tmp_path, monkeypatch, trust_file):
    """The two request bodies web servers must pass on to git http-backend: a push larger
    than the client's http.postBuffer (sent chunked) and a fetch negotiation of many
    commits (sent gzipped, HTTP_CONTENT_ENCODING). Both reach the remote intact."""
    build_deployment(repo, signer, tsa, steps=1, sealed=False)
    add_step(repo, signer, tsa, "capture_impact", {"series": os.urandom(100_000).hex()})  # ~100 kB after compression
    git_config_env(monkeypatch, {"http.postBuffer": "65536"})  # a small buffer (git 2.39 aborts at 65520)
    assert push_branches(repo, pusher(trusted)).branches[0].outcome == "created"
    # git probes with a small POST first (a large body cannot be re-sent for auth), then streams the pack
    assert any(r.chunked for r in trusted.pushes_received()), trusted.requests
    git_config_env(monkeypatch, {})  # git's default buffer again: a negotiation fits, and is gzipped
    late = tmp_path / "late"
    init_repository(late)
    subprocess.run(["git", "-C", str(late), "fetch", "--quiet", str(central), f"{REF}:{REF}"], check=True)
    subprocess.run(["git", "-C", str(late), "update-ref", REF, f"{REF}~1"], check=True)  # a writer one record behind
    subprocess.run(["git", "-C", str(late), "reflog", "expire", "--expire=now", "--all"], check=True)
    subprocess.run(["git", "-C", str(late), "gc", "--quiet", "--prune=now"], check=True)  # without the newer record's objects
    assert not pygit2.Repository(str(late)).odb.exists(head_of(repo))
    _unrelated_history(late, 200)
    result = cli("push", "--repo", str(late), "--remote", pusher(trusted), "--all", "--json")
    assert result.code == 0 and result.json()["remotes"][0]["branches"][0]["outcome"] == "behind"  # fetched, then classified
    assert any(r.encoding == "gzip" and r.path.endswith("/git-upload-pack") and r.status == 200 for r in trusted.requests), "\n".join(map(str, trusted.requests))
    assert head_of(central) == head_of(repo)
    checked = cli("verify", "--remote", trusted.url("central.git"), "--all", "--trust", str(trust_file), "--allow-unsealed")
    assert checked.code == 0, checked.out


def test_verification_stays_on_through_url_rewriting(cli, repo, central, https_git, signer, tsa, monkeypatch):
    """A URL-specific ``sslVerify false`` for the URL git rewrites the given one to
    (``url.<base>.insteadOf`` for reads, ``pushInsteadOf`` for pushes) does not turn
    verification off: AFDP gives ``true`` for every such setting. Plain git with the
    same configuration connects without verifying."""
    build_deployment(repo, signer, tsa, steps=1)
    monkeypatch.delenv("GIT_SSL_CAINFO", raising=False)
    port = https_git.port
    read_base, push_base = f"https://127.0.0.1:{port}/", f"https://localhost:{port}/"

    def plain_git_connects(url: str) -> bool:
        listed = subprocess.run(["git", "ls-remote", url], capture_output=True, text=True, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
        return listed.returncode == 0

    # reads: the alias becomes https://127.0.0.1, for which verification is "off"
    git_config_env(monkeypatch, {f"url.{read_base}.insteadOf": "evidence:", f"http.{read_base}.sslVerify": "false"})
    assert plain_git_connects("evidence:central.git")
    result = cli("push", "--repo", str(repo), "--remote", "evidence:central.git", "--all")
    assert result.code == 3 and "certificate" in one_line(result.err)
    # pushes: reads verified against the CA, the push URL (https://localhost) "off"
    git_config_env(monkeypatch, {
        f"url.{read_base}.insteadOf": "evidence:",
        f"url.{push_base}.pushInsteadOf": "evidence:",
        f"http.{read_base}.sslCAInfo": str(https_git.certificates.ca),
        f"http.{push_base}.sslVerify": "false",
        "credential.helper": f"!f() {{ echo username={USER}; echo password={PASSWORD}; }}; f",
    })  # fmt: skip
    assert plain_git_connects(f"{push_base}central.git")
    pushed = cli("push", "--repo", str(repo), "--remote", "evidence:central.git", "--all")
    assert pushed.code == 3 and "certificate" in one_line(pushed.err)
    assert https_git.pushes_received() == [] and head_of(central) is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://deployer:line%0Azq9@127.0.0.1:1/central.git", "the password holds a line break or NUL"),
        ("https://deployer:nul%00zq9@127.0.0.1:1/central.git", "the password holds a line break or NUL"),
        ("https://deployer:pw-zq9@[::1/central.git", "is not a valid URL"),
        ("https://deployer:pw-zq9@127.0.0.1:port/central.git", "is not a valid URL"),
    ],
)
def test_a_malformed_https_url_is_a_usage_error_that_shows_no_password(cli, repo, signer, tsa, url, message):
    build_deployment(repo, signer, tsa, steps=1)
    result = cli("push", "--repo", str(repo), "--remote", url, "--all")
    assert result.code == 2, (result.out, result.err)
    line = one_line(result.err)
    assert message in line and "zq9" not in line
