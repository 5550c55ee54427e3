"""Durability of a written record follows the repository's Git setting (``core.fsync``).

Real parts: a real repository, the embedded TSA over loopback HTTP, ``append_record``.
What is observed is the kernel interface itself: ``os.fsync`` is wrapped (the standard
library's, not AFDP's code) to note which file each flush reached, through
``/proc/self/fd``; a disk that refuses a flush is ``os.fsync`` raising ``EIO``.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pygit2
import pytest
from conftest import Tsa, add_step

from afdp.errors import StorageError
from afdp.evidence import records as rec
from afdp.evidence.ledger import append_record, append_records
from afdp.evidence.names import branch_ref
from afdp.evidence.store import EvidenceStore, fsync_policy

REF = branch_ref("api", "d-42")


@pytest.fixture()
def flushed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths every ``os.fsync`` of this test reached, in order."""
    seen: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        seen.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return seen


def _new_objects(repo: Path) -> list[str]:
    """Loose-object paths of the head commit and everything it added."""
    git = pygit2.Repository(str(repo))
    head = git.get(git.references[REF].target)
    parent_tree = head.parents[0].tree if head.parents else None
    found = [str(head.id)]

    def walk(tree: pygit2.Tree, old: pygit2.Tree | None) -> None:
        found.append(str(tree.id))
        for entry in tree:
            before = old[entry.name] if old is not None and entry.name in old else None
            if before is not None and before.id == entry.id:
                continue
            obj = git.get(entry.id)
            if isinstance(obj, pygit2.Tree):
                walk(obj, git.get(before.id) if before is not None else None)
            else:
                found.append(str(entry.id))

    walk(head.tree, parent_tree)
    objects = Path(git.path) / "objects"
    return [str(objects / h[:2] / h[2:]) for h in found]


@pytest.mark.parametrize(
    ("value", "objects", "references"),
    [
        (None, False, False),
        ("committed", True, True),
        ("added", True, True),
        ("all", True, True),
        ("loose-object", True, False),
        ("objects", True, False),
        ("reference", False, True),
        ("objects,-loose-object", True, False),  # Git: an added component stays
        ("committed,none", False, False),
        ("pack,index", False, False),  # files AFDP never writes
    ],
)
def test_fsync_policy_reads_git_core_fsync(repo: Path, value, objects, references) -> None:
    git = pygit2.Repository(str(repo))
    if value is not None:
        git.config["core.fsync"] = value
    policy = fsync_policy(git.config)
    assert (policy.objects, policy.references) == (objects, references)


def test_fsync_object_files_true_counts_even_when_core_fsync_says_none(repo: Path) -> None:
    git = pygit2.Repository(str(repo))
    git.config["core.fsync"] = "none"
    git.config["core.fsyncObjectFiles"] = True
    assert fsync_policy(git.config).objects


def test_committed_flushes_every_new_object_before_the_ref_and_the_ref_after(
    repo: Path, signer, tsa: Tsa, flushed: list[str]
) -> None:
    add_step(repo, signer, tsa, "capture_baseline", {"i": 0})
    pygit2.Repository(str(repo)).config["core.fsync"] = "committed"
    flushed.clear()
    add_step(repo, signer, tsa, "capture_impact", {"i": 1})
    git_dir = Path(pygit2.Repository(str(repo)).path)
    ref_file = str(git_dir / REF)
    objects = _new_objects(repo)
    assert set(objects) <= set(flushed), set(objects) - set(flushed)
    assert ref_file in flushed and str(Path(ref_file).parent) in flushed
    # every object, and the folders naming them, reach the disk before the ref does
    assert max(flushed.index(o) for o in objects) < flushed.index(ref_file)
    assert str(git_dir / "objects") in flushed[: flushed.index(ref_file)]


def test_without_a_setting_nothing_is_flushed_as_git_does_by_default(
    repo: Path, signer, tsa: Tsa, flushed: list[str]
) -> None:
    add_step(repo, signer, tsa, "capture_baseline", {"i": 0})
    assert not [p for p in flushed if p.startswith(str(repo))]


def test_a_batch_flushes_all_its_objects_once_before_its_one_ref_update(
    repo: Path, signer, tsa: Tsa, flushed: list[str]
) -> None:
    pygit2.Repository(str(repo)).config["core.fsync"] = "committed"
    drafts = [rec.RecordDraft(kind=rec.KIND_STEP, step=f"s{i}", result={"i": i}) for i in range(3)]
    written = append_records(repo, service="api", deployment="d-42", drafts=drafts, signer=signer, tsa_urls=[tsa.url])
    assert len(written) == 4  # genesis + 3
    git = pygit2.Repository(str(repo))
    ref_file = str(Path(git.path) / REF)
    objects = Path(git.path) / "objects"
    commits = [str(objects / r.commit_id[:2] / r.commit_id[2:]) for r in written]
    assert all(c in flushed for c in commits)
    assert flushed.count(ref_file) == 1
    assert max(flushed.index(c) for c in commits) < flushed.index(ref_file)


def test_a_disk_that_refuses_a_flush_leaves_the_branch_where_it_was(
    repo: Path, signer, tsa: Tsa, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_step(repo, signer, tsa, "capture_baseline", {"i": 0})
    before = EvidenceStore(repo).head(REF).id
    pygit2.Repository(str(repo)).config["core.fsync"] = "committed"

    def refuse(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", refuse)
    with pytest.raises(StorageError, match="cannot flush evidence objects to disk"):
        add_step(repo, signer, tsa, "capture_impact", {"i": 1})
    monkeypatch.undo()
    assert EvidenceStore(repo).head(REF).id == before


def test_a_ref_that_cannot_be_flushed_is_not_acknowledged(
    repo: Path, signer, tsa: Tsa, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_step(repo, signer, tsa, "capture_baseline", {"i": 0})
    pygit2.Repository(str(repo)).config["core.fsync"] = "reference"

    def refuse(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", refuse)
    with pytest.raises(StorageError, match="moved, but cannot be flushed to disk"):
        append_record(
            repo,
            service="api",
            deployment="d-42",
            draft=rec.RecordDraft(kind=rec.KIND_STEP, step="capture_impact", result={"i": 1}),
            signer=signer,
            tsa_urls=[tsa.url],
        )


def _files(git_dir: Path) -> dict[str, int]:
    """Every file under the git folder, with its inode number."""
    return {str(p): p.stat().st_ino for p in git_dir.rglob("*") if p.is_file()}


def test_one_record_creates_only_its_objects_and_reuses_the_lock_files(
    repo: Path, signer, tsa: Tsa
) -> None:
    add_step(repo, signer, tsa, "capture_baseline", {"i": 0})
    add_step(repo, signer, tsa, "mark_deployment_time", {"i": 1})
    git_dir = Path(pygit2.Repository(str(repo)).path)
    before = _files(git_dir)
    add_step(repo, signer, tsa, "capture_impact", {"i": 2})
    after = _files(git_dir)
    created = set(after) - set(before)
    # the record's own objects: its commit; the root, records/, shard and record trees;
    # the envelope and the token
    assert created == set(_new_objects(repo)), created ^ set(_new_objects(repo))
    assert len(created) == 7
    # no lock, temporary or spool file is left behind, and the turn and ref-writer lock
    # files are the same files (same inodes), reused rather than created per record
    assert not set(before) - set(after)
    locks = [p for p in before if "/afdp-locks/" in p]
    assert len(locks) == 2
    assert all(after[p] == before[p] for p in locks)


@pytest.mark.parametrize("damage", ["zero-length", "missing"])
def test_an_object_lost_to_a_power_cut_is_reported_never_verified(repo: Path, signer, tsa: Tsa, trust_file: Path, damage: str) -> None:
    """What an unflushed append can leave after a power cut: the ref names a loose
    object whose file kept its name but lost its data, or never got to the disk."""
    from afdp.evidence.trust import load_trust_policy
    from afdp.verify.verifier import check_branch

    add_step(repo, signer, tsa, "capture_baseline", {"i": 0})
    add_step(repo, signer, tsa, "capture_impact", {"i": 1})
    lost = Path(_new_objects(repo)[-1])  # the head record's last blob
    lost.chmod(0o644)
    if damage == "zero-length":
        lost.write_bytes(b"")
    else:
        lost.unlink()
    report = check_branch(repo, service="api", deployment="d-42", policy=load_trust_policy(trust_file), allow_unsealed=True)
    assert not report.ok
    oid = lost.parent.name + lost.name
    assert any(oid in failure.reason for failure in report.failures), report.failures
