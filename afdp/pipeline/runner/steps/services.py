"""Several services watched together (``services:`` + ``correlate:``).

- :func:`analyze_services`: an analysis step of a cross-service workflow compares each
  listed service's impact with its own baseline (:func:`afdp.pipeline.analysis.analyze`,
  once per service, over the ``<metric>@<service>`` series the capture recorded). Its
  record holds one ``analysis.v1`` document whose ``metrics`` are keyed
  ``<metric>@<service>`` (so reports show every service's rows), whose ``summary`` is
  over all services, and whose ``services`` hold each service's own summary and
  analyzers. Conditions read ``<service>.<metric>.<field>``, ``<service>.degraded``,
  the summary over all services, ``any_service_degraded`` and ``degraded_services``.
- :func:`handle_services` (kind ``services``, the step ``correlate_services``): the
  figures of ``correlate:`` over that analysis and the impact window's timed series
  (:mod:`afdp.pipeline.analysis.cascade`).
"""

from __future__ import annotations

from typing import Any

from afdp.pipeline.analysis.verdicts import _any3
from afdp.pipeline.runner.outputs import plain_outputs
from afdp.pipeline.runner.state import RunState, StepResult
from afdp.workflow.model import Analyze, CrossService, Step


def analyze_services(run: RunState, step: Step, values: dict[str, Any]) -> StepResult:
    """Analyze each service of ``step`` (an analysis of per-service captures).

    Returns:
        The step's result: ``outputs`` (per service, and over all) and ``analysis``.
    """
    from afdp.pipeline.analysis import analyze

    del values
    params = step.params
    assert isinstance(params, Analyze)
    workflow = run.workflow
    context = workflow.unjudged_context()
    baseline = run.series.get(params.baseline, {})
    impact = run.series.get(params.impact, {})
    documents: dict[str, dict[str, Any]] = {}
    outputs: dict[str, Any] = {}
    for service in params.services:
        before = {m: baseline[f"{m}@{service}"] for m in params.metrics if f"{m}@{service}" in baseline}
        after = {m: impact[f"{m}@{service}"] for m in params.metrics if f"{m}@{service}" in impact}
        result = analyze(params, workflow, before, after, context=context)
        documents[service] = result.to_json()
        own = plain_outputs(workflow, step, result.values())
        own["degraded"] = result.any_degradation
        outputs[service] = own
    summaries = {s: d["summary"] for s, d in documents.items()}
    degraded = [s for s in params.services if summaries[s]["any_degradation"] is True]
    summary = {
        "any_degradation": _any3(summaries[s]["any_degradation"] for s in params.services),
        "significant_degradation": None
        if params.method is None
        else _any3(summaries[s]["significant_degradation"] for s in params.services),
        "all_metrics_within_normal": all(summaries[s]["all_metrics_within_normal"] for s in params.services),
        "exceeded": [f"{m}@{s}" for s in params.services for m in summaries[s]["exceeded"]],
        "inconclusive": [f"{m}@{s}" for s in params.services for m in summaries[s]["inconclusive"]],
    }
    context_names = [f"{m}@{s}" for s in params.services for m in summaries[s].get("context", ())]
    if context_names:
        summary["context"] = context_names
    first = documents[params.services[0]]
    document = {
        "schema": first["schema"],
        "baseline_step": first["baseline_step"],
        "impact_step": first["impact_step"],
        "method": first["method"],
        "confidence": first["confidence"],
        "alpha": first["alpha"],
        "min_samples": first["min_samples"],
        "metrics": {
            f"{m}@{s}": item for s in params.services for m, item in documents[s]["metrics"].items()
        },
        "summary": summary,
        "services": {
            s: {"summary": d["summary"], **({"analyzers": d["analyzers"]} if d.get("analyzers") else {})}
            for s, d in documents.items()
        },
    }
    outputs.update(summary)
    outputs["any_service_degraded"] = summary["any_degradation"]
    outputs["degraded_services"] = degraded
    parts = []
    for service in params.services:
        bad = [m for m, item in documents[service]["metrics"].items() if item.get("degraded") is True]
        unknown = summaries[service]["inconclusive"]
        if bad:
            parts.append(f"{service} degraded ({', '.join(bad)})")
        elif unknown:
            parts.append(f"{service} inconclusive ({', '.join(unknown)})")
        else:
            parts.append(f"{service} ok")
    return StepResult("ok", {"outputs": outputs, "analysis": document}, "; ".join(parts))


def handle_services(run: RunState, step: Step, values: dict[str, Any]) -> StepResult:
    """Compute the ``correlate:`` figures over the per-service analysis.

    Returns:
        The step's result: ``outputs`` (``cascade_detected``, ``degraded_in_order``,
        ``first_degraded``, ``dependencies``, ``business_impact_combined``) and one
        entry per figure, with what it was computed from.
    """
    from afdp.pipeline.analysis.cascade import (
        business_impact_combined,
        cascade_failures,
        performance_dependencies,
    )

    del values
    params = step.params
    assert isinstance(params, CrossService)
    workflow = run.workflow
    analysis = run.analyses.get(params.analysis) or {}
    per_service = _per_service_documents(analysis, params.services)
    analyze_step = workflow.step(params.analysis).params
    assert isinstance(analyze_step, Analyze)
    values_by_key = run.series.get(params.impact, {})
    baseline_values = run.series.get(analyze_step.baseline, {})
    times_by_key = run.times.get(params.impact, {})
    series = {
        s: {
            m: list(zip(times_by_key.get(f"{m}@{s}", []), values_by_key.get(f"{m}@{s}", []), strict=False))
            for m in analyze_step.metrics
        }
        for s in params.services
    }
    result: dict[str, Any] = {
        "services": list(params.services),
        "analysis_step": params.analysis,
        "impact_step": params.impact,
    }
    outputs: dict[str, Any] = {}
    summary: list[str] = []
    if not analysis:
        reason = f"no analysis {params.analysis!r} was recorded: nothing to correlate"
        return StepResult("failed", {**result, "outputs": {}}, reason, error=reason)
    if "cascade_failures" in params.figures:
        cascade = cascade_failures(
            params.services,
            per_service,
            series,
            analyze_step.thresholds,
            baselines={
                s: {m: baseline_values.get(f"{m}@{s}", []) for m in analyze_step.metrics} for s in params.services
            },
            min_segment=params.min_segment,
        )
        result["cascade_failures"] = cascade
        outputs["cascade_detected"] = cascade["cascade_detected"]
        outputs["degraded_in_order"] = cascade["degraded_in_order"]
        outputs["first_degraded"] = cascade["first_degraded"]
        if cascade["order"]:
            summary.append(
                "degraded in order: "
                + " -> ".join(
                    f"{o['service']}" + (f" (+{o['lag_seconds']:g}s)" if o["lag_seconds"] else "")
                    for o in cascade["order"]
                )
            )
        else:
            summary.append("no service degraded")
        if cascade["cascade_detected"]:
            summary[-1] = "cascade: " + summary[-1]
    if "performance_dependencies" in params.figures:
        dependencies = performance_dependencies(
            params.services, analyze_step.metrics, series, minimum=params.min_samples
        )
        result["performance_dependencies"] = dependencies
        outputs["dependencies"] = {
            metric: {pair: entry["r"] if entry["status"] == "ok" else entry["status"] for pair, entry in pairs.items()}
            for metric, pairs in dependencies["metrics"].items()
        }
        computed = sum(1 for pairs in dependencies["metrics"].values() for e in pairs.values() if e["status"] == "ok")
        total = sum(len(pairs) for pairs in dependencies["metrics"].values())
        summary.append(f"{computed}/{total} pairwise correlation(s) computed")
    if "business_impact_combined" in params.figures:
        money = business_impact_combined(params.services, per_service)
        result["business_impact_combined"] = money
        outputs["business_impact_combined"] = {
            "loss_per_hour": money["loss_per_hour"],
            "currency": money["currency"],
            "currency_dimension": money["currency_dimension"],
            "complete": money["complete"],
            "missing": money["missing"],
        }
        summary.append(
            f"combined loss {money['loss_per_hour']:.6g} {money['currency']}/hour"
            if money["loss_per_hour"] is not None
            else "combined business impact unknown"
        )
    result["outputs"] = outputs
    return StepResult("ok", result, "; ".join(summary))


def _per_service_documents(analysis: dict[str, Any], services: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Split the combined analysis document back into one document per service."""
    out: dict[str, dict[str, Any]] = {}
    own = analysis.get("services") or {}
    for service in services:
        suffix = f"@{service}"
        metrics = {
            key[: -len(suffix)]: item
            for key, item in (analysis.get("metrics") or {}).items()
            if key.endswith(suffix)
        }
        out[service] = {**(own.get(service) or {}), "metrics": metrics}
    return out


__all__ = ["analyze_services", "handle_services"]
