"""The commit that carries a record: its message and ``AFDP-*`` trailers, its author,
and reading a branch's last record back from its head.

:func:`commit_message` is a function of the signed record, so verification regenerates
it and compares (check 11); :func:`read_tail` is what a writer needs of the branch it
appends to (read, not verified); :func:`commit_signer` signs the commit with the
record's key. :mod:`afdp.evidence.ledger` writes with these.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import pygit2

from afdp.errors import StorageError
from afdp.evidence import records as rec
from afdp.evidence.canonical import sha256_hex
from afdp.evidence.gitraw import COMMITTER
from afdp.evidence.keyless import KeylessSigner
from afdp.evidence.signing import AnySigner
from afdp.evidence.sshsig import sign_git_commit

if TYPE_CHECKING:
    from afdp.evidence.store import EvidenceStore


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

    What a store learnt of a head (read here, or written by this process: see
    :func:`remember_tail`) is kept by commit id: a commit id names the commit's content
    and, through its tree, every byte of the record, so the same id always has the same
    tail.

    Raises:
        StorageError: the head is not an AFDP record commit, or its trailers disagree
            with the record it carries (the branch was altered; run ``afdp verify``).
    """
    known = store.tails.get(head.id)
    if known is not None:
        sequence, step, kind, digest, tokens, imported = known
        return BranchTail(head, sequence, step, kind, digest, dict(tokens), imported)
    tail = _read_tail(store, head)
    store.tails[head.id] = _facts(tail)
    return tail


def remember_tail(
    store: EvidenceStore,
    commit_id: pygit2.Oid,
    record: rec.UnsignedRecord,
    envelope_sha256: str,
    timestamps: dict[str, str],
) -> None:
    """Record the tail that ``commit_id`` holds: ``record``, with its envelope digest and
    token digests, just committed and put at the head of its branch by this writer, so
    that its next append need not read the record back."""
    imported = rec.imported_of(record.statement["predicate"])
    store.tails[commit_id] = (
        record.sequence, record.step, record.kind, envelope_sha256, dict(timestamps), imported
    )


def _facts(tail: BranchTail) -> tuple[int, str, str, str, dict[str, str], rec.Imported | None]:
    return (tail.sequence, tail.step, tail.kind, tail.envelope_sha256, dict(tail.timestamps), tail.imported)


def _read_tail(store: EvidenceStore, head: pygit2.Commit) -> BranchTail:
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


def decode_envelope(envelope: bytes) -> dict[str, Any]:
    """Return the statement inside a DSSE envelope (no verification: for display only).

    Raises:
        ValueError (json.JSONDecodeError, binascii.Error included): not an envelope's
            JSON, or nested past Python's recursion limit (an unverified record is
            anyone's bytes: every caller treats a ValueError as "not an AFDP record").
        KeyError, TypeError: JSON of another shape.
    """
    try:
        document = json.loads(envelope)
        return json.loads(base64.b64decode(document["payload"]))  # type: ignore[no-any-return]
    except RecursionError:
        raise ValueError("envelope JSON nested too deeply to read") from None


def commit_signer(
    signer: AnySigner, signer_lock: threading.Lock | None = None
) -> Callable[[bytes], str | None] | None:
    """Return what signs a record's commit (an armored SSH signature, git's ``gpgsig``):
    the record's own key, or None for keyless records (their bundle is the signature);
    with ``signer_lock``, one thread at a time uses the signer.

    The signature is Git-native by the same key (the function may return None for
    schemes SSH cannot express: the commit is then unsigned).
    """
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
