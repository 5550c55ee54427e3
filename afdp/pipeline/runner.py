"""Running a validated workflow for one deployment: one signed, time-stamped record per step.

:func:`run_workflow` walks the workflow's steps in order. For each step it:

1. evaluates ``when`` / ``unless`` over what earlier steps output (a skipped step is
   still recorded, with status ``skipped`` and the reason; a condition that cannot be
   evaluated is recorded as ``failed``: nothing is silently dropped);
2. runs the step's work through a :class:`StepExecutor` (inline by default; the Prefect
   flow in ``flows/`` runs it as tasks and its run ids land in the record's context);
3. appends exactly one record (``kind="step"``) to the deployment's branch through
   :func:`afdp.evidence.ledger.append_record`: result, provenance, status, times, the workflow's
   digest; metric series go beside the envelope as attachments.

Then it seals the branch. A failing collector, query or action is a ``failed`` step with
its reason, and the flow goes on to a decision. A ``gate`` that triggers decides, acts,
and skips the rest of the workflow (a training record step still runs).

Phases: ``pre`` runs the steps before the deployment mark (the first
``mark_deployment_time``) and leaves the branch unsealed; ``post`` continues the same
branch from the mark, reading earlier outputs back from the records. In ``post``, a
baseline capture that ``pre`` never recorded is taken from the window before the
deployment time (only sources that keep history, i.e. Prometheus, can answer); other
missing pre-deployment steps are recorded as skipped.

Resumability: the branch is the run's state. Steps already recorded are never run or
written again; a re-run continues after the last committed record, so a crash or Ctrl-C
costs at most the step in flight.

Signals (``wait_for_signal``): a signal named with ``--signal NAME`` counts as received
when the step runs; otherwise, with a signal directory, the step waits (up to its
timeout) for a file named ``NAME`` to appear there; with neither, nothing can deliver it
and the step fails at once with that reason.

Secrets: ``${env.*}`` values render to redacted :class:`~afdp.workflow.interpolation.Secret`
objects; as a second line of defence every record is scrubbed of the values of the
environment variables the workflow names before it is signed.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import json
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

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
from afdp.evidence.canonical import canonical_bytes, sha256_hex
from afdp.evidence.ledger import append_record, decode_envelope, seal, trailers
from afdp.evidence.names import branch_ref
from afdp.evidence.store import EvidenceStore
from afdp.pipeline.secrets import Scrubber
from afdp.workflow import catalog
from afdp.workflow.catalog import DEFAULT_LOOKBACK, HISTORY_COLLECTORS, StepKind
from afdp.workflow.expressions import EvaluationError
from afdp.workflow.interpolation import Secret, UnresolvedError
from afdp.workflow.model import (
    Analyze,
    Capture,
    CaptureMetadata,
    Check,
    Decide,
    Gate,
    GenerateRecord,
    Query,
    Segment,
    Step,
    Wait,
    WaitForSignal,
    Workflow,
)
from afdp.workflow.units import DIMENSIONLESS, Quantity, Unit, parse_duration, parse_unit

if TYPE_CHECKING:
    from afdp.evidence.signing import AnySigner

T = TypeVar("T")

PHASES = ("all", "pre", "post")
_RATIO = parse_unit("ratio")
_SECONDS = parse_unit("s")
_ENV_REF = re.compile(r"\$\{\s*env\.([A-Za-z_][A-Za-z0-9_]*)\s*\}")
_ATTACHMENT_BAD = re.compile(r"[^a-z0-9._-]")
#: How often a signal directory is polled.
SIGNAL_POLL_SECONDS = 0.5


# --------------------------------------------------------------------------- requests


class Clock:
    """Real time: ``now()`` is UTC wall-clock time and ``sleep`` sleeps.

    (The collectors take the same two-method interface; tests may pass their own.)
    """

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


SYSTEM_CLOCK = Clock()


class RunCancelled(Exception):
    """Raised in a worker thread's sleep once the run was interrupted (Ctrl-C)."""


class InterruptibleClock:
    """Wraps a real-time clock: ``sleep`` returns at once (raising :class:`RunCancelled`)
    after :meth:`cancel`, so collector threads stop polling when the run is interrupted
    instead of finishing their window first.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.cancelled = threading.Event()

    def now(self) -> datetime:
        return self.inner.now()  # type: ignore[no-any-return]

    def sleep(self, seconds: float) -> None:
        if self.cancelled.wait(max(0.0, seconds)):
            raise RunCancelled("the run was interrupted")

    def cancel(self) -> None:
        self.cancelled.set()


@dataclass(frozen=True)
class DeploymentInfo:
    """What is known about the deployment before any step runs (``${deployment.*}``)."""

    commit: str | None = None
    deployer: str | None = None
    environment: str | None = None
    version: str | None = None
    changed_files: tuple[str, ...] = ()
    deployment_size: int | None = None
    branch: str | None = None
    commit_message: str | None = None
    source_repository: str | None = None
    deployed_at: datetime | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> DeploymentInfo:
        """Return the info from :meth:`to_json`'s form (unknown keys refused).

        Raises:
            UsageError: an unknown field, or a ``deployed_at`` that is not RFC 3339.
        """
        data = dict(data or {})
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise UsageError(f"unknown deployment field(s): {', '.join(unknown)}")
        deployed = data.get("deployed_at")
        if isinstance(deployed, str):
            try:
                data["deployed_at"] = rec.parse_time(deployed)
            except ValueError as exc:
                raise UsageError(f"deployed_at {deployed!r} is not an RFC 3339 time") from exc
        data["changed_files"] = tuple(data.get("changed_files") or ())
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        return {
            "commit": self.commit,
            "deployer": self.deployer,
            "environment": self.environment,
            "version": self.version,
            "changed_files": list(self.changed_files),
            "deployment_size": self.deployment_size,
            "branch": self.branch,
            "commit_message": self.commit_message,
            "source_repository": self.source_repository,
            "deployed_at": rec.format_time(self.deployed_at) if self.deployed_at else None,
        }


@dataclass(frozen=True)
class RunRequest:
    """Everything one run needs. ``time_scale`` > 1 shortens every wait and window
    (``--fast``); the scale is written into each record's context, so the evidence says so.
    """

    workflow: Workflow
    repository: Path
    service: str
    deployment: str
    signer: AnySigner
    tsa_urls: tuple[str, ...]
    info: DeploymentInfo = field(default_factory=DeploymentInfo)
    overrides: Mapping[str, Any] = field(default_factory=dict)
    phase: str = "all"
    time_scale: float = 1.0
    signals: frozenset[str] = frozenset()
    signal_dir: Path | None = None
    env: Mapping[str, str] | None = None
    clock: Any = None
    author: tuple[str, str] | None = None
    #: Called with each :class:`StepReport` once its record is written; if it also has a
    #: ``starting(step, seconds)`` method, that is called before each step runs.
    progress: Callable[[StepReport], None] | None = None

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise UsageError(f"invalid phase {self.phase!r}: use one of {', '.join(PHASES)}")
        if not self.tsa_urls:
            raise UsageError("at least one TSA URL is required: every record is time-stamped")
        if not (self.time_scale >= 1.0 and math.isfinite(self.time_scale)):
            raise UsageError("time scale must be a finite number >= 1")
        branch_ref(self.service, self.deployment)  # checks both names


@dataclass(frozen=True)
class StepReport:
    """One step as this run saw it (``resumed``: it was already on the branch)."""

    name: str
    index: int
    kind: str
    status: str
    summary: str
    error: str | None
    sequence: int
    digest: str
    resumed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "index": self.index,
            "kind": self.kind,
            "status": self.status,
            "summary": self.summary,
            "error": self.error,
            "sequence": self.sequence,
            "digest": self.digest,
            "resumed": self.resumed,
        }


@dataclass(frozen=True)
class RunOutcome:
    """What a run did: every step's record, the decision and action, seal and head."""

    service: str
    deployment: str
    repository: str
    branch: str
    workflow: str
    workflow_digest: str
    phase: str
    run_id: str
    steps: tuple[StepReport, ...]
    analysis: Mapping[str, Any] | None
    decision: Mapping[str, Any] | None
    action: Mapping[str, Any] | None
    training: Mapping[str, Any] | None
    sealed: bool
    head: str | None
    seal_digest: str | None
    context: Mapping[str, Any]

    @property
    def resumed(self) -> int:
        """Return how many steps were already recorded before this run."""
        return sum(1 for s in self.steps if s.resumed)

    @property
    def failed_steps(self) -> tuple[StepReport, ...]:
        return tuple(s for s in self.steps if s.status == "failed")

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "deployment": self.deployment,
            "repository": self.repository,
            "branch": self.branch,
            "workflow": self.workflow,
            "workflow_digest": self.workflow_digest,
            "phase": self.phase,
            "run_id": self.run_id,
            "resumed_steps": self.resumed,
            "steps": [s.to_json() for s in self.steps],
            "analysis": self.analysis,
            "decision": self.decision,
            "action": self.action,
            "training": self.training,
            "sealed": self.sealed,
            "head": self.head,
            "seal_digest": self.seal_digest,
            "context": dict(self.context),
        }


def prepare_request(
    *,
    workflow_path: str | Path,
    service: str,
    deployment: str,
    repository: str | Path,
    key: str,
    tsa_urls: Sequence[str],
    public_key: str | None = None,
    info: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    phase: str = "all",
    time_scale: float = 1.0,
    signals: Sequence[str] = (),
    signal_dir: str | Path | None = None,
    policy: str | Path | None = None,
    progress: Callable[[StepReport], None] | None = None,
) -> RunRequest:
    """Build a :class:`RunRequest` from plain values (CLI options, Prefect flow parameters):
    load and admit the workflow, load the signer.

    Raises:
        UsageError / WorkflowInvalid / PolicyRejected / ConfigurationError: as
        :func:`afdp.workflow.load_workflow` and :func:`afdp.evidence.signing.load_signer` do;
        UsageError also for an unset ``${env.*}`` variable or an unknown ``--set``.
    """
    from afdp.evidence.signing import load_signer
    from afdp.workflow import load_workflow

    workflow = load_workflow(workflow_path, policy=policy)
    # Checked here too, so that `afdp run` fails before any flow engine starts.
    check_environment(workflow, os.environ)
    checked = check_overrides(workflow, overrides or {})
    request = RunRequest(
        workflow=workflow,
        repository=Path(repository),
        service=service,
        deployment=deployment,
        signer=load_signer(key, public_key=public_key),
        tsa_urls=tuple(tsa_urls),
        info=DeploymentInfo.from_json(info),
        overrides=checked,
        phase=phase,
        time_scale=time_scale,
        signals=frozenset(signals),
        signal_dir=Path(signal_dir) if signal_dir else None,
        progress=progress,
    )
    # The policy judges what will run: the workflow with every value of this run.
    return admit_request(request, os.environ)


# --------------------------------------------------------------------------- executors


class StepExecutor:
    """Runs the work of each step. This default runs it in the calling thread (and a
    capture's metrics in parallel threads); ``flows/`` subclasses it to run Prefect tasks.
    """

    def context(self) -> dict[str, Any]:
        """Return context recorded in every record (e.g. the Prefect flow run id)."""
        return {"engine": "afdp"}

    def run(self, step: Step, work: Callable[[], T]) -> tuple[T, dict[str, Any]]:
        """Run ``work`` for ``step``; return its value and context for the record.

        Raises whatever ``work`` raises.
        """
        return work(), {}

    def collect(
        self, step: Step, calls: Mapping[str, Callable[[], T]]
    ) -> tuple[dict[str, T | Exception], dict[str, Any]]:
        """Run collector ``calls`` concurrently (one per metric: they share a time window).

        Returns ``({label: value or the Exception it raised}, context)``.
        """
        if not calls:
            return {}, {}
        out: dict[str, T | Exception] = {}
        pool = ThreadPoolExecutor(max_workers=min(8, len(calls)), thread_name_prefix="afdp-collect")
        finished = False
        try:
            futures = {label: pool.submit(self._with_retries, call) for label, call in calls.items()}
            for label, future in futures.items():
                try:
                    out[label] = future.result()
                except Exception as exc:  # recorded as the metric's failure
                    out[label] = exc
            finished = True
        finally:
            # On Ctrl-C do not wait for the collections' windows to end: the run's clock
            # is cancelled by run_workflow, which makes their sleeps return at once.
            pool.shutdown(wait=finished, cancel_futures=not finished)
        retries = {label: self.retries if getattr(call, "history", True) else 0 for label, call in calls.items()}
        return out, ({"collector_retries": retries} if self.retries else {})

    #: Attempts after the first for a failing collection (a source briefly down).
    retries: int = 0
    retry_delay_seconds: float = 1.0

    def _with_retries(self, call: Callable[[], T]) -> T:
        """Return ``call()``, retried ``retries`` times when its source keeps history (a
        live source's window has passed by then: a retry could only add "no history");
        a failure raises the first error."""
        first: Exception | None = None
        retries = self.retries if getattr(call, "history", True) else 0
        for attempt in range(retries + 1):
            try:
                return call()
            except RunCancelled:
                raise
            except Exception as exc:
                first = first or exc
                if attempt < retries:
                    time.sleep(self.retry_delay_seconds)
        assert first is not None
        raise first


# --------------------------------------------------------------------------- state


@dataclass
class _Recorded:
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
class _StepResult:
    status: str
    result: dict[str, Any]
    summary: str
    error: str | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)
    attachments: Mapping[str, bytes] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class _Run:
    request: RunRequest
    executor: StepExecutor
    clock: Any
    env: Mapping[str, str]
    run_id: str
    base_context: dict[str, Any]
    redact: Scrubber
    outputs: dict[str, Any] = field(default_factory=dict)  # step -> typed outputs
    series: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    analyses: dict[str, dict[str, Any]] = field(default_factory=dict)  # step -> analysis json
    decision: dict[str, Any] | None = None
    action: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    stopped_by: str | None = None
    deployed_at: datetime | None = None
    records: dict[str, _Recorded] = field(default_factory=dict)
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


# --------------------------------------------------------------------------- entry point


def admit_request(request: RunRequest, env: Mapping[str, str]) -> RunRequest:
    """Return ``request`` with its overrides checked and its workflow admitted with
    every value the run will render its templates with, known before it starts.

    This is the one place a run is admitted: :func:`prepare_request` (``afdp run``, a
    resumed run, the Prefect flow on a worker, the GitHub Action) and
    :func:`run_workflow` (whoever built the request: the demo, a library caller) both
    call it, and the request it returns is exactly what runs. The policy judges the
    ``--set workflow.X`` values, the ``${deployment.*}`` values (``--commit``,
    ``--environment``...), the ``${env.*}`` values in ``env`` and the environment a
    database driver reads its defaults from (this process's: libpq's ``PGHOSTADDR``,
    ``PGHOST``, ``PGSERVICE``). A collector, webhook or database the policy forbids,
    or an action program it forbids, is refused here, before anything is locked,
    collected or written.

    Raises:
        UsageError: an unknown ``--set`` variable or a value of the wrong type (exit 2).
        PolicyRejected: those values break a rule (exit 1).
        PolicyViolation: the workflow was never admitted by any policy (exit 1).
    """
    from afdp.workflow.policy import RunValues

    overrides = check_overrides(request.workflow, request.overrides)
    known = RunValues(
        overrides=overrides,
        deployment=_deployment_values(request),
        env=env,
        driver_env=os.environ,
    )
    return replace(request, overrides=overrides, workflow=admitted_for(request.workflow, known))


def admitted_for(workflow: Workflow, known: Any) -> Workflow:
    """Return ``workflow`` admitted by the policy that admitted it, now with ``known``
    (:class:`afdp.workflow.policy.RunValues`: the values the run will use).

    Raises:
        PolicyRejected: the values break a rule (exit 1).
        PolicyViolation: the workflow was never admitted by any policy (exit 1).
    """
    admission = workflow.admission
    if admission is None:
        raise PolicyViolation(
            f"workflow {workflow.name!r} was not admitted by an admission policy; load it "
            "with afdp.workflow.load_workflow (which admits it) before running it"
        )
    return cast(Workflow, admission.readmit(workflow, known))


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
    run = _Run(
        request=request,
        executor=executor,
        clock=clock,
        env=env,
        run_id=run_id,
        base_context=base_context,
        redact=_redactor(workflow, env),
    )
    existing, sealed_seq = _read_branch(request)
    mark = _mark_index(workflow, request.phase)
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
    if request.phase != "pre" and not sealed:
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


# --------------------------------------------------------------------------- start-up checks


def env_names(workflow: Workflow) -> list[str]:
    """Return the names of every ``${env.NAME}`` the workflow refers to (sorted)."""
    try:
        text = json.dumps(workflow.document, default=str)
    except (TypeError, ValueError):
        text = ""
    names = set(_ENV_REF.findall(text))
    for spec in getattr(workflow, "actions", ()) or ():
        for template in (spec.secret, spec.webhook, *(spec.command or ())):
            if template is not None:
                names.update(p.parts[1] for p in template.placeholders if p.secret)
    for collector in workflow.collectors:
        for template in (collector.url, collector.body, *(t for _, t in collector.headers)):
            if template is not None:
                names.update(p.parts[1] for p in template.placeholders if p.secret)
    return sorted(names)


def check_environment(workflow: Workflow, env: Mapping[str, str]) -> None:
    """Check that every ``${env.NAME}`` the workflow uses is set (a baseline cannot be
    taken again once the deployment happened, so a missing secret must stop the run first).

    Raises:
        UsageError: one or more variables are unset or empty (exit 2).
    """
    missing = [name for name in env_names(workflow) if not env.get(name)]
    if missing:
        refs = ", ".join(f"${{env.{n}}}" for n in missing)
        raise UsageError(
            f"workflow {workflow.name} needs environment variable(s) {', '.join(missing)} ({refs}); "
            "set them before running"
        )


def check_overrides(workflow: Workflow, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``overrides`` checked against the workflow's declared variables (the same
    rules as ``afdp plan --set``): strings take the type of the variable's default.

    Raises:
        UsageError: an unknown variable (with a suggestion) or a value of the wrong type.
    """
    from afdp.workflow.plan import parse_settings

    texts: dict[str, str] = {}
    for name, value in overrides.items():
        if isinstance(value, bool):
            texts[f"workflow.{name}"] = "true" if value else "false"
        elif isinstance(value, (int, float, str)):
            texts[f"workflow.{name}"] = str(value)
        else:
            raise UsageError(f"--set workflow.{name}: expected a string, number or true/false")
    _, typed = parse_settings(workflow, texts)
    return typed


# --------------------------------------------------------------------------- run lock

#: Where run locks live, inside the evidence repository's git dir.
LOCK_DIR = "afdp-locks"


@contextlib.contextmanager
def run_lock(repository: Path, service: str, deployment: str) -> Iterator[Path]:
    """Hold the exclusive run lock of one deployment for the ``with`` block.

    An ``flock`` on ``<gitdir>/afdp-locks/<service>/<deployment>.lock``: the operating
    system releases it when the process exits or crashes, so a stale lock never blocks.

    Raises:
        StorageError: another run holds the lock (exit 3), naming its pid and start time.
    """
    store = EvidenceStore(repository)
    path = store.path / LOCK_DIR / service / f"{deployment}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 (closed below, which releases the lock)
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().split()
            pid = holder[0] if holder else "?"
            since = holder[1] if len(holder) > 1 else "?"
            raise StorageError(
                f"deployment {deployment} is being recorded by another run (pid {pid}, since {since})"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {rec.format_time(rec.utc_now())}\n")
        handle.flush()
        yield path
    finally:
        handle.close()


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


# --------------------------------------------------------------------------- branch state


def _read_branch(request: RunRequest) -> tuple[list[_Recorded], int | None]:
    """Return the step records already on the branch (in order) and the seal's sequence."""
    store = EvidenceStore(request.repository)
    head = store.head(branch_ref(request.service, request.deployment))
    if head is None:
        return [], None
    found: list[_Recorded] = []
    sealed: int | None = None
    for commit in store.history(head):
        info = trailers(store.message_of(commit))
        try:
            sequence, step, kind = int(info["AFDP-Record"]), info["AFDP-Step"], info["AFDP-Kind"]
        except (KeyError, ValueError) as exc:
            raise StorageError(
                f"commit {str(commit.id)[:12]} on the branch is not an AFDP record; run 'afdp verify'"
            ) from exc
        directory = rec.record_dir(sequence, step)
        files = store.list_dir(commit.tree, directory)
        envelope = files.get(rec.ENVELOPE_FILE)
        if envelope is None:
            raise StorageError(f"record {sequence} has no envelope; run 'afdp verify'")
        if kind == rec.KIND_SEAL:
            sealed = sequence
            continue
        if kind != rec.KIND_STEP:
            continue
        predicate = decode_envelope(envelope)["predicate"]
        workflow_ref = (predicate.get("workflow") or {}).get("sha256")
        if workflow_ref and workflow_ref != request.workflow.digest:
            raise UsageError(
                f"{request.service}/{request.deployment} was recorded with workflow "
                f"{workflow_ref[:12]}, not this one ({request.workflow.digest[:12]}); "
                "use a new deployment id"
            )
        result = predicate.get("result")
        if predicate.get("result_ref"):
            result = json.loads(files.get(rec.RESULT_FILE, b"null"))
        attachments = {
            name: data
            for name, data in files.items()
            if name not in (rec.ENVELOPE_FILE, rec.RESULT_FILE)
            and not rec.TIMESTAMP_FILE.fullmatch(name)
        }
        found.append(
            _Recorded(
                sequence,
                step,
                sha256_hex(envelope),
                predicate["status"],
                result,
                attachments,
                predicate.get("summary") or "",
                predicate.get("error"),
            )
        )
    return found, sealed


def _check_prefix(request: RunRequest, existing: Sequence[_Recorded]) -> None:
    steps = request.workflow.steps
    if len(existing) > len(steps):
        raise UsageError(
            f"{request.service}/{request.deployment} has more step records than the workflow has steps"
        )
    for recorded, step in zip(existing, steps, strict=False):
        if recorded.step != step.name:
            raise UsageError(
                f"{request.service}/{request.deployment} does not follow this workflow: record "
                f"{recorded.sequence} is {recorded.step!r} where step {step.index} is {step.name!r}"
            )


def _restore(run: _Run, step: Step, recorded: _Recorded) -> None:
    """Take a step's outputs from its record instead of running it again."""
    run.records[step.name] = recorded
    result = recorded.result if isinstance(recorded.result, Mapping) else {}
    _absorb(run, step, result, recorded.attachments)
    report = StepReport(
        step.name,
        step.index,
        step.kind.value,
        recorded.status,
        recorded.summary,
        recorded.error,
        recorded.sequence,
        recorded.digest,
        resumed=True,
    )
    run.reports.append(report)
    if run.request.progress:
        run.request.progress(report)


def _absorb(
    run: _Run, step: Step, result: Mapping[str, Any], attachments: Mapping[str, bytes]
) -> None:
    """Update the run's state from a step's result (fresh or read back)."""
    outputs = result.get("outputs")
    if isinstance(outputs, Mapping) and outputs:
        run.outputs[step.name] = typed_outputs(run.workflow, step, outputs)
    if step.kind is StepKind.MARK and isinstance(outputs, Mapping) and outputs.get("deployed_at"):
        run.deployed_at = rec.parse_time(outputs["deployed_at"])
    if (
        step.kind is StepKind.SIGNAL
        and step.index == run.workflow.boundary
        and isinstance(outputs, Mapping)
        and outputs.get("received_at")
        and run.deployed_at is None
    ):
        # With no mark_deployment_time, the deployment signal marks the deployment.
        run.deployed_at = run.request.info.deployed_at or rec.parse_time(outputs["received_at"])
    if step.kind is StepKind.CAPTURE:
        series: dict[str, list[float]] = {}
        for metric, ref in (result.get("series") or {}).items():
            data = attachments.get(ref.get("path", ""))
            if data is None:
                continue
            document = json.loads(data)
            series[metric] = [float(v) for _, v in document.get("samples", [])]
        run.series[step.name] = series
    if step.kind is StepKind.ANALYZE and isinstance(result.get("analysis"), Mapping):
        run.analyses[step.name] = dict(result["analysis"])
    if step.kind in (StepKind.DECIDE, StepKind.GATE):
        if result.get("decision") is not None:
            run.decision = dict(result["decision"])
        if result.get("action") is not None:
            run.action = dict(result["action"])
        if step.kind is StepKind.GATE and result.get("stop"):
            run.stopped_by = step.name
    if step.kind is StepKind.RECORD and isinstance(result.get("record"), Mapping):
        run.training = dict(result["record"])


# --------------------------------------------------------------------------- one step


def _execute(run: _Run, step: Step, *, missed: bool) -> _StepResult:
    started = rec.utc_now()
    if run.stopped_by and step.kind is not StepKind.RECORD:
        return _skipped(f"skipped: gate {run.stopped_by} triggered and stopped the workflow")
    if missed and not (
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
            return _StepResult(
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
            work: Callable[[], _StepResult] = lambda: _capture(run, step, values, missed=missed)  # noqa: E731
        else:
            work = lambda: _dispatch(run, step, values)  # noqa: E731
        # One executor call per step (one Prefect task per step: a capture's metrics are
        # collected concurrently inside it, with the executor's retries).
        result, context = run.executor.run(step, work)
        result = _merge_context(result, context)
    except UnresolvedError as exc:
        result = _StepResult("failed", {"outputs": {}}, f"failed: {_one_line(str(exc))}", error=str(exc))
    except AfdpError as exc:
        text = _one_line(exc.diagnostics())
        result = _StepResult("failed", {"outputs": {}}, f"failed: {text}", error=text)
    except Exception as exc:  # a bug costs this step (recorded), not the evidence chain
        text = _one_line(f"internal error: {type(exc).__name__}: {exc}")
        result = _StepResult("failed", {"outputs": {}}, text, error=text)
    return replace(result, result={**result.result, "started": rec.format_time(started)})


def _merge_context(result: _StepResult, context: Mapping[str, Any]) -> _StepResult:
    return replace(result, context=_merge(result.context, context)) if context else result


def _skipped(reason: str, **extra: Any) -> _StepResult:
    return _StepResult("skipped", {"outputs": {}, "reason": reason, **extra}, reason)


def _dispatch(run: _Run, step: Step, values: dict[str, Any]) -> _StepResult:
    kind = step.kind
    handler = _HANDLERS.get(kind)
    if handler is None:
        raise UsageError(f"step kind {kind.value} is not supported by this runner")
    return handler(run, step, values)


def _append(run: _Run, step: Step, outcome: _StepResult) -> None:
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
            {**run.base_context, "step": {"type": step.type, "kind": step.kind.value, "phase": step.phase}},
            run.redact(_json_safe(dict(outcome.context))),
        ),
        workflow_digest=run.workflow.digest,
        summary=run.redact(_one_line(outcome.summary))[:200],
        error=run.redact(outcome.error) if outcome.error else None,
        attachments=dict(outcome.attachments),
    )
    draft = _refuse_encoded_secrets(run, draft)
    try:
        written = append_record(
            request.repository,
            service=request.service,
            deployment=request.deployment,
            draft=draft,
            signer=request.signer,
            tsa_urls=request.tsa_urls,
            author=request.author,
            genesis_metadata=run.redact(_genesis_metadata(request)),
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
    recorded = _Recorded(
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


def _refuse_encoded_secrets(run: _Run, draft: rec.RecordDraft) -> rec.RecordDraft:
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


def _genesis_metadata(request: RunRequest) -> dict[str, Any]:
    workflow = request.workflow
    return _json_safe(
        {
            "workflow": {
                "name": workflow.name,
                "version": workflow.version,
                "sha256": workflow.digest,
                "steps": [s.name for s in workflow.steps],
            },
            "deployment": request.info.to_json(),
            # --set values (workflow variables, never ${env.*} secrets).
            "overrides": dict(request.overrides),
        }
    )


# --------------------------------------------------------------------------- branch opening


def _open_or_probe(run: _Run) -> None:
    """Write the genesis record of a new branch, or on an existing one check that the
    signer signs and a TSA answers, before any step collects anything.

    Raises:
        SigningError / TimestampError / StorageError: nothing was collected or written.
    """
    request = run.request
    store = EvidenceStore(request.repository)
    ref = branch_ref(request.service, request.deployment)
    head = store.head(ref)
    if head is not None:
        _check_same_deployment(store, head, request)  # opened by another run meanwhile
        _probe(request, run.run_id)
        return
    from afdp.evidence.ledger import open_branch

    # Opened by another writer meanwhile (None): the tail check catches a foreign record.
    open_branch(
        request.repository,
        service=request.service,
        deployment=request.deployment,
        signer=request.signer,
        tsa_urls=request.tsa_urls,
        workflow_digest=request.workflow.digest,
        genesis_metadata=run.redact(_genesis_metadata(request)),
        author=request.author,
    )


_FACTS = ("commit", "deployer", "environment", "version")


def _check_same_deployment(store: EvidenceStore, head: Any, request: RunRequest) -> None:
    """Refuse to continue, or to re-run, a branch with deployment facts other than those
    it was opened with (``--phase post`` naming another commit or deployer than ``--phase
    pre``; a sealed deployment run again for another commit): one deployment's evidence
    must tell one story, and a run must never be told that "its" evidence is recorded.

    Raises:
        UsageError: a fact given now differs from the one recorded in the genesis record
            (or was not recorded there); the message names every difference.
    """
    from afdp.evidence.ledger import decode_envelope

    first = store.history(head)[0]
    envelope = store.read_blob(first.tree, f"{rec.record_dir(0, 'genesis')}/{rec.ENVELOPE_FILE}")
    try:
        recorded = decode_envelope(envelope or b"")["predicate"]["result"]["metadata"]["deployment"]
    except (ValueError, KeyError, TypeError):
        return  # not ours to judge here: `afdp verify` names what is wrong with the branch
    if not isinstance(recorded, dict):
        return
    given = request.info.to_json()
    differ = []
    for fact in _FACTS:
        now, then = given.get(fact), recorded.get(fact)
        if now is not None and now != then:
            differ.append((f"{fact} {then!r}" if then is not None else f"no {fact}", repr(now)))
    if differ:  # (another workflow than the branch's is refused by _read_branch)
        told = "; and with ".join(f"{then}; this run says {now}" for then, now in differ)
        raise UsageError(
            f"{request.service}/{request.deployment} was opened with {told}: one deployment's "
            "evidence must tell one story (use a new deployment id for another deployment)"
        )


def _probe(request: RunRequest, run_id: str) -> None:
    import hashlib

    from afdp.evidence.keyless import KeylessSigner
    from afdp.evidence.signing import sign_bytes
    from afdp.evidence.timestamp import request_timestamp

    probe = f"afdp run probe {run_id}".encode()
    if isinstance(request.signer, KeylessSigner):
        signature = hashlib.sha256(probe).digest()  # keyless signing is interactive: TSA only
    else:
        signature = sign_bytes(request.signer, probe)
    request_timestamp(signature, request.tsa_urls, timeout=10.0)


def _check_tail(run: _Run, step: Step) -> None:
    """Check that the branch's last record is the step before ``step`` (genesis for the
    first), i.e. nobody else appended to the branch while this run holds it.

    Raises:
        StorageError: the branch ends elsewhere (exit 3).
    """
    request = run.request
    store = EvidenceStore(request.repository)
    head = store.head(branch_ref(request.service, request.deployment))
    expected = run.workflow.steps[step.index - 1].name if step.index > 0 else "genesis"
    found = trailers(store.message_of(head)).get("AFDP-Step") if head is not None else None
    if head is None or found != expected:
        raise StorageError(
            f"{request.service}/{request.deployment}: the branch ends with {found or 'nothing'!r} where "
            f"{expected!r} was expected before step {step.name!r}; another writer appended to it "
            "(run 'afdp verify')"
        )


# --------------------------------------------------------------------------- spool

#: Where a step's result waits when its record could not be written (TSA down).
SPOOL_DIR = "afdp-spool"


def _spool_path(run: _Run, step: Step) -> Path:
    request = run.request
    store = EvidenceStore(request.repository)
    return store.path / SPOOL_DIR / request.service / request.deployment / f"{step.index:03d}-{step.name}.json"


def _write_spool(run: _Run, step: Step, draft: rec.RecordDraft, finished: datetime, reason: str) -> Path:
    path = _spool_path(run, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "workflow_sha256": run.workflow.digest,
        "step": step.name,
        "index": step.index,
        "run_id": run.run_id,
        "spooled_at": rec.format_time(rec.utc_now()),
        "reason": _one_line(reason),
        "status": draft.status,
        "result": {**draft.result, "started": rec.format_time(draft.started_at or finished), "finished": rec.format_time(finished)},
        "summary": draft.summary,
        "error": draft.error,
        "provenance": draft.provenance,
        "context": {k: v for k, v in (draft.context or {}).items() if k == "prefect"},
        "attachments": {k: base64.b64encode(v).decode() for k, v in draft.attachments.items()},
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=1))
    os.replace(tmp, path)
    return path


def _read_spool(run: _Run, step: Step) -> _StepResult | None:
    """Return the spooled result of ``step`` (from a run whose record could not be
    written), or None. A spool from another workflow version is ignored (and left).
    """
    path = _spool_path(run, step)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StorageError(f"spooled result {path} is unreadable ({exc}); move it away to re-run the step") from exc
    if document.get("workflow_sha256") != run.workflow.digest or document.get("step") != step.name:
        return None
    spool = {
        "spooled_at": document.get("spooled_at"),
        "reason": document.get("reason"),
        "run_id": document.get("run_id"),
    }
    return _StepResult(
        document["status"],
        dict(document["result"]),
        document.get("summary") or "",
        document.get("error"),
        document.get("provenance") or {},
        {k: base64.b64decode(v) for k, v in (document.get("attachments") or {}).items()},
        {**(document.get("context") or {}), "spool": spool},
    )


# --------------------------------------------------------------------------- step kinds


def _wait(run: _Run, step: Step, values: dict[str, Any]) -> _StepResult:
    params = step.params
    assert isinstance(params, Wait)
    seconds = run.scaled(params.duration.seconds)
    run.clock.sleep(seconds)
    now = rec.format_time(rec.utc_now())
    return _StepResult(
        "ok",
        {"outputs": {"finished_at": now}, "duration": params.duration.to_json(), "waited_seconds": round(seconds, 3)},
        f"waited {params.duration}" + (f" ({seconds:.1f}s at time scale {run.request.time_scale:g})" if run.request.time_scale != 1 else ""),
    )


def _signal(run: _Run, step: Step, values: dict[str, Any]) -> _StepResult:
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
        return _StepResult(
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
            return _StepResult(
                "failed",
                {"outputs": {}, "signal": name, "source": str(path), "timeout": params.timeout.to_json()},
                f"signal {name} not received within {params.timeout}",
                error=f"signal {name!r} not received within {params.timeout} (no file {path})",
            )
        run.clock.sleep(min(SIGNAL_POLL_SECONDS, max(0.0, deadline - time.monotonic())))


def _signal_received(name: str, source: str) -> _StepResult:
    return _StepResult(
        "ok",
        {"outputs": {"received_at": rec.format_time(rec.utc_now()), "signal": name}, "source": source},
        f"signal {name} received ({source})",
    )


def _mark(run: _Run, step: Step, values: dict[str, Any]) -> _StepResult:
    deployed = run.request.info.deployed_at or rec.utc_now()
    text = rec.format_time(deployed)
    info = run.request.info
    return _StepResult(
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


def _metadata(run: _Run, step: Step, values: dict[str, Any]) -> _StepResult:
    params = step.params
    assert isinstance(params, CaptureMetadata)
    wanted = params.fields or tuple(catalog.METADATA_FIELDS)
    found = {name: _METADATA_SOURCES[name](run.request.info) for name in wanted if name in _METADATA_SOURCES}
    outputs = {k: v for k, v in found.items() if v is not None}
    missing = sorted(k for k in wanted if k not in outputs)
    summary = f"recorded {len(outputs)} field(s)" + (f"; not given: {', '.join(missing)}" if missing else "")
    return _StepResult("ok", {"outputs": outputs, "missing": missing}, summary)


def _capture(run: _Run, step: Step, values: dict[str, Any], *, missed: bool) -> _StepResult:
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
    elif params.duration is None:
        start, end = now - lookback, now
    else:
        start, end = now, now + duration
    interval = run.scaled(params.interval.seconds) if params.interval else None
    calls: dict[str, Callable[[], Any]] = {}
    timings: dict[str, float] = {}
    no_history: dict[str, str] = {}
    for name in params.metrics:
        kind = _collector_type(workflow, name)
        if missed and kind not in HISTORY_SOURCES:
            # A live source answers "now", never the window before the deployment: a
            # sample taken now would be post-deployment state filed as the baseline.
            no_history[name] = (
                f"{kind} source keeps no history; run --phase pre before deploying"
            )
            continue
        calls[name] = _bind_capture(
            capture_metric, workflow, name, values, run.env, start, end,
            interval
            if interval is not None
            else scaled_collector_interval(workflow, name, run.request.time_scale),
            run.clock, timings,
        )  # fmt: skip
        calls[name].history = kind in HISTORY_SOURCES  # type: ignore[attr-defined]
    collected, context = run.executor.collect(step, calls)
    outputs: dict[str, Any] = {
        "started_at": rec.format_time(start),
        "finished_at": rec.format_time(end),
    }
    series_refs: dict[str, Any] = {}
    provenance: dict[str, Any] = {}
    errors: dict[str, str] = {}
    attachments: dict[str, bytes] = {}
    for name in params.metrics:
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
        outputs[name] = _stats(values_list)
        series_refs[name] = {"path": path, "sha256": sha256_hex(blob), "samples": len(values_list), "unit": data.unit}
        provenance[name] = dict(data.provenance)
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
    ok = len(params.metrics) - len(errors)
    summary = f"captured {ok}/{len(params.metrics)} metric(s)"
    if errors:
        summary += f"; failed: {', '.join(sorted(errors))}"
        error = "; ".join(f"{m}: {e}" for m, e in sorted(errors.items()))
        return _StepResult("failed", result, summary, error, provenance, attachments, context)
    return _StepResult("ok", result, summary, None, provenance, attachments, context)


#: Collector types that can answer a window in the past (from their own storage).
HISTORY_SOURCES = HISTORY_COLLECTORS


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
            timings[metric] = time.monotonic() - first[0]

    call.__name__ = f"capture_{metric}"
    return call


def _query(run: _Run, step: Step, values: dict[str, Any]) -> _StepResult:
    from afdp.pipeline.collectors import run_query

    params = step.params
    assert isinstance(params, Query)
    samples: list[dict[str, Any]] = []
    provenance: dict[str, Any] = {}
    deadline = time.monotonic() + (run.scaled(params.duration.seconds) if params.duration else 0)
    interval = run.scaled(params.interval.seconds) if params.interval else 1.0
    while True:
        answer = run_query(
            run.workflow, params.collector, params.query, values=values, env=run.env, limit=params.limit
        )
        rows = [_json_safe(dict(row)) for row in answer.rows]
        samples.append({"at": rec.format_time(rec.utc_now()), "rows": rows})
        provenance = dict(answer.provenance)
        if time.monotonic() + interval > deadline:
            break
        run.clock.sleep(interval)
    last = samples[-1]["rows"]
    first_value = next(iter(last[0].values())) if last and last[0] else None
    outputs: dict[str, Any] = {"rows": last, "row_count": len(last), "value": first_value}
    summary = f"{len(last)} row(s)" + (f" x {len(samples)} sample(s)" if len(samples) > 1 else "")
    if params.alert_threshold is not None:
        longest = 0.0
        for sample in samples:
            for row in sample["rows"]:
                first = next(iter(row.values()), None) if row else None
                if isinstance(first, (int, float)) and not isinstance(first, bool):
                    longest = max(longest, float(first))
        outputs["longest_lock_wait"] = longest
        outputs["alert"] = longest > params.alert_threshold.seconds
        summary += f"; longest lock wait {longest:.3f}s" + (" (ALERT)" if outputs["alert"] else "")
    result: dict[str, Any] = {"outputs": outputs}
    if len(samples) > 1:
        result["samples"] = samples
    if outputs.get("alert"):
        # A monitor whose alert fired has found what it watches for: its step fails, and
        # the decision hears of it (a failed step never ends in mark_successful).
        assert params.alert_threshold is not None
        error = (
            f"alert threshold exceeded: {outputs['longest_lock_wait']:g}s > "
            f"{params.alert_threshold} ({params.alert_threshold.seconds:g}s)"
        )
        return _StepResult("failed", result, summary, error, provenance={"query": provenance})
    return _StepResult("ok", result, summary, provenance={"query": provenance})


def _check(run: _Run, step: Step, values: dict[str, Any]) -> _StepResult:
    from afdp.pipeline.collectors import run_query

    params = step.params
    assert isinstance(params, Check)
    checks: list[dict[str, Any]] = []
    provenance: dict[str, Any] = {}
    errors: list[str] = []
    for check in params.checks:
        entry: dict[str, Any] = {"name": check.name, "expect": _json_safe(check.expect)}
        try:
            answer = run_query(run.workflow, params.collector, check.query, values=values, env=run.env, limit=1)
        except AfdpError as exc:
            entry.update(passed=False, error=exc.diagnostics())
            errors.append(f"{check.name}: {exc.diagnostics()}")
            checks.append(entry)
            continue
        rows = answer.rows
        got = _json_safe(next(iter(rows[0].values()))) if rows and rows[0] else None
        entry.update(actual=got, passed=_same(got, check.expect))
        provenance[check.name] = dict(answer.provenance)
        checks.append(entry)
    failed = [c["name"] for c in checks if not c["passed"]]
    outputs = {"passed": not failed, "failed": failed}
    summary = f"{len(checks) - len(failed)}/{len(checks)} check(s) passed"
    # A check that does not hold fails its step, as one that could not run does.
    errors += [
        f"{c['name']}: expected {c['expect']!r}, got {c['actual']!r}"
        for c in checks
        if not c["passed"] and "actual" in c
    ]
    status = "failed" if failed else "ok"
    return _StepResult(
        status, {"outputs": outputs, "checks": checks}, summary, "; ".join(errors) or None, provenance
    )


def _same(got: Any, expect: Any) -> bool:
    if isinstance(got, (int, float)) and isinstance(expect, (int, float)) and not isinstance(got, bool):
        return math.isclose(float(got), float(expect), rel_tol=1e-9, abs_tol=1e-12)
    return bool(got == expect)


def _segment(run: _Run, step: Step, values: dict[str, Any]) -> _StepResult:
    params = step.params
    assert isinstance(params, Segment)
    outputs = {name: share.base for name, share in params.groups}
    text = ", ".join(f"{name} {share}" for name, share in params.groups)
    return _StepResult("ok", {"outputs": outputs}, f"segments: {text}")


def _analysis_source(run: _Run, step: Step, name: str | None) -> str | None:
    if name:
        return name
    earlier = [s.name for s in run.workflow.steps[: step.index] if s.kind is StepKind.ANALYZE]
    return earlier[-1] if earlier else None


def _analyze(run: _Run, step: Step, values: dict[str, Any]) -> _StepResult:
    from afdp.pipeline.analysis import analyze

    params = step.params
    assert isinstance(params, Analyze)
    baseline = {m: v for m, v in run.series.get(params.baseline, {}).items() if m in params.metrics}
    impact = {m: v for m, v in run.series.get(params.impact, {}).items() if m in params.metrics}
    analysis = analyze(params, run.workflow, baseline, impact)
    document = analysis.to_json()
    outputs = plain_outputs(run.workflow, step, analysis.values())
    degraded = [m for m in params.metrics if isinstance(outputs.get(m), Mapping) and outputs[m].get("degraded")]
    inconclusive = list((document.get("summary") or {}).get("inconclusive") or document.get("inconclusive") or [])
    summary = analysis_summary(params.metrics, degraded, inconclusive)
    return _StepResult("ok", {"outputs": outputs, "analysis": document}, summary)


def analysis_summary(metrics: Sequence[str], degraded: Sequence[str], inconclusive: Sequence[str]) -> str:
    """Return the one-line summary of an analysis, missing data first: "no degradation"
    must never hide that most metrics could not be compared.
    """
    total = len(metrics)
    missing = f"{len(inconclusive)} of {total} metric(s) had no data ({', '.join(inconclusive)})"
    if inconclusive and len(inconclusive) == total:
        return f"inconclusive: no metric could be compared; {missing}"
    if degraded:
        text = f"degraded: {', '.join(degraded)}"
        return text + (f"; inconclusive: {missing}" if inconclusive else "")
    if inconclusive:
        return f"inconclusive: {missing}; no degradation in the rest"
    return "no degradation detected"


def _decision_values(run: _Run, step: Step, values: dict[str, Any], analysis: str | None) -> dict[str, Any]:
    merged = dict(values)
    source = _analysis_source(run, step, analysis)
    if source and source in run.outputs:
        merged.update(run.outputs[source])
    return merged


def _payload(run: _Run, decision: Mapping[str, Any], analysis: str | None) -> dict[str, Any]:
    request = run.request
    analysis_doc = run.analyses.get(analysis) if analysis else None
    if analysis_doc is None and run.analyses:
        analysis_doc = next(reversed(run.analyses.values()))
    return _json_safe(
        {
            "service": request.service,
            "deployment": request.deployment,
            "branch": branch_ref(request.service, request.deployment),
            "workflow": {"name": run.workflow.name, "sha256": run.workflow.digest},
            "commit": request.info.commit,
            "version": request.info.version,
            "decision": dict(decision),
            "summary": (analysis_doc or {}).get("summary"),
        }
    )


def _act(
    run: _Run,
    outcome: Any,
    values: dict[str, Any],
    analysis: str | None,
    *,
    decision: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    from afdp.pipeline.actions import perform_action

    decision = decision if decision is not None else outcome.to_json()
    spec = run.workflow.action(outcome.action) if outcome.action else None
    result = perform_action(spec, outcome, values=values, env=run.env, payload=_payload(run, decision, analysis))
    return dict(result.to_json())


def _decide(run: _Run, step: Step, values: dict[str, Any]) -> _StepResult:
    from afdp.pipeline.decide import decide

    params = step.params
    assert isinstance(params, Decide)
    source = _analysis_source(run, step, params.analysis)
    merged = _decision_values(run, step, values, source)
    failed = tuple(
        (r.name, r.error or r.summary) for r in run.reports if r.status == "failed"
    )
    outcome = decide(run.workflow, params, merged, failed_steps=failed)
    decision = outcome.to_json()
    action = _act(run, outcome, merged, source)
    outputs = {
        "decision": decision.get("decision"),
        "action": decision.get("action"),
        "label": decision.get("label"),
        "success_criteria_met": decision.get("success_criteria_met"),
    }
    summary = f"{decision.get('action')}" + (f" ({decision.get('decision')})" if decision.get("decision") else "")
    summary += f"; {action_text(decision.get('action'), action)}"
    result = {"outputs": outputs, "decision": decision, "action": action}
    if action.get("status") == "failed":
        return _StepResult("failed", result, summary, error=f"{decision.get('action')} action failed: {action.get('detail')}")
    return _StepResult("ok", result, summary)


def action_text(name: Any, action: Mapping[str, Any] | None) -> str:
    """Return one line saying what happened to the decided action."""
    action = action or {}
    status = action.get("status")
    if status == "not_configured" or not status:
        return f"no action configured for {name}"
    kind = f" ({action['kind']})" if action.get("kind") else ""
    detail = f": {action['detail']}" if action.get("detail") else ""
    return f"{name} action{kind} {status}{detail}"


def _gate(run: _Run, step: Step, values: dict[str, Any]) -> _StepResult:
    from afdp.pipeline.decide import evaluate_gate

    params = step.params
    assert isinstance(params, Gate)
    source = _analysis_source(run, step, params.analysis)
    merged = _decision_values(run, step, values, source)
    outcome = evaluate_gate(run.workflow, params, merged)
    gate = outcome.to_json()
    result: dict[str, Any] = {"outputs": outcome.values(), "gate": gate, "stop": outcome.stop}
    if not outcome.stop:
        return _StepResult("ok", result, f"gate not triggered ({params.condition})")
    decision = {
        "decision": step.name,
        "action": outcome.action,
        "label": outcome.label,
        "success_criteria_met": None,
        "reason": (
            f"gate {step.name}: {params.condition} holds"
            if outcome.triggered
            else f"gate {step.name}: {params.condition} could not be evaluated ({outcome.error}); stopping"
        ),
    }
    action = _act(run, outcome, merged, source, decision=decision)
    result.update(decision=decision, action=action)
    what = "triggered" if outcome.triggered else "inconclusive"
    summary = f"gate {what}: {outcome.action}, workflow stopped; {action_text(outcome.action, action)}"
    if action.get("status") == "failed":
        return _StepResult("failed", result, summary, error=f"{outcome.action} action failed: {action.get('detail')}")
    return _StepResult("ok", result, summary)


def _record(run: _Run, step: Step, values: dict[str, Any]) -> _StepResult:
    from afdp.pipeline.training import build_training_record

    params = step.params
    assert isinstance(params, GenerateRecord)
    cited = [
        {"step": r.step, "sequence": r.sequence, "sha256": r.digest}
        for r in sorted(run.records.values(), key=lambda r: r.sequence)
        if r.status != "skipped"
    ]
    analysis = next(reversed(run.analyses.values())) if run.analyses else None
    decision = dict(run.decision) if run.decision else None
    deployment = {
        "service": run.request.service,
        "deployment": run.request.deployment,
        **{k: v for k, v in run.request.info.to_json().items() if v not in (None, [])},
        "deployed_at": rec.format_time(run.deployed_at) if run.deployed_at else None,
    }
    record = build_training_record(
        deployment=deployment,
        analysis=analysis,
        decision=decision,
        cited=cited,
        action=run.action,
        label=params.training_label,
    )
    label = record.get("label")
    if label is None and decision:
        label = decision.get("label")
    return _StepResult(
        "ok",
        {"outputs": {"label": label}, "record_type": params.record, "record": record},
        f"{params.record} record, label {label}, citing {len(cited)} record(s)",
    )


_HANDLERS: Mapping[StepKind, Callable[[_Run, Step, dict[str, Any]], _StepResult]] = {
    StepKind.WAIT: _wait,
    StepKind.SIGNAL: _signal,
    StepKind.MARK: _mark,
    StepKind.METADATA: _metadata,
    StepKind.QUERY: _query,
    StepKind.CHECK: _check,
    StepKind.SEGMENT: _segment,
    StepKind.ANALYZE: _analyze,
    StepKind.GATE: _gate,
    StepKind.DECIDE: _decide,
    StepKind.RECORD: _record,
}


# --------------------------------------------------------------------------- outputs


def _stats(values: Sequence[float]) -> dict[str, Any]:
    """Return capture outputs for one metric, in the metric's unit (None when empty)."""
    if not values:
        return {name: None for name in catalog.CAPTURE_FIELDS} | {"count": 0}
    ordered = sorted(values)
    return {
        "mean": sum(ordered) / len(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "last": values[-1],
        "p50": _percentile(ordered, 0.50),
        "p95": _percentile(ordered, 0.95),
        "p99": _percentile(ordered, 0.99),
        "count": len(ordered),
    }


def _percentile(ordered: Sequence[float], q: float) -> float:
    if len(ordered) == 1:
        return ordered[0]
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _field_unit(kind: str, metric_unit: Unit) -> Unit | None:
    if kind == "@":
        return metric_unit
    if kind == "ratio":
        return _RATIO
    if kind == "time":
        return _SECONDS
    if kind == "number":
        return DIMENSIONLESS
    return None


def _metric_fields(workflow: Workflow, step: Step) -> tuple[Mapping[str, str], tuple[str, ...]]:
    params = step.params
    if isinstance(params, Capture):
        return catalog.CAPTURE_FIELDS, params.metrics
    if isinstance(params, Analyze):
        return catalog.ANALYSIS_FIELDS, params.metrics
    return {}, ()


def typed_outputs(workflow: Workflow, step: Step, outputs: Mapping[str, Any]) -> dict[str, Any]:
    """Return a step's outputs (as recorded, plain JSON) as values for conditions and templates:
    numbers in a metric's unit become :class:`Quantity` objects, as the compiler typed them.
    """
    fields, metrics = _metric_fields(workflow, step)
    typed: dict[str, Any] = {}
    for key, value in outputs.items():
        if key in metrics and isinstance(value, Mapping):
            unit = workflow.metric(key).unit
            typed[key] = {
                name: _quantity(v, _field_unit(fields.get(name, ""), unit), fields.get(name, ""))
                for name, v in value.items()
            }
        elif isinstance(step.params, Segment):
            typed[key] = Quantity(float(value), _RATIO) if isinstance(value, (int, float)) else value
        elif isinstance(step.params, Query) and key == "longest_lock_wait" and value is not None:
            typed[key] = Quantity(float(value), _SECONDS)
        else:
            typed[key] = value
    return typed


def _quantity(value: Any, unit: Unit | None, kind: str) -> Any:
    if unit is None or kind == "number" or value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return Quantity(float(value), unit)
    return value


def plain_outputs(workflow: Workflow, step: Step, values: Mapping[str, Any]) -> dict[str, Any]:
    """Return typed outputs as plain JSON: quantities as numbers in their field's unit."""
    fields, metrics = _metric_fields(workflow, step)
    plain: dict[str, Any] = {}
    for key, value in values.items():
        if key in metrics and isinstance(value, Mapping):
            unit = workflow.metric(key).unit
            plain[key] = {
                name: _number_in(v, _field_unit(fields.get(name, ""), unit)) for name, v in value.items()
            }
        else:
            plain[key] = _number_in(value, None)
    return _json_safe(plain)


def _number_in(value: Any, unit: Unit | None) -> Any:
    if isinstance(value, Quantity):
        target = unit if unit is not None and unit.dimension == value.unit.dimension else None
        return value.base / target.factor if target is not None else value.base
    return value


# --------------------------------------------------------------------------- helpers


def _deployment_values(request: RunRequest) -> dict[str, Any]:
    info = request.info
    values = {
        "service": request.service,
        "id": request.deployment,
        "environment": info.environment,
        "version": info.version,
        "commit": info.commit,
        "deployer": info.deployer,
        "repository": info.source_repository,
    }
    return {k: v for k, v in values.items() if v is not None}


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
