"""steps.judge"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from afdp import __version__
from afdp.evidence.names import branch_ref
from afdp.workflow.catalog import StepKind
from afdp.workflow.model import (
    Analyze,
    Decide,
    Gate,
    Step,
)

if TYPE_CHECKING:
    pass
from afdp.pipeline.runner.outputs import plain_outputs
from afdp.pipeline.runner.state import RunState, StepResult, _json_safe


def _analysis_source(run: RunState, step: Step, name: str | None) -> str | None:
    if name:
        return name
    earlier = [s.name for s in run.workflow.steps[: step.index] if s.kind is StepKind.ANALYZE]
    return earlier[-1] if earlier else None


#: The action status of a decision recorded by ``afdp import``: decided, not carried out.
NOT_PERFORMED = "not_performed"


def handle_analyze(run: RunState, step: Step, values: dict[str, Any]) -> StepResult:
    from afdp.pipeline.analysis import analyze

    params = step.params
    assert isinstance(params, Analyze)
    if params.services:
        from afdp.pipeline.runner.steps.services import analyze_services

        return analyze_services(run, step, values)
    if params.groups is not None:
        # A/B: control against treatment, both from the impact capture's window.
        control, treatment = params.groups
        window = run.series.get(params.impact, {})
        baseline = {m: window[f"{m}@{control}"] for m in params.metrics if f"{m}@{control}" in window}
        impact = {m: window[f"{m}@{treatment}"] for m in params.metrics if f"{m}@{treatment}" in window}
    else:
        baseline = {m: v for m, v in run.series.get(params.baseline, {}).items() if m in params.metrics}
        impact = {m: v for m, v in run.series.get(params.impact, {}).items() if m in params.metrics}
    analysis = analyze(params, run.workflow, baseline, impact, context=run.workflow.unjudged_context())
    document = analysis.to_json()
    outputs = plain_outputs(run.workflow, step, analysis.values())
    degraded = [m for m in params.metrics if isinstance(outputs.get(m), Mapping) and outputs[m].get("degraded")]
    inconclusive = list((document.get("summary") or {}).get("inconclusive") or document.get("inconclusive") or [])
    undecided = [x for x in inconclusive if x.startswith("analyzers.")]
    inconclusive = [x for x in inconclusive if x not in undecided]
    summary = analysis_summary(params.metrics, degraded, inconclusive)
    verdicts = [
        f"{a['name']}: {a['verdict']}" for a in document.get("analyzers", ()) if a.get("degraded")
    ]
    if verdicts:
        summary += f"; analyzer verdict {', '.join(verdicts)}"
    if undecided:
        summary += f"; undecided: {', '.join(undecided)}"
    if params.groups is not None:
        document = {**document, "pairing": {"control": params.groups[0], "treatment": params.groups[1], "window": params.impact}}
        summary = f"{params.groups[1]} vs {params.groups[0]}: {summary}"
    # The code version that computed it: 'afdp replay' says so when it differs from its own.
    return StepResult("ok", {"outputs": outputs, "analysis": document, "analysis_version": __version__}, summary)


def analysis_summary(metrics: Sequence[str], degraded: Sequence[str], inconclusive: Sequence[str]) -> str:
    """Return the one-line summary of an analysis, missing data first: "no degradation"
    must never hide that most metrics could not be compared.
    """
    # "could not be compared", not "had no data": a metric with samples may still be
    # inconclusive (too few independent samples, a zero baseline); the analysis record
    # gives each metric's reasons.
    total = len(metrics)
    missing = f"{len(inconclusive)} of {total} metric(s) could not be compared ({', '.join(inconclusive)})"
    if inconclusive and len(inconclusive) == total:
        return f"inconclusive: no metric could be compared ({', '.join(inconclusive)})"
    if degraded:
        text = f"degraded: {', '.join(degraded)}"
        return text + (f"; inconclusive: {missing}" if inconclusive else "")
    if inconclusive:
        return f"inconclusive: {missing}; no degradation in the rest"
    return "no degradation detected"


def _decision_values(run: RunState, step: Step, values: dict[str, Any], analysis: str | None) -> dict[str, Any]:
    merged = dict(values)
    source = _analysis_source(run, step, analysis)
    if source and source in run.outputs:
        merged.update(run.outputs[source])
    for earlier in run.workflow.steps[: step.index]:
        # services: the cross-service figures over that analysis (cascade_detected...).
        if (
            earlier.kind is StepKind.SERVICES
            and earlier.name in run.outputs
            and getattr(earlier.params, "analysis", None) == source
        ):
            merged.update(run.outputs[earlier.name])
    return merged


def _payload(run: RunState, decision: Mapping[str, Any], analysis: str | None) -> dict[str, Any]:
    request = run.request
    analysis_doc = run.analyses.get(analysis) if analysis else None
    if analysis_doc is None and run.analyses:
        analysis_doc = next(reversed(run.analyses.values()))
    return _json_safe(
        {
            "service": request.service,
            "deployment": request.deployment,
            "branch": branch_ref(request.service, request.deployment),
            "workflow": {"name": run.workflow.name, "sha256": run.workflow.digest},
            "commit": request.info.commit,
            "version": request.info.version,
            "decision": dict(decision),
            "severity": decision.get("severity"),
            "summary": (analysis_doc or {}).get("summary"),
        }
    )


def _act(
    run: RunState,
    outcome: Any,
    values: dict[str, Any],
    analysis: str | None,
    *,
    decision: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    from afdp.pipeline.actions import perform_action

    decision = decision if decision is not None else outcome.to_json()
    spec = run.workflow.action(outcome.action) if outcome.action else None
    if run.request.imported is not None:
        # afdp import judges a past deployment: the decision is evidence, but acting
        # on it now (rolling back today's version, paging today) would be wrong.
        return {
            "action": outcome.action,
            "status": NOT_PERFORMED,
            "kind": None,
            "target": None,
            "detail": "imported from history: the decision is recorded, its action is not carried out",
            "exit_code": None,
            "http_status": None,
            "output": None,
            "duration_seconds": None,
            "signed": False,
        }
    result = perform_action(spec, outcome, values=values, env=run.env, payload=_payload(run, decision, analysis))
    return dict(result.to_json())


def _named_quantities(run: RunState, source: str | None, merged: dict[str, Any]) -> dict[str, Any]:
    """Add the named quantities (``latency_increase``...) of the analysis to ``merged``
    (a metric of the same name wins) and return their evidence."""
    from afdp.workflow.quantities import quantity_values

    document = run.analyses.get(source) if source else None
    if not document or document.get("services"):
        return {}  # per service (services:): no one metric stands for the deployment
    found, evidence = quantity_values(document)
    for name, value in found.items():
        merged.setdefault(name, value)
    return {name: item for name, item in evidence.items() if merged.get(name) is found[name]}


def _notify(
    run: RunState, outcome: Any, decision: dict[str, Any], values: dict[str, Any], source: str | None
) -> list[dict[str, Any]]:
    """Send the decision to the channels the matched decision's ``notify:`` names
    (none for an imported past deployment: nobody is paged about the past)."""
    if not outcome.notify or run.request.imported is not None:
        return []
    from afdp.pipeline.notify import notify

    results = notify(
        run.workflow,
        outcome.notify,
        decision,
        values=values,
        env=run.env,
        payload=_payload(run, decision, source),
    )
    return [r.to_json() for r in results]


def handle_decide(run: RunState, step: Step, values: dict[str, Any]) -> StepResult:
    from afdp.pipeline.decide import decide

    params = step.params
    assert isinstance(params, Decide)
    source = _analysis_source(run, step, params.analysis)
    merged = _decision_values(run, step, values, source)
    quantities = _named_quantities(run, source, merged)
    failed = tuple(
        (r.name, r.error or r.summary) for r in run.reports if r.status == "failed"
    )
    outcome = decide(run.workflow, params, merged, failed_steps=failed)
    decision = outcome.to_json()
    if quantities:
        decision["quantities"] = quantities
    action = _act(run, outcome, merged, source)
    notifications = _notify(run, outcome, decision, merged, source)
    outputs = {
        "decision": decision.get("decision"),
        "action": decision.get("action"),
        "label": decision.get("label"),
        "success_criteria_met": decision.get("success_criteria_met"),
    }
    summary = f"{decision.get('action')}" + (f" ({decision.get('decision')})" if decision.get("decision") else "")
    summary += f"; {action_text(decision.get('action'), action)}"
    result: dict[str, Any] = {"outputs": outputs, "decision": decision, "action": action}
    if notifications:
        decision["notifications"] = notifications  # evidence in the decision's record
        sent = [f"{n['channel']} {n['status']}" for n in notifications]
        summary += "; notified " + ", ".join(sent)
    if action.get("status") == "failed":
        return StepResult("failed", result, summary, error=f"{decision.get('action')} action failed: {action.get('detail')}")
    return StepResult("ok", result, summary)


def action_text(name: Any, action: Mapping[str, Any] | None) -> str:
    """Return one line saying what happened to the decided action."""
    action = action or {}
    status = action.get("status")
    if status == "not_configured" or not status:
        return f"no action configured for {name}"
    kind = f" ({action['kind']})" if action.get("kind") else ""
    detail = f": {action['detail']}" if action.get("detail") else ""
    return f"{name} action{kind} {status}{detail}"


def handle_gate(run: RunState, step: Step, values: dict[str, Any]) -> StepResult:
    from afdp.pipeline.decide import evaluate_gate

    params = step.params
    assert isinstance(params, Gate)
    source = _analysis_source(run, step, params.analysis)
    merged = _decision_values(run, step, values, source)
    outcome = evaluate_gate(run.workflow, params, merged)
    gate = outcome.to_json()
    result: dict[str, Any] = {"outputs": outcome.values(), "gate": gate, "stop": outcome.stop}
    if not outcome.stop:
        return StepResult("ok", result, f"gate not triggered ({params.condition})")
    decision = {
        "decision": step.name,
        "action": outcome.action,
        "label": outcome.label,
        "success_criteria_met": None,
        "reason": (
            f"gate {step.name}: {params.condition} holds"
            if outcome.triggered
            else f"gate {step.name}: {params.condition} could not be evaluated ({outcome.error}); stopping"
        ),
    }
    action = _act(run, outcome, merged, source, decision=decision)
    result.update(decision=decision, action=action)
    what = "triggered" if outcome.triggered else "inconclusive"
    summary = f"gate {what}: {outcome.action}, workflow stopped; {action_text(outcome.action, action)}"
    if action.get("status") == "failed":
        return StepResult("failed", result, summary, error=f"{outcome.action} action failed: {action.get('detail')}")
    return StepResult("ok", result, summary)
