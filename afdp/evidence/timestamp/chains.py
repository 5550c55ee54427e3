"""The warm path of token verification: what this process already established about a
set of TSA roots, so that thousands of tokens of one TSA do not each repeat the chain work.

:func:`_trust` builds (once per set of roots) rfc3161-client's reference verifier,
with its leaf-certificate check remembered (:func:`_caching_verifier`); :class:`_Trust`
remembers the signer chains that passed it (:class:`_Chain`), used only for a token
whose own CMS signature verifies with that signer's key (:func:`_cms_signature_ok`)
and dated inside every certificate's validity. Anything else runs the whole check.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import rfc3161_client
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from afdp.evidence.timestamp.der import (
    _CONTENT_TYPE_ATTR,
    _CONTEXT,
    _DIGESTS,
    _MESSAGE_DIGEST_ATTR,
    _OCTET_STRING,
    _OID_TAG,
    _SEQUENCE_TAG,
    _SET_TAG,
    _SIGNATURE_ALGORITHMS,
    _SIGNED_DATA_OID,
    _TST_INFO_OID,
    _UNIVERSAL,
    _Element,
    _read_element,
)

#: ``(certificate set DER, signer id DER)`` -> what is wrong with that set, or None.
_certificate_set_problems: dict[tuple[bytes, bytes], str | None] = {}


# Trust keyed by the SHA-256 fingerprints of its roots: a verify run checks thousands of
# tokens against the same few roots and should build each verifier once.
_trusts: dict[tuple[bytes, ...], _Trust] = {}
_verifiers_lock = threading.Lock()
_MAX_VERIFIERS = 64
_MAX_CHAINS = 256



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


#: The roots of the last :func:`_trust` call (held, so their identities stay theirs)
#: and their key in ``_trusts``: a verify run passes the same certificate objects for
#: every token, and fingerprinting them again per token cost about a tenth of a token's
#: check. The trust itself is still looked up (and built, if it was dropped) in ``_trusts``.
_last_roots: tuple[tuple[x509.Certificate, ...], tuple[bytes, ...]] | None = None


def _roots_key(roots: Sequence[x509.Certificate]) -> tuple[tuple[bytes, ...], dict[bytes, x509.Certificate] | None]:
    global _last_roots
    last = _last_roots
    if last is not None and len(last[0]) == len(roots) and all(a is b for a, b in zip(last[0], roots, strict=True)):
        return last[1], None
    unique = {root.fingerprint(hashes.SHA256()): root for root in roots}
    key = tuple(sorted(unique))
    _last_roots = (tuple(roots), key)
    return key, unique


def _trust(roots: Sequence[x509.Certificate]) -> _Trust:
    key, unique = _roots_key(roots)
    trust = _trusts.get(key)
    if trust is None:
        if unique is None:
            unique = {root.fingerprint(hashes.SHA256()): root for root in roots}
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
