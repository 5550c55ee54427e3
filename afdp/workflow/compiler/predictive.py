"""The ``before_deployment:`` section: predictive steps, run from verified history.

``analyze_similar_past_deployments``, ``predict_likely_impact``,
``recommend_deployment_window`` and ``suggest_rollback_threshold`` need a model trained
on past deployments' evidence. They validate (with a note saying so) and become a first
phase ``before_deployment`` of steps that the run records as skipped with that reason.
"""

from __future__ import annotations

from afdp.workflow import catalog
from afdp.workflow.catalog import StepKind
from afdp.workflow.compiler.common import _Base
from afdp.workflow.model import Phase, Predict, Step

PHASE = "before_deployment"


class _Predictive(_Base):
    """Predictive steps before the deployment."""

    def compile_before_deployment(self) -> tuple[Phase, ...]:
        raw = self.data.get(PHASE)
        if not isinstance(raw, list) or not raw:
            return ()  # the schema reports anything else
        steps: list[Step] = []
        for index, name in enumerate(raw):
            if not isinstance(name, str) or name not in catalog.PREDICTIONS:
                continue  # the schema reports it
            if any(s.name == name for s in steps):
                continue  # uniqueItems
            step = Step(
                name=name,
                type=name,
                kind=StepKind.PREDICT,
                index=len(self.steps),
                phase=PHASE,
                params=Predict(name, catalog.PREDICTION_SKIPPED),
                description=catalog.PREDICTIONS[name],
                location=self.location((PHASE, index)),
            )
            self.steps.append(step)
            self.outputs[step.name] = dict(catalog.PREDICTION_OUTPUTS.get(name, {}))
            self.step_paths[step.name] = (PHASE, index)
            steps.append(step)
        if not steps:
            return ()
        self.note(
            (PHASE,),
            f"before_deployment: {', '.join(s.name for s in steps)} need a trained model / "
            "history of past deployments (learning from evidence): they read the verified "
            "history of the service with the run's trust policy (afdp run --trust); without "
            "it, or with too little history, each is recorded as skipped with that reason, "
            "not run and not an error",
        )
        return (Phase(PHASE, tuple(steps)),)
