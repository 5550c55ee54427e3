"""REST collector: call a JSON API every ``interval`` and pick one number with ``select``.

The collector sends ``method`` (GET or POST) to ``url`` with ``headers`` and, for POST,
``body`` (``Content-Type: application/json`` when the body parses as JSON and no
content type was given). Secrets come only from ``${env.*}`` and are revealed for the
request alone: provenance has the redacted URL and the header *names*.

``select`` is a dotted path into the JSON answer: each segment is an object key, or a
decimal index into an array (``data.series.0.value``); a key that is itself made of
digits is looked up as a key when the current value is an object. The selected value
must be a number (a JSON number, or a string holding a finite number, as some APIs send);
``true``/``false``, objects, arrays, null and missing fields fail with the path that
broke and the keys that were there.

A non-2xx status, an HTML page, or any answer that is not JSON is a
:class:`CollectorFailed`. The API keeps no history: a past window fails.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from afdp.evidence.jsondata import DuplicateKey, load_json
from afdp.pipeline.collectors.base import (
    Clock,
    CollectorFailed,
    MetricData,
    check_live,
    finite_samples,
    poll,
    render,
    rfc3339,
    sampling_interval,
    shown,
)
from afdp.pipeline.collectors.transport import Endpoint, client, describe_body, endpoint, send
from afdp.workflow.model import Collector, Metric


def select(document: Any, path: str) -> float:
    """Return the number at dotted ``path`` in the parsed JSON ``document``.

    Raises:
        CollectorFailed: a segment is missing, the path runs into a scalar, or the value
            is not a finite number.
    """
    current = document
    walked: list[str] = []
    for segment in path.split("."):
        here = ".".join(walked) or "the answer"
        if isinstance(current, Mapping):
            if segment not in current:
                keys = ", ".join(sorted(map(str, current))[:10]) or "none"
                raise CollectorFailed(f"field {path!r}: {here} has no {segment!r} (keys: {keys})")
            current = current[segment]
        elif isinstance(current, list):
            if not segment.isdigit():
                raise CollectorFailed(f"field {path!r}: {here} is an array; {segment!r} is not an index")
            index = int(segment)
            if index >= len(current):
                raise CollectorFailed(
                    f"field {path!r}: {here} has {len(current)} items, no index {index}"
                )
            current = current[index]
        else:
            raise CollectorFailed(f"field {path!r}: {here} is {_kind(current)}, not an object or array")
        walked.append(segment)
    if isinstance(current, bool) or not isinstance(current, (int, float, str)):
        raise CollectorFailed(f"field {path!r} is {_kind(current)}, not a number")
    try:
        number = float(current)
    except ValueError:
        raise CollectorFailed(f"field {path!r} is the text {str(current)[:40]!r}, not a number") from None
    if not math.isfinite(number):
        raise CollectorFailed(f"field {path!r} is {current!r}, not a finite number")
    return number


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"


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
    """Call the API over ``[start, end]`` and select ``metric.select`` from each answer.

    Returns:
        The samples and provenance.

    Raises:
        CollectorFailed: unreachable, slow, non-2xx, HTML or not JSON, the field is
            missing or not a number, or a past window.
    """
    if not metric.select:
        raise CollectorFailed("the metric has no 'select' path", collector=collector.name, metric=metric.name)
    target = endpoint(collector, values, env)
    method = collector.method.upper()
    rendered_body = render(collector.body, values, env) if collector.body is not None else None
    body = target.redactor.reveal(rendered_body) if rendered_body is not None else None
    headers: dict[str, str] = {}
    if body is not None and not any(k.lower() == "content-type" for k in target.headers):
        try:
            json.loads(body)
            headers["Content-Type"] = "application/json"
        except ValueError:
            pass
    every = sampling_interval(collector, interval)
    path = metric.select
    source = f"the REST API {target.public}"
    failures = 0
    try:
        with client(target) as http:

            def read() -> float:
                return select(_call(http, target, method, body, headers), path)

            if start == end:
                check_live(end, clock, source)
                reads = [(clock.now(), 0.0, read())]
            else:
                polled = poll(read, start=start, end=end, interval=every, clock=clock, source=source)
                reads, failures = polled.reads, polled.failures
    except CollectorFailed as exc:
        raise CollectorFailed(
            target.redactor.scrub(exc.reason), collector=collector.name, metric=metric.name
        ) from None
    samples, dropped = finite_samples((at.timestamp(), value) for at, _, value in reads)
    provenance: dict[str, Any] = {
        "collector": collector.name,
        "type": "rest",
        **target.provenance(),
        "method": method,
        "query": f"{method} {target.public} select {path}",
        "select": path,
        "meaning": f"the number at {path} in each answer",
        "window": {"start": rfc3339(start), "end": rfc3339(end)},
        "interval": every,
        "reads": len(reads),
        "failed_reads": failures,
        "sample_count": len(samples),
        "dropped": dropped,
    }
    if rendered_body is not None:
        provenance["body"] = shown(rendered_body)
    return MetricData(metric.name, metric.unit.symbol, samples, provenance)


def _call(http: Any, target: Endpoint, method: str, body: str | None, headers: Mapping[str, str]) -> Any:
    response = send(
        http, target, method, target.url, what="the REST API", content=body, headers=headers or None
    )
    if not 200 <= response.status_code < 300:
        raise CollectorFailed(
            f"the REST API {target.public} answered HTTP {response.status_code} "
            f"({describe_body(response, target.redactor.scrub)})"
        )
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if "html" in kind or response.text.lstrip()[:15].lower().startswith(("<!doctype", "<html")):
        raise CollectorFailed(
            f"the REST API {target.public} answered {describe_body(response, target.redactor.scrub)}, not JSON"
        )
    try:
        # an answer naming a key twice is ambiguous (which value is the metric?): refused
        return load_json(response.content)
    except DuplicateKey as exc:
        raise CollectorFailed(f"the REST API {target.public} answered JSON in which {exc}") from None
    except ValueError:
        raise CollectorFailed(
            f"the REST API {target.public} answered {describe_body(response, target.redactor.scrub)}, which is not JSON"
        ) from None
