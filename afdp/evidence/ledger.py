"""Appending evidence: chain, sign, time-stamp, commit, move the branch (compare-and-swap).

This is the only place records are written. Each append:

1. reads the branch head and the digest of its last record (creating a genesis record
   first if the deployment has no branch yet);
2. builds the in-toto statement with ``prev`` = that digest, signs it (DSSE);
3. asks the TSAs, in order, for an RFC3161 token over the signature, while a helper
   thread writes the envelope (and the record's other files) and reads the trees the
   commit extends (:func:`afdp.evidence.stamping.stamp_while_preparing`);
4. writes the token, the trees and a commit, then moves the branch only if it has not
   moved.

If the branch moved (a concurrent writer), the record is rebuilt on the new head and
signed and time-stamped again. Any failure before the branch moves leaves it untouched
(blobs already written are unreachable, and ``git gc`` prunes them). A thread keeps its
repository open from one append to the next (:func:`~afdp.evidence.store.writer_store`)
and remembers the record it committed last (:func:`~afdp.evidence.commits.remember_tail`).

The commit a record travels in (its message, trailers and author) and reading a
branch's last record back are in :mod:`afdp.evidence.commits`; their names are
re-exported here.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pygit2

from afdp.errors import NotFoundError, PolicyViolation, StorageError, UsageError
from afdp.evidence import records as rec
from afdp.evidence.canonical import sha256_hex
from afdp.evidence.commits import (
    GIT_AUTHOR_KEY,
    BranchTail,
    commit_message,
    commit_signer,
    decode_envelope,
    git_identity,
    read_tail,
    remember_tail,
    trailers,
    with_git_author,
)
from afdp.evidence.names import branch_ref, check_not_models
from afdp.evidence.signing import AnySigner
from afdp.evidence.stamping import TOKEN_FILE, sign_and_stamp, sign_record, stamp_while_preparing
from afdp.evidence.store import COMMITTER, EvidenceStore, RefMoved, writer_store
from afdp.evidence.store.batch import BatchCommitter

__all__ = [
    "COMMITTER",
    "GIT_AUTHOR_KEY",
    "MAX_ATTEMPTS",
    "AppendedRecord",
    "BranchTail",
    "append_record",
    "append_records",
    "commit_message",
    "decode_envelope",
    "git_identity",
    "open_branch",
    "read_tail",
    "seal",
    "trailers",
    "with_git_author",
]

MAX_ATTEMPTS = 32
#: The commit author of records whose writer names none.
_AFDP_AUTHOR = ("AFDP", "afdp@evidence.invalid")


def _back_off(attempt: int) -> None:
    # Randomised, growing pause after a lost race, so that writers which keep colliding
    # spread out instead of starving one another (each retry re-signs and re-stamps).
    time.sleep(random.uniform(0, min(0.1, 0.002 * 2**attempt)))


@dataclass(frozen=True)
class AppendedRecord:
    """What :func:`append_record` wrote."""

    service: str
    deployment: str
    sequence: int
    step: str
    kind: str
    envelope_sha256: str
    commit_id: str
    tsa_url: str
    timestamp: str
    branch: str


def _message(
    record: rec.UnsignedRecord, digest: str, keyid: str, tsa_url: str, gen_time: str
) -> str:
    return commit_message(record.statement, digest, keyid, tsa_url, gen_time)




def _append_once(
    store: EvidenceStore,
    ref: str,
    head: pygit2.Commit | None,
    record: rec.UnsignedRecord,
    signer: AnySigner,
    tsa_urls: Sequence[str],
    timeout: float,
    author: tuple[str, str],
    service: str,
    deployment: str,
) -> AppendedRecord:
    record = with_git_author(record, author)
    files, signature, digest, keyid = sign_record(record, signer)
    # Only the token, the trees holding it and the commit wait for the TSA's answer.
    token, prepared = stamp_while_preparing(
        store, head, record, files, signature, tsa_urls, timeout
    )
    url, gen_time = token.url, rec.format_time(token.gen_time)
    message = _message(record, digest, keyid, url, gen_time)
    commit_id = store.write_commit(
        head,
        record.directory,
        {TOKEN_FILE: token.der},
        message,
        author=author,
        sign=commit_signer(signer),
        prepared=prepared,
    )
    store.compare_and_swap(
        ref, head.id if head else None, commit_id, f"afdp: record {record.sequence}"
    )
    remember_tail(store, commit_id, record, digest, {TOKEN_FILE: sha256_hex(token.der)})
    return AppendedRecord(
        service,
        deployment,
        record.sequence,
        record.step,
        record.kind,
        digest,
        str(commit_id),
        url,
        gen_time,
        ref,
    )


def _genesis(
    service: str,
    deployment: str,
    metadata: dict[str, Any] | None,
    workflow_digest: str | None,
    attachments: Mapping[str, bytes] | None = None,
    imported: rec.Imported | None = None,
) -> rec.UnsignedRecord:
    return rec.build_record(
        rec.RecordDraft(
            kind=rec.KIND_GENESIS,
            step="genesis",
            result={
                "service": service,
                "deployment": deployment,
                "opened_at": rec.format_time(rec.utc_now()),
                "metadata": metadata or {},
            },
            workflow_digest=workflow_digest,
            attachments=dict(attachments or {}),
            imported=imported,
        ),
        service=service,
        deployment=deployment,
        sequence=0,
        prev=None,
    )


def _write_genesis(
    store: EvidenceStore,
    ref: str,
    signer: AnySigner,
    tsa_urls: Sequence[str],
    timeout: float,
    author: tuple[str, str],
    service: str,
    deployment: str,
    *,
    metadata: dict[str, Any] | None,
    workflow_digest: str | None,
    attachments: Mapping[str, bytes] | None,
    imported: rec.Imported | None,
) -> AppendedRecord:
    """Write the genesis record (sequence 0, no ``prev``) of a branch that has none.

    Raises:
        RefMoved: another writer opened the branch first.
    """
    genesis = _genesis(service, deployment, metadata, workflow_digest, attachments, imported)
    return _append_once(
        store, ref, None, genesis, signer, tsa_urls, timeout, author, service, deployment
    )


def _require_tsa(tsa_urls: Sequence[str]) -> None:
    if not tsa_urls:
        raise UsageError("at least one --tsa URL is required: every record is time-stamped")


def _refuse_sealed(tail: BranchTail, service: str, deployment: str) -> None:
    if tail.kind == rec.KIND_SEAL:
        raise PolicyViolation(
            f"{service}/{deployment} is sealed (record {tail.sequence}); no record may follow the seal"
        )


def open_branch(
    repository: Path | str,
    *,
    service: str,
    deployment: str,
    signer: AnySigner,
    tsa_urls: Sequence[str],
    workflow_digest: str | None = None,
    genesis_metadata: dict[str, Any] | None = None,
    author: tuple[str, str] | None = None,
    timeout: float = 10.0,
    genesis_attachments: Mapping[str, bytes] | None = None,
    imported: rec.Imported | None = None,
) -> AppendedRecord | None:
    """Open a deployment's branch with its genesis record, before any step has a result.

    Lets a run prove that its signer signs and a TSA answers before it collects anything.
    Returns the genesis record written, or None when the branch already exists (opened
    by an earlier run or, meanwhile, by another writer).

    Raises:
        UsageError: bad names, no TSA URL.
        SigningError / TimestampError: nothing was written.
        StorageError: the repository is locked.
    """
    _require_tsa(tsa_urls)
    check_not_models(service, None)
    store = writer_store(repository)
    ref = branch_ref(service, deployment)
    if store.head(ref) is not None:
        return None
    try:
        with store.branch_turn(ref):
            if store.head(ref) is not None:
                return None  # opened meanwhile by the writer whose turn came first
            return _write_genesis(
                store,
                ref,
                signer,
                tsa_urls,
                timeout,
                author or _AFDP_AUTHOR,
                service,
                deployment,
                metadata=genesis_metadata,
                workflow_digest=workflow_digest,
                attachments=genesis_attachments,
                imported=imported,
            )
    except RefMoved:
        return None


def append_record(
    repository: Path | str,
    *,
    service: str,
    deployment: str,
    draft: rec.RecordDraft,
    signer: AnySigner,
    tsa_urls: Sequence[str],
    author: tuple[str, str] | None = None,
    genesis_metadata: dict[str, Any] | None = None,
    timeout: float = 10.0,
    genesis_attachments: Mapping[str, bytes] | None = None,
) -> list[AppendedRecord]:
    """Append one record to a deployment's branch, opening the branch if needed.

    Returns the records written: the genesis record first when the branch was new,
    then the requested one.

    Raises:
        UsageError: bad names, no TSA URL, a draft of the wrong kind.
        PolicyViolation: the branch is already sealed.
        SigningError / TimestampError: nothing was written.
        StorageError: the repository is locked, or the branch kept moving.
    """
    _require_tsa(tsa_urls)
    if draft.kind == rec.KIND_GENESIS:
        raise UsageError("genesis records are written automatically")
    check_not_models(service, draft.step if draft.kind == rec.KIND_STEP else None)
    store = writer_store(repository)
    ref = branch_ref(service, deployment)
    who = author or _AFDP_AUTHOR
    # One writer at a time per branch: a lost race would cost a new signature and a
    # new time-stamp; the compare-and-swap below still guards against any other writer.
    with store.branch_turn(ref):
        return _append_in_turn(
            store,
            ref,
            service,
            deployment,
            draft,
            signer,
            tsa_urls,
            who,
            genesis_metadata,
            genesis_attachments,
            timeout,
        )


def _append_in_turn(
    store: EvidenceStore,
    ref: str,
    service: str,
    deployment: str,
    draft: rec.RecordDraft,
    signer: AnySigner,
    tsa_urls: Sequence[str],
    who: tuple[str, str],
    genesis_metadata: dict[str, Any] | None,
    genesis_attachments: Mapping[str, bytes] | None,
    timeout: float,
) -> list[AppendedRecord]:
    written: list[AppendedRecord] = []
    for attempt in range(MAX_ATTEMPTS):
        head = store.head(ref)
        if head is None:
            try:
                written.append(
                    _write_genesis(
                        store,
                        ref,
                        signer,
                        tsa_urls,
                        timeout,
                        who,
                        service,
                        deployment,
                        metadata=genesis_metadata,
                        workflow_digest=draft.workflow_digest,
                        attachments=genesis_attachments,
                        imported=draft.imported,
                    )
                )
            except RefMoved:
                _back_off(attempt)  # another writer opened the branch first; append on theirs
            continue
        tail = read_tail(store, head)
        _refuse_sealed(tail, service, deployment)
        draft_record = draft
        if draft.kind == rec.KIND_SEAL:
            # A seal describes the branch it closes: imported when the branch is.
            draft_record = replace(_seal_draft(store, head, draft), imported=tail.imported)
        elif draft.imported != tail.imported:
            # One branch tells one story: live records never continue an imported
            # branch, nor imported ones a live branch (nor another described time).
            raise _mixed_story(service, deployment, tail.imported, draft.imported)
        record = rec.build_record(
            draft_record,
            service=service,
            deployment=deployment,
            sequence=tail.sequence + 1,
            prev=tail.envelope_sha256,
            prev_timestamps=tail.timestamps,
        )
        try:
            written.append(
                _append_once(
                    store, ref, head, record, signer, tsa_urls, timeout, who, service, deployment
                )
            )
            return written
        except RefMoved:
            _back_off(attempt)
            continue
    raise StorageError(
        f"{ref} kept moving under concurrent writers; gave up after {MAX_ATTEMPTS} attempts"
    )


def append_records(
    repository: Path | str,
    *,
    service: str,
    deployment: str,
    drafts: Iterable[rec.RecordDraft],
    signer: AnySigner,
    tsa_urls: Sequence[str],
    author: tuple[str, str] | None = None,
    genesis_metadata: dict[str, Any] | None = None,
    timeout: float = 10.0,
    genesis_attachments: Mapping[str, bytes] | None = None,
) -> list[AppendedRecord]:
    """Append many records to one branch in one go (imports, backfills), all or nothing.

    Each record is built, signed and time-stamped on its own, exactly as
    :func:`append_record` would (its own DSSE signature, its own RFC 3161 token, which
    the next record cites), and gets its own signed commit, so the branch stays one
    linear chain that ``afdp verify`` checks record by record. What is shared: one turn
    on the branch, one read of its head, and one compare-and-swap at the end; the Git
    writes of each record overlap the signing and time-stamping of the next. The
    branch moves only when every record is written: if any record fails (a bad draft,
    a TSA that gives no token, a Git error), the branch is left exactly where it was
    and nothing of the batch is recorded.

    Returns the records written: the genesis record first when the branch was new.

    Raises:
        UsageError: no draft, bad names, no TSA URL, a genesis draft, or a seal that is
            not the last draft.
        PolicyViolation: the branch is already sealed.
        SigningError / TimestampError / StorageError: nothing was recorded.
    """
    drafts = list(drafts)
    _require_tsa(tsa_urls)
    if not drafts:
        raise UsageError("a batch needs at least one record")
    for position, draft in enumerate(drafts):
        if draft.kind == rec.KIND_GENESIS:
            raise UsageError(f"batch item {position + 1}: genesis records are written automatically")
        if draft.kind == rec.KIND_SEAL and position != len(drafts) - 1:
            raise UsageError(f"batch item {position + 1}: a seal can only be the last record")
        check_not_models(service, draft.step if draft.kind == rec.KIND_STEP else None)
    store = EvidenceStore(repository)
    ref = branch_ref(service, deployment)
    who = author or _AFDP_AUTHOR
    signer_lock = threading.Lock()
    sign = commit_signer(signer, signer_lock)
    with store.branch_turn(ref):
        head = store.head(ref)
        todo: list[rec.RecordDraft | None] = list(drafts)
        # One story per branch, checked before anything is signed (as append_record does):
        # the branch's (or, for a new branch, the first record's) imported mark is every
        # record's; a seal takes the branch's.
        story = drafts[0].imported
        if head is None:
            todo.insert(0, None)  # the genesis record, built in the loop
            sequence, prev, prev_tokens = 0, None, None
        else:
            tail = read_tail(store, head)
            _refuse_sealed(tail, service, deployment)
            sequence, prev, prev_tokens = tail.sequence + 1, tail.envelope_sha256, tail.timestamps
            story = tail.imported
        for draft in drafts:
            if draft.kind != rec.KIND_SEAL and draft.imported != story:
                raise _mixed_story(service, deployment, story, draft.imported)
        committer = BatchCommitter(store, head)
        written: list[tuple[rec.UnsignedRecord, str, str, str]] = []
        try:
            for item in todo:
                if item is None:
                    record = _genesis(
                        service, deployment, genesis_metadata, drafts[0].workflow_digest, genesis_attachments,
                        story,
                    )
                else:
                    if item.kind == rec.KIND_SEAL:
                        # the seal lists every record: it needs the commits written so far
                        committer.drain()
                        assert committer.parent is not None
                        item = replace(_seal_draft(store, committer.parent, item), imported=story)
                    record = rec.build_record(
                        item,
                        service=service,
                        deployment=deployment,
                        sequence=sequence,
                        prev=prev,
                        prev_timestamps=prev_tokens,
                    )
                record = with_git_author(record, who)
                files, digest, keyid, url, gen_time = sign_and_stamp(
                    record, signer, tsa_urls, timeout, signer_lock
                )
                committer.submit(
                    record.directory, files, _message(record, digest, keyid, url, gen_time), who, sign
                )
                written.append((record, digest, url, gen_time))
                sequence, prev = sequence + 1, digest
                prev_tokens = {n: sha256_hex(d) for n, d in files.items() if rec.TIMESTAMP_FILE.fullmatch(n)}
            commit_ids = committer.drain()
        finally:
            committer.close()
        store.compare_and_swap(
            ref,
            head.id if head else None,
            pygit2.Oid(hex=commit_ids[-1]),
            f"afdp: records {written[0][0].sequence}-{written[-1][0].sequence} (batch)",
        )
    return [
        AppendedRecord(
            service, deployment, r.sequence, r.step, r.kind, digest, commit_id, url, gen_time, ref
        )
        for (r, digest, url, gen_time), commit_id in zip(written, commit_ids, strict=True)
    ]


def _mixed_story(
    service: str, deployment: str, branch: rec.Imported | None, record: rec.Imported | None
) -> PolicyViolation:
    """One branch tells one story: live records never continue an imported branch, nor
    imported ones a live branch (nor another described time); verification check 12i."""
    said = f"imported (describes {rec.format_time(branch.described_time)})" if branch else "a live-captured branch"
    new = f"imported for {rec.format_time(record.described_time)}" if record else "captured live"
    return PolicyViolation(f"{service}/{deployment} is {said}: a record {new} cannot be appended to it")


def _seal_draft(
    store: EvidenceStore, head: pygit2.Commit, draft: rec.RecordDraft
) -> rec.RecordDraft:
    entries = []
    for commit in store.history(head):
        info = trailers(store.message_of(commit))
        sequence, step = int(info["AFDP-Record"]), info["AFDP-Step"]
        envelope = store.read_blob(
            commit.tree, f"{rec.record_dir(sequence, step)}/{rec.ENVELOPE_FILE}"
        )
        if envelope is None:
            raise StorageError(f"record {sequence} has no envelope; run 'afdp verify'")
        entries.append((sequence, step, sha256_hex(envelope)))
    result = rec.seal_result(entries)
    return rec.RecordDraft(
        kind=rec.KIND_SEAL,
        step="seal",
        result=result,
        summary=f"{len(entries)} records sealed",
        workflow_digest=draft.workflow_digest,
        context=draft.context,
    )


def seal(
    repository: Path | str,
    *,
    service: str,
    deployment: str,
    signer: AnySigner,
    tsa_urls: Sequence[str],
    workflow_digest: str | None = None,
    timeout: float = 10.0,
) -> AppendedRecord:
    """Seal a deployment's branch: a last record committing to every record before it.

    Raises:
        NotFoundError: the deployment has no evidence branch.
        PolicyViolation: the branch is already sealed.
    """
    store = writer_store(repository)
    if store.head(branch_ref(service, deployment)) is None:
        raise NotFoundError(f"no evidence for {service}/{deployment} in {repository}")
    draft = rec.RecordDraft(
        kind=rec.KIND_SEAL, step="seal", result=None, workflow_digest=workflow_digest
    )
    return append_record(
        repository,
        service=service,
        deployment=deployment,
        draft=draft,
        signer=signer,
        tsa_urls=tsa_urls,
        timeout=timeout,
    )[-1]
