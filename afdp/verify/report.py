"""What verification says: one :class:`Failure` per failed check (record or commit, check, reason), a :class:`VerifiedRecord` per record that passed, and the :class:`BranchReport` of a branch (with ``--json`` form); :func:`iter_failures` walks many reports."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from afdp.errors import VerificationError
from afdp.evidence import records as rec


@dataclass(frozen=True)
class Failure:
    """One failed check: which record (or commit), which check, and why."""

    where: str
    check: str
    reason: str
    sequence: int | None = None
    commit: str | None = None

    def __str__(self) -> str:
        return f"{self.where}: {self.check}: {self.reason}"


@dataclass(frozen=True, slots=True)
class VerifiedRecord:
    """A record as verification saw it; on a passing branch every field is verified.

    Slotted: a report keeps one per record, so a 100,000-record branch keeps 100,000.
    """

    sequence: int
    step: str
    kind: str
    status: str
    summary: str
    envelope_sha256: str
    signer: str | None
    keyid: str | None
    timestamps: tuple[tuple[str, str], ...]
    started_at: str | None
    finished_at: str | None
    commit: str
    #: The AFDP-TSA commit trailer: a well-formed URL, but no signature covers it.
    tsa_url: str | None = None
    unverified: tuple[str, ...] = ("tsa_url",)
    #: ``afdp import``: the past deployment time this record describes (its signed
    #: times and tokens are when it was imported); None on a live-captured record.
    described_time: str | None = None

    @property
    def imported(self) -> bool:
        return self.described_time is not None


@dataclass(frozen=True)
class RecordSummary:
    """What a report made without its records (``keep_records=False``) still says of them."""

    count: int
    signers: tuple[str, ...]
    #: the genesis record's ``described_time`` (``afdp import``), else None
    described_time: str | None = None


@dataclass(frozen=True)
class BranchReport:
    """The transcript of verifying one deployment branch.

    ``records`` holds one :class:`VerifiedRecord` per record, unless the report was made
    with ``keep_records=False`` (memory that does not grow with the branch): then
    ``records`` is empty, ``records_kept`` False and ``summary`` gives the count, the
    signers and the import marker. Every check ran on every record either way, and
    ``failures`` is the same.
    """

    service: str
    deployment: str
    ref: str
    head: str | None
    records: tuple[VerifiedRecord, ...]
    failures: tuple[Failure, ...]
    sealed: bool
    allow_unsealed: bool
    trust_policy: str
    checked_at: str = field(default_factory=lambda: rec.format_time(rec.utc_now()))
    summary: RecordSummary | None = None

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def records_kept(self) -> bool:
        return self.summary is None

    @property
    def record_count(self) -> int:
        """Return how many records the branch has (kept or not)."""
        return len(self.records) if self.summary is None else self.summary.count

    @property
    def signers(self) -> tuple[str, ...]:
        """Return the signers named by the branch's records, sorted."""
        if self.summary is not None:
            return self.summary.signers
        return tuple(sorted({r.signer for r in self.records if r.signer}))

    @property
    def imported(self) -> bool:
        """Return True when the branch was imported from history (``afdp import``): its
        genesis record says so, and check 12i holds every other record to it."""
        return self.described_time is not None

    @property
    def described_time(self) -> str | None:
        """Return the past deployment time an imported branch describes (else None)."""
        if self.summary is not None:
            return self.summary.described_time
        return self.records[0].described_time if self.records else None

    @property
    def state(self) -> str:
        """``verified`` (sealed and clean), ``unsealed`` (clean, allowed) or ``failed``."""
        if self.failures:
            return "failed"
        return "verified" if self.sealed else "unsealed"

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "deployment": self.deployment,
            "branch": self.ref,
            "head": self.head,
            "state": self.state,
            "ok": self.ok,
            "sealed": self.sealed,
            "imported": self.imported,
            "described_time": self.described_time,
            "record_count": self.record_count,
            "trust_policy": self.trust_policy,
            "checked_at": self.checked_at,
            "failures": [asdict(f) for f in self.failures],
            # None, not [], when the records were not kept: an empty list would say "no records"
            "records": [{**asdict(r), "imported": r.imported} for r in self.records] if self.records_kept else None,
        }


class EvidenceVerificationError(VerificationError):
    """A branch failed verification; ``report`` holds every failure."""

    def __init__(self, report: BranchReport) -> None:
        self.report = report
        first = report.failures[0]
        more = f" (and {len(report.failures) - 1} more)" if len(report.failures) > 1 else ""
        super().__init__(f"{report.service}/{report.deployment}: {first}{more}")


def iter_failures(reports: Iterable[BranchReport]) -> Iterable[tuple[BranchReport, Failure]]:
    for report in reports:
        for failure in report.failures:
            yield report, failure
