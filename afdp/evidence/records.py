"""Evidence records: in-toto Statement v1 inside a DSSE envelope, and their tree layout.

A record is one directory on the deployment's branch::

    records/<shard>/<sequence>-<step>/
        envelope.json     DSSE envelope, RFC 8785 canonical bytes (sha256 of the file is
                          the record digest that the next record's ``prev`` cites)
        timestamp-0.tsr   RFC3161 TimeStampResp (DER) over sha256(decoded signature)
        bundle.sigstore.json  keyless records only: the Sigstore bundle (afdp.evidence.keyless)
        result.json       only when the result is too large to inline: its canonical bytes
        <attachment>      further raw files (metric series, ...) listed in the predicate

``shard`` is ``sequence // 1000`` (3 digits), so no tree ever holds more than 1,000
entries and appending a record rewrites a constant number of trees.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from afdp.errors import UsageError
from afdp.evidence.canonical import canonical_bytes, sha256_hex
from afdp.evidence.names import check_name

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
PREDICATE_BASE = "https://afdp.dev/evidence"
KIND_GENESIS = "genesis"
KIND_STEP = "step"
KIND_SEAL = "seal"
PREDICATE_TYPES = {
    kind: f"{PREDICATE_BASE}/{kind}/v1" for kind in (KIND_GENESIS, KIND_STEP, KIND_SEAL)
}
KIND_OF_PREDICATE = {uri: kind for kind, uri in PREDICATE_TYPES.items()}
STATUSES = ("ok", "failed", "skipped")

RECORDS_DIR = "records"
ENVELOPE_FILE = "envelope.json"
RESULT_FILE = "result.json"
#: Keyless (Sigstore) records only: the Sigstore bundle v0.3 carrying the same envelope.
BUNDLE_FILE = "bundle.sigstore.json"
#: ASCII digits only, no leading zeros (``\d`` would accept Arabic-Indic and other digits
#: that ``int()`` reads as numbers): one name per token number. A record holds exactly
#: ``timestamp-0.tsr`` .. ``timestamp-<N-1>.tsr`` (see :func:`token_names_problem`).
TIMESTAMP_FILE = re.compile(r"timestamp-(0|[1-9][0-9]{0,5})\.tsr", re.ASCII)
RECORD_DIR = re.compile(r"([0-9]{6,})-([A-Za-z0-9][A-Za-z0-9._-]{0,99})", re.ASCII)
SHARD_SIZE = 1000

#: Results whose canonical form is larger than this are stored as ``result.json``
#: beside the envelope and referenced by digest, keeping envelopes small to verify.
INLINE_RESULT_LIMIT = 64 * 1024
_ATTACHMENT_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}", re.ASCII)
_RESERVED = {ENVELOPE_FILE, RESULT_FILE, BUNDLE_FILE}


def token_names_problem(names: Iterable[str]) -> str | None:
    """Return why ``names`` (a record's ``timestamp-<n>.tsr`` files) are not exactly
    ``timestamp-0.tsr`` .. ``timestamp-<N-1>.tsr``, or None if they are (or are none)."""
    numbers = sorted(int(m.group(1)) for n in names if (m := TIMESTAMP_FILE.fullmatch(n)))
    if numbers and numbers != list(range(len(numbers))):
        return (
            f"time-stamp tokens are numbered {', '.join(map(str, numbers))}: "
            f"a record holds timestamp-0.tsr .. timestamp-{len(numbers) - 1}.tsr"
        )
    return None


#: A container image by digest: ``[NAME[:TAG]@]sha256:<64 hex>`` (NAME as OCI references
#: spell it, lowercase).
IMAGE_REFERENCE = re.compile(
    r"(?:(?P<reference>[a-z0-9][A-Za-z0-9._/:-]{0,254})@)?sha256:(?P<digest>[0-9a-f]{64})", re.ASCII
)
#: A full Git commit id (SHA-1, or SHA-256 for SHA-256 repositories), lowercase hex.
GIT_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}", re.ASCII)
#: The key of a record's ``context`` naming the deployed artifact (decision records).
DEPLOYED_ARTIFACT = "deployed_artifact"


def parse_image(text: str) -> tuple[str | None, str]:
    """Return ``(name without tag, sha256 hex)`` of an image reference by digest.

    Raises:
        UsageError: ``text`` is not ``[NAME[:TAG]@]sha256:<64 lowercase hex>``.
    """
    match = IMAGE_REFERENCE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise UsageError(
            f"image {text!r} must name a digest: NAME@sha256:<64 hex> (or sha256:<64 hex>)"
        )
    reference = match.group("reference")
    if reference is None:
        return None, match.group("digest")
    head, _, last = reference.rpartition("/")
    # a tag (":v2" after the last "/") is not part of the name; a registry port is
    name = f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]
    if not name or name.endswith("/"):
        raise UsageError(f"image {text!r} has no name before its tag")
    return name, match.group("digest")


def artifact_subjects(artifact: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Return the in-toto subjects of a deployed artifact (``{"image", "commit"}``).

    The image by digest becomes ``{"name": NAME, "digest": {"sha256": HEX}}`` (no
    ``name`` when only the digest is known), a full commit id ``{"digest":
    {"gitCommit": HEX}}``: the descriptors policy engines and admission controllers
    look attestations up by.

    Raises:
        UsageError: ``artifact`` is not an object of an image by digest and/or a full
            commit id, or names anything else.
    """
    if artifact is None:
        return []
    if not isinstance(artifact, Mapping) or not artifact or set(artifact) - {"image", "commit"}:
        raise UsageError(f"{DEPLOYED_ARTIFACT} must be an object with image and/or commit, not {artifact!r}")
    subjects: list[dict[str, Any]] = []
    if "image" in artifact:
        name, digest = parse_image(artifact["image"])
        subjects.append({**({"name": name} if name else {}), "digest": {"sha256": digest}})
    if "commit" in artifact:
        commit = artifact["commit"]
        if not isinstance(commit, str) or not GIT_COMMIT.fullmatch(commit):
            raise UsageError(f"deployed commit {commit!r} is not a full lowercase Git commit id")
        subjects.append({"digest": {"gitCommit": commit}})
    return subjects


def utc_now() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """Return RFC 3339 UTC with milliseconds, e.g. ``2026-11-22T09:01:56.819Z``."""
    if moment.tzinfo is None:
        raise UsageError("times must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 time written by :func:`format_time` (or with an offset)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def shard_of(sequence: int) -> str:
    return f"{sequence // SHARD_SIZE:03d}"


def record_dir(sequence: int, step: str) -> str:
    """Return ``records/<shard>/<sequence>-<step>`` for a record."""
    return f"{RECORDS_DIR}/{shard_of(sequence)}/{sequence:06d}-{step}"


@dataclass(frozen=True)
class Imported:
    """The marker of a record imported from history (``afdp import``).

    Such a record describes a past deployment whose time is ``described_time``; its
    signed ``started_at``/``finished_at`` and its RFC3161 tokens are when it was written
    (at import), never the described past. Written into the signed predicate as
    ``"imported": true`` and ``"described_time"``, so it cannot be taken off a record.
    """

    described_time: datetime

    def __post_init__(self) -> None:
        # Held as written (UTC, milliseconds), so a marker read back compares equal.
        object.__setattr__(self, "described_time", parse_time(format_time(self.described_time)))

    def to_predicate(self) -> dict[str, Any]:
        return {"imported": True, "described_time": format_time(self.described_time)}


def imported_of(predicate: Mapping[str, Any]) -> Imported | None:
    """Return the import marker of a (decoded) predicate, or None for a live record.

    Raises:
        ValueError: ``described_time`` is not an RFC 3339 time.
    """
    if predicate.get("imported") is not True:
        return None
    return Imported(parse_time(str(predicate.get("described_time"))))


@dataclass(frozen=True)
class RecordDraft:
    """What a caller supplies for one record, before chaining, signing and time-stamping."""

    kind: str
    step: str
    result: Any
    status: str = "ok"
    index: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)
    workflow_digest: str | None = None
    summary: str | None = None
    error: str | None = None
    attachments: Mapping[str, bytes] = field(default_factory=dict)
    #: Set on every record ``afdp import`` writes (see :class:`Imported`).
    imported: Imported | None = None

    def __post_init__(self) -> None:
        if self.kind not in PREDICATE_TYPES:
            raise UsageError(f"unknown record kind {self.kind!r}")
        check_name(self.step, what="step")
        if self.status not in STATUSES:
            raise UsageError(f"invalid status {self.status!r}: use one of {', '.join(STATUSES)}")
        for name in self.attachments:
            if (
                not _ATTACHMENT_NAME.fullmatch(name)
                or name in _RESERVED
                or TIMESTAMP_FILE.fullmatch(name)
            ):
                raise UsageError(f"invalid attachment name {name!r}")
        if self.workflow_digest is not None and not re.fullmatch(
            r"[0-9a-f]{64}", self.workflow_digest, re.ASCII
        ):
            raise UsageError("workflow digest must be 64 lowercase hex characters (sha256)")


@dataclass(frozen=True)
class UnsignedRecord:
    """A chained statement and the extra files it references, ready to sign."""

    sequence: int
    step: str
    kind: str
    statement: dict[str, Any]
    files: dict[str, bytes]

    @property
    def directory(self) -> str:
        return record_dir(self.sequence, self.step)

    @cached_property
    def payload(self) -> bytes:
        """The statement's canonical bytes (RFC 8785): what is signed. Computed once per
        record (a changed statement is a new record: ``dataclasses.replace``).

        Raises:
            UsageError: the statement cannot be canonicalized.
        """
        return canonical_bytes(self.statement)


def build_record(
    draft: RecordDraft,
    *,
    service: str,
    deployment: str,
    sequence: int,
    prev: str | None,
    prev_timestamps: Mapping[str, str] | None = None,
) -> UnsignedRecord:
    """Return the in-toto statement for ``draft`` at position ``sequence`` after ``prev``.

    ``prev`` is the hex SHA-256 of the previous record's envelope (None for genesis);
    ``prev_timestamps`` maps each time-stamp token file of the previous record
    (``timestamp-<n>.tsr``) to the hex SHA-256 of its bytes: the record binds them, so
    no token can be added to or swapped in the previous record afterwards.

    Raises:
        UsageError: the result cannot be canonicalized, the chain position is wrong
            for the kind (a genesis must be first; nothing else may be), or a record
            after genesis names no time-stamp token of its predecessor.
    """
    if (draft.kind == KIND_GENESIS) != (prev is None) or (draft.kind == KIND_GENESIS) != (
        sequence == 0
    ):
        raise UsageError(f"a {draft.kind} record cannot stand at position {sequence}")
    if prev is not None and not prev_timestamps:
        raise UsageError("a record after genesis must cite the previous record's time-stamp tokens")
    for name, digest in (prev_timestamps or {}).items():
        if not TIMESTAMP_FILE.fullmatch(name) or not re.fullmatch(r"[0-9a-f]{64}", digest, re.ASCII):
            raise UsageError(f"invalid time-stamp token citation {name!r}: {digest!r}")
    result_bytes = canonical_bytes(draft.result)
    result_digest = sha256_hex(result_bytes)
    files: dict[str, bytes] = {}
    predicate: dict[str, Any] = {
        "service": service,
        "deployment": deployment,
        "sequence": sequence,
        "step": {"name": draft.step, "index": sequence if draft.index is None else draft.index},
        "status": draft.status,
        "started_at": format_time(draft.started_at or utc_now()),
        "finished_at": format_time(draft.finished_at or utc_now()),
        "summary": draft.summary or _default_summary(draft),
        "error": draft.error,
        "provenance": dict(draft.provenance),
        "context": dict(draft.context),
        "workflow": {"sha256": draft.workflow_digest} if draft.workflow_digest else None,
        "prev": {"sha256": prev} if prev else None,
        "prev_timestamps": (
            [{"path": n, "sha256": prev_timestamps[n]} for n in sorted(prev_timestamps)]
            if prev is not None and prev_timestamps
            else None
        ),
        "artifacts": [],
    }
    if draft.imported is not None:
        predicate.update(draft.imported.to_predicate())
    if len(result_bytes) > INLINE_RESULT_LIMIT:
        files[RESULT_FILE] = result_bytes
        predicate["result"] = None
        predicate["result_ref"] = {
            "path": RESULT_FILE,
            "sha256": result_digest,
            "size": len(result_bytes),
        }
    else:
        predicate["result"] = draft.result
        predicate["result_ref"] = None
    for name in sorted(draft.attachments):
        data = draft.attachments[name]
        files[name] = data
        predicate["artifacts"].append({"path": name, "sha256": sha256_hex(data), "size": len(data)})
    statement = {
        "_type": STATEMENT_TYPE,
        # subject[0] is the record itself; a decision record's further subjects are the
        # deployed artifact its context names (see artifact_subjects)
        "subject": [
            {
                "name": f"afdp:{service}/{deployment}/{sequence:06d}-{draft.step}",
                "digest": {"sha256": result_digest},
            },
            *artifact_subjects(draft.context.get(DEPLOYED_ARTIFACT)),
        ],
        "predicateType": PREDICATE_TYPES[draft.kind],
        "predicate": predicate,
    }
    record = UnsignedRecord(sequence, draft.step, draft.kind, statement, files)
    # Fails early (before signing) if anything in provenance/context is not canonical
    # JSON; the bytes are kept for signing.
    record.payload  # noqa: B018
    return record


def _default_summary(draft: RecordDraft) -> str:
    if draft.kind == KIND_GENESIS:
        return "deployment evidence opened"
    if draft.kind == KIND_SEAL:
        return "evidence sealed"
    if isinstance(draft.result, Mapping):
        return f"{draft.status}, {len(draft.result)} result fields"
    return draft.status


def pae(payload_type: str, payload: bytes) -> bytes:
    """Return the DSSE v1 pre-authentication encoding of a payload."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def envelope_json(payload: bytes, keyid: str, signature: bytes) -> bytes:
    """Return the canonical bytes of a one-signature DSSE envelope."""
    return canonical_bytes(
        {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"keyid": keyid, "sig": base64.b64encode(signature).decode()}],
        }
    )


def seal_result(entries: list[tuple[int, str, str]]) -> dict[str, Any]:
    """Return the seal's result: every record before it, as (sequence, step, envelope sha256)."""
    return {
        "count": len(entries),
        "records": [{"sequence": s, "step": step, "sha256": d} for s, step, d in entries],
    }


#: The keys one line of a batch file may hold (see :func:`batch_drafts`).
BATCH_KEYS = frozenset({"step", "result", "status", "summary", "error", "index", "workflow_digest"})


def batch_drafts(text: str, *, source: str, workflow_digest: str | None = None) -> list[RecordDraft]:
    """Return the step drafts of a batch file: JSON Lines, one object per record.

    Each line holds ``step`` and ``result`` (a JSON object), and optionally ``status``,
    ``summary``, ``error``, ``index`` and ``workflow_digest`` (default: the given one),
    as ``afdp record`` takes them one at a time. Blank lines are skipped. Every line is
    checked before anything is written.

    Raises:
        UsageError: naming ``source`` and the line: not JSON, not an object, an unknown
            or missing key, a value of the wrong type, or an invalid draft; or no record.
    """
    from afdp.evidence.jsondata import load_json

    drafts: list[RecordDraft] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{source} line {number}"
        try:
            item = load_json(line)
        except ValueError as exc:
            raise UsageError(f"{where} is not valid JSON: {exc}") from None
        if not isinstance(item, dict):
            raise UsageError(f"{where} must be a JSON object, not {type(item).__name__}")
        unknown = sorted(set(item) - BATCH_KEYS)
        if unknown:
            raise UsageError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}")
        for key in ("step", "result"):
            if key not in item:
                raise UsageError(f"{where}: {key!r} is required")
        if not isinstance(item["result"], dict):
            raise UsageError(f"{where}: 'result' must be a JSON object")
        try:
            canonical_bytes(item["result"])  # NaN, Infinity, huge integers: refused now
        except UsageError as exc:
            raise UsageError(f"{where}: {exc}") from exc
        for key in ("step", "status", "summary", "error", "workflow_digest"):
            if key in item and item[key] is not None and not isinstance(item[key], str):
                raise UsageError(f"{where}: {key!r} must be a string")
        index = item.get("index")
        if index is not None and (type(index) is not int or index < 0):
            raise UsageError(f"{where}: 'index' must be a non-negative integer")
        try:
            drafts.append(
                RecordDraft(
                    kind=KIND_STEP,
                    step=item["step"],
                    result=item["result"],
                    status=item.get("status") or "ok",
                    index=index,
                    summary=item.get("summary"),
                    error=item.get("error"),
                    workflow_digest=item.get("workflow_digest", workflow_digest),
                )
            )
        except UsageError as exc:
            raise UsageError(f"{where}: {exc}") from exc
    if not drafts:
        raise UsageError(f"{source} holds no record")
    return drafts
