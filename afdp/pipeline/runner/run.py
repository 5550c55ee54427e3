"""The run loop: :func:`run_workflow` takes the run lock, opens or resumes the branch, executes each step (conditions, the executor, the handler the step catalog names), appends one signed, time-stamped record per step, and seals the branch."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

from afdp.errors import (
    AfdpError,
    NetworkError,
    PolicyViolation,
    SigningError,
    StorageError,
    TimestampError,
    UsageError,
)
from afdp.evidence import records as rec
from afdp.evidence.canonical import canonical_bytes
from afdp.evidence.ledger import append_record, seal, trailers
from afdp.evidence.names import branch_ref
from afdp.evidence.store import EvidenceStore
from afdp.workflow import catalog
from afdp.workflow.catalog import StepKind
from afdp.workflow.expressions import EvaluationError
from afdp.workflow.interpolation import UnresolvedError
from afdp.workflow.model import (
    Capture,
    Step,
    Workflow,
)

if TYPE_CHECKING:
    pass
from afdp.pipeline.runner.branch import (
    _absorb,
    _check_prefix,
    _check_same_deployment,
    _check_tail,
    _genesis_files,
    _genesis_metadata,
    _open_or_probe,
    _read_branch,
    _restore,
)
from afdp.pipeline.runner.executor import StepExecutor
from afdp.pipeline.runner.lock import run_lock
from afdp.pipeline.runner.request import (
    SYSTEM_CLOCK,
    InterruptibleClock,
    RunOutcome,
    RunRequest,
    StepReport,
    admit_request,
    check_environment,
)
from afdp.pipeline.runner.spool import _read_spool, _spool_path, _write_spool
from afdp.pipeline.runner.state import (
    RecordedStep,
    RunState,
    StepResult,
    _json_safe,
    _merge,
    _merge_context,
    _one_line,
    _redactor,
    _skipped,
)


def run_workflow(request: RunRequest, *, executor: StepExecutor | None = None) -> RunOutcome:
    """Run ``request.workflow`` for one deployment, recording every step; seal at the end.

    Returns:
        The :class:`RunOutcome` (also when the branch was already complete: nothing is
        written twice).

    Raises:
        UsageError: bad request; the branch was written by another workflow or does not
            follow this one; ``--phase`` with a workflow that has no deployment mark.
        PolicyViolation: ``--phase pre`` on a branch that is already past the mark; the
            workflow was never admitted, or its policy refuses the run's overrides.
        SigningError / TimestampError / StorageError: a record could not be written; the
            branch stays at its last complete record and a re-run continues from there.
    """
    executor = executor or StepExecutor()
    workflow = request.workflow
    env = os.environ if request.env is None else request.env
    # Usage checks first: nothing is locked, collected or written when they fail.
    check_environment(workflow, env)
    # Admission with the values this run uses, whoever built the request: a request
    # built directly (the demo, a library caller) is judged as `afdp run`'s is.
    request = admit_request(request, env)
    clock = request.clock or InterruptibleClock(_default_clock())
    try:
        with run_lock(request.repository, request.service, request.deployment):
            return _run_locked(request, executor, env, clock)
    except BaseException:
        # Ctrl-C (or any abort): collector threads stop sleeping at once.
        cancel = getattr(clock, "cancel", None)
        if cancel is not None:
            cancel()
        raise


def _run_locked(request: RunRequest, executor: StepExecutor, env: Mapping[str, str], clock: Any) -> RunOutcome:
    workflow = request.workflow
    steps = workflow.steps
    run_id = str(uuid.uuid4())
    base_context = {
        "run_id": run_id,
        "phase": request.phase,
        "workflow": {"name": workflow.name, "version": workflow.version},
        **({"time_scale": request.time_scale} if request.time_scale != 1.0 else {}),
        **({"overrides": _json_safe(dict(request.overrides))} if request.overrides else {}),
        **executor.context(),
    }
    run = RunState(
        request=request,
        executor=executor,
        clock=clock,
        env=env,
        run_id=run_id,
        base_context=base_context,
        redact=_redactor(workflow, env),
    )
    existing, sealed_seq = _read_branch(request)
    named = request.phase not in ("all", "pre", "post")
    mark = _mark_index(workflow, "all" if named else request.phase)
    _check_prefix(request, existing)
    if existing:
        # Before anything else, sealed or not: a run that names another deployment (or
        # another workflow) than the branch records must not continue it, nor be told
        # that "its" evidence is already recorded.
        store = EvidenceStore(request.repository)
        head = store.head(branch_ref(request.service, request.deployment))
        if head is not None:
            _check_same_deployment(store, head, request)

    if request.phase == "pre":
        selected = range(0, mark)
        if len(existing) > mark:
            raise PolicyViolation(
                f"{request.service}/{request.deployment} is already past the deployment mark "
                f"({len(existing)} steps recorded); run --phase post"
            )
    elif named:
        # A phase of the workflow by name: every step up to the end of that phase (the
        # guide's pre_migration / during_migration / post_migration run one at a time).
        end = max(s.index for s in steps if s.phase == request.phase) + 1
        selected = range(0, end)
    else:
        selected = range(0, len(steps))

    to_run = [i for i in selected if i >= len(existing)]
    if to_run and sealed_seq is None:
        # The genesis record needs a signature and a time-stamp: write it (or, on a
        # resumed branch, probe the signer and TSA) before anything is collected, so a
        # TSA that is down or a broken signer fails in seconds with nothing lost.
        _open_or_probe(run)
    for index in selected:
        step = steps[index]
        if index < len(existing):
            _restore(run, step, existing[index])
            continue
        if sealed_seq is not None:
            raise StorageError(
                f"{request.service}/{request.deployment} is sealed but lacks step {step.name!r}"
            )
        _check_tail(run, step)
        spooled = _read_spool(run, step)
        if spooled is not None:
            result = spooled
        else:
            starting = getattr(request.progress, "starting", None)
            if starting is not None:  # a progress display may show the step while it runs
                starting(step, run.scaled(step.max_duration().seconds))
            result = _execute(run, step, missed=request.phase == "post" and index < mark)
        _append(run, step, result)

    seal_digest = None
    sealed = sealed_seq is not None
    last_step = selected[-1] == len(steps) - 1 if len(selected) else False
    if request.phase != "pre" and not sealed and (not named or last_step):
        written = seal(
            request.repository,
            service=request.service,
            deployment=request.deployment,
            signer=request.signer,
            tsa_urls=request.tsa_urls,
            workflow_digest=workflow.digest,
        )
        seal_digest, sealed = written.envelope_sha256, True
    store = EvidenceStore(request.repository)
    head = store.head(branch_ref(request.service, request.deployment))
    if seal_digest is None and sealed and head is not None:
        seal_digest = trailers(store.message_of(head)).get("AFDP-Digest", "").removeprefix("sha256:")
    last_analysis = next(reversed(run.analyses.values()), None) if run.analyses else None
    return RunOutcome(
        service=request.service,
        deployment=request.deployment,
        repository=str(request.repository),
        branch=branch_ref(request.service, request.deployment),
        workflow=workflow.name,
        workflow_digest=workflow.digest,
        phase=request.phase,
        run_id=run_id,
        steps=tuple(run.reports),
        analysis=last_analysis,
        decision=run.decision,
        action=run.action,
        training=run.training,
        sealed=sealed,
        head=str(head.id) if head is not None else None,
        seal_digest=seal_digest,
        context=base_context,
    )


def _default_clock() -> Any:
    try:
        from afdp.pipeline.collectors import SYSTEM_CLOCK as collectors_clock  # type: ignore[attr-defined]
    except ImportError:
        return SYSTEM_CLOCK
    return collectors_clock


def _mark_index(workflow: Workflow, phase: str) -> int:
    steps = workflow.steps
    for step in steps:
        if step.kind is StepKind.MARK:
            return step.index
    if workflow.boundary is not None:  # a `wait_for: deployment` marks it
        return workflow.boundary
    if phase == "all":
        return 0
    raise UsageError(
        f"workflow {workflow.name} has no mark_deployment_time step, so --phase {phase} "
        "cannot split it; add '- mark_deployment_time' or run without --phase"
    )


def _execute(run: RunState, step: Step, *, missed: bool) -> StepResult:
    started = rec.utc_now()
    if run.stopped_by and step.kind is not StepKind.RECORD:
        return _skipped(f"skipped: gate {run.stopped_by} triggered and stopped the workflow")
    if missed and step.kind is not StepKind.PREDICT and not (
        step.kind is StepKind.CAPTURE and isinstance(step.params, Capture)
        and step.params.role == "before"
    ):
        return _skipped(
            "skipped: the pre-deployment phase was not recorded and this step cannot be "
            "taken after the deployment"
        )
    values = run.values()
    for label, expression, wanted in (("when", step.when, True), ("unless", step.unless, False)):
        if expression is None:
            continue
        try:
            holds = expression.evaluate(values)
        except EvaluationError as exc:
            return StepResult(
                "failed",
                {"outputs": {}, "condition": {label: str(expression), "error": str(exc)}},
                f"{label} condition could not be evaluated",
                error=f"{label}: {expression} could not be evaluated: {exc}",
            )
        if holds != wanted:
            return _skipped(
                f"skipped: {label} {expression} is {str(holds).lower()}",
                condition={label: str(expression), "result": holds},
            )
    try:
        if step.kind is StepKind.CAPTURE:
            work: Callable[[], StepResult] = lambda: handler_for(step.kind)(run, step, values, missed=missed)  # noqa: E731
        else:
            work = lambda: _dispatch(run, step, values)  # noqa: E731
        # One executor call per step (one Prefect task per step: a capture's metrics are
        # collected concurrently inside it, with the executor's retries).
        result, context = run.executor.run(step, work)
        result = _merge_context(result, context)
    except UnresolvedError as exc:
        result = StepResult("failed", {"outputs": {}}, f"failed: {_one_line(str(exc))}", error=str(exc))
    except AfdpError as exc:
        text = _one_line(exc.diagnostics())
        result = StepResult("failed", {"outputs": {}}, f"failed: {text}", error=text)
    except Exception as exc:  # a bug costs this step (recorded), not the evidence chain
        text = _one_line(f"internal error: {type(exc).__name__}: {exc}")
        result = StepResult("failed", {"outputs": {}}, text, error=text)
    return replace(result, result={**result.result, "started": rec.format_time(started)})


Handler = Callable[..., StepResult]


@functools.cache
def handler_for(kind: StepKind) -> Handler:
    """The function that runs steps of ``kind``, as the step catalog names it.

    Raises:
        UsageError: the catalog names no handler for ``kind`` (or one that does not exist).
    """
    target = catalog.STEP_HANDLERS.get(kind)
    module_name, _, function = (target or "").partition(":")
    handler = None
    if module_name and function:
        module = importlib.import_module(f"afdp.pipeline.runner.steps.{module_name}")
        handler = getattr(module, function, None)
    if not callable(handler):
        raise UsageError(f"step kind {kind.value} is not supported by this runner")
    return cast(Handler, handler)


def _dispatch(run: RunState, step: Step, values: dict[str, Any]) -> StepResult:
    return handler_for(step.kind)(run, step, values)


def _append(run: RunState, step: Step, outcome: StepResult) -> None:
    request = run.request
    finished_text = outcome.result.get("finished")
    finished = rec.parse_time(finished_text) if isinstance(finished_text, str) else rec.utc_now()
    started_text = outcome.result.get("started")
    started = rec.parse_time(started_text) if isinstance(started_text, str) else finished
    result = {k: v for k, v in outcome.result.items() if k not in ("started", "finished")}
    result = run.redact(_json_safe(result))
    draft = rec.RecordDraft(
        kind=rec.KIND_STEP,
        step=step.name,
        result=result,
        status=outcome.status,
        index=step.index,
        started_at=started,
        finished_at=max(finished, started),
        provenance=run.redact(_json_safe(dict(outcome.provenance))),
        context=_merge(
            {
                **run.base_context,
                "step": {"type": step.type, "kind": step.kind.value, "phase": step.phase},
                **_artifact_context(run, step, outcome),
            },
            run.redact(_json_safe(dict(outcome.context))),
        ),
        workflow_digest=run.workflow.digest,
        summary=run.redact(_one_line(outcome.summary))[:200],
        error=run.redact(outcome.error) if outcome.error else None,
        attachments=dict(outcome.attachments),
        imported=request.imported,
    )
    draft = _refuse_encoded_secrets(run, draft)
    files = _genesis_files(run)
    try:
        written = append_record(
            request.repository,
            service=request.service,
            deployment=request.deployment,
            draft=draft,
            signer=request.signer,
            tsa_urls=request.tsa_urls,
            author=request.author,
            genesis_metadata=run.redact(_genesis_metadata(request, files)),
            genesis_attachments=files,
        )
    except (SigningError, TimestampError, StorageError, NetworkError) as exc:
        # The work is done (a baseline window cannot be taken again): keep it on disk
        # and say so; a re-run records it instead of collecting again.
        path = _write_spool(run, step, draft, finished, str(exc))
        raise StorageError(
            f"{_one_line(exc.diagnostics())}; the result of step {step.name} was not recorded but "
            f"is kept in {path}: re-run the same command to record it (it is not collected again)"
        ) from exc
    _spool_path(run, step).unlink(missing_ok=True)
    last = written[-1]
    # (the draft, not the outcome: a result refused for a secret is not absorbed)
    recorded = RecordedStep(
        last.sequence, step.name, last.envelope_sha256, draft.status, draft.result, dict(draft.attachments)
    )
    run.records[step.name] = recorded
    _absorb(run, step, draft.result, draft.attachments)
    report = StepReport(
        step.name,
        step.index,
        step.kind.value,
        draft.status,
        draft.summary or "",
        draft.error,
        last.sequence,
        last.envelope_sha256,
    )
    run.reports.append(report)
    if request.progress:
        request.progress(report)


def _artifact_context(run: RunState, step: Step, outcome: StepResult) -> dict[str, Any]:
    """The deployed artifact, for a record that decides (a decide step, a gate that
    stopped the run): its statement then names the image digest and commit as subjects,
    so an admission controller asks "was this artifact's rollout judged safe" of it."""
    decides = step.kind is StepKind.DECIDE or (step.kind is StepKind.GATE and outcome.result.get("stop"))
    artifact = run.request.info.deployed_artifact() if decides else None
    return {rec.DEPLOYED_ARTIFACT: artifact} if artifact else {}


def _refuse_encoded_secrets(run: RunState, draft: rec.RecordDraft) -> rec.RecordDraft:
    """Return ``draft``, or, when it holds a secret in an encoding the scrubber cannot
    undo (hex, base64, URL-quoted: ``SELECT hex(...)``, an API echoing a header), a
    failed record in its place that names the variable and keeps nothing of the result.
    Evidence is signed and append-only: a leaked secret could never be taken back.
    """
    if not run.redact:
        return draft
    parts = [
        canonical_bytes(
            _json_safe(
                {
                    "result": draft.result,
                    "provenance": draft.provenance,
                    "context": draft.context,
                    "summary": draft.summary,
                    "error": draft.error,
                }
            )
        ).decode("utf-8", "replace"),
        *(data.decode("latin-1") for data in draft.attachments.values()),
    ]
    for text in parts:
        found = run.redact.encoded(text)
        if found is None:
            continue
        name, encoding = found
        reason = (
            f"the step's result holds the value of env.{name} ({encoding}); it was "
            "refused before signing and nothing of it is recorded"
        )
        return dataclasses.replace(
            draft,
            status="failed",
            result={"outputs": {}, "refused": {"secret": f"env.{name}", "encoding": encoding}},
            provenance={},
            attachments={},
            summary="refused: the result holds a secret",
            error=reason,
        )
    return draft
