"""Numbers as a reader expects them: each metric in its unit, at a sensible scale.

Evidence keeps raw base-unit numbers (``0.0476`` seconds, ``0.0088`` as a ratio); the
report shows them the way workflows write thresholds and the CLI prints results:
``47.6 ms``, ``0.88%``, ``9.99/s``. One :class:`Scale` is chosen per metric (from the
magnitudes it shows), so a metric's baseline, impact, change and plot axis all use the
same scale and can be compared at a glance. The JSON report stays raw.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

NBSP = "\u00a0"

# unit symbol -> seconds
_TIME = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
# display scales for time, from the largest: (seconds per display unit, symbol, shown while magnitude >= bound)
_TIME_SCALES = (
    (3600.0, "h", 7200.0),
    (60.0, "min", 120.0),
    (1.0, "s", 1.0),
    (1e-3, "ms", 1e-3),
    (1e-6, "µs", 0.0),
)
_BYTES = {
    "B": 1.0,
    "kB": 1e3,
    "KB": 1e3,
    "MB": 1e6,
    "GB": 1e9,
    "TB": 1e12,
    "KiB": 1024.0,
    "MiB": 1024.0**2,
    "GiB": 1024.0**3,
    "TiB": 1024.0**4,
}
_BYTE_SCALES = ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB"), (1.0, "B"))
_PLAIN = {"", "count", "1", "number", "requests", "events", "users", "sessions", "rows"}


@dataclass(frozen=True)
class Scale:
    """How to show raw values of one metric: ``raw * factor`` in ``symbol``.

    ``joined`` symbols follow the number directly (``0.88%``, ``9.99/s``, ``2×``); the
    others after a no-break space (``47.6 ms``).
    """

    factor: float
    symbol: str
    joined: bool = False

    def convert(self, raw: float) -> float:
        """Return ``raw`` in display units."""
        return raw * self.factor

    def suffix(self) -> str:
        """Return the symbol as it follows a number ('' when unitless)."""
        if not self.symbol:
            return ""
        return self.symbol if self.joined else NBSP + self.symbol

    def show(self, raw: float | None, *, signed: bool = False) -> str:
        """Return ``raw`` as text in this scale (``-`` for None), with a sign if asked."""
        if raw is None or not math.isfinite(raw):
            return "-"
        text = significant(self.convert(raw))
        if signed and raw > 0:
            text = "+" + text
        return text.replace("-", "\u2212") + self.suffix()

    @property
    def axis_label(self) -> str:
        """Return the unit for an axis title (``ms``, ``%``, ``per second``), or ''."""
        if self.symbol.startswith("/"):
            return "per " + {"/s": "second", "/min": "minute", "/h": "hour"}.get(
                self.symbol, self.symbol[1:]
            )
        return self.symbol


def scale_for(unit: str, values: Iterable[float | None] = ()) -> Scale:
    """Return the display scale for a metric in ``unit`` showing ``values`` (raw).

    Time is shown in the largest unit the typical magnitude reaches (seconds under one
    second become milliseconds), ratios and fractions as percent, rates as ``/s``, bytes
    in decimal multiples; an unknown unit is kept as written.
    """
    unit = (unit or "").strip()
    finite = [abs(v) for v in values if v is not None and math.isfinite(v)]
    magnitude = max(finite) if finite else 0.0
    if unit in _TIME:
        seconds = magnitude * _TIME[unit]
        if seconds == 0:
            return Scale(1.0, unit)
        for per, symbol, bound in _TIME_SCALES:
            if seconds >= bound:
                return Scale(_TIME[unit] / per, symbol)
        return Scale(_TIME[unit] / 1e-6, "µs")
    if unit in ("ratio", "fraction"):
        return Scale(100.0, "%", joined=True)
    if unit in ("%", "percent"):
        return Scale(1.0, "%", joined=True)
    if unit in ("x", "factor"):
        return Scale(1.0, "\u00d7", joined=True)
    if unit in _BYTES:
        size = magnitude * _BYTES[unit]
        for per, symbol in _BYTE_SCALES:
            if size >= per:
                return Scale(_BYTES[unit] / per, symbol)
        return Scale(_BYTES[unit], "B")
    if unit.startswith("1/"):
        return Scale(1.0, "/" + unit[2:], joined=True)
    if unit in _PLAIN:
        return Scale(1.0, "")
    return Scale(1.0, unit)


def significant(value: float, digits: int = 3) -> str:
    """Return ``value`` with about ``digits`` significant digits, never in e-notation
    for everyday magnitudes (``47.6``, ``0.0123``, ``200``, ``12,345``)."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    magnitude = abs(value)
    if magnitude >= 10**digits:
        return f"{value:,.0f}"
    if magnitude < 1e-4:
        return f"{value:.2g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(magnitude)))
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def percent(fraction: float | None) -> str:
    """Return a relative change (0.25) as signed percent (``+25%``), ``-`` for None."""
    if fraction is None or not math.isfinite(fraction):
        return "-"
    shown = fraction * 100
    text = f"{shown:,.1f}" if abs(shown) >= 1 else significant(shown, 2)
    if fraction > 0:
        text = "+" + text
    return text.replace("-", "\u2212") + "%"


def p_value(p: float | None) -> str:
    """Return a p-value compactly (``0.888``, ``0.012``, ``4.5e-11``), ``-`` for None."""
    if p is None or not math.isfinite(p):
        return "-"
    if p == 0:
        return "0"
    if p < 0.001:
        return f"{p:.1e}".replace("e-0", "e-")
    return f"{p:.3f}"


@dataclass(frozen=True)
class Axis:
    """A plot axis: its range and the round values it is labelled at."""

    low: float
    high: float
    ticks: tuple[float, ...]
    step: float

    def label(self, value: float) -> str:
        """Return a tick label with the decimals the step needs (``0``, ``2.5``, ``0.02``)."""
        if value != 0 and self.step >= 1000:  # 2.5k, 10M: keeps labels inside the margin
            for divisor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
                if self.step >= divisor:
                    return f"{value / divisor:g}{suffix}".replace("-", "\u2212")
        power = math.floor(math.log10(self.step) + 1e-9)
        extra = 1 if round(self.step / 10**power, 6) == 2.5 else 0
        decimals = max(0, extra - power)
        if value != 0 and decimals > 5:  # tiny steps: as many digits as tell ticks apart
            digits = max(1, math.floor(math.log10(abs(value)) + 1e-9) - power + 1 + extra)
            mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
            return f"{mantissa}e{int(exponent)}".replace("-", "\u2212")
        text = f"{value:,.{decimals}f}"
        if text.lstrip("-").strip("0.,") == "":
            text = "0"
        return text.replace("-", "\u2212")


def nice_step(span: float, intervals: int) -> float:
    """Return a round step (1, 2, 2.5 or 5 times a power of ten) cutting ``span`` in
    about ``intervals`` parts."""
    raw = span / max(intervals, 1)
    power = 10 ** math.floor(math.log10(raw))
    for multiple in (1, 2, 2.5, 5, 10):
        if raw <= multiple * power * (1 + 1e-9):
            return multiple * power
    return 10 * power


def value_axis(values: Iterable[float], *, intervals: int = 4) -> Axis:
    """Return a y axis over ``values`` (display units): round ticks, and zero as the
    floor for non-negative data whose minimum is near zero (at most half the maximum),
    so a plot never dips below zero for data that cannot."""
    data = [v for v in values if math.isfinite(v)]
    if not data:
        return Axis(0.0, 1.0, (0.0, 0.25, 0.5, 0.75, 1.0), 0.25)
    low, high = min(data), max(data)
    non_negative = low >= 0
    if high == low:
        pad = abs(low) * 0.1 or 1.0
        low, high = low - pad, high + pad
    if non_negative and (low < 0 or low <= 0.5 * high):
        low = 0.0
    step = nice_step(high - low, intervals)
    start = math.floor(low / step + 1e-9) * step
    end = math.ceil(high / step - 1e-9) * step
    if non_negative:
        start = max(start, 0.0)
    count = int(round((end - start) / step))
    digits = max(0, 3 - math.floor(math.log10(step)))  # rounds away float noise, not ticks
    ticks = tuple(round(start + i * step, digits) for i in range(count + 1))
    return Axis(start, end, ticks, step)


_TIME_STEPS = (
    1,
    2,
    5,
    10,
    15,
    20,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    10800,
    21600,
    43200,
    86400,
)


def time_ticks(start: float, end: float, *, most: int = 6) -> tuple[float, ...]:
    """Return round instants (unix seconds: every 5 s, 1 min, 1 h, ...) in [start, end]."""
    span = max(end - start, 1e-9)
    step = next((s for s in _TIME_STEPS if span / s <= most), None)
    if step is None:
        step = 86400 * math.ceil(span / most / 86400)
    first = math.ceil(start / step - 1e-9) * step
    return tuple(float(first + i * step) for i in range(int((end - first) // step) + 1))
