"""The embedded TSA's tokens, assembled from parts encoded once (responder._TokenAssembler).

The assembler writes DER by hand around precomputed parts; these tests hold it to what
asn1crypto and rfc3161-client read: strict DER (asn1crypto re-encodes it to the same
bytes), the fields the request asked for, a signature that verifies, and many threads
at once without a lock.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import pytest
import rfc3161_client
from asn1crypto import tsp
from cryptography.hazmat.primitives.serialization import Encoding

from afdp.evidence.notary import POLICY_OID, EmbeddedTSA
from afdp.evidence.timestamp import TimestampVerificationError, load_certificates, verify_timestamp

ALGORITHMS = {
    rfc3161_client.HashAlgorithm.SHA256: "sha256",
    rfc3161_client.HashAlgorithm.SHA512: "sha512",
}


@pytest.fixture(scope="module")
def embedded(tsa) -> EmbeddedTSA:
    return EmbeddedTSA.load(tsa.directory)


def request(data: bytes, algorithm, *, nonce: bool, cert_req: bool) -> rfc3161_client.TimeStampRequest:
    return (
        rfc3161_client.TimestampRequestBuilder()
        .data(data)
        .hash_algorithm(algorithm)
        .nonce(nonce=nonce)
        .cert_request(cert_request=cert_req)
        .build()
    )


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
@pytest.mark.parametrize("nonce", [True, False])
@pytest.mark.parametrize("cert_req", [True, False])
def test_tokens_are_strict_der_with_the_requested_fields(embedded, tsa, algorithm, nonce, cert_req):
    data = b"signature bytes"
    req = request(data, algorithm, nonce=nonce, cert_req=cert_req)
    der = embedded.respond(req.as_bytes())
    parsed = tsp.TimeStampResp.load(der, strict=True)
    assert parsed.dump(force=True) == der  # re-encoded by asn1crypto: the same bytes
    assert parsed["status"]["status"].native == "granted"
    signed = parsed["time_stamp_token"]["content"]
    assert signed["version"].native == "v3"
    info = signed["encap_content_info"]["content"].parsed
    assert info["policy"].dotted == POLICY_OID
    assert info["message_imprint"]["hashed_message"].native == hashlib.new(ALGORITHMS[algorithm], data).digest()
    assert info["nonce"].native == (req.nonce if nonce else None)
    assert info["gen_time"].native.tzinfo is not None
    if cert_req:  # RFC 3161 2.4.1: the TSA's certificate only when asked for
        assert len(signed["certificates"]) == 1
        assert signed["certificates"][0].chosen.dump() == embedded.certificate.public_bytes(Encoding.DER)
    else:
        assert signed["certificates"].native is None
    response = rfc3161_client.decode_timestamp_response(der)
    verifier = rfc3161_client.VerifierBuilder().add_root_certificate(
        load_certificates((tsa.directory / "root.pem").read_bytes())[0]
    )
    if cert_req:
        assert verifier.build().verify_message(response, data)
    else:  # without the certificate the token names its signer only: give it
        verifier = verifier.tsa_certificate(embedded.certificate)
        assert verifier.build().verify_message(response, data)


def test_concurrent_requests_each_get_a_valid_token_with_its_own_serial(embedded, tsa):
    roots = load_certificates((tsa.directory / "root.pem").read_bytes())
    signatures = [f"signature {i}".encode() for i in range(64)]

    def stamp(signature: bytes) -> bytes:
        return embedded.respond(request(signature, rfc3161_client.HashAlgorithm.SHA256, nonce=True, cert_req=True).as_bytes())

    with ThreadPoolExecutor(8) as pool:
        tokens = list(pool.map(stamp, signatures))
    serials = {verify_timestamp(token, signature, roots).serial_number for token, signature in zip(tokens, signatures, strict=True)}
    assert len(serials) == len(signatures)
    # and each token is bound to its own signature only
    with pytest.raises(TimestampVerificationError) as info:
        verify_timestamp(tokens[0], signatures[1], roots)
    assert info.value.check == "timestamp.imprint"


def test_a_bit_flipped_in_the_signed_part_of_a_token_fails_the_chain_check(embedded, tsa):
    roots = load_certificates((tsa.directory / "root.pem").read_bytes())
    signature = b"sig"
    token = embedded.respond(request(signature, rfc3161_client.HashAlgorithm.SHA256, nonce=True, cert_req=True).as_bytes())
    verify_timestamp(token, signature, roots)
    # the serial number sits inside the TSTInfo, which the TSA's signature covers
    serial = tsp.TimeStampResp.load(token)["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed["serial_number"].contents
    at = token.index(serial)
    bent = token[:at] + bytes([serial[0] ^ 0x01]) + token[at + 1 :]
    with pytest.raises(TimestampVerificationError) as info:
        verify_timestamp(bent, signature, roots)
    assert info.value.check == "timestamp.chain"
