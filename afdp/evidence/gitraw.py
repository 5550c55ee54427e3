"""Git objects read byte for byte: trees and commits parsed and checked by AFDP itself.

Tree entries are checked for canonical order, safe names and modes; commit headers
for order, repetition and the identities AFDP writes, without trusting libgit2's
lenient parsers. The verifier and the store read evidence through these functions, so a
hand-crafted object (duplicate or unsorted entries, an unknown mode, an extra or
repeated header) is reported as what it is instead of being silently normalised. Size
limits live in :mod:`afdp.evidence.store`, which reads the raw bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DIR_MODE = b"40000"
FILE_MODE = b"100644"
MODE_NAMES = {
    b"100755": "an executable file",
    b"120000": "a symbolic link",
    b"160000": "a submodule (gitlink)",
}
#: The identity AFDP writes as the committer of every evidence commit.
COMMITTER = ("AFDP", "afdp@evidence.invalid")


class TreeError(ValueError):
    """A raw Git tree is malformed, or is one ``git fsck`` rejects (duplicate or unsorted
    entries, empty or unsafe names)."""


def tree_entries(raw: bytes) -> dict[str, tuple[bytes, bytes]]:
    """Parse raw Git tree bytes into ``{name: (mode, 20-byte id)}``.

    Raises:
        TreeError: the bytes are not whole, sorted, unique tree entries.
    """
    return {name: (mode, oid) for name, mode, oid in parse_tree(raw)}


def sort_key(name: bytes, mode: bytes) -> bytes:
    # git orders tree entries by name, a directory's name compared as if it ended in "/"
    return name + b"/" if mode == DIR_MODE else name


def parse_tree(raw: bytes, after: bytes | None = None) -> list[tuple[str, bytes, bytes]]:
    """Parse raw tree bytes into ``[(name, mode, 20-byte id)]``, checking what git fsck does.

    ``after`` is the sort key of the entry before ``raw`` (when ``raw`` is the tail of a
    tree), so that entries are checked across the boundary too.

    Raises:
        TreeError: truncated entries, duplicate names (git shows the first, a dict keeps
            the last: never let two readers disagree), unsorted entries, unsafe names.
    """
    entries: list[tuple[str, bytes, bytes]] = []
    names: set[bytes] = set()
    last = after
    at, end = 0, len(raw)
    while at < end:
        space = raw.find(b" ", at)
        nul = raw.find(b"\0", space + 1) if space >= 0 else -1
        if space < 0 or nul < 0 or nul + 21 > end:
            raise TreeError("truncated tree entry")
        mode, name = raw[at:space], raw[space + 1 : nul]
        shown = name.decode("utf-8", "surrogateescape")
        if not name or name in (b".", b"..") or b"/" in name or name.lower() == b".git":
            raise TreeError(f"unsafe entry name {shown!r}")
        if name in names:
            raise TreeError(f"duplicate entry {shown!r} (git fsck: duplicateEntries)")
        key = sort_key(name, mode)
        if last is not None and key <= last:
            bare = last.rstrip(b"/")
            if bare == name:
                raise TreeError(f"duplicate entry {shown!r} (git fsck: duplicateEntries)")
            raise TreeError(f"entry {shown!r} is out of order (git fsck: treeNotSorted)")
        names.add(name)
        last = key
        entries.append((shown, mode, raw[nul + 1 : nul + 21]))
        at = nul + 21
    return entries


#: The only commit headers AFDP writes (``gpgsig``: the SSH signature, on branches whose
#: key has an SSH form). Anything else (``encoding``, ``mergetag``, ``gpgsig-sha256``,
#: extra ``x-*`` headers) changes what git shows or is not bound by any check: refused.
COMMIT_HEADERS = ("tree", "parent", "author", "committer", "gpgsig")
IDENTITY = re.compile(rb"(?P<name>[^<>\n]*) <(?P<email>[^<>\n]*)> (?P<time>[0-9]{1,12}) (?P<tz>[+-][0-9]{4})", re.ASCII)


@dataclass(frozen=True)
class RawCommit:
    """A commit object as stored: its headers in order (continuation lines joined) and
    the exact message bytes (what git shows, absent an ``encoding`` header)."""

    headers: tuple[tuple[str, bytes], ...]
    message: bytes

    def text(self) -> str:
        """Return the message for display: UTF-8, undecodable bytes replaced (never raises)."""
        return self.message.decode("utf-8", "replace")

    def author_identity(self) -> str | None:
        """Return the author's ``Name <email>`` (None if the header is malformed)."""
        found = IDENTITY.fullmatch(dict(self.headers).get("author", b""))
        if found is None:
            return None
        return (found.group("name") + b" <" + found.group("email") + b">").decode("utf-8", "replace")

    def author_name(self) -> str:
        """Return the author's name for display (never raises)."""
        value = dict(self.headers).get("author", b"")
        return value.split(b" <", 1)[0].decode("utf-8", "replace")


def parse_commit(raw: bytes) -> RawCommit:
    """Split raw commit bytes into headers and message (never raises: a missing blank
    line means no message)."""
    head, _, message = raw.partition(b"\n\n")
    headers: list[tuple[str, bytes]] = []
    for line in head.split(b"\n"):
        if line.startswith(b" ") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + b"\n" + line[1:])
            continue
        key, _, value = line.partition(b" ")
        headers.append((key.decode("utf-8", "replace"), value))
    return RawCommit(tuple(headers), message)


def commit_header_problems(commit: RawCommit) -> list[str]:
    """Return what in a commit's headers AFDP never writes, one line each (empty: none).

    Bound: the header set (tree, parents, author, committer, at most one gpgsig), the
    committer (exactly AFDP's identity, time zone +0000), the author's time and zone
    (the committer's). The author's name and email are display only (see docs/evidence.md).
    """
    problems = []
    names = [name for name, _ in commit.headers]
    for name in dict.fromkeys(names):
        if name not in COMMIT_HEADERS:
            problems.append(f"commit header {name[:40]!r} is not one AFDP writes (git may show other content)")
    for name in ("tree", "author", "committer"):
        if names.count(name) != 1:
            problems.append(f"commit has {names.count(name)} {name!r} headers; AFDP writes one")
    if names.count("gpgsig") > 1:
        problems.append(f"commit has {names.count('gpgsig')} 'gpgsig' headers; AFDP writes at most one")
    values = dict(commit.headers)
    committer = IDENTITY.fullmatch(values.get("committer", b""))
    author = IDENTITY.fullmatch(values.get("author", b""))
    expected = f"{COMMITTER[0]} <{COMMITTER[1]}>".encode()
    if committer is None or committer.group("name") + b" <" + committer.group("email") + b">" != expected or committer.group("tz") != b"+0000":
        shown = values.get("committer", b"").decode("utf-8", "replace")[:100]
        problems.append(f"committer {shown!r} is not AFDP's ({expected.decode()} <time> +0000)")
    if author is None:
        shown = values.get("author", b"").decode("utf-8", "replace")[:100]
        problems.append(f"author {shown!r} is not 'Name <email> <time> <zone>'")
    elif committer is not None and (author.group("time"), author.group("tz")) != (committer.group("time"), b"+0000"):
        problems.append(
            "author time "
            f"{author.group('time').decode()} {author.group('tz').decode()} differs from the commit time "
            f"{committer.group('time').decode()} +0000: AFDP writes both at once"
        )
    return problems
