"""The guide's "Decision Points" as written (tests/seeds/decisions.yaml) validate, plan and run.

The snippet is pasted verbatim; the rest (REST below) is the smallest that makes it a
workflow: a name, the metrics its conditions read (a revenue metric for
``revenue_drop``), the channels ``notify:`` names, the steps, and a ``decisions`` step.

Real parts: a loopback HTTP server receiving the signed webhook and the Slack-style
message, a small real SMTP server (asyncio, on loopback) receiving the email, and for the
end-to-end runs the demo service, Debian's Prometheus and ``afdp run`` through the CLI.
"""

from __future__ import annotations

import asyncio
import email
import json
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC
from email import policy as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from afdp.pipeline.actions import verify_signature
from afdp.pipeline.decide import decide
from afdp.pipeline.notify import notify
from afdp.workflow import load_workflow
from afdp.workflow.model import Decide
from afdp.workflow.quantities import quantity_values

SNIPPET = (Path(__file__).parent / "seeds" / "decisions.yaml").read_text(encoding="utf-8")
SECRET = "notify-secret-7f3a"  # noqa: S105 (a test key)

# The demo service answers ~200 requests a second; each successful one is an order of
# $0.25 (revenue per hour = successful requests per second x 3600 x 0.25). Rate windows of
# 15 s (Prometheus scrapes every second): short enough that the scaled 20 s impact window
# sees the new version, long enough that scrape jitter on a loaded machine does not move
# a no-change comparison past the thresholds.
REST = """
name: decision_points
version: 1.0

metrics:
  response_time:
    query: >-
      sum(rate(http_request_duration_seconds_sum{{service="${{deployment.service}}"}}[15s])) /
      sum(rate(http_request_duration_seconds_count{{service="${{deployment.service}}"}}[15s]))
    unit: s
    better: lower
  error_rate:
    query: >-
      sum(rate(http_requests_total{{service="${{deployment.service}}",code=~"5.."}}[15s])) /
      sum(rate(http_requests_total{{service="${{deployment.service}}"}}[15s]))
    unit: ratio
    better: lower
  revenue_per_hour:
    query: sum(rate(http_requests_total{{service="${{deployment.service}}",code!~"5.."}}[15s])) * 3600 * 0.25
    unit: $/hour
    better: higher

notifications:
  oncall:
    type: webhook
    url: {hooks}/oncall
    secret: ${{env.AFDP_NOTIFY_SECRET}}
  management:
{management}

actions:
  alert:
    webhook: {hooks}/alert

workflow:
  - capture_baseline:
      duration: 5_minutes
      metrics: [response_time, error_rate, revenue_per_hour]
  - wait_for_signal: deployment_started
  - mark_deployment_time
  - wait: 2_minutes
  - capture_impact:
      duration: 10_minutes
      metrics: [same_as_baseline]
  - analyze_differences:
      thresholds:
        response_time_increase: 10ms
        error_rate_increase: 0.5%
        revenue_per_hour_decrease: 5%
  - decisions
"""

SLACK = """    type: slack
    url: {hooks}/slack"""
EMAIL = """    type: email
    host: 127.0.0.1
    port: {port}
    from: afdp@example.com
    to: [cto@example.com, ops@example.com]"""


def workflow_text(hooks: str = "http://127.0.0.1:9/hooks", management: str | None = None) -> str:
    management = management if management is not None else SLACK.format(hooks=hooks)
    return SNIPPET + REST.format(hooks=hooks, management=management)


def write(tmp_path: Path, text: str, name: str = "decisions.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- real receivers -------------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP server on loopback that records every POST."""
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.requests.append({"headers": dict(self.headers), "body": body, "path": self.path})
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Mailbox:
    port: int
    messages: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def smtp_server() -> Iterator[Mailbox]:
    """A small real SMTP server (RFC 5321 subset: EHLO/HELO, MAIL, RCPT, DATA, RSET,
    NOOP, QUIT) on a loopback port, run by asyncio in a thread; keeps every message."""
    loop = asyncio.new_event_loop()
    box = Mailbox(port=0)
    ready = threading.Event()

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sender, recipients = None, []

        async def reply(line: str) -> None:
            writer.write((line + "\r\n").encode())
            await writer.drain()

        await reply("220 localhost test SMTP")
        while line := await reader.readline():
            command = line.decode().strip()
            verb = command[:4].upper()
            if verb in ("EHLO", "HELO"):
                await reply("250-localhost\r\n250 8BITMIME" if verb == "EHLO" else "250 localhost")
            elif verb == "MAIL":
                sender, recipients = command.split(":", 1)[1].strip().split()[0].strip("<>"), []
                await reply("250 OK")
            elif verb == "RCPT":
                recipients.append(command.split(":", 1)[1].strip().strip("<>"))
                await reply("250 OK")
            elif verb == "DATA":
                await reply("354 End data with <CR><LF>.<CR><LF>")
                lines = []
                while (data := await reader.readline()) not in (b".\r\n", b""):
                    lines.append(data[1:] if data.startswith(b"..") else data)
                box.messages.append({"from": sender, "to": recipients, "data": b"".join(lines)})
                await reply("250 OK queued")
            elif verb in ("RSET", "NOOP"):
                await reply("250 OK")
            elif verb == "QUIT":
                await reply("221 Bye")
                break
            else:
                await reply("502 not implemented")
        writer.close()

    async def start() -> asyncio.base_events.Server:
        server = await asyncio.start_server(session, "127.0.0.1", 0)
        box.port = server.sockets[0].getsockname()[1]
        ready.set()
        return server

    holder: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        holder["server"] = loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield box
    finally:
        loop.call_soon_threadsafe(holder["server"].close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


# --- validate and plan ----------------------------------------------------------------


def test_snippet_as_written_validates_with_notes_and_plans(tmp_path, cli):
    path = write(tmp_path, workflow_text())
    result = cli("validate", str(path), "--json")
    assert result.code == 0, result.out
    report = json.loads(result.out)
    notes = {n["path"]: n["message"] for n in report["notes"]}
    assert "revenue_per_hour" in notes["decisions.auto_rollback.condition"]
    assert "baseline minus impact" in notes["decisions.auto_rollback.condition"]
    assert "'response_time'" in notes["decisions.alert_only.condition"]
    workflow = load_workflow(path)
    by_name = {d.name: d for d in workflow.decisions}
    assert by_name["auto_rollback"].action == "rollback"  # trigger_rollback
    assert by_name["auto_rollback"].notify == ("oncall", "management")
    assert by_name["alert_only"].action == "alert" and by_name["alert_only"].severity == "warning"
    assert by_name["all_clear"].training_label == "safe_deployment"
    plan = cli("plan", str(path), "--set", "deployment.service=api", "--set", "deployment.id=d1")
    assert plan.code == 0, plan.err
    assert "notify oncall: webhook http://127.0.0.1:9/hooks/oncall, signed" in plan.out
    assert "notify management: slack http://127.0.0.1:9/hooks/slack" in plan.out
    assert "severity warning" in plan.out
    as_json = json.loads(cli("plan", str(path), "--set", "deployment.service=api", "--set", "deployment.id=d1", "--json").out)
    channels = as_json["decisions"][0]["channels"]
    assert [c["type"] for c in channels] == ["webhook", "slack"]


def test_a_quantity_without_its_metric_is_a_located_error_naming_what_to_declare(tmp_path, cli):
    text = workflow_text().replace("metrics: [response_time, error_rate, revenue_per_hour]", "metrics: [error_rate]")
    result = cli("validate", str(write(tmp_path, text)))
    assert result.code == 1
    lines = [line for line in result.out.splitlines() if "condition" in line]
    assert any(
        ":3:16: decisions.auto_rollback.condition: revenue_drop reads a metric" in line
        and "declare a metric whose name contains 'revenue'" in line
        and "$/hour" in line
        for line in lines
    ), result.out
    assert any("decisions.alert_only.condition: latency_increase reads a metric" in line and "response_time" in line for line in lines)
    assert "Traceback" not in result.out + result.err


def test_a_metric_of_the_wrong_unit_does_not_stand_for_revenue(tmp_path, cli):
    text = workflow_text().replace("unit: $/hour", "unit: count")
    result = cli("validate", str(write(tmp_path, text)))
    assert result.code == 1 and "revenue_drop reads a metric" in result.out


def test_a_channel_named_but_not_configured_is_a_located_error(tmp_path, cli):
    text = workflow_text().replace("  management:\n", "  managers:\n")
    result = cli("validate", str(write(tmp_path, text)))
    assert result.code == 1
    assert ":5:22: decisions.auto_rollback.notify[1]: channel 'management' is not configured" in result.out
    assert "configured: managers, oncall" in result.out


@pytest.mark.parametrize(
    ("management", "expected"),
    [
        ("    type: webhook\n    url: http://h/x\n    secret: plain-text-key", "must come from the environment"),
        ("    type: slack\n    url: http://h/x\n    secret: ${env.K}", "a Slack incoming webhook is not signed"),
        ("    type: slack", "a slack channel needs url:"),
        ("    type: slack\n    url: ${env.SLACK_URL}", "must start with http:// or https://"),
        ("    type: email\n    host: mail\n    from: a@b.c", "an email channel needs to:"),
        ("    type: email\n    host: mail\n    from: a@b.c\n    to: x@y.z\n    password: hunter2", "must come from the environment"),
        ("    type: email\n    host: mail\n    from: a@b.c\n    to: x@y.z\n    url: http://h/", "url: is for webhook channels"),
        ("    type: pager\n    url: http://h/", "expected one of: webhook, slack, email"),
    ],
)
def test_bad_channels_are_refused_with_one_located_line(tmp_path, cli, management, expected):
    result = cli("validate", str(write(tmp_path, workflow_text(management=management))))
    assert result.code == 1, result.out
    assert expected in result.out, result.out
    assert "notifications.management" in result.out


def test_channel_hosts_are_judged_by_the_admission_policy(tmp_path, cli):
    policy = write(tmp_path, "version: 1\nname: strict\nallowed_webhook_hosts: [hooks.example.com]\n", "policy.yaml")
    text = workflow_text(hooks="https://evil.example.net/h", management=EMAIL.format(port=2525))
    result = cli("validate", str(write(tmp_path, text)), "--policy", str(policy))
    assert result.code == 1, result.out
    assert "notifications.oncall.url: allowed_webhook_hosts: the webhook channel 'oncall' reaches host 'evil.example.net'" in result.out
    assert "notifications.management.host: allowed_webhook_hosts: the email channel 'management' reaches host '127.0.0.1'" in result.out
    allowed = write(tmp_path, "version: 1\nname: ok\nallowed_webhook_hosts: [evil.example.net, 127.0.0.1]\n", "ok.yaml")
    assert cli("validate", str(write(tmp_path, text)), "--policy", str(allowed)).code == 0


# --- the quantities and the decision --------------------------------------------------


def _metric(unit: dict[str, Any], baseline: float, impact: float, shift: float | None) -> dict[str, Any]:
    test = None if shift is None else {"shift": {"name": "hodges_lehmann", "value": shift}}
    return {"unit": unit, "baseline": baseline, "impact": impact, "increase": impact - baseline, "central": "median", "test": test}


SECONDS = {"symbol": "s", "dimension": "time", "factor": 1.0}
RATIO = {"symbol": "ratio", "dimension": "ratio", "factor": 1.0}
DOLLARS_PER_HOUR = {"symbol": "$/h", "dimension": "USD/time", "factor": 1 / 3600}


def test_quantities_read_the_test_shift_in_the_metric_unit_with_drops_reversed():
    document = {
        "metrics": {
            "response_time": _metric(SECONDS, 0.045, 0.090, 0.041),
            "error_rate": _metric(RATIO, 0.01, 0.05, None),
            "revenue_per_hour": _metric(DOLLARS_PER_HOUR, 17800, 17100, -720.0),
        }
    }
    values, evidence = quantity_values(document)
    assert values["latency_increase"].base == pytest.approx(0.041)  # the shift, not 0.045
    assert evidence["latency_increase"]["method"] == "hodges_lehmann"
    assert values["error_rate_increase"].base == pytest.approx(0.04)  # central values: 4 points
    assert "median" in evidence["error_rate_increase"]["method"]
    assert values["revenue_drop"].base == pytest.approx(720 / 3600)  # $720/hour, in $/s
    assert evidence["revenue_drop"] == {
        "metric": "revenue_per_hour", "value": 720.0, "unit": "$/h", "method": "hodges_lehmann",
        "baseline": 17800, "impact": 17100, "meaning": evidence["revenue_drop"]["meaning"],
    }
    assert "throughput_drop" not in values  # no request_rate analysed
    document["metrics"]["response_time"]["test"] = None
    document["metrics"]["response_time"]["increase"] = None
    assert quantity_values(document)[0]["latency_increase"] is None  # no data: null


def test_decide_over_named_quantities_in_both_directions(tmp_path):
    workflow = load_workflow(write(tmp_path, workflow_text()))
    params = Decide(decisions=tuple(d.name for d in workflow.decisions), analysis=None)

    def outcome(revenue_shift: float, latency_shift: float, normal: bool):
        document = {
            "metrics": {
                "response_time": _metric(SECONDS, 0.045, 0.045 + latency_shift, latency_shift),
                "error_rate": _metric(RATIO, 0.01, 0.01, 0.0),
                "revenue_per_hour": _metric(DOLLARS_PER_HOUR, 17800, 17800 + revenue_shift, revenue_shift),
            }
        }
        values = dict(quantity_values(document)[0])
        values.update(all_metrics_within_normal=normal, inconclusive=[], any_degradation=not normal)
        return decide(workflow, params, values)

    rollback = outcome(-1500.0, 0.0, False)
    assert (rollback.decision, rollback.action, rollback.notify) == ("auto_rollback", "rollback", ("oncall", "management"))
    assert outcome(-900.0, 0.0, False).decision != "auto_rollback"  # $900/h < $1000/h
    alert = outcome(0.0, 0.025, False)
    assert (alert.decision, alert.action, alert.severity) == ("alert_only", "alert", "warning")
    assert outcome(0.0, 0.015, False).decision is None  # 15 ms < 20 ms
    clear = outcome(10.0, 0.001, True)
    assert (clear.decision, clear.action, clear.label) == ("all_clear", "mark_successful", "safe_deployment")


# --- notifications over real servers --------------------------------------------------


def test_notify_sends_a_signed_webhook_a_slack_message_and_an_email(tmp_path, receiver, smtp_server, monkeypatch):
    text = workflow_text(hooks=receiver.url, management=EMAIL.format(port=smtp_server.port))
    text = text.replace("notify: [oncall, management]", "notify: [oncall, management, team]")
    text = text.replace("\nactions:", f"  team:\n    type: slack\n    url: {receiver.url}/slack\n\nactions:")
    workflow = load_workflow(write(tmp_path, text))
    decision = {"decision": "auto_rollback", "action": "rollback", "label": "rollback", "severity": "critical", "reason": "revenue fell"}
    payload = {"service": "api", "deployment": "d-7"}
    env = {"AFDP_NOTIFY_SECRET": SECRET}
    results = notify(workflow, ("oncall", "management", "team"), decision, values={}, env=env, payload=payload)
    assert [(r.channel, r.type, r.status) for r in results] == [
        ("oncall", "webhook", "ok"), ("management", "email", "ok"), ("team", "slack", "ok"),
    ]
    hook = next(r for r in receiver.requests if r["path"].endswith("/oncall"))
    assert verify_signature(SECRET.encode(), hook["body"], hook["headers"]["X-AFDP-Signature"])
    assert not verify_signature(b"another key", hook["body"], hook["headers"]["X-AFDP-Signature"])
    body = json.loads(hook["body"])
    assert body["type"] == "afdp.notification" and body["channel"] == "oncall"
    assert body["severity"] == "critical" and body["decision"]["action"] == "rollback"
    assert body["payload"]["deployment"] == "d-7"
    import hashlib

    assert results[0].payload_sha256 == hashlib.sha256(hook["body"]).hexdigest()
    slack = json.loads(next(r for r in receiver.requests if r["path"].endswith("/slack"))["body"])
    assert set(slack) == {"text"} and slack["text"].startswith("[AFDP critical] rollback: api d-7")
    (mail,) = smtp_server.messages
    assert mail["from"] == "afdp@example.com" and mail["to"] == ["cto@example.com", "ops@example.com"]
    message = email.message_from_bytes(mail["data"], policy=email_policy.default)
    assert message["Subject"].startswith("[AFDP critical] rollback: api d-7")
    assert message["X-AFDP-Severity"] == "critical"
    assert '"reason": "revenue fell"' in message.get_content()
    record = json.dumps([r.to_json() for r in results])
    assert SECRET not in record


def test_a_failing_channel_is_recorded_not_raised(tmp_path, monkeypatch):
    text = workflow_text(hooks="http://127.0.0.1:9/hooks", management=EMAIL.format(port=9))
    workflow = load_workflow(write(tmp_path, text))
    env = {"AFDP_NOTIFY_SECRET": SECRET}
    results = notify(workflow, ("oncall", "management"), {"action": "rollback"}, values={}, env=env, payload={})
    assert [(r.channel, r.status) for r in results] == [("oncall", "failed"), ("management", "failed")]
    assert "request failed" in results[0].detail and results[1].detail
    missing = notify(workflow, ("oncall",), {"action": "rollback"}, values={}, env={}, payload={})
    assert missing[0].status == "failed" and "AFDP_NOTIFY_SECRET" in missing[0].detail
    assert SECRET not in json.dumps([r.to_json() for r in results + missing])


# --- afdp run against the demo service and Prometheus ---------------------------------


def _run(tmp_path, cli, prometheus_server, keys, tsa, receiver, monkeypatch, *, to: str, deployment: str):
    from infra import wait_for_series

    from afdp.demo import service as demo

    monkeypatch.setitem(demo.PROFILES, "v3", demo.Profile(latency_added=0.040))  # slower, no more errors
    monkeypatch.setenv("AFDP_NOTIFY_SECRET", SECRET)
    path = write(tmp_path, workflow_text(hooks=receiver.url))
    repo = tmp_path / "evidence"
    assert cli("init", str(repo)).code == 0
    with demo.DemoService(name="api", version="v1") as service:
        prometheus = prometheus_server([service.metrics_url])
        wait_for_series(prometheus, 'http_requests_total{service="api"}')
        time.sleep(27)  # v1 history: the baseline window (10 s scaled) and a 15 s rate window before it
        deployed_at = service.deploy(to)
        result = cli(
            "run", str(path), "--service", "api", "--deployment", deployment, "--commit", "4f2a9c1",
            "--repo", str(repo), "--key", str(keys / "dev.key"), "--tsa", tsa.url,
            "--set", f"PROMETHEUS_URL={prometheus}", "--phase", "post",
            "--deployed-at", deployed_at.astimezone(UTC).isoformat(), "--time-scale", "30",
            "--no-prefect", "--json",
        )
    outcome = json.loads(result.out)
    step = next(s for s in outcome["steps"] if s["name"] == "decisions")
    return result, outcome, step


def _decisions_record(outcome: dict[str, Any]) -> dict[str, Any]:
    return outcome["decision"]


needs_prometheus = pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus is not installed")


@needs_prometheus
@pytest.mark.slow
def test_run_a_real_regression_rolls_back_and_notifies_oncall_and_management(
    tmp_path, cli, prometheus_server, keys, tsa, receiver, monkeypatch
):
    result, outcome, step = _run(tmp_path, cli, prometheus_server, keys, tsa, receiver, monkeypatch, to="v2", deployment="reg-1")
    decision = outcome["decision"]
    assert decision["decision"] == "auto_rollback", (decision["reason"], decision["quantities"]["revenue_drop"])
    assert decision["action"] == "rollback" and decision["label"] == "rollback"
    assert result.code == 1, result.err  # a rollback decision exits 1
    drop = decision["quantities"]["revenue_drop"]
    assert drop["metric"] == "revenue_per_hour" and drop["unit"] == "$/h" and drop["value"] > 1000, drop
    sent = {n["channel"]: n for n in decision["notifications"]}
    assert sent["oncall"]["status"] == "ok" and sent["oncall"]["signed"] is True
    assert sent["management"]["type"] == "slack" and sent["management"]["status"] == "ok"
    paths = sorted(r["path"] for r in receiver.requests)
    assert paths == ["/hooks/oncall", "/hooks/slack"], paths
    hook = next(r for r in receiver.requests if r["path"] == "/hooks/oncall")
    assert verify_signature(SECRET.encode(), hook["body"], hook["headers"]["X-AFDP-Signature"])
    assert json.loads(hook["body"])["decision"]["decision"] == "auto_rollback"
    import hashlib

    assert sent["oncall"]["payload_sha256"] == hashlib.sha256(hook["body"]).hexdigest()


@needs_prometheus
@pytest.mark.slow
def test_run_a_latency_only_regression_alerts_with_its_severity(
    tmp_path, cli, prometheus_server, keys, tsa, receiver, monkeypatch
):
    result, outcome, step = _run(tmp_path, cli, prometheus_server, keys, tsa, receiver, monkeypatch, to="v3", deployment="slow-1")
    assert result.code == 0, result.err
    decision = outcome["decision"]
    assert decision["decision"] == "alert_only", (decision["reason"], decision.get("quantities"))
    assert decision["action"] == "alert" and decision["severity"] == "warning"
    latency = decision["quantities"]["latency_increase"]
    assert latency["metric"] == "response_time" and latency["value"] > 0.020, latency
    assert decision["quantities"]["revenue_drop"]["value"] < 1000
    assert "notifications" not in decision
    (alert,) = receiver.requests  # the alert action's webhook; no channel is notified
    body = json.loads(alert["body"])
    assert alert["path"] == "/hooks/alert"
    assert body["payload"]["severity"] == "warning" and body["outcome"]["severity"] == "warning"


@needs_prometheus
@pytest.mark.slow
def test_run_no_change_is_all_clear_with_no_notification(tmp_path, cli, prometheus_server, keys, tsa, receiver, monkeypatch):
    result, outcome, step = _run(tmp_path, cli, prometheus_server, keys, tsa, receiver, monkeypatch, to="v1", deployment="same-1")
    assert result.code == 0, result.err
    decision = outcome["decision"]
    metrics = {m: (v["degraded"], v["decided_by"], v.get("reasons"), v["counts"]) for m, v in outcome["analysis"]["metrics"].items()}
    assert decision["decision"] == "all_clear", (decision["reason"], metrics)
    assert decision["action"] == "mark_successful" and decision["label"] == "safe_deployment"
    assert "notifications" not in decision
    assert abs(decision["quantities"]["latency_increase"]["value"]) < 0.020
    assert receiver.requests == []
