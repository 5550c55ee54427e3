"""An ``ml_predictor``'s ``features:`` select the model's inputs: never accepted and ignored.

Unit level on history rows with a known truth (tests/learn_rows.py); the model branch is a
real repository signed and time-stamped by the real TSA fixture; ``afdp validate`` is the
real CLI. The end-to-end run is ``tests/test_ml_predictor.py`` (slow).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from conftest import run_cli
from learn_rows import rows

from afdp.errors import UsageError
from afdp.evidence.signing import load_signer
from afdp.evidence.store import init_repository
from afdp.learn.features import LEARNING_FEATURES, Encoding, Planned
from afdp.learn.model import MIN_HISTORY, ModelUnusable, TrainingSet, recorded_models, refit, train
from afdp.learn.prediction import predict_from_rows
from afdp.learn.source import trust_of

PLANNED = Planned.of(change_size=800, changed_files=20, kinds=["migration"],
                     at=datetime(2026, 12, 7, 14, tzinfo=UTC), environment="production")


def test_the_selected_features_are_exactly_the_models_inputs():
    history = rows(MIN_HISTORY + 5, seed=4)
    every = TrainingSet.of(history, service="api", dataset_digest="1" * 64)
    chosen = TrainingSet.of(history, service="api", dataset_digest="1" * 64, features=["hour_utc", "change_size"])
    assert "kind=migration" in every.encoding.columns and "env=production" in every.encoding.columns
    assert chosen.encoding.columns == ("log_change_size", "hour_sin", "hour_cos")
    assert chosen.encoding.selected == ("change_size", "hour_utc")  # in encoding order
    assert all(len(x) == 3 for x in chosen.X)
    assert len(chosen.encoding.vector(PLANNED)) == 3
    # the load is an input only when selected (and known)
    assert "load" not in TrainingSet.of(history, service="api", dataset_digest="1" * 64, use_load=True,
                                        features=["change_size"]).encoding.columns
    assert "load" in TrainingSet.of(history, service="api", dataset_digest="1" * 64, use_load=True,
                                    features=["change_size", "load"]).encoding.columns


def test_the_selection_is_recorded_and_pinned_by_the_fingerprint():
    history = rows(MIN_HISTORY + 5, seed=4)
    chosen = TrainingSet.of(history, service="api", dataset_digest="1" * 64, features=["change_size", "kinds"])
    _, document = train(chosen, assess=False)
    assert document["features"]["selected"] == ["change_size", "kinds"]
    kinds = [c for c in document["training"]["columns"] if c.startswith("kind=")]
    assert kinds and document["training"]["columns"] == ["log_change_size", *kinds]
    copy = json.loads(json.dumps(document))
    assert refit(copy).fingerprint() == document["fingerprint"]["sha256"]
    # a record claiming other inputs than its rows were encoded with is refused
    widened = json.loads(json.dumps(document))
    widened["features"]["selected"] = ["change_size", "hour_utc", "kinds"]
    with pytest.raises(ModelUnusable, match="columns do not match"):
        refit(widened)
    # an unknown feature in a record: refused, never read as "all"
    for bad in (["moon_phase"], [], "change_size"):
        broken = json.loads(json.dumps(document))
        broken["features"]["selected"] = bad
        with pytest.raises(ModelUnusable):
            refit(broken)
    # a model given every feature keeps the fingerprint form it was recorded with
    _, every = train(TrainingSet.of(history, service="api", dataset_digest="1" * 64), assess=False)
    assert "selected" not in every["features"]
    with pytest.raises(ValueError):
        Encoding((), (), selected=("moon_phase",))


def test_a_prediction_says_what_its_model_was_given(tmp_path, keys, tsa, trust_file):
    """With a model branch: a model given every feature is not reused for a selection (and
    the other way round); each selection gets its own verified, recorded model."""
    repo = tmp_path / "evidence"
    init_repository(repo)
    signer = load_signer(str(keys / "dev.key"))
    policy = trust_of(repo, trust_file)
    history = rows(MIN_HISTORY + 2, seed=5)
    common = dict(service="api", dataset_digest="3" * 64, repository=repo, policy=policy, signer=signer,
                  tsa_urls=[tsa.url])
    every = predict_from_rows(history, PLANNED, **common)
    chosen = predict_from_rows(history, PLANNED, **common, features=["change_size", "hour_utc"])
    assert every.status == chosen.status == "ok"
    assert every.model_record != chosen.model_record and "trained now" in str(chosen.model_note)
    document = chosen.to_json()
    assert document["model"]["features"] == ["change_size", "hour_utc"]
    assert document["model"]["inputs"] == ["log_change_size", "hour_sin", "hour_cos"]
    assert every.to_json()["model"]["features"] is None and "kind=migration" in every.to_json()["model"]["inputs"]
    again = predict_from_rows(history, PLANNED, **common, features=["hour_utc", "change_size"])
    assert again.model_record == chosen.model_record and "recorded model" in str(again.model_note)
    models = recorded_models(repo, policy, service="api")
    assert [m.document["features"].get("selected") for m in models] == [None, ["change_size", "hour_utc"]]


def test_a_selection_the_planned_deployment_cannot_fill_gives_no_number():
    history = rows(MIN_HISTORY + 2, seed=5)
    only_load = predict_from_rows(history, PLANNED, service="api", dataset_digest="4" * 64, features=["load"])
    assert only_load.status == "no_model_input" and only_load.impact == {}
    assert only_load.reason == "no model input: the features selected (load) are not known for this deployment"
    with pytest.raises(UsageError, match="moon_phase"):
        predict_from_rows(history, PLANNED, service="api", dataset_digest="4" * 64, features=["moon_phase"])
    assert set(LEARNING_FEATURES) == {"change_size", "changed_files_count", "hour_utc", "weekday_utc",
                                      "environment", "kinds", "load"}


WORKFLOW = """\
name: ml_seed
metrics:
  revenue_per_hour: {{query: 'sum(rate(revenue_total[1m])) * 3600', unit: $/hour, better: higher}}
workflow:
  - capture_baseline: {{metrics: [revenue_per_hour], duration: 5m}}
  - mark_deployment_time
  - capture_impact: {{duration: 10m}}
  - analyze_differences
analyzers:
  ml_predictor:
    model: deployment_impact_v2
{features}
    output: predicted_impact
"""


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ("    features: [moon_phase]", "feature 'moon_phase' is not a learning feature"),
        ("    features: []", "features: [] selects no model input"),
        ("    features: [current_load]", "features current_load select only the load, which a run does not know"),
    ],
)
def test_validate_refuses_a_selection_that_selects_nothing_real(tmp_path, features, message):
    path = tmp_path / "w.yaml"
    path.write_text(WORKFLOW.format(features=features))
    result = run_cli("validate", str(path))
    assert result.code == 1
    problems = [line for line in (result.out + result.err).splitlines() if "analyzers.ml_predictor.features" in line]
    assert len(problems) == 1 and message in problems[0] and "known: " in problems[0] and "code_change_size" in problems[0]


def test_validate_says_the_model_is_trained_on_exactly_the_features(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text(WORKFLOW.format(features="    features: [code_change_size, deployment_hour, current_load]"))
    result = run_cli("validate", str(path), "--json")
    assert result.code == 0, result.err
    note = next(n["message"] for n in result.json()["notes"] if n["path"].startswith("analyzers.ml_predictor"))
    assert "the model is trained on exactly these features: code_change_size = change_size" in note
    path.write_text(WORKFLOW.format(features=""))
    note = next(n["message"] for n in run_cli("validate", str(path), "--json").json()["notes"]
                if n["path"].startswith("analyzers.ml_predictor"))
    assert "no features listed: the model is given every learning feature" in note
