"""steps.traffic: a rollout stage shifts its share of traffic through the workflow's
``traffic_split`` action (``shift_traffic``, the first step of each stage when the
workflow configures that action).

The action is carried out like a decided action (:func:`afdp.pipeline.actions.perform_action`):
a webhook gets an HMAC-signed POST (``X-AFDP-Signature``) whose ``outcome`` is
``{"action": "traffic_split", "stage", "traffic", "traffic_percent"}`` and whose
``payload`` names the deployment; a command runs without a shell. The answer is evidence.
A traffic shift that fails is a failed step: the stage then measures a split that was
never made, so the run's decision can no longer be ``mark_successful``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from afdp.evidence.names import branch_ref
from afdp.pipeline.runner.state import RunState, StepResult, _json_safe
from afdp.workflow.model import ShiftTraffic, Step


@dataclass(frozen=True)
class TrafficShift:
    """What the action is asked to do (the ``outcome`` of the webhook body)."""

    stage: str
    traffic: float
    action: str = "traffic_split"

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "stage": self.stage,
            "traffic": self.traffic,
            "traffic_percent": round(self.traffic * 100, 6),
        }


def handle_traffic(run: RunState, step: Step, values: dict[str, Any]) -> StepResult:
    from afdp.pipeline.actions import perform_action

    params = step.params
    assert isinstance(params, ShiftTraffic)
    request = run.request
    shift = TrafficShift(params.stage, params.traffic.base)
    spec = run.workflow.action("traffic_split")
    payload = _json_safe(
        {
            "service": request.service,
            "deployment": request.deployment,
            "branch": branch_ref(request.service, request.deployment),
            "workflow": {"name": run.workflow.name, "sha256": run.workflow.digest},
            "commit": request.info.commit,
            "version": request.info.version,
            "step": step.name,
        }
    )
    # (an outcome in all but name: an action, and to_json for the webhook body)
    action = perform_action(spec, cast(Any, shift), values=values, env=run.env, payload=payload).to_json()
    outputs = {"traffic": shift.traffic, "stage": shift.stage}
    result = {"outputs": outputs, "traffic": shift.to_json(), "action": action}
    text = f"stage {shift.stage}: {params.traffic} of traffic to the new version"
    if action.get("status") != "ok":
        return StepResult(
            "failed",
            result,
            f"{text}: traffic_split {action.get('status')}: {action.get('detail')}",
            error=f"traffic_split action {action.get('status')}: {action.get('detail')}",
        )
    return StepResult("ok", result, f"{text}: {action.get('detail')}")
