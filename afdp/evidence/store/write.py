"""Writing an evidence repository: objects first, the branch last, by compare-and-swap.

:class:`EvidenceStore` adds the write path to :class:`~afdp.evidence.store.read.StoreReader`:
blobs, trees and a commit, then the ref moved inside a libgit2 reference transaction
(lock, re-read, compare, set) under AFDP's writer lock, with the objects flushed first
when the repository asks for it (:mod:`.disk`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2

from afdp.errors import StorageError, UsageError
from afdp.evidence.gitraw import COMMITTER, DIR_MODE, sort_key
from afdp.evidence.store.disk import FsyncPolicy, _flock_by, _fsync_path, _open_lock, fsync_policy
from afdp.evidence.store.read import StoreReader, common_dir

_TREE = pygit2.enums.FileMode.TREE
_BLOB = pygit2.enums.FileMode.BLOB

#: How long a writer waits for another writer's ref lock before reporting "locked".
LOCK_WAIT = 5.0
#: How long a writer waits for its turn on a branch (see EvidenceStore.branch_turn):
#: long enough for the writers ahead of it to sign and time-stamp, each within its
#: TSA deadline.
TURN_WAIT = 120.0


@dataclass(frozen=True)
class PreparedCommit:
    """A commit begun by :meth:`EvidenceStore.prepare_commit`: the blobs written so
    far and the tree builders on the path to the new directory (outermost first)."""

    parent_id: pygit2.Oid | None
    directory: str
    blobs: dict[str, pygit2.Oid]
    path: list[tuple[pygit2.TreeBuilder | _AppendedTree, str]]


class _AppendedTree:
    """A tree that gains one directory whose name sorts after every entry it has: its
    raw bytes with the new entry appended, which is the tree Git (and libgit2's
    TreeBuilder) writes, entries being in Git's order.

    A record's shard holds up to 1,000 records: reading it (libgit2 checks its hash on
    every read) and a TreeBuilder of it (which parses, sorts and re-encodes every
    entry) cost about 1 ms per record for a full shard here; this appends some 30 bytes
    to the bytes the store kept from writing the shard for the record before.
    ``tests/test_ledger_overlap.py`` checks that both give the same tree id.
    """

    def __init__(self, store: EvidenceStore, raw: bytes) -> None:
        self._store = store
        self._raw = raw
        self._key = b""

    def insert(self, name: str, oid: pygit2.Oid, mode: int) -> None:
        if mode != _TREE or "/" in name or "\0" in name or name.lower() in ("", ".", "..", ".git"):
            raise StorageError(f"{name} cannot be appended to an evidence tree")
        encoded = name.encode("utf-8")
        self._raw += DIR_MODE + b" " + encoded + b"\0" + oid.raw
        self._key = sort_key(encoded, DIR_MODE)

    def write(self) -> pygit2.Oid:
        oid = self._store.repo.odb.write(pygit2.enums.ObjectType.TREE, self._raw)
        self._store._remember_tree(oid, self._raw, self._key)
        return oid


class RefMoved(StorageError):
    """The branch moved between reading its head and updating it (lost a race)."""


def init_repository(path: Path, *, bare: bool = False) -> tuple[Path, bool]:
    """Create an evidence repository at ``path``, or adopt the Git repository there.

    Returns:
        (repository path, True if it was created now).

    Raises:
        UsageError: the path is a file, or a folder that is neither empty nor a Git
            repository (the user named the wrong place; nothing is written).
        StorageError: Git could not create the repository.
    """
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path} exists and is not a folder")
    found = pygit2.discover_repository(str(path)) if path.exists() else None
    if found and Path(found).resolve() in (path.resolve(), (path / ".git").resolve()):
        return path, False
    if path.exists() and any(path.iterdir()):
        raise UsageError(f"{path} exists, is not empty and is not a Git repository")
    try:
        pygit2.init_repository(str(path), bare=bare)
    except pygit2.GitError as exc:
        raise StorageError(f"cannot create repository at {path}: {exc}") from exc
    return path, True


_writers = threading.local()


def _identity(git_dir: Path) -> tuple[int, int, int, int] | None:
    # The folder itself (device, inode) and when an entry of it last came or went (mtime,
    # ctime): appends create nothing at its top level, while a repository removed and
    # made again at the same path, or ``git gc``/``pack-refs`` (packed-refs), change it.
    try:
        st = os.stat(git_dir)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns


def writer_store(path: Path | str) -> EvidenceStore:
    """Return this thread's :class:`EvidenceStore` for ``path``, opened on first use and
    kept for the next append in this thread.

    A process that appends record after record (a workflow run, ``afdp serve``'s
    workers) then opens the repository once, not per record. Nothing an append relies
    on is cached in a way another writer could make stale: refs, the branch turn and
    the compare-and-swap read the files every time, objects are named by their content,
    and the ``core.fsync`` setting is read again for every append. The store is opened
    again when the folder at ``path`` is no longer the one opened (removed, replaced, or
    an entry at its top level came or went, as ``git gc`` does), after a fork, and in
    each thread (a libgit2 repository is used by one thread at a time).

    Raises:
        NotFoundError: ``path`` is not a Git repository.
    """
    key = os.fspath(path)
    stores: dict[str, tuple[int, tuple[int, int, int, int], EvidenceStore]] | None = getattr(
        _writers, "stores", None
    )
    if stores is None:
        stores = _writers.stores = {}
    known = stores.pop(key, None)
    if known is not None:
        pid, identity, store = known
        if pid == os.getpid() and _identity(store.path) == identity:
            store.begin_append()
            stores[key] = known
            return store
    store = EvidenceStore(path)
    identity_now = _identity(store.path)
    if identity_now is not None:
        if len(stores) >= 16:  # a thread writing to many repositories keeps the last few
            stores.pop(next(iter(stores)))
        stores[key] = (os.getpid(), identity_now, store)
    return store


class EvidenceStore(StoreReader):
    """Read and append evidence on the AFDP branches of one Git repository."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(path)
        self.recovered: list[str] = []  # stale locks this store removed (see _writer_lock)
        #: Objects written since the last ref update, made durable before the next one
        #: (see :meth:`compare_and_swap`).
        self._unsynced: list[pygit2.Oid] = []
        self._fsync: FsyncPolicy | None = None
        #: What :func:`afdp.evidence.commits.read_tail` learnt of branch heads, by commit
        #: id (a commit id names its content, so the entry can never go stale).
        self.tails: dict[pygit2.Oid, Any] = {}
        #: Shard trees this store wrote: raw bytes and the sort key of the last entry.
        self._trees_written: dict[pygit2.Oid, tuple[bytes, bytes]] = {}

    def begin_append(self) -> None:
        """Start a new append on a store kept from an earlier one (:func:`writer_store`):
        read ``core.fsync`` again (it may have changed), forget the objects an append that
        failed before its compare-and-swap left unflushed (nothing points at them)."""
        self._fsync = None
        self._unsynced = []
        if len(self.tails) > 64:
            self.tails.clear()

    @property
    def fsync(self) -> FsyncPolicy:
        """What this store flushes before it reports a write (read once, on first write:
        readers never pay for the configuration)."""
        if self._fsync is None:
            self._fsync = fsync_policy(self.repo.config)
        return self._fsync

    def write_commit(
        self,
        parent: pygit2.Commit | None,
        directory: str,
        files: Mapping[str, bytes],
        message: str,
        *,
        author: tuple[str, str] = COMMITTER,
        sign: Callable[[bytes], str | None] | None = None,
        prepared: PreparedCommit | None = None,
    ) -> pygit2.Oid:
        """Write ``files`` as a new directory on top of ``parent``'s tree; return the commit id.

        Only the trees on the path to ``directory`` are rewritten (constant work per
        record). The branch is not moved: see :meth:`compare_and_swap`. With ``sign``,
        the commit carries its result (an armored signature over the commit content)
        in git's ``gpgsig`` header; a ``sign`` returning None leaves the commit unsigned.
        With ``prepared`` (from :meth:`prepare_commit` for the same ``parent`` and
        ``directory``), the directory holds the files written then and ``files``.

        Raises:
            StorageError: the directory already exists, a file is given twice, or Git
                refused the write.
            SigningError: ``sign`` failed (nothing was written that a ref points at).
        """
        if prepared is None:
            prepared = self.prepare_commit(parent, directory, {})
        elif prepared.parent_id != (parent.id if parent else None) or prepared.directory != directory:
            raise StorageError(f"{directory} was prepared on another commit or directory")
        try:
            blobs = dict(prepared.blobs)
            for name in sorted(files):
                if name in blobs:
                    raise StorageError(f"{name} is written twice into {directory}")
                blobs[name] = self.repo.create_blob(files[name])
                self._unsynced.append(blobs[name])
            leaf = self.repo.TreeBuilder()
            for name in sorted(blobs):
                leaf.insert(name, blobs[name], _BLOB)
            tree_id = leaf.write()
            self._unsynced.append(tree_id)
            # innermost first: each tree takes the one below it, under its own name
            for builder, name in reversed(prepared.path):
                builder.insert(name, tree_id, _TREE)
                tree_id = builder.write()
                self._unsynced.append(tree_id)
            now = int(time.time())
            signature_author = pygit2.Signature(author[0], author[1], now, 0)
            committer = pygit2.Signature(COMMITTER[0], COMMITTER[1], now, 0)
            parents: list[pygit2.Oid | str] = [parent.id] if parent else []
            if sign is not None:
                # pygit2's stub says Oid, but create_commit_string returns the object text
                content = str(
                    self.repo.create_commit_string(
                        signature_author, committer, message, tree_id, parents
                    )
                )
                armored = sign(content.encode("utf-8"))
                if armored is not None:
                    commit_id = self.repo.create_commit_with_signature(content, armored)
                    self._unsynced.append(commit_id)
                    return commit_id
            commit_id = self.repo.create_commit(
                None, signature_author, committer, message, tree_id, parents
            )
            self._unsynced.append(commit_id)
            return commit_id
        except pygit2.GitError as exc:
            raise StorageError(f"cannot write to the evidence repository: {exc}") from exc

    def prepare_commit(
        self, parent: pygit2.Commit | None, directory: str, files: Mapping[str, bytes]
    ) -> PreparedCommit:
        """Do what :meth:`write_commit` can do before all the files are known: write
        ``files`` (blobs, which nothing points at yet) and read the trees on the path to
        ``directory``; :meth:`write_commit` with ``prepared=`` finishes the commit.

        Lets a writer write a record's envelope and read the branch's trees while its
        time-stamp request is in flight: only the token, the trees that hold it and the
        commit wait for the token. Blobs of a commit that is never finished (the TSA gave
        no token) are unreachable objects, which ``git gc`` prunes.

        Raises:
            StorageError: the directory already exists, a directory on its path is a
                file, or Git refused the write.
        """
        try:
            blobs: dict[str, pygit2.Oid] = {}
            for name in sorted(files):
                blobs[name] = self.repo.create_blob(files[name])
                self._unsynced.append(blobs[name])
            path: list[tuple[pygit2.TreeBuilder | _AppendedTree, str]] = []
            base_id: pygit2.Oid | None = parent.tree_id if parent else None
            parts = directory.split("/")
            for depth, name in enumerate(parts):
                innermost = depth == len(parts) - 1
                if innermost and base_id is not None:
                    appended = self._append_after(base_id, name)
                    if appended is not None:  # the usual case: a shard gains its next record
                        path.append((appended, name))
                        break
                if base_id is None:
                    builder = self.repo.TreeBuilder()
                else:
                    base = self.repo.get(base_id)
                    if not isinstance(base, pygit2.Tree):
                        raise StorageError(f"{parts[depth - 1]} in the evidence tree is not a directory")
                    builder = self.repo.TreeBuilder(base)
                existing = builder.get(name)
                if innermost and existing is not None:
                    raise StorageError(f"{name} already exists in the evidence tree")
                base_id = existing.id if existing is not None else None
                path.append((builder, name))
        except pygit2.GitError as exc:
            raise StorageError(f"cannot write to the evidence repository: {exc}") from exc
        return PreparedCommit(parent.id if parent else None, directory, blobs, path)

    def _append_after(self, tree_id: pygit2.Oid, name: str) -> _AppendedTree | None:
        """The appender for tree ``tree_id`` if ``name`` (a directory) sorts after its last
        entry, else None (then a TreeBuilder places it, or finds it already there)."""
        known = self._trees_written.get(tree_id)
        if known is None:
            tree = self.repo.get(tree_id)
            if not isinstance(tree, pygit2.Tree) or len(tree) == 0:
                return None
            last = tree[len(tree) - 1]
            if last.raw_name is None:
                return None
            key = sort_key(last.raw_name, DIR_MODE if last.filemode == _TREE else b"100644")
            kind, raw = self.repo.odb.read(tree_id)
            if kind != pygit2.enums.ObjectType.TREE:
                return None
            known = (bytes(raw), key)
        raw, last_key = known
        if last_key >= sort_key(name.encode("utf-8"), DIR_MODE):
            return None
        return _AppendedTree(self, raw)

    def _remember_tree(self, tree_id: pygit2.Oid, raw: bytes, last_key: bytes) -> None:
        # The raw bytes of the shard tree just written, and the sort key of its last entry,
        # by id (an id names its content: never stale), for the next record of the shard.
        if len(self._trees_written) >= 4:
            self._trees_written.pop(next(iter(self._trees_written)))
        self._trees_written[tree_id] = (raw, last_key)

    def compare_and_swap(
        self, ref: str, expected: pygit2.Oid | None, new: pygit2.Oid, reason: str
    ) -> None:
        """Point ``ref`` at ``new`` only if it still points at ``expected`` (None: absent).

        A ref lock held by another writer is waited for (up to ``LOCK_WAIT`` seconds,
        with backoff): concurrent writers queue rather than fail.

        Durability follows the repository's own Git setting (:func:`fsync_policy`):
        with ``core.fsync`` naming objects (``committed``, ``objects``, ...), every
        object this store wrote since its last ref update is flushed to disk (``fsync``
        of each loose object file, then of the folders that name them) *before* the
        ref moves; naming references, the ref file and its folder are flushed after it
        moved, before this returns. The object flushes are deferred to this point (once
        per append, once per batch), not made as each object is written, so that one
        journal commit of the file system can carry them all. Without such a setting, AFDP
        does what Git does by default: a record acknowledged survives the writer's
        crash, not necessarily a power cut (docs/evidence.md, "Durability").

        Raises:
            RefMoved: the branch changed since ``expected`` was read.
            StorageError: the reference stayed locked by another process, or Git failed.
        """
        self._sync_objects()
        deadline = time.monotonic() + LOCK_WAIT
        pause = 0.002
        with self._writer_lock(ref, deadline) as died:
            while True:
                try:
                    self._swap_once(ref, expected, new, reason)
                    self._sync_ref(ref)
                    return
                except RefMoved:
                    raise
                except pygit2.GitError as exc:
                    if "lock" not in str(exc).lower():
                        raise StorageError(f"cannot update {ref}: {exc}") from exc
                    if died is not None and self._remove_stale_ref_lock(ref, died):
                        died = None
                        reason = f"{reason} (afdp: {self.recovered[-1]})"
                        continue
                    if time.monotonic() >= deadline:
                        lock = self.path / f"{ref}.lock"
                        raise StorageError(
                            f"repository locked: {ref} is being updated by a process that is "
                            f"not AFDP, or was left locked by one ({exc}); if no git command "
                            f"is writing to this repository, recover with: rm {lock}"
                        ) from exc
                time.sleep(pause)
                pause = min(pause * 2, 0.1)

    def _sync_objects(self) -> None:
        """``fsync`` the loose files of the objects written since the last ref update
        and the folders holding them. An object with no loose file was already in a
        pack (it existed before: Git does not write it again) and is skipped.

        Raises:
            StorageError: the disk refused a flush (nothing points at these objects yet).
        """
        written, self._unsynced = self._unsynced, []
        if not written or not self.fsync.objects:
            return
        objects = common_dir(self.path) / "objects"
        folders = {objects}
        try:
            for oid in dict.fromkeys(written):  # once each, in the order written
                hexid = str(oid)
                path = objects / hexid[:2] / hexid[2:]
                if _fsync_path(path):
                    folders.add(path.parent)
            for folder in sorted(folders, reverse=True):  # fan-out folders, then objects/
                _fsync_path(folder)
        except OSError as exc:
            raise StorageError(f"cannot flush evidence objects to disk: {exc}") from exc

    def _sync_ref(self, ref: str) -> None:
        """``fsync`` the loose file of ``ref`` and its folder, just after the ref moved.

        Raises:
            StorageError: the disk refused a flush; the ref may not survive a power cut,
                so the append is not acknowledged.
        """
        if not self.fsync.references:
            return
        path = common_dir(self.path) / ref
        try:
            _fsync_path(path)
            _fsync_path(path.parent)
        except OSError as exc:
            raise StorageError(f"{ref} moved, but cannot be flushed to disk: {exc}") from exc

    @contextlib.contextmanager
    def branch_turn(self, ref: str, *, wait: float = TURN_WAIT) -> Iterator[None]:
        """Take this writer's turn on ``ref``: writers of one branch append one at a time.

        Held around a whole append (read the head, sign, time-stamp, commit, swap), so
        concurrent AFDP writers of one branch queue instead of racing: N records cost N
        signatures and N time-stamps, where racing writers re-signed and re-stamped
        after every lost compare-and-swap. The lock is an ``flock`` on a file under the
        common git directory (shared by worktrees), so the kernel releases the turn of
        a writer that dies; a writer that is merely slow holds it for as long as its
        TSA takes. Correctness never rests on it: the compare-and-swap still refuses
        any update from a stale head (another tool, a writer past ``wait``).

        Raises:
            StorageError: another writer held the turn for more than ``wait`` seconds.
        """
        deadline = time.monotonic() + wait
        fd = _open_lock(common_dir(self.path) / "afdp-locks" / "branches", ref)
        try:
            if not _flock_by(fd, deadline, pause=0.001, longest=0.02):
                raise StorageError(
                    f"{ref} is being appended to by another AFDP writer that held "
                    f"its turn for more than {wait:g} s"
                )
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _writer_lock(self, ref: str, deadline: float) -> Iterator[str | None]:
        """Hold AFDP's own lock on ``ref`` (an ``flock``, which the kernel releases when
        its holder dies) around a ref update; yield what a holder that died in the
        middle of one left behind (its note), or None.

        libgit2's ``<ref>.lock`` file names no owner, so a writer killed while updating
        the ref leaves it behind and every later writer would fail forever. Under this
        lock, a note left by the previous holder proves that holder died mid-update (a
        live holder still holds the flock; a clean one erased its note): its ref lock
        is stale and may be removed. A ``.lock`` with no such note may belong to a live
        ``git`` process and is never broken.

        Raises:
            StorageError: another AFDP writer held the lock past ``deadline`` (exit 3).
        """
        fd = _open_lock(self.path / "afdp-locks" / "refs", ref)
        try:
            if not _flock_by(fd, deadline, pause=0.002, longest=0.1):
                raise StorageError(
                    f"repository locked: {ref} is being updated by another AFDP writer"
                )
            found = os.pread(fd, 64 * 1024, 0)
            left = found.decode("utf-8", "replace").strip() or None
            note = f"pid {os.getpid()} since {time.time():.3f} updating {ref}\n".encode()
            # Written over in place, padded with blanks to the file's length, and
            # blanked again on the way out: the file keeps its size (no truncation, no
            # block freed and allocated again per update), and blanks are no note.
            size = max(len(found), len(note))
            os.pwrite(fd, note.ljust(size), 0)
            try:
                yield left
            finally:
                # Any exit of a live process (an error included) erases the note: only
                # a holder killed mid-update (SIGKILL, a crash) leaves one behind.
                os.pwrite(fd, b" " * size, 0)
        finally:
            os.close(fd)

    def _remove_stale_ref_lock(self, ref: str, note: str) -> bool:
        """Remove the ``<ref>.lock`` a dead AFDP writer left (see :meth:`_writer_lock`);
        say so on stderr and in the reflog of the next update. Return True if removed."""
        lock = self.path / f"{ref}.lock"
        try:
            lock.unlink()
        except FileNotFoundError:
            return False
        self.recovered.append(f"removed stale lock {lock.name} of {ref} left by a writer that died ({note})")
        print(f"afdp: warning: {self.recovered[-1]}", file=sys.stderr)
        return True

    def _swap_once(
        self, ref: str, expected: pygit2.Oid | None, new: pygit2.Oid, reason: str
    ) -> None:
        with self.repo.transaction() as txn:
            txn.lock_ref(ref)
            current = self.repo.references.get(ref)
            current_id = current.target if current is not None else None
            if current_id != expected:
                raise RefMoved(f"{ref} moved (expected {expected}, found {current_id})")
            # signature=None: the reflog takes the repository's identity. pygit2 1.21
            # passes an explicit Signature to libgit2 wrongly (TypeError), and the
            # reflog is not evidence anyway: the commits and their trailers are.
            txn.set_target(ref, new, signature=None, message=reason)
