"""The report's analyzers section: what the workflow's ``analyzers:`` said, and why.

The analysis record holds one outcome per analyzer under ``analyzers``
(:mod:`afdp.pipeline.analysis.analyzers`): a ``logic`` analyzer's program, every input
value it read, its verdict and the line that returned it; a ``business_impact``
analyzer's money per hour with its inputs (metric, unit, baseline, current), formula and
calculation; an ``ml_predictor`` recorded as skipped with the reason. :func:`analyzer_rows`
turns them into plain rows (the JSON report), :func:`render` into the HTML section. Only
what the analysis record holds is shown, read after verification like everything else in
the report; on a branch that failed verification the section is marked unverified.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from afdp.errors import visible_html as escape


def analyzer_rows(analysis: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Return the analyzers' outcomes of ``analysis`` as report rows:
    ``{name, type, status, result, degraded, details: [...], outcome}`` (``outcome`` is the
    recorded JSON as it is; ``result`` one line; ``details`` the lines that explain it)."""
    items = (analysis or {}).get("analyzers")
    if not isinstance(items, list):
        return []
    rows = []
    for item in items:
        if not isinstance(item, dict):
            continue
        kind = str(item.get("type") or "")
        if kind == "logic":
            result, details = _logic(item)
        elif kind == "business_impact":
            result, details = _business(item)
        else:
            result = f"{item.get('status') or 'recorded'}: {item.get('reason') or ''}".rstrip(": ")
            details = [f"model {item['model']}"] if item.get("model") else []
        rows.append(
            {
                "name": str(item.get("name") or "?"),
                "type": kind or "?",
                "status": item.get("status"),
                "result": result,
                "degraded": item.get("degraded"),
                "details": details,
                "outcome": item,
            }
        )
    return rows


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-" if value is None else str(value)
    if value == 0:
        return "0"
    return f"{value:.3g}" if abs(value) >= 1e7 or abs(value) < 1e-3 else f"{value:.6g}"


def _logic(item: Mapping[str, Any]) -> tuple[str, list[str]]:
    status = item.get("status")
    verdict = item.get("verdict")
    if status == "unknown":
        result = f"could not decide: {item.get('reason') or 'a condition could not be evaluated'}"
    elif verdict is None:
        result = "no verdict (no return reached)"
    else:
        counts = "a degradation" if item.get("degraded") else "not a degradation"
        result = f"{verdict} ({counts}, returned at line {item.get('returned_at_line')})"
    units = _mapping(item.get("units"))
    details = []
    inputs = _mapping(item.get("inputs"))
    for side, metrics in inputs.items():
        if not isinstance(metrics, dict):
            continue
        for metric, statistics in metrics.items():
            if not isinstance(statistics, dict):
                continue
            for statistic, value in statistics.items():
                unit = "" if statistic == "count" else str(units.get(metric) or "")
                details.append(f"{side}.{metric}.{statistic} = {_number(value)}{(' ' + unit) if unit else ''}")
    return result, details


def _business(item: Mapping[str, Any]) -> tuple[str, list[str]]:
    currency = item.get("currency") or ""
    loss = item.get("loss_per_hour")
    if item.get("status") != "ok" or not isinstance(loss, (int, float)):
        reasons = "; ".join(str(r) for r in item.get("reasons") or []) or "no data"
        result = f"not enough data: {reasons}"
    else:
        direction = "lost" if loss > 0 else "gained" if loss < 0 else "no change"
        unit = item.get("unit") or f"{currency}/hour"
        result = f"loss per hour {_number(loss)} {unit} (money {direction})"
        if item.get("attributed"):
            result += "; attributed: " + "; ".join(str(r) for r in item.get("reasons") or [])
    details = []
    inputs = _mapping(item.get("inputs"))
    for role, entry in inputs.items():
        if isinstance(entry, dict):
            details.append(
                f"input {role}: {entry.get('metric')} ({entry.get('unit')}): baseline "
                f"{_number(entry.get('baseline'))}, current {_number(entry.get('current'))}"
            )
    if item.get("statistic"):
        details.append(f"statistic: {item['statistic']}")
    for key in ("formula", "calculation"):
        if item.get(key):
            details.append(f"{key}: {item[key]}")
    for key in ("average_order_value", "lost_orders_per_hour"):
        if isinstance(item.get(key), (int, float)):
            details.append(f"{key.replace('_', ' ')}: {_number(item[key])}")
    groups = _mapping(item.get("groups"))
    if groups:
        details.append(
            "groups: " + "; ".join(f"{g}: {', '.join(map(str, ms)) or 'none'}" for g, ms in groups.items())
        )
    technical = _mapping(item.get("technical"))
    for metric, facts in technical.items():
        if isinstance(facts, dict):
            judged = facts.get("degraded")
            degraded = "degraded" if judged is True else "not degraded" if judged is False else "not judged"
            details.append(f"technical {metric}: change {_number(facts.get('change'))}, {degraded}")
    if item.get("output"):
        details.append(f"conditions read it as {item['output']}.loss_per_hour")
    return result, details


def render(rows: list[dict[str, Any]], record: int | None, mark: str) -> str:
    """Return the HTML section (empty when the analysis holds no analyzers)."""
    if not rows:
        return ""
    out = [f"<h3>Analyzers{mark}</h3>"]
    out.append(
        '<table id="analyzers"><tr><th>analyzer</th><th>type</th><th>result</th><th>how</th></tr>'
    )
    for row in rows:
        degraded = row["degraded"]
        cls = "no" if degraded is True else "yes" if degraded is False else "muted"
        if row["type"] == "logic" and row["status"] == "unknown":
            cls = "warn"
        details = "<br>".join(escape(line) for line in row["details"])
        program = row["outcome"].get("logic") if row["type"] == "logic" else None
        if isinstance(program, str):
            details = f"<pre>{escape(program)}</pre>" + details
        out.append(
            f'<tr><td><b>{escape(row["name"])}</b></td><td>{escape(row["type"])}</td>'
            f'<td><span class="badge {cls}">{escape(str(row["status"] or "-"))}</span> '
            f"{escape(row['result'])}</td><td>{details}</td></tr>"
        )
    out.append("</table>")
    if record is not None:
        out.append(f'<p class="sub">Recorded in record {record} (the analysis).</p>')
    return "".join(out)


__all__ = ["analyzer_rows", "render"]
