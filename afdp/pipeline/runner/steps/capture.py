"""steps.capture"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from afdp.evidence import records as rec
from afdp.evidence.canonical import canonical_bytes, sha256_hex
from afdp.workflow.catalog import DEFAULT_INTERVAL, DEFAULT_LOOKBACK, HISTORY_COLLECTORS
from afdp.workflow.model import (
    Capture,
    Step,
    Workflow,
)
from afdp.workflow.units import parse_duration

if TYPE_CHECKING:
    pass
from afdp.pipeline.runner.outputs import _stats
from afdp.pipeline.runner.state import RunState, StepResult, _attachment_name, _error_text


def scaled_collector_interval(workflow: Workflow, metric: str, time_scale: float) -> float | None:
    """With a time scale, a collector's own sampling interval shrinks with the window.

    Otherwise a window divided by the scale would hold a handful of samples, too few
    for any test. None (the collector's own choice) when the run is not scaled.
    """
    if time_scale == 1:
        return None
    from afdp.pipeline.collectors.base import sampling_interval

    collector = workflow.collector(workflow.metric(metric).collector)
    if collector.type == "prometheus" and collector.step is not None:
        return collector.step.seconds / time_scale  # a range query's resolution
    return sampling_interval(collector) / time_scale


def handle_capture(run: RunState, step: Step, values: dict[str, Any], *, missed: bool) -> StepResult:
    from afdp.pipeline.collectors import capture_metric  # imported here: only runs that collect pay

    params = step.params
    assert isinstance(params, Capture)
    workflow = run.workflow
    now = run.clock.now()
    duration = timedelta(seconds=run.scaled(params.duration.seconds)) if params.duration else timedelta(0)
    history = all(_collector_type(workflow, m) in HISTORY_SOURCES for m in params.metrics)
    # Without a duration, a source with history is read back over the default lookback
    # (a comparison needs samples); a live source gives one snapshot.
    lookback = (
        timedelta(seconds=run.scaled(parse_duration(DEFAULT_LOOKBACK).seconds))
        if history and params.duration is None
        else timedelta(0)
    )
    # A baseline that runs once the deployment is marked (--phase post, or the guide's
    # `wait_for: deployment` before its first capture) is the window before the mark,
    # read from history: never post-deployment state filed as the baseline.
    anchored = missed or (params.role == "before" and run.deployed_at is not None)
    if anchored:
        end = run.request.info.deployed_at or run.deployed_at or now
        start = end - (
            timedelta(seconds=params.duration.seconds) if params.duration else lookback
        )
        missed = True
    elif params.duration is None and params.groups:
        # The groups exist from segment_users on: sample forward, there is no history.
        start, end = now, now + timedelta(seconds=run.scaled(parse_duration(DEFAULT_LOOKBACK).seconds))
    elif params.duration is None:
        start, end = now - lookback, now
    else:
        start, end = now, now + duration
    interval = run.scaled(params.interval.seconds) if params.interval else None
    calls: dict[str, Callable[[], Any]] = {}
    timings: dict[str, float] = {}
    no_history: dict[str, str] = {}
    keys: list[tuple[str, str, str | None]] = [
        (f"{m}@{g}", m, g) if params.groups and _grouped(workflow, m) else (m, m, None)
        for m in params.metrics
        for g in (params.groups if params.groups and _grouped(workflow, m) else (None,))
    ]
    if params.services:
        # services: each metric once per listed service, all in this one window.
        keys = [(f"{m}@{s}", m, s) for m in params.metrics for s in params.services]
    for key, name, group in keys:
        kind = _collector_type(workflow, name)
        if missed and kind not in HISTORY_SOURCES:
            # A live source answers "now", never the window before the deployment: a
            # sample taken now would be post-deployment state filed as the baseline.
            no_history[name] = (
                f"{kind} source keeps no history; run --phase pre before deploying"
            )
            continue
        every = (
            interval
            if interval is not None
            else scaled_collector_interval(workflow, name, run.request.time_scale)
        )
        scoped = values
        if params.services and group is not None:
            # The service's own series: ${service.name}, and ${deployment.service} in the
            # metric's query and labels (the compiler refuses collector addresses that
            # depend on it, so the host the admission policy judged is the one reached).
            scoped = {
                **values,
                "deployment": {**dict(values.get("deployment") or {}), "service": group},
                "service": {"name": group},
            }
        elif group is not None:
            # ${segment.window}: each sample's rate window is its own stretch of time.
            seconds = max(every or parse_duration(DEFAULT_INTERVAL).seconds, MIN_RATE_WINDOW)
            scoped = {**values, "segment": {"group": group, "window": f"{round(seconds * 1000)}ms"}}
        calls[key] = _bind_capture(
            capture_metric, workflow, name, scoped, run.env, start, end, every, run.clock, timings,
            key=key,
        )  # fmt: skip
        calls[key].history = kind in HISTORY_SOURCES  # type: ignore[attr-defined]
    collected, context = run.executor.collect(step, calls)
    outputs: dict[str, Any] = {
        "started_at": rec.format_time(start),
        "finished_at": rec.format_time(end),
    }
    series_refs: dict[str, Any] = {}
    provenance: dict[str, Any] = {}
    errors: dict[str, str] = {}
    attachments: dict[str, bytes] = {}
    grouped_stats: dict[str, dict[str, Any]] = {}
    for name, metric_name, group in keys:
        if name in no_history:
            errors[name] = no_history[name]
            continue
        got = collected.get(name)
        if isinstance(got, Exception) or got is None:
            errors[name] = _error_text(got) if got is not None else "no result"
            continue
        data = got
        # The series file is evidence too: its strings (provenance) are scrubbed like
        # the record's; numbers are left alone, so it stays the same series.
        document = run.redact(data.to_json())
        blob = canonical_bytes(document)
        path = _attachment_name(name, attachments)
        attachments[path] = blob
        values_list = [float(v) for _, v in data.samples]
        if group is not None:
            grouped_stats.setdefault(group, {})[metric_name] = _stats(values_list)
        else:
            outputs[name] = _stats(values_list)
        series_refs[name] = {"path": path, "sha256": sha256_hex(blob), "samples": len(values_list), "unit": data.unit}
        provenance[name] = dict(data.provenance)
    if grouped_stats:
        outputs["services" if params.services else "groups"] = grouped_stats
    result = {
        "outputs": outputs,
        "role": params.role,
        "window": {"start": rec.format_time(start), "end": rec.format_time(end), "from_history": missed},
        "series": series_refs,
        "errors": errors,
        # Seconds each collection took, retries included (they run concurrently): the
        # collectors' own I/O and waiting, as opposed to AFDP's overhead.
        "collect_seconds": {k: round(v, 3) for k, v in sorted(timings.items())},
    }
    ok = len(keys) - len(errors)
    summary = f"captured {ok}/{len(keys)} metric(s)" + (
        f" per group ({', '.join(params.groups)})" if params.groups else ""
    ) + (f" per service ({', '.join(params.services)})" if params.services else "")
    unjudged = run.workflow.unjudged_context()
    missing = {e.rpartition("@")[0] for e in errors} if params.services else set(errors)
    if errors and missing <= unjudged:
        # Only business context (context:) is missing: shown as missing, not a failure.
        summary += f"; context not captured: {', '.join(sorted(errors))}"
        return StepResult("ok", result, summary, None, provenance, attachments, context)
    if errors:
        summary += f"; failed: {', '.join(sorted(errors))}"
        error = "; ".join(f"{m}: {e}" for m, e in sorted(errors.items()))
        return StepResult("failed", result, summary, error, provenance, attachments, context)
    return StepResult("ok", result, summary, None, provenance, attachments, context)


#: Collector types that can answer a window in the past (from their own storage).
HISTORY_SOURCES = HISTORY_COLLECTORS


#: The shortest ``${segment.window}``: a rate needs two scrapes inside its window.
MIN_RATE_WINDOW = 2.0


def _grouped(workflow: Workflow, metric: str) -> bool:
    spec = workflow.metric(metric)
    templates = [spec.query, *(t for _, t in spec.labels)]
    return any(
        p.parts[0] == "segment" for t in templates if t is not None for p in t.placeholders
    )


def _collector_type(workflow: Workflow, metric: str) -> str:
    try:
        return str(workflow.collector(workflow.metric(metric).collector).type)
    except KeyError:
        return "unknown"


def _bind_capture(
    capture_metric: Callable[..., Any],
    workflow: Workflow,
    metric: str,
    values: dict[str, Any],
    env: Mapping[str, str],
    start: datetime,
    end: datetime,
    interval: float | None,
    clock: Any,
    timings: dict[str, float],
    *,
    key: str | None = None,
) -> Callable[[], Any]:
    first: list[float] = []

    def call() -> Any:
        # Timed from the first attempt to the end of the last, so an executor's retries
        # (and their delays) count as collection time, not as AFDP's overhead.
        if not first:
            first.append(time.monotonic())
        try:
            return capture_metric(
                workflow, metric, values=values, env=env, start=start, end=end, interval=interval, clock=clock
            )
        finally:
            timings[key or metric] = time.monotonic() - first[0]

    call.__name__ = f"capture_{(key or metric).replace('@', '_')}"
    return call
