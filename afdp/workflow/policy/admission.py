"""A loaded policy applied to a workflow: :class:`AdmissionPolicy` admits or rejects (every violation at once); :class:`Admission` is the record of that decision, which a run re-checks with the values it knows at start (:meth:`Admission.readmit`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from afdp.workflow.findings import Finding, PolicyRejected
from afdp.workflow.loader import Document
from afdp.workflow.model import (
    NotificationChannel,
    Variable,
    Workflow,
)
from afdp.workflow.policy.base import Locator, RunValues
from afdp.workflow.policy.rules import AllOf

R = TypeVar("R")


@dataclass(frozen=True)
class AdmissionPolicy:
    """A named set of rules read from ``source`` (all of them must hold)."""

    name: str
    source: str
    rules: AllOf
    description: str = ""
    #: The policy's ``notification_channels``: given to every workflow it admits.
    channels: tuple[NotificationChannel, ...] = ()
    #: The policy file's bytes exactly as read (None: built in memory); a run stores
    #: them in its genesis record (``admission-policy.yaml``).
    raw: bytes | None = dataclasses.field(default=None, compare=False, repr=False)

    def violations(
        self,
        workflow: Workflow,
        document: Document | None = None,
        *,
        overrides: Mapping[str, Any] | None = None,
        known: RunValues | None = None,
    ) -> list[Finding]:
        """Return every rule ``workflow`` breaks, located in its file (``document`` for exact paths).

        ``overrides`` are the ``${workflow.*}`` values a run will use instead of the
        defaults (``--set workflow.NAME=...``); ``known`` is everything a run about to
        start knows (overrides, ``${deployment.*}``, ``${env.*}``, the driver's
        environment): hosts and programs are judged with exactly those values.
        """
        if known is None:
            known = RunValues(overrides=dict(overrides or {}))
        elif overrides:
            known = dataclasses.replace(known, overrides={**known.overrides, **overrides})
        return self.rules.check(workflow, Locator(workflow, document), known)

    def admit(
        self,
        workflow: Workflow,
        document: Document | None = None,
        *,
        overrides: Mapping[str, Any] | None = None,
        known: RunValues | None = None,
    ) -> Workflow:
        """Return ``workflow`` when every rule holds with ``overrides`` / ``known`` (see
        :meth:`violations`); the result remembers this policy and those values.

        Raises:
            PolicyRejected: with every violation, each naming its rule (exit 1).
        """
        found = self.violations(workflow, document, overrides=overrides, known=known)
        if found:
            raise PolicyRejected(found)
        if known is None:
            known = RunValues(overrides=dict(overrides or {}))
        # The environments are judged, never kept: a workflow may be serialized.
        kept = RunValues(overrides=dict(known.overrides), deployment=known.deployment)
        return dataclasses.replace(
            workflow, admission=Admission(self, kept), notifications=self.with_channels(workflow)
        )

    def rule(self, kind: type[R]) -> R | None:
        """Return this policy's rule of class ``kind`` (None when the policy has none)."""
        return next((r for r in self.rules.rules if isinstance(r, kind)), None)

    @property
    def channel_names(self) -> frozenset[str]:
        """Return the names of the policy's notification channels."""
        return frozenset(c.name for c in self.channels)

    def with_channels(self, workflow: Workflow) -> tuple[NotificationChannel, ...]:
        """Return the workflow's own channels followed by this policy's channels (any
        policy channels it carried from an earlier admission are replaced)."""
        own = tuple(c for c in workflow.notifications if c.origin == "workflow")
        return own + self.channels


@dataclass(frozen=True)
class Admission:
    """Which policy admitted a workflow, and with which ``--set`` and deployment values
    (the environments it was judged with are not kept)."""

    policy: AdmissionPolicy
    known: RunValues

    @property
    def overrides(self) -> Mapping[str, Any]:
        """The ``${workflow.*}`` values the workflow was admitted with."""
        return self.known.overrides

    def readmit(self, workflow: Workflow, known: RunValues) -> Workflow:
        """Return ``workflow`` admitted with the values a run will really use.

        Nothing is skipped because it was judged before: the run's ``known`` values
        (its ``--set`` values, deployment values and environment) are judged as a whole,
        each time a run is about to start.

        Raises:
            PolicyRejected: those values break a rule (a ``--set`` URL or program, a
                deployment value or environment that points a collector, webhook or
                database driver at a host the policy forbids): nothing may run.
        """
        return self.policy.admit(workflow, known=known)


def with_overrides(workflow: Workflow, overrides: Mapping[str, Any]) -> Workflow:
    """Return ``workflow`` with ``overrides`` as the defaults of its variables (taken literally)."""
    variables = tuple(
        Variable(v.name, overrides[v.name]) if v.name in overrides else v
        for v in workflow.variables
    )
    return dataclasses.replace(workflow, variables=variables)
