"""Scrape collector: read a ``/metrics`` page every ``interval`` and derive one number per read.

The page is parsed with ``prometheus_client``'s exposition-format parser. A workflow
metric names what to read with ``metric`` (a family name such as
``http_request_duration_seconds``, a counter's ``..._total``, or one sample name such
as ``..._count``), ``labels`` (every one must match; templates allowed) and
``aggregate`` (``sum`` by default, ``avg``, ``max``, ``min``) across the series that match.

What one sample means depends on the metric's type, because counters and histograms
only make sense as differences between two reads:

- gauge (and untyped): the value at each read, aggregated across series. A window of
  ``n`` reads gives ``n`` samples.
- counter (or a ``_total``/``_count``/``_sum``/``_bucket`` sample): the per-second rate
  between consecutive reads (the increase divided by the real time between them; a
  decrease is a counter reset and counts from zero, as Prometheus' ``rate`` does).
  ``n`` reads give ``n - 1`` samples. A series that appears between two reads counts
  from its second read on, as in Prometheus.
- histogram: the mean observed value between consecutive reads
  (``Δ_sum / Δ_count``), or with the pseudo-label ``quantile: "0.99"`` in ``labels``,
  that quantile estimated from the bucket increases with linear interpolation inside a
  bucket (as ``histogram_quantile`` does; a quantile in the ``+Inf`` bucket is the
  largest finite bound). ``sum`` merges the series' buckets before deriving; ``avg``,
  ``max`` and ``min`` combine per-series results. An interval with no observation has
  no value (it is dropped and counted).
- summary: ``quantile`` selects the summary's own quantile series (a gauge); without it,
  the mean between reads, as for a histogram.

A snapshot (``start == end``) of a gauge is one read; of a counter or histogram, two
reads ``min(interval, 1s)`` apart. The source keeps no history: a window in the past
fails. A page that is not the exposition format (HTML, garbage, a series twice) fails.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from afdp.pipeline.collectors.base import (
    Clock,
    CollectorFailed,
    MetricData,
    check_live,
    finite_samples,
    one_line,
    poll,
    render,
    rfc3339,
    sampling_interval,
    shown,
)
from afdp.pipeline.collectors.transport import Endpoint, client, describe_body, endpoint, send
from afdp.workflow.model import Collector, Metric

AGGREGATES = ("sum", "avg", "max", "min")
_COUNTER_SUFFIXES = ("_total", "_count", "_sum", "_bucket")

Key = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Selector:
    """What to read from a page: sample ``name``, exact ``labels``, optional ``quantile``."""

    name: str
    labels: tuple[tuple[str, str], ...]
    quantile: float | None
    aggregate: str
    shown_labels: tuple[tuple[str, str], ...] = ()

    def text(self) -> str:
        """Return the selector as PromQL-like text, for provenance (secrets redacted)."""
        labels = [f'{k}="{v}"' for k, v in self.shown_labels]
        if self.quantile is not None:
            labels.append(f'quantile="{self.quantile:g}"')
        inner = "{" + ",".join(labels) + "}" if labels else ""
        return f"{self.aggregate}({self.name}{inner})"


@dataclass(frozen=True)
class Reading:
    """One read of the page, reduced to what the selector needs.

    ``kind`` is ``gauge``, ``counter`` or ``histogram``; ``series`` maps each matching
    label set to a number (gauge, counter) or to ``(buckets {le: cumulative}, sum, count)``.
    """

    kind: str
    series: dict[Key, Any]


def capture(
    collector: Collector,
    metric: Metric,
    *,
    values: Mapping[str, Any],
    env: Mapping[str, str] | None,
    start: datetime,
    end: datetime,
    interval: float | None,
    clock: Clock,
) -> MetricData:
    """Read ``metric`` from the page at ``collector.url`` over ``[start, end]``.

    Returns:
        The samples (see the module docstring for their meaning) and provenance.

    Raises:
        CollectorFailed: unreachable, slow, not an exposition page, no such metric,
            no matching series, a past window, or no value in the whole window.
    """
    target = endpoint(collector, values, env)
    selector = _selector(metric, values, env, target)
    every = sampling_interval(collector, interval)
    snapshot = start == end
    source = f"the scrape endpoint {target.public}"
    failures = 0
    try:
        with client(target) as http:

            def read() -> Reading:
                return _read(http, target, selector)

            if snapshot:
                check_live(end, clock, source)
                first = read()
                timed = [(clock.now().timestamp(), time.monotonic(), first)]
                if first.kind != "gauge":
                    clock.sleep(min(every, 1.0))
                    timed.append((clock.now().timestamp(), time.monotonic(), read()))
            else:
                polled = poll(
                    read, start=start, end=end, interval=every, clock=clock, source=source
                )
                timed = [(at.timestamp(), mono, reading) for at, mono, reading in polled.reads]
                failures = polled.failures
    except CollectorFailed as exc:
        raise CollectorFailed(
            target.redactor.scrub(exc.reason), collector=collector.name, metric=metric.name
        ) from None
    first = timed[0][2]
    raw = _derive(timed, selector)
    samples, dropped = finite_samples(raw)
    provenance: dict[str, Any] = {
        "collector": collector.name,
        "type": "scrape",
        **target.provenance(),
        "query": selector.text(),
        "metric_type": first.kind,
        "meaning": _meaning(first.kind, selector),
        "window": {"start": rfc3339(start), "end": rfc3339(end)},
        "interval": min(every, 1.0) if snapshot else every,
        "reads": len(timed),
        "failed_reads": failures,
        "sample_count": len(samples),
        "dropped": dropped,
    }
    if not samples:
        raise CollectorFailed(
            f"no value in {len(timed)} reads of {selector.text()} "
            f"({dropped} intervals without observations)",
            collector=collector.name,
            metric=metric.name,
        )
    return MetricData(metric.name, metric.unit.symbol, samples, provenance)


def _selector(
    metric: Metric, values: Mapping[str, Any], env: Mapping[str, str] | None, target: Endpoint
) -> Selector:
    if not metric.metric:
        raise CollectorFailed("the metric names no 'metric' to read", collector=target.collector)
    labels: list[tuple[str, str]] = []
    public: list[tuple[str, str]] = []
    quantile: float | None = None
    for name, template in metric.labels:
        rendered = render(template, values, env)
        value = target.redactor.reveal(rendered)
        if name == "quantile":
            try:
                quantile = float(value)
            except ValueError:
                quantile = math.nan
            if not 0.0 <= quantile <= 1.0:
                raise CollectorFailed(f"quantile must be a number from 0 to 1, not {value!r}")
            continue
        labels.append((name, value))
        public.append((name, shown(rendered)))
    aggregate = metric.aggregate or "sum"
    if aggregate not in AGGREGATES:
        raise CollectorFailed(f"unknown aggregate {aggregate!r}; expected one of {', '.join(AGGREGATES)}")
    return Selector(metric.metric, tuple(sorted(labels)), quantile, aggregate, tuple(sorted(public)))


def _read(http: Any, target: Endpoint, selector: Selector) -> Reading:
    response = send(http, target, "GET", target.url, what="the scrape endpoint")
    if response.status_code != 200:
        raise CollectorFailed(
            f"the scrape endpoint {target.public} answered HTTP {response.status_code}"
        )
    kind = response.headers.get("content-type", "")
    if "html" in kind or response.text.lstrip()[:15].lower().startswith(("<!doctype", "<html")):
        raise CollectorFailed(
            f"the scrape endpoint {target.public} answered {describe_body(response, target.redactor.scrub)}, "
            "not the Prometheus exposition format"
        )
    return select(response.text, selector, source=target.public)


def select(page: str, selector: Selector, *, source: str = "the page") -> Reading:
    """Parse an exposition ``page`` and keep the series ``selector`` asks for.

    Raises:
        CollectorFailed: the page does not parse, repeats a series, has no such metric,
            or no series matches the labels.
    """
    try:
        families = list(text_string_to_metric_families(page))
    except Exception as exc:  # the parser raises ValueError, IndexError, ... on bad lines
        raise CollectorFailed(f"malformed exposition page from {source}: {one_line(exc)[:120]}") from None
    seen: set[tuple[str, Key]] = set()
    for family in families:
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            if key in seen:
                raise CollectorFailed(
                    f"malformed exposition page from {source}: series {sample.name} "
                    f"{dict(key[1])} appears twice"
                )
            seen.add(key)
    name = selector.name
    family_match = [f for f in families if f.name == name or (f.type == "counter" and f"{f.name}_total" == name)]
    if family_match:
        family_type = family_match[0].type
        samples = [s for f in family_match for s in f.samples]
        if family_type == "counter":
            return _simple("counter", [s for s in samples if s.name.endswith("_total")], selector, source)
        if family_type == "histogram":
            return _histogram(samples, name, selector, source)
        if family_type == "summary":
            if selector.quantile is not None:
                wanted = [
                    s for s in samples
                    if s.name == name and _same_number(s.labels.get("quantile"), selector.quantile)
                ]  # fmt: skip
                return _simple("gauge", wanted, selector, source, ignore=("quantile",))
            return _histogram(samples, name, selector, source)
        return _simple("gauge", [s for s in samples if s.name == name], selector, source)
    by_sample = [s for f in families for s in f.samples if s.name == name]
    if by_sample:
        owner = next(f for f in families if any(s.name == name for s in f.samples))
        counting = owner.type in ("counter", "histogram", "summary") and name.endswith(_COUNTER_SUFFIXES)
        return _simple("counter" if counting else "gauge", by_sample, selector, source)
    names = sorted({f.name for f in families})
    close = [n for n in names if n.split("_")[0] == name.split("_")[0]][:5]
    hint = f"; similar: {', '.join(close)}" if close else f"; the page has {len(names)} metric families"
    raise CollectorFailed(f"no metric named {name!r} on {source}{hint}")


def _matches(labels: Mapping[str, str], selector: Selector) -> bool:
    return all(labels.get(k) == v for k, v in selector.labels)


def _key(labels: Mapping[str, str], ignore: tuple[str, ...] = ()) -> Key:
    return tuple(sorted((k, v) for k, v in labels.items() if k not in ignore))


def _no_series(selector: Selector, source: str) -> CollectorFailed:
    return CollectorFailed(f"no series of {selector.name!r} on {source} matches {dict(selector.shown_labels)}")


def _simple(kind: str, samples: list[Any], selector: Selector, source: str, ignore: tuple[str, ...] = ()) -> Reading:
    if selector.quantile is not None and "quantile" not in ignore:
        raise CollectorFailed(f"quantile applies to a histogram or a summary, not to {selector.name!r}")
    series = {_key(s.labels, ignore): float(s.value) for s in samples if _matches(s.labels, selector)}
    if not series:
        raise _no_series(selector, source)
    return Reading(kind, series)


def _histogram(samples: list[Any], name: str, selector: Selector, source: str) -> Reading:
    series: dict[Key, tuple[dict[float, float], float, float]] = {}
    for sample in samples:
        if not _matches(sample.labels, selector):
            continue
        key = _key(sample.labels, ("le", "quantile"))
        buckets, total, count = series.get(key, ({}, math.nan, math.nan))
        if sample.name == f"{name}_bucket":
            buckets[float(sample.labels.get("le", "nan"))] = float(sample.value)
        elif sample.name == f"{name}_sum":
            total = float(sample.value)
        elif sample.name == f"{name}_count":
            count = float(sample.value)
        series[key] = (buckets, total, count)
    if not series:
        raise _no_series(selector, source)
    if selector.quantile is not None and not any(buckets for buckets, _, _ in series.values()):
        raise CollectorFailed(f"{name!r} has no buckets to estimate a quantile from")
    return Reading("histogram", series)


def _same_number(text: str | None, number: float) -> bool:
    try:
        return text is not None and math.isclose(float(text), number)
    except ValueError:
        return False


# --- from reads to samples ----------------------------------------------------------------


def _derive(timed: list[tuple[float, float, Reading]], selector: Selector) -> list[tuple[float, float]]:
    if not timed:
        return []
    kind = timed[0][2].kind
    if kind == "gauge":
        return [(t, _aggregate(list(r.series.values()), selector.aggregate)) for t, _, r in timed]
    out: list[tuple[float, float]] = []
    for (_, m0, before), (t1, m1, after) in zip(timed, timed[1:], strict=False):
        elapsed = m1 - m0
        if elapsed <= 0:
            out.append((t1, math.nan))
            continue
        if kind == "counter":
            # A series that appeared between the reads has no rate yet (as in Prometheus).
            rates = [
                _increase(before.series[key], value) / elapsed
                for key, value in after.series.items()
                if key in before.series
            ]
            out.append((t1, _aggregate(rates, selector.aggregate)))
        else:
            out.append((t1, _histogram_value(before, after, selector)))
    return out


def _increase(before: float, after: float) -> float:
    return after - before if after >= before else after  # a decrease is a reset


def _histogram_value(before: Reading, after: Reading, selector: Selector) -> float:
    deltas: list[tuple[dict[float, float], float, float]] = []
    for key, (buckets, total, count) in after.series.items():
        if key not in before.series:
            continue  # appeared between the reads: no increase known yet
        old_buckets, old_total, old_count = before.series[key]
        reset = count < old_count
        delta_buckets = {
            le: (c if reset else c - old_buckets.get(le, 0.0)) for le, c in buckets.items()
        }
        deltas.append(
            (delta_buckets, total if reset else total - old_total, count if reset else count - old_count)
        )
    if selector.aggregate == "sum":
        merged: dict[float, float] = {}
        for buckets, _, _ in deltas:
            for le, c in buckets.items():
                merged[le] = merged.get(le, 0.0) + c
        deltas = [(merged, math.fsum(d[1] for d in deltas), math.fsum(d[2] for d in deltas))]
    per_series = [_one_value(d, selector.quantile) for d in deltas]
    return _aggregate(per_series, "avg" if selector.aggregate == "sum" else selector.aggregate)


def _one_value(delta: tuple[dict[float, float], float, float], quantile: float | None) -> float:
    buckets, total, count = delta
    if quantile is None:
        return total / count if count > 0 else math.nan
    return bucket_quantile(quantile, buckets)


def bucket_quantile(q: float, buckets: Mapping[float, float]) -> float:
    """Return the ``q`` quantile from cumulative ``buckets`` ``{upper bound: count}``.

    Linear interpolation inside the bucket holding the rank, the lowest bucket starting
    at 0; a rank in the ``+Inf`` bucket gives the largest finite bound. NaN when empty.
    """
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]):
        return math.nan
    total = buckets[bounds[-1]]
    if total <= 0:
        return math.nan
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return previous_bound if len(bounds) > 1 else math.nan
            if count == previous_count:
                return bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / (
                count - previous_count
            )
        previous_bound, previous_count = bound, count
    return math.nan


def _aggregate(values: list[float], how: str) -> float:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan
    if how == "sum":
        return math.fsum(finite)
    if how == "avg":
        return math.fsum(finite) / len(finite)
    if how == "max":
        return max(finite)
    return min(finite)


def _meaning(kind: str, selector: Selector) -> str:
    if kind == "gauge":
        return f"the {selector.aggregate} of the matching series' values at each read"
    if kind == "counter":
        return f"the {selector.aggregate} of per-second rates between consecutive reads"
    what = (
        f"the {selector.quantile:g} quantile estimated from bucket increases"
        if selector.quantile is not None
        else "the mean observed value (increase of _sum / increase of _count)"
    )
    merge = "series merged" if selector.aggregate == "sum" else f"{selector.aggregate} over series"
    return f"{what} between consecutive reads ({merge})"
