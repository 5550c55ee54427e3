"""The decision: success criteria, then the workflow's decisions in order, first match wins.

:func:`decide` runs a ``decisions`` step; :func:`evaluate_gate` a ``gate`` step (a
rollout stage's ``abort_on``). Both evaluate conditions written in the workflow over
the values a run has gathered: ``workflow.values(...)`` merged with an analysis's
:meth:`~afdp.pipeline.analysis.AnalysisResult.values` (metric names and the summary at the top
level, as the compiler's analysis scope says).

Rules, chosen so that missing data is never a silent pass:

1. Each success criterion is evaluated; one that cannot be evaluated (a null from a
   metric with no data, a unit mismatch) is recorded with its error and counts as
   *not met*. ``success_criteria_met`` is true when every criterion is true (vacuously
   true when there are none).
2. Decisions are evaluated in the workflow's order with ``success_criteria_met`` in
   scope; the first whose condition is true is taken. One that cannot be evaluated is
   recorded and skipped.
3. A match whose action is ``mark_successful`` is not trusted when an earlier decision
   could not be evaluated (it might have matched first): the outcome is ``alert`` with
   label ``inconclusive``.
4. If nothing matches: ``mark_successful`` (label ``safe_deployment``) only when the
   criteria are met, no condition failed to evaluate, and the analysis found no
   degraded and no inconclusive metric; otherwise ``alert``, labelled ``degraded`` when
   a criterion is plainly false or a metric degraded, else ``inconclusive``. (A
   workflow with no decisions gets this default from the decisions step AFDP adds.)
5. A step that failed before the decision (an integrity check that does not hold, a
   monitor whose alert fired, a collection that failed) never ends in
   ``mark_successful``, matched or by default: the outcome is ``alert``, labelled
   ``degraded``, and the reason names the failed step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from afdp.workflow.catalog import DEFAULT_LABELS
from afdp.workflow.expressions import EvaluationError, Expression

if TYPE_CHECKING:
    from afdp.workflow.model import Decide, Gate, Workflow

INCONCLUSIVE_LABEL = "inconclusive"


@dataclass(frozen=True)
class ConditionResult:
    """One condition evaluated: ``result`` (None when it could not be) and ``error``."""

    condition: str
    result: bool | None
    error: str | None = None
    name: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return ``{condition, result, error}`` (and ``name`` for a decision)."""
        out: dict[str, Any] = {}
        if self.name is not None:
            out["name"] = self.name
        out.update({"condition": self.condition, "result": self.result, "error": self.error})
        return out


def evaluate_condition(
    expression: Expression, values: Mapping[str, Any], *, name: str | None = None
) -> ConditionResult:
    """Evaluate ``expression`` over ``values``; never raises.

    Returns:
        The :class:`ConditionResult`; ``result`` is None and ``error`` one line when
        the condition could not be evaluated (missing value, unit mismatch, not a bool).
    """
    try:
        return ConditionResult(expression.source, expression.evaluate(values), None, name)
    except (EvaluationError, TypeError, ArithmeticError) as exc:
        return ConditionResult(expression.source, None, _one_line(exc), name)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@dataclass(frozen=True)
class DecisionOutcome:
    """What a decisions step decided, and every condition it looked at.

    ``decision`` is the matching decision's name (None when none matched and the
    default applied); ``action`` is ``rollback``, ``alert`` or ``mark_successful``;
    ``label`` the training label; ``criteria`` and ``evaluated`` list each condition
    with its result or error, in order; ``reason`` says why, in one line.
    """

    decision: str | None
    action: str
    label: str
    success_criteria_met: bool
    criteria: tuple[ConditionResult, ...]
    evaluated: tuple[ConditionResult, ...]
    reason: str
    severity: str | None = None
    notify: tuple[str, ...] = ()

    def values(self) -> dict[str, Any]:
        """Return the step's outputs for later conditions (``DECISION_OUTPUTS``)."""
        return {
            "decision": self.decision,
            "action": self.action,
            "label": self.label,
            "success_criteria_met": self.success_criteria_met,
        }

    def to_json(self) -> dict[str, Any]:
        """Return the outcome as evidence."""
        return {
            **self.values(),
            "reason": self.reason,
            "severity": self.severity,
            "notify": list(self.notify),
            "criteria": [c.to_json() for c in self.criteria],
            "evaluated": [d.to_json() for d in self.evaluated],
        }


def decide(
    workflow: Workflow,
    params: Decide,
    values: Mapping[str, Any],
    *,
    failed_steps: tuple[tuple[str, str], ...] = (),
) -> DecisionOutcome:
    """Decide as :func:`_decide` does, then apply rule 5: ``failed_steps`` (name, reason)
    of the steps that failed before the decision turn a ``mark_successful`` into an
    ``alert``.
    """
    outcome = _decide(workflow, params, values)
    if not failed_steps or outcome.action != "mark_successful":
        return outcome
    name, why = failed_steps[0]
    more = f" (and {len(failed_steps) - 1} more failed step(s))" if len(failed_steps) > 1 else ""
    return DecisionOutcome(
        None,
        "alert",
        DEFAULT_LABELS["alert"],
        outcome.success_criteria_met,
        outcome.criteria,
        outcome.evaluated,
        f"step {name!r} failed: {why}{more}; "
        + (f"decision {outcome.decision!r} (mark_successful) not taken" if outcome.decision else "not marked successful"),
    )


def _decide(workflow: Workflow, params: Decide, values: Mapping[str, Any]) -> DecisionOutcome:
    """Evaluate the success criteria, then ``params.decisions`` in order (first match wins).

    ``values`` is ``workflow.values(...)`` merged with the analysis values.

    Returns:
        The :class:`DecisionOutcome` (see the module docstring for the rules).

    Raises:
        KeyError: ``params`` names a decision the workflow does not define.
    """
    criteria = tuple(evaluate_condition(c, values) for c in workflow.success_criteria)
    met = all(c.result is True for c in criteria)
    scope = {**values, "success_criteria_met": met}
    by_name = {d.name: d for d in workflow.decisions}
    evaluated: list[ConditionResult] = []
    for name in params.decisions:
        decision = by_name[name]
        result = evaluate_condition(decision.condition, scope, name=name)
        evaluated.append(result)
        if result.result is not True:
            continue
        failed_before = [e.name for e in evaluated[:-1] if e.error is not None]
        if decision.action == "mark_successful" and failed_before:
            return DecisionOutcome(
                None,
                "alert",
                INCONCLUSIVE_LABEL,
                met,
                criteria,
                tuple(evaluated),
                f"decision {name!r} (mark_successful) matched, but earlier decision "
                f"{failed_before[0]!r} could not be evaluated and might have matched first",
            )
        return DecisionOutcome(
            name,
            decision.action,
            decision.training_label,
            met,
            criteria,
            tuple(evaluated),
            f"decision {name!r} matched: {decision.condition.source}",
            decision.severity,
            decision.notify,
        )

    errors = [c for c in (*criteria, *evaluated) if c.error is not None]
    inconclusive = list(values.get("inconclusive") or ())
    degraded = _degraded(values)
    if met and not errors and not inconclusive and not degraded:
        reason = (
            "no decision matched and every success criterion holds"
            if criteria
            else "no decision matched and no success criteria are declared"
        )
        return DecisionOutcome(
            None,
            "mark_successful",
            DEFAULT_LABELS["mark_successful"],
            met,
            criteria,
            tuple(evaluated),
            reason,
        )
    failed = next((c for c in criteria if c.result is False), None)
    if errors:
        reason = f"no decision matched; {errors[0].condition!r} could not be evaluated: {errors[0].error}"
    elif failed is not None:
        reason = f"no decision matched; success criterion {failed.condition!r} is false"
    elif degraded:
        reason = "no decision matched; the analysis found degradation: " + ", ".join(degraded)
    else:
        reason = "no decision matched; inconclusive metrics: " + ", ".join(inconclusive)
    plain_failure = any(c.result is False for c in criteria) or bool(degraded)
    label = DEFAULT_LABELS["alert"] if plain_failure else INCONCLUSIVE_LABEL
    return DecisionOutcome(None, "alert", label, met, criteria, tuple(evaluated), reason)


def _degraded(values: Mapping[str, Any]) -> list[str]:
    """Return the metrics the analysis in ``values`` found degraded (sorted)."""
    named = sorted(
        name
        for name, value in values.items()
        if isinstance(value, Mapping) and value.get("degraded") is True
    )
    analyzers = values.get("analyzers")
    if isinstance(analyzers, Mapping):  # logic analyzers' verdicts (docs/workflows.md)
        named += sorted(
            f"analyzers.{name} ({value.get('verdict')})"
            for name, value in analyzers.items()
            if isinstance(value, Mapping) and value.get("degraded") is True
        )
    if named or values.get("any_degradation") is not True:
        return named
    return ["(unnamed metric)"]


@dataclass(frozen=True)
class GateOutcome:
    """A gate's condition evaluated.

    ``triggered`` is True when the condition holds: take ``action`` (the gate's), label
    ``label``, and stop. When the condition cannot be evaluated (``error``), the gate is
    not triggered, but ``stop`` is still True with ``action`` ``alert`` and label
    ``inconclusive``: a rollout stage that cannot be judged halts and alerts (as Argo
    Rollouts pauses on an inconclusive analysis) rather than continuing blindly or
    rolling back on missing data. When the condition is false, ``stop`` is False and
    ``action``/``label`` are None.
    """

    condition: str
    triggered: bool
    error: str | None
    stop: bool
    action: str | None
    label: str | None

    @property
    def inconclusive(self) -> bool:
        """Return True when the condition could not be evaluated."""
        return self.error is not None

    def values(self) -> dict[str, Any]:
        """Return the step's outputs for later conditions (``triggered``)."""
        return {"triggered": self.triggered}

    def to_json(self) -> dict[str, Any]:
        """Return the outcome as evidence."""
        return {
            "condition": self.condition,
            "triggered": self.triggered,
            "error": self.error,
            "stop": self.stop,
            "action": self.action,
            "label": self.label,
        }


def evaluate_gate(workflow: Workflow, gate: Gate, values: Mapping[str, Any]) -> GateOutcome:
    """Evaluate a gate's condition over ``values`` (workflow values + analysis values).

    Returns:
        The :class:`GateOutcome`; never raises for a condition that cannot be evaluated.
    """
    del workflow  # the gate carries everything; kept for a uniform signature
    result = evaluate_condition(gate.condition, values)
    if result.error is not None:
        return GateOutcome(result.condition, False, result.error, True, "alert", INCONCLUSIVE_LABEL)
    if result.result:
        return GateOutcome(result.condition, True, None, True, gate.action, gate.training_label)
    return GateOutcome(result.condition, False, None, False, None, None)


__all__ = [
    "ConditionResult",
    "DecisionOutcome",
    "GateOutcome",
    "INCONCLUSIVE_LABEL",
    "decide",
    "evaluate_condition",
    "evaluate_gate",
]
