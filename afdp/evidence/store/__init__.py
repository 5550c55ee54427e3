"""The evidence repository: pygit2 only, bare or not, no work tree needed.

Writes build blobs, trees and a commit first and move the branch last, with a
compare-and-swap inside a libgit2 reference transaction (lock, re-read, compare, set):
a concurrent writer that lost the race sees :class:`RefMoved` and retries on the new
head; nothing is ever force-moved, and a crash before the ref update leaves only
unreachable objects behind, so the branch stays at its last complete record.

The package, by concern: :mod:`.read` (heads, history, what a commit added; every
object size-capped before it is read), :mod:`.write` (:class:`EvidenceStore`: objects
first, the ref last, under the writer lock and the branch turn) and :mod:`.disk`
(flushes as ``core.fsync`` asks, ``flock`` turns). The write path extends the read
path, so both use the same caps and raw readers. The byte-level parsers are in
:mod:`afdp.evidence.gitraw`.
"""

from __future__ import annotations

from afdp.errors import StorageError
from afdp.evidence.gitraw import COMMITTER
from afdp.evidence.store.disk import FsyncPolicy, fsync_policy
from afdp.evidence.store.read import (
    MAX_COMMIT_BYTES,
    MAX_COMMIT_FILES_BYTES,
    MAX_ENVELOPE_BYTES,
    MAX_FILE_BYTES,
    MAX_TREE_BYTES,
    BranchTargetError,
    CommitFiles,
    ObjectError,
    StoreReader,
    common_dir,
)
from afdp.evidence.store.write import (
    LOCK_WAIT,
    TURN_WAIT,
    EvidenceStore,
    PreparedCommit,
    RefMoved,
    init_repository,
    writer_store,
)

__all__ = [
    "COMMITTER",
    "LOCK_WAIT",
    "MAX_COMMIT_BYTES",
    "MAX_COMMIT_FILES_BYTES",
    "MAX_ENVELOPE_BYTES",
    "MAX_FILE_BYTES",
    "MAX_TREE_BYTES",
    "TURN_WAIT",
    "BranchTargetError",
    "CommitFiles",
    "EvidenceStore",
    "FsyncPolicy",
    "ObjectError",
    "PreparedCommit",
    "RefMoved",
    "StorageError",
    "StoreReader",
    "common_dir",
    "fsync_policy",
    "init_repository",
    "writer_store",
]
