"""Verify deployment evidence branches offline, against the auditor's trust policy.

Verification reads the branch's first-parent history, oldest first. For every commit
it runs the commit checks below and hands each record's files and its commit's signature
to the per-record checks (``afdp.verify.checks``, 1-10); on a long branch, worker
processes each read and check runs of consecutive commits, and their results are taken
in chain order. Then it runs the chain checks over the results in order:

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
12i. ``imported``   every record carries the genesis record's import marker
                    (``imported``, ``described_time``: ``afdp import``) or none does
13. ``time-order``  time-stamps never go backwards along the chain (1 s tolerance)
14. ``seal``        the last record is a seal that lists every record before it
                    (an unsealed branch fails unless unsealed branches are allowed)
15. ``after-seal``  no record follows a seal

Nothing unverifiable passes: a check that cannot run is a failure (fail closed). Every
failure names the record (or commit), the check and the reason; all are reported."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pygit2

from afdp.errors import NotFoundError
from afdp.evidence import records as rec
from afdp.evidence.ledger import trailers
from afdp.evidence.names import branch_ref
from afdp.evidence.store import EvidenceStore, StorageError
from afdp.evidence.store.read import SignedCommitFiles
from afdp.evidence.trust import TrustPolicy
from afdp.verify.chain import ChainWalk, Slot, problem
from afdp.verify.checks import RecordFacts, RecordInput, check_records, prepare
from afdp.verify.report import (
    BranchReport,
    EvidenceVerificationError,
    Failure,
    RecordSummary,
    VerifiedRecord,
    iter_failures,
)

if TYPE_CHECKING:
    from concurrent.futures import Future

#: The reports' types live in :mod:`afdp.verify.report`, the chain checks in
#: :mod:`afdp.verify.chain`; both are re-exported here, where callers import them.
__all__ = [
    "BranchReport",
    "EvidenceVerificationError",
    "Failure",
    "ProgressCallback",
    "VerifiedRecord",
    "check_all",
    "check_branch",
    "iter_failures",
    "unsafe_branch_reports",
    "verify_branch",
]

#: Branches shorter than this are checked in-process: below it a worker pool costs more
#: than it saves as often as not. Measured on the shared 2-core machine with the first
#: record checked before the fork (and before the stage-by-stage checks, which made a
#: record cheaper in both), wall time with one process against two workers:
#: in a fresh process (``benchmarks/bench_scale.py --sizes 100 200 300 500 --jobs J``,
#: three alternating rounds, load average 1.6-1.9) 101 records 1.46-1.55 ms against
#: 1.18-1.27 ms a record, 201 records 1.21 against 0.88-0.93 ms, 301 records 1.13-1.17
#: against 0.77-0.92 ms, 501 records 1.09-1.12 against 0.68-0.71 ms; in a process that has
#: already verified (the imports, schemas and TSA chain warm, a larger heap to fork: a
#: service, or ``bench_intoto.py``, which verifies in the process that recorded), medians
#: of four rounds, at load average 1.8: 200 records 198 ms against 131 ms, 300 records
#: 303 against 184 ms; at load average 2.4-2.6 (the cores already busy): 100 records
#: 108-130 ms against 152-162 ms, 200 records 222-253 against 233-266 ms; and in
#: ``bench_intoto.py``'s recording process at 100 records, 4 rounds, load 1.8-2.5:
#: 797-819 records/s in one process against 543-672 with workers. Two workers spend
#: about 1.25x the CPU of one process (the two cores share their caches) and the pool
#: itself costs 10-16 ms of wall time to start and stop; on a machine loaded beyond its
#: cores the pool gains nothing at any size (then ``--jobs 1``).
PARALLEL_THRESHOLD = 200
#: Commits per run handed to a worker, which reads and checks them: at most BATCH, and
#: small enough on a short branch that every worker gets a share (at least two runs per
#: worker). A run's files are held only up to ``READ_AHEAD_BYTES`` (and one record's).
BATCH = 200
MIN_BATCH = 16
#: Record files a run reads ahead of its checks: reading stops for the checks once this
#: many bytes are held, so at most this much plus one record's files (65 MiB, see
#: ``afdp.evidence.store.read``) is held at a time. About 300 records of the usual 3 KiB.
READ_AHEAD_BYTES = 1 << 20
ProgressCallback = Callable[[int, int], None]


# -- worker side ---------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _roots_of(policy: TrustPolicy) -> list[Any]:
    from cryptography import x509

    return [
        cert for _, pem in policy.tsa_roots_pem for cert in x509.load_pem_x509_certificates(pem)
    ]


def _init_worker(policy: TrustPolicy, roots: list[Any] | None = None) -> None:
    # The loaded policy itself (inherited by fork): it may carry a pinned Sigstore
    # trusted root read from beside the policy file, which the document only names.
    # ``roots``: the parent's root certificates of that policy (the very objects, by
    # fork), whose chain the parent may already have validated.
    _WORKER["policy"], _WORKER["roots"] = policy, roots if roots is not None else _roots_of(policy)


#: What one commit gave: its commit-level failures, and per record directory it adds,
#: the slot and the record's own check results (in the branch's order).
CommitResult = tuple[list[Failure], list[tuple[Slot, RecordFacts]]]


def _check_chunk(repository: str, service: str, deployment: str, oids: bytes) -> list[CommitResult]:
    """In a worker: read and check a run of consecutive commits (oldest first; their raw
    ids end to end, as :meth:`EvidenceStore.history_ids` gives them).

    Each worker reads its commits' objects itself, so reading Git is shared out too and
    no file crosses between processes; one store per repository per worker keeps its
    tree cache across the runs it is given.
    """
    stores: dict[str, EvidenceStore] = _WORKER.setdefault("stores", {})
    store = stores.get(repository)
    if store is None:
        store = stores[repository] = EvidenceStore(repository)
    policy, roots = _WORKER["policy"], _WORKER["roots"]
    try:
        return _check_run(store, split_ids(oids), service, deployment, policy, roots)
    finally:
        _drop_object_cache(store)


def split_ids(ids: bytes) -> list[pygit2.Oid]:
    """The commit ids of :meth:`EvidenceStore.history_ids`'s bytes, in order."""
    return [pygit2.Oid(raw=ids[at : at + 20]) for at in range(0, len(ids), 20)]


def _return_freed_memory() -> None:
    """Return freed heap memory to the system (glibc's ``malloc_trim``; elsewhere nothing).

    Reading a branch's history allocates about 1.5 KiB per commit in libgit2 and Python;
    freed, it stays mapped in the process (46 MiB at 30,000 commits), and worker processes
    forked after it start with a copy of it mapped.
    """
    import ctypes  # here: start-up of commands that verify nothing long does not pay for it

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):  # not glibc
        return
    trim(0)


def _drop_object_cache(store: EvidenceStore) -> None:
    """Empty libgit2's object cache, which keeps every commit and small tree read (up to
    256 MiB by default): a walk needs only each commit's parent, read in the same run, so
    emptying it after each run bounds memory by a run's objects, however long the branch."""
    store.repo.free()


def _check_run(
    store: EvidenceStore,
    oids: list[pygit2.Oid],
    service: str,
    deployment: str,
    policy: TrustPolicy,
    roots: Any,
) -> list[CommitResult]:
    """Read and check a run of consecutive commits (oldest first), in their order.

    The commits are read ahead of their checks, while the record files held stay under
    ``READ_AHEAD_BYTES``, and then checked: reading a run and then checking it costs
    about a tenth less CPU than reading and checking one commit at a time (libgit2's
    code and data, then the checks', stay in the processor's caches). Each commit is
    read and checked exactly as one at a time; a run of large records is read one
    record at a time.
    """
    results: list[CommitResult] = []
    ahead: list[SignedCommitFiles] = []
    held = 0
    for oid in oids:
        # its files, parents, tree and signature, each as libgit2 reads it (no name
        # here holds on to a commit once its run is checked)
        ahead.append(store.signed_commit_files(oid))
        held += sum(map(len, ahead[-1].files.added.values()))
        if held >= READ_AHEAD_BYTES:
            results.extend(_check_commits(ahead, service, deployment, policy, roots))
            ahead.clear()
            held = 0
    results.extend(_check_commits(ahead, service, deployment, policy, roots))
    return results


def _check_commits(
    reads: list[SignedCommitFiles],
    service: str,
    deployment: str,
    policy: TrustPolicy,
    roots: Any,
) -> list[CommitResult]:
    """Check 11 (the commit) on each read commit, then checks 1-10 on every record they
    add, stage by stage across them (:func:`afdp.verify.checks.check_records`).

    The records' ``position`` is set by the caller, which knows their place on the branch.
    """
    commits = [_commit_checks(read, service, deployment) for read in reads]
    facts = iter(check_records([item for _, records in commits for _, item in records], policy, roots))
    return [(failures, [(slot, next(facts)) for slot, _ in records]) for failures, records in commits]


def _commit_checks(
    read: SignedCommitFiles, service: str, deployment: str
) -> tuple[list[Failure], list[tuple[Slot, RecordInput]]]:
    """Check 11 (the commit) on one read commit; return its failures and, per record
    directory it adds, the slot and the record's input to checks 1-10."""
    failures: list[Failure] = []
    records: list[tuple[Slot, RecordInput]] = []
    content = read.files
    commit_id = content.commit_id
    # 11. commit: one parent, one new record directory, nothing else touched
    short = commit_id[:12]
    where = f"commit {short}"
    if read.parent_count > 1:
        failures.append(Failure(where, "commit", "merge commit on an evidence branch", commit=commit_id))
    for check, reason in content.problems:
        failures.append(problem(where, check, reason, commit_id))
    if content.changed:
        failures.append(
            Failure(
                where,
                "commit",
                f"changes existing evidence: {', '.join(map(repr, content.changed[:5]))}",
                commit=commit_id,
            )
        )
    directories = {p.rsplit("/", 1)[0] for p in content.added if p.startswith(rec.RECORDS_DIR + "/")}
    outside = sorted(p for p in content.added if not p.startswith(rec.RECORDS_DIR + "/"))
    if outside:
        failures.append(
            Failure(
                where,
                "commit",
                f"adds files outside records/: {', '.join(map(repr, outside[:5]))}",
                commit=commit_id,
            )
        )
    if len(directories) != 1:
        what = "adds no record" if not directories else f"adds {len(directories)} record directories"
        failures.append(Failure(where, "commit", f"{what}: not written by AFDP", commit=commit_id))
    for directory in sorted(directories):
        prefix = directory + "/"
        files = {
            p[len(prefix) :]: d
            for p, d in content.added.items()
            if p.startswith(prefix) and "/" not in p[len(prefix) :]
        }
        nested = [p for p in content.added if p.startswith(prefix) and "/" in p[len(prefix) :]]
        if nested:
            failures.append(
                Failure(
                    where,
                    "commit",
                    f"nested files in a record: {', '.join(map(repr, nested[:5]))}",
                    commit=commit_id,
                )
            )
        slot = Slot(commit_id, trailers(content.message).get("AFDP-Digest"), unreadable=content.unreadable)
        commit_signature, commit_payload = read.signature, read.signed
        item = RecordInput(
            0,
            directory,
            files,
            service,
            deployment,
            commit_signature,
            commit_payload,
            content.message,
            content.author,
        )
        records.append((slot, item))
    return failures, records


def check_branch(
    repository: Path | str,
    *,
    service: str,
    deployment: str,
    policy: TrustPolicy,
    allow_unsealed: bool = False,
    jobs: int | None = None,
    progress: ProgressCallback | None = None,
    substitutions: Sequence[str] | None = None,
    keep_records: bool = True,
) -> BranchReport:
    """Run every check on one deployment branch and return the full transcript.

    The chain checks run as the per-record results arrive, in chain order, holding only
    what they compare against (:class:`afdp.verify.chain.ChainWalk`). ``keep_records``
    False makes a report without its :class:`VerifiedRecord` entries (only their count,
    signers and import marker, :class:`RecordSummary`): every check still runs on every
    record and every failure is reported, in memory that does not grow with the branch.

    ``substitutions``: what :meth:`EvidenceStore.substitutions` found in this repository,
    when a caller checking many branches in one call scanned it once at the start (the
    scan lists every ref, so scanning per branch made N branches cost N² ref reads);
    None scans here.

    Raises:
        NotFoundError: the repository or the branch does not exist.
    """
    store = EvidenceStore(repository)
    ref = branch_ref(service, deployment)
    # 0. repository: git and libgit2 must read the same objects, and the branch must
    # point at a commit whose history is complete and intact
    substituted = list(substitutions) if substitutions is not None else store.substitutions()
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
    # the record and chain failures follow every repository and commit failure
    chain_failures: list[Failure] = []
    walk = ChainWalk(chain_failures, policy, keep_records=keep_records)
    try:
        # 20 bytes per commit, end to end: the walk holds no commit object, and empties
        # libgit2's cache as it goes (it kept every commit: ~1.5 KiB per record of peak
        # memory in this process)
        commit_ids = store.history_ids(head)
    except StorageError as exc:
        return _failed_branch(service, deployment, ref, str(head.id), policy, allow_unsealed, [exc.diagnostics(), *substituted])
    total = len(commit_ids) // 20
    head_id = str(head.id)
    del head
    # what the walk freed stays with the C allocator: hand it back, or every forked
    # worker starts with a copy of it mapped
    _drop_object_cache(store)
    _return_freed_memory()
    workers = _worker_count(jobs, total)
    roots = _roots_of(policy)
    chunk = min(BATCH, max(MIN_BATCH, -(-total // (workers * 2))))
    done = 0

    def take(results: list[CommitResult]) -> None:
        # in the branch's order: a record's position is its index among all records
        nonlocal done
        for commit_failures, records in results:
            failures.extend(commit_failures)
            for slot, facts in records:
                facts.position = walk.count
                slot.facts = facts
                walk.add(slot)
        done += len(results)
        if progress is not None:
            progress(done, total)

    executor = None
    first = 0  # commits checked here before the workers start
    if workers > 1:  # imported here: a short branch starts no worker processes
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        prepare()  # before the fork: the workers inherit the loaded modules and schemas
        # The first commit is checked here, before the fork: every worker then inherits
        # what checking it loaded and remembered (the TSA's chain validated once, the
        # trusted key parsed, the lazily imported modules) instead of each doing it again
        # for its first record (about 5 ms of CPU per worker). What is remembered is the
        # same as a worker would remember from that record itself.
        first = 1
        take(_check_run(store, split_ids(commit_ids[:20]), service, deployment, policy, roots))
        _drop_object_cache(store)
        executor = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_init_worker,
            initargs=(policy, roots),
        )
    try:
        if executor is None:
            # one run's record files (up to READ_AHEAD_BYTES and one record's) are held,
            # and one run's objects in libgit2's cache
            for start in range(0, total, chunk):
                results = _check_run(
                    store, split_ids(commit_ids[start * 20 : (start + chunk) * 20]), service, deployment, policy, roots
                )
                _drop_object_cache(store)
                take(results)
        else:
            # Runs of consecutive commits go to the workers, which read and check them;
            # results are taken in chain order, a few runs in flight per worker, so
            # memory holds a few runs' results however long the branch.
            pending: list[Future[list[CommitResult]]] = []
            for start in range(first, total, chunk):
                pending.append(
                    executor.submit(
                        _check_chunk, str(repository), service, deployment, commit_ids[start * 20 : (start + chunk) * 20]
                    )
                )
                while len(pending) > 2 * workers:
                    take(pending.pop(0).result())
            for future in pending:
                take(future.result())
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)
    if progress is not None:
        progress(total, total)
    records, sealed = walk.finish()
    failures.extend(chain_failures)
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
        head_id,
        tuple(records),
        tuple(failures),
        sealed,
        allow_unsealed,
        policy.source,
        summary=None
        if keep_records
        else RecordSummary(walk.count, tuple(sorted(walk.signers)), walk.described_time),
    )


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
    keep_records: bool = True,
) -> list[BranchReport]:
    """Check every AFDP branch (of ``service``, if given) and return their reports.

    Branches are checked in parallel worker processes (``jobs``, default all cores), one
    branch per worker, each worker running the same :func:`check_branch`; a single
    branch uses the workers for its records instead. ``progress`` is then called with
    (branches done, branches). ``keep_records``: as for :func:`check_branch`.

    Raises:
        NotFoundError: the repository has no AFDP branches to check.
    """
    store = EvidenceStore(repository)
    branches = [(s, d) for s, d in store.branches() if service is None or s == service]
    substituted = store.substitutions()  # once for the whole call, not once per branch
    unsafe = unsafe_branch_reports(repository, policy=policy, allow_unsealed=allow_unsealed)
    if not branches and not unsafe:
        raise NotFoundError(
            f"no AFDP evidence branches in {repository}"
            + (f" for service {service}" if service else "")
        )
    workers = min(len(branches), _worker_count(jobs, PARALLEL_THRESHOLD))
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        prepare()
        reports: list[BranchReport] = []
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_init_worker,
            initargs=(policy,),
        ) as pool:
            futures = [
                pool.submit(_check_branch_in_worker, str(repository), s, d, allow_unsealed, substituted, keep_records)
                for s, d in branches
            ]
            for done, future in enumerate(futures, 1):
                reports.append(future.result())
                if progress is not None:
                    progress(done, len(futures))
        return unsafe + reports
    return unsafe + [
        check_branch(
            repository,
            service=s,
            deployment=d,
            policy=policy,
            allow_unsealed=allow_unsealed,
            jobs=jobs,
            progress=progress,
            substitutions=substituted,
            keep_records=keep_records,
        )
        for s, d in branches
    ]


def _check_branch_in_worker(
    repository: str,
    service: str,
    deployment: str,
    allow_unsealed: bool,
    substitutions: list[str],
    keep_records: bool,
) -> BranchReport:
    # One branch per worker process: its records are checked in this process (jobs=1).
    return check_branch(
        repository,
        service=service,
        deployment=deployment,
        policy=_WORKER["policy"],
        allow_unsealed=allow_unsealed,
        jobs=1,
        substitutions=substitutions,
        keep_records=keep_records,
    )


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
