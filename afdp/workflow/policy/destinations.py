"""Where a workflow may send and write: notification destinations and feature-flag targets.

A platform team names them in the admission policy:

- ``notification_channels``: channels the policy gives every workflow it admits (a
  decision's ``notify:`` may name them); a workflow may not declare a channel of the same
  name (:class:`PolicyChannels`).
- ``allowed_notification_destinations``: where a workflow's *own* channels may send
  (:class:`AllowedNotificationDestinations`): URL prefixes (``https://host[:port]/path/``)
  for webhook and Slack channels, ``smtp://host[:port]`` servers and recipient addresses
  (``ops@example.com``, ``*@example.com``) for email channels.
- ``allowed_flag_targets``: the flagd flag files and directories (absolute paths) and the
  flag API URL prefixes an ``enable_feature`` step may write to (:class:`AllowedFlagTargets`).

Every target is compared the way it will be used, never as spelled: a URL's path is
percent-decoded (until nothing changes) and its dot segments removed before the prefix
comparison, at segment boundaries (``/afdp/`` does not allow ``/afdp-evil``); a flag
file is resolved as the filesystem will resolve it (``os.path.realpath``: symlinks and
``..``, relative to the current directory), and so is each allowed path; the runner
judges the flag file again right before it writes it. A target that depends on a value
not known when judging (``${deployment.*}`` for ``afdp validate``, ``${steps.*}``) follows
``unresolved_hosts`` (deny unless the policy says allow).
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

from afdp.workflow.findings import Finding
from afdp.workflow.model import EnableFeature, NotificationChannel, Workflow
from afdp.workflow.policy.base import DEFAULTS_ONLY, Locate, RunValues, listing, step_path
from afdp.workflow.policy.hosts import render_known

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class UrlTarget:
    """A URL as the client will reach it: scheme, host, port and the normalized path."""

    scheme: str
    host: str
    port: int | None
    path: str


def parse_url(text: str) -> UrlTarget | None:
    """Return ``text`` as a :class:`UrlTarget`, or None when it cannot be judged
    (no scheme or host, a malformed port, whitespace, control characters, backslashes)."""
    if any(c.isspace() or ord(c) < 32 or c == "\\" for c in text):
        return None
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    host = (parts.hostname or "").lower().rstrip(".")
    if not parts.scheme or not host:
        return None
    scheme = parts.scheme.lower()
    if port is None:
        port = _DEFAULT_PORTS.get(scheme)
    return UrlTarget(scheme, host, port, normalize_path(parts.path))


def normalize_path(path: str) -> str:
    """Return ``path`` percent-decoded until it no longer changes, with ``.`` and ``..``
    segments removed (RFC 3986 5.2.4), always starting with ``/``."""
    for _ in range(5):
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    trailing = path.endswith("/")
    normalized = posixpath.normpath("/" + path.lstrip("/"))
    if normalized.startswith("//"):
        normalized = "/" + normalized.lstrip("/")
    if trailing and normalized != "/":
        normalized += "/"
    return normalized


def under_prefix(target: UrlTarget, entry: UrlTarget, *, any_port: bool = False) -> bool:
    """Return True when ``target`` is ``entry`` or below it (path segments compared whole)."""
    if (target.scheme, target.host) != (entry.scheme, entry.host):
        return False
    if not any_port and target.port != entry.port:
        return False
    base = entry.path.rstrip("/")
    return not base or target.path == base or target.path.startswith(base + "/")


def without_userinfo(url: str) -> str:
    """Return ``url`` without the user-info of its authority (credentials are no part of
    where a request goes, and are never shown)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    return f"{scheme}://{authority.rpartition('@')[2]}{tail}"


def _only_credentials(unknown: Sequence[str], text: str) -> bool:
    """True when the only values not known are secrets in the user-info (``text`` is the
    URL without it): where the request goes is known."""
    return all(u.startswith("env.") for u in unknown) and "${" not in text and "[redacted" not in text


def _is_address_pattern(entry: str) -> bool:
    return "://" not in entry and "@" in entry


@dataclass(frozen=True)
class PolicyChannels:
    """The policy's ``notification_channels``: a workflow may not redefine one."""

    channels: tuple[NotificationChannel, ...]
    name: str = "notification_channels"

    def check(
        self, workflow: Workflow, locate: Locate, known: RunValues = DEFAULTS_ONLY
    ) -> Iterable[Finding]:
        names = {c.name for c in self.channels}
        for channel in workflow.notifications:
            if channel.origin == "workflow" and channel.name in names:
                yield locate(
                    ("notifications", channel.name),
                    channel.location,
                    self.name,
                    f"channel {channel.name!r} is the policy's own; a workflow may use it "
                    "(notify: [...]) but not redefine it: remove it from notifications:",
                )


@dataclass(frozen=True)
class AllowedNotificationDestinations:
    """A workflow's own channels send only to ``destinations`` (URL prefixes, SMTP
    servers, recipient address patterns); ``unresolved`` decides URLs not yet known."""

    destinations: tuple[str, ...]
    unresolved: Literal["allow", "deny"]
    name: str = "allowed_notification_destinations"

    def check(
        self, workflow: Workflow, locate: Locate, known: RunValues = DEFAULTS_ONLY
    ) -> Iterable[Finding]:
        urls = [(e, parse_url(e)) for e in self.destinations if not _is_address_pattern(e)]
        addresses = [e.lower() for e in self.destinations if _is_address_pattern(e)]
        namespaces = known.namespaces(workflow)
        for channel in workflow.notifications:
            if channel.origin != "workflow":
                continue  # the platform's own channels
            label = f"the {channel.type} channel {channel.name!r}"
            if channel.type == "email":
                yield from self._email(channel, label, urls, addresses, locate)
                continue
            found = render_known(channel.url, namespaces, known.env)
            path = ("notifications", channel.name, "url")
            text = without_userinfo(found.text)
            if found.unknown and not _only_credentials(found.unknown, text):
                if self.unresolved == "deny":
                    yield locate(
                        path,
                        channel.location,
                        self.name,
                        f"where {label} sends cannot be checked before the run: {found.why_unknown} "
                        "(the policy denies unresolved destinations: write the URL out)",
                    )
                continue
            shown = without_userinfo(render_known(channel.url, namespaces, None).text)
            target = parse_url(text)
            allowed = target is not None and any(
                entry is not None and under_prefix(target, entry) for _, entry in urls
            )
            if not allowed:
                yield locate(
                    path,
                    channel.location,
                    self.name,
                    f"{label} sends to {shown}, which the policy does not allow "
                    f"(allowed: {listing(self.destinations)})",
                )

    def _email(
        self,
        channel: NotificationChannel,
        label: str,
        urls: Sequence[tuple[str, UrlTarget | None]],
        addresses: Sequence[str],
        locate: Locate,
    ) -> Iterable[Finding]:
        server = UrlTarget("smtp", (channel.host or "").lower().rstrip("."), channel.port, "/")
        servers_ok = any(
            entry is not None
            and entry.scheme == "smtp"
            and under_prefix(server, entry, any_port=entry.port is None)
            for _, entry in urls
        )
        if not servers_ok:
            yield locate(
                ("notifications", channel.name, "host"),
                channel.location,
                self.name,
                f"{label} sends through smtp://{server.host}:{server.port}, which the policy does "
                f"not allow (allowed: {listing(self.destinations)})",
            )
        refused = [
            r
            for r in channel.recipients
            if not any(fnmatch.fnmatchcase(r.strip().lower(), pattern) for pattern in addresses)
        ]
        if refused:
            yield locate(
                ("notifications", channel.name, "to"),
                channel.location,
                self.name,
                f"{label} sends to {', '.join(refused)}, which the policy does not allow "
                f"(allowed: {listing(self.destinations)})",
            )


def resolve_file(path: str, *, base: str | None = None) -> str:
    """Return the path the filesystem will open for ``path``: user home expanded, made
    absolute against ``base`` (default: the current directory), symlinks and ``..``
    resolved (``os.path.realpath``; the parts that do not exist yet are kept as written)."""
    expanded = os.path.expanduser(path)
    if not os.path.isabs(expanded):
        expanded = os.path.join(base or os.getcwd(), expanded)
    return os.path.realpath(expanded)


def file_allowed(resolved: str, entries: Sequence[str]) -> bool:
    """Return True when the resolved path ``resolved`` is one of the file ``entries`` or
    below one of the directory entries (each entry resolved the same way; a directory
    is an entry that ends in ``/`` or that is a directory now)."""
    for entry in entries:
        if "://" in entry:
            continue
        allowed = resolve_file(entry)
        directory = entry.endswith("/") or os.path.isdir(allowed)
        if resolved == allowed and not directory:
            return True
        if directory and resolved.startswith(allowed.rstrip("/") + "/"):
            return True
    return False


@dataclass(frozen=True)
class AllowedFlagTargets:
    """``enable_feature`` writes only the flag files/directories and flag API URL
    prefixes in ``targets``."""

    targets: tuple[str, ...]
    unresolved: Literal["allow", "deny"]
    name: str = "allowed_flag_targets"

    def judge_file(self, path: str, resolved: str | None = None) -> str | None:
        """Return why writing the flag file ``path`` (``resolved``: its resolved form,
        when the caller already resolved it) is not allowed (None: allowed).

        The runner asks again right before it writes, with the path it will write.
        """
        resolved = resolve_file(path) if resolved is None else resolved
        if file_allowed(resolved, self.targets):
            return None
        shown = path if resolved == path else f"{path} (resolved: {resolved})"
        files = [t for t in self.targets if "://" not in t]
        return f"writes the flag file {shown}, which the policy does not allow (allowed: {listing(files)})"

    def check(
        self, workflow: Workflow, locate: Locate, known: RunValues = DEFAULTS_ONLY
    ) -> Iterable[Finding]:
        namespaces = known.namespaces(workflow)
        urls = [parse_url(t) for t in self.targets if "://" in t]
        for step in workflow.steps:
            params = step.params
            if not isinstance(params, EnableFeature):
                continue
            label = f"step {step.name!r}"
            if params.provider == "flagd" and params.file is not None:
                found = render_known(params.file, namespaces, known.env)
                if found.unknown:
                    # A run knows its deployment when it starts and judges again then,
                    # and the runner judges the path it writes right before writing.
                    if self.unresolved == "deny":
                        yield locate(
                            step_path(step),
                            step.location,
                            self.name,
                            f"the flag file {label} writes cannot be checked before the run: "
                            f"{found.why_unknown} (the policy denies unresolved targets: write "
                            "the path out, or set it with --set)",
                        )
                    continue
                why = self.judge_file(found.text)
                if why is not None:
                    yield locate(step_path(step), step.location, self.name, f"{label} {why}")
            elif params.url is not None:
                found = render_known(params.url, namespaces, known.env)
                if found.unknown:
                    if self.unresolved == "deny":
                        yield locate(
                            step_path(step),
                            step.location,
                            self.name,
                            f"the flag API {label} calls cannot be checked before the run: "
                            f"{found.why_unknown} (the policy denies unresolved targets)",
                        )
                    continue
                shown = render_known(params.url, namespaces, None).text if found.secret else found.text
                target = parse_url(found.text)
                if target is None or not any(u is not None and under_prefix(target, u) for u in urls):
                    yield locate(
                        step_path(step),
                        step.location,
                        self.name,
                        f"{label} calls the flag API {shown}, which the policy does not allow "
                        f"(allowed: {listing(self.targets)})",
                    )


__all__ = [
    "AllowedFlagTargets",
    "AllowedNotificationDestinations",
    "PolicyChannels",
    "UrlTarget",
    "file_allowed",
    "normalize_path",
    "parse_url",
    "resolve_file",
    "under_prefix",
]
