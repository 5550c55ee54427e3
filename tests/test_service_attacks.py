"""An attacker's and a new user's review of AFDP's service surfaces: no false greens.

Each test tries to make ``afdp serve``, its dashboard or ``afdp find`` say something that is
not so (an event "accepted" that can never run, a VERIFIED the trust material no longer
gives, a lookup that crashes or writes where it should not), over the real parts: real
HTTP on loopback (uvicorn), real Git (pygit2), the TSA fixture, signed records.
"""

from __future__ import annotations

import json
import os

import httpx
import pytest
from conftest import build_deployment
from test_serve_intake import (
    SECRET,
    SERVICES,
    TOKEN,
    RecordingSubmitter,
    assert_nothing_started,
    generic,
    github_payload,
    post_generic,
    post_github,
)

from afdp.service.app import ServeSettings, create_app, running_server
from afdp.service.config import ServiceConfig, Services, load_services
from afdp.service.dashboard import Dashboard
from afdp.service.intake import sign
from afdp.service.metrics import ServiceMetrics
from afdp.service.submit import RunSubmitter

BEARER = {"Authorization": f"Bearer {TOKEN}"}


class NoRuns(RunSubmitter):
    """Test double: these tests post no event that should start a run."""

    def submit(self, event):
        raise AssertionError("no run should be submitted")


@pytest.fixture()
def services(tmp_path):
    path = tmp_path / "services.yaml"
    path.write_text(SERVICES)
    return load_services(path)


@pytest.fixture()
def server(repo, services):
    """afdp serve over loopback; flow runs go to a recording test double (as in test_serve_intake.py)."""
    submitter = RecordingSubmitter()
    settings = ServeSettings(repository=repo, services=services, webhook_secret=SECRET, submitter=submitter,
                             ui_token=TOKEN, max_body=4096)
    with running_server(create_app(settings)) as running:
        running.submitter = submitter
        yield running


# -- the intake: an event accepted (202) must be one that can run -------------------------------


@pytest.mark.parametrize(
    "field",
    [
        {"event_id": "evt-1\n"},
        {"commit": "4f2a9c1e0b\n"},
        {"team": "payments\n"},
        {"image_digest": "sha256:" + "ab" * 32 + "\n"},
        {"deployer": "alice\u0000"},
        {"version": "1.4.2\u001b[31m"},
        {"environment": "production\r"},
        {"deployment": "rel-7\n"},
    ],
    ids=lambda f: next(iter(f)),
)
def test_a_control_character_in_a_generic_event_is_400_and_starts_nothing(server, field):
    # A trailing newline passes a `^...$` pattern in Python's regex dialect: without the
    # intake's own check the event was answered 202 and its run failed later (a team that
    # is not a team name) or recorded a commit with a newline in it.
    response = post_generic(server.url, generic(**field))
    assert response.status_code == 400, response.text
    assert response.json()["reason"] == "malformed"
    assert "control character" in response.json()["error"]
    assert_nothing_started(server)


def test_a_github_payload_with_a_bad_image_digest_or_version_is_400_not_dropped(server):
    # docs/service.md: "400 malformed: ... a bad commit, time, digest or name". An image
    # digest that is not one was silently dropped: the run recorded `image: null` and a
    # lookup by that image found nothing, while the sender was told 202 accepted.
    for number, payload in enumerate([{"image_digest": "sha256:" + "AB" * 32}, {"image_digest": "ghcr.io/acme/api"},
                                      {"version": 7}, {"version": "1.0\n"}], start=1):
        response = post_github(server.url, github_payload(number=number, payload=payload), delivery=f"d-{number}")
        assert response.status_code == 400, (payload, response.text)
        assert response.json()["reason"] == "malformed"
    for number, payload in enumerate([{"environment": "x"}], start=10):
        body = github_payload(number=number)
        body["deployment"]["creator"] = {"login": "octo\ncat"}
        response = post_github(server.url, body, delivery=f"d-{number}")
        assert response.status_code == 400, (payload, response.text)
    assert_nothing_started(server)
    # the good digest still goes through
    good = post_github(server.url, github_payload(number=99, payload={"image_digest": "sha256:" + "ab" * 32}),
                       delivery="d-99")
    assert good.status_code == 202, good.text


def test_schema_patterns_do_not_accept_a_trailing_newline():
    from afdp.evidence.schemas import iter_errors

    document = {"event_id": "a", "service": "api", "commit": "abcdef0\n", "deployed_at": "2026-12-04T07:00:00Z"}
    assert list(iter_errors("deployment-event.v1", document))


def test_a_deeply_nested_signed_body_is_400_not_a_server_error(repo, services):
    # within the default body cap (256 KiB), signed: the JSON parser's recursion limit is
    # reached, which is not a ValueError; it was a 500 (and a traceback in the log)
    settings = ServeSettings(repository=repo, services=services, webhook_secret=SECRET, submitter=NoRuns(),
                             ui_token=TOKEN)
    body = b"[" * 100_000 + b"]" * 100_000
    with running_server(create_app(settings)) as running:
        for path in ("/events", "/events/github"):
            header = "X-AFDP-Signature-256" if path == "/events" else "X-Hub-Signature-256"
            headers = {header: sign(SECRET, body), "X-GitHub-Event": "deployment_status", "X-GitHub-Delivery": "deep-1"}
            response = httpx.post(f"{running.url}{path}", content=body, headers=headers, timeout=30)
            assert response.status_code == 400, response.text
            assert response.json()["reason"] == "malformed"
        assert running.app.state.ledger.count() == 0


def test_annotations_with_a_deeply_nested_body_is_400(repo):
    services = Services({"api": ServiceConfig("api", "afdp-evidence/api")})
    settings = ServeSettings(repository=repo, services=services, webhook_secret=SECRET, submitter=NoRuns(),
                             ui_token=TOKEN)
    with running_server(create_app(settings)) as running:
        body = b"[" * 100_000 + b"]" * 100_000
        response = httpx.post(f"{running.url}/api/annotations", content=body, headers=BEARER, timeout=30)
        assert response.status_code == 400, response.text


# -- the dashboard: a cached verdict never outlives the trust material -----------------------------


def _pinned_trust(trust_file):
    """Pin a Sigstore trusted root beside the policy (what an auditor of keyless records does)."""
    root = trust_file.parent / "sigstore-root.json"
    root.write_text(json.dumps({"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1"}))
    trust_file.write_text(trust_file.read_text() + "sigstore:\n  trusted_root: sigstore-root.json\n")
    return root


def test_a_changed_pinned_sigstore_root_verifies_every_branch_again(repo, signer, tsa, trust_file):
    root = _pinned_trust(trust_file)
    build_deployment(repo, signer, tsa, service="api", deployment="d-1")
    metrics = ServiceMetrics()
    dashboard = Dashboard(repo, trust_policy=trust_file, metrics=metrics)

    def verifications() -> float:
        return sum(s.value for m in metrics.registry.collect() if m.name == "afdp_verifications"
                   for s in m.samples if s.name.endswith("_total"))

    assert [e.verdict for e in dashboard.entries()] == ["VERIFIED"]
    assert verifications() == 1
    dashboard.entries()
    assert verifications() == 1  # cached
    # The auditor replaces the pinned root (a compromised root rotated out): the trust
    # policy file is unchanged, but what it trusts is not. Every verdict is taken again.
    root.write_text(json.dumps({"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
                                "rotated": True}))
    dashboard.entries()
    assert verifications() == 2
    # A pinned root that no longer reads: the policy does not load, so nothing reads
    # VERIFIED from the cache (afdp verify would exit 2 on this policy).
    root.write_text("not json")
    from afdp.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        dashboard.entries()
    with pytest.raises(ConfigurationError):
        dashboard.entry("api", "d-1")
    with pytest.raises(ConfigurationError):
        dashboard.prediction("api")


def test_the_dashboard_page_is_not_green_once_the_pinned_root_is_unreadable(repo, signer, tsa, trust_file):
    root = _pinned_trust(trust_file)
    build_deployment(repo, signer, tsa, service="api", deployment="d-1")
    services = Services({"api": ServiceConfig("api", "afdp-evidence/api")})
    settings = ServeSettings(repository=repo, services=services, webhook_secret=SECRET, submitter=NoRuns(),
                             ui_token=TOKEN, trust_policy=trust_file)
    with running_server(create_app(settings)) as running:
        rows = httpx.get(f"{running.url}/api/deployments", headers=BEARER, timeout=60).json()
        assert [r["verdict"] for r in rows] == ["VERIFIED"]
        root.unlink()
        for path in ("/api/deployments", "/", "/deployments/api/d-1", "/api/annotations"):
            response = httpx.get(f"{running.url}{path}", headers=BEARER, timeout=60)
            assert response.status_code >= 400, (path, response.text)
            assert "VERIFIED" not in response.text and "verified" not in response.text.replace("unverified", "")


# -- afdp find: a hostile repository cannot crash the lookup or make it write elsewhere ----------


@pytest.fixture()
def index_key(tmp_path, monkeypatch):
    path = tmp_path / "auditor-home" / "index.key"
    monkeypatch.setenv("AFDP_INDEX_KEY", str(path))
    return path


def test_a_deeply_nested_index_is_rebuilt_not_a_crash(repo, signer, tsa, index_key):
    from afdp.audit.find import INDEX_FILE, find_deployments, make_query

    build_deployment(repo, signer, tsa, service="api", deployment="d-1")
    path = repo / ".git" / INDEX_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[" * 100_000 + "]" * 100_000)
    found = find_deployments(repo, make_query(commit=None, image=None, service="api", since=None))
    assert [h.facts.deployment for h in found.hits] == ["d-1"]
    assert found.index.read == 1


def test_the_index_write_does_not_follow_a_planted_symlink(repo, signer, tsa, index_key, tmp_path):
    from afdp.audit.find import INDEX_FILE, refresh_index

    build_deployment(repo, signer, tsa, service="api", deployment="d-1")
    victim = tmp_path / "auditor" / "notes.txt"
    victim.parent.mkdir(exist_ok=True)
    victim.write_text("the auditor's own file\n")
    path = repo / ".git" / INDEX_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    # whoever can write the evidence repository plants the temporary name the lookup used
    # (it was predictable: the index's name and the process id)
    os.symlink(victim, path.with_suffix(f".{os.getpid()}.tmp"))
    facts, stats = refresh_index(repo)
    assert [f.deployment for f in facts] == ["d-1"]
    assert victim.read_text() == "the auditor's own file\n"
    assert stats.written and json.loads(path.read_text())["entries"]


def test_a_record_nested_too_deep_fails_its_branch_and_breaks_no_lookup(repo, signer, tsa, index_key, trust_file):
    # Whoever can write the evidence repository replaces a record's envelope by JSON nested
    # deeper than the parser goes (200 KB): the branch fails verification, and the lookup
    # and the dashboard say so instead of crashing.
    import tamper

    from afdp.audit.find import find_deployments, make_query
    from afdp.evidence.trust import load_trust_policy

    build_deployment(repo, signer, tsa, service="api", deployment="d-1")
    build_deployment(repo, signer, tsa, service="api", deployment="d-2")
    envelope = tamper.rec.ENVELOPE_FILE
    deep = b"[" * 100_000 + b"]" * 100_000
    tamper.edit(repo, 1, lambda e: tamper.with_file(e, envelope, deep), service="api", deployment="d-2")
    query = make_query(commit=None, image=None, service="api", since=None)
    assert sorted(h.facts.deployment for h in find_deployments(repo, query).hits) == ["d-1", "d-2"]
    policy = load_trust_policy(trust_file, evidence_repository=repo)
    verdicts = {h.facts.deployment: h.verification for h in find_deployments(repo, query, policy=policy).hits}
    assert verdicts == {"d-1": "verified", "d-2": "failed"}
    dashboard = Dashboard(repo, trust_policy=trust_file, metrics=ServiceMetrics())
    assert {e.deployment: e.verdict for e in dashboard.entries()} == {"d-1": "VERIFIED", "d-2": "FAILED"}


def test_a_services_file_naming_the_reserved_service_models_stops_serve(cli, repo, tmp_path, monkeypatch):
    # afdp/models/<service> holds a service's impact models, and every run refuses to write
    # deployment evidence as service "models". A services file that lists it would answer
    # 202 to events whose runs can only fail (and the dashboard would read the branches of
    # such runs as model branches): it is refused at start-up, like any name AFDP refuses.
    monkeypatch.setenv("AFDP_WEBHOOK_SECRET", SECRET.decode())
    bad = tmp_path / "services.yaml"
    bad.write_text("services:\n  models:\n    prefect_deployment: afdp-evidence/models\n")
    from afdp.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="reserved"):  # first: without the check, serve would serve
        load_services(bad)
    result = cli("serve", "--repo", str(repo), "--config", str(bad))
    assert result.code == 2 and "reserved" in result.err, result.err
    assert len(result.err.strip().splitlines()) == 1
    bad.write_text("services:\n  models.x:\n    prefect_deployment: afdp-evidence/models\n")
    assert "models.x" in load_services(bad).by_name  # only the exact name is reserved


def test_a_verdict_is_cached_under_the_head_it_verified_not_the_head_read_before(repo, signer, tsa, trust_file):
    # Whoever can write the evidence repository flips the branch between a good head and a
    # tampered one while the dashboard verifies. The dashboard read the head (the cache
    # key), then the verifier read it again: a VERIFIED of the good head could be cached
    # under the tampered head, and served for it from then on (a false green). Real Git,
    # a real race: a thread moves the ref back and forth.
    import threading

    import pygit2
    import tamper

    from afdp.evidence.names import branch_ref

    build_deployment(repo, signer, tsa, service="api", deployment="d-1")
    git = pygit2.Repository(str(repo))
    ref = branch_ref("api", "d-1")
    good = git.references[ref].target
    envelope = tamper.rec.ENVELOPE_FILE
    tamper.edit(repo, 1, lambda e: tamper.with_file(e, envelope, e.files[envelope] + b" "),
                service="api", deployment="d-1")
    bad = git.references[ref].target
    assert good != bad
    for _ in range(12):
        dashboard = Dashboard(repo, trust_policy=trust_file, metrics=ServiceMetrics())
        stop = threading.Event()

        def flip(stop=stop):
            flipper = pygit2.Repository(str(repo))
            while not stop.is_set():
                for target in (good, bad):
                    flipper.references.create(ref, target, force=True)

        thread = threading.Thread(target=flip)
        thread.start()
        try:
            seen = dashboard.entry("api", "d-1")
        finally:
            stop.set()
            thread.join()
        git.references.create(ref, bad, force=True)
        now = dashboard.entry("api", "d-1")
        assert now.head == str(bad), (seen.head, now.head)
        assert now.verdict == "FAILED", f"cached {seen.verdict} of {seen.head} served for the tampered head {bad}"


class _Failing500(__import__("http.server").server.BaseHTTPRequestHandler):
    """Stands in for a Prefect API that fails with 500 (a real Prefect server cannot be made
    to fail on demand); its answers are what Prefect's error handler sends."""

    def _fail(self):
        body = b'{"exception_message": "Internal Server Error"}'
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = _fail

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_a_prefect_url_with_credentials_never_shows_in_an_event_status_or_the_log(tmp_path, repo):
    # PREFECT_API_URL may carry credentials (a proxy's Basic auth). httpx names the URL,
    # credentials included, in its error ("... for url 'http://user:pw@host/...'"); the
    # relay kept that text as the delivery's last_error (on disk, in GET /events/<id>) and
    # logged it.
    import threading
    import time
    from contextlib import ExitStack
    from http.server import ThreadingHTTPServer

    from infra import free_port, wait_http
    from infra import start_process as start
    from test_serve_prefect import AFDP, ROOT

    api = ThreadingHTTPServer(("127.0.0.1", 0), _Failing500)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    password = "pr3fect-pa55word-xyz"
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_HOME": str(tmp_path / "prefect-home"),
           "PREFECT_API_URL": f"http://afdp:{password}@127.0.0.1:{api.server_address[1]}/api",
           "PREFECT_CLIENT_MAX_RETRIES": "0", "DO_NOT_TRACK": "1", "AFDP_WEBHOOK_SECRET": SECRET.decode(),
           "AFDP_UI_TOKEN": TOKEN}
    config = tmp_path / "services.yaml"
    config.write_text(SERVICES)
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    try:
        with ExitStack() as stack:
            serve = start(stack, [*AFDP, "serve", "--repo", str(repo), "--config", str(config), "--port", str(port)],
                          env, log)
            wait_http(f"{url}/healthz", seconds=120, process=serve)
            assert post_generic(url, generic()).status_code == 202
            deadline = time.monotonic() + 90
            while True:
                status = httpx.get(f"{url}/events/api/evt-1", headers=BEARER, timeout=10).json()
                if status.get("last_error") or status.get("reason"):
                    break
                assert time.monotonic() < deadline, status
                time.sleep(0.2)
            text = json.dumps(status)
            assert "127.0.0.1" in text or "Prefect" in text  # the error is there, and says where
            assert password not in text, text
        assert password not in log.read_text()
    finally:
        api.shutdown()


def test_grafana_tags_a_decision_only_when_its_evidence_verified(repo, signer, tsa, trust_file):
    # A Grafana panel filtered on the tag decision:mark_successful counted a deployment
    # whose evidence FAILED (or was never checked) as judged successful: the page marks that
    # decision *unverified*, the annotation's tags did not.
    import tamper
    from conftest import add_step

    from afdp.service import ui

    for deployment in ("d-ok", "d-bad"):
        add_step(repo, signer, tsa, "mark_deployment_time", {"deployed_at": "2026-12-04T07:00:00Z"},
                 deployment=deployment)
        add_step(repo, signer, tsa, "decide", {"decision": {"decision": "success", "action": "mark_successful"}},
                 deployment=deployment)
        add_step(repo, signer, tsa, "note", {"x": 1}, deployment=deployment)
    envelope = tamper.rec.ENVELOPE_FILE
    tamper.edit(repo, 3, lambda e: tamper.with_file(e, envelope, e.files[envelope] + b" "), service="api",
                deployment="d-bad")
    checked = Dashboard(repo, trust_policy=trust_file, metrics=ServiceMetrics()).entries()
    unchecked = Dashboard(repo, trust_policy=None, metrics=ServiceMetrics()).entries()
    verdicts = {e.deployment: e.verdict for e in checked}
    assert verdicts == {"d-ok": "UNSEALED", "d-bad": "FAILED"}
    assert all((e.decision or {}).get("action") == "mark_successful" for e in checked)
    tags = {a["title"].split(":")[0]: a for a in ui.grafana_annotations(checked, {}, {})}
    assert "decision:mark_successful" in tags["api/d-ok"]["tags"]
    assert "decision:mark_successful" not in tags["api/d-bad"]["tags"], tags["api/d-bad"]
    assert "decision:unverified" in tags["api/d-bad"]["tags"] and "unverified" in tags["api/d-bad"]["title"]
    for annotation in ui.grafana_annotations(unchecked, {}, {}):
        assert "decision:mark_successful" not in annotation["tags"] and "evidence:unchecked" in annotation["tags"]


def test_the_api_gives_a_decision_only_where_its_evidence_verified(repo, signer, tsa, trust_file):
    # /api/deployments gave a FAILED branch's "mark_successful" as its `decision`, with the
    # verdict beside it: a script that reads `decision` took a tampered branch for a judged
    # success. The claim is now under `unverified_decision`; `decision` is null.
    import tamper
    from conftest import add_step

    for deployment in ("d-ok", "d-bad"):
        add_step(repo, signer, tsa, "decide", {"decision": {"decision": "success", "action": "mark_successful"}},
                 deployment=deployment)
        add_step(repo, signer, tsa, "note", {"x": 1}, deployment=deployment)
    envelope = tamper.rec.ENVELOPE_FILE
    tamper.edit(repo, 2, lambda e: tamper.with_file(e, envelope, e.files[envelope] + b" "), service="api",
                deployment="d-bad")
    services = Services({"api": ServiceConfig("api", "afdp-evidence/api")})
    for trust, expected in ((trust_file, {"d-ok": "UNSEALED", "d-bad": "FAILED"}), (None, {"d-ok": "UNCHECKED", "d-bad": "UNCHECKED"})):
        settings = ServeSettings(repository=repo, services=services, webhook_secret=SECRET, submitter=NoRuns(),
                                 ui_token=TOKEN, trust_policy=trust)
        with running_server(create_app(settings)) as running:
            rows = {r["deployment"]: r for r in httpx.get(f"{running.url}/api/deployments", headers=BEARER, timeout=60).json()}
        assert {d: r["verdict"] for d, r in rows.items()} == expected
        for row in rows.values():
            if row["verdict"] == "UNSEALED":
                assert (row["decision"], row["label"], row["unverified_decision"]) == ("mark_successful", None, None)
            else:
                assert (row["decision"], row["label"], row["reason"]) == (None, None, None), row
                # FAILED: the branch's claim, named as such; UNCHECKED: nothing was read
                claim = row["unverified_decision"]
                assert (claim or {}).get("decision") == ("mark_successful" if row["verdict"] == "FAILED" else None), row


def test_a_team_or_service_filter_never_hides_a_look_alike_branch(repo, signer, tsa, trust_file):
    # docs/service.md: "a filter never hides a failure". A ref under refs/heads/afdp/ that
    # is no AFDP branch name (git lists it beside the real ones) read FAILED on the full
    # list only: filtered by team (whose it is cannot be read) or by its service, the view
    # was all green.
    import pygit2

    from afdp.evidence.names import branch_ref

    build_deployment(repo, signer, tsa, service="api", deployment="d-1")
    git = pygit2.Repository(str(repo))
    head = git.references[branch_ref("api", "d-1")].target
    git.references.create("refs/heads/afdp/api/d-2-\u00e9", head)  # not ASCII: never an AFDP name
    git.references.create("refs/heads/afdp/\u0430pi/d-1", head)  # Cyrillic a: looks like api
    dashboard = Dashboard(repo, trust_policy=trust_file, metrics=ServiceMetrics())
    every = {(e.service, e.deployment): e.verdict for e in dashboard.entries()}
    assert every[("api", "d-1")] == "VERIFIED"
    assert every[("api", "d-2-\u00e9")] == "FAILED" and every[("\u0430pi", "d-1")] == "FAILED"
    of_team = {(e.service, e.deployment): e.verdict for e in dashboard.entries(team="payments")}
    assert of_team == {("api", "d-2-\u00e9"): "FAILED", ("\u0430pi", "d-1"): "FAILED"}
    of_service = {(e.service, e.deployment): e.verdict for e in dashboard.entries(service="api")}
    assert of_service == {("api", "d-1"): "VERIFIED", ("api", "d-2-\u00e9"): "FAILED"}


def test_an_index_key_inside_the_evidence_repository_is_refused(cli, repo, signer, tsa, monkeypatch):
    # The index's MAC is all that stops whoever writes the evidence repository from editing
    # an entry to hide a deployment (an entry that names another commit is never a
    # candidate). A key kept inside that repository is readable by that writer: refused,
    # exit 2, as a trust policy there is, instead of a lookup that can be made to miss.
    build_deployment(repo, signer, tsa, service="api", deployment="d-1")
    for inside in (repo / ".git" / "afdp" / "index.key", repo / "keys" / "index.key"):
        monkeypatch.setenv("AFDP_INDEX_KEY", str(inside))
        result = cli("find", "--repo", str(repo), "--service", "api")
        assert result.code == 2, (inside, result.out, result.err)
        assert "inside the evidence repository" in result.err and len(result.err.strip().splitlines()) == 1
        assert not inside.exists()


def test_a_body_with_a_duplicate_key_is_400(server):
    # {"service": "api", ..., "service": "shop"}: JSON parsers disagree on which one counts
    # (Python's takes the last, many take the first), so what the sender's tooling showed
    # and what AFDP records could differ. Such a body is ambiguous: refused, not guessed.
    body = json.dumps(generic()).encode()[:-1] + b', "team": "other-team"}'
    response = post_generic(server.url, None, raw=body)
    assert response.status_code == 400, response.text
    assert "duplicate" in response.json()["error"]
    nested = github_payload()
    raw = json.dumps(nested).encode().replace(b'"ref": "main"', b'"ref": "main", "ref": "evil"')
    headers = {"Content-Type": "application/json", "X-GitHub-Event": "deployment_status",
               "X-GitHub-Delivery": "dup-1", "X-Hub-Signature-256": sign(SECRET, raw)}
    response = httpx.post(f"{server.url}/events/github", content=raw, headers=headers, timeout=10)
    assert response.status_code == 400, response.text
    assert_nothing_started(server)


# -- promises of docs/service.md that had no test -------------------------------------------------


def test_a_session_cannot_be_extended_forged_or_outlive_a_token_change(repo, services):
    import time

    from afdp.errors import UsageError
    from afdp.service.app import SESSION_SECONDS, _session_value

    def app_with(token):
        return create_app(ServeSettings(repository=repo, services=services, webhook_secret=SECRET,
                                        submitter=NoRuns(), ui_token=token))

    with running_server(app_with(TOKEN)) as running:
        login = httpx.post(f"{running.url}/login", data={"token": TOKEN}, follow_redirects=False)
        cookie = login.cookies["afdp_session"]
        assert httpx.get(f"{running.url}/api/deployments", cookies={"afdp_session": cookie}).status_code == 200
        expires, _, mac = cookie.partition(".")
        assert int(expires) <= time.time() + SESSION_SECONDS + 5
        # its expiry is under its MAC: a later one (same MAC) is no session
        for forged in (f"{int(expires) + 3600}.{mac}", f"{expires}.{'0' * 64}", f"{expires}", "", f"9{expires}.{mac}",
                       f"{expires}.{mac}.x", f"-1.{mac}", f"\u0661{expires}.{mac}"):
            answer = httpx.get(f"{running.url}/api/deployments",
                               headers={"Cookie": f"afdp_session={forged}".encode()})  # raw: any bytes
            assert answer.status_code == 401, forged
        # made with the token but already over, or reaching beyond the 12 hours: refused
        now = int(time.time())
        for stale in (_session_value(TOKEN, now - 1), _session_value(TOKEN, now + SESSION_SECONDS + 3600)):
            assert httpx.get(f"{running.url}/api/deployments", cookies={"afdp_session": stale}).status_code == 401
        # logging out deletes the cookie from the browser
        out = httpx.post(f"{running.url}/logout", cookies={"afdp_session": cookie}, follow_redirects=False)
        assert out.status_code == 303 and "afdp_session=" in out.headers["set-cookie"]
        assert "max-age=0" in out.headers["set-cookie"].lower() or "expires=thu, 01 jan 1970" in out.headers["set-cookie"].lower()
    # AFDP_UI_TOKEN changed (a restart with the new one): every session ends at once
    with running_server(app_with(TOKEN + "-rotated")) as running:
        assert httpx.get(f"{running.url}/api/deployments", cookies={"afdp_session": cookie}).status_code == 401
    # a UI token under 16 bytes is refused
    with pytest.raises(UsageError, match="at least 16 bytes"):
        app_with("short-token")


def test_service_names_that_differ_only_in_case_are_refused(tmp_path):
    # "api" and "API" are two services to AFDP, one to a reader of the dashboard, and one
    # loose ref file on a case-insensitive file system (a worker or the central remote on
    # macOS or Windows): their branches would collide. A services file with both is refused.
    from afdp.errors import ConfigurationError

    path = tmp_path / "services.yaml"
    path.write_text("services:\n  api:\n    prefect_deployment: a/api\n  API:\n    prefect_deployment: a/API\n")
    with pytest.raises(ConfigurationError, match="differ only in case"):
        load_services(path)
    path.write_text("services:\n  api:\n    prefect_deployment: a/api\n  api-2:\n    prefect_deployment: a/api2\n")
    assert sorted(load_services(path).by_name) == ["api", "api-2"]


def test_a_trust_policy_that_does_not_load_stops_serve_at_start(cli, repo, services, tmp_path, monkeypatch):
    # A new user's typo in the trust policy (or one inside the evidence repository): serve
    # started, and every dashboard page then answered an error. It fails at start, exit 2.
    from afdp.errors import AfdpError

    bad = tmp_path / "auditor" / "trust.yaml"
    bad.parent.mkdir()
    bad.write_text("signers: [unclosed\n")
    inside = repo / "trust.yaml"
    inside.write_text("signers: []\n")
    for policy in (bad, inside):
        with pytest.raises(AfdpError):  # first: without the check, serve below would serve
            create_app(ServeSettings(repository=repo, services=services, webhook_secret=SECRET, submitter=NoRuns(),
                                     ui_token=TOKEN, trust_policy=policy))
    monkeypatch.setenv("AFDP_WEBHOOK_SECRET", SECRET.decode())
    config = tmp_path / "services.yaml"
    for policy, words in ((bad, "not valid YAML"), (inside, "inside the evidence repository")):
        result = cli("serve", "--repo", str(repo), "--config", str(config), "--trust", str(policy))
        assert result.code == 2 and words in result.err, result.err


def test_an_ipv6_client_cannot_escape_its_limit_by_changing_addresses_in_its_network():
    # One IPv6 client holds a whole /64 (2^64 addresses it may use at will): counted per
    # address, each new address got 5 free guesses and no delay. The limit holds per /64,
    # and an IPv4 client seen as an IPv4-mapped IPv6 address is that IPv4 address.
    from afdp.service.throttle import LoginLimits, LoginThrottle

    throttle = LoginThrottle(LoginLimits(free_failures=2, first_delay=60, global_burst=1000))
    for n in range(3):
        assert throttle.check(f"2001:db8:1:2::{n + 1:x}") is None
        throttle.failure(f"2001:db8:1:2::{n + 1:x}")
    limited = throttle.check("2001:db8:1:2:ffff::9")
    assert limited is not None and limited.limit == "address"
    assert throttle.check("2001:db8:1:3::1") is None  # another network is not held
    for _ in range(3):
        throttle.failure("::ffff:192.0.2.7")
    assert throttle.check("192.0.2.7") is not None
    assert throttle.check("192.0.2.8") is None
    throttle.success("2001:db8:1:2::abcd")  # a right token from the network starts it afresh
    assert throttle.check("2001:db8:1:2::1") is None
    assert throttle.check("unknown") is None  # not an address: counted as given


def test_submit_deployment_run_never_names_the_prefect_url_credentials(tmp_path):
    # The library call itself (afdp.pipeline.flow.submit_deployment_run), not only the
    # relay: its NetworkError named PREFECT_API_URL with user:password.
    import subprocess
    import sys
    import threading
    from http.server import ThreadingHTTPServer

    from test_serve_prefect import ROOT

    api = ThreadingHTTPServer(("127.0.0.1", 0), _Failing500)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    password = "pr3fect-pa55word-xyz"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_HOME": str(tmp_path / "prefect-home"),
           "PREFECT_API_URL": f"http://afdp:{password}@127.0.0.1:{api.server_address[1]}/api",
           "PREFECT_CLIENT_MAX_RETRIES": "0", "DO_NOT_TRACK": "1"}
    script = (
        "from afdp.pipeline.flow import submit_deployment_run\n"
        "from afdp.errors import NetworkError\n"
        "try:\n"
        "    submit_deployment_run('afdp-run/api', parameters={}, idempotency_key='api/d-1')\n"
        "except NetworkError as exc:\n"
        "    print('NetworkError:', exc)\n"
    )
    try:
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    finally:
        api.shutdown()
    assert "NetworkError:" in done.stdout, done.stdout + done.stderr
    assert "127.0.0.1" in done.stdout  # it still says where
    assert password not in done.stdout + done.stderr, done.stdout
