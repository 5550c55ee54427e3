"""What a writer asks of the file system: flushes to disk, read from the repository's
own Git setting (``core.fsync``) as Git reads it, and ``flock`` turns on a ref.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pygit2


@dataclass(frozen=True)
class FsyncPolicy:
    """What a writer flushes to disk before it reports a record written."""

    objects: bool = False  # each loose object file (and its folder) before the ref moves
    references: bool = False  # the ref file and its folder after it moved


#: Git's ``core.fsync`` words for what AFDP writes (loose objects and loose refs);
#: the others (pack, index, commit-graph, ...) name files AFDP never writes.
_FSYNC_WORDS = {
    "loose-object": (True, False),
    "objects": (True, False),
    "reference": (False, True),
    "committed": (True, True),
    "added": (True, True),
    "all": (True, True),
}


def fsync_policy(config: pygit2.Config) -> FsyncPolicy:
    """Return what to flush, read from the repository's Git configuration as Git reads
    it: ``core.fsync`` (comma-separated components: ``committed``, ``objects``,
    ``loose-object``, ``reference``, ``added``, ``all``; ``none`` clears; Git's default
    flushes neither loose objects nor refs) and the older ``core.fsyncObjectFiles`` (a
    boolean for loose objects; Git takes the stricter of the two).
    """
    objects = references = False
    try:
        value = config["core.fsync"]
    except (KeyError, pygit2.GitError, ValueError):
        value = None
    if isinstance(value, str):
        for raw in value.split(","):
            word = raw.strip().lower()
            if word == "none":
                objects = references = False
                continue
            # Git: the result is its default without the removed components, plus the
            # added ones (an added component stays even when also removed). Its default
            # flushes neither loose objects nor refs, so only additions count here.
            adds = _FSYNC_WORDS.get(word)
            if adds is not None:  # else a component AFDP never writes, or a removal
                objects, references = objects or adds[0], references or adds[1]
    try:
        # Git takes the stricter of the two settings.
        objects = objects or config.get_bool("core.fsyncObjectFiles")
    except (KeyError, pygit2.GitError, ValueError):
        pass
    return FsyncPolicy(objects, references)


def _fsync_path(path: Path) -> bool:
    """``fsync`` a file or folder by path; False if it does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def _open_lock(directory: Path, ref: str) -> int:
    """Open the file of AFDP's ``flock`` on ``ref`` under ``directory`` for reading and
    writing, creating it (and the folder, only when it is missing) as needed; return
    its descriptor. One ``open`` per turn once the file exists: a writer appends many
    records, and each used to pay a ``mkdir`` and a ``stat`` of the folder first.
    """
    path = directory / (hashlib.sha256(ref.encode()).hexdigest()[:32] + ".lock")
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o666)
    except FileNotFoundError:
        directory.mkdir(parents=True, exist_ok=True)
        return os.open(path, flags, 0o666)


def _flock_by(fd: int, deadline: float, *, pause: float, longest: float) -> bool:
    """Take an exclusive ``flock`` on ``fd``, polling with growing pauses (``pause``
    doubling up to ``longest``) until ``deadline``; False if it was still held then."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, longest)
