"""The ML training record: one row per deployment, features -> measured impact -> label.

:func:`build_training_record` turns what a run recorded (the deployment and its
metadata, the analysis, the decision and the action's outcome) into one flat-enough
document for a dataset, validated against ``evidence-schema/training-record.v1``.
It cites the digests of the evidence records it was built from, so every row of a
dataset can be traced back to signed, time-stamped evidence.

Features (``features``), all derived from the deployment, none from the outcome:

- ``service``, ``environment``, ``version`` and ``commit``;
- ``change_size``: lines changed (``deployment_size`` from the deployment metadata);
- ``changed_files_count``: the number of ``changed_files`` (a list or a count);
- ``hour_utc`` (0-23) and ``weekday_utc`` (0 = Monday ... 6 = Sunday, and
  ``weekday_name``) of ``deployed_at``, converted to UTC.

The deployer's identity is deliberately *not* a feature: a dataset that learns which
people cause incidents is not what this record is for (it stays in the evidence).

Anything unknown is null and named in ``missing``, so a dataset can filter or impute
rows explicitly instead of learning from silent defaults.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from afdp.evidence.canonical import json_safe
from afdp.evidence.schemas import validate

SCHEMA = "training-record.v1"
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_IMPACT_FIELDS = (
    "status",
    "baseline",
    "impact",
    "increase",
    "change",
    "factor",
    "p_value",
    "significant",
    "exceeded",
    "degraded",
)


def build_training_record(
    *,
    deployment: Mapping[str, Any],
    analysis: Mapping[str, Any] | None,
    decision: Mapping[str, Any] | None,
    cited: Sequence[Mapping[str, Any]],
    action: Mapping[str, Any] | None = None,
    label: str | None = None,
    imported: bool = False,
) -> dict[str, Any]:
    """Return the training record of one deployment.

    ``deployment``: the deployment values and its captured metadata, merged:
    ``service`` (required), ``id``, ``environment``, ``version`` (or
    ``service_version``), ``commit`` (or ``git_commit``), ``deployed_at`` (RFC 3339
    text or a datetime), ``deployment_size``, ``changed_files``. ``analysis``: an
    analysis document (``AnalysisResult.to_json()``); ``decision``: a decision
    document (``DecisionOutcome.to_json()``); ``action``: an ``ActionResult.to_json()``;
    ``cited``: ``[{step, sequence, sha256}]`` of the records used; ``label`` overrides
    the decision's training label (a ``generate_training_record`` step's own label).
    ``imported``: the deployment was brought in from history by ``afdp import``; the
    record then says ``"imported": true`` (absent on live-captured records), so a
    dataset can tell and filter the two.

    Returns:
        The record, canonical-JSON-safe.

    Raises:
        SchemaError: the record does not match ``training-record.v1`` (no service, a
            malformed digest in ``cited``, ...).
    """
    missing: list[str] = []
    deployed_at = _utc(deployment.get("deployed_at"))
    version = _text(deployment.get("version") or deployment.get("service_version"))
    commit = _text(deployment.get("commit") or deployment.get("git_commit"))
    change_size = _count(deployment.get("deployment_size"))
    changed_files = _files(deployment.get("changed_files"))
    features = {
        "service": _text(deployment.get("service")),
        "environment": _text(deployment.get("environment")),
        "version": version,
        "commit": commit,
        "change_size": change_size,
        "changed_files_count": changed_files,
        "deployed_at": deployed_at.isoformat().replace("+00:00", "Z") if deployed_at else None,
        "hour_utc": deployed_at.hour if deployed_at else None,
        "weekday_utc": deployed_at.weekday() if deployed_at else None,
        "weekday_name": _WEEKDAYS[deployed_at.weekday()] if deployed_at else None,
    }
    for name in ("environment", "version", "commit", "change_size", "changed_files_count"):
        if features[name] is None:
            missing.append(f"features.{name}")
    if deployed_at is None:
        missing.append("features.deployed_at")

    impacts: dict[str, Any] = {}
    summary: dict[str, Any] | None = None
    if analysis is None:
        missing.append("analysis")
    else:
        for name, item in (analysis.get("metrics") or {}).items():
            impacts[name] = _impact(item)
        raw_summary = analysis.get("summary") or {}
        summary = {
            key: raw_summary.get(key)
            for key in (
                "any_degradation",
                "significant_degradation",
                "all_metrics_within_normal",
                "inconclusive",
            )
        }
        summary["inconclusive"] = list(summary["inconclusive"] or [])

    decided: dict[str, Any] | None = None
    if decision is None:
        missing.append("decision")
    else:
        decided = {
            "decision": decision.get("decision"),
            "action": decision.get("action"),
            "label": decision.get("label"),
            "success_criteria_met": decision.get("success_criteria_met"),
        }
    final_label = label or (decided or {}).get("label")
    if final_label is None:
        missing.append("label")
    carried = None
    if action is not None:
        carried = {"status": action.get("status"), "kind": action.get("kind")}

    record = json_safe(
        {
            "schema": SCHEMA,
            "deployment": {
                "service": features["service"],
                "id": _text(deployment.get("id") or deployment.get("deployment")),
                "environment": features["environment"],
                "version": version,
                "commit": commit,
            },
            "features": features,
            "impacts": impacts,
            "analysis_summary": summary,
            "decision": decided,
            "action": carried,
            "label": final_label,
            "missing": missing,
            "cited": [
                {"step": c.get("step"), "sequence": c.get("sequence"), "sha256": c.get("sha256")}
                for c in cited
            ],
        }
    )
    if imported:
        record["imported"] = True
    validate(SCHEMA, record, what="training record")
    return record


def _impact(item: Mapping[str, Any]) -> dict[str, Any]:
    out = {key: item.get(key) for key in _IMPACT_FIELDS}
    unit = item.get("unit")
    out["unit"] = unit.get("symbol") if isinstance(unit, Mapping) else unit
    out["better"] = item.get("better")
    test = item.get("test") or {}
    effect = test.get("effect_size") or {}
    out["effect_size"] = effect.get("value")
    out["effect_size_name"] = effect.get("name")
    return out


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _count(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or number < 0:
        return None
    return int(number)


def _files(value: Any) -> int | None:
    if isinstance(value, (list, tuple)):
        return len(value)
    if isinstance(value, str):
        return len([line for line in value.splitlines() if line.strip()])
    return _count(value)


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    if moment.tzinfo is None:
        return None  # a time without a zone cannot be placed in UTC honestly
    return moment.astimezone(UTC)


__all__ = ["SCHEMA", "build_training_record"]
