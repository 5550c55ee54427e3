"""The ``decisions:`` and ``success_criteria:`` sections.

Conditions against the analysis the decisions step runs after, and decisions that
can never be taken.
"""

from __future__ import annotations

from typing import Any, cast

from afdp.workflow import catalog
from afdp.workflow.catalog import StepKind
from afdp.workflow.compiler.criteria import _Criteria
from afdp.workflow.expressions import Expression, ExpressionError, parse_expression
from afdp.workflow.model import Analyze, Decision, Step
from afdp.workflow.quantities import BY_NAME, source_metric
from afdp.workflow.scope import Tree


class _Decisions(_Criteria):
    """Decisions and success criteria."""

    def compile_decisions(self) -> tuple[tuple[Decision, ...], tuple[Expression, ...]]:
        raw = self.mapping(self.data.get("decisions"))
        criteria_raw = self.data.get("success_criteria")
        decide_steps = [s for s in self.steps if s.kind is StepKind.DECIDE]
        if (raw or criteria_raw) and not decide_steps:
            key = "decisions" if raw else "success_criteria"
            self.fail(
                (key,),
                f"{key} are declared but no step evaluates them; add '- decisions' after the analysis",
                prefer_key=True,
            )
        # Conditions see what exists at the (first) decisions step.
        at = decide_steps[0] if decide_steps else None
        earlier = self.steps[: at.index] if at else self.steps
        saved = self.outputs
        self.outputs = {s.name: saved[s.name] for s in earlier if s.name in saved}
        analysis = next((s for s in reversed(earlier) if isinstance(s.params, Analyze)), None)
        try:
            criteria: list[Expression] = []
            for index, text in enumerate(criteria_raw if isinstance(criteria_raw, list) else []):
                expression = self.criterion(text, ("success_criteria", index), analysis)
                if expression is not None:
                    criteria.append(expression)
            decisions: list[Decision] = []
            scope = self.analysis_scope(analysis, decisions=True)
            scope.update(self.named_quantities(analysis, scope))
            for name, spec in raw.items():
                if not isinstance(spec, dict):
                    continue
                notify = self.channels_named(name, spec.get("notify"))
                if not self.quantities_known(spec.get("condition"), name, scope, analysis):
                    continue
                condition = self.condition(
                    spec.get("condition"), ("decisions", name, "condition"), scope
                )
                written = spec.get("action")
                action = (
                    catalog.ACTION_ALIASES.get(written, written) if isinstance(written, str) else ""
                )
                if condition is None or action not in catalog.ACTIONS:
                    continue
                self.unreachable(name, condition, decisions)
                decisions.append(
                    Decision(
                        name=name,
                        condition=condition,
                        action=cast(Any, action),
                        training_label=spec.get("training_label") or catalog.DEFAULT_LABELS[action],
                        notify=notify,
                        severity=spec.get("severity"),
                    )
                )
        finally:
            self.outputs = saved
        return tuple(decisions), tuple(criteria)

    def unreachable(self, name: str, condition: Expression, before: list[Decision]) -> None:
        """Warn about a decision that can never be taken: the first match wins, so one
        after a decision with the same condition (or after ``true``) is dead."""
        text = " ".join(condition.source.split()) if isinstance(condition.source, str) else ""
        for earlier in before:
            source = earlier.condition.source
            earlier_text = " ".join(source.split()) if isinstance(source, str) else ""
            if earlier_text.lower() == "true" or (earlier_text and earlier_text == text):
                self.note(
                    ("decisions", name),
                    f"decision {name!r} can never be taken: {earlier.name!r} comes first "
                    f"with {'the same condition' if earlier_text == text else 'condition true'} "
                    "(the first decision that holds wins)",
                    level="warning",
                )
                return

    def named_quantities(self, analysis: Step | None, scope: dict[str, Tree]) -> dict[str, Tree]:
        """Return the named quantities (``latency_increase``...) whose metric the analysis
        has, typed in that metric's dimension; a metric of the same name wins."""
        if analysis is None:
            return {}
        listed = self.analysed(analysis)
        out: dict[str, Tree] = {}
        for quantity in BY_NAME.values():
            metric = source_metric(quantity, listed)
            if metric is not None and quantity.name not in scope:
                out[quantity.name] = dict(listed)[metric]
        return out

    def analysed(self, analysis: Step) -> list[tuple[str, str]]:
        params = cast(Analyze, analysis.params)
        if params.services:
            return []  # per service: no one metric stands for the deployment
        return [
            (m, self.metrics[m].unit.dimension) for m in params.metrics if m in self.metrics
        ]

    def quantities_known(
        self, text: Any, name: str, scope: dict[str, Tree], analysis: Step | None
    ) -> bool:
        """Fail, naming what to declare, for a named quantity whose metric is not analysed."""
        if not isinstance(text, str):
            return True
        try:
            refs = parse_expression(text).refs
        except ExpressionError:
            return True  # self.condition reports it
        ok = True
        for ref in refs:
            quantity = BY_NAME.get(ref.parts[0])
            if quantity is None:
                continue
            if ref.parts[0] in scope:
                if analysis is not None and ref.parts[0] not in self.metrics:
                    metric = source_metric(quantity, self.analysed(analysis))
                    self.note(
                        ("decisions", name, "condition"),
                        f"{quantity.name} is {quantity.meaning}, read from metric {metric!r} of "
                        f"{analysis.name!r} (the test's shift when a test runs, else the "
                        "difference of the central values)",
                    )
                continue
            where = (
                f"the analysis {analysis.name!r} analyses no such metric"
                if analysis is not None
                else "there is no analysis before the decisions step"
            )
            self.fail(
                ("decisions", name, "condition"),
                f"{quantity.name} reads a metric: {where}; {quantity.declare}",
            )
            ok = False
        return ok

    def channels_named(self, name: str, value: Any) -> tuple[str, ...]:
        """Return the ``notify:`` channels; each must be configured under ``notifications:``
        or be one of the admission policy's ``notification_channels:``."""
        channels = tuple(c for c in (value or ()) if isinstance(c, str))
        configured = set(self.mapping(self.data.get("notifications"))) | set(self.provided_channels)
        for index, channel in enumerate(channels):
            if channel not in configured:
                known = ", ".join(sorted(configured)) or "none"
                self.fail(
                    ("decisions", name, "notify", index),
                    f"channel {channel!r} is not configured: declare it under notifications: "
                    f"(e.g. notifications: {{{channel}: {{type: webhook, url: https://...}}}}) "
                    "or use a channel of the admission policy's notification_channels:; "
                    f"configured: {known}",
                )
        return channels
