"""The ``decisions:`` and ``success_criteria:`` sections.

Conditions against the analysis the decisions step runs after, and decisions that
can never be taken.
"""

from __future__ import annotations

from typing import Any, cast

from afdp.workflow import catalog
from afdp.workflow.catalog import StepKind
from afdp.workflow.compiler.criteria import _Criteria
from afdp.workflow.expressions import Expression
from afdp.workflow.model import Analyze, Decision


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
            for name, spec in raw.items():
                if not isinstance(spec, dict):
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
                        notify=tuple(spec.get("notify") or ()),
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
