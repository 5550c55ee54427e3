"""The warm path of token verification (``timestamp.chains``) on the project's real TSA.

The first token of a TSA runs rfc3161-client's whole check; later tokens with the same
certificate set and signer id are checked by the warm path, which reads them with
asn1crypto and rfc3161-client (no DER reader of AFDP's own). Each test here warms the
cache with good tokens of the embedded TSA (``tsa`` fixture: its real certificate and
key), then shows one token bent in one way fails, and does not pass on the warm path.
Each would pass if the warm path's check it names were removed (see the report of the
change that added them: every check was removed in turn and its test failed).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest
from asn1crypto import cms, core, tsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from test_verify_speed_caches import SIGNATURE, at

from afdp.evidence.notary import EmbeddedTSA
from afdp.evidence.timestamp import (
    TimestampVerificationError,
    chains,
    load_certificates,
    verify_timestamp,
)


@pytest.fixture(scope="module")
def real(tsa) -> tuple[EmbeddedTSA, list[x509.Certificate]]:
    """The embedded TSA behind the ``tsa`` fixture (its certificate and key) and its roots."""
    return EmbeddedTSA.load(tsa.directory), load_certificates((tsa.directory / "root.pem").read_bytes())


@pytest.fixture(scope="module")
def tsa_key(tsa) -> rsa.RSAPrivateKey:
    """The TSA's own signing key (``key.pem``), to make tokens the TSA really signed."""
    key = serialization.load_pem_private_key((tsa.directory / "key.pem").read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def warm(real) -> chains._Trust:
    """Verify good tokens until the second takes the warm path; return the trust."""
    embedded, roots = real
    verify_timestamp(at(embedded, _now()), SIGNATURE, roots)
    trust = chains._trust(roots)
    before = trust.fast_passes
    verify_timestamp(at(embedded, _now() + dt.timedelta(seconds=1)), SIGNATURE, roots)
    assert trust.fast_passes == before + 1, "a second token of the TSA must take the warm path"
    return trust


def refused(real, token: bytes, check: str, *, chain_may_be_warm: bool = False) -> TimestampVerificationError:
    """Assert ``token`` fails ``check`` on a warm cache, and (unless ``chain_may_be_warm``:
    an encoding check after a chain check the token passes) its chain was not accepted
    on the warm path."""
    _, roots = real
    trust = warm(real)
    before = trust.fast_passes
    with pytest.raises(TimestampVerificationError) as caught:
        verify_timestamp(token, SIGNATURE, roots)
    assert caught.value.check == check, caught.value.diagnostics()
    assert "\n" not in caught.value.diagnostics()
    if not chain_may_be_warm:
        assert trust.fast_passes == before
    return caught.value


def bent(token: bytes, change) -> bytes:
    response = tsp.TimeStampResp.load(token)
    change(response)
    return response.dump(force=True)


def signer_info(response):
    return response["time_stamp_token"]["content"]["signer_infos"][0]


def resign(key: rsa.RSAPrivateKey, response) -> None:
    """Sign the SignerInfo's signed attributes again with the TSA's own key (RSA PKCS #1
    v1.5 over their DER SET OF), as the TSA itself would: a token the TSA really signed."""
    signer = signer_info(response)
    attributes = cms.CMSAttributes(contents=signer["signed_attrs"].contents).dump(force=True)
    signer["signature"] = key.sign(attributes, padding.PKCS1v15(), hashes.SHA256())


def test_a_warm_token_gives_the_answer_of_the_whole_check(real):
    embedded, roots = real
    token = at(embedded, _now() + dt.timedelta(seconds=2))
    warm(real)
    fast = verify_timestamp(token, SIGNATURE, roots)
    chains._trusts.clear()  # cold: rfc3161-client's whole check
    cold = verify_timestamp(token, SIGNATURE, roots)
    assert fast == cold
    assert fast.digest_hex == hashlib.sha256(SIGNATURE).hexdigest()
    assert fast.tsa_name == embedded.certificate.subject.rfc4514_string()


def test_a_signature_altered_after_the_cache_is_warm_fails(real):
    embedded, _ = real

    def flip(response):
        signature = signer_info(response)["signature"].native
        signer_info(response)["signature"] = signature[:-1] + bytes([signature[-1] ^ 1])

    refused(real, bent(at(embedded, _now() + dt.timedelta(seconds=3)), flip), "timestamp.chain")


def test_a_token_over_another_message_fails_its_imprint(real):
    embedded, _ = real
    other = at(embedded, _now() + dt.timedelta(seconds=3), data=b"another record's signature")
    error = refused(real, other, "timestamp.imprint")
    assert hashlib.sha256(SIGNATURE).hexdigest() in error.message


def test_a_tstinfo_its_message_digest_does_not_match_fails(real):
    """The TSTInfo changed (its serial) after signing: the signed attributes and their
    signature are untouched and valid, only the message digest no longer matches."""
    embedded, _ = real

    def other_serial(response):
        content = response["time_stamp_token"]["content"]["encap_content_info"]["content"]
        info = content.parsed
        info["serial_number"] = info["serial_number"].native + 1
        content.set(info.dump(force=True))

    refused(real, bent(at(embedded, _now() + dt.timedelta(seconds=4)), other_serial), "timestamp.chain")


def test_a_message_digest_the_tsa_signed_but_not_of_this_tstinfo_fails(real, tsa_key):
    """The TSA's real key signed attributes whose message digest is of other bytes: the
    signature verifies, the digest does not match the TSTInfo."""
    embedded, _ = real

    def other_digest(response):
        signer = signer_info(response)
        for attribute in signer["signed_attrs"]:
            if attribute["type"].native == "message_digest":
                attribute["values"] = [hashlib.sha256(b"other TSTInfo bytes").digest()]
        resign(tsa_key, response)

    refused(real, bent(at(embedded, _now() + dt.timedelta(seconds=5)), other_digest), "timestamp.chain")


def test_a_resigned_token_with_its_own_digest_passes_so_the_resigning_is_sound(real, tsa_key):
    """Control for the test above: re-signing alone (digest untouched) still verifies."""
    embedded, roots = real
    token = bent(at(embedded, _now() + dt.timedelta(seconds=5)), lambda response: resign(tsa_key, response))
    trust = warm(real)
    before = trust.fast_passes
    verify_timestamp(token, SIGNATURE, roots)
    assert trust.fast_passes == before + 1


@pytest.mark.parametrize("side", ["after", "before"])
def test_a_token_dated_outside_the_signer_certificates_validity_fails(real, side):
    embedded, _ = real
    certificate = embedded.certificate
    when = (
        certificate.not_valid_after_utc + dt.timedelta(days=1)
        if side == "after"
        else certificate.not_valid_before_utc - dt.timedelta(days=1)
    )
    refused(real, at(embedded, when), "timestamp.chain")


def test_a_token_with_another_certificate_set_under_the_same_signer_id_fails(real, tsa_key):
    """The TSA's real key signs, and the token names the very signer (same issuer name and
    serial: the same SignerInfo sid bytes), but carries another certificate for that key,
    issued by a CA with the real root's name that no trust policy holds. A cache keyed by
    the signer alone would accept it (the signature verifies with the cached key)."""
    embedded, _ = real
    real_certificate = embedded.certificate
    ca_key = ec.generate_private_key(ec.SECP256R1())
    impostor_certificate = (
        x509.CertificateBuilder()
        .subject_name(real_certificate.subject)
        .issuer_name(real_certificate.issuer)
        .public_key(real_certificate.public_key())
        .serial_number(real_certificate.serial_number)
        .not_valid_before(real_certificate.not_valid_before_utc)
        .not_valid_after(real_certificate.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    impostor = EmbeddedTSA(impostor_certificate, tsa_key)
    token = at(impostor, _now() + dt.timedelta(seconds=6))
    good = chains._signer_parts(at(embedded, _now()))
    parts = chains._signer_parts(token)
    assert good is not None and parts is not None
    assert parts.sid == good.sid and parts.certificates != good.certificates  # only the set differs
    refused(real, token, "timestamp.chain")


def test_a_token_with_a_certificate_added_to_its_set_is_not_warm_and_fails_its_encoding(real, other_tsa):
    """The certificate set is not signed: a certificate off the signer's path added to it
    makes another set (not the cached one), and the encoding check refuses it."""
    embedded, _ = real
    foreign_der = (other_tsa.directory / "root.pem").read_bytes()
    foreign = x509.load_pem_x509_certificate(foreign_der).public_bytes(serialization.Encoding.DER)

    def add_foreign(response):
        signed = response["time_stamp_token"]["content"]
        certificates = [c.chosen for c in signed["certificates"]]
        signed["certificates"] = cms.CertificateSet(
            [cms.CertificateChoices(name="certificate", value=c) for c in certificates]
            + [cms.CertificateChoices.load(foreign)]
        )

    error = refused(real, bent(at(embedded, _now() + dt.timedelta(seconds=7)), add_foreign), "timestamp.encoding")
    assert "off the signer's path" in error.message


def _cuts(token: bytes) -> list[bytes]:
    return [
        token[:n] for n in (0, 1, 2, 10, len(token) // 2, len(token) - 300, len(token) - 1)
    ] + [
        token + b"\x00",  # trailing data
        token[:1] + bytes([token[1] ^ 0x01]) + token[2:],  # the outer length off by one
        token[:4] + b"\x80" + token[5:],  # a length made indefinite (BER, not DER)
        b"\x30\x03\x02\x01\x00",  # a response with a status and no token
        b"not DER at all",
    ]


def test_malformed_or_truncated_der_fails_with_one_clear_error_on_a_warm_cache(real):
    embedded, roots = real
    token = at(embedded, _now() + dt.timedelta(seconds=8))
    trust = warm(real)
    before = trust.fast_passes
    for damaged in _cuts(token):
        with pytest.raises(TimestampVerificationError) as caught:
            verify_timestamp(damaged, SIGNATURE, roots)
        assert caught.value.check.startswith("timestamp."), caught.value.check
        assert "\n" not in caught.value.diagnostics()
    assert trust.fast_passes == before
    verify_timestamp(token, SIGNATURE, roots)  # and the undamaged token still verifies
    assert trust.fast_passes == before + 1


def test_a_truncated_token_on_a_branch_fails_verify_with_one_line_and_no_traceback(repo, signer, tsa, trust_file):
    from conftest import build_deployment, run_cli
    from tamper import edit, with_file

    build_deployment(repo, signer, tsa, steps=4)
    edit(repo, 3, lambda entry: with_file(entry, "timestamp-0.tsr", entry.files["timestamp-0.tsr"][:-40]))
    result = run_cli("verify", "--repo", str(repo), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file))
    assert result.code == 1
    assert "Traceback" not in result.err and "Traceback" not in result.out
    lines = [line for line in (result.out + result.err).splitlines() if "timestamp.parse" in line]
    assert len(lines) == 1, result.out + result.err


def test_the_message_digest_attribute_is_compared_as_asn1crypto_encodes_it():
    """The warm path compares the signed attributes whole against the one DER encoding of
    "content type TSTInfo" and "message digest D"; both come from asn1crypto."""
    for dotted, kind in chains._HASHES.items():
        digest = hashlib.new(kind.name, b"x").digest()
        whole = cms.CMSAttribute({"type": "message_digest", "values": [digest]}).dump()
        assert chains._MESSAGE_DIGEST_PREFIX[dotted] + digest == whole
    assert cms.CMSAttribute.load(chains._CONTENT_TYPE_TST_INFO)["values"][0].dotted == "1.2.840.113549.1.9.16.1.4"
    assert isinstance(tsp.PKIStatusInfo.load(b"\x30" + bytes([len(chains._BARE_GRANTED)]) + chains._BARE_GRANTED)["status_string"], core.Void)


def _signed_data_version_1(response):
    response["time_stamp_token"]["content"]["version"] = "v1"


def _signer_info_version_3(response):
    signer_info(response)["version"] = "v3"


def _another_digest_algorithm(response):
    signed = response["time_stamp_token"]["content"]
    algorithms = [a.dump() for a in signed["digest_algorithms"]]
    from asn1crypto import algos

    signed["digest_algorithms"] = cms.DigestAlgorithms(
        [algos.DigestAlgorithm.load(a) for a in algorithms] + [algos.DigestAlgorithm({"algorithm": "sha384"})]
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_signed_data_version_1, "SignedData version is v1"),
        (_signer_info_version_3, "SignerInfo version is v3"),
        (_another_digest_algorithm, "digest algorithms are not exactly its signer's"),
    ],
    ids=["signed-data-version", "signer-info-version", "digest-algorithms"],
)
def test_unsigned_numbers_and_lists_rfc5652_fixes_fail_the_encoding_check_on_a_warm_cache(real, change, reason):
    """Neither version nor the SignedData's digest algorithms are under the TSA's signature,
    and the whole check accepts other values: the encoding check holds them to the one
    form RFC 5652 gives a time-stamp token, so no byte of the file can change unnoticed."""
    embedded, _ = real
    token = bent(at(embedded, _now() + dt.timedelta(seconds=9)), change)
    error = refused(real, token, "timestamp.encoding", chain_may_be_warm=True)
    assert reason in error.message


def _with_content_type(tsa_key, values):
    """Give the token's signed content-type attribute ``values`` (None: drop the attribute),
    keep the attributes in DER order and sign them again with the TSA's real key: a token
    the TSA itself signed, only its content type is not (exactly once) id-ct-TSTInfo."""

    def change(response):
        signer = signer_info(response)
        kept = [a.dump(force=True) for a in signer["signed_attrs"] if a["type"].native != "content_type"]
        if values is not None:
            kept.append(cms.CMSAttribute({"type": "content_type", "values": values}).dump())
        signer["signed_attrs"] = cms.CMSAttributes([cms.CMSAttribute.load(der) for der in sorted(kept)])
        resign(tsa_key, response)

    return change


_CONTENT_TYPES = {
    "id-data": ["1.2.840.113549.1.7.1"],
    "tstinfo-and-id-data": ["1.2.840.113549.1.9.16.1.4", "1.2.840.113549.1.7.1"],
    "missing": None,
}


@pytest.mark.parametrize("content_type", list(_CONTENT_TYPES), ids=list(_CONTENT_TYPES))
def test_a_token_the_tsa_signed_with_another_content_type_fails_cold_and_warm(real, tsa_key, tmp_path, content_type):
    """rfc3161-client's whole check (OpenSSL) verifies the signature and the message
    digest but does not read the content-type attribute; the warm path requires it to be
    id-ct-TSTInfo once. The cold path applies the same rules after the whole check, so the
    token fails in a fresh process (its first token), on a cleared cache, and on a warm one."""
    import os
    import subprocess
    import sys

    import afdp

    embedded, roots = real
    token = bent(at(embedded, _now() + dt.timedelta(seconds=10)), _with_content_type(tsa_key, _CONTENT_TYPES[content_type]))
    parts = chains._signer_parts(token)
    assert parts is not None and parts.chain_key is not None  # asn1crypto reads it: the rule, not a parse error, refuses it
    # cold: the first token a fresh process verifies
    (tmp_path / "token.tsr").write_bytes(token)
    (tmp_path / "root.pem").write_bytes(b"".join(root.public_bytes(serialization.Encoding.PEM) for root in roots))
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from afdp.evidence.timestamp import TimestampVerificationError, load_certificates, verify_timestamp\n"
        "folder = Path(sys.argv[1])\n"
        "try:\n"
        "    verify_timestamp((folder / 'token.tsr').read_bytes(), bytes.fromhex(sys.argv[2]),\n"
        "                     load_certificates((folder / 'root.pem').read_bytes()))\n"
        "except TimestampVerificationError as exc:\n"
        "    print(exc.diagnostics())\n"
        "    sys.exit(1)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(afdp.__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), SIGNATURE.hex()], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("timestamp.chain: ") and "content-type attribute" in done.stdout, done.stdout
    # cold in this process: every cache cleared
    chains._trusts.clear()
    chains._certificate_set_problems.clear()
    chains._attribute_types.clear()
    with pytest.raises(TimestampVerificationError) as cold:
        verify_timestamp(token, SIGNATURE, roots)
    assert cold.value.check == "timestamp.chain" and "content-type attribute" in cold.value.message
    assert not chains._trust(roots).chains  # nothing was remembered from it
    if content_type != "missing":  # the bent attribute's type is now remembered by its DER ...
        assert chains._CONTENT_TYPE_ATTR in chains._attribute_types.values()
    # warm: a good token's chain is remembered, and the bent one still fails, not on the
    # warm path (... and the remembered type refuses it as reading it did)
    error = refused(real, token, "timestamp.chain")
    assert error.message == cold.value.message
