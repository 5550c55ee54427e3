"""The central evidence remote: push branches without ever forcing, fetch them to verify.

Evidence branches are append-only chains, so pushing one is a fast-forward or nothing.
:func:`push_branches` compares every local branch with what the remote holds and acts:

==============  ===========================================================  ======
remote holds    what happens                                                 exit
==============  ===========================================================  ======
nothing         the branch is created (``created``)                          0
our head        nothing to do (``up-to-date``)                               0
an ancestor     pushed as a fast-forward (``pushed``)                        0
a descendant    the remote is ahead on the same chain: nothing to push       0
                (``behind``); the local branch is left as it is
anything else   refused and reported (``diverged``): the remote keeps its    1
                chain, the common ancestor and both sides' counts are named
==============  ===========================================================  ======

Every push is a compare-and-swap: refspecs never carry ``+`` (git refuses a
non-fast-forward before sending), and git's receive-pack updates the ref only if it
still holds the value it advertised to this push (``git push`` sends ``<old> <new>``
and the receiving side compares under its ref lock). A writer that loses a race (the
ref moved between our listing and the update) sees its update rejected, lists and
fetches again, re-classifies and retries, up to :data:`ATTEMPTS` times; the chain on
the remote stays linear whoever wins.

Transport is the ``git`` command (file paths, ``file://``, ``ssh://``, ``git://``,
``https://``), which brings the machine's SSH configuration, credential helpers and
proxies. libgit2 (pygit2) is used for the graph only, not to push: its in-process
transport for local paths writes the remote's refs itself, ignoring the receiving
repository's ``receive.denyNonFastForwards`` and the old-value check (a forced pygit2
push to a ``file://`` remote overwrites it), so it cannot give this guarantee.

Over https, the server's certificate is always verified (:func:`_transport`): every
git command gets ``http.sslVerify=true`` (and ``true`` for every URL-specific
``http.<url>.sslVerify``) and no ``GIT_SSL_NO_VERIFY``; where the user turned
verification off for the URL given (``GIT_SSL_NO_VERIFY``, ``http.<url>.sslVerify
false``), AFDP refuses by name. A private CA is given the standard way
(``GIT_SSL_CAINFO``, ``http.sslCAInfo``). A password in an
http(s) URL never reaches git's command line (readable by every user through ``ps``):
it goes to a one-off credential helper through the environment, and every message
shows the URL as ``https://***@host/...``. The git command, its transport, TLS and
credentials are in :mod:`afdp.evidence.gitremote` (names re-exported here).

**Verification before a push.** Pushing never claims to verify, but a push can be
gated (``gate``, a :data:`PushGate`; :class:`afdp.verify.gate.TrustGate` runs
``afdp verify``'s checks against the auditor's trust policy): every branch that would
send records is verified at the exact head that would be sent, and one that fails is
``refused`` (nothing of it is sent, exit 1); where the remote is ahead on the same
chain, the remote's head is verified too, and a failure there is ``remote-failed``
(exit 1: nothing is sent, and the remote is never overwritten). Without a gate every
branch says ``verification: unchecked``.

The receiving side (:func:`harden_receiving`, set by ``afdp init --bare``) refuses
non-fast-forwards and deletions from every client, AFDP or not.

A run whose push fails (remote unreachable, refused, diverged) leaves a marker in
``<git dir>/afdp/push-queue/`` (:func:`queue_push`); ``afdp push --pending`` sends
what is queued and clears each marker once its branch is on the remote.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pygit2

from afdp.errors import AfdpError, NetworkError, UsageError
from afdp.evidence.gitremote import (
    ALLOWED_PROTOCOLS,
    GIT_TIMEOUT,
    _fetch_objects,
    _git_remote,
    _last_line,
    _reason,
    check_remote_url,
    list_remote,
    redact,
    without_password,
)
from afdp.evidence.names import BRANCH_PREFIX, parse_branch_ref
from afdp.evidence.pushreport import SETTLED, BranchPush, PushGate, PushReport, Verdict
from afdp.evidence.store import EvidenceStore, common_dir

__all__ = [
    "ALLOWED_PROTOCOLS",
    "ATTEMPTS",
    "GIT_TIMEOUT",
    "QUEUE_DIR",
    "RECEIVING_CONFIG",
    "SETTLED",
    "BranchPush",
    "PendingPush",
    "PushGate",
    "PushReport",
    "RunPush",
    "Verdict",
    "check_remote_url",
    "fetch_evidence",
    "harden_receiving",
    "init_remote",
    "list_remote",
    "pending_pushes",
    "push_after_run",
    "push_branches",
    "push_pending",
    "queue_push",
    "redact",
    "without_password",
]

#: Rounds of list, fetch, compare and push before a branch still rejected is reported.
ATTEMPTS = 8
QUEUE_DIR = "afdp/push-queue"

#: What ``afdp init --bare`` sets on a repository that receives evidence.
RECEIVING_CONFIG = {
    # no client may move a branch other than forward, or delete one
    "receive.denyNonFastForwards": "true",
    "receive.denyDeletes": "true",
    # objects that git fsck would refuse are refused at the door
    "receive.fsckObjects": "true",
    # every ref update is logged on the remote, and the log is never expired
    "core.logAllRefUpdates": "always",
    "gc.reflogExpire": "never",
    "gc.reflogExpireUnreachable": "never",
}


# -- push ----------------------------------------------------------------------------


def _has_commit(repo: pygit2.Repository, oid: str) -> bool:
    try:
        return isinstance(repo.get(oid), pygit2.Commit)
    except (ValueError, pygit2.GitError):
        return False


def _has_object(repo: pygit2.Repository, oid: str) -> bool:
    try:
        return repo.odb.exists(oid)
    except (ValueError, pygit2.GitError):
        return False


def _classify(repo: pygit2.Repository, ref: str, local: str, remote: str | None, attempts: int) -> BranchPush | None:
    """Return the settled outcome for ``ref``, or None if ``local`` must be pushed."""
    if remote is None or remote == local:
        return None if remote is None else BranchPush(ref, "up-to-date", local, remote, remote, "the remote already holds this head", attempts)
    if not _has_commit(repo, remote):
        return BranchPush(ref, "diverged", local, remote, remote, f"the remote's {ref} points at {remote}, which is not a commit", attempts)
    local_oid, remote_oid = pygit2.Oid(hex=local), pygit2.Oid(hex=remote)
    if repo.descendant_of(local_oid, remote_oid):
        return None
    if repo.descendant_of(remote_oid, local_oid):
        ahead = repo.ahead_behind(remote_oid, local_oid)[0]
        return BranchPush(
            ref, "behind", local, remote, remote,
            f"the remote is {ahead} record(s) ahead on the same chain: nothing to push "
            "(the local branch is left as it is)",
            attempts,
        )  # fmt: skip
    base = repo.merge_base(local_oid, remote_oid)
    mine, theirs = repo.ahead_behind(local_oid, remote_oid)
    since = f"after {str(base)[:12]}" if base is not None else "with no common record"
    return BranchPush(
        ref, "diverged", local, remote, remote,
        f"the remote holds other evidence for this deployment: the chains part {since} "
        f"({mine} local record(s), {theirs} remote record(s) after it); refused, the remote is unchanged",
        attempts,
        common_ancestor=str(base) if base is not None else None,
        local_only=mine,
        remote_only=theirs,
    )  # fmt: skip


def _push_refs(store: EvidenceStore, url: str, updates: dict[str, str]) -> dict[str, tuple[bool, str]]:
    """Push ``{ref: commit}`` (no ``+``: fast-forwards only); return ``{ref: (accepted, why)}``.

    Raises:
        NetworkError: git could not talk to the remote at all.
    """
    specs = [f"{oid}:{ref}" for ref, oid in sorted(updates.items())]
    pushed = _git_remote(["push", "--porcelain", "--no-verify"], url, specs, git_dir=store.path)
    statuses: dict[str, tuple[bool, str]] = {}
    for line in pushed.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or ":" not in parts[1]:
            continue
        flag, ref = parts[0], parts[1].rsplit(":", 1)[1]
        if ref in updates:
            statuses[ref] = (flag in (" ", "*", "="), redact(parts[2].strip()))
    if not statuses:
        raise NetworkError(f"cannot push to evidence remote {redact(url)}: {_reason(pushed)}")
    for ref in updates:
        statuses.setdefault(ref, (False, _last_line(pushed)))
    return statuses


def push_branches(
    repository: Path | str,
    url: str,
    *,
    refs: Sequence[str] | None = None,
    attempts: int = ATTEMPTS,
    gate: PushGate | None = None,
) -> PushReport:
    """Push AFDP evidence branches to ``url``: fast-forwards only, compare-and-swap.

    ``refs`` (full ``refs/heads/afdp/<service>/<deployment>`` names) defaults to every
    AFDP branch of the repository. Each branch is classified against what the remote
    holds (see the module docstring); the ones to send go in one ``git push`` whose
    refspecs never force. A rejected update (another writer won the race) is listed,
    fetched and classified again. Markers in the push queue for this remote are
    cleared for every branch that settled.

    With a ``gate``, every branch that would send records is verified at the head that
    would be sent before anything is sent, and where the remote is ahead on the same
    chain, the remote's head is verified: a branch that fails is never in the push.

    Returns:
        one :class:`BranchPush` per branch: created, pushed, up-to-date, behind,
        diverged, rejected (still refused after ``attempts`` rounds), invalid (a ref
        under refs/heads/afdp/ that is not an AFDP branch name: never pushed), and with
        a gate refused (fails verification: nothing of it sent) or remote-failed (the
        remote's head, ahead on the same chain, fails verification: nothing sent).

    Raises:
        NotFoundError: no repository, or a named branch that does not exist locally.
        UsageError: a ref that is not an AFDP branch; a bad URL.
        NetworkError: the remote cannot be reached.
    """
    from afdp.errors import NotFoundError

    check_remote_url(url)
    store = EvidenceStore(repository)
    results: dict[str, BranchPush] = {}
    if refs is None:
        targets = [f"{BRANCH_PREFIX}{s}/{d}" for s, d in store.branches()]
        for name in store.unsafe_branches():
            results[name] = BranchPush(name, "invalid", None, None, None, "not a valid refs/heads/afdp/<service>/<deployment> name: never pushed")
        if not targets and not results:
            raise NotFoundError(f"no AFDP evidence branches in {repository} to push")
    else:
        targets = []
        for ref in refs:
            if parse_branch_ref(ref) is None:
                raise UsageError(f"{ref!r} is not an AFDP evidence branch (refs/heads/afdp/<service>/<deployment>)")
            targets.append(ref)
    local: dict[str, str] = {}
    for ref in targets:
        head = store.head(ref)
        if head is None:
            raise NotFoundError(f"no evidence branch {ref} in {repository}")
        local[ref] = str(head.id)  # what is pushed: the head as it is now, by id
    pending = sorted(local)
    last_reason: dict[str, str] = {}
    verdicts: dict[tuple[str, str], Verdict] = {}

    def verdict(ref: str, head: str) -> Verdict | None:
        # once per (branch, head): a round that lost a race classifies again
        if gate is None:
            return None
        if (ref, head) not in verdicts:
            verdicts[ref, head] = gate(store.path, ref, head)
        return verdicts[ref, head]

    for attempt in range(1, attempts + 1):
        advertised = list_remote(url)
        missing = [r for r in pending if r in advertised and not _has_commit(store.repo, advertised[r])]
        if missing:
            _fetch_objects(store, url, missing)
        updates: dict[str, str] = {}
        for ref in pending:
            remote = advertised.get(ref)
            if remote is not None and ref in missing and not _has_object(store.repo, remote):
                # it moved again between listing and fetching: list anew next round
                last_reason[ref] = "the remote branch moved while it was fetched"
                continue
            settled = _classify(store.repo, ref, local[ref], remote, attempt)
            if settled is None:
                checked = verdict(ref, local[ref])
                if checked is not None and not checked.ok:
                    results[ref] = _refused(ref, local[ref], remote, checked, attempt)
                else:
                    updates[ref] = local[ref]
            elif settled.outcome == "behind" and remote is not None:
                results[ref] = _behind(settled, verdict(ref, remote))
            else:
                results[ref] = settled
        if updates:
            statuses = _push_refs(store, url, updates)
            for ref, (accepted, why) in statuses.items():
                if accepted:
                    before = advertised.get(ref)
                    results[ref] = BranchPush(
                        ref, "created" if before is None else "pushed", local[ref], before, local[ref],
                        "new branch on the remote" if before is None else f"fast-forward from {before[:12]}",
                        attempt,
                    ).with_verdict(verdict(ref, local[ref]))  # fmt: skip
                else:
                    last_reason[ref] = why
        pending = [r for r in pending if r not in results]
        if not pending:
            break
        time.sleep(min(0.05 * attempt, 0.5))
    for ref in pending:
        results[ref] = BranchPush(
            ref, "rejected", local[ref], None, None,
            f"the remote refused the update {attempts} time(s): {last_reason.get(ref, 'no reason given')}",
            attempts,
        )  # fmt: skip
    report = PushReport(redact(url), tuple(results[r] for r in sorted(results)), gate.source if gate is not None else None)
    _clear_queue(store, url, [b.ref for b in report.branches if b.ok])
    return report


def _refused(ref: str, local: str, remote: str | None, verdict: Verdict, attempt: int) -> BranchPush:
    """The local head fails verification: nothing of the branch is sent."""
    return BranchPush(
        ref, "refused", local, remote, remote,
        f"fails verification against {verdict.trust_policy}: {verdict.describe()}; "
        "not pushed, the remote is unchanged",
        attempt,
    ).with_verdict(verdict)  # fmt: skip


def _behind(settled: BranchPush, verdict: Verdict | None) -> BranchPush:
    """The remote is ahead on the same chain: with a gate, its head is verified too."""
    if verdict is None or verdict.ok:
        return settled.with_verdict(verdict)
    return replace(
        settled,
        outcome="remote-failed",
        detail=f"the remote's branch is ahead of this one on the same chain and fails verification against "
        f"{verdict.trust_policy}: {verdict.describe()}; nothing pushed, the remote is never overwritten "
        "(see afdp verify --remote)",
    ).with_verdict(verdict)


# -- the push queue --------------------------------------------------------------------


@dataclass(frozen=True)
class PendingPush:
    """A branch a run could not push: where it was to go, and why it did not."""

    remote: str  # without a password
    ref: str
    head: str
    reason: str
    queued_at: str
    path: Path = field(compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"remote": redact(self.remote), "ref": self.ref, "head": self.head, "reason": self.reason, "queued_at": self.queued_at}


def _queue_dir(store: EvidenceStore) -> Path:
    return common_dir(store.path) / QUEUE_DIR


def _queue_file(store: EvidenceStore, url: str, ref: str) -> Path:
    key = hashlib.sha256(f"{without_password(url)}\n{ref}".encode()).hexdigest()[:32]
    return _queue_dir(store) / f"{key}.json"


def queue_push(repository: Path | str, url: str, ref: str, reason: str) -> Path:
    """Remember that ``ref`` is still to be pushed to ``url``; return the marker's path.

    The marker holds the URL without its password; written atomically (a temporary
    file renamed over it), one file per remote and branch.
    """
    from afdp.evidence.records import format_time, utc_now

    store = EvidenceStore(repository)
    head = store.head(ref)
    path = _queue_file(store, url, ref)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "remote": without_password(url),
        "ref": ref,
        "head": str(head.id) if head is not None else None,
        "reason": redact(reason),
        "queued_at": format_time(utc_now()),
    }
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path


def pending_pushes(repository: Path | str) -> list[PendingPush]:
    """Return the queued pushes of ``repository``, oldest first (unreadable markers skipped)."""
    store = EvidenceStore(repository)
    found = []
    directory = _queue_dir(store)
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            item = PendingPush(str(data["remote"]), str(data["ref"]), str(data.get("head")), str(data.get("reason", "")), str(data.get("queued_at", "")), path)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if parse_branch_ref(item.ref) is not None:
            found.append(item)
    return sorted(found, key=lambda p: (p.queued_at, p.ref))


def _clear_queue(store: EvidenceStore, url: str, refs: Iterable[str]) -> None:
    for ref in refs:
        with contextlib.suppress(OSError):
            _queue_file(store, url, ref).unlink(missing_ok=True)


def push_pending(repository: Path | str, *, url: str | None = None, gate: PushGate | None = None) -> list[PushReport]:
    """Push every queued branch to the remote it was queued for (or only those queued for
    ``url``, pushed to ``url`` as given, credentials included); clear settled markers.
    ``gate``: as for :func:`push_branches`.

    Raises:
        NetworkError: a remote cannot be reached (markers of that remote stay).
    """
    queued = pending_pushes(repository)
    by_remote: dict[str, list[str]] = {}
    for item in queued:
        if url is not None and without_password(url) != item.remote:
            continue
        by_remote.setdefault(url if url is not None else item.remote, []).append(item.ref)
    store = EvidenceStore(repository)
    reports = []
    for remote, refs in by_remote.items():
        present = [r for r in refs if store.head(r) is not None]
        if present:
            reports.append(push_branches(repository, remote, refs=present, gate=gate))
    return reports


@dataclass(frozen=True)
class RunPush:
    """What the end of ``afdp run --push`` did: the report, or why the branch is queued."""

    report: PushReport | None
    queued: Path | None
    warning: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.report is not None and self.report.ok,
            "report": self.report.to_json() if self.report else None,
            "queued": str(self.queued) if self.queued else None,
            "warning": self.warning,
        }


def push_after_run(repository: Path | str, url: str, ref: str, *, gate: PushGate | None = None) -> RunPush:
    """Push one run's branch; on any failure keep the evidence local, queue the branch
    (see :func:`queue_push`) and return a warning instead of raising.

    The run already succeeded: its evidence is committed locally whatever the remote
    says, and ``afdp push --pending`` sends it later. With a ``gate`` (the run's trust
    policy) the branch is verified first; a branch that fails is neither pushed nor
    queued, and a marker queued for it earlier is removed (``--pending`` is what a
    timer runs: it must not send it later).
    """
    check_remote_url(url)
    try:
        report = push_branches(repository, url, refs=[ref], gate=gate)
    except AfdpError as exc:  # unreachable, refusing, locked: never the run's failure
        queued = queue_push(repository, url, ref, exc.diagnostics())
        return RunPush(None, queued, f"evidence kept locally, not pushed: {exc.diagnostics()}; queued in {queued} (send it later with: afdp push --repo {repository} --pending)")
    branch = report.branches[0]
    if branch.ok:
        return RunPush(report, None, None)
    if branch.outcome == "refused":
        # and an earlier marker goes: a timer's `afdp push --pending` must not send it
        _clear_queue(EvidenceStore(repository), url, [ref])
        return RunPush(report, None, f"evidence kept locally, not pushed and not queued: {ref.removeprefix('refs/heads/')} {branch.detail}")
    queued = queue_push(repository, url, ref, f"{branch.outcome}: {branch.detail}")
    return RunPush(report, queued, f"evidence kept locally, not pushed ({branch.outcome}): {branch.detail}; queued in {queued}")


# -- the receiving side and the verifier's quarantine ------------------------------------


def harden_receiving(repository: Path | str) -> dict[str, str]:
    """Set :data:`RECEIVING_CONFIG` on a repository that receives evidence; return it.

    With it, git's receive-pack refuses any push that is not a fast-forward, and any
    deletion, whoever sends it (``git push --force`` included), checks the objects it
    receives, and logs every ref update for good.

    Raises:
        NotFoundError: no repository at ``repository``.
    """
    store = EvidenceStore(repository)
    config = store.repo.config
    for name, value in RECEIVING_CONFIG.items():
        config[name] = value
    return dict(RECEIVING_CONFIG)


def init_remote(path: Path) -> tuple[Path, bool]:
    """Create (or adopt) a bare repository at ``path`` to receive evidence, hardened.

    Returns:
        (path, True if it was created now).
    """
    from afdp.evidence.store import init_repository

    created = init_repository(path, bare=True)
    harden_receiving(path)
    return created


def fetch_evidence(url: str, into: Path, *, refs: Sequence[str] | None = None) -> Path:
    """Fetch the remote's evidence branches (or only ``refs``) into a new bare repository
    ``into`` (a quarantine: nothing else is touched) and return its path.

    ``refs/replace/*`` and ``refs/notes/*`` come along, so verification's check 0
    reports them as it would locally.

    Raises:
        NetworkError: the remote cannot be reached or read.
        UsageError: ``into`` exists and is not empty.
    """
    from afdp.evidence.store import init_repository

    check_remote_url(url)
    init_repository(into, bare=True)
    specs = (
        [f"{r}:{r}" for r in refs]
        if refs is not None
        else ["refs/heads/afdp/*:refs/heads/afdp/*"]
    ) + ["refs/replace/*:refs/replace/*", "refs/notes/*:refs/notes/*"]
    fetched = _git_remote(["fetch", "--no-tags", "--no-write-fetch-head", "--quiet"], url, specs, git_dir=into)
    if fetched.returncode != 0:
        raise NetworkError(f"cannot fetch evidence from {redact(url)}: {_reason(fetched)}")
    return into
