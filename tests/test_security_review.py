"""Review of "AFDP as a service" (issue 15) as an attacker: each test is a hole that was
open (it failed before its fix), or a property enumerated over every route.

Real parts only: the Starlette app served by uvicorn on 127.0.0.1, real Git (pygit2 and
the git command), the real TSA fixture and signing keys.
"""

from __future__ import annotations

import json
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
    import dataclasses

    from afdp.service.throttle import LoginLimits

    # every wrong token here must meet a 401, not the lock-out (tests/test_serve_login.py)
    unlimited = LoginLimits(free_failures=10**6, global_burst=10**6)
    app = create_app(dataclasses.replace(settings(repo), login_limits=unlimited))
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


# -- intake, over HTTP (the intake tests' server: a recording submitter, max_body 4096) ----

import test_serve_intake as it  # noqa: E402
from test_serve_intake import (  # noqa: E402
    assert_nothing_started,
    generic,
    github_payload,
    post_generic,
    post_github,
)

from afdp.service.config import load_services  # noqa: E402

INTAKE_SECRET = it.SECRET


@pytest.fixture()
def intake(repo, tmp_path):
    path = tmp_path / "services.yaml"
    path.write_text(it.SERVICES)
    submitter = it.RecordingSubmitter()
    config = ServeSettings(repository=repo, services=load_services(path), webhook_secret=INTAKE_SECRET,
                           submitter=submitter, ui_token=TOKEN, max_body=4096)
    with running_server(create_app(config)) as running:
        running.submitter = submitter  # type: ignore[attr-defined]
        yield running


from afdp.service.intake import sign  # noqa: E402


def test_a_chunked_body_over_the_limit_is_413_whatever_its_signature(intake):
    body = json.dumps(generic(version="v" * 5000)).encode()
    assert len(body) > 4096

    def chunks():
        for i in range(0, len(body), 512):
            yield body[i:i + 512]

    answer = httpx.post(f"{intake.url}/events", content=chunks(), timeout=10,
                        headers={"X-AFDP-Signature-256": sign(INTAKE_SECRET, body)})
    assert answer.status_code == 413
    assert_nothing_started(intake)


def test_signature_header_tricks_are_refused(intake):
    body = json.dumps(generic()).encode()
    good = sign(INTAKE_SECRET, body)
    for headers in (
        [("X-AFDP-Signature-256", "sha256=" + "0" * 64), ("X-AFDP-Signature-256", good)],  # duplicate: first counts
        [("X-AFDP-Signature-256", good.replace("sha256=", "sha1="))],
        [("X-AFDP-Signature-256", good[:-1])],
        [("X-AFDP-Signature-256", good + "00")],
        [("X-AFDP-Signature-256", "sha256=" + sign(b"", body).split("=")[1])],  # empty key
        [("X-Hub-Signature-256", good)],  # the other route's header
    ):
        answer = httpx.post(f"{intake.url}/events", content=body, headers=headers, timeout=10)
        assert answer.status_code == 401, headers
    # the same JSON re-encoded (spaces) is another body: its signature does not carry over
    reencoded = json.dumps(generic(), indent=1).encode()
    assert post_generic(intake.url, None, raw=reencoded, signature=good).status_code == 401
    # a sha1 GitHub header alone is no signature
    payload = github_payload()
    raw = json.dumps(payload).encode()
    import hashlib
    import hmac as _hmac

    sha1 = "sha1=" + _hmac.new(INTAKE_SECRET, raw, hashlib.sha1).hexdigest()
    answer = httpx.post(f"{intake.url}/events/github", content=raw, timeout=10,
                        headers={"X-GitHub-Event": "deployment_status", "X-GitHub-Delivery": "d-1",
                                 "X-Hub-Signature": sha1})
    assert answer.status_code == 401
    assert_nothing_started(intake)


@pytest.mark.parametrize("deployment", ["../x", "a/b", "refs/heads/x", "x.lock", "a..b", "-x", "é1", "x\n", "x y",
                                        "x:y", "x~1", "x^", "@{0}", "x" * 101])
def test_a_deployment_id_that_is_not_a_safe_name_never_reaches_a_branch(intake, deployment):
    answer = post_generic(intake.url, generic(deployment=deployment))
    assert answer.status_code == 400, answer.text
    assert_nothing_started(intake)


def test_a_github_deployment_replayed_under_another_delivery_id_is_409(intake):
    assert post_github(intake.url, github_payload(number=77), delivery="aaa-1").status_code == 202
    answer = post_github(intake.url, github_payload(number=77), delivery="aaa-2")
    assert answer.status_code == 409 and answer.json()["reason"] == "replay"
    assert len(intake.submitter.events) == 1


@pytest.mark.parametrize("event", ["deployment", "push", "workflow_run", "Deployment_Status"])
def test_other_github_events_start_nothing(intake, event):
    answer = post_github(intake.url, github_payload(), event=event)
    assert answer.status_code == 202 and answer.json()["accepted"] is False
    assert_nothing_started(intake)


@pytest.mark.parametrize("number", [-1, 1.5, "12", True, None])
def test_a_github_deployment_id_that_is_not_a_whole_number_is_400(intake, number):
    answer = post_github(intake.url, github_payload(number=number))
    assert answer.status_code == 400
    assert_nothing_started(intake)


def test_record_contents_are_escaped_on_every_page(repo, signer, tsa, trust_file):
    script = '<script>alert("afdp")</script>'
    add_step(repo, signer, tsa, "decide", {"decision": {"action": script, "decision": "rollback", "label": script,
                                                        "reason": script}},
             service="api", deployment="d-1", context={"step": {"kind": "decide"}}, summary=script)
    from afdp.evidence.ledger import seal

    seal(repo, service="api", deployment="d-1", signer=signer, tsa_urls=[tsa.url])
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with running_server(create_app(settings(repo, trust=trust_file))) as server:
        pages = [httpx.get(server.url + path, headers=headers, timeout=60)
                 for path in ("/", "/deployments/api/d-1", "/services/api")]
        assert all(p.status_code == 200 for p in pages)
        assert "VERIFIED" in pages[1].text
        assert any("&lt;script&gt;" in p.text for p in pages)
        for page in pages:
            assert "<script" not in page.text.lower()
            assert "script-src" not in page.headers["content-security-policy"]
            assert page.headers["content-security-policy"].startswith("default-src 'none'")


def test_a_session_cookie_ends_and_cannot_be_extended(repo):
    import time

    from afdp.service.app import SESSION_SECONDS, _session_value

    with running_server(create_app(settings(repo))) as server:
        login = httpx.post(f"{server.url}/login", data={"token": TOKEN}, follow_redirects=False)
        cookie = login.cookies["afdp_session"]
        flags = login.headers["set-cookie"].lower()
        assert f"max-age={SESSION_SECONDS}" in flags and "httponly" in flags and "samesite=strict" in flags

        def status(value: str) -> int:
            return httpx.get(f"{server.url}/api/deployments", cookies={"afdp_session": value}).status_code

        assert status(cookie) == 200
        now = int(time.time())
        expired = _session_value(TOKEN, now - 1)
        assert status(expired) == 401
        # the expiry is under the MAC: moving it forward breaks the cookie
        assert status(f"{now + 3600}.{expired.split('.', 1)[1]}") == 401
        # a cookie minted far beyond a session's length is refused too
        assert status(_session_value(TOKEN, now + 100 * SESSION_SECONDS)) == 401
        # the old never-ending form of the cookie is no session
        import hashlib
        import hmac as _hmac

        assert status(_hmac.new(TOKEN.encode(), b"afdp-ui-session", hashlib.sha256).hexdigest()) == 401
        assert status(_session_value("another-token-0123456789", now + 60)) == 401


def test_find_never_overwrites_a_file_named_as_its_key(repo, signer, tsa, cli, tmp_path, monkeypatch):
    # AFDP_INDEX_KEY pointing at a short file (a typo, another tool's file) used to be
    # truncated and overwritten with a new key
    build_deployment(repo, signer, tsa, service="api", deployment="d-1")
    precious = tmp_path / "notes.txt"
    precious.write_bytes(b"my own notes")
    monkeypatch.setenv("AFDP_INDEX_KEY", str(precious))
    result = cli("find", "--repo", str(repo), "--service", "api", "--json")
    assert precious.read_bytes() == b"my own notes"
    assert result.code == 2 and result.json()["ok"] is False and "shorter than 32 bytes" in result.err
    # a missing key is created whole, 0600, and used from then on
    key = tmp_path / "keys" / "index.key"
    monkeypatch.setenv("AFDP_INDEX_KEY", str(key))
    assert cli("find", "--repo", str(repo), "--service", "api").code == 0
    made = key.read_bytes()
    assert len(made) == 32 and key.stat().st_mode & 0o777 == 0o600
    assert cli("find", "--repo", str(repo), "--service", "api").code == 0 and key.read_bytes() == made
    assert [p.name for p in key.parent.iterdir()] == ["index.key"]


def test_the_service_page_says_which_counted_deployments_are_unsealed(repo, signer, tsa, trust_file):
    # an unsealed branch may be a truncated one: the trends never present it as sealed evidence
    build_deployment(repo, signer, tsa, service="api", deployment="d-1")
    build_deployment(repo, signer, tsa, service="api", deployment="d-2", sealed=False)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with running_server(create_app(settings(repo, trust=trust_file))) as server:
        page = httpx.get(f"{server.url}/services/api", headers=headers, timeout=60).text
    assert "From 2 deployment(s) whose evidence verified (1 of them" in page
    assert "no seal yet, or evidence truncated" in page


def test_a_look_alike_branch_named_as_markup_reads_failed_and_escaped(repo, signer, tsa, trust_file):
    build_deployment(repo, signer, tsa, service="api", deployment="d-1")
    git = pygit2.Repository(str(repo))
    head = git.references["refs/heads/afdp/api/d-1"].target
    git.references.create('refs/heads/afdp/api/"><img/src=x/onerror=alert(1)>', head)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with running_server(create_app(settings(repo, trust=trust_file))) as server:
        page = httpx.get(f"{server.url}/", headers=headers, timeout=60).text
        rows = httpx.get(f"{server.url}/api/deployments", headers=headers, timeout=60).json()
    assert "<img" not in page and "&lt;img" in page
    verdicts = sorted(r["verdict"] for r in rows)
    assert verdicts == ["FAILED", "VERIFIED"]


def test_push_and_verify_a_remote_whose_path_has_spaces_and_option_like_parts(repo, signer, tsa, cli, tmp_path,
                                                                             trust_file):
    from afdp.evidence.remote import init_remote

    remote = tmp_path / "central evidence" / "--upload-pack=touch pwned.git"
    init_remote(remote)
    build_deployment(repo, signer, tsa, service="api", deployment="d-1")
    result = cli("push", "--repo", str(repo), "--remote", str(remote), "--all", "--json")
    assert result.code == 0, result.err
    assert [b["outcome"] for b in result.json()["remotes"][0]["branches"]] == ["created"]
    checked = cli("verify", "--all", "--remote", f"file://{remote}".replace(" ", "%20"), "--trust", str(trust_file))
    assert checked.code == 0, checked.err
    assert not list(tmp_path.rglob("pwned")) and not Path("pwned").exists()


def test_a_github_deployment_id_too_long_for_a_branch_is_400_before_anything_starts(intake):
    # gh-<id> was never checked as a name: a 101-digit id was submitted, then the answer was a 500
    answer = post_github(intake.url, github_payload(number=10**100))
    assert answer.status_code == 400 and answer.json()["reason"] == "malformed"
    assert_nothing_started(intake)
    assert post_github(intake.url, github_payload(number=10**90), delivery="other-1").status_code == 202


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_time_out_of_range_in_utc_is_400_not_500(intake, moment):
    assert post_generic(intake.url, generic(deployed_at=moment)).status_code == 400
    payload = github_payload()
    payload["deployment_status"]["created_at"] = moment
    assert post_github(intake.url, payload).status_code == 400
    assert_nothing_started(intake)


@pytest.mark.parametrize("value", ["---5", "\u00b2", "1" * 5000, "--1"])
def test_grafana_annotation_bounds_that_are_not_numbers_are_ignored_not_500(repo, value):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with running_server(create_app(settings(repo))) as server:
        answer = httpx.get(f"{server.url}/api/annotations", params={"from": value, "to": value}, headers=headers)
    assert answer.status_code == 200 and answer.json() == []
