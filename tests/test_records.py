"""Record construction: canonical bytes, digests, chain positions, large results, names."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from afdp.errors import UsageError
from afdp.evidence import records as rec
from afdp.evidence.canonical import canonical_bytes, digest
from afdp.evidence.names import branch_ref, check_name, parse_branch_ref


def test_canonical_bytes_follow_rfc8785():
    assert canonical_bytes({"b": 1, "a": [1.0, "é", 1e21]}) == b'{"a":[1,"\xc3\xa9",1e+21],"b":1}'
    assert digest({"a": 1}) == hashlib.sha256(b'{"a":1}').hexdigest()


def test_non_canonicalizable_values_are_usage_errors():
    with pytest.raises(UsageError):
        canonical_bytes({"x": float("nan")})


def test_step_record_cites_previous_and_digests_result():
    draft = rec.RecordDraft(kind=rec.KIND_STEP, step="capture_baseline", result={"p50": 1})
    record = rec.build_record(draft, service="api", deployment="d-1", sequence=3, prev="ab" * 32, prev_timestamps={"timestamp-0.tsr": "cd" * 32})
    statement = record.statement
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://afdp.dev/evidence/step/v1"
    assert statement["subject"][0] == {"name": "afdp:api/d-1/000003-capture_baseline", "digest": {"sha256": digest({"p50": 1})}}
    assert statement["predicate"]["prev"] == {"sha256": "ab" * 32}
    assert statement["predicate"]["prev_timestamps"] == [{"path": "timestamp-0.tsr", "sha256": "cd" * 32}]
    assert record.directory == "records/000/000003-capture_baseline"


def test_large_results_are_stored_beside_the_envelope():
    big = {"series": list(range(30000))}
    record = rec.build_record(rec.RecordDraft(kind=rec.KIND_STEP, step="s", result=big), service="a", deployment="b", sequence=1, prev="00" * 32, prev_timestamps={"timestamp-0.tsr": "00" * 32})
    assert record.statement["predicate"]["result"] is None
    ref = record.statement["predicate"]["result_ref"]
    assert record.files[rec.RESULT_FILE] == canonical_bytes(big)
    assert ref["sha256"] == record.statement["subject"][0]["digest"]["sha256"] == digest(big)


@pytest.mark.parametrize(("kind", "sequence", "prev"), [("genesis", 1, None), ("step", 0, None), ("step", 2, None), ("genesis", 0, "00" * 32)])
def test_chain_positions_are_enforced(kind, sequence, prev):
    with pytest.raises(UsageError):
        rec.build_record(rec.RecordDraft(kind=kind, step="genesis" if kind == "genesis" else "s", result={}), service="a", deployment="b", sequence=sequence, prev=prev)


def test_shards_keep_trees_small():
    assert rec.record_dir(999, "x") == "records/000/000999-x"
    assert rec.record_dir(1000, "x") == "records/001/001000-x"
    assert rec.record_dir(1_234_567, "x") == "records/1234/1234567-x"


def test_envelope_is_canonical_dsse():
    payload = canonical_bytes({"a": 1})
    envelope = json.loads(rec.envelope_json(payload, "kid", b"\x01\x02"))
    assert envelope == {"payload": base64.b64encode(payload).decode(), "payloadType": rec.PAYLOAD_TYPE, "signatures": [{"keyid": "kid", "sig": "AQI="}]}
    assert rec.pae("t", b"xy") == b"DSSEv1 1 t 2 xy"


@pytest.mark.parametrize("name", ["api", "d-42", "A.b_c-9", "x" * 100])
def test_good_names(name):
    assert check_name(name, what="service") == name


@pytest.mark.parametrize("name", ["", "a/b", "../x", "..", "a b", "a\nb", "é", ".hidden", "x.lock", "x" * 101, "a..b", "trailing."])
def test_bad_names(name):
    with pytest.raises(UsageError):
        check_name(name, what="service")


def test_branch_ref_round_trip():
    assert branch_ref("api", "d-42") == "refs/heads/afdp/api/d-42"
    assert parse_branch_ref("refs/heads/afdp/api/d-42") == ("api", "d-42")
    assert parse_branch_ref("refs/heads/main") is None
    assert parse_branch_ref("refs/heads/afdp/a/b/c") is None


@pytest.mark.parametrize("attachment", ["envelope.json", "result.json", "timestamp-0.tsr", "../x", "A"])
def test_reserved_or_unsafe_attachment_names_are_refused(attachment):
    with pytest.raises(UsageError):
        rec.RecordDraft(kind=rec.KIND_STEP, step="s", result={}, attachments={attachment: b""})
