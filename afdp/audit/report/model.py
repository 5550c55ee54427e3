"""The compliance report as data: one section per deployment, and the overall verdict.

The HTML, PDF and JSON renderings are all made from an :class:`AuditReport`; the
verdict is computed here once, so no rendering can disagree with another about it.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

from afdp.audit.report.analyzers import analyzer_rows
from afdp.audit.report.controls import ControlResult
from afdp.audit.report.evidence import Findings, RecordView, Series
from afdp.verify.verifier import BranchReport

FAILED, UNSEALED, VERIFIED = "FAILED", "UNSEALED", "VERIFIED"


@dataclass(frozen=True)
class ImpactRow:
    """One metric in the baseline-vs-impact table."""

    metric: str
    unit: str
    baseline: Any
    impact: Any
    change: Any  # impact minus baseline, in the metric's unit
    relative: Any  # relative change (0.25 = +25 %), when known
    p_value: Any
    significant: Any
    degraded: Any
    status: str  # the analysis' own status: ok | no_data | insufficient_samples
    reasons: tuple[str, ...]  # the analysis' own reasons
    source: str  # "analysis" (the recorded analysis) or "samples" (medians of the series)
    verdict: str = ""  # degraded | within normal | inconclusive | no data | insufficient samples | not analysed
    why: tuple[str, ...] = ()  # the verdict's grounds: thresholds, the test, the analysis' reasons
    counts: tuple[int | None, int | None] = (None, None)  # samples (baseline, impact)
    effective: tuple[float | None, float | None] = (
        None,
        None,
    )  # effective sample sizes, if recorded


@dataclass(frozen=True)
class DeploymentSection:
    """Everything the report says about one deployment branch."""

    verification: BranchReport
    views: tuple[RecordView, ...]
    findings: Findings
    impact: tuple[ImpactRow, ...]
    controls: tuple[ControlResult, ...]

    @property
    def name(self) -> str:
        return f"{self.verification.service}/{self.verification.deployment}"

    @property
    def verdict(self) -> str:
        if self.verification.failures:
            return FAILED
        return VERIFIED if self.verification.sealed else UNSEALED

    @property
    def headline(self) -> str:
        text = self._headline()
        if self.verdict != FAILED and self.verification.imported:
            text += (
                f"; IMPORTED from history: describes the deployment of "
                f"{self.verification.described_time}, recorded at import, not captured live"
            )
        return text

    def _headline(self) -> str:
        v = self.verification
        if self.verdict == FAILED:
            return (
                f"FAILED: the evidence for {self.name} did not verify "
                f"({len(v.failures)} failure(s)); nothing in it can be relied on"
            )
        if self.verdict == UNSEALED:
            return (
                f"UNSEALED: {self.name}: {len(v.records)} record(s) verified, but the branch has "
                "no seal (deployment in progress, or evidence truncated)"
            )
        return f"VERIFIED: {self.name}: {len(v.records)} record(s), sealed, every check passed"

    def series_of(self, metric: str) -> tuple[list[Series], list[Series]]:
        baseline = [s for s in self.findings.series if s.metric == metric and s.phase == "baseline"]
        impact = [s for s in self.findings.series if s.metric == metric and s.phase == "impact"]
        return baseline, impact

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "headline": self.headline,
            "imported": self.verdict != FAILED and self.verification.imported,
            "service": self.verification.service,
            "deployment": self.verification.deployment,
            "deployment_facts": self.findings.deployment,
            "verification": self.verification.to_json(),
            "records": [
                {
                    "sequence": v.sequence,
                    "step": v.verified.step,
                    "kind": v.verified.kind,
                    "status": v.verified.status,
                    "summary": v.verified.summary,
                    "envelope_sha256": v.verified.envelope_sha256,
                    "signer": v.verified.signer,
                    "timestamps": [list(t) for t in v.verified.timestamps],
                    "commit": v.verified.commit,
                    "content_matches_verified_digest": v.digest_matches,
                }
                for v in self.views
            ],
            "impact": [asdict(row) for row in self.impact],
            "series": [
                {
                    "metric": s.metric,
                    "phase": s.phase,
                    "unit": s.unit,
                    "record": s.sequence,
                    "sample_count": len(s.samples),
                }
                for s in self.findings.series
            ],
            "deployed_at": self.findings.deployed_at,
            "analysis": self.findings.analysis,
            "analysis_record": self.findings.analysis_record,
            # The workflow's analyzers: logic verdicts, money per hour with its inputs and
            # formula (afdp.audit.report.analyzers); "outcome" is the record's JSON.
            "analyzers": analyzer_rows(self.findings.analysis),
            "decision": self.findings.decision,
            "decision_record": self.findings.decision_record,
            "controls": [c.to_json() for c in self.controls],
        }


@dataclass(frozen=True)
class AuditReport:
    """A compliance report over one or more deployment branches."""

    sections: tuple[DeploymentSection, ...]
    scope: dict[str, Any]
    generated_at: str
    generator: str
    trust_policy: str
    controls_source: str

    @property
    def verdict(self) -> str:
        verdicts = {s.verdict for s in self.sections}
        if FAILED in verdicts or not self.sections:
            return FAILED
        return UNSEALED if UNSEALED in verdicts else VERIFIED

    @property
    def headline(self) -> str:
        """The report's first line: the verdict, then what it covers."""
        if len(self.sections) == 1:
            return self.sections[0].headline
        failed = sum(1 for s in self.sections if s.verdict == FAILED)
        unsealed = sum(1 for s in self.sections if s.verdict == UNSEALED)
        total = len(self.sections)
        if self.verdict == FAILED:
            return f"FAILED: {failed} of {total} deployment(s) did not verify; their evidence cannot be relied on"
        if self.verdict == UNSEALED:
            return f"UNSEALED: {unsealed} of {total} deployment(s) verified but not sealed; none failed"
        return f"VERIFIED: all {total} deployment(s) verified and sealed"

    @property
    def title(self) -> str:
        return f"{self.verdict} - AFDP compliance report: {self.scope_text}"

    @property
    def scope_text(self) -> str:
        s = self.scope
        text = f"{s.get('service') or 'all services'}"
        if s.get("deployment"):
            text += f"/{s['deployment']}"
        if s.get("since") or s.get("until"):
            text += f" from {s.get('since') or 'the start'} to {s.get('until') or 'now'}"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "headline": self.headline,
            "report": {
                "generator": self.generator,
                "generated_at": self.generated_at,
                "scope": self.scope,
                "trust_policy": self.trust_policy,
                "controls": self.controls_source,
                "deployment_count": len(self.sections),
            },
            "deployments": [s.to_json() for s in self.sections],
        }


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None
