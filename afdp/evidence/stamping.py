"""Signing and time-stamping one record: its DSSE envelope, its RFC 3161 token, and
the record's blobs written while the TSA is asked for that token.

:func:`sign_record` signs the canonical statement (a key through securesystemslib, or
keyless through Sigstore); :func:`stamp_while_preparing` asks the TSAs for a token over
the signature while a helper thread writes the envelope and the record's other files
and reads the trees the commit extends (:meth:`EvidenceStore.prepare_commit`), so that
only the token, the trees that hold it and the commit wait for the TSA's answer.
:mod:`afdp.evidence.ledger` commits what these return.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pygit2

from afdp.evidence import records as rec
from afdp.evidence.canonical import sha256_hex
from afdp.evidence.keyless import KEYLESS_KEYID, KeylessSigner
from afdp.evidence.perprocess import PerProcess
from afdp.evidence.signing import AnySigner, sign_bytes, signer_keyid
from afdp.evidence.store import EvidenceStore, PreparedCommit

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    from afdp.evidence.timestamp import TimestampToken

__all__ = ["TOKEN_FILE", "sign_and_stamp", "sign_record", "stamp", "stamp_while_preparing"]


def sign_record(
    record: rec.UnsignedRecord,
    signer: AnySigner,
    signer_lock: threading.Lock | None = None,
) -> tuple[dict[str, bytes], bytes, str, str]:
    """Sign ``record``; return its files so far (the envelope, a keyless bundle, the
    record's own files), the signature, the envelope's digest and the signer label."""
    payload = record.payload
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
    files[rec.ENVELOPE_FILE] = envelope
    return files, signature, sha256_hex(envelope), label


def stamp(signature: bytes, tsa_urls: Sequence[str], timeout: float) -> TimestampToken:
    """Return the first valid token over ``signature`` from ``tsa_urls`` (in order).

    Raises:
        TimestampError: no TSA gave a valid token.
    """
    from afdp.evidence.timestamp import request_timestamp

    return request_timestamp(signature, tsa_urls, timeout=timeout)


def sign_and_stamp(
    record: rec.UnsignedRecord,
    signer: AnySigner,
    tsa_urls: Sequence[str],
    timeout: float,
    signer_lock: threading.Lock | None = None,
) -> tuple[dict[str, bytes], str, str, str, str]:
    """Sign and time-stamp ``record`` (a batch's records, whose Git writes overlap the
    next record's signing instead); return its files with the token, the envelope's
    digest, the signer label, the TSA URL and the token's time (``format_time``).

    Raises:
        SigningError / TimestampError: nothing was written.
    """
    files, signature, digest, label = sign_record(record, signer, signer_lock)
    token = stamp(signature, tsa_urls, timeout)
    files[TOKEN_FILE] = token.der
    return files, digest, label, token.url, rec.format_time(token.gen_time)


#: The one token a record gets when it is written (``afdp timestamp`` may add more).
TOKEN_FILE = "timestamp-0.tsr"


def _new_helpers() -> ThreadPoolExecutor:
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=4, thread_name_prefix="afdp-prepare")


#: The threads that write a record's blobs while its time-stamp is requested (started on
#: first use: verification never needs them; a forked child starts its own).
_helpers = PerProcess(_new_helpers)


def _helper() -> ThreadPoolExecutor:
    return _helpers.get()


def stamp_while_preparing(
    store: EvidenceStore,
    head: pygit2.Commit | None,
    record: rec.UnsignedRecord,
    files: dict[str, bytes],
    signature: bytes,
    tsa_urls: Sequence[str],
    timeout: float,
) -> tuple[TimestampToken, PreparedCommit]:
    """Ask the TSAs for ``signature``'s token while a helper thread writes ``files`` (the
    envelope and the record's other files) and reads the trees the commit will extend.

    The token is asked for on this thread: while it waits on the network, the helper
    holds the interpreter lock (pygit2 keeps it during its writes), and neither waits
    for the other's work. When the first TSA is served by this very process (the
    embedded TSA on a thread), its answer needs that same lock: the blobs are then
    written first, on this thread. Returns only when both are done, so the store is
    never used by two threads at once.

    Raises:
        TimestampError: no TSA gave a token (the blobs written are unreachable garbage).
        StorageError: the blobs or trees could not be written or read.
    """
    from afdp.evidence.timestamp.request import served_here

    if served_here(tsa_urls[0]):
        # The TSA answers from a thread of this process: its work needs the interpreter
        # lock the helper would hold, so overlapping would only add the hand-over.
        prepared_here = store.prepare_commit(head, record.directory, files)
        return stamp(signature, tsa_urls, timeout), prepared_here
    prepared = _helper().submit(store.prepare_commit, head, record.directory, files)
    try:
        token = stamp(signature, tsa_urls, timeout)
    except BaseException:
        from concurrent.futures import wait

        wait([prepared])
        raise
    return token, prepared.result()
