"""Training records: features, impacts, decision and label, citing evidence digests."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from afdp.errors import SchemaError
from afdp.evidence.canonical import canonical_bytes
from afdp.evidence.schemas import validate
from afdp.pipeline.analysis import analyze
from afdp.pipeline.decide import decide
from afdp.pipeline.training import build_training_record
from afdp.workflow.compiler import compile_document
from afdp.workflow.loader import load
from afdp.workflow.model import Analyze, Decide

EXAMPLE = Path(__file__).resolve().parents[1] / "afdp" / "workflow" / "examples"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


CITED = [
    {"step": "capture_baseline", "sequence": 2, "sha256": digest("a")},
    {"step": "analyze_differences", "sequence": 7, "sha256": digest("b")},
    {"step": "decisions", "sequence": 8, "sha256": digest("c")},
]


def api_run(*, regress: bool) -> tuple[dict, dict]:
    workflow = compile_document(load(EXAMPLE / "api_deployment_impact.yaml"))
    params = workflow.step("analyze_differences").params
    decide_params = workflow.step("decisions").params
    assert isinstance(params, Analyze) and isinstance(decide_params, Decide)
    r = np.random.default_rng(8)
    level = {
        "response_time_p50": 0.05,
        "response_time_p99": 0.2,
        "active_users": 1000.0,
        "error_rate": 0.01,
        "revenue_per_hour": 50_000.0,
    }
    baseline = {m: r.normal(v, v * 0.02, 100) for m, v in level.items()}
    impact = {m: r.normal(v, v * 0.02, 100) for m, v in level.items()}
    if regress:
        impact["response_time_p99"] = r.normal(0.25, 0.004, 100)
    result = analyze(params, workflow, baseline, impact)
    outcome = decide(workflow, decide_params, {**workflow.values(), **result.values()})
    return result.to_json(), outcome.to_json()


def deployment(**extra: object) -> dict:
    base = {
        "service": "api",
        "id": "d-42",
        "environment": "production",
        "commit": "0123456789abcdef0123456789abcdef01234567",
        "version": "v2",
        "deployment_size": 420,
        "changed_files": ["a.py", "b.py", "c.py"],
        "deployed_at": "2026-11-25T23:30:00-02:00",  # Wednesday 23:30 there, Thursday 01:30 UTC
        "deployer": "alice",
    }
    base.update(extra)
    return base


def test_record_of_a_regressed_deployment() -> None:
    analysis, decision = api_run(regress=True)
    record = build_training_record(
        deployment=deployment(),
        analysis=analysis,
        decision=decision,
        cited=CITED,
        action={"status": "ok", "kind": "webhook", "target": "https://x", "detail": "ok"},
    )
    validate("training-record.v1", record)
    canonical_bytes(record)
    features = record["features"]
    assert features["service"] == "api" and features["environment"] == "production"
    assert features["change_size"] == 420 and features["changed_files_count"] == 3
    assert features["hour_utc"] == 1 and features["weekday_utc"] == 3
    assert features["weekday_name"] == "thursday"
    assert features["deployed_at"] == "2026-11-26T01:30:00Z"
    assert record["decision"]["action"] == "alert" and record["label"] == "degraded"
    assert record["action"] == {"status": "ok", "kind": "webhook"}
    p99 = record["impacts"]["response_time_p99"]
    assert p99["degraded"] is True and p99["unit"] == "s" and 0.04 < p99["increase"] < 0.06
    assert p99["effect_size_name"] == "cliffs_delta" and p99["effect_size"] > 0.5
    assert record["analysis_summary"]["any_degradation"] is True
    assert record["cited"] == CITED and record["missing"] == []
    assert "alice" not in str(record)  # the deployer is not a feature


def test_record_of_a_healthy_deployment_is_labelled_safe() -> None:
    analysis, decision = api_run(regress=False)
    record = build_training_record(
        deployment=deployment(), analysis=analysis, decision=decision, cited=CITED
    )
    assert record["label"] == "safe_deployment" and record["action"] is None


def test_missing_parts_are_named_not_invented() -> None:
    record = build_training_record(
        deployment={"service": "api", "deployed_at": "2026-11-25T10:00:00"},  # no zone
        analysis=None,
        decision=None,
        cited=[],
    )
    assert record["label"] is None and record["impacts"] == {}
    assert record["features"]["hour_utc"] is None
    assert set(record["missing"]) >= {
        "analysis",
        "decision",
        "label",
        "features.deployed_at",
        "features.change_size",
        "features.changed_files_count",
    }


def test_label_override_and_metadata_spellings() -> None:
    record = build_training_record(
        deployment={
            "service": "api",
            "git_commit": "abc",
            "service_version": "1.2.3",
            "changed_files": 7,
            "deployment_size": "15",
            "deployed_at": datetime(2026, 11, 23, 9, 5, tzinfo=timezone(timedelta(hours=1))),
        },
        analysis=None,
        decision={
            "decision": None,
            "action": "alert",
            "label": "degraded",
            "success_criteria_met": False,
        },
        cited=[],
        label="harmful_feature",
    )
    assert record["label"] == "harmful_feature"
    assert record["features"]["commit"] == "abc" and record["features"]["version"] == "1.2.3"
    assert (
        record["features"]["changed_files_count"] == 7 and record["features"]["change_size"] == 15
    )
    assert record["features"]["hour_utc"] == 8 and record["features"]["weekday_name"] == "monday"


@pytest.mark.parametrize(
    ("deploy", "cited"),
    [
        ({"environment": "prod"}, []),  # no service
        ({"service": "api"}, [{"step": "x", "sequence": 1, "sha256": "not-a-digest"}]),
        ({"service": "api"}, [{"step": "x", "sequence": -1, "sha256": "0" * 64}]),
    ],
)
def test_invalid_records_are_refused(deploy: dict, cited: list) -> None:
    with pytest.raises(SchemaError, match="training record"):
        build_training_record(deployment=deploy, analysis=None, decision=None, cited=cited)


def test_a_gate_decision_has_no_success_criteria() -> None:
    gate_decision = {
        "decision": "canary_gate",
        "action": "alert",
        "label": "inconclusive",
        "success_criteria_met": None,
        "reason": "gate canary_gate: any_degradation could not be evaluated; stopping",
    }
    record = build_training_record(
        deployment=deployment(), analysis=None, decision=gate_decision, cited=CITED
    )
    assert record["decision"]["success_criteria_met"] is None
    assert record["label"] == "inconclusive"
