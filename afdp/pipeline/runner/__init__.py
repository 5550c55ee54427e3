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

The package, by concern (docs/architecture.md): :mod:`.request` (what a run is asked
and returns; admission), :mod:`.run` (the loop), :mod:`.executor` (inline or Prefect),
:mod:`.state`, :mod:`.outputs`, :mod:`.branch` (resume), :mod:`.lock`, :mod:`.spool`,
and :mod:`.steps` (one module per step family, registered in the step catalog).

"""

from __future__ import annotations

from afdp.pipeline.runner.executor import StepExecutor
from afdp.pipeline.runner.lock import LOCK_DIR, run_lock
from afdp.pipeline.runner.outputs import plain_outputs, typed_outputs
from afdp.pipeline.runner.request import (
    PHASES,
    SYSTEM_CLOCK,
    Clock,
    DeploymentInfo,
    InterruptibleClock,
    RunCancelled,
    RunOutcome,
    RunRequest,
    StepReport,
    admit_request,
    admitted_for,
    check_environment,
    check_overrides,
    env_names,
    prepare_request,
)
from afdp.pipeline.runner.run import handler_for, run_workflow
from afdp.pipeline.runner.spool import SPOOL_DIR
from afdp.pipeline.runner.steps.capture import HISTORY_SOURCES, scaled_collector_interval
from afdp.pipeline.runner.steps.judge import action_text, analysis_summary
from afdp.pipeline.runner.steps.timing import SIGNAL_POLL_SECONDS

__all__ = [
    "HISTORY_SOURCES",
    "LOCK_DIR",
    "PHASES",
    "SIGNAL_POLL_SECONDS",
    "SPOOL_DIR",
    "SYSTEM_CLOCK",
    "Clock",
    "DeploymentInfo",
    "InterruptibleClock",
    "RunCancelled",
    "RunOutcome",
    "RunRequest",
    "StepExecutor",
    "StepReport",
    "action_text",
    "admit_request",
    "admitted_for",
    "analysis_summary",
    "check_environment",
    "check_overrides",
    "env_names",
    "handler_for",
    "plain_outputs",
    "prepare_request",
    "run_lock",
    "run_workflow",
    "scaled_collector_interval",
    "typed_outputs",
]
