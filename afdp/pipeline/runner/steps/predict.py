"""steps.predict: the ``before_deployment:`` predictive steps.

Predictions need a model trained on verified evidence of past deployments (the learning
from evidence); until that exists each step is recorded as ``skipped`` with the reason
and what it would do, so the evidence says plainly that no prediction was made.
"""

from __future__ import annotations

from typing import Any

from afdp.pipeline.runner.state import RunState, StepResult
from afdp.workflow.catalog import PREDICTIONS
from afdp.workflow.model import Predict, Step


def handle_predict(run: RunState, step: Step, values: dict[str, Any]) -> StepResult:
    params = step.params
    assert isinstance(params, Predict)
    reason = f"skipped: {params.reason}"
    return StepResult(
        "skipped",
        {
            "outputs": {},
            "reason": reason,
            "prediction": params.prediction,
            "would": PREDICTIONS.get(params.prediction, ""),
        },
        reason,
    )
