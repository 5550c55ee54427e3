"""A dry run of a workflow: what it would do for one deployment, with what is known now.

:func:`plan_workflow` resolves every ``${...}`` it can from the deployment values and
``${workflow.*}`` variables given (``afdp plan --set``), evaluates ``when:``/``unless:``
where their inputs are known (a step is ``run``, ``skipped`` or ``conditional``: decided
at run time), and lists durations, collectors, metrics, decisions and actions. Nothing is
collected, nothing is sent.

``${env.*}`` is never read here: the plan shows ``[redacted env.NAME]`` in its place,
whether or not the variable is set, so a plan (and its JSON) can be shared and stored.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from afdp.errors import UsageError
from afdp.workflow import catalog
from afdp.workflow.expressions import EvaluationError, Expression
from afdp.workflow.interpolation import Secret, Template, UnresolvedError
from afdp.workflow.model import Step, Workflow
from afdp.workflow.scope import suggest
from afdp.workflow.units import Duration, Quantity

if TYPE_CHECKING:
    from afdp.workflow.policy import AdmissionPolicy

SETTABLE = ("deployment", "workflow")


@dataclass(frozen=True)
class ConditionOutcome:
    """A ``when``/``unless`` condition and what the plan could tell about it.

    ``result`` is True/False when every input is known now, None when it is decided at
    run time (``reason`` says why).
    """

    source: str
    result: bool | None
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form: ``{condition, result, reason}``."""
        return {"condition": self.source, "result": self.result, "reason": self.reason or None}


@dataclass(frozen=True)
class PlannedStep:
    """One step of the plan: ``status`` is ``run``, ``skipped`` or ``conditional``."""

    step: Step
    status: str
    when: ConditionOutcome | None
    unless: ConditionOutcome | None
    params: dict[str, Any]
    unresolved: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form of the planned step."""
        step = self.step
        return {
            "index": step.index,
            "name": step.name,
            "type": step.type,
            "kind": step.kind.value,
            "phase": step.phase,
            "stage": step.stage,
            "status": self.status,
            "when": self.when.to_json() if self.when else None,
            "unless": self.unless.to_json() if self.unless else None,
            "max_duration": step.max_duration().to_json(),
            "params": self.params,
            "unresolved": list(self.unresolved),
            "location": _location(step),
        }


@dataclass(frozen=True)
class Plan:
    """The dry run of ``workflow`` for the given ``deployment`` and ``variables``."""

    workflow: Workflow
    deployment: dict[str, Any]
    variables: dict[str, Any]
    steps: tuple[PlannedStep, ...]
    collectors: tuple[dict[str, Any], ...]
    metrics: tuple[dict[str, Any], ...]
    decisions: tuple[dict[str, Any], ...]
    success_criteria: tuple[str, ...]
    actions: tuple[dict[str, Any], ...]
    policy: str | None = None
    #: The guide's analyzers (logic, business_impact, ml_predictor) and what each does.
    analyzers: tuple[dict[str, Any], ...] = ()
    #: ``services:`` + ``correlate:``: each service's captured metrics as they will be
    #: read (queries rendered with the service) and the figures correlated; None without.
    services: dict[str, Any] | None = None

    @property
    def max_duration(self) -> Duration:
        """Return the longest the steps that may run can take (skipped steps excluded)."""
        total = sum(p.step.max_duration().milliseconds for p in self.steps if p.status != "skipped")
        return Duration(total)

    def to_json(self) -> dict[str, Any]:
        """Return the plan as JSON (``afdp plan --json``); secrets appear only redacted."""
        workflow = self.workflow
        phases = []
        for phase in workflow.phases:
            names = {s.name for s in phase.steps}
            stage = phase.stage
            phases.append(
                {
                    "name": phase.name,
                    "stage": None
                    if stage is None
                    else {
                        "name": stage.name,
                        "traffic": str(stage.traffic),
                        "window": stage.window.to_json(),
                        "signal": stage.signal,
                        "abort_on": stage.abort_on.source if stage.abort_on else None,
                        "rollback_available": stage.rollback_available.to_json()
                        if stage.rollback_available
                        else None,
                    },
                    "steps": [p.to_json() for p in self.steps if p.step.name in names],
                }
            )
        return {
            "workflow": {
                "name": workflow.name,
                "version": workflow.version,
                "description": workflow.description,
                "source": workflow.source,
                "digest": workflow.digest,
                "triggers": list(workflow.triggers),
                "outputs": list(workflow.outputs),
            },
            "policy": self.policy,
            "deployment": dict(self.deployment),
            "variables": {k: _plain(v) for k, v in self.variables.items()},
            "max_duration": self.max_duration.to_json(),
            "phases": phases,
            "collectors": list(self.collectors),
            "metrics": list(self.metrics),
            "decisions": list(self.decisions),
            "analyzers": list(self.analyzers),
            "services": self.services,
            "success_criteria": list(self.success_criteria),
            "actions": list(self.actions),
            "summary": {
                "steps": len(self.steps),
                "run": sum(1 for p in self.steps if p.status == "run"),
                "skipped": sum(1 for p in self.steps if p.status == "skipped"),
                "conditional": sum(1 for p in self.steps if p.status == "conditional"),
            },
        }


def parse_settings(
    workflow: Workflow, settings: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``--set`` values into deployment values and ``${workflow.*}`` overrides.

    Keys are ``deployment.<field>`` or ``workflow.<NAME>`` (a bare ``NAME`` is
    ``workflow.NAME``); a variable's value takes the
    type of its default (a number or true/false) when it is written that way.

    Returns:
        ``(deployment, overrides)``.

    Raises:
        UsageError: a key in another namespace (``env`` is refused: secrets are never
            given on a command line), an unknown deployment field or variable (with a
            suggestion), or a value that does not fit its variable's type.
    """
    deployment: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    defaults = {v.name: v.default for v in workflow.variables}
    for key, value in settings.items():
        # A bare NAME is a workflow variable, as `afdp run --set NAME=VALUE` takes it.
        namespace, _, name = key.partition(".") if "." in key else ("workflow", "", key)
        if namespace == "env":
            raise UsageError(
                f"--set {key}: ${{env.*}} values come from the environment, never from the command line"
            )
        if namespace not in SETTABLE or not name or "." in name:
            raise UsageError(
                f"--set {key}: expected deployment.<field> or workflow.<NAME> (e.g. --set deployment.service=api)"
            )
        if namespace == "deployment":
            if name not in catalog.DEPLOYMENT_FIELDS:
                hint = suggest(name, catalog.DEPLOYMENT_FIELDS) or (
                    "; known: " + ", ".join(catalog.DEPLOYMENT_FIELDS)
                )
                raise UsageError(f"--set {key}: unknown deployment field {name!r}{hint}")
            deployment[name] = value
            continue
        if name not in defaults:
            hint = (
                f"; did you mean deployment.{name}?"
                if "." not in key and name in catalog.DEPLOYMENT_FIELDS
                else ""
            ) or suggest(name, defaults) or (
                "; declared: " + ", ".join(defaults) if defaults else "; the workflow declares none"
            )
            raise UsageError(f"--set {key}: the workflow has no variable {name!r}{hint}")
        overrides[name] = _typed(key, value, defaults[name])
    return deployment, overrides


def _typed(key: str, value: str, default: Any) -> Any:
    if isinstance(default, bool):
        if value not in ("true", "false"):
            raise UsageError(f"--set {key}={value}: expected true or false")
        return value == "true"
    if isinstance(default, (int, float)):
        try:
            number = float(value)
        except ValueError:
            raise UsageError(f"--set {key}={value}: expected a number") from None
        return int(number) if isinstance(default, int) and number.is_integer() else number
    return value


def plan_workflow(
    workflow: Workflow,
    *,
    deployment: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    policy: AdmissionPolicy | None = None,
) -> Plan:
    """Plan ``workflow`` for one deployment without running anything.

    With ``policy``, the workflow is admitted again with ``overrides`` and ``deployment``
    applied (a value set for this run may change a host or a program the policy governs).

    Returns:
        The :class:`Plan`.

    Raises:
        PolicyRejected: ``policy`` rejects the workflow with ``overrides`` (exit 1).
    """
    if policy is not None and (overrides or deployment):
        from afdp.workflow.policy import RunValues

        # Judged with the deployment values too, as the run will judge them.
        known = RunValues(overrides=dict(overrides or {}), deployment=dict(deployment or {}))
        policy.admit(workflow, known=known)
    values = workflow.values(deployment=deployment, overrides=overrides)
    variables = values["workflow"]
    planned = tuple(_plan_step(step, values) for step in workflow.steps)
    collectors = tuple(
        {
            "name": c.name,
            "type": c.type,
            "builtin": c.builtin,
            "url": _render(c.url, values),
            "headers": {key: _render(t, values) for key, t in c.headers},
            "method": c.method if c.type == "rest" else None,
            "body": _render(c.body, values) if c.body is not None else None,
            "step": c.step.to_json() if c.step else None,
            "interval": c.interval.to_json() if c.interval else None,
            "timeout": c.timeout.to_json() if c.timeout else None,
        }
        for c in workflow.collectors
    )
    metrics = tuple(
        {
            "name": m.name,
            "collector": m.collector,
            "unit": m.unit.symbol,
            "better": m.better,
            "builtin": m.builtin,
            "query": _render(m.query, values) if m.query is not None else None,
            "metric": m.metric,
            "labels": {key: _render(t, values) for key, t in m.labels},
            "select": m.select,
        }
        for m in workflow.metrics
    )
    decisions = tuple(
        {
            "name": d.name,
            "condition": d.condition.source,
            "action": d.action,
            "training_label": d.training_label,
            "notify": list(d.notify),
            "severity": d.severity,
            "channels": [_channel(workflow, name, values) for name in d.notify],
        }
        for d in workflow.decisions
    )
    actions = tuple(
        {
            "action": a.action,
            "command": [_render(t, values) for t in a.command] if a.command else None,
            "webhook": _render(a.webhook, values) if a.webhook else None,
            "signed": a.secret is not None,
            "secret": _render(a.secret, values) if a.secret else None,
            "timeout": a.timeout.to_json(),
        }
        for a in workflow.actions
    )
    return Plan(
        workflow=workflow,
        deployment=dict(deployment or {}),
        variables=dict(variables),
        steps=planned,
        collectors=collectors,
        metrics=metrics,
        decisions=decisions,
        success_criteria=tuple(c.source for c in workflow.success_criteria),
        actions=actions,
        policy=policy.name if policy is not None else None,
        analyzers=tuple(_analyzer(a) for a in workflow.analyzers),
        services=_services(workflow, values),
    )


def _services(workflow: Workflow, values: Mapping[str, Any]) -> dict[str, Any] | None:
    """Return what a cross-service workflow captures per service: each captured metric's
    query (or labels) rendered as the run renders it for that service."""
    if workflow.services is None:
        return None
    from afdp.workflow.model import Capture

    captured = list(
        dict.fromkeys(
            m for s in workflow.steps if isinstance(s.params, Capture) and s.params.services
            for m in s.params.metrics
        )
    )
    per_service: dict[str, Any] = {}
    for service in workflow.services.names:
        scoped = {
            **values,
            "deployment": {**dict(values.get("deployment") or {}), "service": service},
            "service": {"name": service},
        }
        reads: dict[str, Any] = {}
        for name in captured:
            metric = workflow.metric(name)
            if metric.query is not None:
                reads[name] = _render(metric.query, scoped)
            else:
                reads[name] = {key: _render(t, scoped) for key, t in metric.labels}
        per_service[service] = reads
    return {
        "names": list(workflow.services.names),
        "correlate": list(workflow.services.figures),
        "step": catalog.SERVICES_STEP if workflow.services.figures else None,
        "metrics": per_service,
    }


def _channel(workflow: Workflow, name: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Return where a ``notify:`` channel sends: ``{name, type, target, signed, origin}``
    (``origin``: ``workflow``, or ``policy`` for the admission policy's channels)."""
    channel = workflow.channel(name)
    if channel is None:
        return {"name": name, "type": None, "target": None, "signed": False, "origin": None}
    if channel.type == "email":
        target = f"smtp://{channel.host}:{channel.port} to {', '.join(channel.recipients)}"
    else:
        target = _render(channel.url, values)
    return {
        "name": name,
        "type": channel.type,
        "target": target,
        "signed": channel.secret is not None,
        "origin": channel.origin,
    }


def _analyzer(analyzer: Any) -> dict[str, Any]:
    """Return what the plan says of an analyzer: its type and what it will do."""
    out: dict[str, Any] = {"name": analyzer.name, "type": analyzer.type}
    if analyzer.type == "logic" and analyzer.logic is not None:
        out["does"] = f"evaluates its logic over {', '.join(analyzer.inputs)} ({', '.join(analyzer.metrics)}); verdicts {', '.join(analyzer.logic.verdicts) or 'none'}"
        out["logic"] = analyzer.logic.source
    elif analyzer.type == "business_impact":
        out["does"] = f"money per hour from {', '.join(analyzer.correlate)} -> {analyzer.output}"
    elif analyzer.type == "ml_predictor":
        out["does"] = (
            f"not run inside the analysis: its own step predict_{analyzer.name} predicts from the verified "
            f"history (model {analyzer.model or 'unnamed'}), or is skipped with the reason"
        )
    elif analyzer.thresholds:
        out["does"] = "thresholds " + ", ".join(f"{t.key} {t.limit}" for t in analyzer.thresholds)
    else:
        out["does"] = f"{analyzer.method} test at confidence {analyzer.confidence}"
    return out


def _plan_step(step: Step, values: Mapping[str, Any]) -> PlannedStep:
    when = _condition(step.when, values) if step.when is not None else None
    unless = _condition(step.unless, values) if step.unless is not None else None
    if (when is not None and when.result is False) or (unless is not None and unless.result):
        status = "skipped"
    elif (when is not None and when.result is None) or (
        unless is not None and unless.result is None
    ):
        status = "conditional"
    else:
        status = "run"
    if step.kind is catalog.StepKind.PREDICT:
        # Runs from the verified history (afdp run --trust), or is recorded as skipped
        # with the reason: which, only the run knows.
        status = "conditional"
    missing: list[str] = []
    params = _params(step.params, values, missing)
    return PlannedStep(step, status, when, unless, params, tuple(dict.fromkeys(missing)))


def _condition(expression: Expression, values: Mapping[str, Any]) -> ConditionOutcome:
    try:
        return ConditionOutcome(expression.source, expression.evaluate(values))
    except EvaluationError as exc:
        return ConditionOutcome(expression.source, None, f"decided at run time: {exc}")


def _render(template: Template, values: Mapping[str, Any], missing: list[str] | None = None) -> str:
    # env=None: secrets stay unknown and redacted; nothing here reads the environment.
    try:
        rendered = template.render(values, env=None, keep_missing=True, missing=missing)
    except UnresolvedError as exc:
        return f"<{exc}>"
    return rendered.redacted() if isinstance(rendered, Secret) else rendered


def _params(value: Any, values: Mapping[str, Any], missing: list[str]) -> Any:
    if isinstance(value, Template):
        return _render(value, values, missing)
    if isinstance(value, (Duration, Quantity)):
        return str(value)
    if isinstance(value, Expression):
        return value.source
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _params(getattr(value, f.name), values, missing)
            for f in dataclasses.fields(value)
        }
    if isinstance(value, (tuple, list)):
        if value and all(
            isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) for v in value
        ):
            return {k: _params(v, values, missing) for k, v in value}
        return [_params(v, values, missing) for v in value]
    return _plain(value)


def _plain(value: Any) -> Any:
    if isinstance(value, Secret):
        return value.redacted()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _location(step: Step) -> str | None:
    return str(step.location) if step.location else None


__all__ = ["ConditionOutcome", "Plan", "PlannedStep", "parse_settings", "plan_workflow"]
