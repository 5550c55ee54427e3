"""What every admission rule shares: the :class:`Rule` protocol, the values known when judging (:class:`RunValues`) and the :class:`Locator` that places a violation in the workflow file."""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from afdp.workflow.findings import Finding, format_path
from afdp.workflow.loader import DocPath, Document
from afdp.workflow.model import (
    Capture,
    Collector,
    Location,
    Query,
    Step,
    Workflow,
)

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


def step_path(step: Step) -> DocPath:
    # Steps carry their location; the locator prefers it (an empty path means "use it").
    return ()


def name_matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def listing(values: Iterable[str]) -> str:
    items = list(values)
    return ", ".join(items[:15]) + (", ..." if len(items) > 15 else "") if items else "none"


def collector_path(collector: Collector, key: str) -> DocPath:
    return () if collector.builtin else ("collectors", collector.name, key)


def collector_location(workflow: Workflow, collector: Collector) -> Location | None:
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
