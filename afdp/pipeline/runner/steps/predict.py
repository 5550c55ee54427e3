"""steps.predict: the ``before_deployment:`` predictive steps, from verified history.

The run reads the history of its service from its own evidence repository, through the
verifier, with the trust policy given to the run (``afdp run --trust``, the same policy
the ``correlation:`` figures use): only past deployments whose branches verify count,
and the deployment being run is never part of its own history. Each step's record
cites the dataset digest and the record digests its numbers rest on. Without a trust
policy, or with too little history, the step is recorded as ``skipped`` with the reason
(``not enough history: N deployments, needs M``; with no row of the service, why, as
``afdp predict`` says it): never a made-up number.

- ``analyze_similar_past_deployments``: the nearest past deployments
  (:mod:`afdp.learn.similar`) and how often the pattern happened before; outputs
  ``similar``, ``pattern_count``, ``pattern_degraded`` (needs 1 past deployment).
- ``predict_likely_impact``: the conformal prediction (:mod:`afdp.learn.model`); the
  model is reused when a verified one of the same dataset is on ``afdp/models/<service>``,
  else trained and recorded there with the run's key and TSA; outputs per metric
  ``predicted.<metric>.increase|low|high`` (in the metric's unit) and
  ``predicted_revenue_loss_per_hour`` with ``_low``/``_high`` (in the currency per hour of
  the workflow's revenue metric), which decisions and gates can compare
  (``steps.predict_likely_impact.predicted_revenue_loss_per_hour_high > $1500_per_hour``).
  Needs :data:`afdp.learn.model.MIN_HISTORY` deployments.
- ``recommend_deployment_window``: the part of the day (UTC night 0-6, morning 6-12,
  afternoon 12-18, evening 18-24) whose past deployments degraded least (then lost least
  money), among parts with at least 3 deployments; outputs ``recommended_part_of_day``,
  ``recommended_hours_utc``, ``current_part_of_day``, ``in_recommended_window``; and
  ``recommended_weekday``, the weekday whose past deployments degraded least (among
  weekdays with at least 3; null when none has). Needs 10 deployments.
- ``suggest_rollback_threshold``: per metric, from the past deployments no metric of
  which degraded (benign), the ceil((n+1)(1 - a))-th smallest increase (a = 0.05;
  for metrics where higher is better, of the decreases): under exchangeability a new
  benign deployment exceeds it with probability at most a (the split-conformal bound),
  so a move beyond it is unlike any benign one. Outputs ``thresholds.<metric>`` (in the
  metric's unit). Needs 19 benign deployments.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from afdp.errors import AfdpError
from afdp.pipeline.runner.state import RunState, StepResult, _one_line
from afdp.workflow.catalog import PREDICTIONS
from afdp.workflow.model import Predict, Step

MIN_WINDOW = 10
MIN_PART = 3
ALPHA = 0.05
MIN_BENIGN = math.ceil(1 / ALPHA) - 1  # 19: the smallest n with ceil((n+1)(1-a)) <= n
NO_TRUST = (
    "needs a trained model / history: no trust policy was given (afdp run --trust), and past "
    "evidence is read only through the verifier; not run"
)
_PARTS = (("night", 0, 6), ("morning", 6, 12), ("afternoon", 12, 18), ("evening", 18, 24))
#: History loaded once per run (every predictive step reads the same).
_HISTORY: dict[str, Any] = {}


def _skip(params: Predict, reason: str, **extra: Any) -> StepResult:
    return StepResult(
        "skipped",
        {"outputs": {}, "reason": reason, "prediction": params.prediction,
         "would": PREDICTIONS.get(params.prediction, ""), **extra},
        f"skipped: {reason}",
    )


def _history(run: RunState) -> Any:
    key = f"{run.run_id}:{run.request.repository}:{run.request.service}"
    if key not in _HISTORY:
        from afdp.learn.source import history_of

        assert run.request.trust_policy is not None
        _HISTORY.clear()
        _HISTORY[key] = history_of(run.request.repository, run.request.trust_policy, service=run.request.service)
    return _HISTORY[key]


def planned_of(run: RunState) -> Any:
    """Return the characteristics of the deployment being run (what is known before it)."""
    from afdp.learn.features import Planned
    from afdp.learn.history import classify_path

    info = run.request.info
    files = [f for f in info.changed_files if f.strip()]
    return Planned.of(
        change_size=info.deployment_size,
        changed_files=len(files) if files else None,
        kinds=[classify_path(f) for f in files],
        at=info.deployed_at or run.clock.now(),
        environment=info.environment,
    )


def handle_predict(run: RunState, step: Step, values: dict[str, Any]) -> StepResult:
    params = step.params
    assert isinstance(params, Predict)
    if params.analyzer is not None:  # an ml_predictor analyzer's own step
        from afdp.pipeline.runner.steps.mlpredict import ml_predictor_result

        return ml_predictor_result(params, run_prediction(run, params))
    return run_prediction(run, params)


def run_prediction(run: RunState, params: Predict) -> StepResult:
    """Run one prediction (``params.prediction``) from the verified history."""
    if run.request.trust_policy is None:
        return _skip(params, NO_TRUST)
    try:
        history = _history(run)
    except AfdpError as exc:
        return _skip(params, f"not run: the history could not be read: {_one_line(exc.diagnostics())}")
    rows = [r for r in history.rows if r.get("deployment") != run.request.deployment]
    digest = history.digest
    if len(rows) != len(history.rows):
        from afdp.learn.history import history_digest

        digest = history_digest(rows)  # the rows used, without this deployment's own
    planned = planned_of(run)
    base = {
        "prediction": params.prediction,
        "dataset_digest": digest,
        "history": {"rows": len(rows), "excluded": len(history.excluded), "considered": history.considered},
        "query": planned.to_json(),
    }
    handler = _HANDLERS[params.prediction]
    result = handler(run, params, rows, planned, base)
    if not rows and result.status == "skipped":
        # As `afdp predict` says it: by name, and which services do have history (a
        # mistyped --service), looked up once per run (bounded) for every step.
        note = _none_of(run, history)
        reason = f"{result.result['reason']}: {note}"
        result = replace(result, result={**result.result, "reason": reason}, summary=f"skipped: {reason}")
    return result


def _none_of(run: RunState, history: Any) -> str:
    """Why the service has no row: only this deployment is in the history, its branches
    were all left out (how many, why), or none exists (and the services that have one)."""
    key = f"{run.run_id}:{run.request.repository}:{run.request.service}:none"
    if key in _HISTORY:
        return str(_HISTORY[key])
    service = run.request.service
    if history.rows:
        note = f"only this deployment of {service} is in the verified history"
    else:
        note = f"no deployment of {service} is in the verified history"
        # this run's own branch (not sealed yet) is never part of its history
        own = f"/{service}/{run.request.deployment}"
        others = [e for e in history.excluded if not str(e.branch).endswith(own)]
        if others:
            counts: dict[str, int] = {}
            for item in others:
                counts[item.category] = counts.get(item.category, 0) + 1
            why = ", ".join(f"{c}: {n}" for c, n in sorted(counts.items()))
            note += f" (its {len(others)} evidence branch(es) were left out: {why})"
        else:
            from afdp.learn.history import services_in_history
            from afdp.learn.source import trust_of

            try:
                found, unreached = services_in_history(
                    run.request.repository, trust_of(run.request.repository, run.request.trust_policy))
            except AfdpError as exc:
                found, unreached = [], 0
                note += f" (other services could not be listed: {_one_line(exc.diagnostics())[:200]})"
            if found:
                more = f" (and {unreached} more service(s) with evidence branches)" if unreached else ""
                note += f"; services that are: {', '.join(found)}{more}"
            elif "could not" not in note:
                note += ", nor of any other service"
    _HISTORY[key] = note
    return note


def _similar(run: RunState, params: Predict, rows: list[dict[str, Any]], planned: Any, base: dict[str, Any]) -> StepResult:
    from afdp.learn.similar import find_similar

    if not rows:
        return _skip(params, "not enough history: 0 deployments, needs 1", **base)
    found = find_similar(rows, planned, service=run.request.service, dataset_digest=base["dataset_digest"])
    document = found.to_json()
    pattern = document["pattern"]
    cites = sorted({d for n in found.neighbours for d in n.record_digests})
    outputs = {
        "similar": [n.deployment for n in found.neighbours],
        "pattern_count": pattern["times"],
        "pattern_degraded": pattern["degraded"],
    }
    return StepResult("ok", {"outputs": outputs, **base, "similar": document, "cites": cites}, found.sentence())


def _money_unit(run: RunState) -> str | None:
    """The currency of the workflow's money-per-time metric (``USD``), if it has one."""
    for metric in run.workflow.metrics:
        dimension = metric.unit.dimension
        if dimension.endswith("/time") and dimension.partition("/")[0] in ("USD", "EUR", "GBP"):
            return dimension.partition("/")[0]
    return None


def _predict(run: RunState, params: Predict, rows: list[dict[str, Any]], planned: Any, base: dict[str, Any]) -> StepResult:
    from afdp.learn.model import MIN_HISTORY, not_enough
    from afdp.learn.prediction import predict_from_rows
    from afdp.learn.source import trust_of

    if len(rows) < MIN_HISTORY:
        return _skip(params, not_enough(len(rows)), **base)
    request = run.request
    policy = trust_of(request.repository, request.trust_policy)
    try:
        prediction = predict_from_rows(
            rows, planned, service=request.service, dataset_digest=base["dataset_digest"],
            repository=request.repository, policy=policy, signer=request.signer, tsa_urls=request.tsa_urls,
            excluded=base["history"]["excluded"],
            # an ml_predictor's features: select the model's inputs, exactly those
            features=tuple(dict.fromkeys(f for _, f in params.features)) if params.features else None,
        )
    except AfdpError as exc:
        return StepResult("failed", {"outputs": {}, **base}, f"failed: {_one_line(exc.diagnostics())}",
                          error=_one_line(exc.diagnostics()))
    document = prediction.to_json()
    if prediction.status != "ok":
        return _skip(params, str(prediction.reason), **base)
    outputs: dict[str, Any] = {
        "predicted": {m: {"increase": v["point"], "low": v["low"], "high": v["high"]} for m, v in document["impact"].items()},
        "model_record": prediction.model_record,
    }
    money = document.get("money_lost_per_hour")
    if money:
        outputs["predicted_revenue_loss_per_hour"] = money["point"]
        outputs["predicted_revenue_loss_per_hour_low"] = money["low"]
        outputs["predicted_revenue_loss_per_hour_high"] = money["high"]
        outputs["currency"] = _money_unit(run)
    level = document["confidence_level"]
    parts = [f"{m} {v['point']:+.3g} [{v['low']:+.3g}, {v['high']:+.3g}]" for m, v in document["impact"].items()]
    if money:
        parts.insert(0, f"money lost/h {money['point']:+.4g} [{money['low']:+.4g}, {money['high']:+.4g}]")
    summary = f"{level:.0%} intervals from {len(rows)} deployments: " + "; ".join(parts)
    return StepResult("ok", {"outputs": outputs, **base, "prediction": document,
                             "cites": document["cites"]["records"]}, summary)


def _part(hour: int) -> tuple[str, int, int]:
    return next(p for p in _PARTS if p[1] <= hour < p[2])


def _window(run: RunState, params: Predict, rows: list[dict[str, Any]], planned: Any, base: dict[str, Any]) -> StepResult:
    from afdp.learn.features import WEEKDAYS, degraded, money_lost_per_hour

    if len(rows) < MIN_WINDOW:
        return _skip(params, f"not enough history: {len(rows)} deployments, needs {MIN_WINDOW}", **base)
    stats: dict[str, dict[str, Any]] = {}
    for name, first, last in _PARTS:
        members = [r for r in rows if isinstance(r.get("hour_utc"), int) and first <= r["hour_utc"] < last]
        flags = [f for r in members if (f := degraded(r)) is not None]
        money = [m for r in members if (m := money_lost_per_hour(r)) is not None]
        stats[name] = {
            "hours_utc": f"{first:02d}-{last:02d}",
            "deployments": len(members),
            "degraded": sum(flags),
            "degraded_share": sum(flags) / len(flags) if flags else None,
            "mean_money_lost_per_hour": sum(money) / len(money) if money else None,
            "record_digests": sorted({d for r in members for d in r.get("record_digests") or []}),
        }
    eligible = [n for n, s in stats.items() if s["deployments"] >= MIN_PART and s["degraded_share"] is not None]
    if not eligible:
        return _skip(params, f"not enough history: no part of the day has {MIN_PART} judged deployments", **base,
                     parts=stats)
    best = min(eligible, key=lambda n: (stats[n]["degraded_share"], stats[n]["mean_money_lost_per_hour"] or 0.0,
                                        [p[0] for p in _PARTS].index(n)))
    current = _part(planned.hour_utc)[0] if planned.hour_utc is not None else None
    days: dict[str, dict[str, Any]] = {}
    for index, day in enumerate(WEEKDAYS):
        flags = [f for r in rows if r.get("weekday_utc") == index and (f := degraded(r)) is not None]
        days[day] = {"deployments": len(flags), "degraded_share": sum(flags) / len(flags) if flags else None}
    judged = [d for d, v in days.items() if v["deployments"] >= MIN_PART]
    best_day = min(judged, key=lambda d: (days[d]["degraded_share"], WEEKDAYS.index(d))) if judged else None
    outputs = {
        "recommended_part_of_day": best,
        "recommended_hours_utc": stats[best]["hours_utc"],
        "recommended_weekday": best_day,
        "current_part_of_day": current,
        "in_recommended_window": current == best if current else None,
    }
    share = stats[best]["degraded_share"]
    summary = (f"deploy in the {best} ({stats[best]['hours_utc']} UTC): {share:.0%} of its "
               f"{stats[best]['deployments']} past deployments degraded")
    cites = stats[best]["record_digests"]
    return StepResult("ok", {"outputs": outputs, **base, "parts": stats, "weekdays": days, "minimum_per_part": MIN_PART,
                             "cites": cites}, summary)


def _threshold(run: RunState, params: Predict, rows: list[dict[str, Any]], planned: Any, base: dict[str, Any]) -> StepResult:
    from afdp.learn.features import degraded, metrics_of

    benign = [r for r in rows if degraded(r) is False]
    if len(benign) < MIN_BENIGN:
        return _skip(params, f"not enough history: {len(benign)} benign deployments, needs {MIN_BENIGN}", **base)
    metrics = {m.name: m for m in run.workflow.metrics}
    thresholds: dict[str, Any] = {}
    details: dict[str, Any] = {}
    for name in metrics_of(benign):
        values = sorted(v for r in benign if isinstance(v := r.get(f"impact.{name}.increase"), (int, float))
                        and not isinstance(v, bool) and math.isfinite(v))
        better = metrics[name].better if name in metrics else "none"
        if better == "higher":
            values = sorted(-v for v in values)
        if len(values) < MIN_BENIGN:
            details[name] = {"status": f"not enough history: {len(values)} benign values, needs {MIN_BENIGN}"}
            continue
        rank = math.ceil((len(values) + 1) * (1 - ALPHA))
        limit = values[rank - 1]
        direction = "decrease" if better == "higher" else "increase"
        thresholds[name] = limit
        details[name] = {"status": "computed", "direction": direction, "threshold": limit, "rank": rank,
                         "benign": len(values), "alpha": ALPHA,
                         "rule": f"the {rank}-th smallest {direction} of {len(values)} benign deployments"}
    if not thresholds:
        return _skip(params, "not enough history: no metric has enough benign values", **base, metrics=details)
    summary = "; ".join(f"{m} {d['direction']} > {d['threshold']:.4g}" for m, d in details.items() if d["status"] == "computed")
    cites = sorted({d for r in benign for d in r.get("record_digests") or []})
    return StepResult("ok", {"outputs": {"thresholds": thresholds}, **base, "metrics": details, "cites": cites},
                      f"rollback beyond what benign deployments did ({1 - ALPHA:.0%}): {summary}")


_HANDLERS = {
    "analyze_similar_past_deployments": _similar,
    "predict_likely_impact": _predict,
    "recommend_deployment_window": _window,
    "suggest_rollback_threshold": _threshold,
}


__all__ = ["handle_predict", "planned_of", "run_prediction"]
