"""The dashboard's pages (Jinja2 templates, autoescaped), plots and Grafana annotations.

Plots are the compliance report's own inline SVG (:func:`afdp.audit.report.svg.line_plot`),
so the dashboard and ``afdp report`` draw the same series the same way; no JavaScript.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from afdp.audit.report import svg
from afdp.errors import visible_html
from afdp.service.dashboard import DeploymentEntry


def _shown(value: Any) -> Any:
    """Every plain string a template prints shows its hidden characters as escapes (a bidi
    override in a reason or a metric name would otherwise reorder the page around it),
    HTML-escaped, as the report's strings are (``visible_html``). The page's own markup
    (``Markup``) is left alone."""
    if isinstance(value, str) and not isinstance(value, Markup) and not value.isprintable():
        return Markup(visible_html(value))  # noqa: S704 - escaped just now
    return value


_ENV = Environment(
    loader=PackageLoader("afdp.service", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    finalize=_shown,
)

STYLESHEET = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #111; }
table { border-collapse: collapse; margin: .5rem 0 1rem; }
th, td { border-bottom: 1px solid #ddd; padding: .3rem .6rem; text-align: left; vertical-align: top; }
.verdict { font-weight: bold; }
.VERIFIED { color: #166534; } .UNSEALED { color: #92400e; } .FAILED { color: #b91c1c; }
.UNCHECKED { color: #555; }
.unverified { color: #b91c1c; font-style: italic; }
.muted { color: #555; }
nav a { margin-right: 1rem; }
nav form { display: inline; }
figure { margin: .5rem 0 1rem; }
"""


def _when(value: float | None) -> str:
    if value is None:
        return "-"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


_ENV.filters["when"] = _when


def _num(value: float | None) -> str:
    """A predicted number to 4 significant digits (- when none)."""
    return "-" if value is None else f"{value:.4g}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


_ENV.filters["num"] = _num
_ENV.filters["pct"] = _pct


def render(template: str, **values: Any) -> str:
    """Return the page ``template`` rendered with ``values`` (every value escaped)."""
    return _ENV.get_template(template).render(**values)


def plots(entry: DeploymentEntry) -> list[Markup]:
    """Return one SVG per metric of ``entry``: its baseline and impact samples, deploy marked."""
    section = entry.section
    if section is None:
        return []
    out = []
    metrics = sorted({s.metric for s in section.findings.series if s.phase in ("baseline", "impact")})
    for metric in metrics:
        baseline, impact = section.series_of(metric)
        unit = next((s.unit for s in baseline + impact if s.unit), "")
        # line_plot escapes every text it writes.
        out.append(Markup(svg.line_plot(  # noqa: S704
            metric=metric,
            unit=unit,
            baseline=[p for s in baseline for p in s.samples],
            impact=[p for s in impact for p in s.samples],
            deployed_at=section.findings.deployed_at,
        )))
    return out


def trends(entries: list[DeploymentEntry]) -> dict[str, Any]:
    """Return a service's trends: decisions by kind and, per metric, the relative change
    of each deployment (verified and unsealed branches only) as a plot."""
    decisions: dict[str, int] = {}
    points: dict[str, list[tuple[float, float]]] = {}
    counted = [e for e in entries if e.trusted and e.section is not None]
    for entry in counted:
        decision = (entry.decision or {}).get("action") or "none"
        decisions[str(decision)] = decisions.get(str(decision), 0) + 1
        when = entry.deployed_at
        if when is None or entry.section is None:
            continue
        for row in entry.section.impact:
            if isinstance(row.relative, (int, float)) and not isinstance(row.relative, bool):
                points.setdefault(row.metric, []).append((when, float(row.relative)))
    figures = [
        Markup(svg.line_plot(metric=f"{metric}: relative change per deployment", unit="",  # noqa: S704
                             baseline=[], impact=sorted(values), deployed_at=None))
        for metric, values in sorted(points.items())
    ]
    return {"decisions": dict(sorted(decisions.items())), "figures": figures, "counted": len(counted),
            "unsealed": sum(1 for e in counted if e.verdict == "UNSEALED"),
            "left_out": len(entries) - len(counted)}


def grafana_annotations(entries: list[DeploymentEntry], params: Mapping[str, str], query: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Return Grafana annotations (JSON / SimpleJSON datasource shape) for the deployments.

    ``params`` (GET) may carry ``service``, ``from`` and ``to`` (epoch milliseconds); a
    POST ``query`` may carry ``range: {from, to}`` (RFC 3339) and ``annotation: {query}``
    (a service name). Each annotation's tags say the verdict of the evidence.
    """
    service = params.get("service")
    low = _millis(params.get("from"))
    high = _millis(params.get("to"))
    annotation = query.get("annotation") if isinstance(query.get("annotation"), Mapping) else None
    if annotation and isinstance(annotation.get("query"), str) and annotation["query"].strip():
        service = annotation["query"].strip()
    window = query.get("range")
    if isinstance(window, Mapping):
        low = _iso_millis(window.get("from")) or low
        high = _iso_millis(window.get("to")) or high
    out = []
    for entry in entries:
        if entry.deployed_at is None or (service and entry.service != service):
            continue
        millis = int(entry.deployed_at * 1000)
        if (low is not None and millis < low) or (high is not None and millis > high):
            continue
        decision = (entry.decision or {}).get("action") or "none"
        # as on the pages: a decision is the evidence's only where the evidence verified
        # (or is clean and in progress); elsewhere it is marked unverified, and no
        # decision:<kind> tag counts it among the decisions of that kind in a panel
        trusted = entry.trusted
        shown = decision if trusted else f"{decision} (unverified)"
        item: dict[str, Any] = {
            "time": millis,
            "title": f"{entry.service}/{entry.deployment}: {shown} ({entry.verdict})",
            "text": entry.headline,
            "tags": ["afdp", f"service:{entry.service}", f"decision:{decision if trusted else 'unverified'}",
                     f"evidence:{entry.verdict.lower()}"],
        }
        if annotation is not None:
            item["annotation"] = dict(annotation)
        out.append(item)
    out.sort(key=lambda a: a["time"])
    return out


def _millis(text: str | None) -> int | None:
    # ASCII digits only, one sign, bounded: "---5", "²" or 5,000 digits are no time (not a 500)
    if text is None or not re.fullmatch(r"-?[0-9]{1,18}", text.strip()):
        return None
    return int(text)


def _iso_millis(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
