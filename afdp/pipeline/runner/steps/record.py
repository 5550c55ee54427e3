"""steps.record"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from afdp.evidence import records as rec
from afdp.workflow.catalog import StepKind
from afdp.workflow.model import (
    GenerateRecord,
    Step,
)

if TYPE_CHECKING:
    pass
from afdp.pipeline.runner.state import RunState, StepResult


def handle_record(run: RunState, step: Step, values: dict[str, Any]) -> StepResult:
    from afdp.pipeline.training import build_training_record

    params = step.params
    assert isinstance(params, GenerateRecord)
    cited = [
        {"step": r.step, "sequence": r.sequence, "sha256": r.digest}
        for r in sorted(run.records.values(), key=lambda r: r.sequence)
        if r.status != "skipped"
    ]
    analysis = next(reversed(run.analyses.values())) if run.analyses else None
    decision = dict(run.decision) if run.decision else None
    deployment = {
        "service": run.request.service,
        "deployment": run.request.deployment,
        **{k: v for k, v in run.request.info.to_json().items() if v not in (None, [])},
        "deployed_at": rec.format_time(run.deployed_at) if run.deployed_at else None,
    }
    record = build_training_record(
        deployment=deployment,
        analysis=analysis,
        decision=decision,
        cited=cited,
        action=run.action,
        label=params.training_label,
        imported=run.request.imported is not None,
    )
    label = record.get("label")
    if label is None and decision:
        label = decision.get("label")
    result: dict[str, Any] = {"outputs": {"label": label}, "record_type": params.record, "record": record}
    summary = f"{params.record} record, label {label}, citing {len(cited)} record(s)"
    if params.record == "ab_test":
        result["ab_test"] = ab_test_result(run)
        summary += f"; {result['ab_test']['verdict']}"
    if params.record == "lessons_learned":
        result["findings"] = lessons_findings(run)
    return StepResult("ok", result, summary)


def ab_test_result(run: RunState) -> dict[str, Any]:
    """Return the A/B test's result: who was in which group by what rule, what flag
    changed, control against treatment per metric, the business impact and the verdict."""
    recorded = {name: r for name, r in run.records.items() if r.status == "ok"}

    def results(kind: StepKind) -> list[tuple[str, dict[str, Any]]]:
        return [
            (s.name, recorded[s.name].result)
            for s in run.workflow.steps
            if s.kind is kind and s.name in recorded and isinstance(recorded[s.name].result, dict)
        ]

    segments = {name: r.get("assignment") for name, r in results(StepKind.SEGMENT)}
    changes = {name: r.get("change") for name, r in results(StepKind.FLAG)}
    comparisons = [
        (name, r["analysis"]) for name, r in results(StepKind.ANALYZE)
        if isinstance(r.get("analysis"), dict) and r["analysis"].get("pairing")
    ]  # fmt: skip
    business = {name: {k: v for k, v in r.items() if k != "started"} for name, r in results(StepKind.BUSINESS)}
    metrics: dict[str, Any] = {}
    pairing: dict[str, Any] = {}
    if comparisons:
        name, document = comparisons[-1]
        pairing = {"step": name, **document["pairing"]}
        for metric, value in (document.get("metrics") or {}).items():
            metrics[metric] = {
                key: value.get(key)
                for key in ("baseline", "impact", "change", "p_value", "significant", "degraded")
            }
    worse = sorted(m for m, v in metrics.items() if v.get("degraded"))
    if not comparisons:
        verdict = "no control/treatment comparison"
    elif worse:
        verdict = f"treatment worse than control: {', '.join(worse)}"
    elif any(v.get("degraded") is None for v in metrics.values()):
        verdict = "inconclusive: some metrics could not be compared"
    else:
        verdict = "treatment not worse than control"
    return {
        "segments": segments,
        "flag_changes": changes,
        "comparison": pairing,
        "metrics": metrics,
        "business_impact": business,
        "verdict": verdict,
        "decision": dict(run.decision) if run.decision else None,
    }


def lessons_findings(run: RunState) -> dict[str, Any]:
    """What a lessons-learned record says about this run: what alerted (failed steps and
    their reasons), what changed (tables, degraded measures, locks, blocked queries,
    replication), and how long things took (the window from the first database snapshot
    to the first post-migration comparison, the longest lock)."""
    alerted = [
        {"step": r.name, "error": r.error or r.summary}
        for r in run.reports
        if r.status == "failed"
    ]
    changed: dict[str, Any] = {}
    durations: dict[str, Any] = {}
    times: list[tuple[str, str]] = []
    for name, recorded in sorted(run.records.items(), key=lambda item: item[1].sequence):
        result = recorded.result if isinstance(recorded.result, dict) else {}
        found = result.get("outputs")
        outputs: dict[str, Any] = found if isinstance(found, dict) else {}
        step = run.workflow.step(name) if name in {s.name for s in run.workflow.steps} else None
        kind = step.type if step is not None else name
        if outputs.get("changed_tables"):
            changed.setdefault("tables", []).extend(outputs["changed_tables"])
        if outputs.get("degraded_measures"):
            changed.setdefault("degraded_measures", {})[name] = outputs["degraded_measures"]
        if "longest_lock_wait" in outputs:
            durations["longest_lock_seconds"] = max(
                float(outputs["longest_lock_wait"] or 0), durations.get("longest_lock_seconds", 0.0)
            )
            changed["lock_alert"] = bool(outputs.get("alert")) or changed.get("lock_alert", False)
        if kind == "track_blocked_queries" and outputs.get("value") is not None:
            changed["blocked_queries"] = outputs["value"]
        if kind == "measure_replication_lag" and outputs.get("rows"):
            row = outputs["rows"][0]
            changed["replication"] = {
                "lag_seconds": row.get("replication_lag_seconds"),
                "reading": row.get("replication"),
            }
        snapshot = result.get("snapshot")
        if isinstance(snapshot, dict) and isinstance(snapshot.get("taken_at"), str):
            times.append((name, snapshot["taken_at"]))
        elif isinstance(result.get("taken_at"), str):
            times.append((name, result["taken_at"]))
    if len(times) >= 2:
        first, last = rec.parse_time(times[0][1]), rec.parse_time(times[-1][1])
        durations["window_seconds"] = (last - first).total_seconds()
        durations["window"] = {"from": times[0][0], "to": times[-1][0]}
    return {"alerted": alerted, "changed": changed, "durations": durations}
