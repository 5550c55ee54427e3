"""Predictions: a planned deployment's expected impact, as intervals, and what they rest on.

:func:`predict_from_rows` trains (or reuses a verified recorded) impact model
(:mod:`afdp.learn.model`) on the verified history and returns a :class:`Prediction`: per
metric the expected increase with its conformal interval, the money lost per hour, the
model's cross-validated coverage, the similar past deployments behind it
(:mod:`afdp.learn.similar`), and what it cites: the model record's digest, the dataset
digest and the record digests of the neighbours. With too little history the Prediction
says so (``not enough history: N deployments, needs M``) and holds no number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from afdp.errors import UsageError
from afdp.learn.features import Planned
from afdp.learn.model import (
    CONFIDENCE,
    MIN_HISTORY,
    MODEL_FORMAT,
    MONEY,
    FittedModel,
    ModelUnusable,
    RecordedModel,
    TrainingSet,
    find_model,
    not_enough,
    record_model,
    refit,
    target_label,
    targets_of,
    train,
)


@dataclass(frozen=True)
class Prediction:
    """What a planned deployment is expected to do, and everything it rests on."""

    service: str
    query: Planned
    status: str  # "ok" or "not_enough_history"
    reason: str | None
    confidence: float
    dataset_digest: str | None
    history_rows: int
    model_record: str | None = None
    model_note: str | None = None
    impact: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    money_lost_per_hour: Mapping[str, Any] | None = None
    coverage: Mapping[str, Any] | None = None
    similar: Any = None
    #: the learning features the model was given (None: every one) and its input columns
    features: tuple[str, ...] | None = None
    inputs: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        similar = self.similar.to_json() if self.similar is not None else None
        cites: list[str] = []
        if self.model_record:
            cites.append(self.model_record)
        if similar:
            for n in similar["neighbours"]:
                cites.extend(n["record_digests"])
        return {
            "service": self.service,
            "status": self.status,
            "reason": self.reason,
            "query": self.query.to_json(),
            "confidence_level": self.confidence,
            "impact": {k: dict(v) for k, v in self.impact.items()},
            "money_lost_per_hour": dict(self.money_lost_per_hour) if self.money_lost_per_hour else None,
            "model": {
                "record": self.model_record,
                "recorded": self.model_record is not None,
                "note": self.model_note,
                "dataset_digest": self.dataset_digest,
                "history_rows": self.history_rows,
                "format": MODEL_FORMAT,
                "features": None if self.features is None else list(self.features),
                "inputs": list(self.inputs),
            },
            "quality": dict(self.coverage) if self.coverage else None,
            "similar": similar,
            "cites": {"model_record": self.model_record, "dataset_digest": self.dataset_digest,
                      "records": list(dict.fromkeys(cites))},
        }


def predict_from_rows(
    rows: Sequence[Mapping[str, Any]],
    planned: Planned,
    *,
    service: str,
    dataset_digest: str,
    confidence: float = CONFIDENCE,
    repository: Path | str | None = None,
    policy: Any = None,
    signer: Any = None,
    tsa_urls: Sequence[str] = (),
    excluded: int = 0,
    features: Sequence[str] | None = None,
) -> Prediction:
    """Predict ``planned``'s impact from the verified history ``rows``.

    ``features``: the learning features the model is given, exactly those
    (:data:`afdp.learn.features.LEARNING_FEATURES`; None: every one). ``load`` is given
    only when ``planned`` knows it; a selection left with no feature the planned
    deployment has gives a Prediction with status ``no_model_input`` and the reason.

    With ``repository`` and ``policy``: a verified model record of this dataset is
    reused (refit and fingerprint-checked); otherwise the model is trained, and recorded
    when ``signer`` and ``tsa_urls`` are given. Too little history gives a Prediction
    with status ``not_enough_history`` and the reason, never a number.

    Raises:
        ModelUnusable: the model branch did not verify, a recorded model of this dataset
            was not trained on these rows, or a refit differs.
        SigningError / TimestampError / StorageError: the model could not be recorded.
    """
    from afdp.learn.features import LEARNING_FEATURES
    from afdp.learn.similar import find_similar

    selected: tuple[str, ...] | None = None
    if features is not None:
        unknown = sorted(set(features) - set(LEARNING_FEATURES))
        if unknown:
            raise UsageError(f"unknown learning feature {unknown[0]!r} (features: {', '.join(LEARNING_FEATURES)})")
        selected = tuple(f for f in LEARNING_FEATURES if f in set(features) and (f != "load" or planned.load is not None))
    use_load = planned.load is not None and (selected is None or "load" in selected)
    base: dict[str, Any] = {"service": service, "query": planned, "confidence": confidence,
            "dataset_digest": dataset_digest, "history_rows": len(rows), "features": selected}
    if selected == ():
        return Prediction(status="no_model_input", reason=(
            f"no model input: the features selected ({', '.join(features or ())}) are not known for this deployment"
        ), **base)
    targets = targets_of(rows)
    if len(rows) < MIN_HISTORY or not targets:
        return Prediction(status="not_enough_history", reason=not_enough(len(rows)), **base)
    record: str | None = None
    note: str | None = None
    model: FittedModel | None = None
    document: Mapping[str, Any] | None = None
    if repository is not None and policy is not None:
        found = find_model(repository, policy, service=service, dataset_digest=dataset_digest,
                           confidence=confidence, use_load=use_load, features=selected)
        if found is not None:
            same_training(found, rows, service=service, dataset_digest=dataset_digest, use_load=use_load,
                           features=selected)
            model, document, record = refit(found.document), found.document, found.digest
            note = "recorded model of this dataset, refit and fingerprint-checked"
    if model is None:
        training = TrainingSet.of(rows, service=service, dataset_digest=dataset_digest, use_load=use_load,
                                  features=selected)
        model, fresh = train(training, confidence=confidence)
        document = fresh
        if repository is not None and signer is not None and tsa_urls:
            record = record_model(repository, fresh, signer=signer, tsa_urls=tsa_urls)
            note = "trained now and recorded"
        else:
            note = "trained now, not recorded (give a key and a TSA to record it)"
    assert document is not None
    predicted = model.predict([planned])
    impact = {
        target_label(t): {"target": t, "statistic": "increase (impact - baseline, metric unit)", **v[0]}
        for t, v in predicted.items() if t != MONEY
    }
    money = predicted.get(MONEY, [None])[0]
    similar = find_similar(rows, planned, service=service, dataset_digest=dataset_digest, excluded=excluded)
    return Prediction(
        status="ok",
        reason=None,
        model_record=record,
        model_note=note,
        impact=impact,
        money_lost_per_hour=None if money is None else {"target": MONEY, **money},
        coverage=document.get("coverage"),
        similar=similar,
        inputs=model.training.encoding.columns,
        **base,
    )


def same_training(
    found: RecordedModel, rows: Sequence[Mapping[str, Any]], *, service: str, dataset_digest: str, use_load: bool,
    features: Sequence[str] | None = None,
) -> None:
    """Check that a recorded model which names this dataset was trained on exactly its rows.

    The dataset digest in a model record is a claim; the training rows recorded beside it
    are what the model was fit on. A record whose rows are not the training set of the
    verified history it names (other rows, other features, another service) is refused.

    Raises:
        ModelUnusable: the recorded training set is not the one these rows give.
    """
    from afdp.evidence.canonical import canonical_bytes

    document = found.document
    expected = TrainingSet.of(rows, service=service, dataset_digest=dataset_digest, use_load=use_load, features=features)
    try:
        recorded = TrainingSet.from_document(document)
    except ModelUnusable as exc:
        raise ModelUnusable(f"model record {found.digest[:12]}: {exc}") from exc
    same = (
        recorded.service == service
        and recorded.load_column == expected.load_column
        and canonical_bytes(recorded.encoding.to_json()) == canonical_bytes(expected.encoding.to_json())
        and canonical_bytes(recorded.to_json()) == canonical_bytes(expected.to_json())
    )
    if not same:
        raise ModelUnusable(
            f"model record {found.digest[:12]} names dataset {dataset_digest[:12]} but was not trained on its "
            f"verified rows (service, features or training rows differ); it is not used"
        )


def predict_impact(
    repository: Path | str,
    trust_policy: Any,
    *,
    service: str,
    planned: Planned,
    confidence: float = CONFIDENCE,
    signer: Any = None,
    tsa_urls: Sequence[str] = (),
) -> Prediction:
    """Load the verified history of ``service`` and predict ``planned``'s impact
    (:func:`predict_from_rows`).

    Raises:
        AfdpError: as :func:`afdp.learn.history.load_history` and :func:`predict_from_rows`.
    """
    from afdp.learn.source import history_of, trust_of

    policy = trust_of(repository, trust_policy)
    history = history_of(repository, trust_policy, service=service)
    prediction = predict_from_rows(
        history.rows,
        planned,
        service=service,
        dataset_digest=history.digest,
        confidence=confidence,
        repository=repository,
        policy=policy,
        signer=signer,
        tsa_urls=tsa_urls,
        excluded=len(history.excluded),
    )
    if prediction.status == "not_enough_history" and not history.rows:
        return replace(prediction, reason=_none_of(repository, policy, service, history))
    return prediction


def _none_of(repository: Path | str, policy: Any, service: str, history: Any) -> str:
    """The reason for a service with no deployment in the verified history: a new
    service (no branch yet), a mistyped name (the services that do have one are named),
    or branches that were all left out (how many, and why)."""
    from afdp.learn.history import services_in_history

    reason = f"{not_enough(0)}: no deployment of {service} is in the verified history"
    if history.considered:
        why = ", ".join(f"{category}: {count}" for category, count in history.excluded_by_reason().items())
        return f"{reason} (its {history.considered} evidence branch(es) were left out: {why})"
    found, unreached = services_in_history(repository, policy)
    if not found:
        return f"{reason}, nor of any other service"
    more = f" (and {unreached} more service(s) with evidence branches)" if unreached else ""
    return f"{reason}; services that are: {', '.join(found)}{more}"



__all__ = ["Prediction", "predict_from_rows", "predict_impact"]
