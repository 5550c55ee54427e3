"""Durations and quantities with units: ``5_minutes``, ``2m``, ``10ms``, ``0.5%``, ``$1000_per_hour``.

Workflows write time windows and thresholds the way people say them. This module turns
that text into typed values that keep the unit as written (for plans and evidence) and
carry the value in the dimension's base unit (for comparisons):

- time: seconds (``ms``, ``s``, ``m``, ``h``, ``d`` and the words ``seconds``, ``minutes``...);
- ratio: a fraction (``50%`` is 0.5, ``2x`` is 2.0);
- currency: per currency symbol (``$`` USD, ``€`` EUR, ``£`` GBP), optionally per time
  (``$1000_per_hour``, ``$5/min``);
- bytes (``KB`` ... ``TiB``), and plain counts, optionally per time (``120_per_minute``).

Negative durations, zero-length windows and words like ``forever`` are refused with a
message saying what was expected; nothing here ever evaluates text as code.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# A year bounds every duration: anything longer is almost certainly a typo, and a bound
# keeps arithmetic on milliseconds far away from float precision limits.
MAX_DURATION_SECONDS = 366 * 24 * 3600

DURATION_EXAMPLES = "a positive number and a unit, e.g. 30s, 2m, 1h, 5_minutes, 24_hours"
QUANTITY_EXAMPLES = "a number with an optional unit, e.g. 10ms, 0.5%, 2x, $1000_per_hour, 250"


class UnitError(ValueError):
    """Text that is not a valid duration, unit or quantity; ``str()`` says what was expected."""


# unit spelling -> (canonical symbol, dimension, factor to the dimension's base unit)
_TIME_UNITS: dict[str, tuple[str, float]] = {}
for _names, _symbol, _factor in (
    (("ns", "nanosecond", "nanoseconds"), "ns", 1e-9),
    (("us", "µs", "microsecond", "microseconds"), "us", 1e-6),
    (("ms", "millisecond", "milliseconds", "msec", "msecs"), "ms", 1e-3),
    (("s", "sec", "secs", "second", "seconds"), "s", 1.0),
    (("m", "min", "mins", "minute", "minutes"), "min", 60.0),
    (("h", "hr", "hrs", "hour", "hours"), "h", 3600.0),
    (("d", "day", "days"), "d", 86400.0),
    (("w", "week", "weeks"), "w", 604800.0),
):
    for _name in _names:
        _TIME_UNITS[_name] = (_symbol, _factor)

_BYTE_UNITS: dict[str, float] = {
    "B": 1,
    "KB": 1e3,
    "MB": 1e6,
    "GB": 1e9,
    "TB": 1e12,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
}
_RATIO_UNITS: dict[str, float] = {
    "%": 0.01,
    "x": 1.0,
    "percent": 0.01,
    "ratio": 1.0,
    "fraction": 1.0,
}
_CURRENCIES: dict[str, str] = {"$": "USD", "€": "EUR", "£": "GBP"}
_COUNT_WORDS = frozenset({"count", "requests", "req", "events", "users", "sessions", "rows"})

# Durations: digits (``_`` allowed between digits), optional fraction, optional ``_`` or
# space, then a unit word. The sign is captured only to give a precise message.
_DURATION = re.compile(
    r"(?P<sign>[-+]?)\s*(?P<number>[0-9](?:_?[0-9])*(?:\.[0-9]+)?)[ _]?(?P<unit>[A-Za-zµ]+)"
)
_QUANTITY = re.compile(
    r"(?P<sign>[-+]?)(?P<currency>[$€£]?)(?P<number>[0-9](?:_?[0-9])*(?:\.[0-9]+)?)"
    r"(?:[ _]?(?P<unit>%|[A-Za-zµ]+))?(?:(?:_per_|/)(?P<per>[A-Za-z]+))?"
)


@dataclass(frozen=True, order=True)
class Duration:
    """A positive length of time, exact to the millisecond, keeping the text as written.

    Ordered and compared by ``milliseconds``; ``text`` is what the workflow said
    (``5_minutes``) so plans and evidence show the author's words.
    """

    milliseconds: int
    text: str = ""

    @property
    def seconds(self) -> float:
        """Return the duration in seconds."""
        return self.milliseconds / 1000

    def __str__(self) -> str:
        return self.text or format_duration(self.milliseconds)

    def to_json(self) -> dict[str, object]:
        """Return ``{"text": ..., "seconds": ...}`` (the serialized form in plans)."""
        seconds = self.milliseconds / 1000
        return {"text": str(self), "seconds": int(seconds) if seconds.is_integer() else seconds}


@dataclass(frozen=True)
class Unit:
    """A unit: canonical ``symbol`` (``ms``, ``%``, ``USD/h``), its ``dimension`` and ``factor``.

    ``dimension`` is a short string (``time``, ``ratio``, ``bytes``, ``number``, ``USD``,
    ``USD/time``, ``number/time``); two values compare only if their dimensions are equal.
    ``factor`` converts a value in this unit to the dimension's base unit.
    """

    symbol: str
    dimension: str
    factor: float = 1.0


DIMENSIONLESS = Unit("", "number", 1.0)


@dataclass(frozen=True)
class Quantity:
    """A number with a unit (``10ms``, ``0.5%``, ``$1000_per_hour``, ``2x``, ``250``).

    ``value`` is the number as written, ``unit`` how it was written, ``base`` the value in
    the dimension's base unit (seconds, fraction, currency per second, bytes).
    """

    value: float
    unit: Unit
    text: str = ""

    @property
    def dimension(self) -> str:
        """Return the dimension, e.g. ``time`` or ``ratio``."""
        return self.unit.dimension

    @property
    def base(self) -> float:
        """Return the value converted to the dimension's base unit."""
        return self.value * self.unit.factor

    def __str__(self) -> str:
        if self.text:
            return self.text
        number = _format_number(self.value)
        return f"{number}{self.unit.symbol}" if self.unit.symbol else number

    def to_json(self) -> dict[str, object]:
        """Return ``{"text", "value", "unit", "dimension"}`` (the serialized form in plans)."""
        return {
            "text": str(self),
            "value": self.value,
            "unit": self.unit.symbol,
            "dimension": self.unit.dimension,
        }


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(value)


def format_duration(milliseconds: int) -> str:
    """Return a compact human text for a duration (``1h30m``, ``45s``, ``250ms``)."""
    if milliseconds % 1000:
        return f"{milliseconds}ms"
    seconds = milliseconds // 1000
    parts = []
    for symbol, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{symbol}")
            seconds %= size
    return "".join(parts) or "0s"


def _number(text: str) -> float:
    value = float(text.replace("_", ""))
    if not math.isfinite(value):
        raise UnitError(f"number {text!r} is out of range")
    return value


def parse_duration(text: object, *, allow_zero: bool = False) -> Duration:
    """Parse a duration such as ``5_minutes``, ``2m``, ``30s``, ``1.5h`` or ``500ms``.

    Returns:
        The :class:`Duration`, keeping ``text`` as written.

    Raises:
        UnitError: not a string in that form, negative, zero (unless ``allow_zero``),
            an unknown unit, finer than a millisecond, or longer than a year.
    """
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise UnitError(f"expected a duration ({DURATION_EXAMPLES}), got {_kind(text)}")
    if not isinstance(text, str):
        raise UnitError(
            f"duration {text!r} has no unit; expected {DURATION_EXAMPLES} (write {text}s for seconds)"
        )
    raw = text.strip()
    match = _DURATION.fullmatch(raw)
    if match is None:
        if re.fullmatch(r"[-+]?[0-9][0-9_]*(\.[0-9]+)?", raw):
            raise UnitError(f"duration {text!r} has no unit; expected {DURATION_EXAMPLES}")
        if raw.lower() in {"forever", "infinite", "infinity", "inf", "never", "unlimited"}:
            raise UnitError(
                f"{text!r} is not a duration: every wait and window must end; expected {DURATION_EXAMPLES}"
            )
        raise UnitError(f"{text!r} is not a duration; expected {DURATION_EXAMPLES}")
    if match["sign"] == "-":
        raise UnitError(
            f"negative duration {text!r}: durations must be positive, e.g. {raw.lstrip('-+ ')}"
        )
    unit = _TIME_UNITS.get(match["unit"]) or _TIME_UNITS.get(match["unit"].lower())
    if unit is None:
        raise UnitError(
            f"unknown time unit {match['unit']!r} in {text!r}; use ms, s, m, h, d or the words "
            "milliseconds, seconds, minutes, hours, days"
        )
    seconds = _number(match["number"]) * unit[1]
    if seconds > MAX_DURATION_SECONDS:
        raise UnitError(f"duration {text!r} is longer than a year; that is not supported")
    milliseconds = seconds * 1000
    rounded = round(milliseconds)
    if abs(milliseconds - rounded) > 1e-6:
        raise UnitError(f"duration {text!r} is finer than a millisecond; that is not supported")
    if rounded == 0 and not allow_zero:
        raise UnitError(f"duration {text!r} is zero; expected {DURATION_EXAMPLES}")
    return Duration(int(rounded), raw)


def parse_unit(text: str, *, within: str | None = None) -> Unit:
    """Parse a unit on its own (``ms``, ``%``, ``x``, ``$``, ``$/hour``, ``MB``, ``count``, ``1/s``).

    An empty string is the dimensionless unit. ``within`` is the whole text the unit
    came from, used in messages.

    Raises:
        UnitError: an unknown unit.
    """
    raw = text.strip()
    whole = within or text
    if raw in ("", "1", "number", "count") or raw in _COUNT_WORDS:
        return DIMENSIONLESS
    per: str | None = None
    for separator in ("_per_", "/"):
        if separator in raw:
            raw, per = raw.split(separator, 1)
            break
    base = _single_unit(raw or "1", whole)
    if per is None:
        return base
    per_unit = _TIME_UNITS.get(per) or _TIME_UNITS.get(per.lower())
    if per_unit is None:
        raise UnitError(
            f"unknown time unit {per!r} after 'per' in {whole!r}; use s, minute, hour, day"
        )
    if base.dimension in ("time", "ratio"):
        raise UnitError(
            f"unit {whole!r} is not supported: only amounts, counts and bytes can be per time"
        )
    symbol = f"{base.symbol}/{per_unit[0]}" if base.symbol else f"1/{per_unit[0]}"
    return Unit(symbol, f"{base.dimension}/time", base.factor / per_unit[1])


def _single_unit(raw: str, text: str) -> Unit:
    if raw in ("1",) or raw in _COUNT_WORDS:
        return DIMENSIONLESS
    if raw in _CURRENCIES:
        return Unit(raw, _CURRENCIES[raw], 1.0)
    if raw.upper() in _CURRENCIES.values():
        return Unit(raw.upper(), raw.upper(), 1.0)
    if raw in _RATIO_UNITS:
        return Unit("%" if raw == "percent" else raw, "ratio", _RATIO_UNITS[raw])
    if raw in _BYTE_UNITS:
        return Unit(raw, "bytes", _BYTE_UNITS[raw])
    time = _TIME_UNITS.get(raw) or _TIME_UNITS.get(raw.lower())
    if time is not None:
        return Unit(time[0], "time", time[1])
    raise UnitError(
        f"unknown unit {raw!r} in {text!r}; expected a time unit (ms, s, m, h), %, x, a "
        "currency ($, €, £), bytes (KB, MB, GiB) or a count, optionally per time ($/hour)"
    )


def parse_quantity(text: object, *, allow_negative: bool = True) -> Quantity:
    """Parse a threshold or literal: ``10ms``, ``0.5%``, ``2x``, ``$1000_per_hour``, ``250``.

    Plain YAML numbers are dimensionless quantities.

    Returns:
        The :class:`Quantity`, keeping ``text`` as written.

    Raises:
        UnitError: not in that form, an unknown unit, or negative when ``allow_negative``
            is false.
    """
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise UnitError(f"expected a quantity ({QUANTITY_EXAMPLES}), got {_kind(text)}")
    if not isinstance(text, str):
        value = float(text)
        if not math.isfinite(value):
            raise UnitError(f"number {text!r} is out of range")
        if value < 0 and not allow_negative:
            raise UnitError(f"negative value {text!r}: expected zero or more")
        return Quantity(value, DIMENSIONLESS, "")
    raw = text.strip()
    match = _QUANTITY.fullmatch(raw)
    if match is None:
        raise UnitError(f"{text!r} is not a quantity; expected {QUANTITY_EXAMPLES}")
    if match["sign"] == "-" and not allow_negative:
        raise UnitError(f"negative value {text!r}: expected zero or more")
    value = _number(match["number"]) * (-1 if match["sign"] == "-" else 1)
    unit_text = (match["currency"] or "") + (match["unit"] or "")
    if match["currency"] and match["unit"]:
        raise UnitError(f"{text!r} has both a currency and the unit {match['unit']!r}")
    if match["per"]:
        unit_text = f"{unit_text}/{match['per']}"
    return Quantity(value, parse_unit(unit_text, within=raw), raw)


def _kind(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__
