"""What an attacker with write access to the evidence repository can do, for the tamper tests.

Each helper rewrites the branch with plain pygit2, exactly as someone bypassing AFDP
would, and force-moves the ref. Verification must catch every one of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pygit2

from afdp.evidence import records as rec
from afdp.evidence.names import branch_ref
from afdp.evidence.store import EvidenceStore


@dataclass(frozen=True)
class Entry:
    """One commit of a branch as an attacker sees it: message and the record it added."""

    message: str
    directory: str | None
    files: dict[str, bytes]


def read_branch(repo: Path, service: str = "api", deployment: str = "d-42") -> list[Entry]:
    store = EvidenceStore(repo)
    entries = []
    for commit in store.history(store.head(branch_ref(service, deployment))):
        added = store.commit_files(commit).added
        dirs = {p.rsplit("/", 1)[0] for p in added}
        directory = dirs.pop() if len(dirs) == 1 else None
        files = {p.rsplit("/", 1)[1]: d for p, d in added.items()} if directory else dict(added)
        entries.append(Entry(commit.message, directory, files))
    return entries


def write_branch(repo: Path, entries: list[Entry], service: str = "api", deployment: str = "d-42") -> None:
    """Rebuild the branch from ``entries`` (each adding its directory) and force the ref."""
    git = pygit2.Repository(str(repo))
    # The attacker copies AFDP's committer line (verification refuses any other): what is
    # under test is the edit, not the identity.
    sig = pygit2.Signature("AFDP", "afdp@evidence.invalid", 1_700_000_000, 0)
    tree: pygit2.Tree | None = None
    parent: list[pygit2.Oid] = []
    for entry in entries:
        index = pygit2.Index()
        if tree is not None:
            index.read_tree(tree)
        for name, data in entry.files.items():
            path = f"{entry.directory}/{name}" if entry.directory else name
            index.add(pygit2.IndexEntry(path, git.create_blob(data), pygit2.enums.FileMode.BLOB))
        tree_id = index.write_tree(git)
        commit = git.create_commit(None, sig, sig, entry.message, tree_id, parent)
        parent = [commit]
        tree = git.get(tree_id)
    git.references.create(branch_ref(service, deployment), parent[0], force=True)


def edit(repo: Path, position: int, change: Callable[[Entry], Entry], **names: str) -> None:
    entries = read_branch(repo, **names)
    entries[position] = change(entries[position])
    write_branch(repo, entries, **names)


def with_file(entry: Entry, name: str, data: bytes) -> Entry:
    files = dict(entry.files)
    files[name] = data
    return replace(entry, files=files)


def record_directory(entry: Entry) -> str:
    assert entry.directory is not None
    return entry.directory


__all__ = ["Entry", "read_branch", "write_branch", "edit", "with_file", "rec"]
