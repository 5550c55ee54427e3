"""The evidence repository: pygit2 only, bare or not, no work tree needed.

Writes build blobs, trees and a commit first and move the branch last, with a
compare-and-swap inside a libgit2 reference transaction (lock, re-read, compare, set):
a concurrent writer that lost the race sees :class:`RefMoved` and retries on the new
head; nothing is ever force-moved, and a crash before the ref update leaves only
unreachable objects behind, so the branch stays at its last complete record.

Why one module of about 700 lines: :class:`EvidenceStore` is the only code that touches
the repository's objects and refs. Its read path (every object size-capped, trees
diffed entry by entry) and its write path (objects first, the ref last, under the
writer lock) share the same caps and raw readers; split, those invariants would live in
two places. The byte-level parsers it relies on are in :mod:`afdp.evidence.gitraw`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pygit2

from afdp.errors import NotFoundError, StorageError, UsageError
from afdp.evidence.gitraw import (
    COMMITTER,
    DIR_MODE,
    FILE_MODE,
    MODE_NAMES,
    RawCommit,
    TreeError,
    commit_header_problems,
    parse_commit,
    parse_tree,
    sort_key,
    tree_entries,
)
from afdp.evidence.names import BRANCH_PREFIX, parse_branch_ref

_TREE = pygit2.enums.FileMode.TREE
_BLOB = pygit2.enums.FileMode.BLOB




#: How long a writer waits for another writer's ref lock before reporting "locked".
LOCK_WAIT = 5.0
#: How long a writer waits for its turn on a branch (see EvidenceStore.branch_turn):
#: long enough for the writers ahead of it to sign and time-stamp, each within its
#: TSA deadline.
TURN_WAIT = 120.0


#: Size limits checked from the object header before a blob is read (verification
#: never loads an oversized blob): an envelope is a few KiB; results larger than 64 KiB
#: live in result.json, and attachments (metric series) stay far below 64 MiB.
MAX_ENVELOPE_BYTES = 1 << 20
MAX_FILE_BYTES = 64 << 20


#: All the files one commit adds (one record), counted per name: the bound on what
#: verification reads and holds for one record, whatever the tree lists.
MAX_COMMIT_FILES_BYTES = MAX_FILE_BYTES + MAX_ENVELOPE_BYTES


#: Commit and tree objects: an AFDP commit is ~1 KiB, a shard tree ~50 KiB at most.
MAX_COMMIT_BYTES = 1 << 20
MAX_TREE_BYTES = 4 << 20


class ObjectError(StorageError):
    """A Git object the branch needs is missing or corrupt (hash mismatch, bad zlib)."""


class BranchTargetError(StorageError):
    """A branch ref points at something other than a commit (a tag, tree or blob)."""


@dataclass
class _Walk:
    """What :meth:`EvidenceStore.commit_files` collects while comparing trees."""

    added: dict[str, bytes] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    unreadable: bool = False  # an object could not be read: files may be missing
    # Bytes of files added by one commit, counted per name (the work of checking them
    # is per name, even where many names share one blob), and the blobs already read.
    total: int = 0
    blobs: dict[bytes, bytes] = field(default_factory=dict)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _object_problem(oid: bytes, where: str, exc: BaseException) -> str:
    hexid = oid.hex()
    if isinstance(exc, KeyError) or "not found" in str(exc).lower():
        return f"object {hexid} ({where}) is missing from the repository"
    return f"object {hexid} ({where}) is corrupt or unreadable: {_one_line(exc)}"


class RefMoved(StorageError):
    """The branch moved between reading its head and updating it (lost a race)."""


@dataclass(frozen=True)
class CommitFiles:
    """One commit of a branch and the files it added, by path relative to the tree root."""

    commit_id: str
    parents: tuple[str, ...]
    message: str  # the raw message bytes as UTF-8 (undecodable bytes: a "commit" problem)
    added: dict[str, bytes]
    changed: tuple[str, ...]  # paths modified or deleted: never allowed
    #: (check, reason) for what no AFDP commit holds: malformed, duplicate or unsorted tree
    #: entries, empty directories, non-regular files, oversized or unreadable blobs.
    problems: tuple[tuple[str, str], ...] = ()
    #: the author header's ``Name <email>`` (None: unparsable, already a problem)
    author: str | None = None
    #: an object of the commit is missing or corrupt (reported in ``problems``): what the
    #: record would hold is unknown, so checks that depend on it say nothing more
    unreadable: bool = False


def common_dir(git_dir: Path) -> Path:
    """Return the repository's common git directory: a linked worktree's ``commondir``
    (where grafts, shallow and refs live), else ``git_dir`` itself."""
    try:
        pointer = (git_dir / "commondir").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return git_dir
    return (git_dir / pointer).resolve() if pointer else git_dir


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


class EvidenceStore:
    """Read and append evidence on the AFDP branches of one Git repository."""

    def __init__(self, path: Path | str) -> None:
        try:
            self.repo = pygit2.Repository(str(path))
        except (pygit2.GitError, KeyError) as exc:
            raise NotFoundError(
                f"{path} is not an evidence repository (run 'afdp init {path}')"
            ) from exc
        self.path = Path(self.repo.path)
        self.recovered: list[str] = []  # stale locks this store removed (see _writer_lock)
        self._trees: dict[bytes, bytes] = {}
        self._last_keys: dict[bytes, bytes] = {}
        #: Objects written since the last ref update, made durable before the next one
        #: (see :meth:`compare_and_swap`).
        self._unsynced: list[pygit2.Oid] = []
        self._fsync: FsyncPolicy | None = None

    @property
    def fsync(self) -> FsyncPolicy:
        """What this store flushes before it reports a write (read once, on first write:
        readers never pay for the configuration)."""
        if self._fsync is None:
            self._fsync = fsync_policy(self.repo.config)
        return self._fsync

    # -- reading -----------------------------------------------------------------------
    def head(self, ref: str) -> pygit2.Commit | None:
        """Return the commit a branch points at, or None if the branch does not exist.

        Raises:
            BranchTargetError: the ref points at a tag, tree or blob, or at nothing.
            StorageError: the ref cannot be read.
        """
        try:
            reference = self.repo.references.get(ref)
        except pygit2.GitError as exc:
            raise StorageError(f"cannot read {ref}: {exc}") from exc
        if reference is None:
            return None
        try:
            oid = reference.resolve().target
            kind, size = self.repo.odb.read_header(oid)
        except KeyError as exc:
            raise BranchTargetError(f"{ref} points at object {reference.target}, which is missing") from exc
        except (pygit2.GitError, ValueError) as exc:
            raise BranchTargetError(f"{ref} points at an unreadable object: {_one_line(exc)}") from exc
        if int(kind) != pygit2.enums.ObjectType.COMMIT:
            name = {2: "tree", 3: "blob", 4: "tag"}.get(int(kind), "non-commit object")
            raise BranchTargetError(f"{ref} points at a {name} ({oid}), not a commit")
        if size > MAX_COMMIT_BYTES:
            raise BranchTargetError(
                f"{ref} points at a {size}-byte commit, over the {MAX_COMMIT_BYTES >> 20} MiB limit; not read"
            )
        try:
            target = self.repo.get(oid)
        except (pygit2.GitError, KeyError, ValueError) as exc:
            raise BranchTargetError(f"{ref} points at an unreadable object: {_one_line(exc)}") from exc
        if not isinstance(target, pygit2.Commit):
            raise BranchTargetError(f"{ref} points at {oid}, which is not a readable commit")
        return target

    def branches(self) -> list[tuple[str, str]]:
        """Return ``(service, deployment)`` of every AFDP branch, sorted."""
        found = []
        for name in self.repo.references:
            if name.startswith(BRANCH_PREFIX):
                parsed = parse_branch_ref(name)
                if parsed:
                    found.append(parsed)
        return sorted(found)

    def unsafe_branches(self) -> list[str]:
        """Return every ref under ``refs/heads/afdp/`` that is not a safe AFDP branch name."""
        return sorted(
            name
            for name in self.repo.references
            if name.startswith(BRANCH_PREFIX) and parse_branch_ref(name) is None
        )

    def substitutions(self) -> list[str]:
        """Return what makes git show other objects than libgit2 reads, one line each.

        ``refs/replace/*`` refs (``git replace``), ``info/grafts`` and a ``shallow`` file
        are honoured by git and ignored by libgit2: with any of them, ``git log`` and
        ``git show`` can display content that verification never saw.
        """
        found = []
        for name in self.repo.references:
            if name.startswith("refs/replace/"):
                found.append(f"{name} (git replace: git shows another object in place of {name.rsplit('/', 1)[-1]})")
            elif name.startswith("refs/notes/"):
                found.append(f"{name} (git notes: git log shows notes under the commits they annotate)")
        git_dir = common_dir(Path(self.repo.path))
        for name, what in (("info/grafts", "grafts file"), ("shallow", "shallow clone file")):
            if (git_dir / name).exists():
                found.append(f"{git_dir / name} ({what}: git rewrites parents)")
        return found

    def read_blob(self, tree: pygit2.Tree, path: str) -> bytes | None:
        """Return the bytes of ``path`` in ``tree``, or None if absent or not a file."""
        try:
            entry = tree[path]
        except KeyError:
            return None
        obj = self.repo.get(entry.id)
        return obj.data if isinstance(obj, pygit2.Blob) else None

    def list_dir(self, tree: pygit2.Tree, path: str) -> dict[str, bytes]:
        """Return the files directly inside directory ``path`` of ``tree``."""
        try:
            sub = self.repo.get(tree[path].id)
        except KeyError:
            return {}
        if not isinstance(sub, pygit2.Tree):
            return {}
        return {str(e.name): self._raw(e.id)[1] for e in sub if e.type_str == "blob"}

    def history(self, head: pygit2.Commit) -> list[pygit2.Commit]:
        """Return the first-parent history of ``head``, oldest first.

        Raises:
            ObjectError: a parent commit is missing or corrupt (named with its child).
        """
        commits = []
        commit: pygit2.Commit | None = head
        while commit is not None:
            commits.append(commit)
            if not commit.parent_ids:
                break
            parent_id = commit.parent_ids[0]
            try:
                _, size = self.repo.odb.read_header(parent_id)
                if size > MAX_COMMIT_BYTES:
                    raise ObjectError(
                        f"commit {str(commit.id)[:12]}: its parent {parent_id} is {size} bytes, "
                        f"over the {MAX_COMMIT_BYTES >> 20} MiB limit for a commit; not read"
                    )
                parent = self.repo.get(parent_id)
            except KeyError:
                parent = None
            except (pygit2.GitError, ValueError) as exc:
                raise ObjectError(
                    f"commit {str(commit.id)[:12]}: its parent {parent_id} is corrupt: {_one_line(exc)}"
                ) from exc
            if not isinstance(parent, pygit2.Commit):
                raise ObjectError(
                    f"commit {str(commit.id)[:12]}: its parent {parent_id} is missing from the repository"
                    if parent is None
                    else f"commit {str(commit.id)[:12]}: its parent {parent_id} is not a commit"
                )
            commit = parent
        commits.reverse()
        return commits

    def commit_files(self, commit: pygit2.Commit) -> CommitFiles:
        """Return what ``commit`` added relative to its first parent (all files for a root).

        Compares raw tree objects, checking each new tree as ``git fsck`` would. A tree
        that differs from the parent's only by entries appended at its end (how AFDP
        adds a record to a shard) costs only those entries, so a branch costs the same
        per record however long it grows. Unchanged trees are not re-read: walking a
        branch oldest first, they were checked with the commit that introduced them.
        Problems (malformed, duplicate or unsorted entries, empty directories, files
        that are not regular, oversized or unreadable objects) are returned, not raised.
        """
        walk = _Walk()
        raw = self.read_commit(commit.id)
        walk.problems.extend(("commit", p) for p in commit_header_problems(raw))
        try:
            message = raw.message.decode("utf-8")
        except UnicodeDecodeError:
            message = raw.text()
            walk.problems.append(("commit", "commit message is not UTF-8: AFDP writes UTF-8 only"))
        try:
            parent: Any = self.repo.get(commit.parent_ids[0]) if commit.parent_ids else None
            old = parent.tree_id.raw if parent is not None else None
        except (pygit2.GitError, AttributeError, ValueError) as exc:
            walk.problems.append(("repository", f"parent commit unreadable: {_one_line(exc)}"))
            old = None
        self._diff_trees(old, commit.tree_id.raw, "", walk)
        return CommitFiles(
            str(commit.id),
            tuple(str(p) for p in commit.parent_ids),
            message,
            walk.added,
            tuple(walk.changed),
            tuple(walk.problems),
            raw.author_identity(),
            walk.unreadable,
        )

    def read_commit(self, oid: pygit2.Oid | str) -> RawCommit:
        """Return a commit object's raw headers and message bytes.

        Read from the object database, not through ``Commit.message``: libgit2 decodes
        the message by the commit's ``encoding`` header (raising for an unknown one).
        An unreadable object gives no headers and an empty message (the caller's other
        checks report it).
        """
        try:
            kind, data = self._raw(oid if isinstance(oid, pygit2.Oid) else pygit2.Oid(hex=oid))
        except (pygit2.GitError, KeyError, ValueError):
            return RawCommit((), b"")
        return parse_commit(data) if kind == pygit2.enums.ObjectType.COMMIT else RawCommit((), b"")

    def message_of(self, commit: pygit2.Commit) -> str:
        """Return ``commit``'s message for display and trailers (never raises)."""
        return self.read_commit(commit.id).text()

    def _raw(self, oid: pygit2.Oid | bytes) -> tuple[int, bytes]:
        kind, data = self.repo.odb.read(oid if isinstance(oid, pygit2.Oid) else pygit2.Oid(raw=oid))
        return int(kind), bytes(data)

    def _raw_tree(self, oid: bytes) -> bytes:
        # Walking a branch oldest first, each commit's "old" trees are the previous
        # commit's "new" ones: keeping the last few saves half the object reads.
        cached = self._trees.get(oid)
        if cached is None:
            kind, cached = self._raw(oid)
            if kind != pygit2.enums.ObjectType.TREE:
                raise TreeError("not a tree")
            if len(self._trees) >= 16:
                self._trees.pop(next(iter(self._trees)))
            self._trees[oid] = cached
        return cached

    def _last_key(self, oid: bytes, raw: bytes) -> bytes | None:
        key = self._last_keys.get(oid)
        if key is None:
            entries = parse_tree(raw)
            if not entries:
                return None
            name, mode, _ = entries[-1]
            key = sort_key(name.encode("utf-8", "surrogateescape"), mode)
        return key

    def _remember_last(self, oid: bytes, entries: list[tuple[str, bytes, bytes]], fallback: bytes | None) -> None:
        if len(self._last_keys) >= 16:
            self._last_keys.pop(next(iter(self._last_keys)))
        if entries:
            name, mode, _ = entries[-1]
            self._last_keys[oid] = sort_key(name.encode("utf-8", "surrogateescape"), mode)
        elif fallback is not None:
            self._last_keys[oid] = fallback

    def _diff_trees(self, old_id: bytes | None, new_id: bytes, prefix: str, walk: _Walk) -> None:
        if old_id == new_id:
            return
        where = prefix.rstrip("/") or "the root tree"
        try:
            if new_id not in self._trees:
                _, size = self.repo.odb.read_header(pygit2.Oid(raw=new_id))
                if size > MAX_TREE_BYTES:
                    walk.problems.append(
                        ("commit", f"{where} is a {size}-byte tree, over the {MAX_TREE_BYTES >> 20} MiB limit; not read")
                    )
                    return
            new_raw = self._raw_tree(new_id)
        except TreeError:
            walk.problems.append(("commit", f"{where} is not a directory object"))
            return
        except (pygit2.GitError, KeyError, ValueError) as exc:
            walk.problems.append(("commit", _object_problem(new_id, where, exc)))
            walk.unreadable = True
            return
        if not new_raw:
            walk.problems.append(("commit", f"{where} is an empty directory: AFDP never writes one"))
            return
        try:
            old_raw = self._raw_tree(old_id) if old_id is not None else None
        except (TreeError, pygit2.GitError, KeyError, ValueError):
            old_raw = None  # reported with the commit that wrote it
        try:
            if old_raw and old_id is not None and len(new_raw) > len(old_raw) and new_raw.startswith(old_raw):
                # entries appended at the end: only they are new
                boundary = self._last_key(old_id, old_raw)
                appended = parse_tree(new_raw[len(old_raw) :], after=boundary)
                self._remember_last(new_id, appended, boundary)
                for name, mode, oid in appended:
                    self._add(prefix + name, mode, oid, walk)
                return
            entries = parse_tree(new_raw)
        except TreeError as exc:
            walk.problems.append(("commit", f"{where}: {exc}"))
            return
        self._remember_last(new_id, entries, None)
        old: dict[str, tuple[bytes, bytes]] = {}
        if old_raw:
            try:
                old = tree_entries(old_raw)
            except TreeError:
                old = {}
        for name, mode, oid in entries:
            path = prefix + name
            before = old.pop(name, None)
            if before is None:
                self._add(path, mode, oid, walk)
            elif before != (mode, oid):
                if mode == DIR_MODE and before[0] == DIR_MODE:
                    self._diff_trees(before[1], oid, path + "/", walk)
                else:
                    walk.changed.append(path)
        walk.changed.extend(prefix + name for name in old)

    def _add(self, path: str, mode: bytes, oid: bytes, walk: _Walk) -> None:
        if mode == DIR_MODE:
            self._diff_trees(None, oid, path + "/", walk)
            return
        if mode != FILE_MODE:
            what = MODE_NAMES.get(mode, "an entry of unknown mode")
            walk.problems.append(
                ("layout", f"{path} has mode {mode.decode('ascii', 'replace')} ({what}); only regular files (100644) are allowed")
            )
            return
        limit = MAX_ENVELOPE_BYTES if path.endswith("/envelope.json") else MAX_FILE_BYTES
        try:
            kind, size = self.repo.odb.read_header(pygit2.Oid(raw=oid))
            if int(kind) != pygit2.enums.ObjectType.BLOB:
                walk.problems.append(("commit", f"{path} is listed as a file but object {oid.hex()} is not a blob"))
                return
            if size > limit:
                walk.problems.append(
                    ("layout", f"{path} is {size} bytes, over the {limit >> 20} MiB limit for this file; not read")
                )
                return
            walk.total += size
            if walk.total > MAX_COMMIT_FILES_BYTES:
                walk.problems.append(
                    ("layout", f"the files this commit adds come to more than the "
                     f"{MAX_COMMIT_FILES_BYTES >> 20} MiB a record may hold (at {path}); not read")
                )
                walk.unreadable = True
                return
            if oid not in walk.blobs:  # one blob under many names is held once
                walk.blobs[oid] = self._raw(oid)[1]
            walk.added[path] = walk.blobs[oid]
        except (pygit2.GitError, KeyError, ValueError) as exc:
            walk.problems.append(("commit", _object_problem(oid, path, exc)))
            walk.unreadable = True

    def _walk(self, tree: pygit2.Tree, prefix: str) -> Iterator[tuple[str, bytes, int]]:
        """Yield ``(path, data, filemode)`` of every file under ``tree`` (-1: not a blob)."""
        for entry in tree:
            path = f"{prefix}{entry.name}"
            obj = self.repo.get(entry.id)
            if isinstance(obj, pygit2.Tree):
                yield from self._walk(obj, path + "/")
            elif isinstance(obj, pygit2.Blob):
                yield path, obj.data, entry.filemode
            else:
                yield path, b"", -1

    # -- writing -----------------------------------------------------------------------
    def write_commit(
        self,
        parent: pygit2.Commit | None,
        directory: str,
        files: Mapping[str, bytes],
        message: str,
        *,
        author: tuple[str, str] = COMMITTER,
        sign: Callable[[bytes], str | None] | None = None,
    ) -> pygit2.Oid:
        """Write ``files`` as a new directory on top of ``parent``'s tree; return the commit id.

        Only the trees on the path to ``directory`` are rewritten (constant work per
        record). The branch is not moved: see :meth:`compare_and_swap`. With ``sign``,
        the commit carries its result (an armored signature over the commit content)
        in git's ``gpgsig`` header; a ``sign`` returning None leaves the commit unsigned.

        Raises:
            StorageError: the directory already exists, or Git refused the write.
            SigningError: ``sign`` failed (nothing was written that a ref points at).
        """
        try:
            leaf = self.repo.TreeBuilder()
            for name in sorted(files):
                blob_id = self.repo.create_blob(files[name])
                self._unsynced.append(blob_id)
                leaf.insert(name, blob_id, _BLOB)
            leaf_id = leaf.write()
            self._unsynced.append(leaf_id)
            tree_id = self._insert(parent.tree if parent else None, directory.split("/"), leaf_id)
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

    def _insert(self, base: pygit2.Tree | None, parts: list[str], leaf: pygit2.Oid) -> pygit2.Oid:
        builder = self.repo.TreeBuilder(base) if base is not None else self.repo.TreeBuilder()
        name = parts[0]
        existing = builder.get(name)
        if len(parts) == 1:
            if existing is not None:
                raise StorageError(f"{name} already exists in the evidence tree")
            builder.insert(name, leaf, _TREE)
        else:
            sub = self.repo.get(existing.id) if existing is not None else None
            if sub is not None and not isinstance(sub, pygit2.Tree):
                raise StorageError(f"{name} in the evidence tree is not a directory")
            builder.insert(name, self._insert(sub, parts[1:], leaf), _TREE)
        tree_id = builder.write()
        self._unsynced.append(tree_id)
        return tree_id

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
        with open(_lock_path(common_dir(self.path) / "afdp-locks" / "branches", ref), "a") as handle:
            if not _flock_by(handle.fileno(), deadline, pause=0.001, longest=0.02):
                raise StorageError(
                    f"{ref} is being appended to by another AFDP writer that held "
                    f"its turn for more than {wait:g} s"
                )
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

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
        path = _lock_path(self.path / "afdp-locks" / "refs", ref)
        handle = open(path, "a+")  # noqa: SIM115 (closed below: releases it)
        try:
            if not _flock_by(handle.fileno(), deadline, pause=0.002, longest=0.1):
                raise StorageError(
                    f"repository locked: {ref} is being updated by another AFDP writer"
                )
            handle.seek(0)
            left = handle.read().strip() or None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} since {time.time():.3f} updating {ref}\n")
            handle.flush()
            try:
                yield left
            finally:
                # Any exit of a live process (an error included) erases the note: only
                # a holder killed mid-update (SIGKILL, a crash) leaves one behind.
                handle.seek(0)
                handle.truncate()
                handle.flush()
        finally:
            handle.close()

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


def _lock_path(directory: Path, ref: str) -> Path:
    """The file of AFDP's ``flock`` on ``ref`` under ``directory`` (created if missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    return directory / (hashlib.sha256(ref.encode()).hexdigest()[:32] + ".lock")


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
