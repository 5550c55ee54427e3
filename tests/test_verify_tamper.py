"""Every tamper case of the ledger issue fails verification, naming record and check.

An attacker here has full write access to the evidence repository (tests/tamper.py
rewrites history with plain pygit2 and force-moves the branch) but not the auditor's
trust policy, the signing key or the TSA's key.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from conftest import add_step, build_deployment
from tamper import Entry, edit, read_branch, with_file, write_branch

from afdp.evidence import records as rec
from afdp.evidence.canonical import canonical_bytes
from afdp.evidence.trust import load_trust_policy, write_trust_policy
from afdp.verify.verifier import check_branch, verify_branch


def report_of(repo: Path, trust_file: Path, **kw):
    policy = load_trust_policy(trust_file, evidence_repository=repo)
    return check_branch(repo, service=kw.pop("service", "api"), deployment=kw.pop("deployment", "d-42"), policy=policy, **kw)


def failures(report) -> set[tuple[int | None, str]]:
    return {(f.sequence, f.check) for f in report.failures}


@pytest.fixture()
def sealed(repo, signer, tsa):
    build_deployment(repo, signer, tsa, steps=4)  # records 0..4 + seal 5
    return repo


def test_untampered_branch_verifies(sealed, trust_file):
    report = verify_branch(sealed, service="api", deployment="d-42", policy=load_trust_policy(trust_file))
    assert report.state == "verified"
    assert [r.sequence for r in report.records] == [0, 1, 2, 3, 4, 5]
    assert [r.kind for r in report.records] == ["genesis", "step", "step", "step", "step", "seal"]
    assert all(r.signer == "dev" and r.timestamps for r in report.records)


def _resign(entry: Entry, signer, tsa_url: str, mutate=None) -> Entry:
    """Re-sign (and re-stamp) a record's statement with ``signer``: a well-formed forgery."""
    from afdp.evidence.timestamp import request_timestamp

    envelope = json.loads(entry.files[rec.ENVELOPE_FILE])
    statement = json.loads(base64.b64decode(envelope["payload"]))
    if mutate:
        mutate(statement)
    payload = canonical_bytes(statement)
    raw = signer.sign(rec.pae(rec.PAYLOAD_TYPE, payload))
    sig = bytes.fromhex(raw.signature)
    new_files = dict(entry.files)
    new_files[rec.ENVELOPE_FILE] = rec.envelope_json(payload, signer.public_key.keyid, sig)
    new_files["timestamp-0.tsr"] = request_timestamp(sig, [tsa_url]).der
    return Entry(entry.message, entry.directory, new_files)


def test_byte_changed_in_inline_result(sealed, trust_file):
    def change(entry: Entry) -> Entry:
        envelope = json.loads(entry.files[rec.ENVELOPE_FILE])
        statement = json.loads(base64.b64decode(envelope["payload"]))
        statement["predicate"]["result"]["p99_ms"] = 99  # one value changed
        envelope["payload"] = base64.b64encode(canonical_bytes(statement)).decode()
        return with_file(entry, rec.ENVELOPE_FILE, canonical_bytes(envelope))

    edit(sealed, 2, change)
    report = report_of(sealed, trust_file)
    assert (2, "digest") in failures(report)
    assert (2, "signature") in failures(report)
    assert any(f.where == "record 2 (mark_deployment_time)" for f in report.failures)


def test_byte_changed_in_large_result_file(repo, signer, tsa, trust_file):
    big = {"series": list(range(20000))}
    add_step(repo, signer, tsa, "capture_impact", big)
    entries = read_branch(repo)
    assert rec.RESULT_FILE in entries[1].files
    data = bytearray(entries[1].files[rec.RESULT_FILE])
    data[100] = ord("7") if data[100] != ord("7") else ord("8")
    entries[1] = with_file(entries[1], rec.RESULT_FILE, bytes(data))
    write_branch(repo, entries)
    report = report_of(repo, trust_file, allow_unsealed=True)
    assert (1, "digest") in failures(report)
    assert "result.json does not match" in str(report.failures)


def test_modifying_commit_on_top_is_caught(sealed, trust_file):
    entries = read_branch(sealed)
    target = entries[1]
    entries.append(Entry("fix typo", None, {f"{target.directory}/{rec.ENVELOPE_FILE}": b"{}"}))
    write_branch(sealed, entries)
    report = report_of(sealed, trust_file)
    assert any(f.check == "commit" and "changes existing evidence" in f.reason for f in report.failures)


def test_signature_from_untrusted_key(sealed, attacker, tsa, trust_file):
    edit(sealed, 3, lambda e: _resign(e, attacker, tsa.url))
    report = report_of(sealed, trust_file)
    assert (3, "signer") in failures(report)
    assert any("does not trust" in f.reason for f in report.failures if f.sequence == 3)


def test_valid_signature_moved_from_another_record(sealed, trust_file):
    entries = read_branch(sealed)
    donor = json.loads(entries[1].files[rec.ENVELOPE_FILE])
    target = json.loads(entries[3].files[rec.ENVELOPE_FILE])
    target["signatures"] = donor["signatures"]
    entries[3] = with_file(entries[3], rec.ENVELOPE_FILE, canonical_bytes(target))
    write_branch(sealed, entries)
    report = report_of(sealed, trust_file)
    assert (3, "signature") in failures(report)


def test_timestamp_token_moved_from_another_record(sealed, trust_file):
    entries = read_branch(sealed)
    entries[3] = with_file(entries[3], "timestamp-0.tsr", entries[1].files["timestamp-0.tsr"])
    write_branch(sealed, entries)
    report = report_of(sealed, trust_file)
    assert (3, "timestamp.imprint") in failures(report)


def test_record_removed_from_the_middle(sealed, trust_file):
    entries = read_branch(sealed)
    del entries[2]
    write_branch(sealed, entries)
    report = report_of(sealed, trust_file)
    assert (3, "chain") in failures(report)
    assert any(f.check == "seal" for f in report.failures)


def test_two_records_swapped(sealed, trust_file):
    entries = read_branch(sealed)
    entries[2], entries[3] = entries[3], entries[2]
    write_branch(sealed, entries)
    report = report_of(sealed, trust_file)
    assert (3, "chain") in failures(report)
    assert (2, "chain") in failures(report)


def test_record_grafted_from_another_deployment(repo, signer, tsa, trust_file):
    build_deployment(repo, signer, tsa, deployment="d-42", steps=3)
    build_deployment(repo, signer, tsa, deployment="d-43", steps=3)
    ours, theirs = read_branch(repo, deployment="d-42"), read_branch(repo, deployment="d-43")
    ours[2] = theirs[2]  # same position, same step name, validly signed, wrong deployment
    write_branch(repo, ours, deployment="d-42")
    report = report_of(repo, trust_file)
    assert (2, "identity") in failures(report)
    assert (3, "chain") in failures(report)


def test_commit_with_no_record(sealed, trust_file):
    entries = read_branch(sealed)
    entries.insert(3, Entry("harmless notes", None, {"NOTES.md": b"nothing to see"}))
    write_branch(sealed, entries)
    report = report_of(sealed, trust_file)
    assert any(f.check == "commit" and "outside records/" in f.reason for f in report.failures)
    assert any(f.check == "commit" and "adds no record" in f.reason for f in report.failures)


def test_unsigned_record(sealed, trust_file):
    def strip(entry: Entry) -> Entry:
        envelope = json.loads(entry.files[rec.ENVELOPE_FILE])
        envelope["signatures"] = []
        return with_file(entry, rec.ENVELOPE_FILE, canonical_bytes(envelope))

    edit(sealed, 2, strip)
    report = report_of(sealed, trust_file)
    assert any(f.check == "signature" and f.where.startswith("record 2") for f in report.failures), report.failures


def test_record_without_envelope(sealed, trust_file):
    entries = read_branch(sealed)
    files = dict(entries[2].files)
    del files[rec.ENVELOPE_FILE]
    entries[2] = Entry(entries[2].message, entries[2].directory, files)
    write_branch(sealed, entries)
    report = report_of(sealed, trust_file)
    assert any(f.check == "layout" and "unsigned" in f.reason for f in report.failures)


def test_branch_moved_back_is_unsealed(sealed, trust_file):
    # Truncation: the ref is moved back to an earlier (genuine, signed) commit.
    import pygit2

    from afdp.evidence.names import branch_ref

    git = pygit2.Repository(str(sealed))
    ref = git.references[branch_ref("api", "d-42")]
    earlier = git.get(ref.target).parents[0].parents[0]
    ref.set_target(earlier.id)
    report = report_of(sealed, trust_file)
    assert report.state == "failed"
    assert [(f.where, f.check) for f in report.failures] == [("branch", "seal")]
    allowed = report_of(sealed, trust_file, allow_unsealed=True)
    assert allowed.state == "unsealed"


def test_records_appended_after_the_seal(sealed, signer, tsa, trust_file):
    # The ledger refuses to write after a seal, so the attacker forges one with the real key.
    entries = read_branch(sealed)
    seal_entry = entries[-1]
    from afdp.evidence.canonical import sha256_hex

    draft = rec.RecordDraft(kind=rec.KIND_STEP, step="late_step", result={"x": 1})
    late = rec.build_record(draft, service="api", deployment="d-42", sequence=6, prev=sha256_hex(seal_entry.files[rec.ENVELOPE_FILE]), prev_timestamps={n: sha256_hex(d) for n, d in seal_entry.files.items() if rec.TIMESTAMP_FILE.fullmatch(n)})
    forged = _resign(Entry("late", late.directory, {rec.ENVELOPE_FILE: rec.envelope_json(canonical_bytes(late.statement), "x", b"x")}), signer, tsa.url)
    digest = sha256_hex(forged.files[rec.ENVELOPE_FILE])
    entries.append(Entry(f"late\n\nAFDP-Digest: sha256:{digest}\n", forged.directory, forged.files))
    write_branch(sealed, entries)
    report = report_of(sealed, trust_file)
    assert failures(report) >= {(6, "after-seal")}
    assert ("branch", "seal") in {(f.where, f.check) for f in report.failures}


def test_ledger_refuses_to_append_after_seal(sealed, signer, tsa):
    from afdp.errors import PolicyViolation

    with pytest.raises(PolicyViolation, match="sealed"):
        add_step(sealed, signer, tsa, "late", {"x": 1})


def test_trust_policy_inside_evidence_repository_is_refused(sealed, keys, tsa):
    from afdp.errors import UsageError

    inside = sealed / "trust.yaml"
    write_trust_policy(inside, keys=[keys / "dev.key.pub"], tsa_roots=[tsa.directory / "root.pem"])
    with pytest.raises(UsageError, match="inside the evidence repository"):
        load_trust_policy(inside, evidence_repository=sealed)


def test_trust_policy_committed_to_the_branch_is_ignored(sealed, keys, attacker, tsa, tmp_path, trust_file):
    # The attacker commits a policy trusting their own key and re-signs a record with it.
    evil = tmp_path / "evil.yaml"
    write_trust_policy(evil, keys=[keys / "attacker.key.pub"], tsa_roots=[tsa.directory / "root.pem"])
    entries = read_branch(sealed)
    entries[2] = _resign(entries[2], attacker, tsa.url)
    entries.insert(1, Entry("trust policy", None, {"trust.yaml": evil.read_bytes()}))
    write_branch(sealed, entries)
    report = report_of(sealed, trust_file)  # the auditor's own policy
    assert (2, "signer") in failures(report)
    assert any("outside records/" in f.reason for f in report.failures)


def test_tsa_root_not_in_trust_policy(repo, signer, other_tsa, keys, tsa, tmp_path):
    build_deployment(repo, signer, other_tsa, steps=2)
    trust = tmp_path / "trust.yaml"
    write_trust_policy(trust, keys=[keys / "dev.key.pub"], tsa_roots=[tsa.directory / "root.pem"])
    report = report_of(repo, trust)
    assert {f.check for f in report.failures} == {"timestamp.chain"}
    assert {f.sequence for f in report.failures} == {0, 1, 2, 3}


def test_signer_limited_to_other_services(repo, signer, tsa, keys, tmp_path):
    build_deployment(repo, signer, tsa, steps=1)
    trust = tmp_path / "trust.yaml"
    policy = write_trust_policy(trust, keys=[keys / "dev.key.pub"], tsa_roots=[tsa.directory / "root.pem"])
    document = dict(policy.document)
    document["signers"] = [dict(document["signers"][0], services=["payments-*"])]
    import yaml

    trust.write_text(yaml.safe_dump(document))
    report = report_of(repo, trust)
    assert {f.check for f in report.failures} == {"signer"}


def test_every_failure_is_reported_not_only_the_first(sealed, attacker, tsa, trust_file):
    entries = read_branch(sealed)
    entries[1] = _resign(entries[1], attacker, tsa.url)
    entries[4] = with_file(entries[4], "timestamp-0.tsr", entries[3].files["timestamp-0.tsr"])
    write_branch(sealed, entries)
    report = report_of(sealed, trust_file)
    assert (1, "signer") in failures(report)
    assert (4, "timestamp.imprint") in failures(report)


def test_time_claims_after_the_timestamp_fail(repo, signer, tsa, trust_file):
    from datetime import timedelta

    future = rec.utc_now() + timedelta(hours=2)
    add_step(repo, signer, tsa, "capture_impact", {"a": 1}, started_at=future, finished_at=future)
    report = report_of(repo, trust_file, allow_unsealed=True)
    assert (1, "time") in failures(report)


def test_parallel_and_serial_verification_agree(sealed, trust_file):
    entries = read_branch(sealed)
    entries[3] = with_file(entries[3], "timestamp-0.tsr", entries[1].files["timestamp-0.tsr"])
    write_branch(sealed, entries)
    serial = report_of(sealed, trust_file, jobs=1)
    parallel = report_of(sealed, trust_file, jobs=2)
    assert serial.failures == parallel.failures
    assert serial.records == parallel.records


def test_concurrent_writers_never_lose_or_duplicate_records(repo, keys, tsa, trust_file):
    import threading

    from afdp.evidence.signing import load_signer

    errors: list[BaseException] = []

    def writer(n: int) -> None:
        signer = load_signer(str(keys / "dev.key"))  # one signer per thread
        try:
            for i in range(5):
                add_step(repo, signer, tsa, f"w{n}", {"writer": n, "i": i})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    report = report_of(repo, trust_file, allow_unsealed=True)
    assert report.ok, report.failures
    assert len(report.records) == 1 + 15
    assert sorted(r.sequence for r in report.records) == list(range(16))




def test_long_branch_seal_stored_as_result_file(repo, signer, tsa, trust_file, monkeypatch):
    # A seal listing many records outgrows the inline limit and moves to result.json; it
    # must still be read (and a tampered one still caught). The limit is lowered so that a
    # short branch shows what a 10,000-record branch does.
    monkeypatch.setattr(rec, "INLINE_RESULT_LIMIT", 200)
    build_deployment(repo, signer, tsa, steps=3)
    entries = read_branch(repo)
    assert rec.RESULT_FILE in entries[-1].files
    assert report_of(repo, trust_file).state == "verified"
    listing = json.loads(entries[-1].files[rec.RESULT_FILE])
    listing["records"][1]["sha256"] = "0" * 64
    entries[-1] = with_file(entries[-1], rec.RESULT_FILE, canonical_bytes(listing))
    write_branch(repo, entries)
    report = report_of(repo, trust_file)
    assert (4, "digest") in failures(report) and (4, "seal") in failures(report)


def test_commit_that_appends_a_record_and_edits_an_older_one(sealed, trust_file):
    # Looks like an append (the fast tree comparison's case) but also rewrites record 1:
    # the verifier must fall back to the full diff and report the edit.
    import pygit2

    from afdp.evidence.names import branch_ref
    from afdp.evidence.store import EvidenceStore

    target = read_branch(sealed)[1]
    git_store = EvidenceStore(sealed)
    head = git_store.head(branch_ref("api", "d-42"))
    git = git_store.repo
    index = pygit2.Index()
    index.read_tree(head.parents[0].tree)
    index.add(pygit2.IndexEntry(f"{target.directory}/{rec.ENVELOPE_FILE}", git.create_blob(b"{}"), pygit2.enums.FileMode.BLOB))
    index.add(pygit2.IndexEntry("records/000/000009-extra/envelope.json", git.create_blob(b"{}"), pygit2.enums.FileMode.BLOB))
    sig = pygit2.Signature("mallory", "m@example.invalid")
    commit = git.create_commit(None, sig, sig, "append and edit", index.write_tree(git), [head.parents[0].id])
    git.references.create(branch_ref("api", "d-42"), commit, force=True)
    content = git_store.commit_files(git.get(commit))
    assert f"{target.directory}/{rec.ENVELOPE_FILE}" in content.changed
    report = report_of(sealed, trust_file)
    assert any(f.check == "commit" and "changes existing evidence" in f.reason for f in report.failures)


def test_fast_and_full_commit_comparison_agree_on_afdp_commits(sealed):
    from afdp.evidence.names import branch_ref
    from afdp.evidence.store import EvidenceStore

    store = EvidenceStore(sealed)
    for commit in store.history(store.head(branch_ref("api", "d-42")))[1:]:
        content = store.commit_files(commit)
        diff = store.repo.diff(commit.parents[0].tree, commit.tree)
        assert not content.changed and not content.problems
        assert content.added == {d.new_file.path: store.repo.get(d.new_file.id).data for d in diff.deltas}


@pytest.mark.parametrize(
    ("rewrite", "reason"),
    [
        # a key named twice: Python's json (and jq) read the last value, others the first
        (lambda data: data[:-1] + b',"verdict":"pass"}', "names 'verdict' twice"),
        (lambda data: data.replace(b'"series":', b'"series" : '), "not in RFC 8785 canonical form"),
        (lambda data: data[:-1] + b',"z":NaN}', "nan is not representable"),
    ],
    ids=["duplicate-key", "spacing", "nan"],
)
def test_large_result_file_that_is_not_the_canonical_result_fails(repo, signer, tsa, trust_file, monkeypatch, rewrite, reason):
    """Another writer holding the trusted key signs result.json bytes that are not the
    canonical result (AFDP's writer never does): the digest matches what was signed, yet
    the subject digest is no longer "the SHA-256 of the canonical result", and tools
    would read such bytes differently. Test double: AFDP's own writer, its result bytes
    rewritten before they are hashed and signed."""
    import afdp.evidence.records as records

    real = records.canonical_bytes

    def writer(value):
        data = real(value)
        return rewrite(data) if isinstance(value, dict) and "series" in value else data

    monkeypatch.setattr(records, "canonical_bytes", writer)
    add_step(repo, signer, tsa, "capture_impact", {"series": list(range(20000)), "verdict": "fail"})
    monkeypatch.undo()
    assert rec.RESULT_FILE in read_branch(repo)[1].files
    report = report_of(repo, trust_file, allow_unsealed=True)
    assert failures(report) == {(1, "digest")}, report.failures
    assert reason in str(report.failures[0].reason), report.failures


def test_large_result_file_written_by_afdp_verifies(repo, signer, tsa, trust_file):
    add_step(repo, signer, tsa, "capture_impact", {"series": list(range(20000)), "verdict": "fail"})
    assert rec.RESULT_FILE in read_branch(repo)[1].files
    assert report_of(repo, trust_file, allow_unsealed=True).ok
