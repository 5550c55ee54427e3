"""Every byte of every record file is covered by a signature or token, or re-derived and
compared (issue 9, item 1).

Attacks by someone with write access to the evidence repository (tests/tamper.py), on a
branch whose commits carry no Git signature (RSA-PSS key: nothing but the records binds
the commits), aimed at the LAST record (the seal), which no later record's ``prev``
binds. Real Git, real TSA over loopback HTTP.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import replace

import pytest
from tamper import edit, with_file
from test_verify_hardening_unsigned_commits import branch, pss, report_of  # noqa: F401  (fixtures)

from afdp.evidence.canonical import canonical_bytes, sha256_hex

LAST = -1  # the seal


def _same_bytes_other_base64(text: str) -> str:
    """Another base64 spelling of the same bytes: set padding bits the decoder ignores."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    body = text.rstrip("=")
    pad = len(text) - len(body)
    assert pad in (1, 2), "the test needs a padded encoding"
    last = alphabet.index(body[-1])
    spare = (1 << (2 * pad)) - 1  # bits of the last character beyond the data
    assert last & spare == 0
    other = body[:-1] + alphabet[last | 1] + "=" * pad
    assert base64.b64decode(other) == base64.b64decode(text) and other != text
    return other


def _rewrite_envelope(entry, change):
    envelope = json.loads(entry.files["envelope.json"])
    change(envelope)
    data = canonical_bytes(envelope)  # still RFC 8785 canonical JSON
    message = re.sub(r"AFDP-Digest: sha256:[0-9a-f]{64}", f"AFDP-Digest: sha256:{sha256_hex(data)}", entry.message)
    return replace(with_file(entry, "envelope.json", data), message=message)


@pytest.mark.parametrize("field", ["payload", "sig"])
def test_non_canonical_base64_in_the_last_envelope_fails(branch, field):  # noqa: F811
    repo, trust = branch

    def change(envelope):
        holder, key = (envelope, "payload") if field == "payload" else (envelope["signatures"][0], "sig")
        if not holder[key].endswith("="):
            pytest.skip(f"the {field} needs padding for this spelling")
        holder[key] = _same_bytes_other_base64(holder[key])

    edit(repo, LAST, lambda e: _rewrite_envelope(e, change))
    report = report_of(repo, trust)
    assert report.state == "failed"
    failures = [(f.sequence, f.check, f.reason) for f in report.failures]
    assert any(check == "envelope" and "re-encoding" in reason for _, check, reason in failures), failures


@pytest.mark.parametrize(
    "spelling",
    [
        lambda s: s.rstrip("="),  # padding left out
        lambda s: s.replace("+", "-").replace("/", "_") if ("+" in s or "/" in s) else None,  # url-safe
        lambda s: s[:8] + "\n" + s[8:],  # a line break (MIME style)
    ],
    ids=["no-padding", "urlsafe", "newline"],
)
def test_other_base64_spellings_of_the_payload_fail(branch, spelling):  # noqa: F811
    repo, trust = branch

    def change(envelope):
        other = spelling(envelope["payload"])
        if other is None or other == envelope["payload"]:
            pytest.skip("this payload has nothing to respell")
        envelope["payload"] = other

    edit(repo, LAST, lambda e: _rewrite_envelope(e, change))
    report = report_of(repo, trust)
    assert report.state == "failed"
    assert {f.check for f in report.failures} & {"envelope"}, report.failures


def test_untampered_branch_still_verifies(branch):  # noqa: F811
    repo, trust = branch
    assert report_of(repo, trust).state == "verified"


# -- the last record's time-stamp token: parts its signature does not cover ---------------


def _token_with(entry, change):
    from asn1crypto import tsp

    response = tsp.TimeStampResp.load(entry.files["timestamp-0.tsr"])
    change(response)
    return with_file(entry, "timestamp-0.tsr", response.dump(force=True))


def _extra_certificate(response):
    import datetime

    from asn1crypto import cms, x509
    from cryptography import x509 as cx509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = cx509.Name([cx509.NameAttribute(cx509.NameOID.COMMON_NAME, "stowaway")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        cx509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(7).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    signed = response["time_stamp_token"]["content"]
    extra = cms.CertificateChoices(name="certificate", value=x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER)))
    signed["certificates"] = cms.CertificateSet([*signed["certificates"], extra])


def _unsigned_attribute(response):
    from asn1crypto import cms

    signer = response["time_stamp_token"]["content"]["signer_infos"][0]
    signer["unsigned_attrs"] = cms.CMSAttributes([cms.CMSAttribute({"type": "signing_time", "values": [cms.Time(name="utc_time", value=__import__("datetime").datetime(2030, 1, 1, tzinfo=__import__("datetime").UTC))]})])


def _status_text(response):
    from asn1crypto import tsp

    response["status"]["status_string"] = tsp.PKIFreeText(["all good, trust me"])


@pytest.mark.parametrize("change", [_extra_certificate, _unsigned_attribute, _status_text], ids=["extra-certificate", "unsigned-attribute", "status-text"])
def test_unsigned_parts_of_the_last_token_fail(branch, change):  # noqa: F811
    repo, trust = branch
    edit(repo, LAST, lambda e: _token_with(e, change))
    report = report_of(repo, trust)
    assert report.state == "failed"
    failures = [(f.check, f.reason) for f in report.failures]
    assert ("timestamp.encoding" in {c for c, _ in failures}), failures


def test_a_ber_re_encoding_of_the_last_token_fails(branch):  # noqa: F811
    repo, trust = branch

    def longer_length(entry):
        token = entry.files["timestamp-0.tsr"]
        assert token[0] == 0x30 and token[1] == 0x82  # SEQUENCE, two length bytes
        ber = b"\x30\x83\x00" + token[2:]  # the same length in three bytes: BER, not DER
        return with_file(entry, "timestamp-0.tsr", ber)

    edit(repo, LAST, longer_length)
    report = report_of(repo, trust)
    assert report.state == "failed"
    assert {f.check for f in report.failures} & {"timestamp.encoding", "timestamp.parse"}, report.failures


def test_a_keyless_bundle_must_be_sigstores_own_encoding_of_itself():
    """No Fulcio offline, so no keyless branch verifies end to end here (tests/test_keyless.py
    says why); this checks the re-derivation the verifier compares bundle.sigstore.json with,
    on a real Sigstore bundle: its canonical form is stable, and the same bundle spelled
    otherwise (the asset as published, indented) is not it."""
    from test_keyless import DSSE_BUNDLE, STAGING, trusted

    from afdp.evidence.keyless import verify_keyless_bundle

    published = DSSE_BUNDLE.read_bytes()
    canonical = verify_keyless_bundle(published, identities=trusted(), root=STAGING).canonical_json.encode()
    assert canonical != published  # another spelling of the same bundle: the check refuses it
    again = verify_keyless_bundle(canonical, identities=trusted(), root=STAGING)
    assert again.canonical_json.encode() == canonical  # AFDP's own bundles pass
    spaced = json.dumps(json.loads(canonical), indent=1).encode()
    assert verify_keyless_bundle(spaced, identities=trusted(), root=STAGING).canonical_json.encode() != spaced


# -- bounded work and memory on hostile repositories (issue 9, item 10) ---------------------


def test_one_large_blob_under_many_names_is_refused_within_the_memory_bound(branch):  # noqa: F811
    """A commit that lists one 8 MiB blob under 100 token names: verification must not
    read or hash it 100 times (800 MiB), but refuse the record within its bound."""
    import tracemalloc

    repo, trust = branch

    def stuffed(entry):
        big = b"\x30" * (8 << 20)
        files = dict(entry.files)
        files.update({f"timestamp-{i}.tsr": big for i in range(1, 101)})
        return replace(entry, files=files)

    edit(repo, LAST, stuffed)
    tracemalloc.start()
    try:
        report = report_of(repo, trust)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.state == "failed"
    assert any("a record may hold" in f.reason for f in report.failures), report.failures
    assert peak < 200 << 20, f"peak {peak >> 20} MiB"
