"""Attacker-written records never crash verification or the report (finding 6, 12).

Deeply nested JSON, seal listings of the wrong types, times that match the schema's
shape but are not dates (or use non-ASCII digits): each is a named failure (record,
check, reason) and exit 1 in `afdp verify` and `afdp report`, never a traceback.
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path

import pygit2
import pytest
from conftest import build_deployment
from tamper import read_branch

from afdp.evidence import records as rec
from afdp.evidence.canonical import canonical_bytes, sha256_hex
from afdp.evidence.signing import sign_bytes, signer_keyid
from afdp.evidence.trust import load_trust_policy
from afdp.verify.checks import MAX_JSON_DEPTH, json_depth_exceeds
from afdp.verify.verifier import check_branch

REF = "refs/heads/afdp/api/d-42"


@pytest.fixture()
def sealed(repo, signer, tsa):
    build_deployment(repo, signer, tsa, steps=2)  # 0 genesis, 1-2 steps, 3 seal
    return repo


def statement_of(files: dict[str, bytes]) -> dict:
    return json.loads(base64.b64decode(json.loads(files[rec.ENVELOPE_FILE])["payload"]))


def signed_files(statement: dict, signer, tsa_url: str, payload: bytes | None = None) -> dict[str, bytes]:
    from afdp.evidence.timestamp import request_timestamp

    payload = canonical_bytes(statement) if payload is None else payload
    signature = sign_bytes(signer, rec.pae(rec.PAYLOAD_TYPE, payload))
    return {
        rec.ENVELOPE_FILE: rec.envelope_json(payload, signer_keyid(signer), signature),
        "timestamp-0.tsr": request_timestamp(signature, [tsa_url]).der,
    }


def commit_on(repo: Path, position: int, directory: str, files: dict[str, bytes]) -> None:
    """Point the branch at a new commit on top of commit ``position`` adding ``files``."""
    git = pygit2.Repository(str(repo))
    commit = git.get(git.references[REF].target)
    chain = [commit]
    while commit.parents:
        commit = commit.parents[0]
        chain.append(commit)
    parent = chain[::-1][position]
    index = pygit2.Index()
    index.read_tree(parent.tree)
    for name, data in files.items():
        index.add(pygit2.IndexEntry(f"{directory}/{name}", git.create_blob(data), pygit2.enums.FileMode.BLOB))
    sig = pygit2.Signature("mallory", "m@example.invalid")
    new = git.create_commit(None, sig, sig, "forged\n", index.write_tree(git), [parent.id])
    git.references.create(REF, new, force=True)


def verify(repo: Path, trust: Path):
    return check_branch(repo, service="api", deployment="d-42", policy=load_trust_policy(trust))


def test_depth_scan_ignores_brackets_in_strings():
    assert not json_depth_exceeds(b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\"["}')
    assert json_depth_exceeds(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))
    assert not json_depth_exceeds(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)


@pytest.mark.parametrize(
    "envelope",
    [
        b"[" * 200_000 + b"]" * 200_000,
        b'{"a":' * 3000 + b"1" + b"}" * 3000,
    ],
    ids=["array-200000", "object-3000"],
)
def test_deeply_nested_envelope_is_a_named_failure(sealed, trust_file, envelope, cli):
    commit_on(sealed, 3, "records/000/000004-evil", {rec.ENVELOPE_FILE: envelope})
    report = verify(sealed, trust_file)
    assert any(f.check == "envelope" and "nests deeper than 64" in f.reason and f.where.startswith("record 4") for f in report.failures)
    result = cli("verify", "--repo", str(sealed), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file))
    assert result.code == 1


@pytest.mark.parametrize("depth", [900, 100_000])
def test_deeply_nested_payload_is_a_named_failure(sealed, trust_file, depth):
    payload = b"[" * depth + b"]" * depth
    envelope = canonical_bytes({"payload": base64.b64encode(payload).decode(), "payloadType": rec.PAYLOAD_TYPE, "signatures": [{"keyid": "x", "sig": "AAAA"}]})
    commit_on(sealed, 3, "records/000/000004-evil", {rec.ENVELOPE_FILE: envelope})
    report = verify(sealed, trust_file)
    assert any(f.check == "envelope" and "nests deeper than 64" in f.reason for f in report.failures)


@pytest.mark.parametrize("records", [[1, 2, 3], ["a", None, {}], [{"sequence": "0", "step": 1, "sha256": []}]])
def test_seal_listing_of_wrong_types_is_a_seal_failure(sealed, signer, tsa, trust_file, records):
    entries = read_branch(sealed)
    statement = copy.deepcopy(statement_of(entries[3].files))
    statement["predicate"]["result"] = {"count": 3, "records": records}
    statement["subject"][0]["digest"]["sha256"] = sha256_hex(canonical_bytes(statement["predicate"]["result"]))
    commit_on(sealed, 2, entries[3].directory, signed_files(statement, signer, tsa.url))
    report = verify(sealed, trust_file)
    assert any(f.check == "seal" and f.sequence == 3 for f in report.failures), report.failures


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("started_at", "2026-13-45T99:99:99Z"),
        ("finished_at", "\u0662\u0660\u0662\u0666-11-25T07:14:49.000Z"),
        ("finished_at", "2026-02-30T07:14:49.000Z"),
    ],
)
def test_invalid_times_are_schema_failures(sealed, signer, tsa, trust_file, field, value, cli, tmp_path):
    entries = read_branch(sealed)
    statement = copy.deepcopy(statement_of(entries[2].files))
    statement["predicate"][field] = value
    commit_on(sealed, 1, entries[2].directory, signed_files(statement, signer, tsa.url))
    report = verify(sealed, trust_file)
    assert any(f.check == "schema" and field in f.reason and f.where.startswith("record 2") for f in report.failures), report.failures
    result = cli("verify", "--repo", str(sealed), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file), "--json")
    assert result.code == 1 and result.json()["ok"] is False
    out = tmp_path / "report.json"
    result = cli("report", "--repo", str(sealed), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file), "--out", str(out))
    assert result.code == 1 and out.exists()


def test_report_on_a_deeply_nested_record_does_not_crash(sealed, trust_file, cli, tmp_path):
    commit_on(sealed, 3, "records/000/000004-evil", {rec.ENVELOPE_FILE: b"[" * 200_000 + b"]" * 200_000})
    out = tmp_path / "report.json"
    result = cli("report", "--repo", str(sealed), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file), "--out", str(out))
    assert result.code == 1 and out.exists()


def test_timestamp_chain_failure_is_one_line_without_repeated_prefix(repo, signer, other_tsa, trust_file):
    from afdp.evidence.ledger import append_record

    draft = rec.RecordDraft(kind=rec.KIND_STEP, step="s", result={"x": 1})
    append_record(repo, service="api", deployment="d-42", draft=draft, signer=signer, tsa_urls=[other_tsa.url])
    report = check_branch(repo, service="api", deployment="d-42", policy=load_trust_policy(trust_file), allow_unsealed=True)
    chain = [f for f in report.failures if f.check == "timestamp.chain"]
    assert chain
    for failure in chain:
        assert "\n" not in failure.reason
        assert "timestamp.chain" not in failure.reason
        assert "ErrorStack" not in failure.reason and "Error {" not in failure.reason
