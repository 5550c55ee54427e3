"""The typed, validated, immutable workflow that the flows execute.

A :class:`Workflow` is only ever built by :func:`afdp.workflow.compiler.compile_document`
from a document that passed every check, so code that receives one can rely on it:
step names are unique and safe for Git paths, every ``${...}`` and condition refers to
something that exists at that point, every metric has a collector, every analysis has
a baseline and an impact capture, durations and thresholds are typed.

The parts a workflow declares (collectors, metrics, analyzers, decisions, ...) are in
:mod:`afdp.workflow.parts`, the step parameters in :mod:`afdp.workflow.params`; both are
re-exported here, where they have always been imported from.

Step parameters are one dataclass per :class:`~afdp.workflow.catalog.StepKind`
(:class:`Wait`, :class:`Capture`, :class:`Analyze`, ...): the flows dispatch on
``step.kind`` and read ``step.params``. Strings that may contain ``${...}`` are
:class:`~afdp.workflow.interpolation.Template` objects; render them with
:meth:`Workflow.values` at run time. ``${env.*}`` renders to a redacted
:class:`~afdp.workflow.interpolation.Secret`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from afdp.workflow.catalog import StepKind
from afdp.workflow.expressions import Expression
from afdp.workflow.findings import Finding
from afdp.workflow.interpolation import Template, UnresolvedError
from afdp.workflow.params import (
    Analyze,
    BusinessImpact,
    Capture,
    CaptureMetadata,
    Check,
    Correlate,
    CrossService,
    Database,
    Decide,
    EnableFeature,
    Gate,
    GenerateRecord,
    MarkDeployment,
    Predict,
    Query,
    Segment,
    Services,
    ShiftTraffic,
    SqlCheck,
    StepParams,
    Store,
    Wait,
    WaitForSignal,
)
from afdp.workflow.parts import (
    Action,
    ActionSpec,
    Analyzer,
    Better,
    Collector,
    CollectorType,
    Decision,
    Location,
    Metric,
    NotificationChannel,
    Stage,
    Threshold,
    Variable,
)
from afdp.workflow.units import Duration

__all__ = [
    "Action",
    "ActionSpec",
    "Analyze",
    "Analyzer",
    "Better",
    "BusinessImpact",
    "Capture",
    "CaptureMetadata",
    "Check",
    "Collector",
    "CollectorType",
    "Correlate",
    "CrossService",
    "Database",
    "Decide",
    "Decision",
    "EnableFeature",
    "Gate",
    "GenerateRecord",
    "Location",
    "MarkDeployment",
    "Metric",
    "NotificationChannel",
    "Phase",
    "Predict",
    "Query",
    "Segment",
    "Services",
    "ShiftTraffic",
    "SqlCheck",
    "Stage",
    "Step",
    "StepParams",
    "Store",
    "Threshold",
    "Variable",
    "Wait",
    "WaitForSignal",
    "Workflow",
]


@dataclass(frozen=True)
class Step:
    """One step, in execution order.

    ``name`` is unique in the workflow (default: the type, then ``type_2``, ``type_3``);
    ``index`` is its 0-based position among all steps; ``kind`` says what to do and
    ``params`` how. The step is skipped when ``when`` is false or ``unless`` is true.
    """

    name: str
    type: str
    kind: StepKind
    index: int
    phase: str
    params: StepParams
    when: Expression | None = None
    unless: Expression | None = None
    description: str = ""
    stage: str | None = None
    location: Location | None = None

    def max_duration(self) -> Duration:
        """Return how long the step may take at most (waits, windows, signal timeouts)."""
        params = self.params
        if isinstance(params, Wait):
            return params.duration
        if isinstance(params, WaitForSignal):
            return params.timeout
        if isinstance(params, (Capture, Query)) and params.duration is not None:
            return params.duration
        return Duration(0, "0s")


@dataclass(frozen=True)
class Phase:
    """A named group of steps (``pre_deployment``, ``deployment``, a stage, ...)."""

    name: str
    steps: tuple[Step, ...]
    stage: Stage | None = None


@dataclass(frozen=True)
class Workflow:
    """A validated workflow definition.

    ``digest`` is the SHA-256 of the RFC 8785 canonical JSON of ``document`` (the
    parsed file): what evidence records cite as ``workflow.sha256``.
    """

    name: str
    version: str
    description: str
    triggers: tuple[str, ...]
    phases: tuple[Phase, ...]
    collectors: tuple[Collector, ...]
    metrics: tuple[Metric, ...]
    analyzers: tuple[Analyzer, ...]
    decisions: tuple[Decision, ...]
    success_criteria: tuple[Expression, ...]
    outputs: tuple[str, ...]
    variables: tuple[Variable, ...]
    stages: tuple[Stage, ...]
    digest: str
    source: str
    actions: tuple[ActionSpec, ...] = ()
    notifications: tuple[NotificationChannel, ...] = ()
    document: Any = field(default=None, compare=False, hash=False, repr=False)
    #: Warnings and notes for the author (``afdp validate`` prints them): how AFDP read
    #: what the file leaves open, and constructs that would give a meaningless verdict.
    notes: tuple[Finding, ...] = field(default=(), compare=False, hash=False)
    #: Index of the step that marks the deployment (mark_deployment_time, or without one
    #: a ``wait_for_signal: deployment...``); None when nothing marks it.
    boundary: int | None = field(default=None, compare=False, hash=False)
    #: The admission policy that admitted this workflow and the ``${workflow.*}`` values
    #: it was admitted with (set by ``AdmissionPolicy.admit``); None: never admitted.
    #: A run with other values is admitted again with them before anything runs.
    admission: Any = field(default=None, compare=False, hash=False, repr=False)
    #: The ``integrity:`` entries the workflow lists (each always on; validate says how).
    integrity: tuple[str, ...] = ()
    #: Business context metrics (``context:``): captured with every baseline and impact
    #: capture, shown in analyses and reports, judged only when a criterion names them.
    context: tuple[str, ...] = ()
    #: The services a cross-service workflow watches (``services:`` + ``correlate:``).
    services: Services | None = None
    #: The workflow file's bytes exactly as read (None: compiled from text, not a file);
    #: a run stores them in its genesis record (``workflow.yaml``).
    source_bytes: bytes | None = field(default=None, compare=False, hash=False, repr=False)

    @property
    def steps(self) -> tuple[Step, ...]:
        """Return every step, in execution order."""
        return tuple(step for phase in self.phases for step in phase.steps)

    def step(self, name: str) -> Step:
        """Return the step called ``name``.

        Raises:
            KeyError: no such step.
        """
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    def collector(self, name: str) -> Collector:
        """Return the collector called ``name`` (declared or built in).

        Raises:
            KeyError: no such collector.
        """
        for collector in self.collectors:
            if collector.name == name:
                return collector
        raise KeyError(name)

    def metric(self, name: str) -> Metric:
        """Return the metric called ``name`` (declared or built in).

        Raises:
            KeyError: no such metric.
        """
        for metric in self.metrics:
            if metric.name == name:
                return metric
        raise KeyError(name)

    def action(self, name: str) -> ActionSpec | None:
        """Return how action ``name`` (rollback, alert, mark_successful) is carried out.

        Returns:
            The :class:`ActionSpec`, or None when the workflow does not configure it.
        """
        for spec in self.actions:
            if spec.action == name:
                return spec
        return None

    def channel(self, name: str) -> NotificationChannel | None:
        """Return the notification channel ``name`` (None when not configured)."""
        for channel in self.notifications:
            if channel.name == name:
                return channel
        return None

    def unjudged_context(self) -> frozenset[str]:
        """Return the ``context:`` metrics no success criterion, decision, gate or
        threshold names: analyses show them but do not judge them."""
        conditions = [*self.success_criteria, *(d.condition for d in self.decisions)]
        named: set[str] = set()
        for step in self.steps:
            if isinstance(step.params, Gate):
                conditions.append(step.params.condition)
            if isinstance(step.params, Analyze):
                named.update(
                    t.metric for t in step.params.thresholds if not t.key.startswith("default_")
                )
        for expression in conditions:
            for ref in expression.refs:
                parts = ref.parts
                named.update(str(p) for p in parts[:1])
                if parts and parts[0] == "steps" and len(parts) > 2:
                    named.add(str(parts[2]))
        return frozenset(self.context) - named

    def max_duration(self) -> Duration:
        """Return the longest the workflow can run: waits, capture windows, signal timeouts."""
        total = sum(step.max_duration().milliseconds for step in self.steps)
        return Duration(total)

    def variable_values(
        self,
        overrides: Mapping[str, Any] | None = None,
        *,
        deployment: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Return ``${workflow.*}`` values: defaults rendered in dependency order, then ``overrides``.

        ``overrides`` (from ``--set workflow.NAME=...``) are taken literally, never
        interpolated. Defaults may use ``${deployment.*}`` from ``deployment``; a default
        that refers to an unknown value keeps that ``${...}`` unresolved.
        """
        from afdp.workflow.interpolation import variable_order

        given = dict(overrides or {})
        defaults = {v.name: v.default for v in self.variables}
        refs = {
            name: tuple(p.parts[1] for p in value.placeholders if p.parts[0] == "workflow")
            if isinstance(value, Template)
            else ()
            for name, value in defaults.items()
        }
        values: dict[str, Any] = {}
        for name in variable_order(refs):
            if name in given:
                values[name] = given[name]
                continue
            default = defaults[name]
            if isinstance(default, Template):
                rendered = default.render(
                    {"workflow": values, "deployment": dict(deployment or {})}, keep_missing=True
                )
                values[name] = str(rendered)
            elif default is not None:
                values[name] = default
        for name, value in given.items():
            values.setdefault(name, value)
        return values

    def values(
        self,
        *,
        deployment: Mapping[str, Any] | None = None,
        overrides: Mapping[str, Any] | None = None,
        steps: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Return the namespaces ``deployment``, ``workflow`` and ``steps`` for rendering.

        Pass the result to :meth:`Template.render` (with ``env=os.environ`` where a
        request is sent) or to :meth:`Expression.evaluate`.
        """
        return {
            "deployment": dict(deployment or {}),
            "workflow": self.variable_values(overrides, deployment=deployment),
            "steps": dict(steps or {}),
        }


__all__ = [
    "ActionSpec",
    "Analyze",
    "Analyzer",
    "Capture",
    "CaptureMetadata",
    "Check",
    "Collector",
    "CrossService",
    "Decide",
    "Decision",
    "Gate",
    "GenerateRecord",
    "Location",
    "MarkDeployment",
    "Metric",
    "Phase",
    "Query",
    "Segment",
    "Services",
    "SqlCheck",
    "Stage",
    "Step",
    "StepKind",
    "StepParams",
    "Threshold",
    "UnresolvedError",
    "Variable",
    "Wait",
    "WaitForSignal",
    "Workflow",
]
