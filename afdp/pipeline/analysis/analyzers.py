"""The guide's analyzers, run over an analysis: ``logic``, ``business_impact``, ``ml_predictor``.

Each gives one JSON outcome, recorded in the analysis document under ``analyzers`` with
everything it read, so an auditor sees why it said what it said:

- **logic**: the program (:mod:`afdp.workflow.logic`) evaluated over each input's
  statistics of each metric it reads (``baseline``: the baseline capture's samples,
  ``current``/``impact``: the impact capture's; ``<input>.<metric>`` is the median,
  ``.mean``, ``.p99``... the others). ``verdict`` is the string returned (null: none),
  ``degraded`` whether it counts as a degradation
  (:func:`~afdp.workflow.logic.counts_as_degradation`); a condition that cannot be
  evaluated (no data) gives ``status: unknown`` and ``degraded: null``, never a pass.
- **business_impact**: money per hour, from the analysis' central values (the medians):
  with ``user_behavior`` (orders per time) and ``revenue_data`` (revenue per time),
  ``average_order_value = revenue / orders`` at baseline and ``loss_per_hour =
  (orders_baseline - orders_current) per hour x average_order_value``; with
  ``revenue_data`` alone, ``loss_per_hour = revenue_baseline - revenue_current`` per
  hour. Positive is money lost. The technical metrics' changes and degradations are
  recorded beside it (``technical``), and ``attributed`` says whether a technical metric
  degraded while money was lost. Missing data gives ``status: not_enough_data`` with
  the reason (the metrics themselves were checked when the workflow was validated).
- **ml_predictor**: ``status: skipped`` here, with the reason: it never runs inside the
  analysis (a pure function of the samples, which ``afdp replay`` recomputes), but as its
  own step and record ``predict_<name>`` from the verified history (``record`` names it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from afdp.workflow import logic
from afdp.workflow.business import resolve_groups
from afdp.workflow.units import DIMENSIONLESS, Quantity, Unit

if TYPE_CHECKING:
    from afdp.pipeline.analysis.verdicts import MetricAnalysis
    from afdp.workflow.model import Analyzer

ML_SKIPPED = (
    "not part of the analysis (which is recomputed from the samples alone): predicted from the verified "
    "history by its own step and record {record} (needs afdp run --trust and enough history)"
)

_SECONDS_PER_HOUR = 3600.0


def run_analyzers(analyzers: Sequence[Analyzer], metrics: Sequence[MetricAnalysis]) -> list[dict[str, Any]]:
    """Return the outcome of each analyzer over the analysed ``metrics``."""
    by_name = {m.metric: m for m in metrics}
    out: list[dict[str, Any]] = []
    for analyzer in analyzers:
        if analyzer.type == "logic" and analyzer.logic is not None:
            out.append(_logic(analyzer, by_name))
        elif analyzer.type == "business_impact":
            out.append(_business(analyzer, by_name))
        elif analyzer.type == "ml_predictor":
            out.append(
                {
                    "name": analyzer.name,
                    "type": "ml_predictor",
                    "status": "skipped",
                    "model": analyzer.model,
                    "features": list(analyzer.features),
                    "output": analyzer.output,
                    "record": f"predict_{analyzer.name}",
                    "reason": ML_SKIPPED.format(record=f"predict_{analyzer.name}"),
                }
            )
    return out


def _stat(metric: MetricAnalysis, side: str, statistic: str) -> Quantity | None:
    stats = metric.baseline_stats if side == "baseline" else metric.impact_stats
    if statistic == "count":
        return Quantity(float(stats.count), DIMENSIONLESS)
    value = getattr(stats, statistic)
    if value is None:
        return None
    return Quantity(float(value), metric.unit)


def _logic(analyzer: Analyzer, metrics: Mapping[str, MetricAnalysis]) -> dict[str, Any]:
    program = analyzer.logic
    assert program is not None
    values: dict[str, dict[str, dict[str, Any]]] = {}
    inputs: dict[str, dict[str, dict[str, Any]]] = {}
    for name, _written, metric_name, statistic in program.reads:
        metric = metrics.get(metric_name)
        side = logic.INPUTS[name]
        quantity = _stat(metric, side, statistic) if metric is not None else None
        if quantity is not None:
            values.setdefault(name, {}).setdefault(metric_name, {})[statistic] = quantity
        inputs.setdefault(name, {}).setdefault(metric_name, {})[statistic] = (
            None if quantity is None else quantity.value
        )
    units = {m: metrics[m].unit.symbol for m in program.metrics if m in metrics}
    outcome = logic.run_logic(program, values)
    result: dict[str, Any] = {
        "name": analyzer.name,
        "type": "logic",
        "logic": program.source,
        "inputs": inputs,
        "units": units,
        "verdict": outcome.verdict,
        "returned_at_line": outcome.line,
        "degraded": outcome.degraded,
    }
    if outcome.error is not None:
        result["status"] = "unknown"
        result["reason"] = f"a condition could not be evaluated: {outcome.error}"
    else:
        result["status"] = "ok"
        result["reason"] = (
            f"returned {outcome.verdict!r} ("
            + ("a degradation" if outcome.degraded else "not a degradation")
            + ")"
            if outcome.verdict is not None
            else "no return reached: no verdict"
        )
    if analyzer.output:
        result["output"] = analyzer.output
    return result


def _per_hour(metric: MetricAnalysis, value: float | None) -> float | None:
    """``value`` is in the metric's unit (a rate); return it per hour."""
    return None if value is None else value * metric.unit.factor * _SECONDS_PER_HOUR


def _business(analyzer: Analyzer, metrics: Mapping[str, MetricAnalysis]) -> dict[str, Any]:
    groups = resolve_groups(metrics, {m: a.unit for m, a in metrics.items()})
    used = {g: list(groups.get(g, ())) for g in analyzer.correlate}
    result: dict[str, Any] = {
        "name": analyzer.name,
        "type": "business_impact",
        "output": analyzer.output,
        "groups": used,
        "statistic": "median of each side (the analysis' central value)",
    }
    reasons: list[str] = []
    revenue = metrics[used["revenue_data"][0]] if used.get("revenue_data") else None
    orders = metrics[used["user_behavior"][0]] if used.get("user_behavior") else None
    inputs: dict[str, Any] = {}
    for role, metric in (("revenue", revenue), ("orders", orders)):
        if metric is not None:
            inputs[role] = {
                "metric": metric.metric,
                "unit": metric.unit.symbol,
                "baseline": metric.baseline,
                "current": metric.impact,
            }
            if metric.baseline is None or metric.impact is None:
                reasons.append(f"{metric.metric}: no data on one side ({metric.status})")
    result["inputs"] = inputs
    technical = {
        name: {
            "change": metrics[name].change,
            "degraded": metrics[name].degraded,
        }
        for name in used.get("technical_metrics", ())
    }
    result["technical"] = technical
    currency = revenue.unit.symbol.partition("/")[0] if revenue is not None else None
    result["currency"] = currency
    result["currency_dimension"] = revenue.unit.dimension.partition("/")[0] if revenue is not None else None
    loss: float | None = None
    if revenue is not None and not reasons:
        rev_b = _per_hour(revenue, revenue.baseline)
        rev_i = _per_hour(revenue, revenue.impact)
        if orders is not None:
            ord_b = _per_hour(orders, orders.baseline)
            ord_i = _per_hour(orders, orders.impact)
            assert rev_b is not None and ord_b is not None and ord_i is not None
            if ord_b <= 0:
                reasons.append(f"{orders.metric} is 0 at baseline: no average order value")
            else:
                aov = rev_b / ord_b
                lost = ord_b - ord_i
                loss = lost * aov
                result["formula"] = (
                    "loss_per_hour = lost_orders_per_hour x average_order_value; "
                    "lost_orders_per_hour = orders_baseline - orders_current (per hour); "
                    "average_order_value = revenue_baseline / orders_baseline"
                )
                result["lost_orders_per_hour"] = lost
                result["average_order_value"] = aov
                result["calculation"] = f"({ord_b:.6g} - {ord_i:.6g}) orders/h x {aov:.6g} {currency}/order = {loss:.6g} {currency}/h"
        else:
            assert rev_b is not None and rev_i is not None
            loss = rev_b - rev_i
            result["formula"] = "loss_per_hour = revenue_baseline - revenue_current (per hour)"
            result["calculation"] = f"{rev_b:.6g} - {rev_i:.6g} = {loss:.6g} {currency}/h"
    if loss is None:
        result["status"] = "not_enough_data"
        result["reasons"] = reasons or ["no revenue metric to measure money with"]
        result["loss_per_hour"] = None
        result["attributed"] = None
        return result
    result["status"] = "ok"
    result["loss_per_hour"] = loss
    result["unit"] = f"{currency}/hour"
    degraded = [m for m, t in technical.items() if t["degraded"]]
    result["attributed"] = bool(degraded) and loss > 0
    result["reasons"] = (
        [f"money lost while {', '.join(degraded)} degraded"] if result["attributed"] else []
    )
    return result


_BUSINESS_FIELDS = ("loss_per_hour", "average_order_value", "lost_orders_per_hour", "attributed", "currency", "currency_dimension")


def business_typed(plain: Mapping[str, Any]) -> dict[str, Any]:
    """Return a business impact's plain fields (numbers in $/h, $, 1/h) as condition
    values: ``loss_per_hour`` in currency per hour, ``average_order_value`` in currency,
    ``lost_orders_per_hour`` per hour, ``attributed`` (true, false or null)."""
    currency, dimension = plain.get("currency"), plain.get("currency_dimension")
    out: dict[str, Any] = {
        "attributed": plain.get("attributed"),
        "currency": currency,
        "currency_dimension": dimension,
    }
    money = Unit(str(currency), str(dimension), 1.0) if currency and dimension else None
    units = {
        "loss_per_hour": Unit(f"{currency}/h", f"{dimension}/time", 1 / _SECONDS_PER_HOUR) if money else None,
        "average_order_value": money,
        "lost_orders_per_hour": Unit("1/h", "number/time", 1 / _SECONDS_PER_HOUR),
    }
    for key, unit in units.items():
        value = plain.get(key)
        if isinstance(value, Quantity):
            out[key] = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and unit is not None:
            out[key] = Quantity(float(value), unit)
        else:
            out[key] = None
    return out


def business_plain(typed: Mapping[str, Any]) -> dict[str, Any]:
    """Return :func:`business_typed` values as plain JSON (each number in its own unit)."""
    return {k: (v.value if isinstance(v, Quantity) else v) for k, v in typed.items()}


def analyzer_values(outcomes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Return the names conditions read: ``analyzers.<name>.verdict|degraded`` and each
    business impact's output (``<output>.loss_per_hour`` in currency per hour, ...)."""
    out: dict[str, Any] = {}
    verdicts: dict[str, Any] = {}
    for item in outcomes:
        if item.get("type") == "logic":
            verdicts[item["name"]] = {"verdict": item.get("verdict"), "degraded": item.get("degraded")}
        elif item.get("type") == "business_impact" and item.get("output"):
            out[str(item["output"])] = business_typed({k: item.get(k) for k in _BUSINESS_FIELDS})
    if verdicts:
        out["analyzers"] = verdicts
    return out
