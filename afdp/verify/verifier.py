"""Verify deployment evidence branches offline, against the auditor's trust policy.

Verification reads the branch's first-parent history, oldest first. For every commit
it runs the commit checks below, hands each record's files and its commit's signature
to the per-record checks (``afdp.verify.checks``, 1-10, in parallel worker processes for long branches), then runs
the chain checks over the results in order:

0.  ``repository``  before any record: no ``refs/replace/*`` or ``refs/notes/*`` ref,
                    grafts or shallow file in the common git dir (git would show other
                    objects or text than libgit2 reads), the branch ref points
                    at a commit, its history is complete and intact; with ``--all``, a
                    ref under refs/heads/afdp/ that is not a safe name is a failed branch
11. ``commit``      each commit has one parent and adds exactly one record directory
                    under records/ and nothing else (no foreign, merge or editing commits);
                    every new tree passes git fsck's tree checks and is not empty (see
                    ``EvidenceStore.commit_files``); only the headers AFDP writes, its
                    committer AFDP's, the author time the commit time; its raw message
                    is the one AFDP writes for the record and the author the one the
                    record names (checked per record), and its AFDP-Digest trailer names
                    that record's envelope; an unreadable object is reported once, with
                    no follow-on chain or seal messages
12. ``chain``       record N stands at position N, genesis first, its ``prev`` is the
                    digest of record N-1's envelope, and its ``prev_timestamps`` name
                    exactly record N-1's time-stamp token files, by SHA-256
13. ``time-order``  time-stamps never go backwards along the chain (1 s tolerance)
14. ``seal``        the last record is a seal that lists every record before it
                    (an unsealed branch fails unless unsealed branches are allowed)
15. ``after-seal``  no record follows a seal

Nothing unverifiable passes: a check that cannot run is a failure (fail closed). Every
failure names the record (or commit), the check and the reason; all are reported.
"""

from __future__ import annotations

import multiprocessing
import os
import re
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from afdp.errors import NotFoundError, VerificationError
from afdp.evidence import records as rec
from afdp.evidence.ledger import trailers
from afdp.evidence.names import branch_ref
from afdp.evidence.store import EvidenceStore, StorageError
from afdp.evidence.trust import TrustPolicy
from afdp.verify.checks import RecordFacts, RecordInput, check_record

#: Branches shorter than this are checked in-process: a worker pool costs more than it saves.
PARALLEL_THRESHOLD = 400
BATCH = 200
#: A batch of records is handed to the workers once it holds this many bytes of files.
BATCH_BYTES = 64 << 20
TIME_ORDER_TOLERANCE = timedelta(seconds=1)

ProgressCallback = Callable[[int, int], None]


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


@dataclass(frozen=True)
class VerifiedRecord:
    """A record as verification saw it; on a passing branch every field is verified."""

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


@dataclass(frozen=True)
class BranchReport:
    """The transcript of verifying one deployment branch."""

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

    @property
    def ok(self) -> bool:
        return not self.failures

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
            "record_count": len(self.records),
            "trust_policy": self.trust_policy,
            "checked_at": self.checked_at,
            "failures": [asdict(f) for f in self.failures],
            "records": [asdict(r) for r in self.records],
        }


class EvidenceVerificationError(VerificationError):
    """A branch failed verification; ``report`` holds every failure."""

    def __init__(self, report: BranchReport) -> None:
        self.report = report
        first = report.failures[0]
        more = f" (and {len(report.failures) - 1} more)" if len(report.failures) > 1 else ""
        super().__init__(f"{report.service}/{report.deployment}: {first}{more}")


# -- worker side ---------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _roots_of(policy: TrustPolicy) -> list[Any]:
    from cryptography import x509

    return [
        cert for _, pem in policy.tsa_roots_pem for cert in x509.load_pem_x509_certificates(pem)
    ]


def _init_worker(policy: TrustPolicy) -> None:
    # The loaded policy itself (inherited by fork): it may carry a pinned Sigstore
    # trusted root read from beside the policy file, which the document only names.
    _WORKER["policy"], _WORKER["roots"] = policy, _roots_of(policy)


def _check_batch(items: list[RecordInput]) -> list[RecordFacts]:
    return [check_record(item, _WORKER["policy"], _WORKER["roots"]) for item in items]


# -- main side -----------------------------------------------------------------------------
@dataclass
class _Slot:
    """A record-bearing commit awaiting its per-record results."""

    commit: str
    digest_trailer: str | None
    facts: RecordFacts | None = None
    unreadable: bool = False  # an object is missing or corrupt: already a commit failure


def check_branch(
    repository: Path | str,
    *,
    service: str,
    deployment: str,
    policy: TrustPolicy,
    allow_unsealed: bool = False,
    jobs: int | None = None,
    progress: ProgressCallback | None = None,
) -> BranchReport:
    """Run every check on one deployment branch and return the full transcript.

    Raises:
        NotFoundError: the repository or the branch does not exist.
    """
    store = EvidenceStore(repository)
    ref = branch_ref(service, deployment)
    # 0. repository: git and libgit2 must read the same objects, and the branch must
    # point at a commit whose history is complete and intact
    substituted = store.substitutions()
    try:
        head = store.head(ref)
    except StorageError as exc:
        return _failed_branch(service, deployment, ref, None, policy, allow_unsealed, [exc.diagnostics(), *substituted])
    if head is None:
        known = [d for s, d in store.branches() if s == service]
        hint = (
            f"; deployments of {service}: {', '.join(known[:10])}"
            if known
            else f"; no evidence for service {service}"
        )
        raise NotFoundError(f"no evidence branch {ref} in {repository}{hint}")
    failures: list[Failure] = [
        Failure("repository", "repository", f"git would show other content than verification reads: {what}")
        for what in substituted
    ]
    slots: list[_Slot] = []
    try:
        commits = store.history(head)
    except StorageError as exc:
        return _failed_branch(service, deployment, ref, str(head.id), policy, allow_unsealed, [exc.diagnostics(), *substituted])
    total = len(commits)
    workers = _worker_count(jobs, total)
    pending: list[Future[list[RecordFacts]]] = []
    batch: list[RecordInput] = []
    executor = (
        ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_init_worker,
            initargs=(policy,),
        )
        if workers > 1
        else None
    )
    roots = _roots_of(policy) if executor is None else None
    local_results: list[RecordFacts] = []
    batch_bytes = 0

    def flush() -> None:
        if not batch:
            return
        if executor is not None:
            pending.append(executor.submit(_check_batch, list(batch)))
        else:
            local_results.extend(check_record(item, policy, roots) for item in batch)
        batch.clear()

    try:
        for index, commit in enumerate(commits):
            # 11. commit: one parent, one new record directory, nothing else touched
            short = str(commit.id)[:12]
            where = f"commit {short}"
            if len(commit.parents) > 1:
                failures.append(
                    Failure(
                        where, "commit", "merge commit on an evidence branch", commit=str(commit.id)
                    )
                )
            content = store.commit_files(commit)
            batch_bytes += sum(len(data) for data in content.added.values())
            for check, reason in content.problems:
                failures.append(_problem(where, check, reason, str(commit.id)))
            if content.changed:
                failures.append(
                    Failure(
                        where,
                        "commit",
                        f"changes existing evidence: {', '.join(map(repr, content.changed[:5]))}",
                        commit=str(commit.id),
                    )
                )
            directories = {
                p.rsplit("/", 1)[0] for p in content.added if p.startswith(rec.RECORDS_DIR + "/")
            }
            outside = sorted(p for p in content.added if not p.startswith(rec.RECORDS_DIR + "/"))
            if outside:
                failures.append(
                    Failure(
                        where,
                        "commit",
                        f"adds files outside records/: {', '.join(map(repr, outside[:5]))}",
                        commit=str(commit.id),
                    )
                )
            if len(directories) != 1:
                what = (
                    "adds no record"
                    if not directories
                    else f"adds {len(directories)} record directories"
                )
                failures.append(
                    Failure(where, "commit", f"{what}: not written by AFDP", commit=str(commit.id))
                )
                if not directories:
                    continue
            for directory in sorted(directories):
                prefix = directory + "/"
                files = {
                    p[len(prefix) :]: d
                    for p, d in content.added.items()
                    if p.startswith(prefix) and "/" not in p[len(prefix) :]
                }
                nested = [
                    p for p in content.added if p.startswith(prefix) and "/" in p[len(prefix) :]
                ]
                if nested:
                    failures.append(
                        Failure(
                            where,
                            "commit",
                            f"nested files in a record: {', '.join(map(repr, nested[:5]))}",
                            commit=str(commit.id),
                        )
                    )
                slots.append(_Slot(str(commit.id), trailers(content.message).get("AFDP-Digest"), unreadable=content.unreadable))
                commit_signature, commit_payload = commit.gpg_signature
                batch.append(
                    RecordInput(
                        len(slots) - 1,
                        directory,
                        files,
                        service,
                        deployment,
                        commit_signature,
                        commit_payload,
                        content.message,
                        content.author,
                    )
                )
            if len(batch) >= BATCH or batch_bytes >= BATCH_BYTES:
                flush()
                batch_bytes = 0
            if progress is not None and index % 100 == 0:
                progress(index, total)
        flush()
        results = list(local_results)
        for future in pending:
            results.extend(future.result())
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)
    for facts in results:
        slots[facts.position].facts = facts
    if progress is not None:
        progress(total, total)
    records, sealed = _chain_checks(slots, failures, policy)
    if not sealed and not allow_unsealed:
        failures.append(
            Failure(
                "branch",
                "seal",
                "branch is not sealed: the deployment is in progress, or its evidence was truncated",
            )
        )
    return BranchReport(
        service,
        deployment,
        ref,
        str(head.id),
        tuple(records),
        tuple(failures),
        sealed,
        allow_unsealed,
        policy.source,
    )


_IN_RECORD = re.compile(r"records/[0-9]+/([0-9]{6,})-([A-Za-z0-9._-]+)/(.+)")


def _problem(where: str, check: str, reason: str, commit: str) -> Failure:
    """A tree problem, named after the record it lies in when it lies in one."""
    match = _IN_RECORD.match(reason)
    if match and check == "layout":
        sequence, step, rest = int(match.group(1)), match.group(2), match.group(3)
        return Failure(f"record {sequence} ({step})", check, rest, sequence, commit)
    return Failure(where, check, reason, commit=commit)


def _failed_branch(
    service: str,
    deployment: str,
    ref: str,
    head: str | None,
    policy: TrustPolicy,
    allow_unsealed: bool,
    reasons: list[str],
) -> BranchReport:
    """Return the report of a branch that could not be read at all (check 0, repository)."""
    failures = tuple(Failure("branch", "repository", reason) for reason in reasons)
    return BranchReport(service, deployment, ref, head, (), failures, False, allow_unsealed, policy.source)


def _worker_count(jobs: int | None, total: int) -> int:
    if total < PARALLEL_THRESHOLD and jobs is None:
        return 1
    available = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )
    return max(1, min(jobs or available, available if jobs is None else jobs))


def _label(facts: RecordFacts) -> str:
    name = facts.step or facts.directory.rsplit("/", 1)[-1]
    number = facts.sequence if facts.sequence is not None else facts.position
    return f"record {number} ({name})"


def _chain_checks(
    slots: list[_Slot], failures: list[Failure], policy: TrustPolicy
) -> tuple[list[VerifiedRecord], bool]:
    records: list[VerifiedRecord] = []
    previous: RecordFacts | None = None
    previous_time: datetime | None = None
    seal_at: int | None = None
    for position, slot in enumerate(slots):
        facts = slot.facts
        assert facts is not None  # every slot was checked
        where = _label(facts)
        # A record whose objects could not be read (a commit failure names them) and
        # whose envelope is therefore absent: "no envelope.json" would be a follow-on.
        # Its neighbours' chain and seal checks likewise skip what cannot be known.
        hidden = slot.unreadable and facts.envelope_sha256 is None
        for check, reason in facts.failures:
            if not hidden:
                failures.append(Failure(where, check, reason, facts.sequence, slot.commit))
        previous_unknown = position > 0 and slots[position - 1].unreadable and (previous is None or previous.envelope_sha256 is None)
        if facts.envelope_sha256 and slot.digest_trailer != f"sha256:{facts.envelope_sha256}":
            failures.append(
                Failure(
                    where,
                    "commit",
                    "commit's AFDP-Digest trailer does not name this record",
                    facts.sequence,
                    slot.commit,
                )
            )
        # 12. chain
        if facts.sequence is not None and facts.sequence != position:
            failures.append(
                Failure(
                    where,
                    "chain",
                    f"record {facts.sequence} stands at position {position}: records are missing, added or out of order",
                    facts.sequence,
                    slot.commit,
                )
            )
        if position == 0 and facts.kind not in (None, rec.KIND_GENESIS):
            failures.append(
                Failure(
                    where,
                    "chain",
                    "the branch does not start with a genesis record",
                    facts.sequence,
                    slot.commit,
                )
            )
        if position > 0 and facts.kind is not None and previous is not None and not previous_unknown:
            cited = facts.prev_timestamps or {}
            held = previous.token_files
            if cited != held:
                extra = sorted(held.keys() - cited.keys())
                missing = sorted(cited.keys() - held.keys())
                swapped = sorted(n for n in held.keys() & cited.keys() if held[n] != cited[n])
                parts = [
                    f"{label} {', '.join(names)}"
                    for label, names in (
                        ("not cited by the next record:", extra),
                        ("cited but missing:", missing),
                        ("differ from the digest the next record cites:", swapped),
                    )
                    if names
                ]
                failures.append(
                    Failure(
                        _label(previous),
                        "chain",
                        f"time-stamp tokens {'; '.join(parts)} (record {facts.sequence} binds this record's tokens)",
                        previous.sequence,
                        slots[position - 1].commit,
                    )
                )
        if position > 0 and facts.kind is not None and not previous_unknown:
            expected = previous.envelope_sha256 if previous else None
            if facts.prev != expected:
                failures.append(
                    Failure(
                        where,
                        "chain",
                        f"prev cites {str(facts.prev)[:16]}…, but the record before it is {str(expected)[:16]}…",
                        facts.sequence,
                        slot.commit,
                    )
                )
        # 13. time-order
        if facts.timestamps:
            stamped = min(datetime.fromisoformat(t) for t, _ in facts.timestamps)
            if previous_time is not None and stamped + TIME_ORDER_TOLERANCE < previous_time:
                failures.append(
                    Failure(
                        where,
                        "time-order",
                        f"time-stamped {stamped.isoformat()}, before the record preceding it ({previous_time.isoformat()})",
                        facts.sequence,
                        slot.commit,
                    )
                )
            previous_time = max(stamped, previous_time) if previous_time else stamped
        # 15. after-seal
        if seal_at is not None:
            failures.append(
                Failure(
                    where,
                    "after-seal",
                    f"record follows the seal (record {seal_at})",
                    facts.sequence,
                    slot.commit,
                )
            )
        if facts.kind == rec.KIND_SEAL and seal_at is None:
            seal_at = position
            _check_seal(slots[:position], facts, where, slot.commit, failures)
        previous = facts
        records.append(
            VerifiedRecord(
                facts.sequence if facts.sequence is not None else position,
                facts.step or "?",
                facts.kind or "?",
                facts.status or "?",
                facts.summary or "",
                facts.envelope_sha256 or "",
                facts.signer,
                facts.keyid,
                tuple(facts.timestamps),
                facts.started_at,
                facts.finished_at,
                slot.commit,
                facts.tsa_url,
            )
        )
    if slots and slots[-1].facts is not None:
        _check_last_tokens(slots[-1].facts, slots[-1].commit, failures, policy)
    return records, seal_at is not None and seal_at == len(slots) - 1


def _check_last_tokens(
    facts: RecordFacts, commit: str, failures: list[Failure], policy: TrustPolicy
) -> None:
    # 9. time, for the last record only: no later record binds its time-stamp tokens
    # (12. chain does for every other record), so a token could be added or swapped
    # later. The writer asks for its token right after signing, so a token dated more
    # than the clock skew after the record's signed finished_at is refused.
    if facts.finished_at is None:
        return
    try:
        finished = rec.parse_time(facts.finished_at)
    except ValueError:
        return  # already a schema failure
    for name, stamped in sorted(facts.token_times.items()):
        if stamped > finished + policy.clock_skew:
            failures.append(
                Failure(
                    _label(facts),
                    "time",
                    f"{name} is dated {stamped.isoformat()}, more than {int(policy.clock_skew.total_seconds())} s "
                    f"after the record finished ({facts.finished_at}); the last record's tokens are bound "
                    "by no later record, so a later token is refused",
                    facts.sequence,
                    commit,
                )
            )


def _check_seal(
    before: list[_Slot], seal: RecordFacts, where: str, commit: str, failures: list[Failure]
) -> None:
    # 14. seal: exactly the records before it, in order, by envelope digest
    entries = seal.seal_entries
    if entries is None:
        failures.append(Failure(where, "seal", "seal lists no records", seal.sequence, commit))
        return
    expected: list[tuple[Any, Any, Any]] = [
        (i, s.facts.step, s.facts.envelope_sha256) for i, s in enumerate(before) if s.facts
    ]
    listed: list[tuple[Any, Any, Any]] = [
        (e.get("sequence"), e.get("step"), e.get("sha256")) if isinstance(e, dict) else (None, None, None)
        for e in entries
    ]
    # an unreadable record (already a commit failure) cannot be compared: take the
    # seal's word for it rather than report a follow-on difference
    unknown = {i for i, s in enumerate(before) if s.unreadable and (s.facts is None or s.facts.envelope_sha256 is None)}
    if unknown and len(listed) == len(expected):
        expected = [listed[i] if i in unknown else e for i, e in enumerate(expected)]
    if listed != expected:
        mismatch = next(
            (i for i, (a, b) in enumerate(zip(listed, expected, strict=False)) if a != b),
            min(len(listed), len(expected)),
        )
        failures.append(
            Failure(
                where,
                "seal",
                f"seal covers {len(listed)} records but the branch has {len(expected)} before it; first difference at record {mismatch}",
                seal.sequence,
                commit,
            )
        )


def verify_branch(repository: Path | str, **kwargs: Any) -> BranchReport:
    """Verify one branch; return its report if every check passed.

    Raises:
        EvidenceVerificationError: any check failed (the report names every failure).
        NotFoundError: no such repository or branch.
    """
    report = check_branch(repository, **kwargs)
    if not report.ok:
        raise EvidenceVerificationError(report)
    return report


def check_all(
    repository: Path | str,
    *,
    policy: TrustPolicy,
    allow_unsealed: bool = False,
    jobs: int | None = None,
    service: str | None = None,
    progress: ProgressCallback | None = None,
) -> list[BranchReport]:
    """Check every AFDP branch (of ``service``, if given) and return their reports.

    Raises:
        NotFoundError: the repository has no AFDP branches to check.
    """
    store = EvidenceStore(repository)
    branches = [(s, d) for s, d in store.branches() if service is None or s == service]
    unsafe = unsafe_branch_reports(repository, policy=policy, allow_unsealed=allow_unsealed)
    if not branches and not unsafe:
        raise NotFoundError(
            f"no AFDP evidence branches in {repository}"
            + (f" for service {service}" if service else "")
        )
    return unsafe + [
        check_branch(
            repository,
            service=s,
            deployment=d,
            policy=policy,
            allow_unsealed=allow_unsealed,
            jobs=jobs,
            progress=progress,
        )
        for s, d in branches
    ]


def unsafe_branch_reports(
    repository: Path | str, *, policy: TrustPolicy, allow_unsealed: bool = False
) -> list[BranchReport]:
    """Return a failed report for every ref under refs/heads/afdp/ that is not a safe name.

    A look-alike ref (unicode confusables, extra path levels, a trailing dot) is never
    skipped silently: git shows it beside the real branches, so whatever reports on
    "every branch" (``verify --all``, a report across deployments) fails with it.
    """
    store = EvidenceStore(repository)
    return [
        _failed_branch(
            *_split_unsafe(name),
            name,
            None,
            policy,
            allow_unsealed,
            [f"{name!r} is under refs/heads/afdp/ but is not a valid refs/heads/afdp/<service>/<deployment> name: AFDP never writes it"],
        )
        for name in store.unsafe_branches()
    ]


def _split_unsafe(name: str) -> tuple[str, str]:
    service, _, deployment = name[len("refs/heads/afdp/") :].partition("/")
    return service, deployment


def iter_failures(reports: Iterable[BranchReport]) -> Iterable[tuple[BranchReport, Failure]]:
    for report in reports:
        for failure in report.failures:
            yield report, failure
