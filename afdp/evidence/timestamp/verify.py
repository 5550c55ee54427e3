"""Verifying a time-stamp token offline, against the auditor's TSA roots.

:func:`verify_timestamp` runs the numbered checks in order (parse, status, hash,
imprint, chain, encoding); the chain check takes the warm path of :mod:`.chains` when
this process already validated the token's certificate set against these roots.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from typing import Any

import rfc3161_client
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from afdp.evidence.timestamp.chains import (
    _MAX_VERIFIERS,
    _UNREADABLE,
    _certificate_set_problems,
    _cms_signature_ok,
    _encoding_key,
    _signer_parts,
    _trust,
    _verifiers_lock,
    signed_attributes_problem,
)
from afdp.evidence.timestamp.tokens import (
    _SHA256_OID,
    TimestampVerificationError,
    VerifiedTimestamp,
    _short,
    _status_text,
    _utc,
)

_HASH_NAMES = {
    "2.16.840.1.101.3.4.2.1": "SHA-256",
    "2.16.840.1.101.3.4.2.2": "SHA-384",
    "2.16.840.1.101.3.4.2.3": "SHA-512",
    "1.3.14.3.2.26": "SHA-1",
}


def verify_timestamp(
    token_der: bytes, signature: bytes, roots: Sequence[x509.Certificate]
) -> VerifiedTimestamp:
    """Verify a time-stamp token over ``signature`` offline, against trusted TSA roots.

    Returns:
        The verified genTime, TSA subject, serial number, policy and imprint.

    Raises:
        TimestampVerificationError: with ``check`` set to the first check that failed:
            ``timestamp.parse`` (not a DER time-stamp response), ``timestamp.status``
            (not granted), ``timestamp.hash`` (imprint not SHA-256),
            ``timestamp.imprint`` (token over another signature), ``timestamp.chain``
            (no trusted roots, bad token signature, signer not chained to a root, or
            signed attributes that do not bind this TSTInfo as a TSTInfo:
            :func:`~afdp.evidence.timestamp.chains.signed_attributes_problem`),
            ``timestamp.encoding`` (parts no signature covers are present:
            :func:`encoding_problem`; non-DER fails ``timestamp.parse``).
    """
    # 1. parse
    try:
        response = rfc3161_client.decode_timestamp_response(token_der)
    except ValueError:
        raise TimestampVerificationError(
            "timestamp.parse", "not a DER RFC 3161 time-stamp response"
        ) from None
    # 2. status
    if response.status != rfc3161_client.PKIStatus.GRANTED:
        raise TimestampVerificationError(
            "timestamp.status", f"the TSA did not grant this time-stamp ({_status_text(response)})"
        )
    try:
        info = response.tst_info
        message_imprint = info.message_imprint
        algorithm = message_imprint.hash_algorithm
        imprint = message_imprint.message
    except ValueError:
        raise TimestampVerificationError(
            "timestamp.parse", "granted response without a readable TSTInfo"
        ) from None
    # 3. hash algorithm: AFDP asks for SHA-256 and accepts nothing weaker or different
    if algorithm != _SHA256_OID:
        name = _HASH_NAMES.get(algorithm.dotted_string, algorithm.dotted_string)
        raise TimestampVerificationError(
            "timestamp.hash", f"time-stamp imprint uses {name}; AFDP requires SHA-256"
        )
    # 4. imprint, checked here (not only inside rfc3161-client) for a precise message
    expected = hashlib.sha256(signature).digest()
    if imprint != expected:
        raise TimestampVerificationError(
            "timestamp.imprint",
            f"time-stamp token is over a different signature "
            f"(imprint {imprint.hex()}, expected {expected.hex()})",
        )
    # 5. CMS signature, TSA certificate (critical timeStamping EKU) and chain to a root
    if not roots:
        raise TimestampVerificationError(
            "timestamp.chain", "no trusted TSA roots in the trust policy; cannot trust any token"
        )
    parts = _signer_parts(token_der)
    gen_time = _utc(info.gen_time)
    trust = _trust(roots)
    # A chain this process already validated for exactly this certificate set, signer id
    # and these roots, valid at this token's time, needs only this token's own CMS
    # signature checked; anything else (or any doubt) runs rfc3161-client's whole check.
    chain = trust.known_chain(parts, gen_time)
    as_bytes = getattr(info, "as_bytes", None)  # the TSTInfo's DER (not in the type stubs)
    tst_info_der = as_bytes() if as_bytes is not None else None
    if chain is not None and parts is not None and tst_info_der is not None and _cms_signature_ok(parts, tst_info_der, chain):
        trust.fast_passes += 1
    else:
        try:
            trust.reference.verify(response, expected)
        except (rfc3161_client.VerificationError, ValueError) as exc:
            raise TimestampVerificationError(
                "timestamp.chain",
                f"token is not signed by a TSA chained to a trusted root: {_short(exc)}",
            ) from None
        # What the warm path requires of the signed attributes beyond the whole check
        # (the content-type attribute above all, which OpenSSL does not read), so that
        # a token's verdict never depends on what this process already remembered.
        try:
            attributes = (
                signed_attributes_problem(parts, tst_info_der)
                if parts is not None
                else "asn1crypto cannot read the token"
            )
        except _UNREADABLE:
            attributes = "asn1crypto cannot read the token's signed attributes"
        if attributes is not None:
            raise TimestampVerificationError(
                "timestamp.chain", f"the TSA's signature does not bind this TSTInfo as a TSTInfo: {attributes}"
            )
        chain = trust.remember(parts, response, roots)
    # 6. encoding: every byte of the file is signed by the TSA or fixed by DER. A CMS
    # token has parts its signature does not cover (the certificate set, CRLs, unsigned
    # attributes, the status text); on the last record of a branch nothing else binds
    # the file, so those parts must be absent or exactly what verification used.
    if parts is None:
        problem = encoding_problem(token_der)
    elif parts.encoding_known_good():
        problem = None
    else:
        problem = encoding_problem(token_der, parts.response)
    if problem:
        raise TimestampVerificationError("timestamp.encoding", problem)
    return VerifiedTimestamp(
        gen_time=gen_time,
        tsa_name=chain.subject if chain is not None else _signer_name(response),
        serial_number=info.serial_number,
        policy_oid=info.policy.dotted_string,
        digest_hex=expected.hex(),
    )


def encoding_problem(token_der: bytes, parsed: Any = None) -> str | None:
    """Return why ``token_der`` is not in the one form AFDP accepts, or None.

    The form: DER (rfc3161-client's parser, which :func:`verify_timestamp` ran first,
    accepts DER only); a status with no text and no failure bits; one SignerInfo with no
    unsigned attributes; no CRLs; the versions and digest algorithms RFC 5652 fixes
    (:func:`_fixed_fields_problem`); and a certificate set holding only the signer's
    certificate and the issuers on its path (each once). So nothing can be added to or
    dropped from a token without the TSA's signature or this check noticing.
    ``parsed``: the asn1crypto ``TimeStampResp`` of exactly ``token_der``, when the caller
    has one (it is then not parsed again).
    """
    from asn1crypto import core, tsp

    try:
        response = parsed if parsed is not None else tsp.TimeStampResp.load(token_der)
        status = response["status"]
        if not isinstance(status["status_string"], core.Void) or not isinstance(
            status["fail_info"], core.Void
        ):
            return "a granted token carries a status text or failure bits"
        signed = response["time_stamp_token"]["content"]
        if not isinstance(signed["crls"], core.Void):
            return "the token carries CRLs, which its signature does not cover"
        signers = list(signed["signer_infos"])
        if len(signers) != 1:
            return f"the token has {len(signers)} SignerInfos; one is expected"
        if not isinstance(signers[0]["unsigned_attrs"], core.Void):
            return "the token carries unsigned attributes, which its signature does not cover"
        field = signed["certificates"]
        sid = signers[0]["sid"]
        if isinstance(field, core.Void):
            return _fixed_fields_problem(signed, signers[0])
        # Every token of one TSA carries the same certificate set, signer id, versions and
        # digest algorithms: judge them once (the parse of the certificates is most of
        # this check's cost).
        key = _encoding_key(signed, signers[0], field.dump(), sid.dump())
        if key not in _certificate_set_problems:
            problem = _fixed_fields_problem(signed, signers[0]) or _certificate_set_problem(
                [c.chosen for c in field], sid
            )
            with _verifiers_lock:
                if len(_certificate_set_problems) >= _MAX_VERIFIERS:
                    _certificate_set_problems.clear()
                _certificate_set_problems[key] = problem
        return _certificate_set_problems[key]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return f"the token cannot be read as a time-stamp response ({exc})"


def _fixed_fields_problem(signed: Any, signer: Any) -> str | None:
    """Why the unsigned numbers and lists of this SignedData are not the ones RFC 5652
    fixes for a time-stamp token (a TSTInfo, X.509 certificates): SignedData version 3,
    SignerInfo version 1 (issuer and serial number) or 3 (key identifier), and digest
    algorithms that are exactly the signer's."""
    version = signed["version"].native
    if version != "v3":
        return f"the SignedData version is {version}; a time-stamp token's is v3 (RFC 5652, 5.1)"
    wanted = "v1" if signer["sid"].name == "issuer_and_serial_number" else "v3"
    if signer["version"].native != wanted:
        return f"the SignerInfo version is {signer['version'].native}; its signer id makes it {wanted} (RFC 5652, 5.3)"
    if [a.dump() for a in signed["digest_algorithms"]] != [signer["digest_algorithm"].dump()]:
        return "the SignedData's digest algorithms are not exactly its signer's"
    return None


def _certificate_set_problem(certificates: list[Any], sid: Any) -> str | None:
    """Why this certificate set is not exactly the signer's path (each certificate once).

    The path is followed by signatures, not names: a certificate is the issuer of the one
    before it only if it has that issuer's name and its key verifies that certificate
    (cryptography's ``verify_directly_issued_by``). So a certificate that merely carries
    the name of a CA on the path (another TSA's root of the same name) is off the path.
    """
    if not certificates:
        return None
    if sid.name != "issuer_and_serial_number":
        return None if len(certificates) == 1 else "certificates beyond the signer's path"
    wanted = (sid.chosen["issuer"].dump(), sid.chosen["serial_number"].native)
    parsed = [x509.load_der_x509_certificate(c.dump()) for c in certificates]
    current = next(
        (p for c, p in zip(certificates, parsed, strict=True) if (c.issuer.dump(), c.serial_number) == wanted), None
    )
    if current is None:
        return "the certificate set does not hold the signer's certificate"
    used = [current]
    while current.issuer != current.subject and len(used) <= len(parsed):
        issuer = next((c for c in parsed if c not in used and _issued_by(current, c)), None)
        if issuer is None:
            break
        used.append(issuer)
        current = issuer
    extra = len(parsed) - len(used)
    if extra:
        return f"the certificate set holds {extra} certificate(s) off the signer's path"
    return None


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _signer_name(response: rfc3161_client.TimeStampResponse) -> str:
    # The signer is the embedded certificate named by the SignerInfo; rfc3161-client has
    # just verified that it exists and chains, so this lookup cannot miss.
    signed = response.signed_data
    signer = next(iter(signed.signer_infos))
    for der in signed.certificates:
        issuer, serial, subject = _certificate_names(der)
        if issuer == signer.issuer and serial == signer.serial_number:
            return subject
    return signer.issuer.rfc4514_string()  # pragma: no cover - guarded by verify()


@functools.lru_cache(maxsize=256)
def _certificate_names(der: bytes) -> tuple[x509.Name, int, str]:
    # Every token of one TSA embeds the same certificate; parse it once, not per token.
    cert = x509.load_der_x509_certificate(der)
    return cert.issuer, cert.serial_number, cert.subject.rfc4514_string()
