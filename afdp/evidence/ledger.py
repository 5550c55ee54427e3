"""Appending evidence: chain, sign, time-stamp, commit, move the branch (compare-and-swap).

This is the only place records are written. Each append:

1. reads the branch head and the digest of its last record (creating a genesis record
   first if the deployment has no branch yet);
2. builds the in-toto statement with ``prev`` = that digest, signs it (DSSE);
3. asks the TSAs, in order, for an RFC3161 token over the signature;
4. writes blobs, trees and a commit, then moves the branch only if it has not moved.

If the branch moved (a concurrent writer), the record is rebuilt on the new head and
signed and time-stamped again. Any failure before step 4 leaves the branch untouched.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pygit2

from afdp.errors import NotFoundError, PolicyViolation, StorageError, UsageError
from afdp.evidence import records as rec
from afdp.evidence.canonical import canonical_bytes, sha256_hex
from afdp.evidence.keyless import KEYLESS_KEYID, KeylessSigner
from afdp.evidence.names import branch_ref, check_not_models
from afdp.evidence.signing import AnySigner, sign_bytes, signer_keyid
from afdp.evidence.sshsig import sign_git_commit
from afdp.evidence.store import COMMITTER, EvidenceStore, RefMoved

MAX_ATTEMPTS = 32


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


@dataclass(frozen=True)
class BranchTail:
    """The last record of a branch as the writer needs it (read, not verified)."""

    head: pygit2.Commit
    sequence: int
    step: str
    kind: str
    envelope_sha256: str
    timestamps: dict[str, str]  # token file name -> hex SHA-256, cited by the next record
    #: The branch's import marker (afdp import), as its last record states it.
    imported: rec.Imported | None = None


def trailers(message: str) -> dict[str, str]:
    """Return the ``AFDP-*`` trailers of a commit message."""
    found: dict[str, str] = {}
    for line in message.splitlines():
        key, sep, value = line.partition(": ")
        if sep and key.startswith("AFDP-"):
            found[key] = value.strip()
    return found


def read_tail(store: EvidenceStore, head: pygit2.Commit) -> BranchTail:
    """Return the last record of a branch from its head commit.

    Raises:
        StorageError: the head is not an AFDP record commit, or its trailers disagree
            with the record it carries (the branch was altered; run ``afdp verify``).
    """
    info = trailers(store.message_of(head))
    try:
        sequence = int(info["AFDP-Record"])
        step, kind = info["AFDP-Step"], info["AFDP-Kind"]
    except (KeyError, ValueError) as exc:
        raise StorageError(
            f"branch head {str(head.id)[:12]} is not an AFDP record commit; run 'afdp verify'"
        ) from exc
    files = store.list_dir(head.tree, rec.record_dir(sequence, step))
    envelope = files.get(rec.ENVELOPE_FILE)
    tokens = {n: sha256_hex(d) for n, d in files.items() if rec.TIMESTAMP_FILE.fullmatch(n)}
    if (
        envelope is None
        or not tokens
        or info.get("AFDP-Digest") != f"sha256:{sha256_hex(envelope)}"
    ):
        raise StorageError(
            f"branch head {str(head.id)[:12]} does not match the record it names; run 'afdp verify'"
        )
    try:
        imported = rec.imported_of(decode_envelope(envelope)["predicate"])
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageError(
            f"branch head {str(head.id)[:12]} holds a record that cannot be read; run 'afdp verify'"
        ) from exc
    return BranchTail(head, sequence, step, kind, sha256_hex(envelope), tokens, imported)


def _message(
    record: rec.UnsignedRecord, digest: str, keyid: str, tsa_url: str, gen_time: str
) -> str:
    return commit_message(record.statement, digest, keyid, tsa_url, gen_time)


def commit_message(
    statement: dict[str, Any], digest: str, keyid: str, tsa_url: str, gen_time: str
) -> str:
    """Return the commit message of a record: a function of the signed statement, the
    envelope digest, the signer label (keyid, or ``sigstore:<instance> <identity>``),
    the TSA URL that answered and the token's time (``format_time``).

    Verification regenerates it from the verified record and compares: every line but
    the TSA URL (which no signature covers) is bound to the record.
    """
    predicate = statement["predicate"]
    kind = rec.KIND_OF_PREDICATE[statement["predicateType"]]
    step, sequence = predicate["step"]["name"], predicate["sequence"]
    subject = {
        rec.KIND_GENESIS: f"genesis: evidence opened for {predicate['service']}/{predicate['deployment']}",
        rec.KIND_SEAL: f"seal: {predicate['summary']}",
    }.get(kind, f"{step}: {predicate['status']} - {predicate['summary']}")
    prev = predicate["prev"]["sha256"] if predicate["prev"] else "none"
    imported = predicate.get("imported") is True
    if imported:
        # Plain in `git log --oneline`: this record describes the past, written now.
        subject = f"[imported] {subject}"
    lines = [
        subject[:200],
        "",
        f"Record {sequence} of {predicate['service']}/{predicate['deployment']}"
        f" ({kind}, status {predicate['status']}).",
    ]
    if imported:
        lines.append(
            f"Imported from history: describes the deployment of {predicate.get('described_time')};"
            " signed and time-stamped when imported, not captured live."
        )
    if predicate["error"]:
        lines.append(f"Error: {predicate['error'][:500]}")
    lines += [
        "",
        f"AFDP-Service: {predicate['service']}",
        f"AFDP-Deployment: {predicate['deployment']}",
        f"AFDP-Record: {sequence}",
        f"AFDP-Step: {step}",
        f"AFDP-Kind: {kind}",
        f"AFDP-Status: {predicate['status']}",
        f"AFDP-Digest: sha256:{digest}",
        f"AFDP-Prev: {'sha256:' + prev if prev != 'none' else prev}",
        f"AFDP-Signer: {keyid}",
        f"AFDP-TSA: {tsa_url}",
        f"AFDP-Timestamp: {gen_time}",
    ]
    if imported:
        lines.append(f"AFDP-Imported: {predicate.get('described_time')}")
    return "\n".join(lines) + "\n"


def _sign_and_stamp(
    record: rec.UnsignedRecord,
    signer: AnySigner,
    tsa_urls: Sequence[str],
    timeout: float,
    signer_lock: threading.Lock | None = None,
) -> tuple[dict[str, bytes], str, str, str, str]:
    from afdp.evidence.timestamp import request_timestamp

    payload = canonical_bytes(record.statement)
    files = dict(record.files)
    with signer_lock or contextlib.nullcontext():
        if isinstance(signer, KeylessSigner):
            # Sigstore signs the same canonical statement; its bundle is stored beside
            # the envelope, which carries the very same payload and signature.
            signed = signer.sign_statement(payload)
            keyid, signature = KEYLESS_KEYID, signed.signature
            files[rec.BUNDLE_FILE] = signed.bundle
            label = f"{signer.label} {signed.identity}".strip()
        else:
            keyid = label = signer_keyid(signer)
            signature = sign_bytes(signer, rec.pae(rec.PAYLOAD_TYPE, payload))
    envelope = rec.envelope_json(payload, keyid, signature)
    token = request_timestamp(signature, tsa_urls, timeout=timeout)
    files[rec.ENVELOPE_FILE] = envelope
    files["timestamp-0.tsr"] = token.der
    return files, sha256_hex(envelope), label, token.url, rec.format_time(token.gen_time)


#: The predicate ``context`` key that binds a commit author other than AFDP's.
GIT_AUTHOR_KEY = "git_author"


def git_identity(author: tuple[str, str]) -> str:
    """Return ``Name <email>`` as git writes it in a commit's author header (libgit2
    trims surrounding whitespace from both)."""
    return f"{author[0].strip()} <{author[1].strip()}>"


def with_git_author(record: rec.UnsignedRecord, author: tuple[str, str]) -> rec.UnsignedRecord:
    """Return ``record`` stating its commit's author in the signed predicate's context
    (``context.git_author``) when it is not AFDP's own identity, so that verification
    binds the author of commits no Git signature covers; unchanged otherwise."""
    if git_identity(author) == git_identity(COMMITTER):
        return record
    predicate = record.statement["predicate"]
    context = {**predicate.get("context", {}), GIT_AUTHOR_KEY: git_identity(author)}
    statement = {**record.statement, "predicate": {**predicate, "context": context}}
    return replace(record, statement=statement)


def _commit_signer(
    signer: AnySigner, signer_lock: threading.Lock | None = None
) -> Callable[[bytes], str | None] | None:
    # Git-native signature by the same key (None for schemes SSH cannot express);
    # keyless records have no key: their bundle is the signature.
    if isinstance(signer, KeylessSigner):
        return None
    if signer_lock is None:
        return lambda content: sign_git_commit(signer, content)

    def sign(content: bytes) -> str | None:
        # A signer may not be safe to use from two threads at once (a PKCS#11 session
        # of an HSM is not): batches take turns on it, the waits still overlap.
        with signer_lock:
            return sign_git_commit(signer, content)

    return sign


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
    files, digest, keyid, url, gen_time = _sign_and_stamp(record, signer, tsa_urls, timeout)
    message = _message(record, digest, keyid, url, gen_time)
    commit_id = store.write_commit(
        head, record.directory, files, message, author=author, sign=_commit_signer(signer)
    )
    store.compare_and_swap(
        ref, head.id if head else None, commit_id, f"afdp: record {record.sequence}"
    )
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
    if not tsa_urls:
        raise UsageError("at least one --tsa URL is required: every record is time-stamped")
    check_not_models(service, None)
    store = EvidenceStore(repository)
    ref = branch_ref(service, deployment)
    if store.head(ref) is not None:
        return None
    genesis = _genesis(
        service, deployment, genesis_metadata, workflow_digest, genesis_attachments, imported
    )
    try:
        with store.branch_turn(ref):
            if store.head(ref) is not None:
                return None  # opened meanwhile by the writer whose turn came first
            return _append_once(
                store,
                ref,
                None,
                genesis,
                signer,
                tsa_urls,
                timeout,
                author or ("AFDP", "afdp@evidence.invalid"),
                service,
                deployment,
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
    if not tsa_urls:
        raise UsageError("at least one --tsa URL is required: every record is time-stamped")
    if draft.kind == rec.KIND_GENESIS:
        raise UsageError("genesis records are written automatically")
    check_not_models(service, draft.step if draft.kind == rec.KIND_STEP else None)
    store = EvidenceStore(repository)
    ref = branch_ref(service, deployment)
    who = author or ("AFDP", "afdp@evidence.invalid")
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
            genesis = _genesis(
                service,
                deployment,
                genesis_metadata,
                draft.workflow_digest,
                genesis_attachments,
                draft.imported,
            )
            try:
                written.append(
                    _append_once(
                        store,
                        ref,
                        None,
                        genesis,
                        signer,
                        tsa_urls,
                        timeout,
                        who,
                        service,
                        deployment,
                    )
                )
            except RefMoved:
                _back_off(attempt)  # another writer opened the branch first; append on theirs
            continue
        tail = read_tail(store, head)
        if tail.kind == rec.KIND_SEAL:
            raise PolicyViolation(
                f"{service}/{deployment} is sealed (record {tail.sequence}); no record may follow the seal"
            )
        draft_record = draft
        if draft.kind == rec.KIND_SEAL:
            # A seal describes the branch it closes: imported when the branch is.
            draft_record = replace(_seal_draft(store, head, draft), imported=tail.imported)
        elif draft.imported != tail.imported:
            # One branch tells one story: live records never continue an imported
            # branch, nor imported ones a live branch (nor another described time).
            raise PolicyViolation(
                f"{service}/{deployment} is "
                + (
                    f"imported (describes {rec.format_time(tail.imported.described_time)})"
                    if tail.imported
                    else "a live-captured branch"
                )
                + ": a record "
                + (
                    f"imported for {rec.format_time(draft.imported.described_time)}"
                    if draft.imported
                    else "captured live"
                )
                + " cannot be appended to it"
            )
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


class _Committer:
    """Writes the commits of a batch, in order, on one background thread.

    Record N+1 needs record N's envelope and token digests, never its commit, so the
    Git writes of one record (blobs, trees, a signed commit: mostly file creation) run
    while the next record is built, signed and time-stamped. Jobs run in submission
    order, each on the commit of the one before; after the first failure no job writes
    anything more. Only this thread touches the repository while jobs are pending.
    """

    def __init__(self, store: EvidenceStore, parent: pygit2.Commit | None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._store = store
        self.parent = parent
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="afdp-commit")
        self._jobs: list[Any] = []
        self._failed = False

    def submit(
        self,
        directory: str,
        files: dict[str, bytes],
        message: str,
        author: tuple[str, str],
        sign: Callable[[bytes], str | None] | None,
    ) -> None:
        def job() -> str:
            if self._failed:
                raise StorageError("an earlier commit of this batch failed")
            try:
                commit_id = self._store.write_commit(
                    self.parent, directory, files, message, author=author, sign=sign
                )
                commit = self._store.repo.get(commit_id)
                assert isinstance(commit, pygit2.Commit)
            except BaseException:
                self._failed = True
                raise
            self.parent = commit
            return str(commit_id)

        if self._failed:  # stop signing and time-stamping: this batch will not land
            self.drain()
        self._jobs.append(self._pool.submit(job))

    def drain(self) -> list[str]:
        """Wait for every job; return the commit ids in order, or raise the first error."""
        return [job.result() for job in self._jobs]

    def close(self) -> None:
        self._failed = self._failed or any(not job.done() for job in self._jobs)
        self._pool.shutdown(wait=True)


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
    if not tsa_urls:
        raise UsageError("at least one --tsa URL is required: every record is time-stamped")
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
    who = author or ("AFDP", "afdp@evidence.invalid")
    signer_lock = threading.Lock()
    sign = _commit_signer(signer, signer_lock)
    with store.branch_turn(ref):
        head = store.head(ref)
        todo: list[rec.RecordDraft | None] = list(drafts)
        if head is None:
            todo.insert(0, None)  # the genesis record, built in the loop
            sequence, prev, prev_tokens = 0, None, None
        else:
            tail = read_tail(store, head)
            if tail.kind == rec.KIND_SEAL:
                raise PolicyViolation(
                    f"{service}/{deployment} is sealed (record {tail.sequence}); no record may follow the seal"
                )
            sequence, prev, prev_tokens = tail.sequence + 1, tail.envelope_sha256, tail.timestamps
        committer = _Committer(store, head)
        written: list[tuple[rec.UnsignedRecord, str, str, str]] = []
        try:
            for item in todo:
                if item is None:
                    record = _genesis(
                        service, deployment, genesis_metadata, drafts[0].workflow_digest, genesis_attachments
                    )
                else:
                    if item.kind == rec.KIND_SEAL:
                        # the seal lists every record: it needs the commits written so far
                        committer.drain()
                        assert committer.parent is not None
                        item = _seal_draft(store, committer.parent, item)
                    record = rec.build_record(
                        item,
                        service=service,
                        deployment=deployment,
                        sequence=sequence,
                        prev=prev,
                        prev_timestamps=prev_tokens,
                    )
                record = with_git_author(record, who)
                files, digest, keyid, url, gen_time = _sign_and_stamp(
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
    store = EvidenceStore(repository)
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


def decode_envelope(envelope: bytes) -> dict[str, Any]:
    """Return the statement inside a DSSE envelope (no verification: for display only)."""
    document = json.loads(envelope)
    return json.loads(base64.b64decode(document["payload"]))  # type: ignore[no-any-return]
