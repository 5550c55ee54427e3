"""The evidence repository: pygit2 only, bare or not, no work tree needed.

Writes build blobs, trees and a commit first and move the branch last, with a
compare-and-swap inside a libgit2 reference transaction (lock, re-read, compare, set):
a concurrent writer that lost the race sees :class:`RefMoved` and retries on the new
head; nothing is ever force-moved, and a crash before the ref update leaves only
unreachable objects behind, so the branch stays at its last complete record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pygit2

from afdp.errors import NotFoundError, StorageError
from afdp.names import BRANCH_PREFIX, parse_branch_ref

_TREE = pygit2.enums.FileMode.TREE
_BLOB = pygit2.enums.FileMode.BLOB
COMMITTER = ("AFDP", "afdp@evidence.invalid")
#: How long a writer waits for another writer's ref lock before reporting "locked".
LOCK_WAIT = 5.0


def _tree_entries(raw: bytes) -> dict[str, tuple[bytes, bytes]]:
    """Parse raw Git tree bytes into ``{name: (mode, 20-byte id)}``.

    Raises:
        ValueError: the bytes are not a sequence of whole tree entries.
    """
    entries: dict[str, tuple[bytes, bytes]] = {}
    at, end = 0, len(raw)
    while at < end:
        space = raw.index(b" ", at)
        nul = raw.index(b"\0", space)
        if nul + 21 > end:
            raise ValueError("truncated tree entry")
        entries[raw[space + 1 : nul].decode("utf-8", "surrogateescape")] = (
            raw[at:space],
            raw[nul + 1 : nul + 21],
        )
        at = nul + 21
    return entries


class RefMoved(StorageError):
    """The branch moved between reading its head and updating it (lost a race)."""


@dataclass(frozen=True)
class CommitFiles:
    """One commit of a branch and the files it added, by path relative to the tree root."""

    commit_id: str
    parents: tuple[str, ...]
    message: str
    added: dict[str, bytes]
    changed: tuple[str, ...]  # paths modified, deleted or of a non-blob kind: never allowed


def init_repository(path: Path, *, bare: bool = False) -> tuple[Path, bool]:
    """Create an evidence repository at ``path``, or adopt the Git repository there.

    Returns:
        (repository path, True if it was created now).

    Raises:
        StorageError: the path exists and is neither empty nor a Git repository.
    """
    found = pygit2.discover_repository(str(path)) if path.exists() else None
    if found and Path(found).resolve() in (path.resolve(), (path / ".git").resolve()):
        return path, False
    if path.exists() and any(path.iterdir()):
        raise StorageError(f"{path} exists, is not empty and is not a Git repository")
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
        self._trees: dict[bytes, bytes] = {}

    # -- reading -----------------------------------------------------------------------
    def head(self, ref: str) -> pygit2.Commit | None:
        """Return the commit a branch points at, or None if the branch does not exist."""
        try:
            reference = self.repo.references.get(ref)
        except pygit2.GitError as exc:
            raise StorageError(f"cannot read {ref}: {exc}") from exc
        if reference is None:
            return None
        target = self.repo.get(reference.resolve().target)
        if not isinstance(target, pygit2.Commit):
            raise StorageError(f"{ref} does not point at a commit")
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
        """Return the first-parent history of ``head``, oldest first."""
        commits = []
        commit: pygit2.Commit | None = head
        while commit is not None:
            commits.append(commit)
            commit = commit.parents[0] if commit.parents else None
        commits.reverse()
        return commits

    def commit_files(self, commit: pygit2.Commit) -> CommitFiles:
        """Return what ``commit`` added relative to its first parent (all files for a root)."""
        added: dict[str, bytes] = {}
        changed: list[str] = []
        fast = self._appended_directory(commit) if commit.parents else None
        if fast is not None:
            added = fast
        elif commit.parents:
            diff = commit.parents[0].tree.diff_to_tree(commit.tree)
            for delta in diff.deltas:
                if delta.status == pygit2.enums.DeltaStatus.ADDED and delta.new_file.mode == _BLOB:
                    added[delta.new_file.path] = self._raw(delta.new_file.id)[1]
                else:
                    changed.append(delta.new_file.path or delta.old_file.path)
        else:
            for path, data, mode in self._walk(commit.tree, ""):
                if mode == _BLOB:
                    added[path] = data
                else:
                    changed.append(path)
        return CommitFiles(
            str(commit.id),
            tuple(str(p) for p in commit.parent_ids),
            commit.message,
            added,
            tuple(changed),
        )

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
                raise ValueError("not a tree")
            if len(self._trees) >= 16:
                self._trees.pop(next(iter(self._trees)))
            self._trees[oid] = cached
        return cached

    def _appended_directory(self, commit: pygit2.Commit) -> dict[str, bytes] | None:
        """Fast path of :meth:`commit_files` for what AFDP writes: one directory appended.

        Compares raw tree objects instead of running a full tree diff (which costs
        O(entries of the shard) in libgit2 per commit): the root and ``records`` trees
        must differ in exactly one entry, and the new shard tree must be the old one
        with exactly one directory entry appended (record names sort in sequence order),
        which holds only files. Returns the added files by path, or None whenever the
        commit has any other shape; the full diff then describes it exactly.
        """
        try:
            path: list[str] = []
            old_id: bytes | None = commit.parents[0].tree_id.raw
            new_id: bytes = commit.tree_id.raw
            for _ in range(2):  # the root tree, then records/
                old = _tree_entries(self._raw_tree(old_id)) if old_id is not None else {}
                new = _tree_entries(self._raw_tree(new_id))
                differing = [n for n in new.keys() | old.keys() if new.get(n) != old.get(n)]
                if len(differing) != 1 or differing[0] not in new:
                    return None
                name = differing[0]
                mode, new_id = new[name]
                if mode != b"40000" or (name in old and old[name][0] != b"40000"):
                    return None
                old_id = old[name][1] if name in old else None
                path.append(name)
            if path[0] != "records":
                return None
            old_raw = self._raw_tree(old_id) if old_id is not None else b""
            new_raw = self._raw_tree(new_id)
            if not new_raw.startswith(old_raw):
                return None
            appended = _tree_entries(new_raw[len(old_raw) :])
            if len(appended) != 1:
                return None
            (name, (mode, record_id)), = appended.items()
            if mode != b"40000":
                return None
            prefix = "/".join([*path, name]) + "/"
            files: dict[str, bytes] = {}
            for file_name, (file_mode, blob_id) in _tree_entries(self._raw_tree(record_id)).items():
                kind, data = self._raw(blob_id)
                if file_mode != b"100644" or kind != pygit2.enums.ObjectType.BLOB:
                    return None
                files[prefix + file_name] = data
            return files if files else None
        except (ValueError, KeyError, pygit2.GitError):
            return None

    def _walk(self, tree: pygit2.Tree, prefix: str) -> Iterator[tuple[str, bytes, int]]:
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
                leaf.insert(name, self.repo.create_blob(files[name]), _BLOB)
            tree_id = self._insert(
                parent.tree if parent else None, directory.split("/"), leaf.write()
            )
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
                    return self.repo.create_commit_with_signature(content, armored)
            return self.repo.create_commit(
                None, signature_author, committer, message, tree_id, parents
            )
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
        return builder.write()

    def compare_and_swap(
        self, ref: str, expected: pygit2.Oid | None, new: pygit2.Oid, reason: str
    ) -> None:
        """Point ``ref`` at ``new`` only if it still points at ``expected`` (None: absent).

        A ref lock held by another writer is waited for (up to ``LOCK_WAIT`` seconds,
        with backoff): concurrent writers queue rather than fail.

        Raises:
            RefMoved: the branch changed since ``expected`` was read.
            StorageError: the reference stayed locked by another process, or Git failed.
        """
        deadline = time.monotonic() + LOCK_WAIT
        pause = 0.002
        while True:
            try:
                self._swap_once(ref, expected, new, reason)
                return
            except RefMoved:
                raise
            except pygit2.GitError as exc:
                if "lock" not in str(exc).lower():
                    raise StorageError(f"cannot update {ref}: {exc}") from exc
                if time.monotonic() >= deadline:
                    raise StorageError(
                        f"repository locked: {ref} is being updated by another process ({exc})"
                    ) from exc
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

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
