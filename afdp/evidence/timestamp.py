"""RFC 3161 time-stamps over DSSE signatures: requesting them, and verifying them offline.

What is time-stamped is the raw (base64-decoded) DSSE signature: the token's message
imprint is ``SHA-256(signature)``. A token proves the signature, and so the record, existed
at the token's time. Tokens are kept as complete DER ``TimeStampResp`` structures (the
``.tsr`` files beside each envelope), which is what ``openssl ts -verify -in X.tsr``
reads, so an auditor can check them without AFDP::

    openssl ts -verify -digest <sha256 hex of signature> -in timestamp-0.tsr \\
        -CAfile tsa-root.pem -untrusted tsa.pem

Building requests, parsing responses and checking the CMS signature and chain is
rfc3161-client's work; this module adds failover across TSAs and AFDP's precise errors.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import rfc3161_client
from asn1crypto import parser as _der
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from afdp.errors import ConfigurationError, TimestampError, UsageError, VerificationError

if TYPE_CHECKING:
    import httpx

__all__ = [
    "TimestampToken",
    "TimestampVerificationError",
    "VerifiedTimestamp",
    "load_certificates",
    "request_timestamp",
    "verify_timestamp",
]

_SHA256_OID = x509.ObjectIdentifier("2.16.840.1.101.3.4.2.1")
_HASH_NAMES = {
    "2.16.840.1.101.3.4.2.1": "SHA-256",
    "2.16.840.1.101.3.4.2.2": "SHA-384",
    "2.16.840.1.101.3.4.2.3": "SHA-512",
    "1.3.14.3.2.26": "SHA-1",
}
_QUERY_HEADERS = {"Content-Type": "application/timestamp-query"}
# A real TimeStampResp is a few KiB; refuse to buffer a runaway answer.
_MAX_RESPONSE_BYTES = 1024 * 1024


class TimestampVerificationError(VerificationError):
    """A time-stamp token failed one verification check.

    ``check`` names the check: ``timestamp.parse``, ``timestamp.status``,
    ``timestamp.hash``, ``timestamp.imprint`` or ``timestamp.chain``.
    """

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check
        self.message = message

    def diagnostics(self) -> str:
        """Return ``"<check>: <reason>"`` on one line."""
        return f"{self.check}: {self.message}"


@dataclass(frozen=True)
class TimestampToken:
    """A time-stamp obtained from a TSA.

    ``der`` is the complete DER TimeStampResp (status + token), ``url`` the TSA that
    issued it and ``gen_time`` its (aware, UTC) genTime.
    """

    der: bytes
    url: str
    gen_time: dt.datetime


@dataclass(frozen=True)
class VerifiedTimestamp:
    """What :func:`verify_timestamp` established about one token."""

    gen_time: dt.datetime  # aware, UTC
    tsa_name: str  # RFC 4514 subject of the certificate that signed the token
    serial_number: int
    policy_oid: str
    digest_hex: str  # the SHA-256 message imprint: sha256(signature)


# --------------------------------------------------------------------------- client

_client: httpx.Client | None = None  # HTTP is imported on first use: verify never needs it
_client_lock = threading.Lock()


def _new_client() -> httpx.Client:
    import httpx

    from afdp.deadline import with_deadlines

    return with_deadlines(
        httpx.Client(
            http2=False,
            follow_redirects=False,
            trust_env=True,
            limits=httpx.Limits(max_keepalive_connections=8, keepalive_expiry=30.0),
            headers={"User-Agent": "afdp"},
        )
    )


def _http() -> httpx.Client:
    # One client for the process: keep-alive connections make a round trip to a nearby
    # TSA a fraction of a millisecond instead of a TCP handshake each time.
    global _client
    if _client is None:
        with _client_lock:
            if _client is None:
                _client = _new_client()
    return _client


def _forget_client_after_fork() -> None:
    # A forked child must not share the parent's kept-alive sockets: two processes
    # writing requests on one TCP stream interleave them, and the TSA drops it. The
    # child starts with no client (and a fresh lock, in case a thread held it).
    global _client, _client_lock
    _client = None
    _client_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_client_after_fork)


def request_timestamp(
    signature: bytes,
    urls: Sequence[str],
    *,
    timeout: float = 10.0,
    roots: Sequence[x509.Certificate] | None = None,
) -> TimestampToken:
    """Get an RFC 3161 token over ``SHA-256(signature)`` from the first TSA that gives one.

    The URLs are tried in order. A TSA is skipped when it is unreachable, times out,
    answers an HTTP error or something that is not a granted time-stamp response, or
    a token over another message or with another nonce; with ``roots``, also when the
    token does not verify against them.

    Returns:
        The token (full DER TimeStampResp), the URL that issued it and its genTime.

    Raises:
        UsageError: no URL was given, or ``signature`` is empty.
        TimestampError: no TSA gave a valid token; the message names every URL and why.
    """
    if not urls:
        raise UsageError("no TSA URL given: at least one is needed to time-stamp")
    if not signature:
        raise UsageError("cannot time-stamp an empty signature")
    request = (
        rfc3161_client.TimestampRequestBuilder()
        .data(signature)
        .hash_algorithm(rfc3161_client.HashAlgorithm.SHA256)
        .nonce(nonce=True)
        .cert_request(cert_request=True)
    ).build()
    body = request.as_bytes()
    expected = hashlib.sha256(signature).digest()
    reasons: list[str] = []
    for url in urls:
        try:
            response, der = _ask(url, body, timeout)
            _check_answer(response, expected, request.nonce, roots)
        except _Skip as skip:
            reasons.append(f"{url} ({skip})")
            continue
        return TimestampToken(der=der, url=url, gen_time=_utc(response.tst_info.gen_time))
    raise TimestampError("no TSA gave a valid time-stamp token: " + "; ".join(reasons))


class _Skip(Exception):
    """This TSA gave no usable token; the message says why."""


def _ask(url: str, body: bytes, timeout: float) -> tuple[rfc3161_client.TimeStampResponse, bytes]:
    import httpx

    from afdp.deadline import deadline

    try:
        # ``timeout`` is each TSA's deadline for the whole exchange (connect to last
        # byte), not a bound on each read: a TSA dribbling its answer cannot hold us.
        with deadline(timeout):
            try:
                reply = _http().post(url, content=body, headers=_QUERY_HEADERS, timeout=timeout)
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
                # A kept-alive connection can be closed by the TSA (its idle timeout, a
                # restart, a proxy) just as the request goes out on it; the request never
                # reached an answer. Asking again is safe (a time-stamp request changes
                # nothing) and is done once, on a new connection, within the same deadline.
                with _new_client() as fresh:
                    reply = fresh.post(url, content=body, headers=_QUERY_HEADERS, timeout=timeout)
    except httpx.TimeoutException:
        raise _Skip(f"no whole answer within {timeout:g} s") from None
    except httpx.ConnectError as exc:
        raise _Skip(f"cannot connect: {_short(exc)}") from None
    except httpx.HTTPError as exc:
        raise _Skip(f"HTTP failure: {_short(exc)}") from None
    except (httpx.InvalidURL, ValueError) as exc:
        raise _Skip(f"bad URL: {_short(exc)}") from None
    if reply.status_code != 200:
        raise _Skip(f"HTTP {reply.status_code} {reply.reason_phrase}".rstrip())
    der = reply.content
    if len(der) > _MAX_RESPONSE_BYTES:
        raise _Skip(f"answer of {len(der)} bytes is too large for a time-stamp response")
    try:
        response = rfc3161_client.decode_timestamp_response(der)
    except ValueError:
        kind = reply.headers.get("Content-Type", "no content type")
        raise _Skip(f"answered {kind}, not a time-stamp response") from None
    return response, der


def _check_answer(
    response: rfc3161_client.TimeStampResponse,
    expected: bytes,
    nonce: int | None,
    roots: Sequence[x509.Certificate] | None,
) -> None:
    if response.status != rfc3161_client.PKIStatus.GRANTED:
        raise _Skip(_status_text(response))
    try:
        info = response.tst_info
        imprint = info.message_imprint
        algorithm, message, token_nonce = imprint.hash_algorithm, imprint.message, info.nonce
    except ValueError:
        raise _Skip("granted response without a readable token") from None
    if algorithm != _SHA256_OID or message != expected:
        raise _Skip(f"token is over a different message (imprint {message.hex()[:16]}…)")
    # The nonce ties the answer to this request: a replayed or cached token fails here.
    if token_nonce != nonce:
        raise _Skip("nonce in the token does not match the request")
    if roots is not None:
        try:
            _verifier(roots).verify(response, expected)
        except (rfc3161_client.VerificationError, ValueError) as exc:
            raise _Skip(f"token does not verify against the given TSA roots: {exc}") from None


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())  # one line, whatever the transport said


def _status_text(response: rfc3161_client.TimeStampResponse) -> str:
    try:
        status = rfc3161_client.PKIStatus(response.status).name.lower()
    except ValueError:
        status = str(response.status)
    text = " ".join("; ".join(response.status_string).split())
    return f"status {status}: {text}" if text else f"status {status}"


# --------------------------------------------------------------------- verification


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
            (no trusted roots, bad token signature, or signer not chained to a root),
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
        algorithm = info.message_imprint.hash_algorithm
        imprint = info.message_imprint.message
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
    if chain is not None and parts is not None and as_bytes is not None and _cms_signature_ok(parts, as_bytes(), chain):
        trust.fast_passes += 1
    else:
        try:
            trust.reference.verify(response, expected)
        except (rfc3161_client.VerificationError, ValueError) as exc:
            raise TimestampVerificationError(
                "timestamp.chain",
                f"token is not signed by a TSA chained to a trusted root: {_short(exc)}",
            ) from None
        chain = trust.remember(parts, roots)
    # 6. encoding: every byte of the file is signed by the TSA or fixed by DER. A CMS
    # token has parts its signature does not cover (the certificate set, CRLs, unsigned
    # attributes, the status text); on the last record of a branch nothing else binds
    # the file, so those parts must be absent or exactly what verification used.
    problem = None if parts is not None and parts.encoding_known_good() else encoding_problem(token_der)
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
    unsigned attributes; no CRLs; and a certificate set holding only the signer's
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
            return None
        # Every token of one TSA carries the same certificate set and signer id: judge
        # each pair once (the parse of the certificates is most of this check's cost).
        key = (field.dump(), sid.dump())
        if key not in _certificate_set_problems:
            problem = _certificate_set_problem([c.chosen for c in field], sid)
            with _verifiers_lock:
                if len(_certificate_set_problems) >= _MAX_VERIFIERS:
                    _certificate_set_problems.clear()
                _certificate_set_problems[key] = problem
        return _certificate_set_problems[key]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return f"the token cannot be read as a time-stamp response ({exc})"


#: ``(certificate set DER, signer id DER)`` -> what is wrong with that set, or None.
_certificate_set_problems: dict[tuple[bytes, bytes], str | None] = {}


def _certificate_set_problem(certificates: list[Any], sid: Any) -> str | None:
    """Why this certificate set is not exactly the signer's path (each certificate once)."""
    if not certificates:
        return None
    if sid.name != "issuer_and_serial_number":
        return None if len(certificates) == 1 else "certificates beyond the signer's path"
    wanted = (sid.chosen["issuer"].dump(), sid.chosen["serial_number"].native)
    current = next(
        (c for c in certificates if (c.issuer.dump(), c.serial_number) == wanted), None
    )
    if current is None:
        return "the certificate set does not hold the signer's certificate"
    used = [current]
    while current.issuer.dump() != current.subject.dump() and len(used) <= len(certificates):
        issuer = next(
            (c for c in certificates if c.subject.dump() == current.issuer.dump()), None
        )
        if issuer is None or issuer in used:
            break
        used.append(issuer)
        current = issuer
    extra = len(certificates) - len(used)
    if extra:
        return f"the certificate set holds {extra} certificate(s) off the signer's path"
    return None


# Trust keyed by the SHA-256 fingerprints of its roots: a verify run checks thousands of
# tokens against the same few roots and should build each verifier once.
_trusts: dict[tuple[bytes, ...], _Trust] = {}
_verifiers_lock = threading.Lock()
_MAX_VERIFIERS = 64
_MAX_CHAINS = 256

def _oid(dotted: str) -> bytes:
    """The DER content octets of an OBJECT IDENTIFIER."""
    arcs = [int(arc) for arc in dotted.split(".")]
    out = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        while arc > 0x7F:
            arc >>= 7
            chunk.append(0x80 | (arc & 0x7F))
        out.extend(reversed(chunk))
    return bytes(out)


_SIGNED_DATA_OID = _oid("1.2.840.113549.1.7.2")
_TST_INFO_OID = _oid("1.2.840.113549.1.9.16.1.4")
_CONTENT_TYPE_ATTR = _oid("1.2.840.113549.1.9.3")
_MESSAGE_DIGEST_ATTR = _oid("1.2.840.113549.1.9.4")
_SHA256, _SHA384, _SHA512 = (_oid(f"2.16.840.1.101.3.4.2.{n}") for n in (1, 2, 3))
_DIGESTS: dict[bytes, Any] = {_SHA256: hashes.SHA256, _SHA384: hashes.SHA384, _SHA512: hashes.SHA512}
#: signature algorithm -> (key type, the digest it fixes, or None: the SignerInfo's digest)
_SIGNATURE_ALGORITHMS: dict[bytes, tuple[str, bytes | None]] = {
    _oid("1.2.840.113549.1.1.1"): ("rsa", None),  # rsaEncryption: PKCS #1 v1.5
    _oid("1.2.840.113549.1.1.11"): ("rsa", _SHA256),
    _oid("1.2.840.113549.1.1.12"): ("rsa", _SHA384),
    _oid("1.2.840.113549.1.1.13"): ("rsa", _SHA512),
    _oid("1.2.840.10045.4.3.2"): ("ec", _SHA256),
    _oid("1.2.840.10045.4.3.3"): ("ec", _SHA384),
    _oid("1.2.840.10045.4.3.4"): ("ec", _SHA512),
}
_UNIVERSAL, _CONTEXT = 0, 2
_OCTET_STRING, _OID_TAG, _SEQUENCE_TAG, _SET_TAG = 4, 6, 16, 17


@dataclass(frozen=True)
class _Element:
    """One DER element: its class, whether constructed, tag, and header + content bytes."""

    klass: int
    constructed: bool
    tag: int
    header: bytes
    contents: bytes

    @property
    def encoded(self) -> bytes:
        return self.header + self.contents

    def children(self) -> list[_Element]:
        out, data, at = [], self.contents, 0
        while at < len(data):
            element, at = _read_element(data, at)
            out.append(element)
        return out

    def expect(self, klass: int, tag: int) -> _Element:
        if (self.klass, self.tag) != (klass, tag):
            raise ValueError("unexpected element")
        return self


def _read_element(data: bytes, at: int) -> tuple[_Element, int]:
    """Read the DER element at ``data[at:]`` with asn1crypto's parser; return it and where
    the next one starts. An indefinite length (not DER) raises ValueError."""
    klass, method, tag, header, contents, trailer = _der.parse(data[at:])
    if trailer:  # indefinite length: not DER
        raise ValueError("not DER")
    return _Element(klass, method == 1, tag, header, contents), at + len(header) + len(contents)


@dataclass(frozen=True)
class _SignerParts:
    """The parts of a time-stamp token that its CMS signature check reads."""

    bare_status: bool  # the status is the status alone: no text, no failure bits
    bare_signed_data: bool  # no CRLs (nor anything else but the certificates)
    bare_signer: bool  # no unsigned attributes
    content_type: bytes
    econtent_type: bytes
    econtent: _Element
    certificates: _Element | None  # the [0] IMPLICIT CertificateSet, if any
    signer_count: int
    sid: _Element
    digest_algorithm: bytes
    signed_attributes: _Element | None
    signature_algorithm: bytes
    signature: bytes

    @classmethod
    def of(cls, token_der: bytes) -> _SignerParts:
        """Read them from a DER TimeStampResp.

        Raises:
            ValueError: the bytes do not have the shape of a granted token.
        """
        response, end = _read_element(token_der, 0)
        if end != len(token_der):
            raise ValueError("trailing data")
        response.expect(_UNIVERSAL, _SEQUENCE_TAG)
        top = response.children()
        content_info = top[1].expect(_UNIVERSAL, _SEQUENCE_TAG).children()
        content_type = content_info[0].expect(_UNIVERSAL, _OID_TAG).contents
        signed = content_info[1].expect(_CONTEXT, 0).children()[0].expect(_UNIVERSAL, _SEQUENCE_TAG)
        fields = signed.children()
        encapsulated = fields[2].expect(_UNIVERSAL, _SEQUENCE_TAG).children()
        econtent = encapsulated[1].expect(_CONTEXT, 0).children()[0].expect(_UNIVERSAL, _OCTET_STRING)
        certificates = fields[3] if (fields[3].klass, fields[3].tag) == (_CONTEXT, 0) else None
        signer_infos = fields[-1].expect(_UNIVERSAL, _SET_TAG).children()
        signer = signer_infos[0].expect(_UNIVERSAL, _SEQUENCE_TAG).children()
        attributes = signer[3] if (signer[3].klass, signer[3].tag) == (_CONTEXT, 0) else None
        rest = signer[4:] if attributes is not None else signer[3:]
        return cls(
            bare_status=len(top) == 2 and len(top[0].expect(_UNIVERSAL, _SEQUENCE_TAG).children()) == 1,
            bare_signed_data=len(fields) == 5 if certificates is not None else len(fields) == 4,
            bare_signer=len(rest) == 2,
            content_type=content_type,
            econtent_type=encapsulated[0].expect(_UNIVERSAL, _OID_TAG).contents,
            econtent=econtent,
            certificates=certificates,
            signer_count=len(signer_infos),
            sid=signer[1],
            digest_algorithm=signer[2].expect(_UNIVERSAL, _SEQUENCE_TAG).children()[0].contents,
            signed_attributes=attributes,
            signature_algorithm=rest[0].expect(_UNIVERSAL, _SEQUENCE_TAG).children()[0].contents,
            signature=rest[1].expect(_UNIVERSAL, _OCTET_STRING).contents,
        )

    def encoding_known_good(self) -> bool:
        """True only if :func:`encoding_problem` has nothing to say about this token: no
        status text, CRLs or unsigned attributes, one signer, and a certificate set that
        was already judged to be exactly the signer's path (False: ask it)."""
        key = self.chain_key
        return (
            self.bare_status
            and self.bare_signed_data
            and self.bare_signer
            and key is not None
            and _certificate_set_problems.get(key, "not judged yet") is None
        )

    @property
    def chain_key(self) -> tuple[bytes, bytes] | None:
        """(certificate set, signer id) as encoded: what a chain check depends on."""
        if self.signer_count != 1 or self.certificates is None:
            return None
        return self.certificates.encoded, self.sid.encoded


@dataclass(frozen=True)
class _Chain:
    """A signer certificate whose chain rfc3161-client validated (with a token's signature)
    for one certificate set, signer id and set of roots, and the times it holds for."""

    public_key: Any  # the signer certificate's public key
    not_before: dt.datetime  # the latest notBefore of any certificate that can be on the path
    not_after: dt.datetime  # the earliest notAfter of any of them
    subject: str  # RFC 4514 subject of the signer certificate


class _Trust:
    """What verification established about one set of TSA roots, in this process.

    ``reference`` is rfc3161-client's verifier (CMS signature, chain to a root at the
    token's genTime, the signer's critical timeStamping usage). ``chains`` remembers, per
    (certificate set DER, SignerInfo sid DER), a signer whose token passed that whole
    check. A chain check is the same for every token carrying those exact certificates,
    except for the time it is checked at: a remembered chain is used only for a token
    dated inside the validity of every certificate that can be on its path, and every
    token's own CMS signature, message digest and content type are still checked
    (:func:`_cms_signature_ok`). Any other token runs the whole reference check.
    """

    def __init__(self, reference: rfc3161_client.Verifier) -> None:
        self.reference = reference
        self.chains: dict[tuple[bytes, bytes], _Chain] = {}
        self.fast_passes = 0  # tokens accepted on a remembered chain (tests read it)

    def known_chain(self, parts: _SignerParts | None, gen_time: dt.datetime) -> _Chain | None:
        key = parts.chain_key if parts is not None else None
        chain = self.chains.get(key) if key is not None else None
        if chain is None or not chain.not_before <= gen_time <= chain.not_after:
            return None
        return chain

    def remember(self, parts: _SignerParts | None, roots: Sequence[x509.Certificate]) -> _Chain | None:
        """Remember the chain of a token that has just passed the reference check."""
        key = parts.chain_key if parts is not None else None
        if parts is None or key is None or parts.certificates is None:
            return None
        try:
            sid = parts.sid.expect(_UNIVERSAL, _SEQUENCE_TAG).children()  # issuerAndSerialNumber
            wanted = (sid[0].encoded, int.from_bytes(sid[1].expect(_UNIVERSAL, 2).contents, "big", signed=True))
            certificates = [
                x509.load_der_x509_certificate(c.expect(_UNIVERSAL, _SEQUENCE_TAG).encoded)
                for c in parts.certificates.children()
            ]
        except (ValueError, IndexError):
            return None
        leaf = next(
            (c for c in certificates if (c.issuer.public_bytes(), c.serial_number) == wanted), None
        )
        if leaf is None:
            return None
        # Every certificate that can be on the path: the set's own, and every trusted
        # certificate named as the issuer of one on it, up to the top (more than the path
        # itself only narrows the window).
        path = list(certificates)
        while True:
            issuers = {c.issuer.public_bytes() for c in path}
            more = [r for r in roots if r not in path and r.subject.public_bytes() in issuers]
            if not more:
                break
            path.extend(more)
        chain = _Chain(
            leaf.public_key(),
            max(c.not_valid_before_utc for c in path),
            min(c.not_valid_after_utc for c in path),
            leaf.subject.rfc4514_string(),
        )
        with _verifiers_lock:
            if len(self.chains) >= _MAX_CHAINS:
                self.chains.clear()
            self.chains[key] = chain
        return chain


def _signer_parts(token_der: bytes) -> _SignerParts | None:
    try:
        return _SignerParts.of(token_der)
    except (ValueError, IndexError, TypeError):
        return None


def _cms_signature_ok(parts: _SignerParts, tst_info_der: bytes, chain: _Chain) -> bool:
    """Return True only if the token's CMS signature verifies with the chain's signer key.

    What OpenSSL's ``PKCS7_verify`` checks of the signature itself, no less: the token is
    SignedData over a TSTInfo whose bytes are exactly ``tst_info_der`` (what genTime and
    the imprint were read from), with one SignerInfo whose signed attributes hold one
    content type (TSTInfo) and one message digest equal to the digest of those bytes,
    and whose signature over those attributes (as the DER SET OF they are, in DER order)
    verifies with the key. False on anything else, unusual or unreadable: the caller
    then runs the reference check, whose verdict and message stand.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    attributes = parts.signed_attributes
    algorithm = _SIGNATURE_ALGORITHMS.get(parts.signature_algorithm)
    digest = _DIGESTS.get(parts.digest_algorithm)
    if (
        parts.content_type != _SIGNED_DATA_OID
        or parts.econtent_type != _TST_INFO_OID
        or parts.econtent.constructed
        or parts.econtent.contents != tst_info_der  # the very bytes genTime was read from
        or parts.signer_count != 1
        or attributes is None
        or digest is None
        or algorithm is None
        or algorithm[1] not in (None, parts.digest_algorithm)
    ):
        return False
    try:
        children = attributes.children()
        encoded = [child.encoded for child in children]
        if encoded != sorted(encoded):  # OpenSSL verifies the DER (sorted) re-encoding
            return False
        found: dict[bytes, list[list[_Element]]] = {}
        for child in children:
            attribute = child.expect(_UNIVERSAL, _SEQUENCE_TAG).children()
            if len(attribute) != 2:
                return False
            kind = attribute[0].expect(_UNIVERSAL, _OID_TAG).contents
            found.setdefault(kind, []).append(attribute[1].expect(_UNIVERSAL, _SET_TAG).children())
        content_types = found.get(_CONTENT_TYPE_ATTR, [])
        digests = found.get(_MESSAGE_DIGEST_ATTR, [])
        if len(content_types) != 1 or len(digests) != 1 or len(content_types[0]) != 1 or len(digests[0]) != 1:
            return False
        if content_types[0][0].expect(_UNIVERSAL, _OID_TAG).contents != _TST_INFO_OID:
            return False
        hasher = hashes.Hash(digest())
        hasher.update(tst_info_der)
        if digests[0][0].expect(_UNIVERSAL, _OCTET_STRING).contents != hasher.finalize():
            return False
        # [0] IMPLICIT SET OF Attribute: the signature is over it as a SET OF (tag 0x31)
        signed_bytes = b"\x31" + attributes.header[1:] + attributes.contents
        key = chain.public_key
        if algorithm[0] == "rsa" and isinstance(key, rsa.RSAPublicKey):
            key.verify(parts.signature, signed_bytes, padding.PKCS1v15(), digest())
        elif algorithm[0] == "ec" and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(parts.signature, signed_bytes, ec.ECDSA(digest()))
        else:
            return False
    except (InvalidSignature, ValueError, IndexError, TypeError):
        return False
    return True


def _trust(roots: Sequence[x509.Certificate]) -> _Trust:
    unique = {root.fingerprint(hashes.SHA256()): root for root in roots}
    key = tuple(sorted(unique))
    trust = _trusts.get(key)
    if trust is None:
        ordered = [unique[fingerprint] for fingerprint in key]
        verifier = _caching_verifier(ordered)
        if verifier is None:  # another rfc3161-client: its own verifier, uncached
            builder = rfc3161_client.VerifierBuilder()
            for root in ordered:
                builder = builder.add_root_certificate(root)
            verifier = builder.build()
        trust = _Trust(verifier)
        with _verifiers_lock:
            if len(_trusts) >= _MAX_VERIFIERS:
                _trusts.clear()
            _trusts[key] = trust
    return trust


def _verifier(roots: Sequence[x509.Certificate]) -> rfc3161_client.Verifier:
    return _trust(roots).reference


def _caching_verifier(roots: list[x509.Certificate]) -> rfc3161_client.Verifier | None:
    """rfc3161-client's verifier, remembering which leaf-certificate checks passed.

    rfc3161-client verifies a token in two parts: ``pkcs7_verify`` (the token's CMS
    signature, and the signer's chain to a root at the token's time) and
    ``_verify_leaf_certs`` (the signer's certificate is in the token, named by its one
    SignerInfo, and has the critical timeStamping usage). The second is a pure function
    of the token's certificate set and signer ids, which every token of one TSA shares,
    and it costs about as much as the first (every certificate is parsed again). So its
    passes are remembered per (certificate set, signer ids) for this verifier (these
    roots); everything else, the signature and chain above all, runs for every token.
    Returns None when rfc3161-client has no such internals (its verifier is used as is).
    """
    from rfc3161_client import verify as lib

    base = getattr(lib, "_Verifier", None)
    if base is None or not callable(getattr(base, "_verify_leaf_certs", None)):
        return None

    class _CachingVerifier(base):  # type: ignore[misc,valid-type]
        _passed: set[tuple[Any, ...]]

        def _verify_leaf_certs(self, tsp_response: rfc3161_client.TimeStampResponse) -> bool:
            signed = tsp_response.signed_data
            key = (
                tuple(signed.certificates),
                tuple((si.issuer.public_bytes(), si.serial_number) for si in signed.signer_infos),
            )
            if key in self._passed:
                return True
            result: bool = super()._verify_leaf_certs(tsp_response)  # raises when it fails
            if len(self._passed) >= _MAX_VERIFIERS:
                self._passed.clear()
            self._passed.add(key)
            return result

    try:
        verifier = _CachingVerifier(
            policy_id=None,
            tsa_certificate=None,
            intermediates=[],
            roots=roots,
            nonce=None,
            common_name=None,
        )
    except TypeError:
        return None
    verifier._passed = set()
    return verifier  # type: ignore[no-any-return]


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


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def load_certificates(pem_bytes: bytes) -> list[x509.Certificate]:
    """Parse one or more PEM certificates (e.g. a TSA root file).

    Returns:
        The certificates, in file order.

    Raises:
        ConfigurationError: no certificate in the data, or one that does not parse.
    """
    try:
        certificates = x509.load_pem_x509_certificates(pem_bytes)
    except ValueError as exc:
        raise ConfigurationError(f"not PEM X.509 certificates: {_short(exc)}") from exc
    if not certificates:  # pragma: no cover - cryptography raises on empty input
        raise ConfigurationError("no PEM certificate found")
    return certificates
