"""Similar deployments, conformal impact models and insights, on history rows built here.

The rows (tests/learn_rows.py) have the columns the history loader gives and a known
ground truth; that makes these unit tests of the learning code itself. Rows read from
real evidence, and models recorded as evidence, are tested against a real repository
and the real TSA below and end to end in test_learning_e2e.py.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import pytest
from learn_rows import make_row, rows, truth

from afdp.errors import NotFoundError, UsageError
from afdp.learn.features import Planned, money_lost_per_hour
from afdp.learn.insights import NOT_ENOUGH, learn_insights, render_html
from afdp.learn.model import (
    MIN_HISTORY,
    ModelUnusable,
    TrainingSet,
    refit,
    train,
)
from afdp.learn.prediction import predict_from_rows
from afdp.learn.similar import Planned as SimilarPlanned
from afdp.learn.similar import Scales, find_similar, row_for, terms

AFTERNOON_MIGRATION = Planned.of(change_size=800, changed_files=20, kinds=["migration"],
                                 at=datetime(2026, 12, 7, 14, tzinfo=UTC), environment="production")


def test_similar_finds_the_planted_pattern_and_says_why():
    history = rows(80)
    found = find_similar(history, AFTERNOON_MIGRATION, service="api", k=5, radius=1.5)
    assert len(found.neighbours) == 5
    best = found.neighbours[0]
    assert "kinds migration" in best.matched and any(m.startswith("hour ") for m in best.matched)
    assert all(n.record_digests for n in found.neighbours)
    assert found.neighbours == tuple(sorted(found.neighbours, key=lambda n: n.distance))
    # "happened N times before": exactly the rows within the radius, and how many degraded
    within = [n for n in found.within]
    assert found.pattern["times"] == len(within) > 0
    assert found.pattern["degraded"] == sum(1 for n in within if n.row["impact.latency.degraded"])
    assert f"happened {len(within)} time" in found.sentence()
    # the planted pattern: those deployments degraded much more often than the others
    rate_in = found.pattern["degraded"] / found.pattern["times"]
    rate_all = sum(r["impact.latency.degraded"] for r in history) / len(history)
    assert rate_in > rate_all + 0.3
    document = found.to_json()
    assert document["neighbours"][0]["record_digests"] and json.dumps(document)


def test_similar_distance_terms_are_cyclic_and_explained():
    scales = Scales()
    late = SimilarPlanned(hour_utc=23, weekday_utc=6)
    early = SimilarPlanned(hour_utc=0, weekday_utc=0)
    noon = SimilarPlanned(hour_utc=11, weekday_utc=3)
    assert terms(late, early, scales)["hour"] < 0.05 and terms(late, early, scales)["weekday"] < 0.2
    assert terms(late, noon, scales)["hour"] == pytest.approx(2.0)
    same = terms(AFTERNOON_MIGRATION, AFTERNOON_MIGRATION, scales)
    assert all(v == 0 for v in same.values())
    other = Planned.of(change_size=800, kinds=["frontend"], at=datetime(2026, 12, 7, 2, tzinfo=UTC), environment="staging")
    far = terms(AFTERNOON_MIGRATION, other, scales)
    assert far["kinds"] == 1.0 and far["environment"] == 1.0 and far["changed_files"] == 0.5  # unknown: half weight


def test_similar_bad_input_and_unknown_deployment():
    history = rows(10)
    with pytest.raises(UsageError):
        find_similar(history, AFTERNOON_MIGRATION, service="api", k=0)
    with pytest.raises(UsageError):
        find_similar(history, AFTERNOON_MIGRATION, service="api", radius=-1)
    with pytest.raises(NotFoundError):
        row_for(history, deployment="nope")
    assert row_for(history, commit=history[3]["commit"])["deployment"] == history[3]["deployment"]
    with pytest.raises(UsageError, match="several commits"):
        row_for(history, commit="0000")
    with pytest.raises(NotFoundError):
        row_for(history, commit="ffffffff")
    # the query's own row is never its own neighbour
    found = find_similar(history, Planned.from_row(history[2]), service="api", exclude=history[2]["deployment"])
    assert history[2]["deployment"] not in [n.deployment for n in found.neighbours]


def test_money_lost_per_hour_only_from_one_money_metric():
    row = rows(1)[0]
    assert money_lost_per_hour(row) == pytest.approx(-row["impact.revenue.increase"] * 3600)
    assert money_lost_per_hour({**row, "money_per_hour": None}) is None
    # two metrics that could be the money metric: unknown, never a guess
    twin = {**row, "impact.revenue2.baseline": row["impact.revenue.baseline"], "impact.revenue2.increase": 1.0}
    assert money_lost_per_hour(twin) is None


def test_intervals_cover_held_out_deployments_at_about_the_nominal_rate():
    history = rows(100, seed=2)
    training = TrainingSet.of(history, service="api", dataset_digest="0" * 64)
    model, document = train(training, confidence=0.9)
    rng = random.Random(99)
    fresh = [make_row(1000 + i, rng) for i in range(300)]
    predicted = model.predict([Planned.from_row(r) for r in fresh])
    hits = [p["low"] <= r["impact.latency.increase"] <= p["high"]
            for p, r in zip(predicted["impact.latency.increase"], fresh, strict=True)]
    assert 0.82 <= sum(hits) / len(hits) <= 0.98
    # the recorded cross-validated coverage says the same
    quality = document["coverage"]["impact.latency.increase"]
    assert quality["nominal"] == 0.9 and 0.8 <= quality["empirical"] <= 0.99 and quality["n"] == 100
    # the peak pattern is learned: afternoon predicted ~30 ms above the night
    night = Planned.of(change_size=800, changed_files=20, kinds=["migration"], at=datetime(2026, 12, 7, 3, tzinfo=UTC),
                       environment="production")
    both = model.predict([AFTERNOON_MIGRATION, night])["impact.latency.increase"]
    assert both[0]["point"] - both[1]["point"] == pytest.approx(0.030, abs=0.012)
    assert both[0]["low"] <= truth(800, 14, ["migration"]) <= both[0]["high"]
    money = model.predict([AFTERNOON_MIGRATION])["money_lost_per_hour"][0]
    assert money["low"] <= 7200 * truth(800, 14, ["migration"]) <= money["high"]


def test_training_is_deterministic_and_a_changed_row_is_refused():
    history = rows(40, seed=3)
    training = TrainingSet.of(history, service="api", dataset_digest="1" * 64)
    _, first = train(training, assess=False)
    _, again = train(training, assess=False)
    assert first["fingerprint"] == again["fingerprint"]
    document = json.loads(json.dumps(first))
    assert refit(document).fingerprint() == first["fingerprint"]["sha256"]
    document["training"]["y"]["impact.latency.increase"][5] += 0.01
    with pytest.raises(ModelUnusable, match="does not reproduce its fingerprint"):
        refit(document)
    with pytest.raises(ModelUnusable, match="format"):
        refit({**first, "format": "pickle"})


def test_not_enough_history_gives_the_reason_and_no_number():
    history = rows(MIN_HISTORY - 1)
    prediction = predict_from_rows(history, AFTERNOON_MIGRATION, service="api", dataset_digest="2" * 64)
    document = prediction.to_json()
    assert document["status"] == "not_enough_history"
    assert document["reason"] == f"not enough history: {MIN_HISTORY - 1} deployments, needs {MIN_HISTORY}"
    assert document["impact"] == {} and document["money_lost_per_hour"] is None
    enough = predict_from_rows(rows(MIN_HISTORY), AFTERNOON_MIGRATION, service="api", dataset_digest="2" * 64)
    assert enough.status == "ok" and enough.impact["latency"]["low"] <= enough.impact["latency"]["high"]
    assert enough.model_record is None and "not recorded" in str(enough.model_note)


def test_insights_find_the_planted_patterns_with_support_and_strength():
    history = rows(80)
    found = learn_insights(history, service="api", dataset_digest="3" * 64)
    by = {(i.dimension, i.group, i.outcome): i for i in found.insights}
    afternoon = by[("part_of_day", "afternoon", "impact.latency.increase")]
    assert afternoon.notable and afternoon.support + afternoon.rest == 80
    assert afternoon.interval[0] > 0.015 and afternoon.p_value < 0.001
    migration = by[("kind", "migration", "money_lost_per_hour")]
    assert migration.notable and migration.difference == pytest.approx(7200 * 0.02, rel=0.35)
    peak = next(i for i in found.insights if i.dimension == "peak_load" and i.outcome == "degraded")
    assert peak.notable and "impact.requests.baseline" in peak.group
    night = by[("part_of_day", "night", "impact.latency.increase")]
    assert not (night.notable and night.difference > 0)
    assert found.correlations["time_of_day_to_impact"]["groups"]["afternoon"]["impact_share"] > 0.8
    assert found.correlations["migration_size_to_duration"]["status"] == NOT_ENOUGH
    # a group with fewer than 3 deployments gets no number
    few = learn_insights(history[:4])
    assert all(i.status == NOT_ENOUGH or (i.support >= 3 and i.rest >= 3) for i in few.insights)
    assert any(i.status == NOT_ENOUGH and i.difference is None for i in few.insights)
    page = render_html(found)
    assert page.count("<svg") == 3 and "afternoon" in page and "3333333333" in page
