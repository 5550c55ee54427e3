"""Admission policy: what a valid workflow may do before it is allowed to run.

A platform team writes a policy file (schema: ``evidence-schema/admission-policy.v1
.schema.json``; the shipped default is ``policies/admission.yaml``). Each key is one
rule, and each rule is a small object with ``check(workflow, locate, known) -> findings``;
:class:`AllOf` combines them, as sigstore's ``verify/policy.py`` combines certificate
policies. Unlike a verification policy, an admission check reports *every* violation at
once, each as a :class:`~afdp.workflow.findings.Finding` located in the workflow file and
naming its rule (``rule`` field; the message starts with it).

Rules (all optional; an omitted rule allows everything it governs):

1. ``allowed_workflows``: workflow names (glob patterns).
2. ``allowed_step_types``: the only step types the workflow may use.
3. ``allowed_collector_types`` and ``allowed_collector_hosts``: what collectors are and
   whom they reach; ``unresolved_hosts`` decides URLs whose host is only known at run time.
4. ``allowed_action_commands`` and ``allowed_webhook_hosts``: what actions may run or call.
5. ``required_variables`` and ``required_steps`` (for example a baseline and an impact).
6. ``limits``: ``max_duration``, ``max_steps``, ``max_metrics``, ``max_capture_duration``.

Hosts and programs are judged on what is known when judging (:class:`RunValues`):
``afdp validate`` knows the ``${workflow.*}`` defaults, ``afdp plan`` also the values a
run sets (``overrides``), and a run about to start (:meth:`Admission.readmit`, called
by the runner) also its ``${deployment.*}`` values, the environment ``${env.*}`` reads
and the environment a database driver takes its defaults from. A host that still
depends on a value not known then (``${steps.*}`` always) is "unresolved". A SQL
collector's target is the one its driver will use (:func:`sql_targets`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from afdp.workflow.catalog import STEP_TYPES, StepKind
from afdp.workflow.findings import Finding, PolicyInvalid, PolicyRejected, format_path
from afdp.workflow.interpolation import Template
from afdp.workflow.loader import DocPath, Document
from afdp.workflow.model import (
    Analyze,
    Capture,
    Collector,
    Location,
    Query,
    Step,
    Variable,
    Workflow,
)
from afdp.workflow.units import Duration, UnitError, parse_duration

SCHEMA = "admission-policy.v1"
DEFAULT_POLICY_FILE = "admission.yaml"

Locate = Callable[[DocPath, "Location | None", str, str], Finding]


@dataclass(frozen=True)
class RunValues:
    """What a run's templates will be rendered with, as far as it is known when judging.

    ``afdp validate`` knows only the ``${workflow.*}`` defaults; ``afdp plan`` and a run
    also know the ``--set workflow.*`` ``overrides``; a run about to start knows its
    ``deployment`` values (``${deployment.*}``), the ``env`` its ``${env.*}`` read, and
    ``driver_env``: the process environment a database driver takes its defaults from
    (libpq's ``PGHOST``, ``PGHOSTADDR``, ``PGSERVICE``). None means "not known".
    """

    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    deployment: Mapping[str, Any] | None = None
    env: Mapping[str, str] | None = None
    driver_env: Mapping[str, str] | None = None

    def namespaces(self, workflow: Workflow) -> dict[str, Any]:
        """Return the ``workflow`` (and, when known, ``deployment``) namespaces, computed
        exactly as the runner computes them (:meth:`Workflow.values`)."""
        values: dict[str, Any] = {
            "workflow": workflow.variable_values(self.overrides, deployment=self.deployment)
        }
        if self.deployment is not None:
            values["deployment"] = dict(self.deployment)
        return values


#: Nothing known but the ``${workflow.*}`` defaults (``afdp validate``).
DEFAULTS_ONLY = RunValues()


class Rule(Protocol):
    """One admission rule: every way ``workflow`` breaks it, as located findings."""

    @property
    def name(self) -> str: ...

    def check(
        self, workflow: Workflow, locate: Locate, known: RunValues = ...
    ) -> Iterable[Finding]: ...


# --- locating violations in the workflow file -----------------------------------------


class Locator:
    """Turns a document path (or a model :class:`Location`) into a located finding.

    With the parsed :class:`Document` every path is exact; without it (a workflow built
    elsewhere) steps and collectors still carry their own location and anything else
    points at the top of the file.
    """

    def __init__(self, workflow: Workflow, document: Document | None = None) -> None:
        self.workflow = workflow
        self.document = document

    def __call__(
        self, path: DocPath, fallback: Location | None, rule: str, message: str
    ) -> Finding:
        text = f"{rule}: {message}"
        if self.document is not None and (path or fallback is None):
            return self.document.finding(path, text, prefer_key=True, rule=rule)
        if fallback is not None:
            return Finding(fallback.file, fallback.line, fallback.column, fallback.path, text, rule)
        return Finding(self.workflow.source, 1, 1, format_path(path), text, rule)


def _step_path(step: Step) -> DocPath:
    # Steps carry their location; the locator prefers it (an empty path means "use it").
    return ()


# --- the rules ------------------------------------------------------------------------


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _listing(values: Iterable[str]) -> str:
    items = list(values)
    return ", ".join(items[:15]) + (", ..." if len(items) > 15 else "") if items else "none"


@dataclass(frozen=True)
class AllowedWorkflows:
    """The workflow's name matches one of ``patterns`` (``allowedProductWorkflows``)."""

    patterns: tuple[str, ...]
    name: str = "allowed_workflows"

    def check(
        self, workflow: Workflow, locate: Locate, known: RunValues = DEFAULTS_ONLY
    ) -> Iterable[Finding]:
        if not _matches(workflow.name, self.patterns):
            yield locate(
                ("name",),
                None,
                self.name,
                f"workflow {workflow.name!r} is not on the policy's list (allowed: {_listing(self.patterns)})",
            )


@dataclass(frozen=True)
class AllowedStepTypes:
    """Every step's type is one of ``types``."""

    types: frozenset[str]
    name: str = "allowed_step_types"

    def check(
        self, workflow: Workflow, locate: Locate, known: RunValues = DEFAULTS_ONLY
    ) -> Iterable[Finding]:
        for step in workflow.steps:
            if step.type not in self.types:
                origin = f" (generated by stage {step.stage!r})" if step.stage else ""
                yield locate(
                    _step_path(step),
                    step.location,
                    self.name,
                    f"step {step.name!r}{origin} has type {step.type!r}, which the policy does not allow "
                    f"(allowed: {_listing(sorted(self.types))})",
                )


@dataclass(frozen=True)
class AllowedCollectorTypes:
    """Every collector the workflow uses is of one of ``types``."""

    types: frozenset[str]
    name: str = "allowed_collector_types"

    def check(
        self, workflow: Workflow, locate: Locate, known: RunValues = DEFAULTS_ONLY
    ) -> Iterable[Finding]:
        for collector in workflow.collectors:
            if collector.type not in self.types:
                yield locate(
                    _collector_path(collector, "type"),
                    _collector_location(workflow, collector),
                    self.name,
                    f"collector {collector.name!r} is a {collector.type} collector, which the policy "
                    f"does not allow (allowed: {_listing(sorted(self.types))})",
                )


def _collector_path(collector: Collector, key: str) -> DocPath:
    return () if collector.builtin else ("collectors", collector.name, key)


def _collector_location(workflow: Workflow, collector: Collector) -> Location | None:
    if collector.location is not None:
        return collector.location
    # A built-in collector is not written anywhere: point at the first step that uses it.
    metrics = {m.name for m in workflow.metrics if m.collector == collector.name}
    for step in workflow.steps:
        params = step.params
        if isinstance(params, Capture) and metrics.intersection(params.metrics):
            return step.location
        if isinstance(params, Query) and params.collector == collector.name:
            return step.location
    return None


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

    ``what`` is ``collectors`` (collector URLs) or ``webhooks`` (action webhooks).
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
                    f"(allowed: {_listing(self.hosts)})",
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
                    f"which the policy does not allow (allowed: {_listing(self.hosts)})",
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
                    _collector_path(collector, "url"),
                    _collector_location(workflow, collector),
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


@dataclass(frozen=True)
class AllowedCommands:
    """Action commands run only ``programs`` (their first argument: a name or absolute path)."""

    programs: tuple[str, ...]
    name: str = "allowed_action_commands"

    def check(
        self, workflow: Workflow, locate: Locate, known: RunValues = DEFAULTS_ONLY
    ) -> Iterable[Finding]:
        namespaces = known.namespaces(workflow)
        for action in workflow.actions:
            if action.command is None:
                continue
            path: DocPath = ("actions", action.action, "command", 0)
            first = action.command[0]
            if not first.is_literal and any(p.parts[0] != "workflow" for p in first.placeholders):
                yield locate(
                    path,
                    action.location,
                    self.name,
                    f"the {action.action} command's program {first.source!r} is only known at run time; "
                    "write the program's name",
                )
                continue
            # A program set for the run is taken literally; one still holding ${...} is
            # not on any list.
            program = render_known(first, namespaces).text
            if not self.allows(program):
                allowed = (
                    _listing(self.programs) if self.programs else "none: commands are forbidden"
                )
                yield locate(
                    path,
                    action.location,
                    self.name,
                    f"the {action.action} command runs {program!r}, which the policy does not allow "
                    f"(allowed: {allowed})",
                )

    def allows(self, program: str) -> bool:
        """Return True when ``program`` is on the list (by absolute path, or by bare name)."""
        if program in self.programs:
            return True
        # A bare name on the list allows that program found on PATH, not an arbitrary path
        # that happens to end with the same name.
        return "/" not in program and PurePosixPath(program).name in self.programs


@dataclass(frozen=True)
class RequiredVariables:
    """The workflow declares each of ``variables`` under ``variables:``."""

    variables: tuple[str, ...]
    name: str = "required_variables"

    def check(
        self, workflow: Workflow, locate: Locate, known: RunValues = DEFAULTS_ONLY
    ) -> Iterable[Finding]:
        declared = {v.name for v in workflow.variables}
        for variable in self.variables:
            if variable not in declared:
                where: DocPath = ("variables",) if workflow.variables else ()
                yield locate(
                    where,
                    None,
                    self.name,
                    f"the policy requires variable {variable!r}; declare it under variables:",
                )


@dataclass(frozen=True)
class RequiredStep:
    """At least ``min_count`` steps of one of ``types``, or of ``kind`` (and capture ``role``).

    ``role`` is ``before``/``after`` (the deployment mark) or ``baseline``/``impact`` (what
    an analysis compares the capture as).
    """

    rule: str
    types: frozenset[str] = frozenset()
    kind: StepKind | None = None
    role: str | None = None
    description: str = ""
    min_count: int = 1

    @property
    def name(self) -> str:
        return f"required_steps.{self.rule}"

    def matches(self, step: Step, compared: Mapping[str, set[str]]) -> bool:
        """Return True when ``step`` satisfies this requirement.

        ``compared`` maps ``baseline`` and ``impact`` to the names of the captures that
        analyses compare in that role.
        """
        if self.types and step.type not in self.types:
            return False
        if self.kind is not None and step.kind is not self.kind:
            return False
        if self.role is not None:
            params = step.params
            if not isinstance(params, Capture):
                return False
            if self.role in ("before", "after"):
                return params.role == self.role
            return step.name in compared[self.role]
        return True

    def check(
        self, workflow: Workflow, locate: Locate, known: RunValues = DEFAULTS_ONLY
    ) -> Iterable[Finding]:
        compared: dict[str, set[str]] = {"baseline": set(), "impact": set()}
        for step in workflow.steps:
            if isinstance(step.params, Analyze):
                compared["baseline"].add(step.params.baseline)
                compared["impact"].add(step.params.impact)
        count = sum(1 for step in workflow.steps if self.matches(step, compared))
        if count >= self.min_count:
            return
        wanted = []
        if self.types:
            wanted.append("a step of type " + " or ".join(sorted(self.types)))
        if self.kind is not None:
            what = f"a {self.kind.value} step"
            if self.role in ("before", "after"):
                what += f" {self.role} the deployment mark"
            elif self.role is not None:
                what += f" that an analysis compares as its {self.role}"
            wanted.append(what)
        need = " that is ".join(wanted)
        times = f" (at least {self.min_count}, found {count})" if self.min_count > 1 else ""
        why = f": {self.description}" if self.description else ""
        yield locate(("workflow",), None, self.name, f"the policy requires {need}{times}{why}")


@dataclass(frozen=True)
class Limits:
    """Upper bounds on the workflow's length, steps, metrics and single capture windows."""

    max_duration: Duration | None = None
    max_steps: int | None = None
    max_metrics: int | None = None
    max_capture_duration: Duration | None = None
    name: str = "limits"

    def check(
        self, workflow: Workflow, locate: Locate, known: RunValues = DEFAULTS_ONLY
    ) -> Iterable[Finding]:
        if self.max_duration is not None:
            total = workflow.max_duration()
            if total > self.max_duration:
                yield locate(
                    ("workflow",),
                    None,
                    "limits.max_duration",
                    f"the workflow can run for up to {total} (waits, capture windows and signal "
                    f"timeouts added up); the policy allows {self.max_duration}",
                )
        steps = workflow.steps
        if self.max_steps is not None and len(steps) > self.max_steps:
            yield locate(
                ("workflow",),
                None,
                "limits.max_steps",
                f"the workflow has {len(steps)} steps (stages expanded); the policy allows {self.max_steps}",
            )
        used = {m for s in steps if isinstance(s.params, Capture) for m in s.params.metrics}
        if self.max_metrics is not None and len(used) > self.max_metrics:
            yield locate(
                ("workflow",),
                None,
                "limits.max_metrics",
                f"the workflow captures {len(used)} metrics; the policy allows {self.max_metrics}",
            )
        if self.max_capture_duration is not None:
            for step in steps:
                params = step.params
                window = params.duration if isinstance(params, (Capture, Query)) else None
                if window is not None and window > self.max_capture_duration:
                    yield locate(
                        _step_path(step),
                        step.location,
                        "limits.max_capture_duration",
                        f"step {step.name!r} samples for {window}; the policy allows at most "
                        f"{self.max_capture_duration} per step",
                    )


@dataclass(frozen=True)
class AllOf:
    """Every rule must hold; ``check`` returns the violations of all of them."""

    rules: tuple[Rule, ...]

    def check(
        self, workflow: Workflow, locate: Locate, known: RunValues = DEFAULTS_ONLY
    ) -> list[Finding]:
        """Return every violation of every rule (empty when the workflow is admitted)."""
        return [finding for rule in self.rules for finding in rule.check(workflow, locate, known)]


@dataclass(frozen=True)
class AdmissionPolicy:
    """A named set of rules read from ``source`` (all of them must hold)."""

    name: str
    source: str
    rules: AllOf
    description: str = ""

    def violations(
        self,
        workflow: Workflow,
        document: Document | None = None,
        *,
        overrides: Mapping[str, Any] | None = None,
        known: RunValues | None = None,
    ) -> list[Finding]:
        """Return every rule ``workflow`` breaks, located in its file (``document`` for exact paths).

        ``overrides`` are the ``${workflow.*}`` values a run will use instead of the
        defaults (``--set workflow.NAME=...``); ``known`` is everything a run about to
        start knows (overrides, ``${deployment.*}``, ``${env.*}``, the driver's
        environment): hosts and programs are judged with exactly those values.
        """
        if known is None:
            known = RunValues(overrides=dict(overrides or {}))
        elif overrides:
            known = dataclasses.replace(known, overrides={**known.overrides, **overrides})
        return self.rules.check(workflow, Locator(workflow, document), known)

    def admit(
        self,
        workflow: Workflow,
        document: Document | None = None,
        *,
        overrides: Mapping[str, Any] | None = None,
        known: RunValues | None = None,
    ) -> Workflow:
        """Return ``workflow`` when every rule holds with ``overrides`` / ``known`` (see
        :meth:`violations`); the result remembers this policy and those values.

        Raises:
            PolicyRejected: with every violation, each naming its rule (exit 1).
        """
        found = self.violations(workflow, document, overrides=overrides, known=known)
        if found:
            raise PolicyRejected(found)
        if known is None:
            known = RunValues(overrides=dict(overrides or {}))
        # The environments are judged, never kept: a workflow may be serialized.
        kept = RunValues(overrides=dict(known.overrides), deployment=known.deployment)
        return dataclasses.replace(workflow, admission=Admission(self, kept))


@dataclass(frozen=True)
class Admission:
    """Which policy admitted a workflow, and with which ``--set`` and deployment values
    (the environments it was judged with are not kept)."""

    policy: AdmissionPolicy
    known: RunValues

    @property
    def overrides(self) -> Mapping[str, Any]:
        """The ``${workflow.*}`` values the workflow was admitted with."""
        return self.known.overrides

    def readmit(self, workflow: Workflow, known: RunValues) -> Workflow:
        """Return ``workflow`` admitted with the values a run will really use.

        Nothing is skipped because it was judged before: the run's ``known`` values
        (its ``--set`` values, deployment values and environment) are judged as a whole,
        each time a run is about to start.

        Raises:
            PolicyRejected: those values break a rule (a ``--set`` URL or program, a
                deployment value or environment that points a collector, webhook or
                database driver at a host the policy forbids): nothing may run.
        """
        return self.policy.admit(workflow, known=known)


def with_overrides(workflow: Workflow, overrides: Mapping[str, Any]) -> Workflow:
    """Return ``workflow`` with ``overrides`` as the defaults of its variables (taken literally)."""
    variables = tuple(
        Variable(v.name, overrides[v.name]) if v.name in overrides else v
        for v in workflow.variables
    )
    return dataclasses.replace(workflow, variables=variables)


# --- reading a policy file ------------------------------------------------------------


def default_policy_path() -> Path:
    """Return the path of the shipped default policy (``policies/admission.yaml``).

    Raises:
        SchemaError: the installation has no policies folder.
    """
    from afdp.evidence.schemas import data_dir

    return data_dir("policies") / DEFAULT_POLICY_FILE


def load_policy(path: str | Path | None = None) -> AdmissionPolicy:
    """Read an admission policy file (the shipped default when ``path`` is None).

    Returns:
        The :class:`AdmissionPolicy`.

    Raises:
        UsageError: the file is missing or unreadable (exit 2).
        PolicyInvalid: the file is not a valid policy; every problem located (exit 2).
    """
    from afdp.workflow.findings import WorkflowInvalid
    from afdp.workflow.loader import load
    from afdp.workflow.structure import check

    file = default_policy_path() if path is None else Path(path)
    try:
        document = load(file, what="admission policy")
    except WorkflowInvalid as exc:
        raise PolicyInvalid(exc.findings) from None
    findings = check(document, SCHEMA)
    if findings:
        raise PolicyInvalid(findings)
    return build_policy(document)


def build_policy(document: Document) -> AdmissionPolicy:
    """Build the policy objects from a document that matches the policy schema.

    Raises:
        PolicyInvalid: a duration cannot be parsed (located).
    """
    data: dict[str, Any] = document.data
    rules: list[Rule] = []
    problems: list[Finding] = []

    def duration(key: str) -> Duration | None:
        value = data.get("limits", {}).get(key)
        if value is None:
            return None
        try:
            return parse_duration(value)
        except UnitError as exc:
            problems.append(document.finding(("limits", key), str(exc)))
            return None

    if "allowed_workflows" in data:
        rules.append(AllowedWorkflows(tuple(data["allowed_workflows"])))
    if "allowed_step_types" in data:
        rules.append(AllowedStepTypes(frozenset(data["allowed_step_types"])))
    if "allowed_collector_types" in data:
        rules.append(AllowedCollectorTypes(frozenset(data["allowed_collector_types"])))
    host_lists = "allowed_collector_hosts" in data or "allowed_webhook_hosts" in data
    unresolved = data.get("unresolved_hosts", "deny" if host_lists else "allow")
    if "allowed_collector_hosts" in data:
        rules.append(AllowedHosts(tuple(data["allowed_collector_hosts"]), unresolved, "collectors"))
    if "allowed_webhook_hosts" in data:
        rules.append(
            AllowedHosts(
                tuple(data["allowed_webhook_hosts"]),
                unresolved,
                "webhooks",
                name="allowed_webhook_hosts",
            )
        )
    if "allowed_action_commands" in data:
        rules.append(AllowedCommands(tuple(data["allowed_action_commands"])))
    if "required_variables" in data:
        rules.append(RequiredVariables(tuple(data["required_variables"])))
    seen: set[str] = set()
    for index, spec in enumerate(data.get("required_steps", [])):
        if spec["name"] in seen:
            problems.append(
                document.finding(
                    ("required_steps", index, "name"),
                    f"requirement {spec['name']!r} is listed twice",
                )
            )
        seen.add(spec["name"])
        for step_type in spec.get("types", ()):
            kind = spec.get("kind")
            if kind is not None and STEP_TYPES[step_type].kind.value != kind:
                problems.append(
                    document.finding(
                        ("required_steps", index, "types"),
                        f"step type {step_type!r} is a {STEP_TYPES[step_type].kind.value} step, "
                        f"never a {kind} step: this requirement could not be met",
                    )
                )
        if "role" in spec and spec.get("kind", "capture") != "capture":
            problems.append(
                document.finding(
                    ("required_steps", index, "role"),
                    "role (before/after the deployment mark) only applies to kind: capture",
                )
            )
        rules.append(
            RequiredStep(
                rule=spec["name"],
                types=frozenset(spec.get("types", ())),
                kind=StepKind(spec["kind"]) if "kind" in spec else None,
                role=spec.get("role"),
                description=spec.get("description", ""),
                min_count=spec.get("min_count", 1),
            )
        )
    if "limits" in data:
        limits = data["limits"]
        rules.append(
            Limits(
                max_duration=duration("max_duration"),
                max_steps=limits.get("max_steps"),
                max_metrics=limits.get("max_metrics"),
                max_capture_duration=duration("max_capture_duration"),
            )
        )
    if problems:
        raise PolicyInvalid(problems)
    return AdmissionPolicy(
        name=data.get("name") or Path(document.name).stem,
        source=document.name,
        rules=AllOf(tuple(rules)),
        description=data.get("description", ""),
    )


__all__ = [
    "AdmissionPolicy",
    "AllOf",
    "AllowedCollectorTypes",
    "AllowedCommands",
    "AllowedHosts",
    "AllowedStepTypes",
    "AllowedWorkflows",
    "DEFAULTS_ONLY",
    "Limits",
    "RequiredStep",
    "RequiredVariables",
    "Rule",
    "RunValues",
    "SqlTargets",
    "build_policy",
    "default_policy_path",
    "host_allowed",
    "load_policy",
    "render_known",
    "sql_targets",
    "url_host",
    "with_overrides",
]
