"""The host rules: the hosts collectors and webhooks reach, judged on the values known when judging (:func:`render_known`), URL hosts (:func:`url_host`) and the target a SQL driver will really connect to (:func:`sql_targets`: SQLAlchemy URL, libpq conninfo and the environment libpq reads, MySQL options, SQLite files)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from afdp.workflow.findings import Finding
from afdp.workflow.interpolation import Template
from afdp.workflow.loader import DocPath
from afdp.workflow.model import (
    Location,
    Store,
    Workflow,
)
from afdp.workflow.policy.base import (
    DEFAULTS_ONLY,
    Locate,
    RunValues,
    collector_location,
    collector_path,
    listing,
)


@dataclass(frozen=True)
class Rendered:
    """A template rendered with what is known: ``text`` (the real text when ``unknown``
    is empty), the ``${...}`` it still depends on, and whether it holds ``${env.*}``
    values (``secret``: never shown in a message)."""

    text: str
    unknown: tuple[str, ...] = ()
    secret: bool = False

    @property
    def why_unknown(self) -> str:
        return f"it comes from {', '.join('${' + n + '}' for n in self.unknown)}"


def render_known(
    template: Template, values: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> Rendered:
    """Render ``template`` with ``values`` (namespaces) and ``env`` (None: not known).

    A value set for the run is taken literally (never interpolated again), as the runner
    takes it; text that still holds ``${`` or a redacted secret counts as unknown.
    """
    from afdp.workflow.interpolation import Secret

    missing: list[str] = []
    try:
        out = template.render(values, env=env, keep_missing=True, missing=missing)
    except Exception as exc:  # UnresolvedError: too long; never judged as a target
        return Rendered("", (f"an unrenderable value ({type(exc).__name__})",))
    unknown = list(missing)
    secret = isinstance(out, Secret)
    if isinstance(out, Secret):
        unset = [name for name in out.names if env is None or env.get(name) is None]
        unknown += [f"env.{name}" for name in unset]
        text = out.redacted() if unset else out.reveal()
    else:
        text = str(out)
    if not unknown and ("${" in text or "[redacted env." in text):
        # A value that itself reads like a placeholder or a hidden secret is not a target.
        unknown += [p.dotted for p in template.placeholders] or ["a value holding '${'"]
    return Rendered(text, tuple(dict.fromkeys(unknown)), secret)


@dataclass(frozen=True)
class HostCheck:
    """The host of a URL template, as far as it is known before the run."""

    host: str | None  # None: no network host (sqlite), or unresolved (see ``unresolved``)
    unresolved: str = ""  # why the host is only known at run time
    secret: bool = False  # the host comes from ${env.*}: judged, never shown


def url_host(
    url: Template,
    variables: Mapping[str, Any],
    *,
    deployment: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> HostCheck:
    """Return the host of ``url`` with ``${workflow.*}`` substituted from ``variables``
    (and ``${deployment.*}`` / ``${env.*}`` from ``deployment`` / ``env`` when known).

    Returns:
        A :class:`HostCheck`: the lower-case host, no host (a file URL such as
        ``sqlite:///x.db``), or why it cannot be known before the run.
    """
    values: dict[str, Any] = {"workflow": variables}
    if deployment is not None:
        values["deployment"] = dict(deployment)
    found = render_known(url, values, env)
    scheme, sep, rest = found.text.partition("://")
    if not sep:
        # No literal scheme: either a value known only at run time or not a network URL.
        if url.is_literal:
            return HostCheck(None)
        return HostCheck(None, found.why_unknown if found.unknown else "the URL has no scheme")
    authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    host_part = authority.rpartition("@")[2]  # credentials may be secret; the host is not
    if any(marker in scheme + host_part for marker in ("[redacted env.", "${")):
        return HostCheck(None, found.why_unknown if found.unknown else "the host holds '${'")
    secret = False
    if found.secret:
        # Judged with the real value; shown only when no ${env.*} reaches the host.
        hidden = render_known(url, values, None).text.partition("://")
        hidden_host = hidden[2].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0].rpartition("@")[2]
        secret = "[redacted env." in hidden[0] + hidden_host
    try:
        host = urlsplit(f"{scheme}://{host_part}").hostname
    except ValueError:
        return HostCheck(None, "the URL is malformed", secret)
    return HostCheck(host.lower().rstrip(".") if host else None, "", secret)


@dataclass(frozen=True)
class SqlTargets:
    """The hosts a SQL collector's driver will connect to, or why they cannot be judged.

    ``hosts`` empty and ``unresolved`` empty: a local SQLite file (no network target).
    ``origin`` names where a host came from when not from the URL (an environment
    variable the driver reads); ``secret``: the URL comes from ``${env.*}``.
    """

    hosts: tuple[str, ...] = ()
    unresolved: str = ""
    secret: bool = False
    origin: str = ""


#: libpq connection parameters that name the target, and the environment variables
#: libpq reads for each when the connection string does not set it.
_LIBPQ_ENV = {"host": "PGHOST", "hostaddr": "PGHOSTADDR", "service": "PGSERVICE"}


#: MySQL driver options (mysqlclient, PyMySQL) that do not change where it connects.
#: Any other option (``unix_socket``, ``read_default_file``, ``read_default_group``,
#: ``named_pipe``, a future one) cannot be judged.
_MYSQL_SAFE_OPTIONS = frozenset(
    {
        "host", "port", "user", "passwd", "password", "db", "database", "charset",
        "collation", "connect_timeout", "read_timeout", "write_timeout", "use_unicode",
        "autocommit", "sql_mode", "program_name", "binary_prefix", "client_flag",
        "compress", "ssl", "ssl_ca", "ssl_capath", "ssl_cert", "ssl_key", "ssl_cipher",
        "ssl_mode", "ssl_disabled", "ssl_verify_cert", "ssl_verify_identity",
        "ssl_check_hostname", "ssl_key_password", "local_infile",
    }
)


def sql_targets(
    url: Template,
    variables: Mapping[str, Any],
    *,
    deployment: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    driver_env: Mapping[str, str] | None = None,
) -> SqlTargets:
    """Return the hosts a SQL collector's driver will connect to, or why that cannot be
    known before the run.

    The target is read the way the driver reads it, not from the URL's authority:
    SQLAlchemy turns the URL into the driver's connection arguments (query parameters
    such as ``?host=`` and ``?port=`` override the authority), and for PostgreSQL libpq's
    own parser (psycopg's ``conninfo``) gives the final ``host`` list and ``hostaddr``
    list (libpq connects to a ``hostaddr`` instead of its host). With ``driver_env``
    (a run about to start), what libpq takes from the environment for a parameter the
    URL does not set counts too: ``PGHOSTADDR`` redirects a connection to an allowed
    host name, ``PGHOST`` names the host of a URL without one, ``PGSERVICE`` a service.

    Cannot be judged (``unresolved``): a Unix socket, a ``service`` (read from a file at
    run time), no host at all, a MySQL option that may name another target
    (``unix_socket``, ``read_default_file``, any option not known to be harmless), a
    SQLite ``file:`` URI or query parameters (``vfs``, ``mode``...), an unknown dialect.
    """
    values: dict[str, Any] = {"workflow": variables}
    if deployment is not None:
        values["deployment"] = dict(deployment)
    found = render_known(url, values, env)
    secret = found.secret
    if found.unknown:
        return SqlTargets(unresolved=found.why_unknown, secret=secret)
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(found.text)
        backend = parsed.get_backend_name()
        if backend == "sqlite":
            database = parsed.database or ""
            if parsed.query or database.startswith("file:"):
                return SqlTargets(
                    unresolved="a SQLite 'file:' URI or URL parameters (vfs, mode, immutable...) "
                    "cannot be judged: name the database file alone (sqlite:///path/to/file.db)",
                    secret=secret,
                )
            return SqlTargets(secret=secret)
        _, params = parsed.get_dialect()().create_connect_args(parsed)
    except Exception as exc:  # ArgumentError, NoSuchModuleError, ValueError: not judgeable
        return SqlTargets(
            unresolved=f"the URL cannot be read as the driver reads it ({type(exc).__name__})",
            secret=secret,
        )
    origin = ""
    if backend == "postgresql":
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        try:
            info = conninfo_to_dict(
                make_conninfo("", **{k: v for k, v in params.items() if v is not None})
            )
        except Exception as exc:  # psycopg.ProgrammingError: a malformed conninfo
            return SqlTargets(
                unresolved=f"libpq cannot read its connection string ({type(exc).__name__})",
                secret=secret,
            )
        for key, variable in _LIBPQ_ENV.items():
            if key not in info and driver_env is not None and variable in driver_env:
                info[key] = driver_env[variable]
                origin = f"{variable} in the environment"
        # libpq looks a service up whenever one is named, even an empty name.
        if "service" in info or "servicefile" in info:
            return SqlTargets(
                unresolved="a libpq service names the target (read from a file at run time)",
                secret=secret,
            )
        hosts = _libpq_hosts(str(info.get("host") or ""), str(info.get("hostaddr") or ""))
        if isinstance(hosts, str):
            return SqlTargets(unresolved=hosts, secret=secret)
        targets = hosts
    elif backend in ("mysql", "mariadb"):
        unknown = sorted(k for k, v in params.items() if k not in _MYSQL_SAFE_OPTIONS and v is not None)
        if unknown:
            return SqlTargets(
                unresolved=f"MySQL option(s) {', '.join(unknown)} may name another target "
                "(a Unix socket, an option file) and cannot be judged",
                secret=secret,
            )
        host = str(params.get("host") or "")
        if not host:
            return SqlTargets(
                unresolved="no host: the driver would pick one at run time (a local socket)",
                secret=secret,
            )
        targets = [host]
    else:
        return SqlTargets(unresolved=f"AFDP cannot judge {backend!r} connection targets", secret=secret)
    return SqlTargets(
        tuple(h.lower().strip("[]").rstrip(".") for h in targets), "", secret, origin
    )


def _libpq_hosts(host: str, hostaddr: str) -> list[str] | str:
    """Return where libpq connects for each entry of its host lists, or why not judgeable.

    libpq pairs the comma-separated ``host`` and ``hostaddr`` lists by position: a
    non-empty ``hostaddr`` is the address connected to (the host name then only serves
    authentication), else the host is looked up, or is a Unix socket directory.
    """
    # Entries are taken as libpq takes them (no trimming): " evil.example" is not judged
    # as "evil.example", and an allowed name with a stray space is not allowed.
    names = host.split(",") if host else []
    addresses = hostaddr.split(",") if hostaddr else []
    if names and addresses and len(names) != len(addresses):
        return "the host and hostaddr lists differ in length (libpq refuses them)"
    count = max(len(names), len(addresses))
    if count == 0:
        return "no host: the driver would pick one at run time (PGHOST, a local socket)"
    targets: list[str] = []
    for index in range(count):
        address = addresses[index] if addresses else ""
        name = names[index] if names else ""
        target = address or name
        if not target:
            return "no host: the driver would pick one at run time (PGHOST, a local socket)"
        if not address and name.startswith(("/", "@")):
            return "a Unix socket directory names the target"
        targets.append(target)
    return targets


def host_allowed(host: str, patterns: Sequence[str]) -> bool:
    """Return True when ``host`` matches an allow-list entry (exact, ``*.suffix`` or ``*``).

    IPv6 entries may be written with or without brackets; ``*.example.com`` matches
    ``a.example.com`` and ``a.b.example.com`` but not ``example.com`` itself.
    """
    for pattern in patterns:
        entry = pattern.lower().strip("[]").rstrip(".")
        if entry == "*" or host == entry:
            return True
        if entry.startswith("*.") and host.endswith(entry[1:]) and host != entry[2:]:
            return True
        try:
            if ipaddress.ip_address(host) == ipaddress.ip_address(entry):
                return True
        except ValueError:
            continue
    return False


@dataclass(frozen=True)
class AllowedHosts:
    """URLs reach only ``hosts``; ``unresolved`` says what to do when the host is unknown.

    ``what`` is ``collectors`` (collector URLs) or ``webhooks`` (action webhooks and the
    flag webhooks of ``enable_feature`` steps).
    """

    hosts: tuple[str, ...]
    unresolved: Literal["allow", "deny"]
    what: Literal["collectors", "webhooks"]
    name: str = "allowed_collector_hosts"

    def check(
        self, workflow: Workflow, locate: Locate, known: RunValues = DEFAULTS_ONLY
    ) -> Iterable[Finding]:
        namespaces = known.namespaces(workflow)
        variables = namespaces["workflow"]
        deployment = namespaces.get("deployment")
        for label, url, path, fallback, kind in self._urls(workflow):
            if kind == "sql":
                found_sql = sql_targets(
                    url, variables, deployment=deployment, env=known.env, driver_env=known.driver_env
                )
                yield from self._check_sql(label, found_sql, path, fallback, locate)
                continue
            found = url_host(url, variables, deployment=deployment, env=known.env)
            if found.unresolved:
                if self.unresolved == "deny":
                    yield locate(
                        path,
                        fallback,
                        self.name,
                        f"the host of {label} cannot be checked before the run: {found.unresolved} "
                        "(the policy denies unresolved hosts: write the host in the URL)",
                    )
                continue
            if found.host is None:
                if self.what == "collectors":
                    continue  # a local database file: no network host to allow
                yield locate(path, fallback, self.name, f"{label} has no host")
                continue
            if not host_allowed(found.host, self.hosts):
                shown = "a host from ${env.*}" if found.secret else f"host {found.host!r}"
                yield locate(
                    path,
                    fallback,
                    self.name,
                    f"{label} reaches {shown}, which the policy does not allow "
                    f"(allowed: {listing(self.hosts)})",
                )

    def _check_sql(
        self,
        label: str,
        found: SqlTargets,
        path: DocPath,
        fallback: Location | None,
        locate: Locate,
    ) -> Iterable[Finding]:
        if found.unresolved:
            if self.unresolved == "deny":
                yield locate(
                    path,
                    fallback,
                    self.name,
                    f"the database {label} connects to cannot be checked before the run: "
                    f"{found.unresolved} (the policy denies unresolved hosts: write the host in the URL)",
                )
            return
        for host in found.hosts:
            if not host_allowed(host, self.hosts):
                shown = "a host from ${env.*}" if found.secret and not found.origin else f"host {host!r}"
                how = f"with {found.origin}" if found.origin else "as the database driver reads the URL"
                yield locate(
                    path,
                    fallback,
                    self.name,
                    f"{label} connects to {shown} ({how}), "
                    f"which the policy does not allow (allowed: {listing(self.hosts)})",
                )

    def _urls(
        self, workflow: Workflow
    ) -> Iterable[tuple[str, Template, DocPath, Location | None, str]]:
        if self.what == "collectors":
            for collector in workflow.collectors:
                label = f"collector {collector.name!r}" + (
                    " (built in)" if collector.builtin else ""
                )
                yield (
                    label,
                    collector.url,
                    collector_path(collector, collector.url_key),
                    collector_location(workflow, collector),
                    str(collector.type),
                )
        else:
            for action in workflow.actions:
                if action.webhook is not None:
                    yield (
                        f"the {action.action} webhook",
                        action.webhook,
                        ("actions", action.action, "webhook"),
                        action.location,
                        "webhook",
                    )
            for channel in workflow.notifications:
                if channel.origin == "policy":
                    continue  # declared by the platform team in the policy itself
                yield (
                    f"the {channel.type} channel {channel.name!r}",
                    channel.url,
                    ("notifications", channel.name, "host" if channel.type == "email" else "url"),
                    channel.location,
                    "webhook",
                )
            for step in workflow.steps:
                url = getattr(step.params, "url", None)
                if step.type == "enable_feature" and url is not None:
                    yield (f"the flag webhook of step {step.name!r}", url, (), step.location, "webhook")
            for step in workflow.steps:
                if isinstance(step.params, Store) and step.params.url is not None:
                    yield (
                        f"the store url of step {step.name!r}",
                        step.params.url,
                        (),
                        step.location,
                        "webhook",
                    )
