"""The time-stamp encoding rules against a token AFDP did not make.

A real RFC 3161 token of Sigstore's time-stamp authority (Go, digitorus/timestamp), taken
from the real bundle in ../shared/assets/sigstore/ (see that folder's README), must meet
the one form AFDP accepts (`afdp.evidence.timestamp.verify.encoding_problem`: RFC 5652's
versions and digest-algorithm list, one SignerInfo, no unsigned attributes, no CRLs), so
the rules refuse what an attacker changes, not what real TSAs write.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from asn1crypto import tsp

from afdp.evidence.timestamp.verify import encoding_problem

ASSETS = Path(os.environ.get("AFDP_SHARED_ASSETS", "/work/shared/assets")) / "sigstore"
BUNDLE = ASSETS / "dsse-statement.txt.sigstore.json"

pytestmark = pytest.mark.skipif(not BUNDLE.exists(), reason=f"real Sigstore bundle not found in {ASSETS}")


def sigstore_token() -> bytes:
    bundle = json.loads(BUNDLE.read_text())
    (stamp,) = bundle["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"]
    return base64.b64decode(stamp["signedTimestamp"])


def test_a_real_third_party_token_meets_the_encoding_rules() -> None:
    token = sigstore_token()
    response = tsp.TimeStampResp.load(token, strict=True)
    signed = response["time_stamp_token"]["content"]
    assert signed["version"].native == "v3" and len(signed["signer_infos"]) == 1
    assert encoding_problem(token) is None


@pytest.mark.parametrize("change", ["signed_data_version", "signer_info_version", "extra_digest_algorithm"])
def test_the_same_token_with_an_unsigned_field_changed_fails(change: str) -> None:
    response = tsp.TimeStampResp.load(sigstore_token())
    signed = response["time_stamp_token"]["content"]
    if change == "signed_data_version":
        signed["version"] = "v1"
    elif change == "signer_info_version":
        signed["signer_infos"][0]["version"] = "v3"
    else:
        signed["digest_algorithms"] = [*signed["digest_algorithms"], {"algorithm": "sha512"}]
    altered = response.dump(force=True)
    assert altered != sigstore_token()
    problem = encoding_problem(altered)
    assert problem is not None and ("version" in problem or "digest algorithms" in problem), problem
