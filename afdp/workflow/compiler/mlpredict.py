"""The guide's ``ml_predictor`` analyzer: its features, and its own step ``predict_<name>``.

An ``ml_predictor`` never runs inside an analysis: the analysis document is a pure
function of the captured samples (``afdp replay`` recomputes it bit for bit), and a
prediction depends on the service's history. So each ``ml_predictor`` analyzer becomes a
step ``predict_<name>`` of kind ``predict`` in the ``before_deployment`` phase, run by
the runner from the verified history (:mod:`afdp.pipeline.runner.steps.mlpredict`) and
recorded as its own evidence record. Its outputs are those of ``predict_likely_impact``
plus the analyzer's ``output:`` name: ``steps.predict_<name>.<output>`` (and ``_low``,
``_high``) is the predicted money lost per hour, in the currency of the workflow's money
metric per hour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from afdp.workflow import catalog
from afdp.workflow.expressions import ANY, STRING
from afdp.workflow.model import Metric, Predict
from afdp.workflow.scope import Tree, suggest

#: The guide's (and common) spellings of a feature -> the learning feature it reads
#: (:class:`afdp.learn.features.Planned`).
FEATURES: Mapping[str, str] = {
    "code_change_size": "change_size",
    "change_size": "change_size",
    "deployment_size": "change_size",
    "changed_files": "changed_files_count",
    "changed_files_count": "changed_files_count",
    "change_kinds": "kinds",
    "changed_kinds": "kinds",
    "kinds": "kinds",
    "deployment_hour": "hour_utc",
    "hour": "hour_utc",
    "hour_utc": "hour_utc",
    "deployment_weekday": "weekday_utc",
    "day_of_week": "weekday_utc",
    "weekday": "weekday_utc",
    "weekday_utc": "weekday_utc",
    "environment": "environment",
    "current_load": "load",
    "load": "load",
}
#: What each learning feature is, for the validation note.
MEANING: Mapping[str, str] = {
    "change_size": "the deployment's size (--deployment-size)",
    "changed_files_count": "the number of changed files (--changed-file)",
    "kinds": "the kinds of the changed files (migration, code, config...)",
    "hour_utc": "the UTC hour of the deployment (--deployed-at, default now)",
    "weekday_utc": "the UTC weekday of the deployment",
    "environment": "the environment (--environment)",
    "load": "the service's load when deployed (a load column of the history; "
    "a run does not know it, so a run's model is trained and predicts without it)",
}
PREFIX = "predict_"
#: The history a prediction needs (``afdp.learn.model.MIN_HISTORY``; a test keeps them equal).
MIN_HISTORY = 20
#: The default ``output:`` name (the predicted money lost per hour).
DEFAULT_OUTPUT = "predicted_revenue_loss_per_hour"


def step_name(analyzer: str) -> str:
    """The name of the step (and record) an ``ml_predictor`` analyzer runs as."""
    return f"{PREFIX}{analyzer}"


def read_features(raw: Sequence[str]) -> tuple[tuple[tuple[str, str], ...], list[str]]:
    """Return the (written, learning feature) pairs and the names that map to none."""
    pairs: list[tuple[str, str]] = []
    unknown: list[str] = []
    for name in raw:
        feature = FEATURES.get(name.strip().lower())
        if feature is None:
            unknown.append(name)
        else:
            pairs.append((name, feature))
    return tuple(pairs), unknown


def unknown_message(analyzer: str, unknown: Sequence[str]) -> str:
    return (
        f"ml_predictor {analyzer}: feature {unknown[0]!r} is not a learning feature"
        f"{suggest(unknown[0], tuple(FEATURES))} (known: {', '.join(sorted(FEATURES))})"
    )


def selection_problem(analyzer: str, listed: bool, pairs: Sequence[tuple[str, str]]) -> str | None:
    """Why a ``features:`` list selects no model input a run has (None when it selects one).

    ``listed``: the analyzer has a ``features:`` key (without one, the model is given
    every learning feature). ``load`` alone is no input: a run does not know the load.
    """
    if not listed:
        return None
    if not pairs:
        return (f"ml_predictor {analyzer}: features: [] selects no model input; list some "
                f"(known: {', '.join(sorted(FEATURES))}) or leave features: out to use every one")
    if all(feature == "load" for _, feature in pairs):
        written = ", ".join(w for w, _ in pairs)
        return (f"ml_predictor {analyzer}: features {written} select only the load, which a run does not know: "
                f"the model would have no input (known: {', '.join(sorted(FEATURES))})")
    return None


def output_reserved(output: str) -> bool:
    """Whether an ``output:`` name would hide one of the prediction's own outputs."""
    fields = {*catalog.PREDICTION_OUTPUTS["predict_likely_impact"], "dataset_digest"}
    return any(f"{output}{suffix}" in fields for suffix in ("", "_low", "_high")) and output != DEFAULT_OUTPUT


def note_text(analyzer: str, model: str | None, pairs: Sequence[tuple[str, str]], output: str) -> str:
    read = "; ".join(f"{written} = {feature} ({MEANING[feature]})" for written, feature in pairs)
    inputs = (f"the model is trained on exactly these features: {read}" if pairs
              else "no features listed: the model is given every learning feature")
    return (
        f"ml_predictor {analyzer}: runs as its own step {step_name(analyzer)} before the deployment, "
        f"never inside the analysis (which replay recomputes from the samples); {inputs}; "
        f"model {model or 'unnamed'}: the service's conformal impact model recorded on afdp/models/<service> "
        "(used only when its branch verifies and the refit reproduces its fingerprint) or trained from the "
        "verified history and recorded with the run's key and TSA; needs afdp run --trust and "
        f"{MIN_HISTORY} past deployments, else recorded as skipped with the reason; decisions read "
        f"steps.{step_name(analyzer)}.{output} (and _low, _high): the predicted money lost per hour "
        "(the currency of the workflow's money metric per hour)"
    )


def params_of(analyzer: str, model: str | None, pairs: Sequence[tuple[str, str]], output: str | None) -> Predict:
    return Predict(
        "predict_likely_impact",
        catalog.PREDICTION_SKIPPED,
        analyzer=analyzer,
        model=model,
        output=output or DEFAULT_OUTPUT,
        features=tuple(pairs),
    )


def outputs_of(params: Predict, metrics: Mapping[str, Metric], base: dict[str, Tree]) -> dict[str, Tree]:
    """The step's outputs: ``predict_likely_impact``'s plus ``<output>`` (``_low``, ``_high``)."""
    tree = dict(base)
    if params.output:
        for suffix in ("", "_low", "_high"):
            tree[f"{params.output}{suffix}"] = ANY
    tree["dataset_digest"] = STRING
    return tree


__all__ = ["DEFAULT_OUTPUT", "FEATURES", "read_features", "selection_problem", "step_name"]
