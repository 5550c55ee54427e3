"""What a deployment looks like to the learning code: its characteristics and their encoding.

A :class:`Planned` deployment is what is known *before* it happens: change size, number
of changed files, the kinds of change (``migration``, ``mobile``, ...), when (UTC hour
and weekday) and where (environment). A past deployment's row of the history
(:func:`afdp.learn.history.load_history`) gives the same characteristics through
:meth:`Planned.from_row`, so a planned deployment and a past one are compared on equal
terms. Outcomes (impacts, labels, decisions) are never features.

:func:`encode` turns characteristics into the numeric vector models see:

- ``log_change_size`` = ln(1 + change size), ``log_changed_files`` = ln(1 + count):
  sizes are skewed (a few huge changes), the logarithm keeps them from dominating;
  unknown is NaN (the gradient-boosting models handle missing values themselves);
- ``hour_sin``/``hour_cos`` and ``weekday_sin``/``weekday_cos``: the hour on a 24-hour
  circle and the weekday on a 7-day circle, so 23:00 is next to 00:00 and Sunday next
  to Monday;
- ``env=<name>``: one column per environment seen in training (1 or 0);
- ``kind=<name>``: one column per change kind seen in training (1 or 0).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from afdp.errors import UsageError

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
NUMERIC = ("log_change_size", "log_changed_files")
CYCLIC = ("hour_sin", "hour_cos", "weekday_sin", "weekday_cos")


def finite_number(value: Any) -> float | None:
    """Return ``value`` as a float if it is a finite JSON number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond a double
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class Planned:
    """The characteristics of a deployment, known before it runs.

    ``hour_utc`` 0-23 and ``weekday_utc`` 0 (Monday) - 6; ``kinds`` sorted, lower case.
    """

    change_size: float | None = None
    changed_files_count: float | None = None
    kinds: tuple[str, ...] = ()
    hour_utc: int | None = None
    weekday_utc: int | None = None
    environment: str | None = None
    #: The service's load when it is deployed (the baseline of its throughput), if known.
    load: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.hour_utc is not None and not 0 <= self.hour_utc <= 23:
            raise UsageError(f"hour {self.hour_utc} is not 0-23")
        if self.weekday_utc is not None and not 0 <= self.weekday_utc <= 6:
            raise UsageError(f"weekday {self.weekday_utc} is not 0 (Monday) - 6 (Sunday)")
        for name, value in (("change size", self.change_size), ("changed files", self.changed_files_count)):
            if value is not None and (not math.isfinite(value) or value < 0):
                raise UsageError(f"{name} {value} must be a number >= 0")

    @classmethod
    def of(
        cls,
        *,
        change_size: float | None = None,
        changed_files: float | None = None,
        kinds: Iterable[str] = (),
        at: datetime | None = None,
        environment: str | None = None,
        load: float | None = None,
    ) -> Planned:
        """Return the characteristics of a planned deployment (``at`` converted to UTC).

        Raises:
            UsageError: a naive ``at``, a negative size.
        """
        hour = weekday = None
        if at is not None:
            if at.tzinfo is None:
                raise UsageError("the planned time needs a timezone (e.g. 2026-12-07T14:00:00Z)")
            moment = at.astimezone(UTC)
            hour, weekday = moment.hour, moment.weekday()
        return cls(
            change_size=None if change_size is None else float(change_size),
            changed_files_count=None if changed_files is None else float(changed_files),
            kinds=normalize_kinds(kinds),
            hour_utc=hour,
            weekday_utc=weekday,
            environment=environment or None,
            load=load,
        )

    @classmethod
    def from_row(cls, row: Mapping[str, Any], *, load_column: str | None = None) -> Planned:
        """Return the characteristics of a past deployment from its history row."""
        hour = finite_number(row.get("hour_utc"))
        weekday = finite_number(row.get("weekday_utc"))
        kinds = row.get("changed_kinds") or ()
        return cls(
            change_size=finite_number(row.get("change_size")),
            changed_files_count=finite_number(row.get("changed_files_count")),
            kinds=normalize_kinds(kinds if isinstance(kinds, (list, tuple)) else ()),
            hour_utc=None if hour is None else int(hour),
            weekday_utc=None if weekday is None else int(weekday),
            environment=row.get("environment") if isinstance(row.get("environment"), str) else None,
            load=finite_number(row.get(load_column)) if load_column else None,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "change_size": self.change_size,
            "changed_files_count": self.changed_files_count,
            "changed_kinds": list(self.kinds),
            "hour_utc": self.hour_utc,
            "weekday_utc": self.weekday_utc,
            "weekday_name": None if self.weekday_utc is None else WEEKDAYS[self.weekday_utc],
            "environment": self.environment,
            "load": self.load,
        }


def normalize_kinds(kinds: Iterable[Any]) -> tuple[str, ...]:
    """Return the change kinds as a sorted tuple of distinct lower-case names."""
    return tuple(sorted({str(k).strip().lower() for k in kinds if str(k).strip()}))


#: The change kinds :func:`afdp.learn.history.classify_path` gives (the only ones a row holds).
CHANGE_KINDS = ("code", "config", "dependencies", "docs", "frontend", "infrastructure", "migration", "other", "test")


def parse_kinds(text: str | None) -> tuple[str, ...]:
    """Return the kinds of ``--kinds migration,config``.

    Raises:
        UsageError: a kind that no history row can hold (a typo would otherwise be
            matched against nothing and answered as if the change had no such kind).
    """
    kinds = normalize_kinds((text or "").split(","))
    unknown = [k for k in kinds if k not in CHANGE_KINDS]
    if unknown:
        raise UsageError(f"--kinds: unknown change kind {', '.join(map(repr, unknown))} (kinds: {', '.join(CHANGE_KINDS)})")
    return kinds


def cyclic(value: float, period: float) -> tuple[float, float]:
    angle = 2 * math.pi * value / period
    return math.sin(angle), math.cos(angle)


def chord(a: float, b: float, period: float) -> float:
    """Return the straight-line distance between two points of a circle of radius 1 (0..2)."""
    return 2 * abs(math.sin(math.pi * (a - b) / period))


#: The learning features a model can be given (an ``ml_predictor``'s ``features:`` selects
#: among them), in encoding order.
LEARNING_FEATURES = ("change_size", "changed_files_count", "hour_utc", "weekday_utc", "environment", "kinds", "load")


@dataclass(frozen=True)
class Encoding:
    """The columns a model was trained on (recorded with the model, so a prediction
    encodes a planned deployment exactly as the training rows were encoded).

    ``selected``: the learning features (:data:`LEARNING_FEATURES`) the model is given, in
    that order; None gives it every one (the load only with ``use_load``).
    """

    environments: tuple[str, ...]
    kinds: tuple[str, ...]
    use_load: bool = False
    selected: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.selected is not None:
            unknown = [f for f in self.selected if f not in LEARNING_FEATURES]
            if unknown or not self.selected:
                raise ValueError(
                    f"features {list(self.selected)!r}: not a non-empty list of {', '.join(LEARNING_FEATURES)}"
                )

    def _uses(self, feature: str) -> bool:
        if feature == "load":
            return self.use_load
        return self.selected is None or feature in self.selected

    def _groups(self, p: Planned | None) -> list[tuple[str, list[str], list[float]]]:
        nan = math.nan
        hour = cyclic(p.hour_utc, 24) if p is not None and p.hour_utc is not None else (nan, nan)
        day = cyclic(p.weekday_utc, 7) if p is not None and p.weekday_utc is not None else (nan, nan)
        size = p.change_size if p is not None else None
        files = p.changed_files_count if p is not None else None
        env = p.environment if p is not None else None
        kinds = p.kinds if p is not None else ()
        load = p.load if p is not None else None
        return [
            ("change_size", [NUMERIC[0]], [nan if size is None else math.log1p(size)]),
            ("changed_files_count", [NUMERIC[1]], [nan if files is None else math.log1p(files)]),
            ("hour_utc", list(CYCLIC[:2]), list(hour)),
            ("weekday_utc", list(CYCLIC[2:]), list(day)),
            ("environment", [f"env={e}" for e in self.environments],
             [float(env == e) if env is not None else nan for e in self.environments]),
            ("kinds", [f"kind={k}" for k in self.kinds], [float(k in kinds) for k in self.kinds]),
            ("load", ["load"], [nan if load is None else float(load)]),
        ]

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(c for name, cols, _ in self._groups(None) if self._uses(name) for c in cols)

    @classmethod
    def fit(cls, planned: Sequence[Planned], *, use_load: bool = False, selected: Sequence[str] | None = None) -> Encoding:
        chosen = None if selected is None else tuple(f for f in LEARNING_FEATURES if f in set(selected))
        return cls(
            environments=tuple(sorted({p.environment for p in planned if p.environment})),
            kinds=tuple(sorted({k for p in planned for k in p.kinds})),
            use_load=use_load and (chosen is None or "load" in chosen),
            selected=chosen,
        )

    def vector(self, p: Planned) -> list[float]:
        return [v for name, _, values in self._groups(p) if self._uses(name) for v in values]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "columns": list(self.columns),
            "environments": list(self.environments),
            "kinds": list(self.kinds),
            "use_load": self.use_load,
        }
        if self.selected is not None:  # (absent: every feature, as models recorded before it)
            out["selected"] = list(self.selected)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Encoding:
        """Raises: ValueError: ``selected`` names no learning feature, or an unknown one."""
        selected = data.get("selected")
        return cls(
            environments=tuple(str(e) for e in data.get("environments") or ()),
            kinds=tuple(str(k) for k in data.get("kinds") or ()),
            use_load=bool(data.get("use_load")),
            selected=None if selected is None else tuple(str(f) for f in selected),
        )


def metrics_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Return the metric names that have ``impact.<M>.*`` columns in ``rows`` (sorted)."""
    names: set[str] = set()
    for row in rows:
        for key in row:
            if key.startswith("impact.") and key.count(".") >= 2:
                names.add(key[len("impact.") : key.rindex(".")])
    return sorted(names)


def degraded(row: Mapping[str, Any]) -> bool | None:
    """Return whether a past deployment degraded any metric (None: no metric says)."""
    flags = [v for k, v in row.items() if k.startswith("impact.") and k.endswith(".degraded") and isinstance(v, bool)]
    if not flags:
        return None
    return any(flags)


def digests_of(row: Mapping[str, Any]) -> list[str]:
    """Return the record digests a row cites."""
    value = row.get("record_digests") or []
    return [str(d) for d in value] if isinstance(value, (list, tuple)) else []


#: ``money_per_hour`` is the money metric's baseline per hour; its unit's factor to
#: "per hour" is one of these (per second, minute, hour, day, week).
_PER_HOUR = (3600.0, 60.0, 1.0, 1 / 24, 1 / 168)


def money_lost_per_hour(row: Mapping[str, Any]) -> float | None:
    """Return the money lost per hour by a past deployment, or None when unknown.

    The history gives ``money_per_hour``: the baseline of the money-per-time metric, per
    hour. That metric is the one whose baseline, times its unit's per-hour factor, is
    exactly that number; money lost per hour is its decrease per hour
    (``-impact.<M>.increase x factor``). With no such metric, or more than one, None.
    """
    money = finite_number(row.get("money_per_hour"))
    if money is None or money == 0:
        return None
    found: list[float] = []
    for metric in metrics_of([row]):
        baseline = finite_number(row.get(f"impact.{metric}.baseline"))
        increase = finite_number(row.get(f"impact.{metric}.increase"))
        if baseline is None or increase is None or baseline == 0:
            continue
        if any(math.isclose(baseline * f, money, rel_tol=1e-9) for f in _PER_HOUR):
            factor = money / baseline
            found.append(-increase * factor)
    return found[0] if len(found) == 1 else None


_LOAD_WORDS = ("request", "throughput", "rps", "traffic", "load", "qps")


def load_column(rows: Sequence[Mapping[str, Any]]) -> str | None:
    """Return the column that measures the service's load when it was deployed, or None.

    A ``context.<C>`` column whose name says load, traffic, requests or throughput comes
    first; otherwise the baseline of such a metric (``impact.<M>.baseline``, e.g.
    ``requests_per_second``). The first such name in sorted order wins, so the choice is
    stable and recorded.
    """
    keys = sorted({k for row in rows for k, v in row.items() if finite_number(v) is not None})
    for prefix, suffix in (("context.", ""), ("impact.", ".baseline")):
        for key in keys:
            if key.startswith(prefix) and key.endswith(suffix):
                name = key[len(prefix) : len(key) - len(suffix)].lower()
                if any(w in name for w in _LOAD_WORDS):
                    return key
    return None


__all__ = [
    "CHANGE_KINDS",
    "LEARNING_FEATURES",
    "CYCLIC",
    "NUMERIC",
    "WEEKDAYS",
    "Encoding",
    "Planned",
    "chord",
    "cyclic",
    "degraded",
    "digests_of",
    "load_column",
    "metrics_of",
    "money_lost_per_hour",
    "normalize_kinds",
    "parse_kinds",
]
