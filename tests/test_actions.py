"""Actions: real subprocesses (argv, no shell) and a real HTTP receiver on loopback."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from afdp.pipeline.actions import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    ActionResult,
    perform_action,
    verify_signature,
)
from afdp.pipeline.decide import DecisionOutcome, GateOutcome
from afdp.workflow.compiler import compile_document
from afdp.workflow.interpolation import parse_template
from afdp.workflow.loader import parse
from afdp.workflow.model import ActionSpec
from afdp.workflow.units import parse_duration

SECRET = "s3cr3t-hook-key-value"


def outcome(action: str = "rollback") -> DecisionOutcome:
    return DecisionOutcome(
        decision="auto_rollback" if action == "rollback" else "alert_only",
        action=action,
        label="rollback" if action == "rollback" else "degraded",
        success_criteria_met=False,
        criteria=(),
        evaluated=(),
        reason="test",
    )


def command_spec(*argv: str, timeout: str = "10s", action: str = "rollback") -> ActionSpec:
    return ActionSpec(
        action=action,  # type: ignore[arg-type]
        command=tuple(parse_template(a) for a in argv),
        webhook=None,
        secret=None,
        timeout=parse_duration(timeout),
    )


def webhook_spec(
    url: str, *, secret: str | None = "${env.HOOK_KEY}", timeout: str = "5s"
) -> ActionSpec:
    return ActionSpec(
        action="alert",
        command=None,
        webhook=parse_template(url),
        secret=parse_template(secret) if secret else None,
        timeout=parse_duration(timeout),
    )


VALUES = {"deployment": {"service": "api", "id": "d-42"}, "workflow": {}, "steps": {}}
ENV = {"HOOK_KEY": SECRET, "TOKEN": "tok-123456789", "PATH": "/usr/bin:/bin"}


def no_secret(result: ActionResult) -> None:
    text = json.dumps(result.to_json())
    assert SECRET not in text and "tok-123456789" not in text


# --- commands ------------------------------------------------------------------------


def test_command_runs_with_rendered_argv_and_records_output() -> None:
    spec = command_spec(
        sys.executable,
        "-c",
        "import sys; print('undo', sys.argv[1])",
        "deployment/${deployment.service}",
    )
    result = perform_action(spec, outcome(), values=VALUES, env=ENV, payload={})
    assert result.ok and result.status == "ok" and result.kind == "command"
    assert result.exit_code == 0 and result.output.strip() == "undo deployment/api"
    assert "deployment/api" in result.target
    assert result.to_json()["duration_seconds"] >= 0


def test_failing_command_is_a_failed_result() -> None:
    spec = command_spec(
        sys.executable, "-c", "import sys; print('nope: no such deployment'); sys.exit(3)"
    )
    result = perform_action(spec, outcome(), values=VALUES, env=ENV, payload={})
    assert result.status == "failed" and result.exit_code == 3
    assert "exited with status 3" in result.detail and "no such deployment" in result.detail


def test_missing_program_is_a_failed_result() -> None:
    spec = command_spec("/nonexistent/kubectl-afdp-test", "rollout", "undo")
    result = perform_action(spec, outcome(), values=VALUES, env=ENV, payload={})
    assert result.status == "failed" and result.exit_code is None
    assert "not found" in result.detail


# The timeouts below are what a command gets to start (a Python interpreter: 0.3 s on
# a 2-core machine at load 4) and do its first step before it is killed; under 1 s they
# were a race with a loaded CI machine, which the assertions on what the command had
# printed (or left behind) by then would lose.
def test_command_is_killed_after_its_timeout() -> None:
    spec = command_spec(
        sys.executable,
        "-c",
        "import time; print('started', flush=True); time.sleep(120)",
        timeout="5s",
    )
    started = time.monotonic()
    result = perform_action(spec, outcome(), values=VALUES, env=ENV, payload={})
    assert time.monotonic() - started < 60  # killed at 5 s, not after the 120 s sleep
    assert result.status == "failed" and "timed out after 5s" in result.detail
    assert "started" in (result.output or "")


def test_no_shell_interprets_the_arguments(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    spec = command_spec(
        sys.executable,
        "-c",
        "import sys; print(sys.argv[1])",
        f"$(touch {marker}); `touch {marker}`",
    )
    result = perform_action(spec, outcome(), values=VALUES, env=ENV, payload={})
    assert result.ok and not marker.exists()
    assert "$(touch" in result.output


def test_secrets_never_reach_the_result() -> None:
    spec = command_spec(
        sys.executable, "-c", "import sys; print('token is', sys.argv[1])", "--token=${env.TOKEN}"
    )
    result = perform_action(spec, outcome(), values=VALUES, env=ENV, payload={})
    assert result.ok
    assert "[redacted env.TOKEN]" in result.target and "[redacted env.TOKEN]" in result.output
    no_secret(result)


def test_unset_secret_fails_without_raising() -> None:
    spec = command_spec("echo", "${env.MISSING_TOKEN}")
    result = perform_action(spec, outcome(), values=VALUES, env=ENV, payload={})
    assert result.status == "failed" and "MISSING_TOKEN" in result.detail


def test_not_configured_and_mismatch() -> None:
    result = perform_action(None, outcome("mark_successful"), values=VALUES, env=ENV, payload={})
    assert result.status == "not_configured" and result.kind is None
    with pytest.raises(ValueError, match="different|given for"):
        perform_action(command_spec("true"), outcome("alert"), values=VALUES, env=ENV, payload={})


# --- webhooks ------------------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    delay: float = 0.0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP server on loopback that records what it receives."""
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.requests.append({"headers": dict(self.headers), "body": body, "path": self.path})
            if state.delay:
                time.sleep(state.delay)
            self.send_response(state.status)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"received")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def test_webhook_is_signed_and_verifiable_by_the_receiver(receiver: Receiver) -> None:
    spec = webhook_spec(receiver.url + "/hooks/${deployment.service}")
    payload = {"service": "api", "deployment": "d-42", "metrics": {"error_rate": 0.02}}
    result = perform_action(spec, outcome("alert"), values=VALUES, env=ENV, payload=payload)
    assert result.ok and result.http_status == 200 and result.signed
    assert result.target == receiver.url + "/hooks/api"
    (request,) = receiver.requests
    headers = {k.lower(): v for k, v in request["headers"].items()}
    body: bytes = request["body"]
    # the receiver's own check, independent of AFDP's code
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers[SIGNATURE_HEADER.lower()], expected)
    assert verify_signature(SECRET.encode(), body, headers[SIGNATURE_HEADER.lower()])
    assert not verify_signature(b"wrong key", body, headers[SIGNATURE_HEADER.lower()])
    assert not verify_signature(SECRET.encode(), body + b" ", headers[SIGNATURE_HEADER.lower()])
    document = json.loads(body)
    assert document["type"] == "afdp.action" and document["action"] == "alert"
    assert document["payload"] == payload and document["outcome"]["decision"] == "alert_only"
    sent = int(headers[TIMESTAMP_HEADER.lower()])
    assert abs(sent - time.time()) < 60
    assert document["sent_at"].endswith("Z")
    assert headers["content-type"] == "application/json"
    assert request["path"] == "/hooks/api"
    no_secret(result)


def test_unsigned_webhook_when_no_secret(receiver: Receiver) -> None:
    result = perform_action(
        webhook_spec(receiver.url, secret=None),
        outcome("alert"),
        values=VALUES,
        env=ENV,
        payload={},
    )
    assert result.ok and not result.signed
    assert SIGNATURE_HEADER.lower() not in {k.lower() for k in receiver.requests[0]["headers"]}


def test_webhook_error_status_is_failed(receiver: Receiver) -> None:
    receiver.status = 500
    result = perform_action(
        webhook_spec(receiver.url), outcome("alert"), values=VALUES, env=ENV, payload={}
    )
    assert result.status == "failed" and result.http_status == 500
    assert result.output == "received"


def test_slow_webhook_times_out(receiver: Receiver) -> None:
    receiver.delay = 2.0
    result = perform_action(
        webhook_spec(receiver.url, timeout="300ms"),
        outcome("alert"),
        values=VALUES,
        env=ENV,
        payload={},
    )
    assert result.status == "failed" and "no answer within 300ms" in result.detail


def test_unreachable_webhook_is_failed_not_raised() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again before the request: nobody listens
    result = perform_action(
        webhook_spec(f"http://127.0.0.1:{port}/hook"),
        outcome("alert"),
        values=VALUES,
        env=ENV,
        payload={},
    )
    assert result.status == "failed" and "request failed" in result.detail
    assert result.http_status is None
    no_secret(result)


def test_webhook_secret_unset_fails_cleanly(receiver: Receiver) -> None:
    result = perform_action(
        webhook_spec(receiver.url), outcome("alert"), values=VALUES, env={}, payload={}
    )
    assert result.status == "failed" and "HOOK_KEY" in result.detail
    assert receiver.requests == []  # nothing unsigned was sent instead


def test_secret_in_webhook_url_is_redacted(receiver: Receiver) -> None:
    spec = webhook_spec(receiver.url + "/hook?token=${env.TOKEN}")
    result = perform_action(spec, outcome("alert"), values=VALUES, env=ENV, payload={})
    assert result.ok and result.target.endswith("token=[redacted env.TOKEN]")
    assert receiver.requests[0]["path"] == "/hook?token=tok-123456789"
    no_secret(result)


def test_actions_compiled_from_a_workflow(receiver: Receiver) -> None:
    workflow = compile_document(
        parse(
            textwrap.dedent(
                f"""\
                name: t
                workflow:
                  - capture_baseline: [error_rate]
                  - mark_deployment_time
                  - capture_impact: {{duration: 1m}}
                  - analyze_differences
                  - decisions
                decisions:
                  bad:
                    condition: error_rate.increase > 1%
                    action: rollback
                actions:
                  rollback:
                    command: ["{sys.executable}", "-c", "print('rollback')"]
                    timeout: 5s
                  alert:
                    webhook: {receiver.url}/afdp
                    secret: ${{env.HOOK_KEY}}
                """
            ),
            name="w.yaml",
        )
    )
    values = workflow.values(deployment={"service": "api"})
    rollback = perform_action(
        workflow.action("rollback"), outcome("rollback"), values=values, env=ENV, payload={}
    )
    alert = perform_action(
        workflow.action("alert"), outcome("alert"), values=values, env=ENV, payload={"x": 1}
    )
    assert rollback.ok and rollback.output.strip() == "rollback"
    assert alert.ok and alert.signed and len(receiver.requests) == 1


def test_a_stopping_gate_is_carried_out_like_a_decision(receiver: Receiver) -> None:
    gate = GateOutcome(
        "any_degradation", False, "any_degradation has no value", True, "alert", "inconclusive"
    )
    result = perform_action(webhook_spec(receiver.url), gate, values=VALUES, env=ENV, payload={})
    assert result.ok
    body = json.loads(receiver.requests[0]["body"])
    assert body["outcome"]["error"] == "any_degradation has no value" and body["action"] == "alert"
    passing = GateOutcome("any_degradation", False, None, False, None, None)
    with pytest.raises(ValueError, match="no action"):
        perform_action(None, passing, values=VALUES, env=ENV, payload={})


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status  # a zombie is dead, only not yet reaped


def test_timeout_kills_the_whole_process_group() -> None:
    script = (
        "import subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "print(child.pid, flush=True); time.sleep(60)"
    )
    result = perform_action(
        command_spec(sys.executable, "-c", script, timeout="5s"),
        outcome(),
        values=VALUES,
        env=ENV,
        payload={},
    )
    assert result.status == "failed" and "timed out" in result.detail
    grandchild = int((result.output or "").split()[0])
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def test_a_descendant_that_escapes_the_group_does_not_hang_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import afdp.pipeline.actions

    monkeypatch.setattr(afdp.pipeline.actions, "_DRAIN_SECONDS", 0.5)
    script = (
        "import subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(20)'], "
        "start_new_session=True); "
        "print(child.pid, flush=True); time.sleep(60)"
    )
    started = time.monotonic()
    result = perform_action(
        command_spec(sys.executable, "-c", script, timeout="5s"),
        outcome(),
        values=VALUES,
        env=ENV,
        payload={},
    )
    assert time.monotonic() - started < 15  # 5 s and the 0.5 s drain, not the escapee's 20 s
    assert result.status == "failed" and "timed out" in result.detail
    assert "not collected" in (result.output or "")


def test_command_that_exits_but_leaves_a_background_process() -> None:
    script = (
        "import subprocess, sys; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); "
        "print('rolled back', flush=True)"
    )
    result = perform_action(
        command_spec(sys.executable, "-c", script, timeout="5s"),
        outcome(),
        values=VALUES,
        env=ENV,
        payload={},
    )
    assert result.ok and result.exit_code == 0
    assert "background processes" in result.detail and "rolled back" in (result.output or "")
