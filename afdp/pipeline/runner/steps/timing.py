"""steps.timing"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from afdp.evidence import records as rec
from afdp.workflow import catalog
from afdp.workflow.model import (
    CaptureMetadata,
    Step,
    Wait,
    WaitForSignal,
)

if TYPE_CHECKING:
    pass
from afdp.pipeline.runner.request import DeploymentInfo
from afdp.pipeline.runner.state import RunState, StepResult

#: How often a signal directory is polled.
SIGNAL_POLL_SECONDS = 0.5


def handle_wait(run: RunState, step: Step, values: dict[str, Any]) -> StepResult:
    params = step.params
    assert isinstance(params, Wait)
    seconds = run.scaled(params.duration.seconds)
    run.clock.sleep(seconds)
    if run.request.imported is not None:
        # afdp import: the wait passed in the past; its end is the run's (past) time.
        return StepResult(
            "ok",
            {"outputs": {"finished_at": rec.format_time(run.clock.now())}, "duration": params.duration.to_json(), "waited_seconds": 0},
            f"imported: the {params.duration} after it passed in the past (not waited now)",
        )
    now = rec.format_time(rec.utc_now())
    return StepResult(
        "ok",
        {"outputs": {"finished_at": now}, "duration": params.duration.to_json(), "waited_seconds": round(seconds, 3)},
        f"waited {params.duration}" + (f" ({seconds:.1f}s at time scale {run.request.time_scale:g})" if run.request.time_scale != 1 else ""),
    )


def handle_signal(run: RunState, step: Step, values: dict[str, Any]) -> StepResult:
    params = step.params
    assert isinstance(params, WaitForSignal)
    name = params.signal
    request = run.request
    if name in request.signals:
        return _signal_received(name, "command line (--signal)")
    if request.phase == "post" and step.index == run.workflow.boundary:
        # --phase post runs after the deploy: the signal that marks it has happened
        return _signal_received(name, "the deployment happened (--phase post)")
    if request.signal_dir is None:
        return StepResult(
            "failed",
            {"outputs": {}, "signal": name, "source": None},
            f"signal {name} not received",
            error=f"signal {name!r} was not given (--signal {name}) and no signal directory is watched (--signal-dir)",
        )
    path = request.signal_dir / name
    deadline = time.monotonic() + run.scaled(params.timeout.seconds)
    while True:
        if path.exists():
            return _signal_received(name, f"file {path}")
        if time.monotonic() >= deadline:
            return StepResult(
                "failed",
                {"outputs": {}, "signal": name, "source": str(path), "timeout": params.timeout.to_json()},
                f"signal {name} not received within {params.timeout}",
                error=f"signal {name!r} not received within {params.timeout} (no file {path})",
            )
        run.clock.sleep(min(SIGNAL_POLL_SECONDS, max(0.0, deadline - time.monotonic())))


def _signal_received(name: str, source: str) -> StepResult:
    return StepResult(
        "ok",
        {"outputs": {"received_at": rec.format_time(rec.utc_now()), "signal": name}, "source": source},
        f"signal {name} received ({source})",
    )


def handle_mark(run: RunState, step: Step, values: dict[str, Any]) -> StepResult:
    deployed = run.request.info.deployed_at or rec.utc_now()
    text = rec.format_time(deployed)
    info = run.request.info
    return StepResult(
        "ok",
        {
            "outputs": {"deployed_at": text},
            "commit": info.commit,
            "deployer": info.deployer,
            "version": info.version,
            "environment": info.environment,
        },
        f"deployment marked at {text}" + (f" (commit {info.commit[:12]})" if info.commit else ""),
    )


_METADATA_SOURCES: Mapping[str, Callable[[DeploymentInfo], Any]] = {
    "git_commit": lambda i: i.commit,
    "git_branch": lambda i: i.branch,
    "commit_message": lambda i: i.commit_message,
    "deployer_id": lambda i: i.deployer,
    "deployment_size": lambda i: i.deployment_size,
    "changed_files": lambda i: list(i.changed_files) if i.changed_files else None,
    "service_version": lambda i: i.version,
}


def handle_metadata(run: RunState, step: Step, values: dict[str, Any]) -> StepResult:
    params = step.params
    assert isinstance(params, CaptureMetadata)
    wanted = params.fields or tuple(catalog.METADATA_FIELDS)
    found = {name: _METADATA_SOURCES[name](run.request.info) for name in wanted if name in _METADATA_SOURCES}
    outputs = {k: v for k, v in found.items() if v is not None}
    missing = sorted(k for k in wanted if k not in outputs)
    summary = f"recorded {len(outputs)} field(s)" + (f"; not given: {', '.join(missing)}" if missing else "")
    return StepResult("ok", {"outputs": outputs, "missing": missing}, summary)
