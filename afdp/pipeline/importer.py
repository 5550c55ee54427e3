"""Importing past deployments (``afdp import``): evidence of the past, marked as such.

Teams already have a history of deployments: GitHub deployments or releases, or a CSV of
deploy times. :func:`import_history` turns each into a deployment branch judged exactly
as a live run judges one, so predictions have data from day one:

1. the history file is read and checked whole (:func:`read_history`); any bad entry is a
   :class:`~afdp.errors.UsageError` naming the file, the entry and the field, and nothing
   is recorded;
2. each deployment gets a deterministic branch ``afdp/<service>/imported-<source>-<id>``
   (:func:`deployment_name`): a branch that already exists is skipped and said so, so
   importing the same history twice records nothing twice and rewrites nothing;
3. the workflow runs through the live runner (:func:`afdp.pipeline.runner.run_workflow`)
   in its ``post`` phase, on a :class:`HistoryClock` that starts at the deployment's
   time: the baseline is the workflow's window before that time and every later capture
   is a ``query_range`` over its window after it, answered from Prometheus' own history;
   analysis, decision and training record are the live code's;
4. every record carries the signed marker ``imported: true`` and ``described_time`` (the
   deployment's time), while its signed times and RFC3161 tokens are when it was written:
   an imported record can never pass for a live-captured one.

What cannot describe the past is never invented: only Prometheus collectors are queried
(any other source is recorded as failed, "keeps no history"); a window Prometheus no
longer holds is a failed capture with Prometheus' answer and the analysis says
``no_data``; decided actions and notifications are recorded as ``not_performed``; steps
that act on or read live systems (SQL, flags, traffic, signals, stores) are recorded as
skipped with the reason; a deployment whose impact window has not ended yet is skipped.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from afdp.errors import UsageError
from afdp.evidence import records as rec
from afdp.evidence.canonical import sha256_hex
from afdp.evidence.names import branch_ref
from afdp.pipeline.deploy_history import (
    PREFIX,
    SOURCES,
    PastDeployment,
    deployment_name,
    read_history,
)
from afdp.pipeline.runner.executor import StepExecutor
from afdp.pipeline.runner.request import RunRequest, check_team, declared_triggers
from afdp.pipeline.runner.state import _skipped
from afdp.workflow.catalog import StepKind
from afdp.workflow.interpolation import Template
from afdp.workflow.model import Step, Workflow

#: Step kinds that act on or read live systems: recorded as skipped in an import.
LIVE_KINDS = frozenset(
    {
        StepKind.QUERY,
        StepKind.CHECK,
        StepKind.SEGMENT,
        StepKind.FLAG,
        StepKind.BUSINESS,
        StepKind.DATABASE,
        StepKind.CORRELATE,
        StepKind.STORE,
        StepKind.TRAFFIC,
    }
)
#: Prometheus stores a sample a moment after its time: a window must have ended this
#: long ago before it counts as history.
SETTLE = timedelta(seconds=30)


class HistoryClock:
    """The run's clock for a past deployment: ``now()`` starts at the deployment's time
    and advances only when the run waits, instantly (nothing is slept).

    A wait of the run (its own thread) moves time on by its length. A collector thread's
    wait moves it to that thread's last reading plus the wait, so the metrics of one
    capture, collected in parallel over the same window, move it once, not once each.
    """

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._owner = threading.get_ident()
        self._lock = threading.Lock()
        self._read = threading.local()

    def now(self) -> datetime:
        with self._lock:
            self._read.at = self._now
            return self._now

    def set(self, moment: datetime) -> None:
        """Put the clock at ``moment`` (where a step of the past run begins)."""
        with self._lock:
            self._now = moment
            self._read.at = moment

    def sleep(self, seconds: float) -> None:
        step = timedelta(seconds=max(0.0, seconds))
        with self._lock:
            if threading.get_ident() == self._owner:
                self._now += step
            else:
                base = getattr(self._read, "at", self._now)
                self._now = max(self._now, base + step)
            self._read.at = self._now


class ImportExecutor(StepExecutor):
    """Runs steps inline, but never a step that acts on or reads a live system (recorded
    as skipped with the reason), nor a collection from a source without history.

    Each step starts with the clock at its place in the past (:func:`step_times`), so a
    run that resumes an interrupted import captures the very windows an uninterrupted
    one does: the past run's timeline is a function of the workflow and the deployment
    time, never of what happened to be recorded before.
    """

    def __init__(
        self, clock: HistoryClock, times: Mapping[int, datetime], *, boundary: int | None = None
    ) -> None:
        self.clock = clock
        self.times = dict(times)
        self.boundary = boundary

    def context(self) -> dict[str, Any]:
        return {"engine": "afdp", "imported": True}

    def run(self, step: Step, work: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
        reason = live_reason(step)
        if step.kind is StepKind.SIGNAL and step.index != self.boundary:
            # (the signal that marks the deployment has happened: the runner says so)
            reason = f"signal {step.name} of a past deployment cannot be received now"
        if reason is not None:
            return _skipped(f"skipped: imported from history: {reason}"), {}
        if step.index in self.times:
            self.clock.set(self.times[step.index])
        return work(), {}

    def collect(
        self, step: Step, calls: Mapping[str, Callable[[], Any]]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        from afdp.pipeline.collectors.base import CollectorFailed

        history = {k: c for k, c in calls.items() if getattr(c, "history", False)}
        out, context = super().collect(step, history)
        for key in calls.keys() - history.keys():
            out[key] = CollectorFailed(
                "this source keeps no history, so it cannot describe a past deployment (import)"
            )
        return out, context


def live_reason(step: Step) -> str | None:
    """Return why ``step`` cannot be run for a past deployment, or None if it can."""
    if step.kind in LIVE_KINDS:
        return f"a {step.type} step acts on or reads a live system, which cannot describe the past"
    return None


def with_prometheus(workflow: Workflow, url: str) -> Workflow:
    """Return ``workflow`` with every Prometheus collector reading from ``url`` (the
    server that holds the history). The admission policy judges it again before the run;
    each capture's provenance names the server that answered."""
    literal = Template(url, (url,))
    collectors = tuple(
        replace(c, url=literal) if c.type == "prometheus" else c for c in workflow.collectors
    )
    return replace(workflow, collectors=collectors)


def step_times(workflow: Workflow, deployed_at: datetime) -> dict[int, datetime]:
    """Return where each step of the past run begins: the deployment's time, moved on
    by every wait and by every capture window (and the collector's settling second)."""
    from afdp.pipeline.collectors.prometheus import SETTLE_SECONDS
    from afdp.workflow.model import Capture, Wait

    mark = _mark(workflow)
    moment = deployed_at
    times: dict[int, datetime] = {}
    for step in workflow.steps:
        times[step.index] = moment
        if step.index < mark or live_reason(step) is not None:
            continue
        if isinstance(step.params, Wait):
            moment += timedelta(seconds=step.params.duration.seconds)
        elif (
            isinstance(step.params, Capture)
            and step.params.duration is not None
            and step.params.duration.seconds > 0
        ):
            moment += timedelta(seconds=step.params.duration.seconds + SETTLE_SECONDS)
    return times


def _mark(workflow: Workflow) -> int:
    for step in workflow.steps:
        if step.kind is StepKind.MARK:
            return step.index
    if workflow.boundary is not None:
        return workflow.boundary
    raise UsageError(
        f"workflow {workflow.name} has no mark_deployment_time step: an import needs it to "
        "place the past deployment between its baseline and its impact"
    )


def _after(workflow: Workflow) -> timedelta:
    """How long after the deployment the workflow's post-deployment steps reach."""
    mark = _mark(workflow)
    millis = sum(
        s.max_duration().milliseconds
        for s in workflow.steps[mark:]
        if live_reason(s) is None and s.kind is not StepKind.SIGNAL  # never waited for
    )
    return timedelta(milliseconds=millis)


def _trigger(workflow: Workflow) -> str:
    listed = declared_triggers(workflow)
    for name in ("deployment_completed", "manual_trigger"):
        if listed is None or name in listed:
            return name
    return listed[0] if listed else "manual_trigger"


@dataclass(frozen=True)
class ImportedDeployment:
    """What the import did with one past deployment."""

    where: str
    deployment: str
    described_time: str
    status: str  # imported | resumed | skipped | would_import
    reason: str | None = None
    branch: str | None = None
    decision: str | None = None
    analysis: str | None = None
    failed_steps: tuple[str, ...] = ()
    seal_digest: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "where": self.where,
            "deployment": self.deployment,
            "described_time": self.described_time,
            "status": self.status,
            "reason": self.reason,
            "branch": self.branch,
            "decision": self.decision,
            "analysis": self.analysis,
            "failed_steps": list(self.failed_steps),
            "seal_digest": self.seal_digest,
        }


@dataclass(frozen=True)
class ImportOutcome:
    """Every entry of the history file and what became of it."""

    source: str
    file: str
    file_sha256: str
    service: str
    dry_run: bool
    deployments: tuple[ImportedDeployment, ...] = field(default_factory=tuple)

    def count(self, status: str) -> int:
        return sum(1 for d in self.deployments if d.status == status)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "file": self.file,
            "file_sha256": self.file_sha256,
            "service": self.service,
            "dry_run": self.dry_run,
            "imported": self.count("imported") + self.count("resumed"),
            "skipped": self.count("skipped"),
            "deployments": [d.to_json() for d in self.deployments],
        }


def import_history(
    *,
    history: Path,
    source: str,
    service: str,
    workflow_path: Path,
    repository: Path,
    key: str,
    tsa_urls: Sequence[str],
    prometheus: str,
    overrides: Mapping[str, Any] | None = None,
    public_key: str | None = None,
    policy: Path | None = None,
    dry_run: bool = False,
    environment: str | None = None,
    progress: Callable[[ImportedDeployment], None] | None = None,
    now: datetime | None = None,
    team: str | None = None,
) -> ImportOutcome:
    """Import every deployment of ``history`` into ``repository`` (see the module doc).

    ``environment``: import only the entries of that environment (others are skipped).
    ``team``: the team that owns them, recorded in each genesis record (as ``afdp run
    --team``).

    Returns:
        The :class:`ImportOutcome`: per entry, imported / resumed (an interrupted import
        continued) / skipped (with the reason) / would_import (``dry_run``).

    Raises:
        UsageError: a bad history file, workflow, ``--set`` or name (nothing written).
        PolicyRejected: the admission policy refuses the workflow with this Prometheus.
        SigningError / TimestampError / StorageError: a record could not be written; the
            deployments imported before it stay, and a re-run continues.
    """
    from afdp.evidence.files import read_at_most
    from afdp.evidence.signing import load_signer
    from afdp.evidence.store import EvidenceStore
    from afdp.pipeline.deploy_history import MAX_HISTORY_BYTES
    from afdp.pipeline.runner import check_overrides, run_workflow
    from afdp.workflow import load_workflow

    moment = now or rec.utc_now()
    # read once: the entries imported are those of the very bytes whose digest is signed
    raw = read_at_most(history, MAX_HISTORY_BYTES, "history file", UsageError)
    entries = read_history(history, source, service=service, now=moment, data=raw)
    if not re.match(r"https?://", prometheus):
        raise UsageError(f"--prometheus {prometheus!r}: expected an http(s) URL")
    workflow = with_prometheus(load_workflow(workflow_path, policy=policy), prometheus.rstrip("/"))
    reach = _after(workflow)
    check_overrides(workflow, overrides or {})
    branch_ref(service, "x")  # the service name, checked before anything else
    if team is not None:
        check_team(team)
    source_facts = {
        "source": source,
        "file": history.name,
        "file_sha256": sha256_hex(raw),
        "prometheus": prometheus.rstrip("/"),
    }
    signer = None if dry_run else load_signer(key, public_key=public_key)
    store = EvidenceStore(repository)
    known = _imported_index(store, service)
    results: list[ImportedDeployment] = []
    for entry in entries:
        name = deployment_name(entry)
        described = rec.format_time(entry.deployed_at)
        ref = branch_ref(service, name)

        def done(status: str, reason: str | None = None, **more: Any) -> None:
            item = ImportedDeployment(entry.where, name, described, status, reason, ref, **more)  # noqa: B023
            results.append(item)
            if progress is not None:
                progress(item)

        if entry.skip is not None:
            done("skipped", entry.skip)
            continue
        if environment is not None and entry.environment != environment:
            done("skipped", f"environment {entry.environment or 'not given'}, not {environment}")
            continue
        ends = entry.deployed_at + reach
        if ends + SETTLE > moment:
            done(
                "skipped",
                f"its impact window ends at {rec.format_time(ends)}: not history yet (use afdp run)",
            )
            continue
        same = known.get((described, entry.commit))
        if same is not None and same != name:
            done("skipped", f"already imported as {same} (same time and commit); nothing rewritten")
            continue
        head = store.head(ref)
        resumed = False
        if head is not None:
            marker = _marker(store, ref)
            if marker is None:
                done("skipped", "a live-captured branch of that name exists; left untouched")
                continue
            if marker.described_time != entry.deployed_at:
                done(
                    "skipped",
                    f"an imported branch of that name describes {rec.format_time(marker.described_time)}; left untouched",
                )
                continue
            if _sealed(store, head):
                done(
                    "skipped",
                    "already imported (the branch exists and is sealed); nothing rewritten",
                )
                continue
            resumed = True  # an import interrupted earlier: continue it, nothing rewritten
        known[(described, entry.commit)] = name
        if dry_run:
            done("would_import", "resumes the interrupted import" if resumed else None)
            continue
        assert signer is not None
        clock = HistoryClock(entry.deployed_at)
        request = RunRequest(
            workflow=workflow,
            repository=repository,
            service=service,
            deployment=name,
            signer=signer,
            tsa_urls=tuple(tsa_urls),
            info=replace(entry.info(), team=team),
            overrides=dict(overrides or {}),
            phase="post",
            clock=clock,
            trigger=_trigger(workflow),
            imported=rec.Imported(entry.deployed_at),
            import_source={
                **source_facts,
                "entry": entry.where,
                "id": entry.key,
                "described_time": described,
            },
        )
        executor = ImportExecutor(
            clock, step_times(workflow, entry.deployed_at), boundary=workflow.boundary
        )
        outcome = run_workflow(request, executor=executor)
        decision = (outcome.decision or {}).get("action")
        summary = (outcome.analysis or {}).get("summary") or {}
        analysis = None
        if isinstance(summary, dict):
            if summary.get("any_degradation"):
                analysis = "degraded"
            elif summary.get("inconclusive"):
                analysis = f"inconclusive ({', '.join(summary['inconclusive'])})"
            elif summary.get("any_degradation") is False:
                analysis = "no degradation"
        done(
            "resumed" if resumed else "imported",
            None,
            decision=decision,
            analysis=analysis,
            failed_steps=tuple(s.name for s in outcome.failed_steps),
            seal_digest=outcome.seal_digest,
        )
    return ImportOutcome(source, str(history), sha256_hex(raw), service, dry_run, tuple(results))


def _genesis(store: Any, ref: str) -> dict[str, Any] | None:
    """Return the (unverified) genesis predicate of a branch, or None if unreadable."""
    from afdp.evidence.ledger import decode_envelope, trailers

    try:
        first = store.history(store.head(ref))[0]
        info = trailers(store.message_of(first))
        directory = rec.record_dir(int(info["AFDP-Record"]), info["AFDP-Step"])
        predicate = decode_envelope(
            store.read_blob(first.tree, f"{directory}/{rec.ENVELOPE_FILE}") or b""
        )["predicate"]
    except (KeyError, ValueError, TypeError, IndexError):
        return None
    return predicate if isinstance(predicate, dict) else None


def _marker(store: Any, ref: str) -> rec.Imported | None:
    predicate = _genesis(store, ref)
    try:
        return rec.imported_of(predicate) if predicate is not None else None
    except ValueError:
        return None


def _imported_index(store: Any, service: str) -> dict[tuple[str, str | None], str]:
    """Return ``{(described time, commit): deployment}`` of the service's imported
    branches, so a deployment already imported from another file (a CSV, then the same
    deployments' GitHub JSON) is recognised and not imported twice."""
    index: dict[tuple[str, str | None], str] = {}
    for svc, deployment in store.branches():
        if svc != service or not deployment.startswith(f"{PREFIX}-"):
            continue
        predicate = _genesis(store, branch_ref(svc, deployment))
        if predicate is None or predicate.get("imported") is not True:
            continue
        result = predicate.get("result")
        facts = (
            ((result or {}).get("metadata") or {}).get("deployment")
            if isinstance(result, dict)
            else None
        )
        commit = facts.get("commit") if isinstance(facts, dict) else None
        index[
            (str(predicate.get("described_time")), commit if isinstance(commit, str) else None)
        ] = deployment
    return index


def _sealed(store: Any, head: Any) -> bool:
    from afdp.evidence.ledger import trailers

    return trailers(store.message_of(head)).get("AFDP-Kind") == rec.KIND_SEAL


__all__ = [
    "SOURCES",
    "HistoryClock",
    "ImportExecutor",
    "ImportOutcome",
    "ImportedDeployment",
    "PastDeployment",
    "deployment_name",
    "import_history",
    "read_history",
    "with_prometheus",
]
