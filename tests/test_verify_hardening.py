"""Verification hardening: what git and the verifier read must be the same bytes.

An attacker with write access to the evidence repository writes raw Git objects (trees
with duplicate or unsorted entries, empty directories, executable files, symlinks,
gitlinks), replace refs, grafts, look-alike branch names, branch refs that point at
tags or blobs, and deletes or corrupts objects. Each must be a named failure (exit 1),
never a pass and never a traceback.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import pygit2
import pytest
from conftest import build_deployment

from afdp.evidence.names import branch_ref
from afdp.evidence.trust import load_trust_policy
from afdp.verify.verifier import check_all, check_branch

TREE = pygit2.enums.ObjectType.TREE
REF = branch_ref("api", "d-42")


@pytest.fixture()
def sealed(repo, signer, tsa):
    build_deployment(repo, signer, tsa, steps=2)  # 0 genesis, 1-2 steps, 3 seal
    return repo


def report_of(repo: Path, trust_file: Path, **kw):
    return check_branch(repo, service="api", deployment="d-42", policy=load_trust_policy(trust_file), **kw)


def checks(report) -> list[tuple[str, str]]:
    return [(f.check, f.reason) for f in report.failures]


def history(git: pygit2.Repository) -> list[pygit2.Commit]:
    commit = git.get(git.references[REF].target)
    out = [commit]
    while commit.parents:
        commit = commit.parents[0]
        out.append(commit)
    return out[::-1]


def entry(mode: bytes, name: str, oid: pygit2.Oid) -> bytes:
    return mode + b" " + name.encode() + b"\0" + oid.raw


def raw(git: pygit2.Repository, oid) -> bytes:
    return bytes(git.odb.read(oid)[1])


def rewrite(repo: Path, start: int, change_tree) -> pygit2.Repository:
    """Rewrite commits ``start``.. with ``change_tree(git, tree) -> tree id`` (raw commits,
    signature headers dropped), and force the branch to the result."""
    git = pygit2.Repository(str(repo))
    commits = history(git)
    parent = commits[start - 1].id if start else None
    for commit in commits[start:]:
        head, _, message = raw(git, commit.id).decode().partition("\n\n")
        lines = []
        skipping = False
        for line in head.split("\n"):
            if line.startswith("gpgsig "):
                skipping = True
                continue
            if skipping and line.startswith(" "):
                continue
            skipping = False
            if line.startswith("tree "):
                line = f"tree {change_tree(git, commit.tree)}"
            elif line.startswith("parent ") and parent is not None:
                line = f"parent {parent}"
            lines.append(line)
        parent = git.odb.write(pygit2.enums.ObjectType.COMMIT, ("\n".join(lines) + "\n\n" + message).encode())
    git.references.create(REF, parent, force=True)
    return git


def with_path(git: pygit2.Repository, tree: pygit2.Tree | None, path: str, oid, mode) -> pygit2.Oid:
    parts = path.split("/")
    builder = git.TreeBuilder(tree) if tree is not None else git.TreeBuilder()
    if len(parts) == 1:
        builder.insert(parts[0], oid, mode)
    else:
        existing = builder.get(parts[0])
        sub = git.get(existing.id) if existing is not None else None
        builder.insert(parts[0], with_path(git, sub, "/".join(parts[1:]), oid, mode), pygit2.enums.FileMode.TREE)
    return builder.write()


def replace_raw(git: pygit2.Repository, tree: pygit2.Tree, path: str, new_raw: bytes) -> pygit2.Oid:
    """Return ``tree`` with the tree at ``path`` replaced by raw bytes (no libgit2 checks)."""
    oid = git.odb.write(TREE, new_raw)
    parts = path.split("/")
    for depth in range(len(parts), 0, -1):
        parent_path = "/".join(parts[: depth - 1])
        parent = git.get(tree[parent_path].id) if parent_path else tree
        old_child = parent[parts[depth - 1]].id
        oid = git.odb.write(TREE, raw(git, parent.id).replace(old_child.raw, oid.raw))
    return oid


# -- 1. duplicate and unsorted tree entries --------------------------------------------


def test_duplicate_record_directory_is_a_commit_failure(sealed, trust_file):
    # git shows the first of two same-named entries, a dict keeps the last: the forged
    # directory goes first, the genuine one second.
    forged_leaf = {}

    def duplicate(git, tree):
        genuine = tree["records/000/000002-mark_deployment_time"]
        if "leaf" not in forged_leaf:
            builder = git.TreeBuilder(git.get(genuine.id))
            builder.insert("envelope.json", git.create_blob(b'{"forged":true}'), pygit2.enums.FileMode.BLOB)
            forged_leaf["leaf"] = builder.write()
        shard = raw(git, tree["records/000"].id)
        genuine_entry = entry(b"40000", "000002-mark_deployment_time", genuine.id)
        doubled = shard.replace(genuine_entry, entry(b"40000", "000002-mark_deployment_time", forged_leaf["leaf"]) + genuine_entry)
        return replace_raw(git, tree, "records/000", doubled)

    rewrite(sealed, 2, duplicate)
    report = report_of(sealed, trust_file)
    assert not report.ok
    assert any(c == "commit" and "duplicate entry '000002-mark_deployment_time'" in r for c, r in checks(report))


def test_unsorted_tree_entries_are_a_commit_failure(sealed, trust_file):
    def unsort(git, tree):
        shard = raw(git, tree["records/000"].id)
        first = entry(b"40000", "000000-genesis", tree["records/000/000000-genesis"].id)
        second = entry(b"40000", "000001-capture_baseline", tree["records/000/000001-capture_baseline"].id)
        return replace_raw(git, tree, "records/000", shard.replace(first + second, second + first))

    rewrite(sealed, 2, unsort)
    report = report_of(sealed, trust_file)
    assert any(c == "commit" and "treeNotSorted" in r for c, r in checks(report))


# -- 2c. empty trees anywhere ----------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "path"),
    [
        (2, "APPROVED_BY_CTO"),  # root
        (2, "records/000/000099-approval"),  # a record-like directory
        (2, "records/000/000002-mark_deployment_time/extra"),  # inside a record
        (0, "notes"),  # in the genesis commit
        (2, "records/999"),  # under records/
    ],
)
def test_empty_directories_fail(sealed, trust_file, start, path):
    rewrite(sealed, start, lambda git, tree: with_path(git, tree, path, git.TreeBuilder().write(), pygit2.enums.FileMode.TREE))
    report = report_of(sealed, trust_file)
    assert any(c == "commit" and f"{path} is an empty directory" in r for c, r in checks(report)), report.failures


# -- 12. precise messages for files that are not regular -------------------------------


@pytest.mark.parametrize(
    ("mode", "what"),
    [
        (pygit2.enums.FileMode.BLOB_EXECUTABLE, "100755 (an executable file)"),
        (pygit2.enums.FileMode.LINK, "120000 (a symbolic link)"),
    ],
)
def test_non_regular_files_are_named(sealed, trust_file, mode, what):
    path = "records/000/000002-mark_deployment_time/envelope.json"
    rewrite(sealed, 2, lambda git, tree: with_path(git, tree, path, tree[path].id, mode))
    report = report_of(sealed, trust_file)
    named = [(f.where, f.check, f.reason) for f in report.failures]
    assert ("record 2 (mark_deployment_time)", "layout", f"envelope.json has mode {what}; only regular files (100644) are allowed") in named


def test_gitlink_is_named(sealed, trust_file):
    rewrite(sealed, 0, lambda git, tree: with_path(git, tree, "vendor", pygit2.Oid(hex="1" * 40), pygit2.enums.FileMode.COMMIT))
    report = report_of(sealed, trust_file)
    assert ("layout", "vendor has mode 160000 (a submodule (gitlink)); only regular files (100644) are allowed") in checks(report)


# -- 3. git replace, grafts, shallow ----------------------------------------------------


def test_replace_ref_fails_the_branch(sealed, trust_file):
    git = pygit2.Repository(str(sealed))
    envelope = history(git)[2].tree["records/000/000002-mark_deployment_time/envelope.json"].id
    forged = git.create_blob(b'{"forged":"no regression"}')
    git.references.create(f"refs/replace/{envelope}", forged)
    report = report_of(sealed, trust_file)
    assert [c for c, _ in checks(report)] == ["repository"]
    assert f"refs/replace/{envelope}" in report.failures[0].reason


@pytest.mark.parametrize("name", ["info/grafts", "shallow"])
def test_grafts_and_shallow_fail_the_branch(sealed, trust_file, name):
    git = pygit2.Repository(str(sealed))
    path = Path(git.path) / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"{history(git)[2].id}\n")
    report = report_of(sealed, trust_file)
    assert any(c == "repository" and name in r for c, r in checks(report))


# -- 7. missing and corrupt objects ------------------------------------------------------


def _loose(git: pygit2.Repository, oid) -> Path:
    text = str(oid)
    return Path(git.path) / "objects" / text[:2] / text[2:]


def test_missing_blob_is_a_commit_failure(sealed, trust_file):
    git = pygit2.Repository(str(sealed))
    blob = history(git)[1].tree["records/000/000001-capture_baseline/timestamp-0.tsr"].id
    _loose(git, blob).unlink()
    report = report_of(sealed, trust_file)
    assert any(c == "commit" and f"object {blob}" in r and "missing" in r for c, r in checks(report))


def test_corrupt_blob_is_a_commit_failure(sealed, trust_file):
    git = pygit2.Repository(str(sealed))
    blob = history(git)[2].tree["records/000/000002-mark_deployment_time/envelope.json"].id
    data = git.get(blob).data.replace(b'"sig":"', b'"sig":"X')
    path = _loose(git, blob)
    path.chmod(0o644)
    path.write_bytes(zlib.compress(f"blob {len(data)}\0".encode() + data))
    report = report_of(sealed, trust_file)
    assert any(c == "commit" and f"object {blob}" in r and "corrupt" in r for c, r in checks(report))


def test_missing_commit_is_a_repository_failure(sealed, trust_file):
    git = pygit2.Repository(str(sealed))
    commit = history(git)[1].id
    _loose(git, commit).unlink()
    report = report_of(sealed, trust_file)
    assert [c for c, _ in checks(report)] == ["repository"]
    assert f"parent {commit} is missing" in report.failures[0].reason


# -- 8. size limits read from the object header -----------------------------------------


def test_oversized_envelope_is_refused_before_reading(sealed, trust_file, monkeypatch):
    from afdp.evidence.store import MAX_ENVELOPE_BYTES, EvidenceStore

    git = pygit2.Repository(str(sealed))
    big = git.create_blob(b" " * (MAX_ENVELOPE_BYTES + 1))
    path = "records/000/000002-mark_deployment_time/envelope.json"
    rewrite(sealed, 2, lambda g, tree: with_path(g, tree, path, big, pygit2.enums.FileMode.BLOB))
    read = EvidenceStore._raw  # noqa: SLF001
    seen: list[str] = []

    def spy(self, oid):
        seen.append(str(oid) if isinstance(oid, pygit2.Oid) else oid.hex())
        return read(self, oid)

    monkeypatch.setattr(EvidenceStore, "_raw", spy)
    report = report_of(sealed, trust_file)
    assert any(
        f.where == "record 2 (mark_deployment_time)" and f.check == "layout" and f"envelope.json is {MAX_ENVELOPE_BYTES + 1} bytes, over the 1 MiB limit" in f.reason
        for f in report.failures
    )
    assert str(big) not in seen


def test_oversized_attachment_is_refused(sealed, trust_file, monkeypatch):
    import afdp.evidence.store.read

    monkeypatch.setattr(afdp.evidence.store.read, "MAX_FILE_BYTES", 100)
    report = report_of(sealed, trust_file)
    assert any(c == "layout" and "timestamp-0.tsr is" in r and "limit" in r for c, r in checks(report))


# -- 9. look-alike branches; 11. branch refs that are not commits ----------------------


def test_lookalike_branches_are_failures_with_all(sealed, trust_file):
    git = pygit2.Repository(str(sealed))
    head = git.references[REF].target
    names = ["refs/heads/afdp/api/d\u20111", "refs/heads/afdp/api/d-1/extra", "refs/heads/afdp/api/-d1", "refs/heads/afdp/solo", "refs/heads/afdp/\u0430pi/d-1"]
    for name in names:
        git.references.create(name, head)
    reports = check_all(sealed, policy=load_trust_policy(trust_file))
    bad = {r.ref for r in reports if not r.ok}
    assert bad == set(names)
    assert all(r.failures[0].check == "repository" for r in reports if not r.ok)
    assert [r.state for r in reports if r.ref == REF] == ["verified"]


@pytest.mark.parametrize("kind", ["tag", "blob"])
def test_branch_pointing_at_a_tag_or_blob_fails_and_all_continues(repo, signer, tsa, trust_file, kind):
    build_deployment(repo, signer, tsa, steps=1)
    build_deployment(repo, signer, tsa, steps=1, deployment="d-43")
    git = pygit2.Repository(str(repo))
    sig = pygit2.Signature("m", "m@example.invalid")
    target = (
        git.create_tag("t", git.references[REF].target, pygit2.enums.ObjectType.COMMIT, sig, "tag")
        if kind == "tag"
        else git.create_blob(b"x")
    )
    git.references.create(REF, target, force=True)
    reports = check_all(repo, policy=load_trust_policy(trust_file))
    states = {r.deployment: r.state for r in reports}
    assert states == {"d-42": "failed", "d-43": "verified"}
    failed = next(r for r in reports if r.deployment == "d-42")
    assert failed.failures[0].check == "repository" and f"points at a {kind}" in failed.failures[0].reason


def test_cli_exit_code_for_a_tag_branch(repo, signer, tsa, trust_file, cli):
    build_deployment(repo, signer, tsa, steps=1)
    git = pygit2.Repository(str(repo))
    sig = pygit2.Signature("m", "m@example.invalid")
    git.references.create(REF, git.create_tag("t", git.references[REF].target, pygit2.enums.ObjectType.COMMIT, sig, "t"), force=True)
    result = cli("verify", "--repo", str(repo), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file))
    assert result.code == 1


def test_oversized_commit_and_tree_objects_are_not_read(sealed, trust_file, monkeypatch):
    import afdp.evidence.store.read

    monkeypatch.setattr(afdp.evidence.store.read, "MAX_COMMIT_BYTES", 100)
    report = report_of(sealed, trust_file)
    assert [c for c, _ in checks(report)] == ["repository"] and "over the" in report.failures[0].reason
    monkeypatch.setattr(afdp.evidence.store.read, "MAX_COMMIT_BYTES", 1 << 20)
    monkeypatch.setattr(afdp.evidence.store.read, "MAX_TREE_BYTES", 40)
    report = report_of(sealed, trust_file)
    assert any(c == "commit" and "tree, over the" in r for c, r in checks(report))
