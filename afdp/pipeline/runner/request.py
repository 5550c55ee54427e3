"""What a run is asked to do and what it returns: the deployment's facts, the run request (prepared from CLI/Action parameters, then admitted against the policy with every value the run knows at start), step reports and the outcome; the start-up checks of environment variables and ``--set`` overrides."""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from afdp.errors import (
    PolicyViolation,
    UsageError,
)
from afdp.evidence import records as rec
from afdp.evidence.names import branch_ref
from afdp.workflow.model import (
    Workflow,
)

if TYPE_CHECKING:
    from afdp.evidence.signing import AnySigner


T = TypeVar("T")
PHASES = ("all", "pre", "post")
#: A team name (``--team``, an event's ``team``): 1-100 characters, a letter or digit
#: first, then letters, digits, ``.``, ``_``, ``-`` or ``/`` (``org/team``). The genesis
#: and event schemas carry the same pattern.
TEAM_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._/-]{0,99}"
_TEAM = re.compile(TEAM_PATTERN)
_ENV_REF = re.compile(r"\$\{\s*env\.([A-Za-z_][A-Za-z0-9_]*)\s*\}")


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
    #: the image deployed, by digest (``NAME@sha256:<hex>``): the decision record names it
    #: as its in-toto subject
    image: str | None = None
    deployer: str | None = None
    #: the team that owns the deployment (``--team``, the event's ``team``); None: not given
    team: str | None = None
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
            UsageError: an unknown field, a ``deployed_at`` that is not RFC 3339, a
                ``team`` that is not a team name (:func:`check_team`), a fact holding a
                control, bidi or zero-width character (:func:`check_facts`).
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
        check_facts(data)
        if data.get("image") is not None:
            rec.parse_image(data["image"])  # an image is named by digest, or refused
        if data.get("team") is not None:
            check_team(data["team"])
        return cls(**data)

    def deployed_artifact(self) -> dict[str, str] | None:
        """Return what a decision record names as its in-toto subject: the image by
        digest and the commit when it is a full commit id (else None)."""
        artifact: dict[str, str] = {}
        if self.image:
            artifact["image"] = self.image
        if self.commit and rec.GIT_COMMIT.fullmatch(self.commit):
            artifact["commit"] = self.commit
        return artifact or None

    def to_json(self) -> dict[str, Any]:
        return {
            "commit": self.commit,
            "image": self.image,
            "deployer": self.deployer,
            "team": self.team,
            "environment": self.environment,
            "version": self.version,
            "changed_files": list(self.changed_files),
            "deployment_size": self.deployment_size,
            "branch": self.branch,
            "commit_message": self.commit_message,
            "source_repository": self.source_repository,
            "deployed_at": rec.format_time(self.deployed_at) if self.deployed_at else None,
        }


def check_facts(data: Mapping[str, Any]) -> None:
    """Refuse a deployment fact that would show other than it reads, before it is signed.

    One rule (:func:`afdp.evidence.names.check_text`) for every way facts arrive (``afdp
    run``'s options, an event, an imported history): a commit message is free text, every
    other fact (a person, a version, a path) a name-like text.

    Raises:
        UsageError: naming the fact and the character.
    """
    from afdp.evidence.names import check_text

    for key, value in data.items():
        if isinstance(value, str):
            check_text(value, what=f"deployment {key}", free_text=key == "commit_message")
    for path in data.get("changed_files") or ():
        if isinstance(path, str):
            check_text(path, what="deployment changed file")


def check_team(team: Any) -> str:
    """Return ``team`` if it is a team name (:data:`TEAM_PATTERN`).

    Raises:
        UsageError: not text, empty, longer than 100 characters, or another character (exit 2).
    """
    if not isinstance(team, str) or not _TEAM.fullmatch(team):
        shown = team if not isinstance(team, str) or len(team) <= 40 else team[:40] + "..."
        raise UsageError(
            f"team {shown!r} is not a team name: 1-100 characters, a letter or digit first, "
            "then letters, digits, '.', '_', '-' or '/'"
        )
    return team


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
    #: Where ``store: {results: FILE}`` writes (None: the current directory).
    results_dir: Path | None = None
    env: Mapping[str, str] | None = None
    clock: Any = None
    author: tuple[str, str] | None = None
    #: The auditor's trust policy file, for steps that read past evidence (``correlation``):
    #: only branches that verify against it count.
    trust_policy: Path | None = None
    #: How the run was started (one of the workflow's ``triggers:``): ``manual_trigger``
    #: from the CLI, ``deployment_completed`` from the GitHub Action or a webhook-started
    #: flow; recorded in the genesis record.
    trigger: str = "manual_trigger"
    #: Called with each :class:`StepReport` once its record is written; if it also has a
    #: ``starting(step, seconds)`` method, that is called before each step runs.
    progress: Callable[[StepReport], None] | None = None
    #: ``afdp import``: every record is marked imported, describing this past time
    #: (:class:`afdp.evidence.records.Imported`); decided actions and notifications are
    #: recorded, never carried out. ``import_source`` goes into the genesis metadata.
    imported: rec.Imported | None = None
    import_source: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.phase not in PHASES and self.phase not in {p.name for p in self.workflow.phases}:
            names = ", ".join((*PHASES, *(p.name for p in self.workflow.phases)))
            raise UsageError(f"invalid phase {self.phase!r}: use one of {names}")
        if not self.tsa_urls:
            raise UsageError("at least one TSA URL is required: every record is time-stamped")
        if not (self.time_scale >= 1.0 and math.isfinite(self.time_scale)):
            raise UsageError("time scale must be a finite number >= 1")
        branch_ref(self.service, self.deployment)  # checks both names
        check_trigger(self.workflow, self.trigger)


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
    results_dir: str | Path | None = None,
    trigger: str = "manual_trigger",
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
        results_dir=Path(results_dir) if results_dir else None,
        progress=progress,
        trigger=trigger,
    )
    # The policy judges what will run: the workflow with every value of this run.
    return admit_request(request, os.environ)


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


def declared_triggers(workflow: Workflow) -> tuple[str, ...] | None:
    """Return the triggers the workflow's file lists, or None when it has no ``triggers:``
    (then any trigger may start it: workflows written before triggers were enforced)."""
    document = workflow.document
    if isinstance(document, Mapping) and document.get("triggers"):
        return tuple(workflow.triggers)
    return None


def check_trigger(workflow: Workflow, trigger: str) -> None:
    """Refuse a run started by a trigger the workflow does not list.

    Raises:
        UsageError: an unknown trigger, or one the workflow's ``triggers:`` does not list (exit 2).
    """
    from afdp.workflow.catalog import TRIGGERS

    if trigger not in TRIGGERS:
        raise UsageError(f"unknown trigger {trigger!r}: use one of {', '.join(TRIGGERS)}")
    listed = declared_triggers(workflow)
    if listed is not None and trigger not in listed:
        raise UsageError(
            f"workflow {workflow.name} is not started by {trigger} (its triggers: "
            f"{', '.join(listed)}); pass --trigger {listed[0]} or add {trigger} to triggers:"
        )


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
    # The admission policy's channels the workflow notifies (notification_channels:):
    # not in the document; a policy channel no decision names needs nothing.
    named = {c for d in getattr(workflow, "decisions", ()) or () for c in d.notify}
    for channel in getattr(workflow, "notifications", ()) or ():
        if channel.origin == "policy" and channel.name not in named:
            continue
        for template in (channel.url, channel.secret, channel.username, channel.password):
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


def _deployment_values(request: RunRequest) -> dict[str, Any]:
    info = request.info
    values = {
        "service": request.service,
        "id": request.deployment,
        "environment": info.environment,
        "version": info.version,
        "commit": info.commit,
        "image": info.image,
        "deployer": info.deployer,
        "team": info.team,
        "repository": info.source_repository,
    }
    return {k: v for k, v in values.items() if v is not None}
