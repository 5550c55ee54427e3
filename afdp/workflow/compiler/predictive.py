"""The ``before_deployment:`` section: predictive steps, run from verified history.

``analyze_similar_past_deployments``, ``predict_likely_impact``,
``recommend_deployment_window`` and ``suggest_rollback_threshold`` need a model trained
on past deployments' evidence. They validate (with a note saying so) and become a first
phase ``before_deployment`` of steps that the run records as skipped with that reason.
"""

from __future__ import annotations

from collections.abc import Mapping

from afdp.workflow import catalog
from afdp.workflow.catalog import StepKind
from afdp.workflow.compiler import mlpredict
from afdp.workflow.compiler.common import _Base, _fields
from afdp.workflow.model import Metric, Phase, Predict, Step
from afdp.workflow.scope import Tree

PHASE = "before_deployment"


def prediction_outputs(prediction: str, metrics: Mapping[str, Metric]) -> dict[str, Tree]:
    """A predictive step's outputs (``catalog.PREDICTION_OUTPUTS``); the per-metric
    fields (``predicted.<metric>.increase|low|high``, ``thresholds.<metric>``) are
    typed in each metric's unit."""
    tree: dict[str, Tree] = dict(catalog.PREDICTION_OUTPUTS.get(prediction, {}))
    if prediction == "predict_likely_impact":
        tree["predicted"] = {
            name: _fields({"increase": "@", "low": "@", "high": "@"}, metric.unit) for name, metric in metrics.items()
        }
    elif prediction == "suggest_rollback_threshold":
        tree["thresholds"] = {name: metric.unit.dimension for name, metric in metrics.items()}
    return tree


class _Predictive(_Base):
    """Predictive steps before the deployment."""

    def compile_before_deployment(self) -> tuple[Phase, ...]:
        raw = self.data.get(PHASE)
        listed = raw if isinstance(raw, list) else []  # the schema reports anything else
        steps: list[Step] = []
        for index, name in enumerate(listed):
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
            self.outputs[step.name] = prediction_outputs(name, self.metrics)
            self.step_paths[step.name] = (PHASE, index)
            steps.append(step)
        if steps:
            self.note(
                (PHASE,),
                f"before_deployment: {', '.join(s.name for s in steps)} need a trained model / "
                "history of past deployments (learning from evidence): they read the verified "
                "history of the service with the run's trust policy (afdp run --trust); without "
                "it, or with too little history, each is recorded as skipped with that reason, "
                "not run and not an error",
            )
        for params in self.ml_steps:
            # an ml_predictor analyzer: its own step (and record), never inside the analysis
            assert params.analyzer is not None
            name = mlpredict.step_name(params.analyzer)
            if any(s.name == name for s in steps):
                continue
            step = Step(
                name=name,
                type="predict_likely_impact",
                kind=StepKind.PREDICT,
                index=len(self.steps),
                phase=PHASE,
                params=params,
                description=f"ml_predictor {params.analyzer}: predict this deployment's impact from the verified history",
                location=self.location(("analyzers", params.analyzer)),
            )
            self.steps.append(step)
            self.outputs[name] = mlpredict.outputs_of(params, self.metrics, prediction_outputs(step.type, self.metrics))
            self.step_paths[name] = ("analyzers", params.analyzer)
            steps.append(step)
        if not steps:
            return ()
        return (Phase(PHASE, tuple(steps)),)
