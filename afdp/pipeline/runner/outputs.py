"""A step's outputs as conditions see them: typed quantities with units (``typed_outputs``) and the plain JSON written into the record (``plain_outputs``), plus the summary statistics of a captured series."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from afdp.pipeline.analysis.analyzers import business_plain, business_typed
from afdp.workflow import catalog
from afdp.workflow.model import (
    Analyze,
    Capture,
    CrossService,
    Predict,
    Query,
    Segment,
    Step,
    Workflow,
)
from afdp.workflow.units import DIMENSIONLESS, Quantity, Unit, parse_unit

if TYPE_CHECKING:
    pass
from afdp.pipeline.runner.state import _json_safe

_RATIO = parse_unit("ratio")
_SECONDS = parse_unit("s")


def _stats(values: Sequence[float]) -> dict[str, Any]:
    """Return capture outputs for one metric, in the metric's unit (None when empty)."""
    if not values:
        return {name: None for name in catalog.CAPTURE_FIELDS} | {"count": 0}
    ordered = sorted(values)
    return {
        "mean": sum(ordered) / len(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "last": values[-1],
        "p50": _percentile(ordered, 0.50),
        "p95": _percentile(ordered, 0.95),
        "p99": _percentile(ordered, 0.99),
        "count": len(ordered),
    }


def _percentile(ordered: Sequence[float], q: float) -> float:
    if len(ordered) == 1:
        return ordered[0]
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _field_unit(kind: str, metric_unit: Unit) -> Unit | None:
    if kind == "@":
        return metric_unit
    if kind == "ratio":
        return _RATIO
    if kind == "time":
        return _SECONDS
    if kind == "number":
        return DIMENSIONLESS
    return None


def _metric_fields(workflow: Workflow, step: Step) -> tuple[Mapping[str, str], tuple[str, ...]]:
    params = step.params
    if isinstance(params, Capture):
        return catalog.CAPTURE_FIELDS, params.metrics
    if isinstance(params, Analyze):
        return catalog.ANALYSIS_FIELDS, params.metrics
    return {}, ()


def typed_outputs(workflow: Workflow, step: Step, outputs: Mapping[str, Any]) -> dict[str, Any]:
    """Return a step's outputs (as recorded, plain JSON) as values for conditions and templates:
    numbers in a metric's unit become :class:`Quantity` objects, as the compiler typed them.
    """
    fields, metrics = _metric_fields(workflow, step)
    services = getattr(step.params, "services", ())
    typed: dict[str, Any] = {}
    for key, value in outputs.items():
        if services and isinstance(step.params, Capture) and key == "services" and isinstance(value, Mapping):
            # services: a capture's outputs per service, each typed like a capture's own.
            typed[key] = {
                s: typed_outputs(workflow, step, v) if isinstance(v, Mapping) else v for s, v in value.items()
            }
        elif services and isinstance(step.params, Analyze) and key in services and isinstance(value, Mapping):
            typed[key] = typed_outputs(workflow, step, value)  # one service's analysis
        elif isinstance(step.params, CrossService) and key == "business_impact_combined" and isinstance(value, Mapping):
            typed[key] = {**business_typed(value), "complete": value.get("complete"), "missing": value.get("missing")}
        elif key in metrics and isinstance(value, Mapping):
            unit = workflow.metric(key).unit
            typed[key] = {
                name: _quantity(v, _field_unit(fields.get(name, ""), unit), fields.get(name, ""))
                for name, v in value.items()
            }
        elif isinstance(value, Mapping) and key in _business_outputs(workflow, step):
            typed[key] = business_typed(value)
        elif isinstance(step.params, Segment):
            typed[key] = Quantity(float(value), _RATIO) if isinstance(value, (int, float)) else value
        elif isinstance(step.params, Query) and key == "longest_lock_wait" and value is not None:
            typed[key] = Quantity(float(value), _SECONDS)
        elif isinstance(step.params, Predict):
            money_key = key
            output = step.params.output
            if output and key in (output, f"{output}_low", f"{output}_high"):
                money_key = "predicted_revenue_loss_per_hour" + key[len(output):]  # the analyzer's name for it
            typed[key] = _prediction_typed(workflow, money_key, value, outputs)
        else:
            typed[key] = value
    return typed


def _prediction_typed(workflow: Workflow, key: str, value: Any, outputs: Mapping[str, Any]) -> Any:
    """A predictive step's numbers as quantities: money in the recorded currency per
    hour, ``predicted.<metric>.*`` and ``thresholds.<metric>`` in the metric's unit."""
    units = {m.name: m.unit for m in workflow.metrics}
    currency = outputs.get("currency")
    if key.startswith("predicted_revenue_loss_per_hour") and isinstance(currency, str) and currency:
        symbol = {"USD": "$", "EUR": "€", "GBP": "£"}.get(currency, currency)
        return _quantity(value, Unit(f"{symbol}/h", f"{currency}/time", 1 / 3600), "@")
    if key == "predicted" and isinstance(value, Mapping):
        return {m: {f: _quantity(v, units.get(m), "@") for f, v in fields.items()} if isinstance(fields, Mapping) else fields
                for m, fields in value.items()}
    if key == "thresholds" and isinstance(value, Mapping):
        return {m: _quantity(v, units.get(m), "@") for m, v in value.items()}
    return value


def _quantity(value: Any, unit: Unit | None, kind: str) -> Any:
    if unit is None or kind == "number" or value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return Quantity(float(value), unit)
    return value


def plain_outputs(workflow: Workflow, step: Step, values: Mapping[str, Any]) -> dict[str, Any]:
    """Return typed outputs as plain JSON: quantities as numbers in their field's unit."""
    fields, metrics = _metric_fields(workflow, step)
    plain: dict[str, Any] = {}
    for key, value in values.items():
        if key in metrics and isinstance(value, Mapping):
            unit = workflow.metric(key).unit
            plain[key] = {
                name: _number_in(v, _field_unit(fields.get(name, ""), unit)) for name, v in value.items()
            }
        elif isinstance(value, Mapping) and key in _business_outputs(workflow, step):
            plain[key] = business_plain(value)
        else:
            plain[key] = _number_in(value, None)
    return _json_safe(plain)


def _business_outputs(workflow: Workflow, step: Step) -> set[str]:
    """Return the output names of the business_impact analyzers an analysis step runs."""
    if not isinstance(step.params, Analyze):
        return set()
    names = step.params.analyzers
    return {
        str(a.output) for a in workflow.analyzers if a.type == "business_impact" and a.name in names and a.output
    }


def _number_in(value: Any, unit: Unit | None) -> Any:
    if isinstance(value, Quantity):
        target = unit if unit is not None and unit.dimension == value.unit.dimension else None
        return value.base / target.factor if target is not None else value.base
    return value
