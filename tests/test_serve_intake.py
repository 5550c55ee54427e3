"""The signed intake of ``afdp serve`` over real HTTP on loopback (uvicorn in a thread).

Flow runs are created by the outbox relay through a submitter: here a test double
subclassing the real interface (:class:`afdp.service.submit.RunSubmitter`) that records
what it was asked, because a Prefect server per negative case would take minutes;
tests/test_serve_prefect.py and tests/test_serve_outbox.py run the real Prefect submitter
against a real server. "Nothing started" is asserted three ways: no submission, no
delivery in the ledger (nothing queued either), and the ``afdp_runs_submitted_total``
metric at zero. An accepted event is submitted in the background, so the tests wait for
the outbox to drain (:func:`drained`) before looking at what was submitted.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest

from afdp.errors import NetworkError
from afdp.service.app import ServeSettings, create_app, running_server
from afdp.service.config import load_services
from afdp.service.intake import sign
from afdp.service.submit import RunSubmitter, flow_parameters

SECRET = b"s3cret-for-the-intake-tests"
TOKEN = "ui-token-for-the-tests-0123456789"
SERVICES = """\
services:
  api:
    prefect_deployment: afdp-evidence/api
    github_repository: acme/api
    parameters:
      time_scale: 20
  shop:
    prefect_deployment: afdp-evidence/shop
    environments: [production]
"""


class RecordingSubmitter(RunSubmitter):
    """Test double of the Prefect submitter: records each event, returns a run id."""

    def __init__(self, fail: bool = False) -> None:
        self.events: list = []
        self.fail = fail

    def submit(self, event):
        if self.fail:
            raise NetworkError("the Prefect API at http://127.0.0.1:1/api failed: connection refused")
        self.events.append(event)
        return f"run-{len(self.events)}"


@pytest.fixture()
def services(tmp_path: Path):
    path = tmp_path / "services.yaml"
    path.write_text(SERVICES)
    return load_services(path)


@pytest.fixture()
def server(repo, services):
    submitter = RecordingSubmitter()
    settings = ServeSettings(repository=repo, services=services, webhook_secret=SECRET, submitter=submitter,
                             ui_token=TOKEN, max_body=4096)
    with running_server(create_app(settings)) as running:
        running.submitter = submitter
        yield running


def generic(**fields):
    event = {
        "event_id": "evt-1",
        "service": "api",
        "version": "1.4.2",
        "commit": "4f2a9c1e0b",
        "image_digest": "sha256:" + "ab" * 32,
        "environment": "production",
        "deployer": "alice",
        "team": "payments",
        "deployed_at": "2026-12-04T07:00:00Z",
    }
    event.update(fields)
    return {k: v for k, v in event.items() if v is not None}


def post_generic(url, event, *, secret=SECRET, signature=None, raw=None):
    body = raw if raw is not None else json.dumps(event).encode()
    headers = {"Content-Type": "application/json"}
    sig = signature if signature is not None else sign(secret, body)
    if sig != "":
        headers["X-AFDP-Signature-256"] = sig
    return httpx.post(f"{url}/events", content=body, headers=headers, timeout=10)


def github_payload(*, state="success", repository="acme/api", number=1234, payload=None):
    return {
        "action": "created",
        "deployment_status": {"state": state, "created_at": "2026-12-04T07:10:00Z"},
        "deployment": {
            "id": number,
            "sha": "0123456789abcdef0123456789abcdef01234567",
            "ref": "main",
            "environment": "production",
            "creator": {"login": "octocat"},
            "payload": payload or {},
        },
        "repository": {"full_name": repository},
    }


def post_github(url, payload, *, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958", event="deployment_status",
                signature=None):
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "X-GitHub-Event": event}
    if delivery is not None:
        headers["X-GitHub-Delivery"] = delivery
    headers["X-Hub-Signature-256"] = signature if signature is not None else sign(SECRET, body)
    return httpx.post(f"{url}/events/github", content=body, headers=headers, timeout=10)


def metric(url: str, name: str, **labels) -> float:
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def drained(server, seconds: float = 15) -> None:
    """Wait until the outbox relay has handled every queued event."""
    deadline = time.monotonic() + seconds
    while server.app.state.ledger.depth():
        assert time.monotonic() < deadline, "the outbox did not drain"
        time.sleep(0.02)


def assert_nothing_started(server):
    drained(server)
    assert server.submitter.events == []
    assert server.app.state.ledger.count() == 0
    assert metric(server.url, "afdp_runs_submitted_total") == 0


def test_a_signed_generic_event_starts_one_run_with_the_event_facts(server):
    response = post_generic(server.url, generic())
    assert response.status_code == 202, response.text
    body = response.json()
    assert body == {"accepted": True, "state": "queued", "delivery": "api/evt-1", "service": "api",
                    "deployment": "20261204T070000Z-4f2a9c1e0b",
                    "branch": "refs/heads/afdp/api/20261204T070000Z-4f2a9c1e0b", "status": "/events/api/evt-1"}
    drained(server)
    (event,) = server.submitter.events
    params = flow_parameters(event)
    assert params["service"] == "api" and params["trigger"] == "deployment_completed"
    assert params["time_scale"] == 20  # the service's preset parameters
    assert params["info"] == {"commit": "4f2a9c1e0b", "deployer": "alice", "team": "payments", "environment": "production",
                              "version": "1.4.2", "deployed_at": "2026-12-04T07:00:00+00:00",
                              "image": f"sha256:{'ab' * 32}"}  # the decision record's subject
    assert "team:payments" in event.tags and f"image:sha256:{'ab' * 32}" in event.tags
    assert metric(server.url, "afdp_runs_submitted_total", service="api") == 1
    assert metric(server.url, "afdp_events_accepted_total", source="generic") == 1


def test_an_explicit_deployment_id_is_used(server):
    response = post_generic(server.url, generic(deployment="rel-7"))
    assert response.status_code == 202
    assert response.json()["deployment"] == "rel-7"


@pytest.mark.parametrize(
    ("signature", "reason"),
    [("", "signature_missing"), ("sha256=" + "0" * 64, "signature_invalid"), ("md5=abc", "signature_invalid"),
     (None, "signature_invalid")],
)
def test_a_missing_or_wrong_signature_is_401_and_starts_nothing(server, signature, reason):
    if signature is None:  # signed with another secret
        response = post_generic(server.url, generic(), secret=b"not-the-secret-at-all")
    else:
        response = post_generic(server.url, generic(), signature=signature)
    assert response.status_code == 401
    assert response.json()["reason"] == reason
    assert_nothing_started(server)
    assert metric(server.url, "afdp_events_rejected_total", reason=reason) == 1


def test_a_body_changed_after_signing_is_401(server):
    body = json.dumps(generic()).encode()
    signature = sign(SECRET, body)
    tampered = body.replace(b"alice", b"mallory")
    response = post_generic(server.url, None, raw=tampered, signature=signature)
    assert response.status_code == 401
    assert_nothing_started(server)


def test_a_replayed_event_is_409_and_starts_nothing_more(server):
    assert post_generic(server.url, generic()).status_code == 202
    again = post_generic(server.url, generic())
    assert again.status_code == 409
    assert "already received" in again.json()["error"]
    # The same deployment under a new event id is a replay too.
    other = post_generic(server.url, generic(event_id="evt-2"))
    assert other.status_code == 409
    assert "already started" in other.json()["error"]
    drained(server)
    assert post_generic(server.url, generic()).status_code == 409  # once submitted, still a replay
    assert len(server.submitter.events) == 1
    assert metric(server.url, "afdp_events_rejected_total", reason="replay") == 3


def test_an_unknown_service_is_404_and_starts_nothing(server):
    response = post_generic(server.url, generic(service="billing"))
    assert response.status_code == 404
    assert "unknown service 'billing'" in response.json()["error"]
    assert_nothing_started(server)


def test_an_environment_the_service_does_not_take_is_422(server):
    response = post_generic(server.url, generic(service="shop", environment="staging"))
    assert response.status_code == 422
    assert_nothing_started(server)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", "is not of type 'object'"),
        (json.dumps(generic(commit=None)).encode(), "'commit' is a required property"),
        (json.dumps(generic(extra="x")).encode(), "Additional properties"),
        (json.dumps(generic(commit="not-a-sha")).encode(), "commit"),
        (json.dumps(generic(deployed_at="yesterday")).encode(), "deployed_at"),
        (json.dumps(generic(deployed_at="2026-12-04T07:00:00")).encode(), "deployed_at"),
        (json.dumps(generic(image_digest="sha256:short")).encode(), "image_digest"),
        (json.dumps(generic(deployment="../etc")).encode(), "deployment"),
        (json.dumps(generic(event_id="bad id with spaces")).encode(), "event_id"),
    ],
)
def test_a_malformed_event_is_400_and_starts_nothing(server, raw, needle):
    response = post_generic(server.url, None, raw=raw)
    assert response.status_code == 400, response.text
    assert needle in response.json()["error"]
    assert_nothing_started(server)


def test_an_oversize_body_is_413_before_anything_else(server):
    big = json.dumps(generic(version="x" * 5000)).encode()
    response = post_generic(server.url, None, raw=big)
    assert response.status_code == 413
    # Without a Content-Length (chunked), the cap holds as the body streams in.
    response = httpx.post(f"{server.url}/events", content=iter([big[:3000], big[3000:]]),
                          headers={"X-AFDP-Signature-256": sign(SECRET, big)}, timeout=10)
    assert response.status_code == 413
    assert_nothing_started(server)
    assert metric(server.url, "afdp_events_rejected_total", reason="too_large") == 2


def test_a_github_deployment_status_success_starts_a_run(server):
    response = post_github(server.url, github_payload(payload={"version": "2.0.0", "team": "core"}))
    assert response.status_code == 202, response.text
    assert response.json()["deployment"] == "gh-1234"
    drained(server)
    (event,) = server.submitter.events
    assert event.service.name == "api"
    assert event.info["commit"] == "0123456789abcdef0123456789abcdef01234567"
    assert event.info["deployer"] == "octocat" and event.info["version"] == "2.0.0"
    assert event.info["source_repository"] == "acme/api"
    assert "team:core" in event.tags


def test_github_ping_and_other_states_start_nothing(server):
    assert post_github(server.url, {"zen": "hi"}, event="ping").status_code == 200
    for state in ("pending", "in_progress", "failure", "error"):
        response = post_github(server.url, github_payload(state=state), delivery=f"d-{state}")
        assert response.status_code == 202
        assert response.json()["accepted"] is False
    assert post_github(server.url, {"ref": "x"}, event="push", delivery="d-push").status_code == 202
    assert_nothing_started(server)


def test_github_negative_cases(server):
    payload = github_payload()
    assert post_github(server.url, payload, signature="sha256=" + "1" * 64).status_code == 401
    assert post_github(server.url, payload, signature="").status_code == 401
    assert post_github(server.url, payload, delivery=None).status_code == 400
    assert post_github(server.url, github_payload(repository="evil/repo")).status_code == 404
    assert post_github(server.url, github_payload(payload={"service": "shop"})).status_code == 404
    broken = github_payload()
    del broken["deployment"]["sha"]
    assert post_github(server.url, broken).status_code == 400
    assert post_github(server.url, {"deployment_status": "x"}).status_code == 400
    assert_nothing_started(server)
    # Replay by delivery id.
    assert post_github(server.url, payload).status_code == 202
    assert post_github(server.url, payload).status_code == 409
    assert post_github(server.url, payload, delivery="another-delivery").status_code == 409
    drained(server)
    assert len(server.submitter.events) == 1


def test_an_event_id_is_a_replay_only_within_its_service(server):
    # Two teams' tools that both number their events "evt-1" send two events, for two
    # services: the second was a 409 "replay", which a sender may read as "already
    # delivered", and its deployment was never recorded. The id is now scoped by service.
    first = post_generic(server.url, generic())
    other = post_generic(server.url, generic(service="shop", commit="5a5a5a5a5a"))
    assert (first.status_code, other.status_code) == (202, 202), other.text
    assert (first.json()["status"], other.json()["status"]) == ("/events/api/evt-1", "/events/shop/evt-1")
    for answer in (first, other):
        shown = httpx.get(f"{server.url}{answer.json()['status']}", headers={"Authorization": f"Bearer {TOKEN}"})
        assert shown.status_code == 200 and shown.json()["service"] == answer.json()["service"]
    # within one service the id is still the replay key: the same event again is a 409, and
    # so is the same id for another deployment, which says it was not accepted
    assert post_generic(server.url, generic()).status_code == 409
    reused = post_generic(server.url, generic(commit="6b6b6b6b6b"))
    assert reused.status_code == 409 and "was not accepted" in reused.json()["error"], reused.text
    drained(server)
    assert sorted(e.service.name for e in server.submitter.events) == ["api", "shop"]


def test_the_replay_ledger_survives_a_restart(repo, services):
    for _ in range(2):
        submitter = RecordingSubmitter()
        settings = ServeSettings(repository=repo, services=services, webhook_secret=SECRET, submitter=submitter)
        with running_server(create_app(settings)) as running:
            response = post_generic(running.url, generic())
    assert response.status_code == 409
    assert submitter.events == []


def test_healthz_is_public_and_the_rest_needs_the_token(server):
    url = server.url
    assert httpx.get(f"{url}/healthz").text == "ok"
    for path in ("/metrics", "/api/deployments", "/api/annotations", "/api/"):
        assert httpx.get(f"{url}{path}").status_code == 401, path
        assert httpx.get(f"{url}{path}", headers={"Authorization": "Bearer wrong-token"}).status_code == 401
        assert httpx.get(f"{url}{path}", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    for path in ("/", "/services/api", "/deployments/api/d-1"):
        response = httpx.get(f"{url}{path}", follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/login"
    # A wrong token does not log in; the right one sets a session cookie (not the token).
    assert httpx.post(f"{url}/login", data={"token": "nope"}).status_code == 401
    login = httpx.post(f"{url}/login", data={"token": TOKEN}, follow_redirects=False)
    assert login.status_code == 303
    cookie = login.cookies["afdp_session"]
    assert TOKEN not in cookie
    assert "httponly" in login.headers["set-cookie"].lower()
    assert "samesite=strict" in login.headers["set-cookie"].lower()
    page = httpx.get(f"{url}/", cookies={"afdp_session": cookie})
    assert page.status_code == 200 and "Deployments" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    assert httpx.get(f"{url}/", cookies={"afdp_session": cookie + "x"}, follow_redirects=False).status_code == 303


def test_behind_a_tls_proxy_the_session_cookie_is_secure(repo, services):
    settings = ServeSettings(repository=repo, services=services, webhook_secret=SECRET,
                             submitter=RecordingSubmitter(), ui_token=TOKEN)
    with running_server(create_app(settings), proxy_headers=True) as running:
        plain = httpx.post(f"{running.url}/login", data={"token": TOKEN}, follow_redirects=False)
        assert "secure" not in plain.headers["set-cookie"].lower()
        proxied = httpx.post(f"{running.url}/login", data={"token": TOKEN}, follow_redirects=False,
                             headers={"X-Forwarded-Proto": "https"})
        assert "; secure" in proxied.headers["set-cookie"].lower()


def test_without_a_token_the_dashboard_is_off_but_the_intake_works(repo, services):
    submitter = RecordingSubmitter()
    settings = ServeSettings(repository=repo, services=services, webhook_secret=SECRET, submitter=submitter)
    with running_server(create_app(settings)) as running:
        for path in ("/", "/metrics", "/api/deployments"):
            response = httpx.get(f"{running.url}{path}")
            assert response.status_code == 403 and "AFDP_UI_TOKEN" in response.text
        assert httpx.post(f"{running.url}/login", data={"token": ""}).status_code == 401
        assert post_generic(running.url, generic()).status_code == 202


def test_no_endpoint_writes_evidence(server, repo):
    import pygit2

    before = sorted(pygit2.Repository(str(repo)).references)
    post_generic(server.url, generic())
    post_github(server.url, github_payload())
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for method, path in [("GET", "/"), ("POST", "/api/annotations"), ("GET", "/api/deployments")]:
        httpx.request(method, f"{server.url}{path}", headers=headers, json={})
    for path in ("/events", "/events/github", "/api/deployments", "/metrics"):
        assert httpx.put(f"{server.url}{path}", headers=headers).status_code == 405
        assert httpx.delete(f"{server.url}{path}", headers=headers).status_code == 405
    assert sorted(pygit2.Repository(str(repo)).references) == before


def test_cli_refuses_unsafe_settings(cli, repo, tmp_path, monkeypatch):
    config = tmp_path / "services.yaml"
    config.write_text(SERVICES)
    args = ["serve", "--repo", str(repo), "--config", str(config)]
    monkeypatch.delenv("AFDP_WEBHOOK_SECRET", raising=False)
    monkeypatch.delenv("AFDP_UI_TOKEN", raising=False)
    result = cli(*args)
    assert result.code == 2 and "AFDP_WEBHOOK_SECRET" in result.err
    monkeypatch.setenv("AFDP_WEBHOOK_SECRET", "short")
    assert cli(*args).code == 2
    monkeypatch.setenv("AFDP_WEBHOOK_SECRET", SECRET.decode())
    result = cli(*args, "--host", "0.0.0.0")
    assert result.code == 2 and "--allow-remote" in result.err
    result = cli(*args, "--host", "192.0.2.10", "--allow-remote")
    assert result.code == 2 and "AFDP_UI_TOKEN" in result.err
    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n  api:\n    prefect_deployment: nope\n")
    result = cli("serve", "--repo", str(repo), "--config", str(bad))
    assert result.code == 2 and "FLOW/DEPLOYMENT" in result.err
    bad.write_text("services:\n  api:\n    prefect_deployment: a/b\n    parameters: {service: x}\n")
    result = cli("serve", "--repo", str(repo), "--config", str(bad))
    assert result.code == 2 and "come from the event" in result.err
    bad.write_text("services:\n  bad name:\n    prefect_deployment: a/b\n")
    result = cli("serve", "--repo", str(repo), "--config", str(bad))
    assert result.code == 2 and "'bad name'" in result.err
    bad.write_text("services:\n  api:\n    prefect_deployment: a/b\n    retries: -1\n")
    result = cli("serve", "--repo", str(repo), "--config", str(bad))
    assert result.code == 2 and "retries must be a whole number" in result.err
    result = cli("serve", "--repo", str(tmp_path / "no-such-repo"), "--config", str(config))
    assert result.code == 2 and "no-such-repo" in result.err
    result = cli("serve", "--repo", str(repo), "--config", str(tmp_path / "missing.yaml"))
    assert result.code == 2 and re.search(r"cannot read services file", result.err)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_hosts(host):
    from afdp.service.config import is_loopback

    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.org"])
def test_non_loopback_hosts(host):
    from afdp.service.config import is_loopback

    assert not is_loopback(host)
