"""Re-audit findings: forged time-stamp token names, commit headers git honours and
AFDP never writes (encoding, extras), a committer other than AFDP's, git notes, grafts
reached through a linked worktree, invisible file names in messages.

Branches signed with RSA-PSS keys carry no Git signature, so an attacker may rewrite
any commit byte that no check binds: each test does exactly that with raw objects and
expects a named failure (never a pass, never a traceback).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path

import pygit2
import pytest
from conftest import build_deployment
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from tamper import Entry, read_branch, write_branch

from afdp.audit.story import read_story
from afdp.evidence import records as rec
from afdp.evidence.names import branch_ref
from afdp.evidence.trust import load_trust_policy, write_trust_policy
from afdp.verify.verifier import check_branch

REF = branch_ref("api", "d-42")
COMMIT = pygit2.enums.ObjectType.COMMIT
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture()
def branch(repo: Path, tmp_path: Path, tsa):
    """A sealed RSA-PSS branch (no commit signatures): 0 genesis, 1-2 steps, 3 seal."""
    from afdp.evidence.signing import load_signer

    private, public = tmp_path / "rsa.key", tmp_path / "rsa.key.pub"
    private.write_bytes(RSA_KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    public.write_bytes(RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    trust = tmp_path / "auditor" / "trust.yaml"
    trust.parent.mkdir()
    write_trust_policy(trust, keys=[public], tsa_roots=[tsa.directory / "root.pem"])
    build_deployment(repo, load_signer(str(private)), tsa, steps=2)
    assert pygit2.Repository(str(repo)).references[REF].peel().gpg_signature == (None, None)
    return repo, trust


def report_of(repo: Path, trust: Path):
    return check_branch(repo, service="api", deployment="d-42", policy=load_trust_policy(trust))


def reasons(report) -> list[tuple[str, str]]:
    return [(f.check, f.reason) for f in report.failures]


def raw_commits(repo: Path) -> tuple[pygit2.Repository, list[bytes]]:
    git = pygit2.Repository(str(repo))
    commit = git.references[REF].peel()
    ids = [commit.id]
    while commit.parents:
        commit = commit.parents[0]
        ids.append(commit.id)
    return git, [bytes(git.odb.read(i)[1]) for i in reversed(ids)]


def rewrite_raw(repo: Path, position: int, edit) -> None:
    """Replace commit ``position``'s raw bytes by ``edit(raw)`` and re-parent the later
    commits onto it (their bytes otherwise unchanged), then force the branch."""
    git, raws = raw_commits(repo)
    new_id = None
    for index, data in enumerate(raws):
        if index < position:
            continue
        if index == position:
            data = edit(data)
        else:
            data = re.sub(rb"^parent [0-9a-f]{40}$", b"parent " + str(new_id).encode(), data, count=1, flags=re.M)
        new_id = git.odb.write(COMMIT, data)
    git.references.create(REF, new_id, force=True)


def add_header(header: bytes):
    def edit(raw: bytes) -> bytes:
        head, _, message = raw.partition(b"\n\n")
        return head + b"\n" + header + b"\n\n" + message

    return edit


# -- 1. time-stamp token names ------------------------------------------------------------


@pytest.mark.parametrize("name", ["timestamp-1.tsr", "timestamp-00.tsr", "timestamp-\u0660.tsr", "timestamp-\uff10.tsr"])
def test_renamed_seal_token_cannot_hide_a_forged_commit_message(branch, name):
    repo, trust = branch
    entries = read_branch(repo)
    seal = entries[3]
    files = dict(seal.files)
    files[name] = files.pop("timestamp-0.tsr")
    digest = re.search(r"AFDP-Digest: .*", seal.message).group(0)
    forged = f"seal: ROLLBACK executed by on-call\n\nRecord 3 of api/d-42 (seal, status failed).\n\nAFDP-Status: failed\n{digest}\n"
    entries[3] = Entry(forged, seal.directory, files)
    write_branch(repo, entries)
    report = report_of(repo, trust)
    assert report.state == "failed"
    found = reasons(report)
    assert ("commit", "the commit message cannot be checked: the record has no valid timestamp-0.tsr to regenerate it from") in found
    assert any(check == "layout" for check, _ in found), found


def test_token_names_are_ascii_without_leading_zeros_and_contiguous():
    assert rec.TIMESTAMP_FILE.fullmatch("timestamp-0.tsr") and rec.TIMESTAMP_FILE.fullmatch("timestamp-12.tsr")
    for bad in ("timestamp-00.tsr", "timestamp-01.tsr", "timestamp-\u0660.tsr", "timestamp-\u0661.tsr", "timestamp-\uff11.tsr"):
        assert not rec.TIMESTAMP_FILE.fullmatch(bad), bad
    assert not rec.RECORD_DIR.fullmatch("\u0660" * 6 + "-step")
    assert rec.token_names_problem(["timestamp-0.tsr", "timestamp-1.tsr"]) is None
    assert rec.token_names_problem([]) is None
    assert "numbered 0, 2" in rec.token_names_problem(["timestamp-0.tsr", "timestamp-2.tsr"])
    assert "numbered 1" in rec.token_names_problem(["timestamp-1.tsr"])


# -- 2. commit headers: encoding and anything else AFDP never writes -----------------------


@pytest.mark.parametrize(
    ("encoding", "old", "new"),
    [
        (b"UTF-16", b"", b""),
        (b"bogus-enc", b"", b""),
        (b"UTF-7", b"AFDP-Status: ok", b"AFDP-Status: +AG8-k"),
        (b"unicode_escape", b"AFDP-Status: ok", b"AFDP-Status: \\x6fk"),
    ],
)
def test_encoding_header_is_refused_without_a_traceback(branch, encoding, old, new):
    repo, trust = branch

    def edit(raw: bytes) -> bytes:
        head, _, message = raw.partition(b"\n\n")
        return head + b"\nencoding " + encoding + b"\n\n" + message.replace(old, new)

    rewrite_raw(repo, 2, edit)
    report = report_of(repo, trust)
    found = reasons(report)
    assert report.state == "failed"
    assert ("commit", "commit header 'encoding' is not one AFDP writes (git may show other content)") in found
    if old:  # the raw message bytes are compared: what git shows differs from AFDP's
        assert any("commit message is not the one AFDP writes" in r for _, r in found), found
    story = read_story(repo, service="api", deployment="d-42")  # afdp log: display only, no traceback
    assert len(story["records"]) == 4


def test_message_that_is_not_utf8_fails(branch):
    repo, trust = branch
    rewrite_raw(repo, 1, lambda raw: raw.replace(b"AFDP-Status: ok", b"AFDP-Status: \xffok"))
    found = reasons(report_of(repo, trust))
    assert ("commit", "commit message is not UTF-8: AFDP writes UTF-8 only") in found
    assert any("commit message is not the one AFDP writes" in r for _, r in found), found


@pytest.mark.parametrize("header", [b"x-approved-by cto", b"mergetag object 0000000000000000000000000000000000000000", b"gpgsig-sha256 x"])
def test_extra_commit_header_is_refused(branch, header):
    repo, trust = branch
    rewrite_raw(repo, 2, add_header(header))
    name = header.split(b" ")[0].decode()
    assert ("commit", f"commit header {name!r} is not one AFDP writes (git may show other content)") in reasons(report_of(repo, trust))


# -- 4. committer and author ----------------------------------------------------------------


def test_committer_other_than_afdp_is_refused(branch):
    repo, trust = branch
    rewrite_raw(repo, 2, lambda raw: re.sub(rb"^committer .*$", b"committer Mallory <mallory@evil> 1700000000 +0000", raw, count=1, flags=re.M))
    found = reasons(report_of(repo, trust))
    assert any(c == "commit" and r.startswith("committer 'Mallory <mallory@evil>") for c, r in found), found


def test_committer_time_zone_other_than_utc_is_refused(branch):
    repo, trust = branch
    rewrite_raw(repo, 1, lambda raw: re.sub(rb"^(committer AFDP <afdp@evidence.invalid> [0-9]+) \+0000$", rb"\1 +0200", raw, count=1, flags=re.M))
    assert any(r.startswith("committer 'AFDP") for _, r in reasons(report_of(repo, trust)))


def test_author_time_must_be_the_commit_time(branch):
    repo, trust = branch
    rewrite_raw(repo, 2, lambda raw: re.sub(rb"^author (.*) [0-9]+ \+0000$", rb"author \1 1700000000 +0000", raw, count=1, flags=re.M))
    found = reasons(report_of(repo, trust))
    assert any(c == "commit" and r.startswith("author time 1700000000 +0000 differs") for c, r in found), found


def test_untampered_pss_branch_verifies(branch):
    # the writer's own commits pass the header, committer and author-time checks
    repo, trust = branch
    assert report_of(repo, trust).state == "verified"


# -- 3. git notes ---------------------------------------------------------------------------


def test_git_notes_are_a_repository_failure(branch):
    repo, trust = branch
    git = pygit2.Repository(str(repo))
    record = git.references[REF].peel().parents[0]
    who = pygit2.Signature("Mallory", "m@evil.invalid")
    git.create_note("AFDP-Status: failed -- rollback overridden by CTO", who, who, str(record.id))
    found = reasons(report_of(repo, trust))
    assert any(c == "repository" and "refs/notes/commits (git notes" in r for c, r in found), found


# -- 5. grafts through a linked worktree, names shown with repr ------------------------------


def test_grafts_in_the_common_dir_are_seen_from_a_linked_worktree(branch, tmp_path):
    repo, trust = branch
    worktree = tmp_path / "linked"
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", "-q", str(worktree), REF], check=True)
    git = pygit2.Repository(str(repo))
    common = Path(git.path)
    head = git.references[REF].peel()
    (common / "info").mkdir(exist_ok=True)
    (common / "info" / "grafts").write_text(f"{head.id}\n")
    found = reasons(report_of(worktree, trust))
    assert any(c == "repository" and "grafts file" in r for c, r in found), found


def test_file_names_in_layout_messages_are_quoted(branch):
    repo, trust = branch
    entries = read_branch(repo)
    files = dict(entries[2].files)
    files["envelope.json "] = b"{}"
    entries[2] = Entry(entries[2].message, entries[2].directory, files)
    write_branch(repo, entries)
    found = reasons(report_of(repo, trust))
    assert ("layout", "unexpected files in the record: 'envelope.json '") in found


def test_forged_author_on_an_unsigned_commit_fails(branch):
    repo, trust = branch
    rewrite_raw(repo, 2, lambda raw: re.sub(rb"^author [^<]*<[^>]*>", b"author Mallory <mallory@evil>", raw, count=1, flags=re.M))
    found = reasons(report_of(repo, trust))
    assert ("commit", "commit author 'Mallory <mallory@evil>' is not the one the signed record names ('AFDP <afdp@evidence.invalid>')") in found


@pytest.fixture()
def authored(branch, tmp_path, tsa):
    """A second RSA-PSS branch (api/d-43) written with --author Dana."""
    from afdp.evidence.ledger import append_record, seal
    from afdp.evidence.signing import load_signer

    repo, trust = branch
    signer = load_signer(str(tmp_path / "rsa.key"))
    dana = (" Dana Deployer ", "dana@example.invalid")  # libgit2 trims the name
    draft = rec.RecordDraft(kind=rec.KIND_STEP, step="decide", result={"ok": True})
    append_record(repo, service="api", deployment="d-43", draft=draft, signer=signer, tsa_urls=[tsa.url], author=dana)
    seal(repo, service="api", deployment="d-43", signer=signer, tsa_urls=[tsa.url])  # AFDP's author
    return repo, trust


def test_author_given_to_the_ledger_is_bound_by_the_signed_record(authored):
    repo, trust = authored
    policy = load_trust_policy(trust)
    assert check_branch(repo, service="api", deployment="d-43", policy=policy).state == "verified"
    git = pygit2.Repository(str(repo))
    ref = branch_ref("api", "d-43")
    head = git.references[ref].peel()
    assert (head.parents[0].author.name, head.author.name) == ("Dana Deployer", "AFDP")
    envelope = json.loads(git.get(head.tree["records/000/000001-decide/envelope.json"].id).data)
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["predicate"]["context"]["git_author"] == "Dana Deployer <dana@example.invalid>"
    # rewrite the step's author (raw bytes; later commits re-parented)
    ids = [head.parents[0].parents[0].id, head.parents[0].id, head.id]
    raws = [bytes(git.odb.read(i)[1]) for i in ids]
    step = raws[1].replace(b"author Dana Deployer <dana@example.invalid>", b"author Mallory <mallory@evil>")
    step_id = git.odb.write(COMMIT, step)
    seal_id = git.odb.write(COMMIT, raws[2].replace(str(ids[1]).encode(), str(step_id).encode()))
    git.references.create(ref, seal_id, force=True)
    report = check_branch(repo, service="api", deployment="d-43", policy=policy)
    assert [(f.sequence, f.check, f.reason) for f in report.failures] == [
        (1, "commit", "commit author 'Mallory <mallory@evil>' is not the one the signed record names ('Dana Deployer <dana@example.invalid>')")
    ]


@pytest.mark.parametrize("packed", [False, True], ids=["loose", "shadowing-a-packed-copy"])
def test_corrupt_envelope_object_is_one_failure_without_follow_ons(branch, packed):
    import zlib

    repo, trust = branch
    git = pygit2.Repository(str(repo))
    if packed:
        subprocess.run(["git", "-C", str(repo), "repack", "-a", "-d", "-q"], check=True)
        git = pygit2.Repository(str(repo))
    head = git.references[REF].peel()
    blob = head.parents[0].tree["records/000/000002-mark_deployment_time/envelope.json"].id
    data = git.get(blob).data.replace(b'"sig":"', b'"sig":"X')
    path = Path(git.path) / "objects" / str(blob)[:2] / str(blob)[2:]
    path.parent.mkdir(exist_ok=True)
    if path.exists():
        path.chmod(0o644)
    path.write_bytes(zlib.compress(f"blob {len(data)}\0".encode() + data))
    report = report_of(repo, trust)
    assert report.state == "failed"
    assert len(report.failures) == 1, reasons(report)
    check, reason = reasons(report)[0]
    assert check == "commit" and f"object {blob}" in reason and "corrupt" in reason


def test_file_outside_records_is_named_quoted(branch):
    repo, trust = branch
    entries = read_branch(repo)
    files = {f"{entries[2].directory}/{name}": data for name, data in entries[2].files.items()}
    files["README "] = b"trust me"
    entries[2] = Entry(entries[2].message, None, files)
    write_branch(repo, entries)
    found = reasons(report_of(repo, trust))
    assert ("commit", "adds files outside records/: 'README '") in found, found
