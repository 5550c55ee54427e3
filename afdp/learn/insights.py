"""Patterns learned from verified history, each with its support and its strength.

An *insight* compares the deployments of a group with all the others on one outcome:

- groups: the part of the day the deployment happened (UTC: night 0-6, morning 6-12,
  afternoon 12-18, evening 18-24, as the ``correlation:`` figures part the day), each
  weekday, each change kind (``migration``, ``mobile``, ...), and *peak load*: the
  deployments whose load when deployed (:func:`afdp.learn.features.load_column`) is
  above the history's median;
- outcomes: the money lost per hour (``money_lost_per_hour``, when the history has
  it: :func:`afdp.learn.features.money_lost_per_hour`), each
  metric's ``increase``, and the share of deployments that degraded.

**Support** is the number of deployments in the group (and in the rest). **Strength**:
for numeric outcomes, the difference of the means (group minus rest) with a 95%
bootstrap interval (:data:`RESAMPLES` resamples, seeded: the same history gives the
same interval) and the two-sided Mann-Whitney U p-value; for the degraded share, the
difference of the shares and Fisher's exact test p-value. Groups with fewer than
:data:`MIN_SUPPORT` deployments on either side are listed as not enough data, never
with a number. A pattern is *notable* when its p-value is below 0.05 and its interval
excludes 0 (for shares: the p-value alone); with many groups some will pass by chance,
so the table shows every p-value and the support, not only the notable ones.

The ``correlation:`` entries of workflows are computed from the same rows:
``time_of_day_to_impact`` (share of deployments with an impact, per part of the day),
and ``migration_size_to_duration`` / ``table_type_to_lock_duration`` from the columns
the history has for them (``context.migration_size_bytes`` with
``context.migration_duration_seconds``; ``context.table_class`` with
``context.longest_lock_seconds``), else ``not enough data`` with the reason; plus
``change_size_to_impact``: Spearman's rank correlation between change size and the
primary outcome, with its p-value.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from afdp.errors import visible, visible_html
from afdp.learn.features import (
    WEEKDAYS,
    Planned,
    degraded,
    finite_number,
    load_column,
    metrics_of,
    money_lost_per_hour,
)

MIN_SUPPORT = 3
RESAMPLES = 2000
SEED = 0
NOT_ENOUGH = "not enough data"
PARTS = (("night", 0), ("morning", 6), ("afternoon", 12), ("evening", 18))
PEAK_QUANTILE = 0.5


def part_of_day(hour: int) -> str:
    return [name for name, first in PARTS if hour >= first][-1]


@dataclass(frozen=True)
class Insight:
    """One group compared with the rest on one outcome."""

    dimension: str
    group: str
    outcome: str
    support: int
    rest: int
    status: str  # "computed" or NOT_ENOUGH
    group_value: float | None = None
    rest_value: float | None = None
    difference: float | None = None
    interval: tuple[float, float] | None = None
    p_value: float | None = None
    test: str | None = None
    deployments: tuple[str, ...] = ()

    @property
    def notable(self) -> bool:
        if self.status != "computed" or self.p_value is None or self.p_value >= 0.05:
            return False
        if self.interval is None:
            return True
        return self.interval[0] > 0 or self.interval[1] < 0

    def sentence(self) -> str:
        if self.status != "computed":
            return f"{self.dimension}={self.group}: {NOT_ENOUGH} ({self.support} vs {self.rest} deployments)"
        what = "share degraded" if self.outcome == "degraded" else f"mean {self.outcome}"
        assert self.difference is not None
        ci = f" [95% {self.interval[0]:+.4g}, {self.interval[1]:+.4g}]" if self.interval else ""
        return (
            f"{self.dimension}={self.group}: {what} {self.group_value:.4g} vs {self.rest_value:.4g} "
            f"(difference {self.difference:+.4g}{ci}, p={self.p_value:.3g}, n={self.support} vs {self.rest})"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "dimension": self.dimension,
            "group": self.group,
            "outcome": self.outcome,
            "support": self.support,
            "rest": self.rest,
            "status": self.status,
            "group_value": self.group_value,
            "rest_value": self.rest_value,
            "difference": self.difference,
            "interval": list(self.interval) if self.interval else None,
            "p_value": self.p_value,
            "test": self.test,
            "notable": self.notable,
            "sentence": self.sentence(),
            "deployments": list(self.deployments),
        }


@dataclass(frozen=True)
class Insights:
    """Every insight of a history, its correlations and the series behind the plots."""

    service: str | None
    rows: int
    dataset_digest: str | None
    outcomes: tuple[str, ...]
    insights: tuple[Insight, ...]
    correlations: Mapping[str, Any]
    by_hour: Mapping[str, list[dict[str, Any]]]
    by_weekday: Mapping[str, list[dict[str, Any]]]
    by_kind: Mapping[str, list[dict[str, Any]]]
    load_column: str | None = None
    excluded: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "rows": self.rows,
            "excluded": self.excluded,
            "dataset_digest": self.dataset_digest,
            "outcomes": list(self.outcomes),
            "load_column": self.load_column,
            "insights": [i.to_json() for i in self.insights],
            "notable": [i.sentence() for i in self.insights if i.notable],
            "correlations": dict(self.correlations),
            "by_hour": dict(self.by_hour),
            "by_weekday": dict(self.by_weekday),
            "by_kind": dict(self.by_kind),
            "min_support": MIN_SUPPORT,
            "notes": list(self.notes),
        }


def outcomes_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Return the outcomes insights are computed on (money first, then each metric's
    increase, then ``degraded``), only those some row has."""
    names = ["money_lost_per_hour"] + [f"impact.{m}.increase" for m in metrics_of(rows)]
    found = [n for n in names if any(_value(r, n) is not None for r in rows)]
    if any(degraded(r) is not None for r in rows):
        found.append("degraded")
    return found


def _value(row: Mapping[str, Any], outcome: str) -> float | None:
    if outcome == "degraded":
        flag = degraded(row)
        return None if flag is None else float(flag)
    if outcome == "money_lost_per_hour":
        return money_lost_per_hour(row)
    return finite_number(row.get(outcome))


def _bootstrap(a: Sequence[float], b: Sequence[float], seed: int) -> tuple[float, float]:
    import numpy as np

    rng = np.random.default_rng(seed)
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ia = rng.integers(0, len(xa), size=(RESAMPLES, len(xa)))
    ib = rng.integers(0, len(xb), size=(RESAMPLES, len(xb)))
    diffs = xa[ia].mean(axis=1) - xb[ib].mean(axis=1)
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(low), float(high)


def compare(
    rows: Sequence[Mapping[str, Any]], member: Sequence[bool], *, dimension: str, group: str, outcome: str
) -> Insight:
    """Return the insight of the rows where ``member`` is true against the others."""
    from scipy import stats

    inside = [(r, v) for r, m in zip(rows, member, strict=True) if m and (v := _value(r, outcome)) is not None]
    outside = [v for r, m in zip(rows, member, strict=True) if not m and (v := _value(r, outcome)) is not None]
    values = [v for _, v in inside]
    names = tuple(str(r.get("deployment")) for r, _ in inside)
    base: dict[str, Any] = {"dimension": dimension, "group": group, "outcome": outcome,
            "support": len(values), "rest": len(outside), "deployments": names}
    if len(values) < MIN_SUPPORT or len(outside) < MIN_SUPPORT:
        return Insight(status=NOT_ENOUGH, **base)
    mean_in, mean_out = sum(values) / len(values), sum(outside) / len(outside)
    if outcome == "degraded":
        table = [[int(sum(values)), len(values) - int(sum(values))], [int(sum(outside)), len(outside) - int(sum(outside))]]
        p = float(stats.fisher_exact(table).pvalue)
        return Insight(status="computed", group_value=mean_in, rest_value=mean_out, difference=mean_in - mean_out,
                       p_value=p, test="fisher_exact", **base)
    if len(set(values) | set(outside)) == 1:
        p = 1.0
    else:
        p = float(stats.mannwhitneyu(values, outside, alternative="two-sided").pvalue)
    seed = SEED + sum(ord(c) for c in f"{dimension}/{group}/{outcome}")
    return Insight(status="computed", group_value=mean_in, rest_value=mean_out, difference=mean_in - mean_out,
                   interval=_bootstrap(values, outside, seed), p_value=p, test="mann_whitney_u", **base)


def _series(rows: Sequence[Mapping[str, Any]], key: Any, labels: Sequence[Any], outcome: str) -> list[dict[str, Any]]:
    out = []
    for label in labels:
        values = [v for r in rows if key(r) == label and (v := _value(r, outcome)) is not None]
        out.append({"group": label, "n": len(values), "mean": sum(values) / len(values) if values else None})
    return out


def _planned(row: Mapping[str, Any]) -> Planned:
    return Planned.from_row(row)


def learn_insights(
    rows: Sequence[Mapping[str, Any]], *, service: str | None = None, dataset_digest: str | None = None, excluded: int = 0
) -> Insights:
    """Return every insight of the history ``rows`` (see the module doc)."""
    planned = [_planned(r) for r in rows]
    outcomes = outcomes_of(rows)
    found: list[Insight] = []
    groupings: list[tuple[str, str, list[bool]]] = []
    hours = [p.hour_utc for p in planned]
    for name, _first in PARTS:
        groupings.append(("part_of_day", name, [h is not None and part_of_day(h) == name for h in hours]))
    for index, day in enumerate(WEEKDAYS):
        member = [p.weekday_utc == index for p in planned]
        if any(member):
            groupings.append(("weekday", day, member))
    for kind in sorted({k for p in planned for k in p.kinds}):
        groupings.append(("kind", kind, [kind in p.kinds for p in planned]))
    column = load_column(rows)
    notes: list[str] = []
    if column is not None:
        loads = [finite_number(r.get(column)) for r in rows]
        known = sorted(v for v in loads if v is not None)
        if len(known) >= 2 * MIN_SUPPORT:
            import numpy as np

            threshold = float(np.quantile(known, PEAK_QUANTILE))
            groupings.append(("peak_load", f"{column} > {threshold:.4g}", [v is not None and v > threshold for v in loads]))
            notes.append(f"peak load: {column} above its median ({threshold:.4g})")
    else:
        notes.append("no load column in the history (context.* or the baseline of a requests/throughput metric): no peak-load insight")
    for dimension, group, member in groupings:
        for outcome in outcomes:
            found.append(compare(rows, member, dimension=dimension, group=group, outcome=outcome))
    primary = outcomes[0] if outcomes else None
    series_outcome = primary or "degraded"
    by_hour = {o: _series(rows, lambda r: finite_number(r.get("hour_utc")), [float(h) for h in range(24)], o) for o in outcomes}
    by_weekday = {o: _series(rows, lambda r: finite_number(r.get("weekday_utc")), [float(d) for d in range(7)], o) for o in outcomes}
    kinds = sorted({k for p in planned for k in p.kinds})
    by_kind = {
        o: [
            {"group": k, **_mean(rows, [k in p.kinds for p in planned], o)} for k in kinds
        ] + [{"group": "(none)", **_mean(rows, [not p.kinds for p in planned], o)}]
        for o in outcomes
    }
    for series in (by_hour, by_weekday):
        for values in series.values():
            for item in values:
                item["group"] = int(item["group"])
    return Insights(
        service=service,
        rows=len(rows),
        dataset_digest=dataset_digest,
        outcomes=tuple(outcomes),
        insights=tuple(sorted(found, key=lambda i: (i.status != "computed", i.p_value if i.p_value is not None else 2.0, i.dimension, i.group, i.outcome))),
        correlations=correlations(rows, series_outcome),
        by_hour=by_hour,
        by_weekday=by_weekday,
        by_kind=by_kind,
        load_column=column,
        excluded=excluded,
        notes=tuple(notes),
    )


def _mean(rows: Sequence[Mapping[str, Any]], member: Sequence[bool], outcome: str) -> dict[str, Any]:
    values = [v for r, m in zip(rows, member, strict=True) if m and (v := _value(r, outcome)) is not None]
    return {"n": len(values), "mean": sum(values) / len(values) if values else None}


def correlations(rows: Sequence[Mapping[str, Any]], outcome: str) -> dict[str, Any]:
    """Return the workflow ``correlation:`` figures computed over the history rows."""
    from scipy import stats

    out: dict[str, Any] = {}
    parts: dict[str, list[bool]] = {}
    for row in rows:
        hour, flag = finite_number(row.get("hour_utc")), degraded(row)
        if hour is not None and flag is not None:
            parts.setdefault(part_of_day(int(hour)), []).append(flag)
    total = sum(len(v) for v in parts.values())
    groups = {
        name: ({"deployments": len(v), "status": "computed", "impact_share": sum(v) / len(v)}
               if len(v) >= MIN_SUPPORT else {"deployments": len(v), "status": NOT_ENOUGH})
        for name, v in sorted(parts.items())
    }
    out["time_of_day_to_impact"] = {"deployments": total, "status": "computed" if total >= MIN_SUPPORT else NOT_ENOUGH,
                                    "groups": groups, "impact": "any metric degraded"}
    pairs = [(a, b) for r in rows if (a := finite_number(r.get("context.migration_size_bytes"))) is not None
             and (b := finite_number(r.get("context.migration_duration_seconds"))) is not None]
    out["migration_size_to_duration"] = _pearson(pairs, "context.migration_size_bytes", "context.migration_duration_seconds")
    locks: dict[str, list[float]] = {}
    for row in rows:
        cls, lock = row.get("context.table_class"), finite_number(row.get("context.longest_lock_seconds"))
        if isinstance(cls, str) and lock is not None:
            locks.setdefault(cls, []).append(lock)
    n_locks = sum(len(v) for v in locks.values())
    out["table_type_to_lock_duration"] = (
        {"deployments": n_locks, "status": "computed",
         "groups": {c: {"deployments": len(v), "mean_lock_seconds": sum(v) / len(v), "longest_lock_seconds": max(v)}
                    for c, v in sorted(locks.items())}}
        if n_locks >= MIN_SUPPORT
        else {"deployments": n_locks, "status": NOT_ENOUGH,
              "reason": "needs context.table_class and context.longest_lock_seconds in the history"}
    )
    sized = [(a, b) for r in rows if (a := finite_number(r.get("change_size"))) is not None and (b := _value(r, outcome)) is not None]
    if len(sized) >= MIN_SUPPORT and len({a for a, _ in sized}) > 1 and len({b for _, b in sized}) > 1:
        rho = stats.spearmanr([a for a, _ in sized], [b for _, b in sized])
        out["change_size_to_impact"] = {"deployments": len(sized), "status": "computed", "outcome": outcome,
                                        "spearman_rho": float(rho.statistic), "p_value": float(rho.pvalue)}
    else:
        out["change_size_to_impact"] = {"deployments": len(sized), "status": NOT_ENOUGH, "outcome": outcome}
    return out


def _pearson(pairs: list[tuple[float, float]], x: str, y: str) -> dict[str, Any]:
    from scipy import stats

    if len(pairs) < MIN_SUPPORT:
        return {"deployments": len(pairs), "status": NOT_ENOUGH, "reason": f"needs {x} and {y} in the history"}
    if len({a for a, _ in pairs}) < 2 or len({b for _, b in pairs}) < 2:
        return {"deployments": len(pairs), "status": "no variation"}
    result = stats.pearsonr([a for a, _ in pairs], [b for _, b in pairs])
    return {"deployments": len(pairs), "status": "computed", "pearson_r": float(result.statistic),
            "p_value": float(result.pvalue), "x": x, "y": y}


def insights_of(repository: Any, trust_policy: Any, *, service: str | None = None) -> Insights:
    """Load the verified history (of ``service``, or of every service) and learn from it.

    Raises:
        AfdpError: as :func:`afdp.learn.history.load_history` raises.
    """
    from afdp.learn.source import history_of

    history = history_of(repository, trust_policy, service=service)
    return learn_insights(history.rows, service=service, dataset_digest=history.digest, excluded=len(history.excluded))


# --- plots and HTML --------------------------------------------------------------------


def _svg(series: list[dict[str, Any]], *, title: str, labels: Sequence[str], ylabel: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 2.6))
    axes = figure.add_subplot()
    means = [s["mean"] if s["mean"] is not None else 0.0 for s in series]
    bars = axes.bar(range(len(series)), means, color=["#4a78b5" if s["n"] else "#cccccc" for s in series])
    for bar, item in zip(bars, series, strict=True):
        axes.annotate(f"n={item['n']}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                      ha="center", va="bottom", fontsize=6)
    # Labels are evidence text (metric names, change kinds): hidden characters shown as
    # escapes (matplotlib copies text into the SVG, comments included), "$...$" as itself,
    # never read as mathtext.
    axes.set_xticks(range(len(series)), [visible(label) for label in labels], fontsize=7, parse_math=False)
    axes.set_title(visible(title), fontsize=9, parse_math=False)
    axes.set_ylabel(visible(ylabel), fontsize=8, parse_math=False)
    axes.axhline(0, color="#888888", linewidth=0.6)
    figure.tight_layout()
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def plots(found: Insights) -> list[tuple[str, str]]:
    """Return ``(title, inline SVG)`` plots of the primary outcome by hour, weekday and kind."""
    if not found.outcomes:
        return []
    outcome = found.outcomes[0]
    ylabel = "share degraded" if outcome == "degraded" else f"mean {outcome}"
    out = [
        ("by hour of day (UTC)", _svg(list(found.by_hour[outcome]), title=f"{ylabel} by hour (UTC)",
                                      labels=[str(h) for h in range(24)], ylabel=ylabel)),
        ("by weekday (UTC)", _svg(list(found.by_weekday[outcome]), title=f"{ylabel} by weekday (UTC)",
                                  labels=[d[:3] for d in WEEKDAYS], ylabel=ylabel)),
    ]
    kinds = list(found.by_kind.get(outcome, []))
    if kinds:
        out.append(("by change kind", _svg(kinds, title=f"{ylabel} by change kind",
                                           labels=[str(k["group"]) for k in kinds], ylabel=ylabel)))
    return out


def render_html(found: Insights) -> str:
    """Return a self-contained HTML page: the insights table and the plots (inline SVG)."""
    esc = visible_html
    rows = []
    for item in found.insights:
        if item.status != "computed":
            continue
        interval = f"[{item.interval[0]:+.4g}, {item.interval[1]:+.4g}]" if item.interval else ""
        rows.append(
            f"<tr class=\"{'notable' if item.notable else ''}\"><td>{esc(item.dimension)}</td><td>{esc(item.group)}</td>"
            f"<td>{esc(item.outcome)}</td><td>{item.support} / {item.rest}</td>"
            f"<td>{item.group_value:.4g}</td><td>{item.rest_value:.4g}</td><td>{item.difference:+.4g} {interval}</td>"
            f"<td>{item.p_value:.3g}</td></tr>"
        )
    figures = "".join(f"<h3>{esc(title)}</h3><figure>{svg}</figure>" for title, svg in plots(found))
    title = f"AFDP insights: {found.service or 'all services'}"
    return (
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>" + esc(title) + "</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:3px 6px;font-size:13px}tr.notable{background:#fff3cd}</style></head><body>"
        f"<h1>{esc(title)}</h1><p>{found.rows} verified deployments; {found.excluded} excluded; dataset sha256 "
        f"<code>{esc(found.dataset_digest or '-')}</code></p>"
        "<table><tr><th>dimension</th><th>group</th><th>outcome</th><th>support (group / rest)</th>"
        "<th>group</th><th>rest</th><th>difference [95% CI]</th><th>p</th></tr>" + "".join(rows) + "</table>"
        + figures + "</body></html>"
    )


__all__ = [
    "MIN_SUPPORT",
    "NOT_ENOUGH",
    "Insight",
    "Insights",
    "compare",
    "correlations",
    "insights_of",
    "learn_insights",
    "outcomes_of",
    "part_of_day",
    "plots",
    "render_html",
]
