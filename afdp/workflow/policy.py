"""Admission policy: what a valid workflow may do before it is allowed to run.

A platform team writes a policy file (schema: ``evidence-schema/admission-policy.v1
.schema.json``; the shipped default is ``policies/admission.yaml``). Each key is one
rule, and each rule is a small object with ``check(workflow, locate) -> findings``;
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

Hosts are read from URL templates after substituting what is known before the run:
``${workflow.*}`` defaults, or the values a run sets (``overrides``). A host that still
depends on ``${env.*}``, ``${deployment.*}`` or ``${steps.*}`` is "unresolved".
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


class Rule(Protocol):
    """One admission rule: every way ``workflow`` breaks it, as located findings."""

    @property
    def name(self) -> str: ...

    def check(self, workflow: Workflow, locate: Locate) -> Iterable[Finding]: ...


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

    def check(self, workflow: Workflow, locate: Locate) -> Iterable[Finding]:
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

    def check(self, workflow: Workflow, locate: Locate) -> Iterable[Finding]:
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

    def check(self, workflow: Workflow, locate: Locate) -> Iterable[Finding]:
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
class HostCheck:
    """The host of a URL template, as far as it is known before the run."""

    host: str | None  # None: no network host (sqlite), or unresolved (see ``unresolved``)
    unresolved: str = ""  # why the host is only known at run time


def url_host(url: Template, variables: Mapping[str, Any]) -> HostCheck:
    """Return the host of ``url`` with ``${workflow.*}`` substituted from ``variables``.

    Returns:
        A :class:`HostCheck`: the lower-case host, no host (a file URL such as
        ``sqlite:///x.db``), or why it cannot be known before the run.
    """
    missing: list[str] = []
    rendered = str(url.render({"workflow": variables}, keep_missing=True, missing=missing))
    names = [p.dotted for p in url.placeholders if p.parts[0] != "workflow"] + missing
    unknown = f"it comes from {', '.join('${' + n + '}' for n in dict.fromkeys(names))}"
    scheme, sep, rest = rendered.partition("://")
    if not sep:
        # No literal scheme: either a run-time value or not a network URL at all.
        return HostCheck(None, unknown if not url.is_literal else "")
    authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    host_part = authority.rpartition("@")[2]  # credentials may be secret; the host is not
    if any(marker in scheme + host_part for marker in ("[redacted env.", "${")):
        return HostCheck(None, unknown)
    try:
        host = urlsplit(f"{scheme}://{host_part}").hostname
    except ValueError:
        return HostCheck(None, "the URL is malformed")
    return HostCheck(host.lower().rstrip(".") if host else None)


def sql_targets(url: Template, variables: Mapping[str, Any]) -> tuple[list[str], str]:
    """Return the hosts a SQL collector's driver will connect to, or why it cannot be
    known before the run (``([], reason)``); ``([], "")`` for a local SQLite file.

    The target is read the way the driver reads it, not from the URL's authority:
    SQLAlchemy turns the URL into the driver's connection arguments (query parameters
    such as ``?host=`` and ``?port=`` override the authority), and for PostgreSQL libpq's
    own parser (psycopg's ``conninfo``) gives the final ``host`` list, or ``hostaddr``,
    which libpq connects to instead of the host. A Unix socket, a ``service`` (read from
    a file at run time), no host at all (PGHOST or a local socket decide) or an unknown
    dialect cannot be judged before the run.
    """
    missing: list[str] = []
    rendered = str(url.render({"workflow": variables}, keep_missing=True, missing=missing))
    if missing or any(p.parts[0] != "workflow" for p in url.placeholders) or "${" in rendered:
        names = [p.dotted for p in url.placeholders if p.parts[0] != "workflow"] + missing
        return [], f"it comes from {', '.join('${' + n + '}' for n in dict.fromkeys(names))}"
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(rendered)
        backend = parsed.get_backend_name()
        if backend == "sqlite":
            return [], ""
        _, params = parsed.get_dialect()().create_connect_args(parsed)
    except Exception as exc:  # ArgumentError, NoSuchModuleError, ValueError: not judgeable
        return [], f"the URL cannot be read as the driver reads it ({type(exc).__name__})"
    if backend == "postgresql":
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        try:
            info = conninfo_to_dict(make_conninfo("", **{k: v for k, v in params.items() if v is not None}))
        except Exception as exc:  # psycopg.ProgrammingError: a malformed conninfo
            return [], f"libpq cannot read its connection string ({type(exc).__name__})"
        if info.get("service") or info.get("servicefile"):
            return [], "a libpq service names the target (read from a file at run time)"
        hosts = str(info.get("hostaddr") or info.get("host") or "")
    elif backend in ("mysql", "mariadb"):
        if params.get("unix_socket"):
            return [], "a Unix socket path names the target"
        hosts = str(params.get("host") or "")
    else:
        return [], f"AFDP cannot judge {backend!r} connection targets"
    targets = [h.strip() for h in hosts.split(",")]
    if not hosts or any(not h for h in targets):
        return [], "no host: the driver would pick one at run time (PGHOST, a local socket)"
    if any(h.startswith(("/", "@")) for h in targets):
        return [], "a Unix socket directory names the target"
    return [h.lower().strip("[]").rstrip(".") for h in targets], ""


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

    def check(self, workflow: Workflow, locate: Locate) -> Iterable[Finding]:
        variables = workflow.variable_values()
        for label, url, path, fallback, kind in self._urls(workflow):
            if kind == "sql":
                yield from self._check_sql(label, url, variables, path, fallback, locate)
                continue
            found = url_host(url, variables)
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
                yield locate(
                    path,
                    fallback,
                    self.name,
                    f"{label} reaches host {found.host!r}, which the policy does not allow "
                    f"(allowed: {_listing(self.hosts)})",
                )

    def _check_sql(
        self,
        label: str,
        url: Template,
        variables: Mapping[str, Any],
        path: DocPath,
        fallback: Location | None,
        locate: Locate,
    ) -> Iterable[Finding]:
        targets, unknown = sql_targets(url, variables)
        if unknown:
            if self.unresolved == "deny":
                yield locate(
                    path,
                    fallback,
                    self.name,
                    f"the database {label} connects to cannot be checked before the run: "
                    f"{unknown} (the policy denies unresolved hosts: write the host in the URL)",
                )
            return
        for host in targets:
            if not host_allowed(host, self.hosts):
                yield locate(
                    path,
                    fallback,
                    self.name,
                    f"{label} connects to host {host!r} (as the database driver reads the URL), "
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

    def check(self, workflow: Workflow, locate: Locate) -> Iterable[Finding]:
        variables = workflow.variable_values()
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
            program = str(first.render({"workflow": variables}, keep_missing=True))
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

    def check(self, workflow: Workflow, locate: Locate) -> Iterable[Finding]:
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

    def check(self, workflow: Workflow, locate: Locate) -> Iterable[Finding]:
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

    def check(self, workflow: Workflow, locate: Locate) -> Iterable[Finding]:
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

    def check(self, workflow: Workflow, locate: Locate) -> list[Finding]:
        """Return every violation of every rule (empty when the workflow is admitted)."""
        return [finding for rule in self.rules for finding in rule.check(workflow, locate)]


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
    ) -> list[Finding]:
        """Return every rule ``workflow`` breaks, located in its file (``document`` for exact paths).

        ``overrides`` are the ``${workflow.*}`` values a run will use instead of the
        defaults (``--set workflow.NAME=...``): hosts and programs are checked with them.
        """
        checked = with_overrides(workflow, overrides) if overrides else workflow
        return self.rules.check(checked, Locator(workflow, document))

    def admit(
        self,
        workflow: Workflow,
        document: Document | None = None,
        *,
        overrides: Mapping[str, Any] | None = None,
    ) -> Workflow:
        """Return ``workflow`` when every rule holds (with ``overrides`` applied, if any).

        Raises:
            PolicyRejected: with every violation, each naming its rule (exit 1).
        """
        found = self.violations(workflow, document, overrides=overrides)
        if found:
            raise PolicyRejected(found)
        return dataclasses.replace(workflow, admission=Admission(self, dict(overrides or {})))


@dataclass(frozen=True)
class Admission:
    """Which policy admitted a workflow, and with which ``${workflow.*}`` overrides."""

    policy: AdmissionPolicy
    overrides: Mapping[str, Any]

    def readmit(self, workflow: Workflow, overrides: Mapping[str, Any]) -> Workflow:
        """Return ``workflow`` admitted with the values a run will really use.

        Raises:
            PolicyRejected: those values break a rule (a ``--set`` URL or program the
                policy forbids): nothing may run.
        """
        if dict(overrides) == dict(self.overrides):
            return workflow
        return self.policy.admit(workflow, overrides=overrides)


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
    from afdp.schemas import data_dir

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
    "Limits",
    "RequiredStep",
    "RequiredVariables",
    "Rule",
    "build_policy",
    "default_policy_path",
    "host_allowed",
    "load_policy",
    "url_host",
    "with_overrides",
]
