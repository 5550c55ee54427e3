"""What every collector shares: the collected data, the failure, clocks, secrets, windows.

A collector turns one workflow metric (or one SQL query) into evidence: a
:class:`MetricData` (time-ordered samples plus the *provenance* saying where they came
from) or a :class:`QueryResult` (rows plus provenance). Every failure of a source --
unreachable, too slow, no data, a malformed answer, a query that would write -- is a
:class:`CollectorFailed` with a one-line reason, so the runner records it as a failed
step and carries on to a decision.

Secrets: ``${env.*}`` values are rendered at request time (:class:`Secret.reveal`) and
never reach provenance or an error message: provenance holds the redacted rendering
(``[redacted env.NAME]``), header *names* only, and every reason is scrubbed of the
revealed values before it is raised (:class:`Redactor`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

from afdp.errors import NetworkError, UsageError
from afdp.pipeline.secrets import Scrubber
from afdp.workflow.catalog import DEFAULT_INTERVAL, DEFAULT_TIMEOUT
from afdp.workflow.interpolation import Secret, Template, UnresolvedError
from afdp.workflow.model import Collector
from afdp.workflow.units import parse_duration

DEFAULT_TIMEOUT_SECONDS = parse_duration(DEFAULT_TIMEOUT).seconds
# A window whose end is further in the past than this is "history" (only Prometheus
# keeps it). The slack absorbs the moment between a caller taking ``now`` and the call.
HISTORY_GRACE = timedelta(seconds=5)
MAX_REASON = 300


class CollectorFailed(NetworkError):
    """A source could not deliver: ``reason`` says why in one line (exit code 3).

    ``collector`` and ``metric`` name what was being collected, when known.
    """

    def __init__(self, reason: str, *, collector: str | None = None, metric: str | None = None):
        reason = " ".join(str(reason).split())[:MAX_REASON] or "unknown failure"
        self.reason = reason
        self.collector = collector
        self.metric = metric
        where = []
        if collector:
            where.append(f"collector {collector!r}")
        if metric:
            where.append(f"metric {metric!r}")
        super().__init__(f"{', '.join(where)}: {reason}" if where else reason)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep reason/collector/metric across pickling (flow engines move task errors).
        return (_rebuild_failure, (type(self), self.reason, self.collector, self.metric))

    def to_json(self) -> dict[str, Any]:
        """Return ``{"reason", "collector", "metric"}`` for a failed step's evidence."""
        return {"reason": self.reason, "collector": self.collector, "metric": self.metric}


def _rebuild_failure(
    kind: type[CollectorFailed], reason: str, collector: str | None, metric: str | None
) -> CollectorFailed:
    return kind(reason, collector=collector, metric=metric)


# --- data -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricData:
    """Samples of one metric and where they came from.

    ``samples`` are ``(unix seconds, value)`` in time order, finite values only (NaN and
    infinities are dropped and counted in ``provenance["dropped"]``); ``unit`` is the
    metric's unit symbol. ``provenance`` holds: ``collector``, ``type``, ``source`` (URL
    without credentials), ``query`` (rendered, secrets redacted), ``meaning`` (what one
    sample is), ``window`` ``{start, end}`` (RFC 3339), ``step`` or ``interval``
    (seconds), ``sample_count`` and ``dropped``, plus collector-specific fields.
    """

    metric: str
    unit: str
    samples: tuple[tuple[float, float], ...]
    provenance: dict[str, Any] = field(default_factory=dict)

    def values(self) -> list[float]:
        """Return the sample values, in time order."""
        return [value for _, value in self.samples]

    def summary(self) -> dict[str, float | int | None]:
        """Return ``mean, min, max, last, p50, p95, p99, count`` of the values (None when empty).

        Percentiles interpolate linearly between closest ranks (numpy's default).
        """
        values = self.values()
        if not values:
            return dict.fromkeys(("mean", "min", "max", "last", "p50", "p95", "p99"), None) | {
                "count": 0
            }
        ordered = sorted(values)
        return {
            "mean": math.fsum(values) / len(values),
            "min": ordered[0],
            "max": ordered[-1],
            "last": values[-1],
            "p50": percentile(ordered, 0.50),
            "p95": percentile(ordered, 0.95),
            "p99": percentile(ordered, 0.99),
            "count": len(values),
        }

    def to_json(self) -> dict[str, Any]:
        """Return ``{"metric", "unit", "samples": [[t, v], ...], "provenance"}`` (no NaN)."""
        return {
            "metric": self.metric,
            "unit": self.unit,
            "samples": [[t, v] for t, v in self.samples],
            "provenance": json_safe(self.provenance),
        }


@dataclass(frozen=True)
class QueryResult:
    """Rows of one read-only SQL query (JSON-safe values) and where they came from."""

    rows: list[dict[str, Any]]
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return ``{"rows": [...], "provenance": {...}}``."""
        return {"rows": json_safe(self.rows), "provenance": json_safe(self.provenance)}


def percentile(ordered: list[float], q: float) -> float:
    """Return the ``q`` quantile (0..1) of sorted, non-empty ``ordered``, linear interpolation."""
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def finite_samples(
    raw: Iterable[tuple[float, float]],
) -> tuple[tuple[tuple[float, float], ...], int]:
    """Return the finite ``(t, v)`` pairs in time order, and how many were dropped."""
    kept: list[tuple[float, float]] = []
    dropped = 0
    for t, v in raw:
        if math.isfinite(v) and math.isfinite(t):
            kept.append((float(t), float(v)))
        else:
            dropped += 1
    kept.sort(key=lambda pair: pair[0])
    return tuple(kept), dropped


def json_safe(value: Any) -> Any:
    """Return ``value`` with non-finite floats replaced by None (canonical JSON refuses NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


# --- time -------------------------------------------------------------------------------


class Clock(Protocol):
    """Where collectors get the time and how they wait (tests and ``--fast`` scale it)."""

    def now(self) -> datetime:
        """Return the current time (timezone-aware, UTC)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class ScaledClock:
    """A clock that runs ``factor`` times faster than the wall clock, from ``origin``.

    ``now()`` starts at ``origin`` (default: the wall-clock time of creation) and advances
    ``factor`` seconds per real second; ``sleep(s)`` sleeps ``s / factor`` real seconds.
    For ``--fast`` demos against sources sampled live (scrape, REST, SQL): a 5-minute
    window passes in 5 minutes / factor. Prometheus stores wall-clock timestamps, so with
    Prometheus a scaled clock only shortens the waits.

    Raises:
        UsageError: ``factor`` is not positive.
    """

    def __init__(self, factor: float, *, origin: datetime | None = None) -> None:
        if not factor > 0:
            raise UsageError(f"clock factor must be positive, not {factor}")
        self.factor = float(factor)
        self._origin = origin or datetime.now(UTC)
        self._started = time.monotonic()

    def now(self) -> datetime:
        return self._origin + timedelta(seconds=(time.monotonic() - self._started) * self.factor)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds / self.factor)


SYSTEM_CLOCK: Clock = SystemClock()


def rfc3339(moment: datetime) -> str:
    """Return ``moment`` as RFC 3339 UTC with milliseconds (``2026-01-02T03:04:05.678Z``)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_window(start: datetime, end: datetime) -> None:
    """Refuse naive datetimes and a window that ends before it starts.

    Raises:
        UsageError: either problem.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise UsageError("capture window times must be timezone-aware (UTC)")
    if end < start:
        raise UsageError(f"capture window ends ({rfc3339(end)}) before it starts ({rfc3339(start)})")


def check_live(end: datetime, clock: Clock, source: str) -> datetime:
    """Return ``clock.now()``, after checking that a window ending at ``end`` is not past.

    Raises:
        CollectorFailed: ``end`` is before ``now - HISTORY_GRACE`` (``source`` keeps no history).
    """
    now = clock.now()
    if end < now - HISTORY_GRACE:
        raise CollectorFailed(
            f"{source} keeps no history: cannot read the past window ending {rfc3339(end)}"
        )
    return now


T = TypeVar("T")


@dataclass(frozen=True)
class Polled:
    """What :func:`poll` collected: ``(clock time, real monotonic time, value)`` per read."""

    reads: list[tuple[datetime, float, Any]]
    failures: int
    first_failure: str | None
    sampled_from: datetime


def poll(
    take: Callable[[], T],
    *,
    start: datetime,
    end: datetime,
    interval: float,
    clock: Clock,
    source: str,
    minimum_reads: int = 1,
) -> Polled:
    """Read a live source (no history) at ``start``, every ``interval`` seconds, until ``end``.

    A window already in the past (its end before ``now - HISTORY_GRACE``) cannot be read.
    A window that started a moment ago is read from now. ``start == end`` (a snapshot)
    reads ``minimum_reads`` times, ``interval`` apart. The first read must succeed (a
    source that is down fails at once); later failures are counted and tolerated while
    at least half the reads succeed.

    Raises:
        CollectorFailed: the window is in the past, the first read failed, or most did.
    """
    now = check_live(end, clock, source)
    if start > now:
        clock.sleep((start - now).total_seconds())
    reads: list[tuple[datetime, float, Any]] = []
    failures = 0
    first_failure: str | None = None
    # Reads are planned at ``start + k * interval`` (from now if the window began long
    # ago), so a slow read or a late call does not shift the schedule; reads missed by
    # more than half an interval are skipped rather than made in a burst.
    anchor = start if start >= now - HISTORY_GRACE else now
    slack = timedelta(seconds=min(0.25, interval / 4))
    index = 0
    while True:
        at = clock.now()
        try:
            reads.append((at, time.monotonic(), take()))
        except CollectorFailed as exc:
            if not reads:
                raise
            failures += 1
            first_failure = first_failure or exc.reason
        index += 1
        current = clock.now()
        lag = (current - anchor).total_seconds() / interval
        if index < lag - 0.5:
            index = math.ceil(lag)
        planned = anchor + timedelta(seconds=index * interval)
        # A read a moment after ``end`` still belongs to the window.
        if planned - end > slack and index >= minimum_reads:
            break
        clock.sleep((planned - current).total_seconds())
    if failures > len(reads):
        raise CollectorFailed(f"{failures} of {failures + len(reads)} reads failed: {first_failure}")
    return Polled(reads, failures, first_failure, anchor)


# --- rendering and secrets ----------------------------------------------------------------


class Redactor:
    """Remembers the secret values revealed for one request and scrubs them from text."""

    def __init__(self, env: Mapping[str, str] | None) -> None:
        self._env = env or {}
        self._scrubber = Scrubber()

    def reveal(self, rendered: str | Secret) -> str:
        """Return the real text of ``rendered`` and remember its secret parts.

        Raises:
            CollectorFailed: an environment variable it needs is not set.
        """
        if isinstance(rendered, Secret):
            try:
                text = rendered.reveal()
            except UnresolvedError as exc:
                raise CollectorFailed(str(exc)) from None
            for name in rendered.names:
                self._scrubber.add(name, self._env.get(name))
            return text
        return rendered

    def scrub(self, text: str) -> str:
        """Return ``text`` with every remembered secret, and every fragment of one,
        replaced by ``[redacted env.NAME]`` (:class:`afdp.pipeline.secrets.Scrubber`)."""
        return self._scrubber.text(text)


def render(
    template: Template | None, values: Mapping[str, Any], env: Mapping[str, str] | None
) -> str | Secret:
    """Render ``template`` for a request (``""`` for None).

    Raises:
        CollectorFailed: a referenced value or environment variable is missing.
    """
    if template is None:
        return ""
    try:
        return template.render(values, env=env if env is not None else {})
    except UnresolvedError as exc:
        raise CollectorFailed(f"cannot render {template.source[:80]!r}: {exc}") from None


def shown(rendered: str | Secret) -> str:
    """Return the text that may be written to evidence (secrets redacted)."""
    return rendered.redacted() if isinstance(rendered, Secret) else rendered


def public_url(url: str) -> str:
    """Return ``url`` without user name and password (``https://host/path?query``)."""
    try:
        parts = urlsplit(url)
        if parts.username is None and parts.password is None:
            return url
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, parts.query, ""))
    except ValueError:
        return "[unparseable url]"


def sampling_interval(collector: Collector, interval: float | None = None) -> float:
    """Return the seconds between reads of a live source: ``interval`` when the capture
    gives one, else the collector's own ``interval``, else the catalog's default."""
    if interval:
        return float(interval)
    return seconds_of(collector.interval, parse_duration(DEFAULT_INTERVAL).seconds)


def seconds_of(duration: Any, default: float) -> float:
    """Return a :class:`Duration`'s seconds, or ``default`` when it is None."""
    return float(duration.seconds) if duration is not None else float(default)


def one_line(exc: BaseException) -> str:
    """Return ``ExceptionType: message`` on one line (for wrapping third-party errors)."""
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
