"""Similar past deployments: the nearest rows of the verified history, and why.

The distance between a planned deployment *p* and a past one *q* is the square root of a
sum of per-feature terms, each 0 when the two agree:

==================  ===========================================================  ==========
feature             term                                                         unknown
==================  ===========================================================  ==========
change size         ((ln(1+p) - ln(1+q)) / s)^2, s = the history's standard       1
                    deviation of ln(1+size) (1 when it has none)
changed files       half of the same, on the number of changed files (it moves    0.5
                    with the change size, so it counts half)
hour (UTC)          chord^2 / 2 on a 24-hour circle, chord = 2 sin(pi |dh| / 24):  1
                    0 same hour, 0.13 two hours off, 0.5 four, 1 six, 2 twelve
weekday (UTC)       chord^2 / 4 on a 7-day circle: 0 same day, 0.19 one day off,  0.5
                    about 1 three days off
environment         0 when equal, 1 when not                                      1 (0.5 both)
change kinds        Jaccard distance of the two sets (0 when both are empty)      -
load                standardized like sizes; only when the planned load is given   1
==================  ===========================================================  ==========

A feature *matched* when the two agree closely: sizes within half a standard
deviation, hours at most two hours apart, the same weekday, the same environment, kind
sets with a Jaccard distance of at most 1/4. Those are the reasons printed next to each
neighbour.

"This pattern happened N times before": N is the number of past deployments within
:data:`RADIUS` (1.0) of the planned one: e.g. everything equal but the hour six hours
off, or the size one standard deviation off. Of those N, how many degraded (any metric
judged degraded in their verified analysis) is counted too.

Every neighbour cites the record digests of its row; the result cites the dataset
digest of the history it searched.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from afdp.errors import NotFoundError, UsageError
from afdp.learn.features import (
    WEEKDAYS,
    Planned,
    chord,
    degraded,
    digests_of,
    load_column,
)

RADIUS = 1.0
#: A term at most this much counts as a match (see the module doc).
MATCH: dict[str, float] = {
    "change_size": 0.25,
    "changed_files": 0.125,
    "hour": chord(0, 2, 24) ** 2 / 2 + 1e-9,
    "weekday": 0.0,
    "environment": 0.0,
    "kinds": 0.25,
    "load": 0.25,
}
DEFAULT_K = 5


@dataclass(frozen=True)
class Scales:
    """Standard deviations of the standardized features, measured on the history."""

    change_size: float = 1.0
    changed_files: float = 1.0
    load: float = 1.0

    @classmethod
    def of(cls, planned: Sequence[Planned]) -> Scales:
        def spread(values: list[float]) -> float:
            if len(values) < 2:
                return 1.0
            sd = statistics.pstdev(values)
            return sd if sd > 1e-9 else 1.0

        return cls(
            change_size=spread([math.log1p(p.change_size) for p in planned if p.change_size is not None]),
            changed_files=spread(
                [math.log1p(p.changed_files_count) for p in planned if p.changed_files_count is not None]
            ),
            load=spread([p.load for p in planned if p.load is not None]),
        )


def terms(p: Planned, q: Planned, scales: Scales) -> dict[str, float]:
    """Return each feature's term of the distance between ``p`` and ``q`` (see module doc)."""
    out: dict[str, float] = {}

    def standardized(a: float | None, b: float | None, scale: float, log: bool = True) -> float:
        if a is None or b is None:
            return 1.0
        if log:
            a, b = math.log1p(a), math.log1p(b)
        return ((a - b) / scale) ** 2

    out["change_size"] = standardized(p.change_size, q.change_size, scales.change_size)
    out["changed_files"] = standardized(p.changed_files_count, q.changed_files_count, scales.changed_files) / 2
    out["hour"] = 1.0 if p.hour_utc is None or q.hour_utc is None else chord(p.hour_utc, q.hour_utc, 24) ** 2 / 2
    out["weekday"] = (
        0.5 if p.weekday_utc is None or q.weekday_utc is None else chord(p.weekday_utc, q.weekday_utc, 7) ** 2 / 4
    )
    if p.environment is None and q.environment is None:
        out["environment"] = 0.5
    else:
        out["environment"] = 0.0 if p.environment == q.environment else 1.0
    a, b = set(p.kinds), set(q.kinds)
    out["kinds"] = 0.0 if not (a | b) else 1.0 - len(a & b) / len(a | b)
    if p.load is not None:
        out["load"] = standardized(p.load, q.load, scales.load, log=False)
    return {k: round(v, 12) for k, v in out.items()}


def _reason(name: str, q: Planned) -> str:
    if name == "change_size":
        return f"change size {q.change_size:g}"
    if name == "changed_files":
        return f"{q.changed_files_count:g} changed files"
    if name == "hour":
        return f"hour {q.hour_utc:02d} UTC"
    if name == "weekday":
        return f"{WEEKDAYS[q.weekday_utc or 0]}"
    if name == "environment":
        return f"environment {q.environment}"
    if name == "kinds":
        return "kinds " + (", ".join(q.kinds) if q.kinds else "none")
    return f"load {q.load:g}"


@dataclass(frozen=True)
class Neighbour:
    """One past deployment near the planned one."""

    deployment: str
    distance: float
    matched: tuple[str, ...]
    terms: Mapping[str, float]
    characteristics: Planned
    degraded: bool | None
    row: Mapping[str, Any]
    record_digests: tuple[str, ...]

    @property
    def imported(self) -> bool:
        """True when ``afdp import`` wrote this deployment's evidence (not a live run)."""
        return self.row.get("imported") is True

    def to_json(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment,
            "imported": self.imported,
            "distance": self.distance,
            "matched": list(self.matched),
            "terms": dict(self.terms),
            "characteristics": self.characteristics.to_json(),
            "deployed_at": self.row.get("deployed_at"),
            "degraded": self.degraded,
            "label": self.row.get("label"),
            "decision": self.row.get("decision"),
            "money_per_hour": self.row.get("money_per_hour"),
            "record_digests": list(self.record_digests),
        }


@dataclass(frozen=True)
class Similar:
    """The nearest past deployments and how often the pattern happened before."""

    service: str
    query: Planned
    query_source: str
    neighbours: tuple[Neighbour, ...]
    radius: float
    within: tuple[Neighbour, ...]
    considered: int
    dataset_digest: str | None = None
    excluded: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def pattern(self) -> dict[str, Any]:
        flags = [n.degraded for n in self.within]
        return {
            "radius": self.radius,
            "times": len(self.within),
            "degraded": sum(1 for f in flags if f is True),
            "not_degraded": sum(1 for f in flags if f is False),
            "unknown": sum(1 for f in flags if f is None),
            "imported": sum(1 for n in self.within if n.imported),
            "deployments": [n.deployment for n in self.within],
            "sentence": self.sentence(),
        }

    def sentence(self) -> str:
        n = len(self.within)
        bad = sum(1 for x in self.within if x.degraded is True)
        if n == 0:
            return f"this pattern has not happened before (no past deployment within distance {self.radius:g})"
        imported = sum(1 for x in self.within if x.imported)
        return (
            f"this pattern happened {n} time{'s' if n != 1 else ''} before "
            f"(within distance {self.radius:g}); {bad} of them degraded"
            + (f"; {imported} of them imported from history, not captured live" if imported else "")
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "query": {"source": self.query_source, **self.query.to_json()},
            "neighbours": [n.to_json() for n in self.neighbours],
            "pattern": self.pattern,
            "considered": self.considered,
            "excluded": self.excluded,
            "dataset_digest": self.dataset_digest,
            "distance": "sqrt(sum of per-feature terms); see docs/learning.md#similar",
            "notes": list(self.notes),
        }


def find_similar(
    rows: Sequence[Mapping[str, Any]],
    query: Planned,
    *,
    service: str,
    k: int = DEFAULT_K,
    radius: float = RADIUS,
    exclude: str | None = None,
    query_source: str = "planned",
    dataset_digest: str | None = None,
    excluded: int = 0,
) -> Similar:
    """Return the ``k`` past deployments of ``rows`` nearest to ``query``, and every one
    within ``radius`` (the pattern). ``exclude`` leaves one deployment out (the query's own).

    Raises:
        UsageError: ``k`` < 1 or a negative radius.
    """
    if k < 1:
        raise UsageError("-k must be at least 1")
    if not (radius >= 0 and math.isfinite(radius)):
        raise UsageError("the radius must be a finite number >= 0")
    column = load_column(rows) if query.load is not None else None
    pool = [r for r in rows if str(r.get("deployment")) != exclude]
    characteristics = [Planned.from_row(r, load_column=column) for r in pool]
    scales = Scales.of(characteristics)
    found: list[Neighbour] = []
    for row, q in zip(pool, characteristics, strict=True):
        parts = terms(query, q, scales)
        distance = math.sqrt(sum(parts.values()))
        matched = tuple(
            _reason(name, q)
            for name, value in parts.items()
            if value <= MATCH[name] and not (name == "environment" and q.environment is None)
            and not (name in ("change_size", "changed_files", "load") and value == 1.0)
        )
        found.append(
            Neighbour(
                deployment=str(row.get("deployment")),
                distance=round(distance, 9),
                matched=matched,
                terms=parts,
                characteristics=q,
                degraded=degraded(row),
                row=row,
                record_digests=tuple(digests_of(row)),
            )
        )
    # Ties broken by the deployment's time, then its name: the same history gives the
    # same answer.
    found.sort(key=lambda n: (n.distance, str(n.row.get("deployed_at") or ""), n.deployment))
    notes = []
    if column:
        notes.append(f"load read from {column}")
    return Similar(
        service=service,
        query=query,
        query_source=query_source,
        neighbours=tuple(found[:k]),
        radius=radius,
        within=tuple(n for n in found if n.distance <= radius),
        considered=len(pool),
        dataset_digest=dataset_digest,
        excluded=excluded,
        notes=tuple(notes),
    )


def row_for(rows: Sequence[Mapping[str, Any]], *, deployment: str | None = None, commit: str | None = None) -> Mapping[str, Any]:
    """Return the history row of a past deployment (by id, or by commit or its prefix).

    Raises:
        NotFoundError: no verified deployment has that id or commit.
        UsageError: a commit prefix that names several deployments.
    """
    if deployment is not None:
        for row in rows:
            if row.get("deployment") == deployment:
                return row
        raise NotFoundError(f"no verified deployment {deployment!r} in the history")
    assert commit is not None
    wanted = commit.lower()
    hits = [r for r in rows if isinstance(r.get("commit"), str) and r["commit"].lower().startswith(wanted)]
    if not hits:
        raise NotFoundError(f"no verified deployment of commit {commit!r} in the history")
    if len({r["commit"] for r in hits}) > 1:
        raise UsageError(f"commit prefix {commit!r} names several commits; give more of it")
    return max(hits, key=lambda r: str(r.get("deployed_at") or ""))


def similar_deployments(
    repository: Any,
    trust_policy: Any,
    *,
    service: str,
    deployment: str | None = None,
    commit: str | None = None,
    planned: Planned | None = None,
    k: int = DEFAULT_K,
    radius: float = RADIUS,
) -> Similar:
    """Load the verified history of ``service`` and return what is most like the query:
    a past deployment (``deployment`` or ``commit``) or ``planned`` characteristics.

    Raises:
        UsageError: not exactly one of deployment / commit / planned.
        NotFoundError: the past deployment is not in the verified history.
        AfdpError: as :func:`afdp.learn.history.load_history` raises.
    """
    from afdp.learn.source import history_of

    if sum(x is not None for x in (deployment, commit, planned)) != 1:
        raise UsageError("give one of --deployment, --commit or the planned characteristics")
    history = history_of(repository, trust_policy, service=service)
    rows = history.rows
    source = "planned"
    exclude = None
    if planned is None:
        row = row_for(rows, deployment=deployment, commit=commit)
        planned = Planned.from_row(row)
        exclude = str(row.get("deployment"))
        source = f"deployment {exclude}"
    return find_similar(
        rows,
        planned,
        service=service,
        k=k,
        radius=radius,
        exclude=exclude,
        query_source=source,
        dataset_digest=history.digest,
        excluded=len(history.excluded),
    )


__all__ = [
    "DEFAULT_K",
    "MATCH",
    "RADIUS",
    "Neighbour",
    "Scales",
    "Similar",
    "find_similar",
    "row_for",
    "similar_deployments",
    "terms",
]
