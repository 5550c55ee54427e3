"""What one record's checks read and establish: :class:`RecordInput` (a record directory
as read from its commit) and :class:`RecordFacts` (filled in by the checks of
:mod:`afdp.verify.checks`), and the depth-bounded JSON reading they use on
attacker-written bytes.
"""

from __future__ import annotations

import contextlib
import json
import re
from array import array
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "MAX_JSON_DEPTH",
    "Digests",
    "SealList",
    "RecordFacts",
    "RecordInput",
    "Stop",
    "json_depth_exceeds",
    "load_json",
]

#: JSON deeper than this (arrays and objects) is refused before parsing: no AFDP document
#: comes close, and deep nesting exhausts the recursion of parsers and validators.
MAX_JSON_DEPTH = 64
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"')
_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


def json_depth_exceeds(data: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Return True if ``data`` nests arrays/objects deeper than ``limit`` (strings ignored).

    A cheap scan (the string removal is one regular-expression pass): it runs before
    ``json.loads`` on every attacker-written JSON file.
    """
    if data.count(b"[") + data.count(b"{") <= limit:
        return False  # cannot nest deeper than it has brackets (the common case: instant)
    depth = 0
    for char in _JSON_STRING.sub(b"", data).translate(None, _BRACKETS):
        if char in b"[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def load_json(data: bytes, what: str) -> Any:
    """Parse attacker-written JSON bytes.

    Raises:
        ValueError: not JSON, or nested deeper than ``MAX_JSON_DEPTH``.
    """
    if json_depth_exceeds(data):
        raise ValueError(f"{what} nests deeper than {MAX_JSON_DEPTH} levels; refused unparsed")
    try:
        return json.loads(data)
    except RecursionError as exc:  # defence in depth: the scan above should prevent it
        raise ValueError(f"{what} nests too deeply") from exc


class Digests:
    """(step, envelope SHA-256 hex or None) per record, in order, in about 40 bytes a record."""

    def __init__(self) -> None:
        self.steps: list[str | None] = []
        self._raw = bytearray()  # 32 bytes per record (zeros where there is no digest)
        self._odd: dict[int, str | None] = {}  # digests that are not 64 lowercase hex, as they are

    def __len__(self) -> int:
        return len(self.steps)

    def append(self, step: str | None, digest: str | None) -> None:
        raw = None
        if digest is not None and len(digest) == 64:
            with contextlib.suppress(ValueError):
                raw = bytes.fromhex(digest)
        if raw is None or raw.hex() != digest:
            self._odd[len(self.steps)] = digest
            raw = bytes(32)
        self.steps.append(step)
        self._raw += raw

    def __getitem__(self, index: int) -> tuple[str | None, str | None]:
        digest = self._odd[index] if index in self._odd else self._raw[index * 32 : index * 32 + 32].hex()
        return self.steps[index], digest


class SealList:
    """The records a seal lists, each ``(sequence, step, sha256)``, in about 50 bytes a
    record (a list of dicts parsed from JSON is about 390): what a worker hands the main
    process for check 14. Entries were checked to be {sequence: int, step: str, sha256: str}."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self._sequences = array("q")
        self._big: dict[int, int] = {}  # sequences beyond 64 bits, as they are
        self._pairs = Digests()
        names: dict[str, str] = {}
        for index, entry in enumerate(entries):
            sequence, step = entry["sequence"], entry["step"]
            if -(2**63) <= sequence < 2**63:
                self._sequences.append(sequence)
            else:
                self._big[index] = sequence
                self._sequences.append(0)
            self._pairs.append(names.setdefault(step, step), entry["sha256"])

    def __len__(self) -> int:
        return len(self._sequences)

    def __getitem__(self, index: int) -> tuple[int, str | None, str | None]:
        sequence = self._big[index] if index in self._big else self._sequences[index]
        return (sequence, *self._pairs[index])


@dataclass(frozen=True)
class RecordInput:
    """One record directory as read from a commit (position is its place on the branch)."""

    position: int
    directory: str
    files: dict[str, bytes]
    service: str
    deployment: str
    commit_signature: bytes | None = None  # git's gpgsig header, if any
    commit_payload: bytes | None = None  # the commit object without that header
    commit_message: str | None = None  # None: the message is not checked (tests only)
    commit_author: str | None = None  # the author's "Name <email>"; None: not checked


@dataclass
class RecordFacts:
    """What a record's own checks established (filled even when some checks fail)."""

    position: int
    directory: str
    sequence: int | None = None
    step: str | None = None
    kind: str | None = None
    status: str | None = None
    summary: str | None = None
    envelope_sha256: str | None = None
    prev: str | None = None
    signer: str | None = None
    keyid: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    timestamps: list[tuple[str, str]] = field(default_factory=list)  # (gen_time iso, tsa name)
    seal_entries: SealList | list[dict[str, Any]] | None = None  # lists: tests' synthetic facts
    failures: list[tuple[str, str]] = field(default_factory=list)  # (check, reason)
    token_files: dict[str, str] = field(default_factory=dict)  # every .tsr -> sha256 of its bytes
    token_times: dict[str, datetime] = field(default_factory=dict)  # valid .tsr -> genTime
    prev_timestamps: dict[str, str] | None = None  # what the record cites of its predecessor
    tsa_url: str | None = None  # the AFDP-TSA trailer (no signature covers it)
    keyless_identity: str | None = None  # the verified certificate identity (keyless)
    described_time: str | None = None  # imported records only (afdp import): the past they describe
    stage: str = "layout"  # the check running (names an unexpected error)

    def fail(self, check: str, reason: str) -> None:
        self.failures.append((check, reason))


class Stop(Exception):
    """Internal: later checks cannot run once an earlier one has failed."""
