"""What verification remembers for speed never lets a tampered record pass.

Every cache here is keyed by the exact bytes it judged, and each test warms the cache
with good input first (asserting the cached path is taken), then shows that input bent
in one way still fails on that warm cache:

- time-stamp chains (``timestamp.chains._Trust``): a chain validated for one certificate set,
  signer id and set of roots is reused for later tokens of that TSA, which still get
  their own CMS signature, message digest and content type checked, and only inside
  the validity of every certificate on the path;
- the token encoding check's fast answer (``_SignerParts.encoding_known_good``);
- trusted public keys loaded once per key (``afdp.evidence.publickeys``), for DSSE and
  SSH commit signatures.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from asn1crypto import tsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from afdp.evidence.notary import EmbeddedTSA
from afdp.evidence.notary.responder import _parse_request
from afdp.evidence.timestamp import TimestampVerificationError, chains, verify_timestamp

SIGNATURE = b"\x30\x45" + bytes(range(69))


def request_der(data: bytes = SIGNATURE) -> bytes:
    import rfc3161_client

    return (
        rfc3161_client.TimestampRequestBuilder().data(data).hash_algorithm(rfc3161_client.HashAlgorithm.SHA256).nonce(nonce=True).cert_request(cert_request=True)
        .build().as_bytes()
    )


def at(tsa: EmbeddedTSA, when: dt.datetime, data: bytes = SIGNATURE) -> bytes:
    """A token of ``tsa`` dated ``when`` (the responder's own assembly, another clock)."""
    return tsa._assembler.respond(_parse_request(request_der(data)), when, 12345)


@pytest.fixture(scope="module")
def pki():
    """A root, a TSA certificate valid for one day, its key, and a second RSA key."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "speed-cache test root")])
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    root = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(root_key.public_key())
        .serial_number(1).not_valid_before(now - dt.timedelta(days=30)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "speed-cache tsa")]))
        .issuer_name(name).public_key(key.public_key()).serial_number(2)
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return root, EmbeddedTSA(cert, key), EmbeddedTSA(cert, other_key), now


def warm(pki) -> chains._Trust:
    """Verify good tokens until the remembered chain is used; return that trust."""
    root, tsa, _, now = pki
    verify_timestamp(at(tsa, now), SIGNATURE, [root])
    trust = chains._trust([root])
    before = trust.fast_passes
    verify_timestamp(at(tsa, now + dt.timedelta(seconds=1)), SIGNATURE, [root])
    assert trust.fast_passes == before + 1, "the second token of a TSA must take the remembered chain"
    assert trust.chains
    return trust


def expect_chain_failure(token: bytes, roots, match: str = "not signed by a TSA chained") -> None:
    with pytest.raises(TimestampVerificationError, match=match) as caught:
        verify_timestamp(token, SIGNATURE, roots)
    assert caught.value.check == "timestamp.chain"


def test_a_remembered_chain_is_used_and_gives_the_same_answer(pki):
    root, tsa, _, now = pki
    token = at(tsa, now + dt.timedelta(seconds=2))
    warm(pki)
    fast = verify_timestamp(token, SIGNATURE, [root])
    chains._trusts.clear()  # cold: the whole reference check
    cold = verify_timestamp(token, SIGNATURE, [root])
    assert fast == cold
    assert fast.tsa_name == "CN=speed-cache tsa"
    assert fast.digest_hex == hashlib.sha256(SIGNATURE).hexdigest()


def test_the_same_certificate_signed_by_another_key_fails_on_a_warm_cache(pki):
    """The token carries the trusted TSA's very certificate (the cache key matches), but
    an attacker's key made its signature."""
    root, _, impostor, now = pki
    trust = warm(pki)
    token = at(impostor, now + dt.timedelta(seconds=3))
    parts = chains._signer_parts(token)
    assert parts is not None and parts.chain_key in trust.chains  # the cache is hit
    expect_chain_failure(token, [root])


def _bent(token: bytes, change) -> bytes:
    response = tsp.TimeStampResp.load(token)
    change(response)
    return response.dump(force=True)


def _flip_signature(response) -> None:
    signer = response["time_stamp_token"]["content"]["signer_infos"][0]
    signature = signer["signature"].native
    signer["signature"] = bytes([signature[0] ^ 1]) + signature[1:]


def _flip_message_digest(response) -> None:
    signer = response["time_stamp_token"]["content"]["signer_infos"][0]
    for attribute in signer["signed_attrs"]:
        if attribute["type"].native == "message_digest":
            value = attribute["values"][0].native
            attribute["values"] = [bytes([value[0] ^ 1]) + value[1:]]


def _other_serial(response) -> None:
    # the TSTInfo itself changes (not the imprint, not the time): its digest no longer matches
    content = response["time_stamp_token"]["content"]["encap_content_info"]["content"]
    info = content.parsed
    info["serial_number"] = info["serial_number"].native + 1
    content.set(info.dump(force=True))


def _drop_content_type(response) -> None:
    signer = response["time_stamp_token"]["content"]["signer_infos"][0]
    from asn1crypto import cms

    signer["signed_attrs"] = cms.CMSAttributes(
        [a for a in signer["signed_attrs"] if a["type"].native != "content_type"]
    )


@pytest.mark.parametrize(
    "change",
    [_flip_signature, _flip_message_digest, _other_serial, _drop_content_type],
    ids=["signature", "message-digest", "tstinfo-bytes", "no-content-type"],
)
def test_a_bent_token_of_a_remembered_tsa_fails(pki, change):
    root, tsa, _, now = pki
    trust = warm(pki)
    token = _bent(at(tsa, now + dt.timedelta(seconds=4)), change)
    parts = chains._signer_parts(token)
    assert parts is not None and parts.chain_key in trust.chains  # the cache is hit
    before = trust.fast_passes
    with pytest.raises(TimestampVerificationError) as caught:
        verify_timestamp(token, SIGNATURE, [root])
    assert caught.value.check == "timestamp.chain"
    assert trust.fast_passes == before


def test_a_token_dated_after_the_certificate_expired_fails_on_a_warm_cache(pki):
    root, tsa, _, now = pki
    warm(pki)
    late = at(tsa, now + dt.timedelta(days=2))  # the TSA certificate ended after one day
    expect_chain_failure(late, [root], match="expired|not signed by a TSA chained")
    early = at(tsa, now - dt.timedelta(days=2))  # before it began
    expect_chain_failure(early, [root], match="not yet valid|not signed by a TSA chained")


def test_a_chain_remembered_for_one_root_does_not_serve_another(pki, other_tsa):
    from afdp.evidence.timestamp import load_certificates

    root, tsa, _, now = pki
    warm(pki)
    foreign_roots = load_certificates((other_tsa.directory / "root.pem").read_bytes())
    expect_chain_failure(at(tsa, now + dt.timedelta(seconds=5)), foreign_roots)


def test_unsigned_parts_fail_the_encoding_check_on_a_warm_cache(pki):
    from asn1crypto import cms

    root, tsa, _, now = pki
    warm(pki)
    good = at(tsa, now + dt.timedelta(seconds=6))
    parts = chains._signer_parts(good)
    assert parts is not None and parts.encoding_known_good()  # the fast answer is warm

    def status_text(response):
        response["status"]["status_string"] = tsp.PKIFreeText(["all good, trust me"])

    def unsigned_attribute(response):
        signer = response["time_stamp_token"]["content"]["signer_infos"][0]
        signer["unsigned_attrs"] = cms.CMSAttributes(
            [cms.CMSAttribute({"type": "signing_time", "values": [cms.Time(name="utc_time", value=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))]})]
        )

    for change, reason in ((status_text, "status text"), (unsigned_attribute, "unsigned attributes")):
        with pytest.raises(TimestampVerificationError, match=reason) as caught:
            verify_timestamp(_bent(good, change), SIGNATURE, [root])
        assert caught.value.check == "timestamp.encoding"


# -- trusted public keys, parsed once (afdp.evidence.publickeys) ---------------------------
@pytest.mark.parametrize("generate", ["generate_ecdsa", "generate_ed25519"])
def test_a_parsed_key_still_refuses_other_signatures_and_other_data(generate):
    from securesystemslib.exceptions import UnverifiedSignatureError
    from securesystemslib.signer import CryptoSigner

    from afdp.evidence import publickeys

    alice, mallory = getattr(CryptoSigner, generate)(), getattr(CryptoSigner, generate)()
    key = alice.public_key
    data = b"the PAE of a record"
    good = bytes.fromhex(alice.sign(data).signature)
    publickeys.verify_signature(key, key.keyid, good, data)
    hits = publickeys._parsed.cache_info().hits
    publickeys.verify_signature(key, key.keyid, good, data)
    assert publickeys._parsed.cache_info().hits == hits + 1  # the parsed key is reused
    forged = bytes.fromhex(mallory.sign(data).signature)
    for signature, signed in ((forged, data), (good, data + b"!"), (good[:-1] + bytes([good[-1] ^ 1]), data)):
        with pytest.raises(UnverifiedSignatureError):
            publickeys.verify_signature(key, key.keyid, signature, signed)
    # another key with the warm one's keyid is parsed from its own public key text
    other = mallory.public_key
    impostor = type(key)(key.keyid, other.keytype, other.scheme, dict(other.keyval))
    with pytest.raises(UnverifiedSignatureError):
        publickeys.verify_signature(impostor, key.keyid, good, data)
    # and a keyid the key does not have goes to securesystemslib, which refuses it
    from securesystemslib.exceptions import VerificationError

    with pytest.raises(VerificationError):
        publickeys.verify_signature(key, "another keyid", good, data)


# -- a whole branch: earlier records warm every cache, the tampered one still fails -------
def test_a_forged_token_under_the_real_tsa_certificate_fails_after_good_records(repo, signer, tsa, trust_file):
    import base64
    import json

    from conftest import build_deployment
    from tamper import edit, with_file

    from afdp.evidence import records as rec
    from afdp.evidence.trust import load_trust_policy
    from afdp.verify.verifier import check_branch

    build_deployment(repo, signer, tsa, steps=4)
    real = EmbeddedTSA.load(tsa.directory)
    impostor = EmbeddedTSA(real.certificate, rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def forge(entry):
        envelope = json.loads(entry.files[rec.ENVELOPE_FILE])
        signature = base64.b64decode(envelope["signatures"][0]["sig"])
        token = impostor._assembler.respond(_parse_request(request_der(signature)), dt.datetime.now(dt.UTC), 99)
        return with_file(entry, "timestamp-0.tsr", token)

    edit(repo, 3, forge)
    policy = load_trust_policy(trust_file)
    report = check_branch(repo, service="api", deployment="d-42", policy=policy, jobs=1)
    assert not report.ok
    assert any(f.sequence == 3 and f.check == "timestamp.chain" for f in report.failures), report.failures
    assert not any(f.check.startswith("timestamp") and f.sequence in (0, 1, 2) for f in report.failures)
    assert chains._trust(timestamp_roots(policy)).fast_passes > 0  # records 1-2 took the warm path


def timestamp_roots(policy):
    return [c for _, pem in policy.tsa_roots_pem for c in x509.load_pem_x509_certificates(pem)]


# -- RFC 8785 by the standard library's encoder, for plain values (canonical.py) ------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_TEXT = st.text(alphabet=st.characters(codec=None, categories=None), max_size=12) | st.sampled_from(
    ["\U0001f600", "\uffff", "\ue000", "\u2028", "\x7f", "\x00\x1f\b\f\n\r\t\"\\", "é", "\ud800"]
)
_NUMBERS = (
    st.integers(min_value=-(2**60), max_value=2**60)
    | st.sampled_from([2**53 - 1, 2**53, -(2**53 - 1), -(2**53), 0, -1])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([100.0, -0.0, 0.0, 1e16, 1e21, 1e-7, 1e-5, 0.0001, 123.25, -5e-324, 1.7976931348623157e308])
)
_JSON = st.recursive(
    st.none() | st.booleans() | _NUMBERS | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(_JSON)
def test_the_fast_canonical_encoding_is_rfc8785s_whenever_it_answers(value):
    import rfc8785

    from afdp.errors import UsageError
    from afdp.evidence.canonical import _plain_json_bytes, canonical_bytes

    fast = _plain_json_bytes(value)
    try:
        reference = rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError):
        assert fast is None, value
        with pytest.raises(UsageError):
            canonical_bytes(value)
        return
    if fast is not None:
        assert fast == reference, value
    assert canonical_bytes(value) == reference


def test_the_fast_canonical_encoding_answers_for_records_and_not_for_what_differs():
    from afdp.evidence.canonical import _plain_json_bytes

    record = {"b": [1, 2.5, None, True], "a": {"z": "é\n\"x\"", "y": -(2**53 - 1)}}
    assert _plain_json_bytes(record) == b'{"a":{"y":-9007199254740991,"z":"\xc3\xa9\\n\\"x\\""},"b":[1,2.5,null,true]}'
    for differing in (100.0, -0.0, 1e16, 1e-7, 2**53, float("nan"), {"\U0001f600": 1, "\uffff": 2}, {1: 2}, (1, 2)):
        assert _plain_json_bytes(differing) is None, differing


# -- one branch across worker processes (verifier._check_chunk) ------------------------------
def test_workers_give_the_serial_transcript_in_chain_order(repo, signer, tsa, trust_file):
    """Runs of commits read and checked in workers: the same records and the same
    failures, in the same order, as one process, on a branch tampered in two places."""
    import json

    from conftest import build_deployment
    from tamper import edit, with_file

    from afdp.evidence import records as rec
    from afdp.evidence.trust import load_trust_policy
    from afdp.verify.verifier import check_branch

    build_deployment(repo, signer, tsa, steps=40)

    def reorder(entry):
        envelope = json.loads(entry.files[rec.ENVELOPE_FILE])
        return with_file(entry, rec.ENVELOPE_FILE, json.dumps(dict(reversed(list(envelope.items())))).encode())

    edit(repo, 7, reorder)
    edit(repo, 33, reorder)
    policy = load_trust_policy(trust_file)
    serial = check_branch(repo, service="api", deployment="d-42", policy=policy, jobs=1)
    seen: list[tuple[int, int]] = []
    parallel = check_branch(repo, service="api", deployment="d-42", policy=policy, jobs=2, progress=lambda d, t: seen.append((d, t)))
    assert not serial.ok and serial.failures
    assert {f.sequence for f in serial.failures if f.check == "envelope"} == {7, 33}
    assert parallel.failures == serial.failures
    assert parallel.records == serial.records
    assert len(parallel.records) == 42
    assert len(seen) > 2 and seen[-1] == (seen[-1][1], seen[-1][1])  # several runs, then done


def test_a_trusted_root_above_a_trusted_intermediate_bounds_the_remembered_chain():
    """The policy trusts an intermediate and its root; the root expires first: a token
    dated after that fails on a warm cache, as the whole check says."""

    def name(text):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    root_key, mid_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = (
        x509.CertificateBuilder().subject_name(name("short root")).issuer_name(name("short root"))
        .public_key(root_key.public_key()).serial_number(1)
        .not_valid_before(now - dt.timedelta(days=30)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    mid = (
        x509.CertificateBuilder().subject_name(name("long intermediate")).issuer_name(name("short root"))
        .public_key(mid_key.public_key()).serial_number(2)
        .not_valid_before(now - dt.timedelta(days=30)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = (
        x509.CertificateBuilder().subject_name(name("tsa under intermediate")).issuer_name(name("long intermediate"))
        .public_key(key.public_key()).serial_number(3)
        .not_valid_before(now - dt.timedelta(days=30)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .sign(mid_key, hashes.SHA256())
    )
    tsa = EmbeddedTSA(leaf, key)
    roots = [mid, root]
    verify_timestamp(at(tsa, now), SIGNATURE, roots)
    trust = chains._trust(roots)
    before = trust.fast_passes
    verify_timestamp(at(tsa, now + dt.timedelta(hours=1)), SIGNATURE, roots)
    assert trust.fast_passes == before + 1
    expect_chain_failure(at(tsa, now + dt.timedelta(days=2)), roots, match="expired|not signed by a TSA chained")
