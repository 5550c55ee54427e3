"""The ``notifications:`` section: the channels a decision's ``notify:`` sends to.

``webhook`` and ``slack`` channels have a ``url`` checked like an action webhook (a
literal ``http(s)://host`` start; the admission policy judges the host), ``email``
channels an SMTP ``host``/``port``; secrets (an HMAC key, an SMTP password) only from
``${env.*}``.
"""

from __future__ import annotations

from typing import Any, Literal

from afdp.workflow.catalog import StepKind
from afdp.workflow.compiler.actions import _Actions
from afdp.workflow.interpolation import Template, parse_template
from afdp.workflow.loader import DocPath
from afdp.workflow.model import NotificationChannel
from afdp.workflow.scope import Tree

CHANNEL_TYPES = ("webhook", "slack", "email")
DEFAULT_NOTIFY_TIMEOUT = "10s"


class _Notifications(_Actions):
    """Notification channels."""

    def compile_notifications(self) -> tuple[NotificationChannel, ...]:
        raw = self.mapping(self.data.get("notifications"))
        first = next((s for s in self.steps if s.kind in (StepKind.GATE, StepKind.DECIDE)), None)
        earlier = self.steps[: first.index] if first else []
        saved = self.outputs
        self.outputs = {s.name: saved[s.name] for s in earlier if s.name in saved}
        try:
            scope = self.base_scope(env=True, steps=True)
            out = []
            for name, spec in raw.items():
                if isinstance(spec, dict):
                    channel = self.channel(str(name), spec, scope)
                    if channel is not None:
                        out.append(channel)
            return tuple(out)
        finally:
            self.outputs = saved

    def channel(
        self,
        name: str,
        spec: dict[str, Any],
        scope: Tree,
        *,
        section: str = "notifications",
        origin: Literal["workflow", "policy"] = "workflow",
    ) -> NotificationChannel | None:
        """Return the channel ``name`` written at ``section.name`` (``notifications`` in a
        workflow, ``notification_channels`` in an admission policy), or None (failed)."""
        at: DocPath = (section, name)
        kind = spec.get("type")
        if kind not in CHANNEL_TYPES:
            return None  # the schema says which types exist
        timeout = self.duration(spec.get("timeout", DEFAULT_NOTIFY_TIMEOUT), (*at, "timeout"))
        secret = self.env_only(spec.get("secret"), (*at, "secret"), scope, "an HMAC key")
        if kind == "email":
            return self.email(name, spec, at, scope, timeout, origin)
        for key in ("host", "port", "from", "to", "starttls", "username", "password"):
            if key in spec:
                self.fail((*at, key), f"{key}: is for email channels; a {kind} channel has url:", prefer_key=True)
        if "secret" in spec and kind == "slack":
            self.fail((*at, "secret"), "a Slack incoming webhook is not signed; secret: is for webhook channels", prefer_key=True)
        url = self.template(spec.get("url"), (*at, "url"), scope, secrets="url", bare_dollar=True)
        if url is None:
            if "url" not in spec:
                self.fail(at, f"a {kind} channel needs url: (an http(s) URL)", prefer_key=True)
            return None
        head = url.parts[0] if url.parts else ""
        if isinstance(head, str) and "://" in head or url.is_literal:
            self.check_url(url, "rest", (*at, "url"), what=f"a {kind} channel")
        else:
            self.fail((*at, "url"), f"a {kind} channel's url must start with http:// or https:// (only the rest of it may be interpolated)")
            return None
        if timeout is None:
            return None
        return NotificationChannel(
            name, kind, url, timeout, secret=secret, location=self.location(at), origin=origin
        )

    def email(
        self,
        name: str,
        spec: dict[str, Any],
        at: DocPath,
        scope: Tree,
        timeout: Any,
        origin: Literal["workflow", "policy"] = "workflow",
    ) -> NotificationChannel | None:
        ok = True
        host = spec.get("host")
        if not isinstance(host, str) or not host or "${" in host or "/" in host or "@" in host:
            self.fail((*at, "host") if "host" in spec else at, "an email channel needs host: (the SMTP server's name or address, written literally)", prefer_key="host" not in spec)
            ok = False
        port = spec.get("port", 587 if spec.get("starttls") else 25)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            self.fail((*at, "port"), "port: is a TCP port (1-65535)")
            ok = False
        sender = spec.get("from")
        if not isinstance(sender, str) or "@" not in sender:
            self.fail((*at, "from") if "from" in spec else at, "an email channel needs from: (an address)", prefer_key="from" not in spec)
            ok = False
        to = spec.get("to")
        recipients = tuple(to) if isinstance(to, list) else (to,) if isinstance(to, str) else ()
        if not recipients or not all(isinstance(r, str) and "@" in r for r in recipients):
            self.fail((*at, "to") if "to" in spec else at, "an email channel needs to: (an address or a list of addresses)", prefer_key="to" not in spec)
            ok = False
        for key in ("url", "secret"):
            if key in spec:
                self.fail((*at, key), f"{key}: is for webhook channels; an email channel has host:, port:, from:, to:", prefer_key=True)
                ok = False
        username = self.env_only(spec.get("username"), (*at, "username"), scope, "an SMTP user name", literal=True)
        password = self.env_only(spec.get("password"), (*at, "password"), scope, "an SMTP password")
        if (username is None) != (password is None):
            self.fail(at, "an email channel with credentials needs both username: and password:", prefer_key=True)
            ok = False
        if not ok or timeout is None:
            return None
        url: Template = parse_template(f"smtp://{host}:{port}")
        return NotificationChannel(
            name,
            "email",
            url,
            timeout,
            host=str(host),
            port=int(port),
            sender=str(sender),
            recipients=tuple(str(r) for r in recipients),
            starttls=bool(spec.get("starttls", False)),
            username=username,
            password=password,
            location=self.location(at),
            origin=origin,
        )

    def env_only(
        self, value: Any, path: DocPath, scope: Tree, what: str, *, literal: bool = False
    ) -> Template | None:
        """Parse a secret: only ``${env.*}`` (``literal`` also allows plain text)."""
        if value is None:
            return None
        template = self.template(value, path, scope, secrets=True, bare_dollar=True)
        if template is None:
            return None
        if literal and template.is_literal:
            return template
        if not template.secret or any(not p.secret for p in template.placeholders):
            self.fail(
                path,
                f"{what} must come from the environment, e.g. ${{env.AFDP_NOTIFY_SECRET}}; "
                "a secret written in the workflow would be part of the evidence",
            )
            return None
        return template


__all__ = ["CHANNEL_TYPES", "DEFAULT_NOTIFY_TIMEOUT", "_Notifications"]
