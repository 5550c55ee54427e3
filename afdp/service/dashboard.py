"""The dashboard's view of the evidence: every deployment, verified by :mod:`afdp.verify`.

Nothing here trusts an index: each branch is verified by
:func:`afdp.verify.check_branch` against the auditor's trust policy, and the result is
cached by (branch head, what check 0 examines, trust policy file digest) only, so a
branch that moved, or a repository that gained a ``refs/replace``/``refs/notes`` ref, a
grafts or a shallow file, is verified again. Without a trust policy nothing is verified and every deployment reads
``UNCHECKED``. Record contents are read as the compliance report reads them
(:mod:`afdp.audit.report.evidence`: only content whose digest verification established).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from afdp.audit.report.build import impact_rows
from afdp.audit.report.evidence import find, read_records
from afdp.audit.report.model import DeploymentSection
from afdp.evidence.store import EvidenceStore
from afdp.evidence.trust import load_trust_policy
from afdp.service.metrics import ServiceMetrics
from afdp.verify import check_branch, unsafe_branch_reports

UNCHECKED = "UNCHECKED"


@dataclass(frozen=True)
class DeploymentEntry:
    """One deployment branch on the dashboard."""

    service: str
    deployment: str
    head: str | None
    verdict: str  # VERIFIED | UNSEALED | FAILED | UNCHECKED
    headline: str
    section: DeploymentSection | None
    checked_at: float

    @property
    def decision(self) -> Mapping[str, Any] | None:
        return self.section.findings.decision if self.section else None

    @property
    def deployed_at(self) -> float | None:
        return self.section.findings.deployed_at if self.section else None

    @property
    def facts(self) -> Mapping[str, Any]:
        return self.section.findings.deployment if self.section else {}

    def to_json(self) -> dict[str, Any]:
        decision = self.decision or {}
        return {
            "service": self.service,
            "deployment": self.deployment,
            "head": self.head,
            "verdict": self.verdict,
            "headline": self.headline,
            "decision": decision.get("action"),
            "label": decision.get("label"),
            "reason": decision.get("reason"),
            "deployed_at": self.deployed_at,
            "commit": self.facts.get("commit"),
            "version": self.facts.get("version"),
            "environment": self.facts.get("environment"),
            "deployer": self.facts.get("deployer"),
            "failures": [str(f) for f in self.section.verification.failures] if self.section else [],
        }


class Dashboard:
    """Reads and verifies the evidence repository for the UI (thread-safe)."""

    def __init__(self, repository: Path, *, trust_policy: Path | None, metrics: ServiceMetrics) -> None:
        self.repository = repository
        self.trust_policy = trust_policy
        self.metrics = metrics
        self._cache: dict[tuple[str, str], tuple[str, DeploymentEntry]] = {}
        self._counted: set[tuple[str, str]] = set()
        self._loaded_policy: tuple[Any, str] | None = None
        self._lock = threading.Lock()

    def _policy(self) -> tuple[Any, str] | None:
        if self.trust_policy is None:
            return None
        digest = hashlib.sha256(self.trust_policy.read_bytes()).hexdigest()
        with self._lock:
            loaded = self._loaded_policy
        if loaded is None or loaded[1] != digest:
            # Loaded again only when the file changed (and every cached verdict goes with it).
            loaded = (load_trust_policy(self.trust_policy, evidence_repository=self.repository), digest)
            with self._lock:
                self._loaded_policy = loaded
        return loaded

    def entries(self, *, service: str | None = None) -> list[DeploymentEntry]:
        """Return every deployment (of ``service``), newest first; look-alike refs as FAILED."""
        store = EvidenceStore(self.repository)
        policy = self._policy()
        found: list[DeploymentEntry] = []
        if policy is not None and service is None:
            for report in unsafe_branch_reports(self.repository, policy=policy[0], allow_unsealed=True):
                found.append(_entry(report.service, report.deployment, report.head, "FAILED",
                                    f"FAILED: {report.ref}: {report.failures[0].reason}", None))
        for svc, dep in store.branches():
            if service is not None and svc != service:
                continue
            found.append(self.entry(svc, dep, store=store, policy=policy))
        found.sort(key=lambda e: (e.deployed_at or 0.0, e.service, e.deployment), reverse=True)
        return found

    def entry(self, service: str, deployment: str, *, store: EvidenceStore | None = None,
              policy: tuple[Any, str] | None | bool = False) -> DeploymentEntry:
        """Return one deployment, verified now unless its head and the policy are unchanged.

        Raises:
            NotFoundError: no such branch.
        """
        store = store or EvidenceStore(self.repository)
        if policy is False:
            policy = self._policy()
        from afdp.evidence.names import branch_ref

        head = store.head(branch_ref(service, deployment))
        head_id = str(head.id) if head is not None else None
        # The verdict depends on more than the head: check 0 fails a branch when git would
        # show other objects (refs/replace, refs/notes, grafts, shallow), so what it
        # looks at is part of the key and a cached VERIFIED never outlives it.
        substitutions = hashlib.sha256("\n".join(store.substitutions()).encode()).hexdigest()
        key = f"{head_id}:{substitutions}:{policy[1] if policy else 'none'}"  # type: ignore[index]
        with self._lock:
            cached = self._cache.get((service, deployment))
        if cached is not None and cached[0] == key:
            return cached[1]
        entry = self._check(store, service, deployment, head_id, policy)  # type: ignore[arg-type]
        with self._lock:
            self._cache[(service, deployment)] = (key, entry)
        return entry

    def _check(self, store: EvidenceStore, service: str, deployment: str, head: str | None,
               policy: tuple[Any, str] | None) -> DeploymentEntry:
        if policy is None:
            return _entry(service, deployment, head, UNCHECKED,
                          "UNCHECKED: afdp serve has no trust policy (--trust), so nothing is verified", None)
        started = time.monotonic()
        report = check_branch(self.repository, service=service, deployment=deployment,
                              policy=policy[0], allow_unsealed=True, jobs=1)
        self.metrics.verify_seconds.observe(time.monotonic() - started)
        views = read_records(store, report)
        findings = find(views)
        section = DeploymentSection(report, tuple(views), findings, tuple(impact_rows(findings)), ())
        self.metrics.verifications.labels(result=section.verdict.lower()).inc()
        if section.verdict == "FAILED":
            self.metrics.verification_failures.labels(service=service).inc()
        elif section.verdict == "VERIFIED" and findings.decision and (service, deployment) not in self._counted:
            self._counted.add((service, deployment))
            self.metrics.decisions.labels(service=service, decision=str(findings.decision.get("action"))).inc()
        return _entry(service, deployment, report.head, section.verdict, section.headline, section)


def _entry(service: str, deployment: str, head: str | None, verdict: str, headline: str,
           section: DeploymentSection | None) -> DeploymentEntry:
    return DeploymentEntry(service, deployment, head, verdict, headline, section, time.time())
