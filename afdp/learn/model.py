"""Impact models: conformal prediction intervals learned from verified history, kept as evidence.

**What is predicted.** For each metric *M* of the history, the impact's absolute
``increase`` (``impact.<M>.increase``: impact minus baseline, in the metric's unit;
negative is a decrease) and, where the history has it, the money lost per hour
(``money_lost_per_hour``, :func:`afdp.learn.features.money_lost_per_hour`: positive is
money lost). A target is learned when at least
:data:`MIN_HISTORY` verified deployments have a value for it.

**How.** Features are :class:`afdp.learn.features.Encoding` columns (log sizes, the
hour and weekday on circles, environment and change kinds, optionally the load). Each
target gets a scikit-learn ``HistGradientBoostingRegressor`` (fixed hyper-parameters,
``random_state`` = :data:`SEED`, no early stopping) wrapped in MAPIE's
``CrossConformalRegressor`` (CV+, ``method="plus"``, a shuffled ``KFold`` of
:data:`FOLDS` folds seeded with :data:`SEED`): the interval at confidence level *c*
covers the truth for at least about *c* of new deployments exchangeable with the past
ones (CV+ guarantees 1 - 2(1 - c) in the worst case; in practice close to *c*).

**How good it is.** :func:`evaluate` runs an outer, seeded K-fold over the history:
each fold's model is trained on the other folds and its intervals are checked against
the held-out deployments' measured impact. The share covered is the *empirical
coverage*, reported next to the nominal level with the mean interval width.

**A model is evidence.** :func:`train` returns the model document: the dataset digest
of the history it was trained from, every training row (features and targets) with the
record digests it came from, the encoding, the hyper-parameters, seeds and library
versions, the coverage, and a *fingerprint* (SHA-256 of the model's predictions on its
training rows (at most :data:`FINGERPRINT_ROWS` of them, evenly spaced), rounded to
:data:`FINGERPRINT_DIGITS` significant digits).
:func:`record_model` appends it as a signed, time-stamped record to the branch
``afdp/models/<service>``. No model bytes are ever stored or loaded (no pickle): a
recorded model is used by :func:`load_model`, which first verifies the model branch
against the trust policy, then refits the model from the recorded rows with the
recorded parameters and checks that the refit reproduces the fingerprint; a mismatch
(another scikit-learn, a tampered row) refuses the model. So every prediction can be
recomputed by anyone holding the evidence, and cites the model record's digest, which
cites the dataset digest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from afdp.errors import AfdpError, NotFoundError, UsageError, VerificationError
from afdp.evidence.canonical import canonical_bytes, sha256_hex
from afdp.evidence.names import MODEL_STEP as MODEL_STEP_NAME
from afdp.evidence.names import MODELS_SERVICE
from afdp.learn.features import (
    Encoding,
    Planned,
    digests_of,
    finite_number,
    load_column,
    metrics_of,
    money_lost_per_hour,
)

MODEL_FORMAT = "afdp.learn.model/v1"
MIN_HISTORY = 20
CONFIDENCE = 0.9
FOLDS = 5
SEED = 0
FINGERPRINT_DIGITS = 6
FINGERPRINT_ROWS = 200
#: Model records go to ``afdp/models/<service>``: this "service" name holds the models.
MODELS = MODELS_SERVICE
MODEL_STEP = MODEL_STEP_NAME
MONEY = "money_lost_per_hour"
ESTIMATOR: Mapping[str, Any] = {
    "class": "sklearn.ensemble.HistGradientBoostingRegressor",
    "max_iter": 100,
    "learning_rate": 0.1,
    "max_depth": 3,
    "l2_regularization": 1.0,
    "early_stopping": False,
}


class ModelUnusable(VerificationError):
    """A recorded model could not be used: its branch did not verify, or refitting it
    from its recorded rows did not reproduce its fingerprint (exit 1)."""


def not_enough(n: int, needed: int = MIN_HISTORY) -> str:
    return f"not enough history: {n} deployment{'s' if n != 1 else ''}, needs {needed}"


def target_value(row: Mapping[str, Any], target: str) -> float | None:
    return money_lost_per_hour(row) if target == MONEY else finite_number(row.get(target))


def targets_of(rows: Sequence[Mapping[str, Any]], *, minimum: int = MIN_HISTORY) -> list[str]:
    """Return the targets to learn: ``impact.<M>.increase`` per metric, then
    ``money_lost_per_hour``, each only when at least ``minimum`` rows have a value."""
    names = [f"impact.{m}.increase" for m in metrics_of(rows)] + [MONEY]
    return [t for t in names if sum(target_value(r, t) is not None for r in rows) >= minimum]


def target_label(target: str) -> str:
    """``impact.latency.increase`` -> ``latency``; ``money_lost_per_hour`` stays."""
    if target.startswith("impact.") and target.endswith(".increase"):
        return target[len("impact.") : -len(".increase")]
    return target


@dataclass(frozen=True)
class TrainingSet:
    """The rows a model learns from, as they are recorded in the model document."""

    service: str
    dataset_digest: str
    encoding: Encoding
    load_column: str | None
    deployments: tuple[str, ...]
    record_digests: tuple[tuple[str, ...], ...]
    X: tuple[tuple[float | None, ...], ...]
    y: Mapping[str, tuple[float | None, ...]]

    @classmethod
    def of(
        cls,
        rows: Sequence[Mapping[str, Any]],
        *,
        service: str,
        dataset_digest: str,
        use_load: bool = False,
        minimum: int = MIN_HISTORY,
        features: Sequence[str] | None = None,
    ) -> TrainingSet:
        """Return the training set of the history ``rows`` (sorted by time, then id).

        ``features``: the learning features (:data:`afdp.learn.features.LEARNING_FEATURES`)
        the model is given, exactly those (None: all; the load only with ``use_load``).

        Raises:
            UsageError: no target has ``minimum`` values (:func:`not_enough` says why).
        """
        ordered = sorted(rows, key=lambda r: (str(r.get("deployed_at") or ""), str(r.get("deployment"))))
        if features is not None and "load" not in features:
            use_load = False
        column = load_column(ordered) if use_load else None
        planned = [Planned.from_row(r, load_column=column) for r in ordered]
        encoding = Encoding.fit(planned, use_load=column is not None, selected=features)
        targets = targets_of(ordered, minimum=minimum)
        if not targets:
            raise UsageError(not_enough(len(ordered), minimum))
        return cls(
            service=service,
            dataset_digest=dataset_digest,
            encoding=encoding,
            load_column=column,
            deployments=tuple(str(r.get("deployment")) for r in ordered),
            record_digests=tuple(tuple(digests_of(r)) for r in ordered),
            X=tuple(tuple(_json_float(v) for v in encoding.vector(p)) for p in planned),
            y={t: tuple(target_value(r, t) for r in ordered) for t in targets},
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "deployments": list(self.deployments),
            "record_digests": [list(d) for d in self.record_digests],
            "columns": list(self.encoding.columns),
            "X": [list(x) for x in self.X],
            "y": {t: list(v) for t, v in self.y.items()},
        }

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> TrainingSet:
        """Return the training set recorded in a model document.

        Raises:
            ModelUnusable: the document is not a model of this format.
        """
        try:
            training = document["training"]
            encoding = Encoding.from_json(document["features"])
            if list(encoding.columns) != list(training["columns"]):
                raise ModelUnusable("the recorded columns do not match the recorded encoding")
            return cls(
                service=str(document["service"]),
                dataset_digest=str(document["dataset"]["digest"]),
                encoding=encoding,
                load_column=document.get("load_column"),
                deployments=tuple(str(d) for d in training["deployments"]),
                record_digests=tuple(tuple(str(x) for x in d) for d in training["record_digests"]),
                X=tuple(tuple(_json_float(v) for v in x) for x in training["X"]),
                y={str(t): tuple(_json_float(v) for v in values) for t, values in training["y"].items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelUnusable(f"not a {MODEL_FORMAT} document: {exc}") from exc


def _json_float(value: Any) -> float | None:
    number = finite_number(value)
    return None if number is None else number


def _matrix(rows: Sequence[Sequence[float | None]]) -> Any:
    import numpy as np

    return np.array([[math.nan if v is None else v for v in row] for row in rows], dtype=float)


def _regressor(n: int, confidence: float, seed: int) -> Any:
    from mapie.regression import CrossConformalRegressor
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.model_selection import KFold

    params = {k: v for k, v in ESTIMATOR.items() if k != "class"}
    estimator = HistGradientBoostingRegressor(
        **params, min_samples_leaf=_leaf(n), random_state=seed
    )
    folds = KFold(n_splits=min(FOLDS, n), shuffle=True, random_state=seed)
    return CrossConformalRegressor(
        estimator=estimator, confidence_level=confidence, method="plus", cv=folds, random_state=seed
    )


def _leaf(n: int) -> int:
    """Leaves of at least n/10 rows (2..20): small histories cannot support finer trees."""
    return max(2, min(20, n // 10))


@dataclass
class FittedModel:
    """A model ready to predict (in memory only; what is kept is its document)."""

    training: TrainingSet
    confidence: float
    seed: int
    regressors: dict[str, Any] = field(default_factory=dict)

    def predict(self, planned: Sequence[Planned]) -> dict[str, list[dict[str, float]]]:
        """Return per target, per planned deployment: ``point``, ``low``, ``high``."""
        X = _matrix([self.training.encoding.vector(p) for p in planned])
        return self._intervals(X)

    def _intervals(self, X: Any) -> dict[str, list[dict[str, float]]]:
        out: dict[str, list[dict[str, float]]] = {}
        for target, regressor in self.regressors.items():
            with _one_thread():
                points, intervals = regressor.predict_interval(X)
            out[target] = [
                {"point": float(p), "low": float(i[0][0]), "high": float(i[1][0])}
                for p, i in zip(points, intervals, strict=True)
            ]
        return out

    def fingerprint(self) -> str:
        """SHA-256 of the predictions on (up to :data:`FINGERPRINT_ROWS`, evenly spaced)
        training rows, rounded (see module doc). CV+ intervals cost O(training rows) per
        prediction, so all 10,000 rows of a large history would take minutes."""
        rows = self.training.X
        step = max(1, math.ceil(len(rows) / FINGERPRINT_ROWS))
        predictions = self._intervals(_matrix(rows[::step]))
        rounded: dict[str, Any] = {
            t: [[_round(v[k]) for k in ("point", "low", "high")] for v in values]
            for t, values in sorted(predictions.items())
        }
        encoding = self.training.encoding
        if encoding.selected is not None:
            # A model given chosen features: its inputs are part of what the fingerprint
            # pins (models given every feature keep the fingerprint they were recorded with).
            rounded = {"inputs": list(encoding.columns), "predictions": rounded}
        return sha256_hex(canonical_bytes(rounded))


def _round(value: float) -> float | None:
    if not math.isfinite(value):
        return None
    return float(f"{value:.{FINGERPRINT_DIGITS}g}")


def _one_thread() -> Any:
    """One OpenMP thread for the gradient boosting: on small histories threads cost far
    more than they save, and a single thread makes every sum in the same order, so a
    refit reproduces the recorded fingerprint on any machine."""
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        # Finding the loaded thread pools is the slow part: once per process.
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="openmp")


_CONTROLLER: Any = None


def fit(training: TrainingSet, *, confidence: float = CONFIDENCE, seed: int = SEED) -> FittedModel:
    """Fit one conformal regressor per target of ``training``.

    Raises:
        UsageError: a confidence level outside (0, 1).
    """
    import numpy as np

    if not 0 < confidence < 1:
        raise UsageError(f"confidence level {confidence} must be between 0 and 1")
    X = _matrix(training.X)
    model = FittedModel(training, confidence, seed)
    for target, values in training.y.items():
        y = np.array([math.nan if v is None else v for v in values], dtype=float)
        keep = ~np.isnan(y)
        regressor = _regressor(int(keep.sum()), confidence, seed)
        with _one_thread():
            regressor.fit_conformalize(X[keep], y[keep])
        model.regressors[target] = regressor
    return model


def evaluate(training: TrainingSet, *, confidence: float = CONFIDENCE, seed: int = SEED) -> dict[str, Any]:
    """Return, per target, the cross-validated empirical coverage of the intervals.

    An outer ``KFold`` (:data:`FOLDS` folds, shuffled with ``seed + 1``): each fold's
    deployments are predicted by a model trained on the others.
    """
    import numpy as np
    from sklearn.model_selection import KFold

    X = _matrix(training.X)
    out: dict[str, Any] = {}
    for target, values in training.y.items():
        y = np.array([math.nan if v is None else v for v in values], dtype=float)
        keep = np.flatnonzero(~np.isnan(y))
        covered = 0
        widths: list[float] = []
        errors: list[float] = []
        outer = KFold(n_splits=min(FOLDS, len(keep)), shuffle=True, random_state=seed + 1)
        for train_idx, test_idx in outer.split(keep):
            train, test = keep[train_idx], keep[test_idx]
            regressor = _regressor(len(train), confidence, seed)
            with _one_thread():
                regressor.fit_conformalize(X[train], y[train])
                points, intervals = regressor.predict_interval(X[test])
            low, high = intervals[:, 0, 0], intervals[:, 1, 0]
            covered += int(np.sum((y[test] >= low) & (y[test] <= high)))
            widths.extend((high - low).tolist())
            errors.extend(np.abs(points - y[test]).tolist())
        n = len(keep)
        out[target] = {
            "nominal": confidence,
            "empirical": covered / n if n else None,
            "covered": covered,
            "n": n,
            "folds": min(FOLDS, n),
            "mean_width": float(np.mean(widths)) if widths else None,
            "mean_absolute_error": float(np.mean(errors)) if errors else None,
        }
    return out


def _libraries() -> dict[str, str]:
    import mapie
    import numpy
    import sklearn

    return {"scikit-learn": sklearn.__version__, "mapie": mapie.__version__, "numpy": numpy.__version__}


def train(
    training: TrainingSet, *, confidence: float = CONFIDENCE, seed: int = SEED, assess: bool = True
) -> tuple[FittedModel, dict[str, Any]]:
    """Fit the model and return it with its document (what :func:`record_model` records).

    ``assess``: also measure the cross-validated coverage (:func:`evaluate`).
    """
    model = fit(training, confidence=confidence, seed=seed)
    document: dict[str, Any] = {
        "format": MODEL_FORMAT,
        "service": training.service,
        "dataset": {"digest": training.dataset_digest, "rows": len(training.deployments)},
        "features": training.encoding.to_json(),
        "load_column": training.load_column,
        "targets": {t: {"rows": sum(v is not None for v in values)} for t, values in training.y.items()},
        "estimator": {**ESTIMATOR, "min_samples_leaf": "max(2, min(20, rows // 10))", "random_state": seed},
        "conformal": {
            "class": "mapie.regression.CrossConformalRegressor",
            "method": "plus",
            "cv": f"KFold(n_splits=min({FOLDS}, rows), shuffle=True, random_state={seed})",
            "confidence_level": confidence,
        },
        "seed": seed,
        "libraries": _libraries(),
        "coverage": evaluate(training, confidence=confidence, seed=seed) if assess else None,
        "training": training.to_json(),
        "fingerprint": {"sha256": model.fingerprint(), "digits": FINGERPRINT_DIGITS, "rows": FINGERPRINT_ROWS},
    }
    return model, document


def refit(document: Mapping[str, Any]) -> FittedModel:
    """Return the model a recorded document describes, refit from its recorded rows.

    Raises:
        ModelUnusable: not this format, or the refit does not reproduce the fingerprint.
    """
    if document.get("format") != MODEL_FORMAT:
        raise ModelUnusable(f"model format {document.get('format')!r} is not {MODEL_FORMAT}")
    training = TrainingSet.from_document(document)
    try:
        confidence = float(document["conformal"]["confidence_level"])
        seed = int(document["seed"])
        expected = str(document["fingerprint"]["sha256"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelUnusable(f"the model document lacks {exc}") from exc
    model = fit(training, confidence=confidence, seed=seed)
    actual = model.fingerprint()
    if actual != expected:
        raise ModelUnusable(
            f"refitting the recorded model does not reproduce its fingerprint ({actual[:12]} != "
            f"{expected[:12]}; recorded with {document.get('libraries')}, running {_libraries()})"
        )
    return model


# --- models as evidence -------------------------------------------------------------


@dataclass(frozen=True)
class RecordedModel:
    """A model record that verified: its digest (the envelope's SHA-256) and document."""

    digest: str
    sequence: int
    document: Mapping[str, Any]
    #: the head of the model branch it was verified at
    head: str | None = None

    @property
    def dataset_digest(self) -> str | None:
        dataset = self.document.get("dataset")
        return str(dataset.get("digest")) if isinstance(dataset, Mapping) else None


def record_model(
    repository: Path | str, document: Mapping[str, Any], *, signer: Any, tsa_urls: Sequence[str]
) -> str:
    """Append the model document to ``afdp/models/<service>``; return the record digest.

    Raises:
        SigningError / TimestampError / StorageError: nothing was written.
    """
    from afdp.evidence import records as rec
    from afdp.evidence.ledger import append_record

    service = str(document["service"])
    coverage = document.get("coverage") or {}
    quality = ", ".join(
        f"{target_label(t)} {c['empirical']:.0%} at {c['nominal']:.0%}"
        for t, c in coverage.items()
        if c.get("empirical") is not None
    )
    draft = rec.RecordDraft(
        kind=rec.KIND_STEP,
        step=MODEL_STEP,
        result=dict(document),
        summary=(
            f"impact model of {service} from {document['dataset']['rows']} deployments "
            f"(dataset {str(document['dataset']['digest'])[:12]})" + (f"; coverage {quality}" if quality else "")
        ),
        context={"model": {"format": MODEL_FORMAT, "dataset_sha256": document["dataset"]["digest"]}},
    )
    written = append_record(
        repository, service=MODELS, deployment=service, draft=draft, signer=signer, tsa_urls=tsa_urls
    )
    return written[-1].envelope_sha256


def recorded_models(repository: Path | str, policy: Any, *, service: str) -> list[RecordedModel]:
    """Return the model records of ``service`` (oldest first) after the model branch verified.

    The branch is an append-only log (it is never sealed): every record on it must pass
    every check against the trust policy, else nothing on it is used.

    Raises:
        ModelUnusable: the model branch failed verification (the first failure named).
    """
    import json

    import pygit2

    from afdp.evidence import records as rec
    from afdp.evidence.ledger import decode_envelope, trailers
    from afdp.evidence.names import branch_ref
    from afdp.evidence.store import EvidenceStore
    from afdp.verify import check_branch

    store = EvidenceStore(repository)
    if store.head(branch_ref(MODELS, service)) is None:
        return []
    report = check_branch(repository, service=MODELS, deployment=service, policy=policy, allow_unsealed=True)
    if not report.ok or report.head is None:
        first = report.failures[0] if report.failures else None
        raise ModelUnusable(
            f"model branch afdp/{MODELS}/{service} did not verify: {first or 'no head'}; no recorded model is used"
        )
    digests = {r.sequence: r.envelope_sha256 for r in report.records}
    commit = store.repo.get(report.head)
    if not isinstance(commit, pygit2.Commit):
        raise ModelUnusable("the verified model commit cannot be read")
    found: list[RecordedModel] = []
    strays = [r for r in report.records if r.kind != rec.KIND_GENESIS and (r.kind != rec.KIND_STEP or r.step != MODEL_STEP)]
    if strays:
        raise ModelUnusable(
            f"afdp/{MODELS}/{service} is not a model branch: record {strays[0].sequence} is a "
            f"{strays[0].kind} record ({strays[0].step}), not a model; no recorded model is used"
        )
    for entry in store.history(commit):
        info = trailers(store.message_of(entry))
        if info.get("AFDP-Kind") != rec.KIND_STEP or info.get("AFDP-Step") != MODEL_STEP:
            continue
        sequence = int(info["AFDP-Record"])
        files = store.list_dir(entry.tree, rec.record_dir(sequence, MODEL_STEP))
        envelope = files.get(rec.ENVELOPE_FILE)
        if envelope is None or sha256_hex(envelope) != digests.get(sequence):
            raise ModelUnusable(f"model record {sequence} is not the one that verified")
        predicate = decode_envelope(envelope)["predicate"]
        result = predicate.get("result")
        if predicate.get("result_ref"):
            result = json.loads(files.get(rec.RESULT_FILE, b"null"))
        if isinstance(result, Mapping) and result.get("format") == MODEL_FORMAT:
            found.append(RecordedModel(digests[sequence], sequence, result, str(report.head)))
    found.sort(key=lambda m: m.sequence)
    return found


def find_model(
    repository: Path | str, policy: Any, *, service: str, dataset_digest: str, confidence: float, use_load: bool,
    features: Sequence[str] | None = None,
) -> RecordedModel | None:
    """Return the latest verified model of ``service`` trained on exactly this dataset
    with these settings (and these selected ``features``, None: all), or None."""
    from afdp.learn.features import LEARNING_FEATURES

    selected = None if features is None else [f for f in LEARNING_FEATURES if f in set(features)]
    for model in reversed(recorded_models(repository, policy, service=service)):
        document = model.document
        encoding = document.get("features") or {}
        if (
            model.dataset_digest == dataset_digest
            and (document.get("conformal") or {}).get("confidence_level") == confidence
            and bool(encoding.get("use_load")) == use_load
            and encoding.get("selected") == selected
        ):
            return model
    return None


def load_model(repository: Path | str, policy: Any, *, service: str, digest: str) -> tuple[RecordedModel, FittedModel]:
    """Return the verified model record with ``digest`` (or a unique prefix) and its refit.

    Raises:
        NotFoundError: no verified model record has that digest.
        ModelUnusable: the branch did not verify or the refit differs.
    """
    hits = [m for m in recorded_models(repository, policy, service=service) if m.digest.startswith(digest.lower())]
    if len(hits) != 1:
        raise NotFoundError(
            f"no model record {digest!r} on afdp/{MODELS}/{service}"
            if not hits
            else f"model digest prefix {digest!r} is ambiguous"
        )
    return hits[0], refit(hits[0].document)


__all__ = [
    "CONFIDENCE",
    "MIN_HISTORY",
    "MODELS",
    "MODEL_FORMAT",
    "AfdpError",
    "FittedModel",
    "ModelUnusable",
    "RecordedModel",
    "TrainingSet",
    "evaluate",
    "find_model",
    "fit",
    "load_model",
    "not_enough",
    "record_model",
    "recorded_models",
    "refit",
    "targets_of",
    "train",
]
