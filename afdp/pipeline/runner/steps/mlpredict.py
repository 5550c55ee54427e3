"""steps.mlpredict: the guide's ``ml_predictor`` analyzer, as its own step ``predict_<name>``.

The analysis document stays a pure function of the captured samples (``afdp replay``
recomputes it bit for bit); the prediction depends on the service's verified history, so
it is recorded as its own step record, run like ``predict_likely_impact``
(:mod:`afdp.pipeline.runner.steps.predict`): from the history read through the verifier
with the run's trust policy (``afdp run --trust``), with the recorded model of the
service when its branch verifies and its refit reproduces its fingerprint, else a model
trained on the spot and recorded on ``afdp/models/<service>`` with the run's key and TSA.

The analyzer's ``features:`` select the model's inputs: the model is trained on exactly
those learning features (its recorded encoding lists them as ``selected``, and its
fingerprint covers its input columns), and a recorded model is reused only when it was
given the same ones. The record adds to ``predict_likely_impact``'s: ``analyzer`` (name,
model, output, the features as read, ``model_features`` and ``model_inputs``: what the
model was given), ``cites.model_record`` and ``cites.dataset_digest``, and the outputs
``<output>``, ``<output>_low``, ``<output>_high``: the predicted money lost per hour (in
the currency of the workflow's money metric per hour; absent when the workflow has none,
so a decision on it is undecidable). ``afdp replay`` treats the record as recorded input:
its outputs feed the decisions it recomputes, it is not recomputed itself.

Without a trust policy, with too little history (``not enough history: N deployments,
needs M``), or with a model that does not verify, the step holds no number: skipped or
failed with the reason.
"""

from __future__ import annotations

from typing import Any

from afdp.pipeline.runner.state import StepResult
from afdp.workflow.model import Predict


def ml_predictor_result(params: Predict, result: StepResult) -> StepResult:
    """Return the step result of an ``ml_predictor`` analyzer from its prediction's
    (``predict_likely_impact``'s, run by :mod:`afdp.pipeline.runner.steps.predict`)."""
    assert params.analyzer is not None
    analyzer: dict[str, Any] = {
        "name": params.analyzer,
        "model": params.model,
        "output": params.output,
        "features": [{"written": w, "feature": f} for w, f in params.features],
    }
    if any(f == "load" for _, f in params.features):
        analyzer["notes"] = ["load: a run does not know the service's load; the model is trained and "
                             "predicts without it"]
    detail = dict(result.result)
    document = detail.get("prediction")  # (a skipped or failed step names the prediction here)
    model = document.get("model") if isinstance(document, dict) else None
    if isinstance(model, dict) and model.get("inputs"):
        # what the model was given, exactly: the features selected, and its input columns
        analyzer["model_features"] = model.get("features")
        analyzer["model_inputs"] = model.get("inputs")
    detail["analyzer"] = analyzer
    if result.status != "ok":
        return StepResult(result.status, detail, f"ml_predictor {params.analyzer}: {result.summary}", error=result.error)
    outputs = dict(detail.get("outputs") or {})
    document = detail.get("prediction") or {}
    cites = document.get("cites") or {}
    detail["model_record"] = cites.get("model_record")
    outputs["dataset_digest"] = detail.get("dataset_digest")
    if params.output and "predicted_revenue_loss_per_hour" in outputs:
        for suffix in ("", "_low", "_high"):
            outputs[f"{params.output}{suffix}"] = outputs[f"predicted_revenue_loss_per_hour{suffix}"]
    detail["outputs"] = outputs
    return StepResult("ok", detail, f"ml_predictor {params.analyzer}: {result.summary}")


__all__ = ["ml_predictor_result"]
