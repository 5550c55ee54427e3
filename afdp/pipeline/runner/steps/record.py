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
    )
    label = record.get("label")
    if label is None and decision:
        label = decision.get("label")
    result: dict[str, Any] = {"outputs": {"label": label}, "record_type": params.record, "record": record}
    summary = f"{params.record} record, label {label}, citing {len(cited)} record(s)"
    if params.record == "ab_test":
        result["ab_test"] = ab_test_result(run)
        summary += f"; {result['ab_test']['verdict']}"
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
