"""The state of one run in progress (:class:`RunState`), a step's result before it is recorded (:class:`StepResult`), a record read back from the branch (:class:`RecordedStep`), and the small helpers every step handler shares (JSON-safe values, one-line errors, redaction)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from afdp.errors import (
    AfdpError,
)
from afdp.evidence import records as rec
from afdp.pipeline.secrets import Scrubber
from afdp.workflow.interpolation import Secret
from afdp.workflow.model import (
    Workflow,
)
from afdp.workflow.units import Quantity

if TYPE_CHECKING:
    pass
from afdp.pipeline.runner.executor import StepExecutor
from afdp.pipeline.runner.request import RunRequest, StepReport, _deployment_values, env_names

_ATTACHMENT_BAD = re.compile(r"[^a-z0-9._-]")


@dataclass
class RecordedStep:
    """A step record read back from the branch (or just written)."""

    sequence: int
    step: str
    digest: str
    status: str
    result: Any
    attachments: dict[str, bytes]
    summary: str = ""
    error: str | None = None


@dataclass(frozen=True)
class StepResult:
    status: str
    result: dict[str, Any]
    summary: str
    error: str | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)
    attachments: Mapping[str, bytes] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class RunState:
    request: RunRequest
    executor: StepExecutor
    clock: Any
    env: Mapping[str, str]
    run_id: str
    base_context: dict[str, Any]
    redact: Scrubber
    outputs: dict[str, Any] = field(default_factory=dict)  # step -> typed outputs
    series: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    #: The same series' sample times (unix seconds): when things happened (the cascade).
    times: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    analyses: dict[str, dict[str, Any]] = field(default_factory=dict)  # step -> analysis json
    decision: dict[str, Any] | None = None
    action: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    stopped_by: str | None = None
    deployed_at: datetime | None = None
    records: dict[str, RecordedStep] = field(default_factory=dict)
    reports: list[StepReport] = field(default_factory=list)

    @property
    def workflow(self) -> Workflow:
        return self.request.workflow

    def values(self) -> dict[str, Any]:
        return self.workflow.values(
            deployment=_deployment_values(self.request),
            overrides=self.request.overrides,
            steps=self.outputs,
        )

    def scaled(self, seconds: float) -> float:
        return seconds / self.request.time_scale


def _merge_context(result: StepResult, context: Mapping[str, Any]) -> StepResult:
    return replace(result, context=_merge(result.context, context)) if context else result


def _skipped(reason: str, **extra: Any) -> StepResult:
    return StepResult("skipped", {"outputs": {}, "reason": reason, **extra}, reason)


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated with ``extra``, merging nested mappings (run ids from both)."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _attachment_name(metric: str, taken: Mapping[str, bytes]) -> str:
    base = _ATTACHMENT_BAD.sub("-", metric.lower()).strip("-._") or "metric"
    name = f"series-{base}.json"
    counter = 2
    while name in taken:
        name = f"series-{base}-{counter}.json"
        counter += 1
    return name


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, AfdpError):
        reason = getattr(exc, "reason", None)
        return _one_line(str(reason) if reason else exc.diagnostics())
    return _one_line(f"{type(exc).__name__}: {exc}")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _json_safe(value: Any) -> Any:
    """Return ``value`` as canonical-JSON-safe data (no NaN, no tuples, no Decimals)."""
    from decimal import Decimal

    if isinstance(value, Secret):
        return value.redacted()
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, Quantity):
        return value.base
    if isinstance(value, datetime):
        return rec.format_time(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_json_safe(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if hasattr(value, "to_json"):
        return _json_safe(value.to_json())
    return str(value)


def _redactor(workflow: Workflow, env: Mapping[str, str]) -> Scrubber:
    """Return the scrubber of the values of the env variables the workflow uses (and of
    every fragment of them): the last line of defence before a record is signed."""
    return Scrubber.of(env, env_names(workflow))
