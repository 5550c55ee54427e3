"""Reading an evidence repository: branch heads, first-parent history, and what each
commit added, with every object size-capped before it is read.

:meth:`StoreReader.commit_files` compares raw tree objects entry by entry, checking each
new tree as ``git fsck`` would, so a branch costs the same per record however long it
grows; nothing larger than the caps below is ever loaded. The byte-level parsers are in
:mod:`afdp.evidence.gitraw`. :class:`~afdp.evidence.store.write.EvidenceStore` adds the
write path to this class.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pygit2

from afdp.errors import NotFoundError, StorageError
from afdp.evidence.gitraw import (
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
#: Directory levels a commit's tree may nest (AFDP writes records/NNN/<record>/file: 3).
#: Each level is one call deeper: a crafted tree 20,000 levels deep was a RecursionError.
MAX_TREE_DEPTH = 16

#: :meth:`StoreReader.history_ids` empties libgit2's object cache after this many
#: commits: the cache otherwise keeps every commit of the walk (about 1.5 KiB each).
HISTORY_CACHE_RUN = 1024



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


class SignedCommitFiles(NamedTuple):
    """:meth:`StoreReader.signed_commit_files`: the added files and the commit's parts."""

    files: CommitFiles
    parent_count: int
    signature: bytes | None
    signed: bytes | None


def common_dir(git_dir: Path) -> Path:
    """Return the repository's common git directory: a linked worktree's ``commondir``
    (where grafts, shallow and refs live), else ``git_dir`` itself."""
    try:
        pointer = (git_dir / "commondir").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return git_dir
    return (git_dir / pointer).resolve() if pointer else git_dir


class StoreReader:
    """Read evidence on the AFDP branches of one Git repository (never writes)."""

    def __init__(self, path: Path | str) -> None:
        try:
            self.repo = pygit2.Repository(str(path))
        except (pygit2.GitError, KeyError) as exc:
            raise NotFoundError(
                f"{path} is not an evidence repository (run 'afdp init {path}')"
            ) from exc
        self.path = Path(self.repo.path)
        self._trees: dict[bytes, bytes] = {}
        self._last_keys: dict[bytes, bytes] = {}

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
        return list(self._first_parents(head))[::-1]

    def history_ids(self, head: pygit2.Commit) -> bytes:
        """Return the raw 20-byte ids of :meth:`history`'s commits, oldest first, end to end.

        The same walk and errors, holding no commit object: libgit2's object cache (it
        keeps every commit read) is emptied every ``HISTORY_CACHE_RUN`` commits.

        Raises:
            ObjectError: a parent commit is missing or corrupt (named with its child).
        """
        newest_first = bytearray()
        for count, commit in enumerate(self._first_parents(head), 1):
            newest_first += commit.id.raw
            if count % HISTORY_CACHE_RUN == 0:
                self.repo.free()
        self.repo.free()
        size = len(newest_first)
        oldest_first = bytearray(size)
        for at in range(0, size, 20):
            oldest_first[size - at - 20 : size - at] = newest_first[at : at + 20]
        return bytes(oldest_first)

    def _first_parents(self, head: pygit2.Commit) -> Iterator[pygit2.Commit]:
        """Yield ``head`` and its first parents, newest first (see :meth:`history`)."""
        commit: pygit2.Commit | None = head
        while commit is not None:
            yield commit
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

    def signed_commit_files(self, oid: pygit2.Oid) -> SignedCommitFiles:
        """:meth:`commit_files`, and the commit's parent count and signature as
        libgit2 reads them (``Commit.gpg_signature``).

        Every part of a commit that verification judges is read by libgit2, never by a
        parser of AFDP's own: a reading that differed from git's on some crafted commit
        would verify content other than what ``git`` shows.
        """
        commit = self.repo.get(oid)
        assert isinstance(commit, pygit2.Commit)  # history() read each one already
        signature, signed = commit.gpg_signature
        return SignedCommitFiles(
            self.commit_files(commit), len(commit.parent_ids), signature, signed
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
        if prefix.count("/") > MAX_TREE_DEPTH:
            walk.problems.append(
                ("commit", f"{where[:200]!r} nests directories deeper than {MAX_TREE_DEPTH} levels (AFDP writes 3); not read")
            )
            return
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
