"""Sending a decision to the channels its ``notify:`` names.

Each channel (:class:`~afdp.workflow.model.NotificationChannel`) gets one message:

- ``webhook``: the RFC 8785 canonical JSON of ``{"type": "afdp.notification", "channel",
  "sent_at", "severity", "decision", "payload"}`` POSTed with ``Content-Type:
  application/json``; with a ``secret`` it carries ``X-AFDP-Signature: sha256=<hex
  HMAC-SHA256(secret, body)>`` and ``X-AFDP-Timestamp``, exactly as action webhooks
  (:mod:`afdp.pipeline.actions`). Redirects are not followed; any 2xx is success.
- ``slack``: a Slack-compatible incoming-webhook message ``{"text": ...}`` (one line:
  severity, action, service, deployment, reason), POSTed as JSON.
- ``email``: a plain-text message over SMTP (``STARTTLS`` when asked, then ``AUTH`` when
  a user name and password are given), subject ``[AFDP <severity>] <action>: <service>
  <deployment>``, the decision as JSON in the body.

:func:`notify` never raises for a channel that fails: each result (``ok`` or ``failed``,
one line of detail, the SHA-256 of the bytes sent) is evidence in the decision's record.
Targets are shown with ``${env.*}`` values redacted; secrets are never recorded.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from afdp.deadline import deadline, with_deadlines
from afdp.evidence.canonical import canonical_bytes
from afdp.pipeline.actions import (
    SIGNATURE_HEADER,
    STATUS_FAILED,
    STATUS_OK,
    TIMESTAMP_HEADER,
    _last_line,
    _Redactor,
    _shown,
    signature,
)
from afdp.workflow.interpolation import UnresolvedError

if TYPE_CHECKING:
    from afdp.workflow.model import NotificationChannel, Workflow


@dataclass(frozen=True)
class NotificationResult:
    """One channel notified: ``status`` ``ok`` or ``failed``, ``detail`` one line,
    ``payload_sha256`` the digest of the bytes sent (None when nothing was sent)."""

    channel: str
    type: str | None
    status: str
    target: str | None
    detail: str
    payload_sha256: str | None = None
    http_status: int | None = None
    signed: bool = False

    def to_json(self) -> dict[str, Any]:
        """Return the result as evidence."""
        return {
            "channel": self.channel,
            "type": self.type,
            "status": self.status,
            "target": self.target,
            "detail": self.detail,
            "payload_sha256": self.payload_sha256,
            "http_status": self.http_status,
            "signed": self.signed,
        }


def notify(
    workflow: Workflow,
    channels: Sequence[str],
    decision: Mapping[str, Any],
    *,
    values: Mapping[str, Any],
    env: Mapping[str, str],
    payload: Mapping[str, Any],
) -> list[NotificationResult]:
    """Send ``decision`` to each of ``channels``; return one result per channel."""
    results = []
    for name in channels:
        channel = workflow.channel(name)
        if channel is None:  # validation refuses this; a hand-built workflow may not
            results.append(NotificationResult(name, None, STATUS_FAILED, None, "channel is not configured"))
            continue
        try:
            results.append(_send(channel, decision, values=values, env=env, payload=payload))
        except Exception as exc:  # a failing channel is a result, never a crash
            results.append(
                NotificationResult(name, channel.type, STATUS_FAILED, None, f"{type(exc).__name__}: {_last_line(str(exc))}")
            )
    return results


def _send(
    channel: NotificationChannel,
    decision: Mapping[str, Any],
    *,
    values: Mapping[str, Any],
    env: Mapping[str, str],
    payload: Mapping[str, Any],
) -> NotificationResult:
    now = time.time()
    document = {
        "type": "afdp.notification",
        "channel": channel.name,
        "sent_at": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
        "severity": decision.get("severity"),
        "decision": dict(decision),
        "payload": dict(payload),
    }
    if channel.type == "email":
        return _email(channel, document, env=env, values=values)
    return _post(channel, document, now, values=values, env=env)


def headline(document: Mapping[str, Any]) -> str:
    """Return the one-line text of a notification (Slack text, email subject)."""
    decision = document.get("decision") or {}
    payload = document.get("payload") or {}
    severity = document.get("severity") or "info"
    return (
        f"[AFDP {severity}] {decision.get('action')}: {payload.get('service')} "
        f"{payload.get('deployment')}: {decision.get('reason')}"
    )


def _post(
    channel: NotificationChannel,
    document: Mapping[str, Any],
    now: float,
    *,
    values: Mapping[str, Any],
    env: Mapping[str, str],
) -> NotificationResult:
    import httpx

    redact = _Redactor(env)
    target: str | None = None
    try:
        rendered = channel.url.render(values, env=env)
        target = _shown(rendered)
        url = redact.reveal(rendered)
        key = None
        if channel.secret is not None:
            secret = redact.reveal(channel.secret.render(values, env=env))
            if not secret:
                raise UnresolvedError("the channel's secret is empty")
            key = secret.encode("utf-8")
    except UnresolvedError as exc:
        return NotificationResult(
            channel.name, channel.type, STATUS_FAILED, target, f"cannot build the request: {redact(str(exc))}"
        )
    if channel.type == "slack":
        body = json.dumps({"text": headline(document)}, ensure_ascii=False).encode("utf-8")
    else:
        body = canonical_bytes(document)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "afdp-notify",
        TIMESTAMP_HEADER: str(int(now)),
    }
    if key is not None:
        headers[SIGNATURE_HEADER] = signature(key, body)
    digest = hashlib.sha256(body).hexdigest()
    try:
        with (
            with_deadlines(httpx.Client(follow_redirects=False)) as http,
            deadline(channel.timeout.seconds),
        ):
            response = http.post(url, content=body, headers=headers, timeout=channel.timeout.seconds)
    except (httpx.HTTPError, ValueError, OSError) as exc:
        return NotificationResult(
            channel.name,
            channel.type,
            STATUS_FAILED,
            target,
            f"request failed: {type(exc).__name__}: {redact(_last_line(str(exc)))}",
            digest,
            signed=key is not None,
        )
    ok = 200 <= response.status_code < 300
    return NotificationResult(
        channel.name,
        channel.type,
        STATUS_OK if ok else STATUS_FAILED,
        target,
        f"answered HTTP {response.status_code}",
        digest,
        response.status_code,
        key is not None,
    )


def _email(
    channel: NotificationChannel,
    document: Mapping[str, Any],
    *,
    env: Mapping[str, str],
    values: Mapping[str, Any],
) -> NotificationResult:
    import smtplib
    from email.message import EmailMessage

    redact = _Redactor(env)
    target = f"smtp://{channel.host}:{channel.port}"
    try:
        user = redact.reveal(channel.username.render(values, env=env)) if channel.username else None
        password = redact.reveal(channel.password.render(values, env=env)) if channel.password else None
    except UnresolvedError as exc:
        return NotificationResult(channel.name, "email", STATUS_FAILED, target, f"cannot log in: {redact(str(exc))}")
    message = EmailMessage()
    message["From"] = channel.sender or ""
    message["To"] = ", ".join(channel.recipients)
    message["Subject"] = headline(document)[:200]
    message["X-AFDP-Severity"] = str(document.get("severity") or "")
    message.set_content(
        headline(document) + "\n\n" + json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    )
    data = message.as_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert channel.host is not None and channel.port is not None
    try:
        with smtplib.SMTP(channel.host, channel.port, timeout=channel.timeout.seconds) as smtp:
            if channel.starttls:
                smtp.starttls()
            if user is not None and password is not None:
                smtp.login(user, password)
            refused = smtp.sendmail(channel.sender or "", list(channel.recipients), data)
    except (smtplib.SMTPException, OSError, TimeoutError) as exc:
        return NotificationResult(
            channel.name, "email", STATUS_FAILED, target, f"{type(exc).__name__}: {redact(_last_line(str(exc)))}", digest
        )
    if refused:
        return NotificationResult(
            channel.name, "email", STATUS_FAILED, target, f"refused recipients: {', '.join(sorted(refused))}", digest
        )
    return NotificationResult(
        channel.name, "email", STATUS_OK, target, f"accepted for {len(channel.recipients)} recipient(s)", digest
    )


__all__ = ["NotificationResult", "headline", "notify"]
