"""Batch recording (``append_records``, ``afdp record --batch``): each record its own
signature, token and commit, one linear chain, and all or nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pygit2
import pytest
from conftest import add_step

from afdp.errors import PolicyViolation, TimestampError, UsageError
from afdp.evidence import records as rec
from afdp.evidence.canonical import sha256_hex
from afdp.evidence.ledger import append_records, seal
from afdp.evidence.names import branch_ref
from afdp.evidence.notary import EmbeddedTSA, serve
from afdp.evidence.trust import load_trust_policy
from afdp.verify.verifier import check_branch


def drafts(n: int, start: int = 0) -> list[rec.RecordDraft]:
    return [
        rec.RecordDraft(kind=rec.KIND_STEP, step=f"step{i}", result={"i": i, "p99_ms": 100 + i})
        for i in range(start, start + n)
    ]


def head(repo: Path, deployment: str = "d-42"):
    ref = pygit2.Repository(str(repo)).references.get(branch_ref("api", deployment))
    return None if ref is None else ref.target


def test_batch_writes_one_signed_stamped_commit_per_record_and_verifies(repo, signer, tsa, trust_file):
    written = append_records(repo, service="api", deployment="d-42", drafts=drafts(5), signer=signer, tsa_urls=[tsa.url])
    assert [w.sequence for w in written] == [0, 1, 2, 3, 4, 5]
    assert [w.step for w in written] == ["genesis", "step0", "step1", "step2", "step3", "step4"]
    git = pygit2.Repository(str(repo))
    commits = [git.get(w.commit_id) for w in written]
    # one linear chain: each commit's only parent is the commit of the record before
    assert commits[0].parent_ids == []
    for before, after in zip(commits, commits[1:], strict=False):
        assert after.parent_ids == [before.id]
        assert after.gpg_signature[0]  # every commit carries its own signature
    assert str(head(repo)) == written[-1].commit_id
    tokens = set()
    for w, commit in zip(written, commits, strict=True):
        directory = rec.record_dir(w.sequence, w.step)
        tokens.add(commit.tree[f"{directory}/timestamp-0.tsr"].id)
        assert w.envelope_sha256 == sha256_hex(git.get(commit.tree[f"{directory}/envelope.json"].id).data)
    assert len(tokens) == 6  # six distinct tokens
    seal(repo, service="api", deployment="d-42", signer=signer, tsa_urls=[tsa.url])
    report = check_branch(repo, service="api", deployment="d-42", policy=load_trust_policy(trust_file))
    assert report.ok, report.failures
    assert len(report.records) == 7


def test_batch_continues_an_existing_branch_and_may_end_with_a_seal(repo, signer, tsa, trust_file):
    add_step(repo, signer, tsa, "capture_baseline", {"p99_ms": 1})
    batch = [*drafts(3), rec.RecordDraft(kind=rec.KIND_SEAL, step="seal", result=None)]
    written = append_records(repo, service="api", deployment="d-42", drafts=batch, signer=signer, tsa_urls=[tsa.url])
    assert [w.sequence for w in written] == [2, 3, 4, 5]
    report = check_branch(repo, service="api", deployment="d-42", policy=load_trust_policy(trust_file))
    assert report.ok and report.sealed, report.failures
    assert report.records[-1].kind == "seal"
    with pytest.raises(PolicyViolation):
        append_records(repo, service="api", deployment="d-42", drafts=drafts(1), signer=signer, tsa_urls=[tsa.url])


def test_batch_with_a_bad_item_records_nothing(repo, signer, tsa):
    add_step(repo, signer, tsa, "capture_baseline", {"p99_ms": 1})
    before = head(repo)
    # the third item cannot be canonicalized: the first two were signed and stamped,
    # but the branch must not move
    bad = [*drafts(2), rec.RecordDraft(kind=rec.KIND_STEP, step="bad", result={"x": float("nan")}), *drafts(2, 5)]
    with pytest.raises(UsageError):
        append_records(repo, service="api", deployment="d-42", drafts=bad, signer=signer, tsa_urls=[tsa.url])
    assert head(repo) == before
    # a seal anywhere but last, or a genesis draft, is refused before anything is done
    for wrong in (
        [rec.RecordDraft(kind=rec.KIND_SEAL, step="seal", result=None), *drafts(1)],
        [rec.RecordDraft(kind=rec.KIND_GENESIS, step="genesis", result={})],
        [],
    ):
        with pytest.raises(UsageError):
            append_records(repo, service="api", deployment="d-42", drafts=wrong, signer=signer, tsa_urls=[tsa.url])
    assert head(repo) == before


class TiringTSA(EmbeddedTSA):
    """The real embedded TSA, which refuses (status rejection) after ``grants`` tokens."""

    grants = 3

    def respond(self, request_der: bytes) -> bytes:
        if self.grants <= 0:
            from afdp.evidence.notary.responder import _rejection

            return _rejection("system_failure", "out of service")
        self.grants -= 1
        return super().respond(request_der)


def test_batch_whose_tsa_fails_midway_records_nothing(repo, signer, tsa):
    """A TSA that stops granting after some records: the branch stays where it was."""
    add_step(repo, signer, tsa, "capture_baseline", {"p99_ms": 1})
    before = head(repo)
    with serve(TiringTSA.load(tsa.directory)) as tiring, pytest.raises(TimestampError) as info:
        append_records(repo, service="api", deployment="d-42", drafts=drafts(6), signer=signer, tsa_urls=[tiring.url])
    assert "out of service" in str(info.value)
    assert head(repo) == before


def test_batch_drafts_check_every_line_first():
    good = '{"step": "a", "result": {"x": 1}}\n\n{"step": "b", "result": {}, "status": "failed", "error": "e", "index": 4}\n'
    parsed = rec.batch_drafts(good, source="f.jsonl")
    assert [(d.step, d.status, d.index) for d in parsed] == [("a", "ok", None), ("b", "failed", 4)]
    for text, message in (
        ('{"step": "a", "result": {}}\nnot json\n', "f.jsonl line 2 is not valid JSON"),
        ('[1]\n', "line 1 must be a JSON object"),
        ('{"step": "a"}\n', "'result' is required"),
        ('{"step": "a", "result": [1]}\n', "'result' must be a JSON object"),
        ('{"step": "a", "result": {}, "kind": "seal"}\n', "unknown key(s) 'kind'"),
        ('{"step": "a b", "result": {}}\n', "line 1"),
        ('{"step": "a", "result": {}, "index": -1}\n', "'index' must be a non-negative integer"),
        ('{"step": "a", "result": {}, "index": true}\n', "'index' must be a non-negative integer"),
        ('{"step": "a", "result": {"x": NaN}}\n', "line 1"),
        ('{"step": "a", "result": {}}\n{"step": "b", "step": "c", "result": {}}\n', "line 2 is not valid JSON: an object names 'step' twice"),
        ('{"step": "a", "result": {"x": 1, "x": 2}}\n', "line 1 is not valid JSON: an object names 'x' twice"),
        ("\n\n", "holds no record"),
    ):
        with pytest.raises(UsageError) as info:
            rec.batch_drafts(text, source="f.jsonl")
        assert message in str(info.value), (text, str(info.value))


def test_cli_record_batch(cli, tmp_path, keys, tsa, repo, trust_file):
    batch = tmp_path / "import.jsonl"
    batch.write_text("".join(json.dumps({"step": f"s{i}", "result": {"i": i}}) + "\n" for i in range(4)))
    base = ["record", "--repo", str(repo), "--service", "api", "--deployment", "d-42", "--key", str(keys / "dev.key"), "--tsa", tsa.url]
    done = cli(*base, "--batch", str(batch), "--json")
    assert done.code == 0, done.err
    assert [w["step"] for w in done.json()] == ["genesis", "s0", "s1", "s2", "s3"]
    report = check_branch(repo, service="api", deployment="d-42", policy=load_trust_policy(trust_file), allow_unsealed=True)
    assert report.ok and len(report.records) == 5
    before = head(repo)
    # bad input: one line on stderr, exit 2, nothing recorded
    batch.write_text('{"step": "ok", "result": {}}\n{"step": "x", "result": 3}\n')
    bad = cli(*base, "--batch", str(batch))
    assert bad.code == 2 and "line 2" in bad.err and len(bad.err.strip().splitlines()) == 1
    both = cli(*base, "--batch", str(batch), "--step", "x")
    assert both.code == 2 and "--step" in both.err
    neither = cli(*base)
    assert neither.code == 2 and "--batch" in neither.err
    missing = cli(*base, "--batch", str(tmp_path / "absent.jsonl"))
    assert missing.code == 2 and "cannot read batch" in missing.err
    assert head(repo) == before


def test_batch_whose_commit_signature_fails_in_the_writer_thread_records_nothing(repo, keys, tsa):
    """The Git writes run on a background thread: a failure there stops the batch too."""
    from securesystemslib.signer import CryptoSigner

    from afdp.errors import SigningError
    from afdp.evidence.signing import load_signer

    real = load_signer(str(keys / "dev.key"))
    assert isinstance(real, CryptoSigner)

    class FailsOnFifthSSHSignature(CryptoSigner):
        """The real signer, whose 5th signature over a Git commit fails (a KMS outage)."""

        def __init__(self) -> None:
            super().__init__(real._private_key, real.public_key)
            self.commit_signatures = 0

        def sign(self, payload: bytes):
            if not payload.startswith(b"DSSEv1"):
                self.commit_signatures += 1
                if self.commit_signatures == 5:
                    raise RuntimeError("KMS unavailable")
            return super().sign(payload)

    add_step(repo, real, tsa, "capture_baseline", {"p99_ms": 1})
    before = head(repo)
    with pytest.raises(SigningError, match="KMS unavailable"):
        append_records(repo, service="api", deployment="d-42", drafts=drafts(8), signer=FailsOnFifthSSHSignature(), tsa_urls=[tsa.url])
    assert head(repo) == before


def test_batch_never_uses_the_signer_from_two_threads_at_once(repo, keys, tsa, trust_file):
    """Commit signatures are made on the writer thread while the next record is signed:
    a signer that is not thread-safe (an HSM session) must still see one call at a time."""
    import threading
    import time

    from securesystemslib.signer import CryptoSigner

    from afdp.evidence.signing import load_signer

    real = load_signer(str(keys / "dev.key"))
    assert isinstance(real, CryptoSigner)

    class OneAtATime(CryptoSigner):
        """The real signer, slowed down, noting any call that overlaps another."""

        def __init__(self) -> None:
            super().__init__(real._private_key, real.public_key)
            self.active = 0
            self.overlaps = 0
            self.calls = 0
            self.guard = threading.Lock()

        def sign(self, payload: bytes):
            with self.guard:
                self.active += 1
                self.calls += 1
                self.overlaps += self.active > 1
            try:
                time.sleep(0.005)
                return super().sign(payload)
            finally:
                with self.guard:
                    self.active -= 1

    signer = OneAtATime()
    append_records(repo, service="api", deployment="d-42", drafts=drafts(12), signer=signer, tsa_urls=[tsa.url])
    assert signer.calls == 26  # 13 records: a DSSE signature and a commit signature each
    assert signer.overlaps == 0
    report = check_branch(repo, service="api", deployment="d-42", policy=load_trust_policy(trust_file), allow_unsealed=True)
    assert report.ok, report.failures


# -- one story per branch: imported and live records never mix (verification check 12i) ---------
def _imported(n: int, when: str = "2026-03-01T10:00:00Z") -> list[rec.RecordDraft]:
    from dataclasses import replace

    marker = rec.Imported(rec.parse_time(when))
    return [replace(draft, imported=marker) for draft in drafts(n)]


def test_an_imported_batch_opens_an_imported_branch_that_verifies(repo, signer, tsa, trust_file):
    batch = [*_imported(2), rec.RecordDraft(kind=rec.KIND_SEAL, step="seal", result=None)]
    written = append_records(repo, service="api", deployment="d-42", drafts=batch, signer=signer, tsa_urls=[tsa.url])
    assert [w.step for w in written] == ["genesis", "step0", "step1", "seal"]
    report = check_branch(repo, service="api", deployment="d-42", policy=load_trust_policy(trust_file))
    assert report.ok and report.sealed, report.failures  # the genesis and the seal are imported too


def test_a_batch_mixing_live_and_imported_records_writes_nothing(repo, signer, tsa):
    with pytest.raises(PolicyViolation, match="cannot be appended"):
        append_records(repo, service="api", deployment="d-42", drafts=[*_imported(1), *drafts(1, start=5)],
                       signer=signer, tsa_urls=[tsa.url])
    assert head(repo) is None


def test_a_live_batch_never_continues_an_imported_branch(repo, signer, tsa):
    append_records(repo, service="api", deployment="d-42", drafts=_imported(1), signer=signer, tsa_urls=[tsa.url])
    before = head(repo)
    with pytest.raises(PolicyViolation, match="imported .*captured live cannot be appended"):
        append_records(repo, service="api", deployment="d-42", drafts=drafts(1, start=5), signer=signer,
                       tsa_urls=[tsa.url])
    with pytest.raises(PolicyViolation, match="imported for"):
        append_records(repo, service="api", deployment="d-42", drafts=_imported(1, "2026-04-01T10:00:00Z"),
                       signer=signer, tsa_urls=[tsa.url])
    assert head(repo) == before
