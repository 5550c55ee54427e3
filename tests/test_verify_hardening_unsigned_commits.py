"""Branches whose commits carry no Git signature (RSA-PSS keys; keyless records).

Nothing signs such a commit, so verification binds it another way: the commit message is
regenerated from the verified record and compared, and every record's time-stamp tokens
are cited (by SHA-256) by the record after it. The last record's tokens are bound by no
later record: a token dated after its finished_at plus the clock skew is refused.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pygit2
import pytest
from conftest import build_deployment
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from tamper import Entry, read_branch, with_file, write_branch

from afdp.evidence import records as rec
from afdp.evidence.trust import load_trust_policy, write_trust_policy
from afdp.verify.verifier import check_branch

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture()
def pss(tmp_path: Path, tsa):
    from afdp.evidence.signing import load_signer

    private, public = tmp_path / "rsa.key", tmp_path / "rsa.key.pub"
    private.write_bytes(RSA_KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    public.write_bytes(RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    trust = tmp_path / "auditor" / "trust.yaml"
    trust.parent.mkdir()
    write_trust_policy(trust, keys=[public], tsa_roots=[tsa.directory / "root.pem"])
    return load_signer(str(private)), trust


@pytest.fixture()
def branch(repo, pss, tsa):
    signer, trust = pss
    build_deployment(repo, signer, tsa, steps=2)  # 0 genesis, 1-2 steps, 3 seal
    head = pygit2.Repository(str(repo)).references["refs/heads/afdp/api/d-42"].peel()
    assert head.gpg_signature == (None, None)  # RSA-PSS: nothing signs the commits
    return repo, trust


def report_of(repo: Path, trust: Path):
    return check_branch(repo, service="api", deployment="d-42", policy=load_trust_policy(trust))


def found(report) -> set[tuple[int | None, str]]:
    return {(f.sequence, f.check) for f in report.failures}


def test_untampered_pss_branch_verifies_and_reports_the_tsa_url_as_unverified(branch, tsa):
    repo, trust = branch
    report = report_of(repo, trust)
    assert report.state == "verified", report.failures
    assert all(r.tsa_url == tsa.url and r.unverified == ("tsa_url",) for r in report.records)
    assert json.loads(json.dumps(report.to_json()))["records"][1]["unverified"] == ["tsa_url"]


# -- 2a. commit messages -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("AFDP-Status: ok", "AFDP-Status: failed"),
        ("mark_deployment_time: ok", "mark_deployment_time: failed - operator overrode rollback"),
        ("(step, status ok)", "(step, status failed)"),
        ("AFDP-Timestamp: 2", "AFDP-Timestamp: 1"),
    ],
)
def test_edited_commit_message_fails(branch, old, new):
    repo, trust = branch
    entries = read_branch(repo)
    assert old in entries[2].message
    entries[2] = Entry(entries[2].message.replace(old, new, 1), entries[2].directory, entries[2].files)
    write_branch(repo, entries)
    report = report_of(repo, trust)
    assert found(report) == {(2, "commit")}
    assert "commit message is not the one AFDP writes" in report.failures[0].reason


def test_tsa_trailer_must_be_a_url(branch):
    repo, trust = branch
    entries = read_branch(repo)
    message = "\n".join(
        "AFDP-TSA: not a url" if line.startswith("AFDP-TSA: ") else line for line in entries[1].message.split("\n")
    )
    entries[1] = Entry(message, entries[1].directory, entries[1].files)
    write_branch(repo, entries)
    report = report_of(repo, trust)
    assert (1, "commit") in found(report)
    assert any("AFDP-TSA trailer 'not a url' is not one http(s) URL" in f.reason for f in report.failures)


def test_another_well_formed_tsa_url_is_accepted_but_reported_unverified(branch):
    repo, trust = branch
    entries = read_branch(repo)
    message = "\n".join(
        "AFDP-TSA: https://freetsa.org/tsr" if line.startswith("AFDP-TSA: ") else line for line in entries[1].message.split("\n")
    )
    entries[1] = Entry(message, entries[1].directory, entries[1].files)
    write_branch(repo, entries)
    report = report_of(repo, trust)
    assert report.ok
    assert report.records[1].tsa_url == "https://freetsa.org/tsr" and "tsa_url" in report.records[1].unverified


# -- 2b. time-stamp tokens are bound into the chain -------------------------------------------


def test_extra_token_in_a_bound_record_fails(branch, tsa):
    from afdp.evidence.timestamp import request_timestamp

    repo, trust = branch
    entries = read_branch(repo)
    envelope = json.loads(entries[2].files[rec.ENVELOPE_FILE])
    token = request_timestamp(base64.b64decode(envelope["signatures"][0]["sig"]), [tsa.url])
    entries[2] = with_file(entries[2], "timestamp-1.tsr", token.der)  # a valid token, trusted TSA
    write_branch(repo, entries)
    report = report_of(repo, trust)
    assert found(report) == {(2, "chain")}
    assert "timestamp-1.tsr" in report.failures[0].reason and "not cited" in report.failures[0].reason


def test_replaced_token_in_a_bound_record_fails(branch, tsa):
    from afdp.evidence.timestamp import request_timestamp

    repo, trust = branch
    entries = read_branch(repo)
    envelope = json.loads(entries[1].files[rec.ENVELOPE_FILE])
    token = request_timestamp(base64.b64decode(envelope["signatures"][0]["sig"]), [tsa.url])
    entries[1] = with_file(entries[1], "timestamp-0.tsr", token.der)  # re-dated, valid
    # the commit message names the token's time: keep it consistent, as an attacker would
    gen = rec.format_time(token.gen_time)
    entries[1] = Entry(
        "\n".join(f"AFDP-Timestamp: {gen}" if line.startswith("AFDP-Timestamp: ") else line for line in entries[1].message.split("\n")),
        entries[1].directory,
        entries[1].files,
    )
    write_branch(repo, entries)
    report = report_of(repo, trust)
    assert found(report) == {(1, "chain")}
    assert "differ from the digest" in report.failures[0].reason


def test_token_added_to_the_last_record_within_the_skew_is_accepted(branch, tsa):
    # What stays unbound (docs/evidence.md): the seal's own tokens, within the clock skew.
    from afdp.evidence.timestamp import request_timestamp

    repo, trust = branch
    entries = read_branch(repo)
    envelope = json.loads(entries[-1].files[rec.ENVELOPE_FILE])
    token = request_timestamp(base64.b64decode(envelope["signatures"][0]["sig"]), [tsa.url])
    entries[-1] = with_file(entries[-1], "timestamp-1.tsr", token.der)
    write_branch(repo, entries)
    assert report_of(repo, trust).ok


def test_token_dated_long_after_the_last_record_finished_fails(repo, pss, tsa):
    # The seal is built with finished_at an hour before it is signed and stamped, so its
    # genuine token lies outside the window: what a re-dated token would look like.
    from datetime import timedelta

    from afdp.evidence.ledger import append_record

    signer, trust = pss
    build_deployment(repo, signer, tsa, steps=1, sealed=False)
    draft = rec.RecordDraft(
        kind=rec.KIND_STEP,
        step="decide",
        result={"decision": "proceed"},
        started_at=rec.utc_now() - timedelta(hours=1, seconds=1),
        finished_at=rec.utc_now() - timedelta(hours=1),
    )
    append_record(repo, service="api", deployment="d-42", draft=draft, signer=signer, tsa_urls=[tsa.url])
    report = check_branch(repo, service="api", deployment="d-42", policy=load_trust_policy(trust), allow_unsealed=True)
    assert found(report) == {(2, "time")}
    assert "bound by no later record" in report.failures[0].reason


def test_missing_token_citation_is_a_schema_failure(branch, pss, tsa):
    from test_verify_tamper import _resign

    repo, trust = branch
    signer, _ = pss

    def drop(statement):
        statement["predicate"].pop("prev_timestamps", None)

    entries = read_branch(repo)
    entries[2] = _resign(entries[2], signer, tsa.url, drop)
    write_branch(repo, entries)
    report = report_of(repo, trust)
    assert any(f.check == "schema" and f.where.startswith("record 2") and "prev_timestamps" in f.reason for f in report.failures)
