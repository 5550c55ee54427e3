"""Carrying out a decision: run the rollback command, POST the alert webhook.

The workflow's ``actions:`` block (:class:`~afdp.workflow.model.ActionSpec`) says how
each decided action is carried out. :func:`perform_action` does it and returns an
:class:`ActionResult` that is itself evidence; it never raises for a failing action
(a command that exits non-zero, times out or does not exist; a webhook that is
unreachable, slow or answers an error): the failure *is* the result.

- ``command``: an argv list, each item a template rendered over the run's values. It is
  run without a shell (no word splitting, no globbing, no injection through values), in
  its own process group with stdin closed, and killed (the whole group) after
  ``timeout``. The exit code and the tail of its combined output are recorded.
- ``webhook``: the body is the RFC 8785 canonical JSON of
  ``{"type": "afdp.action", "action", "sent_at", "outcome", "payload"}``, POSTed with
  ``Content-Type: application/json``. With a ``secret`` the request carries
  ``X-AFDP-Signature: sha256=<hex HMAC-SHA256(secret, body bytes)>`` and
  ``X-AFDP-Timestamp: <unix seconds>``; ``sent_at`` inside the signed body is the same
  instant, so a receiver can refuse replays of old bodies. Redirects are not followed
  (a signed body is meant for the configured URL only). Any 2xx answer is success.

Secrets (``${env.*}`` values) are used only to run or send; the result shows targets
with ``[redacted env.NAME]`` in their place, and any secret value that appears in
command output or an error message is replaced the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from afdp.deadline import deadline, with_deadlines
from afdp.evidence.canonical import canonical_bytes
from afdp.pipeline.secrets import Scrubber
from afdp.workflow.interpolation import Secret, UnresolvedError

if TYPE_CHECKING:
    from afdp.pipeline.decide import DecisionOutcome, GateOutcome
    from afdp.workflow.model import ActionSpec

SIGNATURE_HEADER = "X-AFDP-Signature"
TIMESTAMP_HEADER = "X-AFDP-Timestamp"
OUTPUT_TAIL = 2000  # characters of command output kept in the result
RESPONSE_TAIL = 500  # characters of a webhook's answer kept in the result
_DRAIN_SECONDS = 5.0  # after a kill, how long to wait for the output pipe to close

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_NOT_CONFIGURED = "not_configured"


@dataclass(frozen=True)
class ActionResult:
    """The outcome of carrying out one action.

    ``status``: ``ok``, ``failed`` or ``not_configured`` (the workflow says nothing about
    how to carry out ``action``). ``kind``: ``command`` or ``webhook`` (None when not
    configured). ``target``: the argv or URL with secrets redacted. ``detail``: one line.
    ``exit_code`` (command) / ``http_status`` (webhook) when there was one; ``output``:
    the tail of the command's output or the webhook's answer (secrets redacted);
    ``signed``: the webhook request carried an HMAC signature.
    """

    action: str
    status: str
    kind: str | None
    target: str | None
    detail: str
    exit_code: int | None = None
    http_status: int | None = None
    output: str | None = None
    duration_seconds: float | None = None
    signed: bool = False

    @property
    def ok(self) -> bool:
        """Return True when the action was carried out successfully."""
        return self.status == STATUS_OK

    def to_json(self) -> dict[str, Any]:
        """Return the result as evidence (no secret in it)."""
        return {
            "action": self.action,
            "status": self.status,
            "kind": self.kind,
            "target": self.target,
            "detail": self.detail,
            "exit_code": self.exit_code,
            "http_status": self.http_status,
            "output": self.output,
            "duration_seconds": self.duration_seconds,
            "signed": self.signed,
        }


def signature(secret: bytes, body: bytes) -> str:
    """Return the ``X-AFDP-Signature`` header value for ``body``: ``sha256=<hex>``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, body: bytes, header: str) -> bool:
    """Return True when ``header`` is the signature of ``body`` under ``secret``.

    For receivers (and tests); compares in constant time.
    """
    return hmac.compare_digest(signature(secret, body), header.strip())


def perform_action(
    spec: ActionSpec | None,
    outcome: DecisionOutcome | GateOutcome,
    *,
    values: Mapping[str, Any],
    env: Mapping[str, str],
    payload: Mapping[str, Any],
) -> ActionResult:
    """Carry out ``outcome.action`` (a decision's, or a stopping gate's) as ``spec`` says.

    ``values`` renders the templates (``workflow.values(...)``); ``env`` supplies
    ``${env.*}`` secrets and is the command's environment; ``payload`` (JSON-safe) is
    sent to a webhook as ``payload``.

    Returns:
        The :class:`ActionResult`; ``not_configured`` when ``spec`` is None. Never
        raises for a failing action.

    Raises:
        ValueError: ``spec`` is for a different action than ``outcome.action``, or the
            outcome decides no action (bugs in the caller, not a failing action).
    """
    action = outcome.action
    if action is None:
        raise ValueError("the outcome decides no action (a gate that did not stop)")
    if spec is None:
        return ActionResult(
            action,
            STATUS_NOT_CONFIGURED,
            None,
            None,
            f"the workflow configures no way to carry out {action!r}; it is recorded only",
        )
    if spec.action != action:
        raise ValueError(f"action spec for {spec.action!r} given for decided action {action!r}")
    if spec.command is not None:
        return _run_command(spec, action, values=values, env=env)
    return _post_webhook(spec, outcome, action, values=values, env=env, payload=payload)


# --- helpers --------------------------------------------------------------------------


class _Redactor:
    """Replaces every secret value that was revealed, and every fragment of one, with
    ``[redacted env.NAME]`` (:class:`afdp.pipeline.secrets.Scrubber`)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self._scrubber = Scrubber()

    def reveal(self, value: str | Secret) -> str:
        """Return the real text of ``value``, remembering its secret parts.

        Raises:
            UnresolvedError: an environment variable the secret needs is not set.
        """
        if not isinstance(value, Secret):
            return value
        real = value.reveal()
        for name in value.names:
            self._scrubber.add(name, self._env.get(name))
        return real

    def __call__(self, text: str) -> str:
        return self._scrubber.text(text)


def _shown(value: str | Secret) -> str:
    return value.redacted() if isinstance(value, Secret) else value


def _run_command(
    spec: ActionSpec, action: str, *, values: Mapping[str, Any], env: Mapping[str, str]
) -> ActionResult:
    assert spec.command is not None
    redact = _Redactor(env)
    shown: list[str] = []
    argv: list[str] = []
    try:
        for item in spec.command:
            rendered = item.render(values, env=env)
            shown.append(_shown(rendered))
            argv.append(redact.reveal(rendered))
    except UnresolvedError as exc:
        return ActionResult(
            action,
            STATUS_FAILED,
            "command",
            _join(shown) or None,
            f"cannot build the command: {redact(str(exc))}",
        )
    target = _join(shown)
    if not argv or not argv[0]:
        return ActionResult(action, STATUS_FAILED, "command", target, "the command is empty")
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,  # its own process group, killed as a whole on timeout
        )
    except OSError as exc:
        reason = "not found" if isinstance(exc, FileNotFoundError) else exc.strerror or str(exc)
        return ActionResult(
            action,
            STATUS_FAILED,
            "command",
            target,
            f"cannot start {redact(argv[0])!r}: {redact(str(reason))}",
            duration_seconds=_since(started),
        )
    try:
        output, _ = process.communicate(timeout=spec.timeout.seconds)
    except subprocess.TimeoutExpired:
        exited = process.poll()  # the command itself may be done, its background not
        _kill_group(process)
        try:
            output, _ = process.communicate(timeout=_DRAIN_SECONDS)
        except subprocess.TimeoutExpired:
            # A descendant left the process group (setsid) and still holds the output
            # pipe open: stop reading rather than wait for it.
            if process.stdout is not None:
                process.stdout.close()
            process.wait()
            output = b"[output not collected: a descendant process kept it open]"
        if exited is not None:
            return ActionResult(
                action,
                STATUS_OK if exited == 0 else STATUS_FAILED,
                "command",
                target,
                f"exited with status {exited}; background processes it left holding its "
                f"output were killed after {spec.timeout}",
                exit_code=exited,
                output=_tail(redact(_decode(output)), OUTPUT_TAIL),
                duration_seconds=_since(started),
            )
        return ActionResult(
            action,
            STATUS_FAILED,
            "command",
            target,
            f"timed out after {spec.timeout} and was killed",
            exit_code=process.returncode,
            output=_tail(redact(_decode(output)), OUTPUT_TAIL),
            duration_seconds=_since(started),
        )
    code = process.returncode
    tail = _tail(redact(_decode(output)), OUTPUT_TAIL)
    if code != 0:
        return ActionResult(
            action,
            STATUS_FAILED,
            "command",
            target,
            f"exited with status {code}" + (f": {_last_line(tail)}" if tail else ""),
            exit_code=code,
            output=tail,
            duration_seconds=_since(started),
        )
    return ActionResult(
        action,
        STATUS_OK,
        "command",
        target,
        "exited with status 0",
        exit_code=0,
        output=tail,
        duration_seconds=_since(started),
    )


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()


def _post_webhook(
    spec: ActionSpec,
    outcome: DecisionOutcome | GateOutcome,
    action: str,
    *,
    values: Mapping[str, Any],
    env: Mapping[str, str],
    payload: Mapping[str, Any],
) -> ActionResult:
    import httpx

    assert spec.webhook is not None
    redact = _Redactor(env)
    target: str | None = None
    try:
        rendered_url = spec.webhook.render(values, env=env)
        target = _shown(rendered_url)
        url = redact.reveal(rendered_url)
        key: bytes | None = None
        if spec.secret is not None:
            real_secret = redact.reveal(spec.secret.render(values, env=env))
            if not real_secret:
                raise UnresolvedError("the webhook secret is empty")
            key = real_secret.encode("utf-8")
    except UnresolvedError as exc:
        return ActionResult(
            action,
            STATUS_FAILED,
            "webhook",
            target,
            f"cannot build the request: {redact(str(exc))}",
        )
    now = time.time()
    document = {
        "type": "afdp.action",
        "action": action,
        "sent_at": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
        "outcome": outcome.to_json(),
        "payload": dict(payload),
    }
    try:
        body = canonical_bytes(document)
    except Exception as exc:  # the payload is not JSON: a caller's data problem, recorded
        return ActionResult(
            action, STATUS_FAILED, "webhook", target, f"cannot encode the payload: {exc}"
        )
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "afdp-action",
        "X-AFDP-Action": action,
        TIMESTAMP_HEADER: str(int(now)),
    }
    if key is not None:
        headers[SIGNATURE_HEADER] = signature(key, body)
    started = time.monotonic()
    try:
        with (
            with_deadlines(httpx.Client(follow_redirects=False)) as http,
            deadline(spec.timeout.seconds),  # the whole exchange, not each read
        ):
            response = http.post(url, content=body, headers=headers, timeout=spec.timeout.seconds)
    except httpx.TimeoutException:
        return ActionResult(
            action,
            STATUS_FAILED,
            "webhook",
            target,
            f"no answer within {spec.timeout}",
            duration_seconds=_since(started),
            signed=key is not None,
        )
    except (httpx.HTTPError, ValueError, OSError) as exc:
        return ActionResult(
            action,
            STATUS_FAILED,
            "webhook",
            target,
            f"request failed: {type(exc).__name__}: {redact(_last_line(str(exc)))}",
            duration_seconds=_since(started),
            signed=key is not None,
        )
    answer = _tail(redact(response.text), RESPONSE_TAIL)
    ok = 200 <= response.status_code < 300
    return ActionResult(
        action,
        STATUS_OK if ok else STATUS_FAILED,
        "webhook",
        target,
        f"answered HTTP {response.status_code}",
        http_status=response.status_code,
        output=answer or None,
        duration_seconds=_since(started),
        signed=key is not None,
    )


def _join(argv: Sequence[str]) -> str:
    import shlex

    return shlex.join(argv)


def _decode(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")


def _tail(text: str, limit: int) -> str:
    return text if len(text) <= limit else "…" + text[-limit:]


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)


__all__ = [
    "ActionResult",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "perform_action",
    "signature",
    "verify_signature",
]
