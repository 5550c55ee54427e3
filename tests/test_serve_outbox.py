"""The intake's durable outbox: 202 once the event is on disk, flow runs created after.

The fast tests serve the real app over HTTP on loopback with test doubles of the
submitter (subclasses of the real :class:`afdp.service.submit.RunSubmitter`: one that
blocks, one that fails the way the Prefect submitter fails), because they steer *when*
and *how* a submission fails. The slow test runs ``afdp serve`` as a process with the
real Prefect submitter: first against a closed port (Prefect down), killed with SIGKILL
after its 202s, then restarted against a real Prefect server.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import yaml
from test_serve_intake import (
    SECRET,
    SERVICES,
    TOKEN,
    RecordingSubmitter,
    drained,
    generic,
    metric,
    post_generic,
)

from afdp.errors import ConfigurationError
from afdp.service.app import ServeSettings, create_app, default_ledger_path, running_server
from afdp.service.config import load_services
from afdp.service.deliveries import DeliveryLedger

AUTH = {"Authorization": f"Bearer {TOKEN}"}


class GatedSubmitter(RecordingSubmitter):
    """Test double: a Prefect API that answers only once ``gate`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def submit(self, event):
        assert self.gate.wait(30)
        return super().submit(event)


class MissingDeployment(RecordingSubmitter):
    """Test double: the Prefect server has no such deployment (a permanent failure)."""

    def submit(self, event):
        if self.fail:
            raise ConfigurationError(f"no Prefect deployment {event.service.prefect_deployment!r} on the server")
        return super().submit(event)


@pytest.fixture()
def services(tmp_path: Path):
    path = tmp_path / "services.yaml"
    path.write_text(SERVICES)
    return load_services(path)


def settings(repo, services, submitter, **overrides) -> ServeSettings:
    base = ServeSettings(repository=repo, services=services, webhook_secret=SECRET, submitter=submitter,
                         ui_token=TOKEN, max_body=4096, first_retry=0.05, max_retry=0.2)
    return dataclasses.replace(base, **overrides)


def status(url: str, delivery: str) -> dict:
    answer = httpx.get(f"{url}/events/{delivery}", headers=AUTH, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def wait_state(url: str, delivery: str, state: str, *, seconds: float = 15, attempts: int = 0) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        found = status(url, delivery)
        if found["state"] == state and found["attempts"] >= attempts:
            return found
        assert time.monotonic() < deadline, found
        time.sleep(0.03)


def test_the_202_comes_at_once_and_the_status_follows_the_run(repo, services):
    submitter = GatedSubmitter()
    with running_server(create_app(settings(repo, services, submitter))) as server:
        try:
            started = time.monotonic()
            answer = post_generic(server.url, generic())
            assert answer.status_code == 202 and time.monotonic() - started < 5
            assert answer.json()["status"] == "/events/api/evt-1"
            queued = status(server.url, "api/evt-1")
            assert queued["state"] == "queued" and "flow_run_id" not in queued
            assert queued["branch"] == "refs/heads/afdp/api/20261204T070000Z-4f2a9c1e0b"
            assert metric(server.url, "afdp_outbox_depth") == 1
            assert metric(server.url, "afdp_runs_submitted_total") == 0
        finally:
            submitter.gate.set()
        done = wait_state(server.url, "api/evt-1", "submitted")
        assert done["flow_run_id"] == "run-1" and done["attempts"] == 1
        assert metric(server.url, "afdp_outbox_depth") == 0
        assert metric(server.url, "afdp_runs_submitted_total", service="api") == 1
        assert post_generic(server.url, generic()).status_code == 409  # a duplicate, after the run too


def test_a_failing_submission_is_retried_with_backoff_and_shows_its_error(repo, services):
    submitter = RecordingSubmitter(fail=True)
    with running_server(create_app(settings(repo, services, submitter))) as server:
        assert post_generic(server.url, generic()).status_code == 202
        queued = wait_state(server.url, "api/evt-1", "queued", attempts=3)
        assert "connection refused" in queued["last_error"]
        assert queued["next_attempt_at"]
        assert metric(server.url, "afdp_run_submit_failures_total", service="api") >= 3
        assert metric(server.url, "afdp_outbox_depth") == 1
        assert metric(server.url, "afdp_outbox_oldest_age_seconds") > 0
        # the sender's own retry is a duplicate: the event is already kept
        assert post_generic(server.url, generic()).status_code == 409
        submitter.fail = False
        done = wait_state(server.url, "api/evt-1", "submitted")
        assert done["flow_run_id"] == "run-1" and "last_error" not in done
        assert len(submitter.events) == 1
        assert metric(server.url, "afdp_outbox_oldest_age_seconds") == 0


def test_a_permanent_failure_shows_its_reason_and_a_redelivery_is_accepted(repo, services):
    submitter = MissingDeployment(fail=True)
    with running_server(create_app(settings(repo, services, submitter))) as server:
        assert post_generic(server.url, generic()).status_code == 202
        failed = wait_state(server.url, "api/evt-1", "failed")
        assert failed["reason"] == "no Prefect deployment 'afdp-evidence/api' on the server"
        assert failed["attempts"] == 1 and "flow_run_id" not in failed  # not retried: waiting will not help
        assert metric(server.url, "afdp_outbox_failed") == 1
        assert metric(server.url, "afdp_outbox_depth") == 0
        # the operator deploys it, then redelivers: a failed delivery created nothing, so it is taken again
        submitter.fail = False
        again = post_generic(server.url, generic())
        assert again.status_code == 202, again.text
        assert wait_state(server.url, "api/evt-1", "submitted")["flow_run_id"] == "run-1"
        assert metric(server.url, "afdp_outbox_failed") == 0


def test_an_event_not_submitted_in_time_is_given_up_with_the_last_error(repo, services):
    submitter = RecordingSubmitter(fail=True)
    with running_server(create_app(settings(repo, services, submitter, give_up_after=0.3))) as server:
        assert post_generic(server.url, generic()).status_code == 202
        failed = wait_state(server.url, "api/evt-1", "failed")
        assert failed["reason"].startswith("gave up after ") and "connection refused" in failed["reason"]


def test_a_restart_resumes_what_was_queued(repo, services):
    failing = RecordingSubmitter(fail=True)
    slow = settings(repo, services, failing, first_retry=300, max_retry=300)
    with running_server(create_app(slow)) as server:
        assert post_generic(server.url, generic()).status_code == 202
        wait_state(server.url, "api/evt-1", "queued", attempts=1)  # its next attempt is 5 minutes away
    working = RecordingSubmitter()
    with running_server(create_app(settings(repo, services, working))) as server:
        # resumed at start-up, without waiting out the back-off of the process that is gone
        assert wait_state(server.url, "api/evt-1", "submitted", seconds=10)["flow_run_id"] == "run-1"
        assert post_generic(server.url, generic()).status_code == 409
    assert len(working.events) == 1 and working.events[0].info["deployer"] == "alice"


def test_a_service_removed_from_the_services_file_fails_its_queued_event(repo, services, tmp_path):
    with running_server(create_app(settings(repo, services, RecordingSubmitter(fail=True), first_retry=300))) as server:
        assert post_generic(server.url, generic(service="shop", event_id="evt-shop")).status_code == 202
        wait_state(server.url, "shop/evt-shop", "queued", attempts=1)
    fewer = tmp_path / "fewer.yaml"
    fewer.write_text("services:\n  api:\n    prefect_deployment: afdp-evidence/api\n")
    submitter = RecordingSubmitter()
    with running_server(create_app(settings(repo, load_services(fewer), submitter))) as server:
        failed = wait_state(server.url, "shop/evt-shop", "failed")
        assert failed["reason"] == "unknown service 'shop'"
    assert submitter.events == []


def test_an_outbox_that_cannot_be_written_answers_503_and_keeps_nothing(repo, services):
    submitter = RecordingSubmitter()
    app = create_app(settings(repo, services, submitter))
    db = app.state.ledger._db  # the ledger's own connection: SQLite's read-only and disk-full errors, for real
    with running_server(app) as server:
        db.execute("PRAGMA query_only = ON")  # as a read-only file system
        answer = post_generic(server.url, generic())
        assert answer.status_code == 503 and answer.headers["retry-after"] == "30"
        assert answer.json()["reason"] == "outbox_unavailable"
        assert "readonly" in answer.json()["error"]
        assert str(app.state.ledger.path.parent) not in answer.text  # the sender learns no server path
        db.execute("PRAGMA query_only = OFF")
        # a full disk: no page may be added
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages}")
        answers = []
        for n in range(60):
            answers.append(post_generic(server.url, generic(event_id=f"full-{n}", deployment=f"full-{n}",
                                                            version="v" * 200, deployer="d" * 200)).status_code)
            if answers[-1] != 202:
                break
        assert answers[-1] == 503, answers
        refused = [f"full-{n}" for n, code in enumerate(answers) if code == 503]
        for delivery in refused:  # nothing of a refused event was kept
            assert app.state.ledger.status(delivery) is None
        db.execute("PRAGMA max_page_count = 1073741823")
        # the sender's retry is accepted once the outbox can be written again
        assert post_generic(server.url, generic()).status_code == 202
        assert post_generic(server.url, generic(event_id=refused[0], deployment=refused[0])).status_code == 202
        drained(server)
        assert metric(server.url, "afdp_events_rejected_total", reason="outbox_unavailable") == 1 + len(refused)


def test_event_status_needs_the_token_and_an_unknown_delivery_is_404(repo, services):
    with running_server(create_app(settings(repo, services, RecordingSubmitter()))) as server:
        assert post_generic(server.url, generic()).status_code == 202
        assert httpx.get(f"{server.url}/events/api/evt-1").status_code == 401
        assert httpx.get(f"{server.url}/events/api/evt-1", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert httpx.get(f"{server.url}/events/no-such", headers=AUTH).status_code == 404
        assert status(server.url, "api/evt-1")["service"] == "api"


def test_a_ledger_from_before_the_outbox_is_migrated(repo, tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE deliveries (delivery TEXT PRIMARY KEY, service TEXT NOT NULL, deployment TEXT NOT NULL,
            received_at TEXT NOT NULL, flow_run TEXT, UNIQUE (service, deployment));
        INSERT INTO deliveries VALUES ('d-1', 'api', 'rel-1', '2026-12-01T00:00:00+00:00', 'run-old');
        INSERT INTO deliveries VALUES ('d-2', 'api', 'rel-2', '2026-12-01T00:00:00+00:00', NULL);
    """)
    db.commit()
    db.close()
    ledger = DeliveryLedger(path)
    try:
        first, second = ledger.status("d-1"), ledger.status("d-2")
        assert first is not None and first.state == "submitted" and first.flow_run == "run-old"
        assert second is not None and second.state == "failed" and "never recorded" in (second.error or "")
        assert ledger.depth() == 0
    finally:
        ledger.close()


# -- the real command, the real Prefect submitter -----------------------------------------


@pytest.mark.slow
def test_prefect_down_then_back_nothing_lost_nothing_twice(tmp_path, repo):
    """``afdp serve`` answers 202 while Prefect is unreachable, is killed (SIGKILL) with the
    events still queued, and once restarted against a live Prefect server creates each
    run once: an event whose run Prefect had already created (a crash between "created"
    and "recorded") gets that same run, and an event for a deployment Prefect does not
    have, or refuses as invalid, fails with the reason."""
    from infra import free_port, wait_http
    from infra import start_process as start
    from test_serve_prefect import AFDP, ROOT

    # the flow's required parameters (no worker runs these flow runs: only their creation is tested)
    RUN = {"workflow_path": "wf.yaml", "repository": str(repo), "key": "dev.key", "tsa_urls": ["http://127.0.0.1:1/"]}

    prefect_port, closed_port, serve_port = free_port(), free_port(), free_port()
    api = f"http://127.0.0.1:{prefect_port}/api"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_HOME": str(tmp_path / "prefect-home"),
           "PREFECT_API_URL": api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
           "DO_NOT_TRACK": "1", "AFDP_PROJECT_DIR": str(ROOT), "AFDP_WEBHOOK_SECRET": SECRET.decode(),
           "AFDP_UI_TOKEN": TOKEN}
    down = {**env, "PREFECT_API_URL": f"http://127.0.0.1:{closed_port}/api"}
    config = tmp_path / "services.yaml"
    config.write_text(yaml.safe_dump({"services": {
        "alpha": {"prefect_deployment": "afdp-evidence/alpha", "parameters": RUN},
        "ghost": {"prefect_deployment": "afdp-evidence/ghost"},  # never deployed
        "beta": {"prefect_deployment": "afdp-evidence/alpha"},  # no workflow_path: Prefect refuses its runs
    }}))
    shipped = yaml.safe_load((ROOT / "flows" / "prefect.yaml").read_text())
    deployment = dict(shipped["deployments"][0], name="alpha", parameters={}, work_pool={"name": "afdp-outbox"})
    prefect_file = tmp_path / "prefect.yaml"
    prefect_file.write_text(yaml.safe_dump({**shipped, "deployments": [deployment]}))
    url = f"http://127.0.0.1:{serve_port}"
    serve_args = [*AFDP, "serve", "--repo", str(repo), "--config", str(config), "--port", str(serve_port)]
    events = {f"{service}/e-{n}": generic(event_id=f"e-{n}", service=service, deployment=f"rel-{n}")
              for n, service in ((1, "alpha"), (2, "alpha"), (3, "ghost"), (4, "beta"))}

    with ExitStack() as stack:
        # the Prefect server starts meanwhile, on another port: afdp serve cannot reach it yet
        server = start(stack, ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
                       env, tmp_path / "prefect-server.log")
        serve = start(stack, serve_args, down, tmp_path / "serve-down.log")
        wait_http(f"{url}/healthz", seconds=120, process=serve)
        for delivery, event in events.items():
            began = time.monotonic()
            answer = post_generic(url, event)
            assert answer.status_code == 202, answer.text
            assert time.monotonic() - began < 5  # far inside GitHub's 10 s, Prefect or not
            assert answer.json()["delivery"] == delivery
        queued = wait_state(url, "alpha/e-1", "queued", seconds=60, attempts=1)
        assert "could not create a flow run of afdp-evidence/alpha" in queued["last_error"]
        assert post_generic(url, events["alpha/e-1"]).status_code == 409
        os.killpg(serve.pid, signal.SIGKILL)  # a crash: no shutdown of any kind
        serve.wait(10)

        ledger = DeliveryLedger(default_ledger_path(repo))
        try:
            kept = {d: ledger.status(d) for d in events}
            assert all(row is not None and row.state == "queued" for row in kept.values()), kept
        finally:
            ledger.close()

        wait_http(f"{api}/health", seconds=180, process=server)
        for args in (["prefect", "work-pool", "create", "afdp-outbox", "--type", "process"],
                     ["prefect", "--no-prompt", "deploy", "--prefect-file", str(prefect_file), "--all"]):
            done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stdout + done.stderr
        # e-2's run was created before the crash, but never recorded against its delivery
        found = httpx.get(f"{api}/deployments/name/afdp-evidence/alpha", timeout=30).json()
        early = httpx.post(f"{api}/deployments/{found['id']}/create_flow_run", timeout=30,
                           json={"idempotency_key": "afdp:alpha/rel-2", "name": "alpha-rel-2",
                                 "parameters": {**RUN, "service": "alpha", "deployment": "rel-2"}}).json()
        assert "id" in early, early

        serve = start(stack, serve_args, env, tmp_path / "serve-up.log")
        wait_http(f"{url}/healthz", seconds=120, process=serve)
        first = wait_state(url, "alpha/e-1", "submitted", seconds=120)
        second = wait_state(url, "alpha/e-2", "submitted", seconds=120)
        assert second["flow_run_id"] == early["id"]  # the same run, not a second one
        ghost = wait_state(url, "ghost/e-3", "failed", seconds=120)
        assert ghost["reason"] == "no Prefect deployment 'afdp-evidence/ghost' on the server"
        refused = wait_state(url, "beta/e-4", "failed", seconds=120)
        assert refused["attempts"] == 1  # not retried for a day: the server said no
        assert "refused a flow run of afdp-evidence/alpha (409)" in refused["reason"]
        assert "'workflow_path' is a required property" in refused["reason"]
        runs = httpx.post(f"{api}/flow_runs/filter", timeout=30,
                          json={"flow_runs": {"deployment_id": {"any_": [found["id"]]}}}).json()
        assert sorted(r["id"] for r in runs) == sorted([first["flow_run_id"], early["id"]])
        assert {r["id"]: r["parameters"].get("deployment") for r in runs}[first["flow_run_id"]] == "rel-1"
        assert post_generic(url, events["alpha/e-1"]).status_code == 409
        assert metric(url, "afdp_outbox_depth") == 0 and metric(url, "afdp_outbox_failed") == 2
    for log in ("serve-down.log", "serve-up.log"):
        assert "Traceback" not in (tmp_path / log).read_text(), log


def test_the_outbox_is_durable_across_a_killed_process(repo, services, tmp_path):
    """A process that answered 202 and is then killed (SIGKILL, mid-flight) left the event
    committed: a fresh ledger reads it back, queued."""
    script = tmp_path / "accept.py"
    script.write_text(
        "import json, os, signal, sys\n"
        "from pathlib import Path\n"
        "from afdp.service.deliveries import DeliveryLedger\n"
        "ledger = DeliveryLedger(Path(sys.argv[1]))\n"
        "ledger.accept(delivery='d-1', service='api', deployment='rel-1', source='generic', event={'x': 1})\n"
        "print('accepted', flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    path = tmp_path / "ledger.sqlite"
    done = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == -signal.SIGKILL and done.stdout == "accepted\n", done.stderr
    ledger = DeliveryLedger(path)
    try:
        row = ledger.status("d-1")
        assert row is not None and row.state == "queued" and json.loads(json.dumps(row.event)) == {"x": 1}
        assert ledger.depth() == 1
    finally:
        ledger.close()
