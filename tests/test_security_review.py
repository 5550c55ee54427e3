"""Review of "AFDP as a service" (issue 15) as an attacker: each test is a hole that was
open (it failed before its fix), or a property enumerated over every route.

Real parts only: the Starlette app served by uvicorn on 127.0.0.1, real Git (pygit2 and
the git command), the real TSA fixture and signing keys.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pygit2
import pytest
from conftest import add_step, build_deployment

from afdp.errors import UsageError
from afdp.service.app import ServeSettings, create_app, running_server
from afdp.service.config import ServiceConfig, Services
from afdp.service.submit import RunSubmitter

TOKEN = "review-token-0123456789abcdef"
SECRET = b"review-secret-0123456789abcdef"
PUBLIC = {"/events/github", "/events", "/healthz", "/static/afdp.css", "/favicon.ico", "/login", "/logout"}


class NoRuns(RunSubmitter):
    """Test double (no Prefect here): these tests post no accepted event."""

    def submit(self, event):
        raise AssertionError("no run may start in these tests")


def settings(repo: Path, *, trust: Path | None = None, secret: bytes = SECRET, token: str | None = TOKEN) -> ServeSettings:
    services = Services({"api": ServiceConfig("api", "afdp-evidence/api")})
    return ServeSettings(repository=repo, services=services, webhook_secret=secret, submitter=NoRuns(),
                         ui_token=token, trust_policy=trust)


# -- intake ----------------------------------------------------------------------------


@pytest.mark.parametrize("secret", [b"", b"short"])
def test_the_app_refuses_an_empty_or_short_webhook_secret(repo, secret):
    # with an empty key anyone computes a valid signature: the app itself refuses it,
    # not only the CLI
    with pytest.raises(UsageError, match="webhook secret"):
        create_app(settings(repo, secret=secret))


def test_the_app_refuses_a_short_ui_token(repo):
    with pytest.raises(UsageError, match="UI token"):
        create_app(settings(repo, token="guessable"))


# -- dashboard / auth --------------------------------------------------------------------


def test_every_route_but_the_public_ones_needs_the_token(repo):
    app = create_app(settings(repo))
    routes = [(r.path, sorted(r.methods or ())) for r in app.routes]
    guarded = [(path, methods) for path, methods in routes if path not in PUBLIC]
    assert {p for p, _ in routes} >= PUBLIC and len(guarded) >= 7
    with running_server(app) as server:
        for path, methods in guarded:
            url = server.url + path.replace("{service}", "api").replace("{deployment}", "d-1")
            for method in methods:
                if method == "HEAD":
                    continue
                for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {TOKEN}x"},
                                {"Cookie": "afdp_session=forged"}, {"Authorization": f"Basic {TOKEN}"}):
                    answer = httpx.request(method, url, headers=headers)
                    assert answer.status_code in (401, 303), (method, path, headers, answer.status_code)
                    if answer.status_code == 303:
                        assert answer.headers["location"] == "/login"
        # the public routes hold no evidence
        assert httpx.get(server.url + "/static/afdp.css").headers["content-type"].startswith("text/css")


def test_a_cached_verified_does_not_outlive_a_replace_ref(repo, signer, tsa, trust_file, cli):
    # The dashboard caches a verdict by branch head; `afdp verify` fails a repository with
    # refs/replace (git would show other objects than were verified): the dashboard must too.
    build_deployment(repo, signer, tsa, service="api", deployment="d-1")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with running_server(create_app(settings(repo, trust=trust_file))) as server:
        def verdict() -> str:
            rows = httpx.get(f"{server.url}/api/deployments", headers=headers, timeout=60).json()
            return {r["deployment"]: r["verdict"] for r in rows}["d-1"]

        assert verdict() == "VERIFIED"
        git = pygit2.Repository(str(repo))
        head = git.references["refs/heads/afdp/api/d-1"].target
        other = git.create_blob(b"what git log would show instead")
        git.references.create(f"refs/replace/{head}", other)
        assert cli("verify", "--repo", str(repo), "--service", "api", "--deployment", "d-1",
                   "--trust", str(trust_file)).code == 1
        assert verdict() == "FAILED"
        page = httpx.get(f"{server.url}/deployments/api/d-1", headers=headers, timeout=60).text
        assert "VERIFIED" not in page.replace("UNVERIFIED", "")


# -- push / remote -----------------------------------------------------------------------


def test_git_never_runs_a_command_transport_even_when_config_rewrites_the_url(repo, signer, tsa, tmp_path, cli,
                                                                             monkeypatch):
    # `url.<base>.insteadOf` turns an innocent-looking URL into ext:: (runs a command);
    # with protocol.allow=always in the user's git config, git would run it.
    build_deployment(repo, signer, tsa, service="api", deployment="d-1")
    marker = tmp_path / "pwned"
    config = tmp_path / "gitconfig"
    config.write_text(f'[url "ext::sh -c touch% {marker}"]\n\tinsteadOf = evil:\n[protocol]\n\tallow = always\n')
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    result = cli("push", "--repo", str(repo), "--remote", "evil:x", "--all", "--json")
    assert not marker.exists()
    assert result.code == 3 and result.json()["ok"] is False
    assert "not allowed" in result.err


@pytest.mark.parametrize("url", ["https://user:p@ss@example.invalid/x.git", "https://user:p@ss:w@rd@example.invalid/x"])
def test_a_password_holding_an_at_sign_is_never_printed(repo, signer, tsa, cli, url):
    from afdp.evidence.remote import redact, without_password

    assert "ss" not in redact(url).split("@", 1)[0] and redact(url).startswith("https://***@example.invalid")
    assert without_password(url).startswith("https://user@example.invalid")
    build_deployment(repo, signer, tsa, service="api", deployment="d-1")
    result = cli("push", "--repo", str(repo), "--remote", url, "--all", "--json")
    assert result.code == 3
    assert "p@ss" not in result.out + result.err and "ss@" not in result.out + result.err
    assert "rd@" not in result.out + result.err


# -- find ----------------------------------------------------------------------------------


def test_find_reads_a_forged_record_with_odd_types_without_breaking(repo, signer, tsa, cli, tmp_path, monkeypatch):
    # records are read unverified: a record with a number or an object where text belongs
    # is one more unverified hit, not an internal error
    monkeypatch.setenv("AFDP_INDEX_KEY", str(tmp_path / "index.key"))
    build_deployment(repo, signer, tsa, service="api", deployment="d-1", steps=1, sealed=False)
    add_step(repo, signer, tsa, "decide", {"decision": {"action": {"x": 1}, "decision": 7, "label": ["l"]}},
             service="api", deployment="d-1", context={"step": {"kind": "decide"}})
    store_commit = pygit2.Repository(str(repo)).references["refs/heads/afdp/api/d-1"].target
    from afdp.audit.find import read_facts
    from afdp.evidence.store import EvidenceStore

    facts = read_facts(EvidenceStore(repo), "refs/heads/afdp/api/d-1", "api", "d-1", str(store_commit))
    assert facts.decision == {} and facts.decision_record == 2
    result = cli("find", "--repo", str(repo), "--service", "api")
    assert result.code == 0, result.err
    assert "UNVERIFIED" in result.out and "api" in result.out
    data = cli("find", "--repo", str(repo), "--service", "api", "--json").json()
    assert [h["verification"] for h in data["hits"]] == ["unverified"]


def test_a_remote_that_cannot_be_read_is_named_with_gits_reason(cli, trust_file, tmp_path):
    # git's advice lines ("...and the repository exists.") used to stand in for the reason
    result = cli("verify", "--all", "--remote", str(tmp_path / "no such dir"), "--trust", str(trust_file), "--json")
    assert result.code == 3 and result.json()["ok"] is False
    assert "does not appear to be a git repository" in result.err
    assert "and the repository exists" not in result.err
