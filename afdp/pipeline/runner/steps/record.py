"""steps.record"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from afdp.evidence import records as rec
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
    return StepResult(
        "ok",
        {"outputs": {"label": label}, "record_type": params.record, "record": record},
        f"{params.record} record, label {label}, citing {len(cited)} record(s)",
    )
