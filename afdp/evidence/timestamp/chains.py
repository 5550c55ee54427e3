"""The warm path of token verification: what this process already established about a
set of TSA roots, so that thousands of tokens of one TSA do not each repeat the chain work.

:func:`_trust` builds (once per set of roots) rfc3161-client's reference verifier,
with its leaf-certificate check remembered (:func:`_caching_verifier`); :class:`_Trust`
remembers the signer chains that passed it (:class:`_Chain`), used only for a token
whose own CMS signature verifies with that signer's key (:func:`_cms_signature_ok`)
and dated inside every certificate's validity. Anything else runs the whole check.

Every part of a token the warm path reads is read by a library: rfc3161-client (whose
strict DER parser has already accepted the token) for the TSTInfo, and asn1crypto
(:func:`_signer_parts`) for what rfc3161-client does not expose: the signed attributes,
the signature and its algorithms, the certificate set and signer id as encoded. Where
the two could read the token differently, the warm path is not taken (see
:meth:`_Trust.remember` and :func:`_cms_signature_ok`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import rfc3161_client
from asn1crypto import algos, cms, core, tsp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

#: :func:`_encoding_key` -> what :func:`encoding_problem` found wrong with those parts,
#: or None: every token of one TSA carries the same, judged once.
_certificate_set_problems: dict[tuple[bytes, ...], str | None] = {}


def _encoding_key(signed: Any, signer: Any, certificates: bytes, sid: bytes) -> tuple[bytes, ...]:
    """The parts of a token its signature does not cover and that every token of one TSA
    carries alike, as encoded (asn1crypto's SignedData and SignerInfo): the certificate
    set and the signer id (``certificates``, ``sid``: their ``dump()``), the SignedData's
    version and digest algorithms, the SignerInfo's version and digest algorithm."""
    return (
        certificates,
        sid,
        signed["version"].dump(),
        signed["digest_algorithms"].dump(),
        signer["version"].dump(),
        signer["digest_algorithm"].dump(),
    )


# Trust keyed by the SHA-256 fingerprints of its roots: a verify run checks thousands of
# tokens against the same few roots and should build each verifier once.
_trusts: dict[tuple[bytes, ...], _Trust] = {}
_verifiers_lock = threading.Lock()
_MAX_VERIFIERS = 64
_MAX_CHAINS = 256



def _oid(dotted: str) -> bytes:
    """The content octets of an OBJECT IDENTIFIER, as asn1crypto encodes it: compared
    with what asn1crypto read (faster than its dotted form, and the same test)."""
    return bytes(core.ObjectIdentifier(dotted).contents)


_SIGNED_DATA = _oid("1.2.840.113549.1.7.2")
_TST_INFO = _oid("1.2.840.113549.1.9.16.1.4")
_CONTENT_TYPE_ATTR = _oid("1.2.840.113549.1.9.3")
_MESSAGE_DIGEST_ATTR = _oid("1.2.840.113549.1.9.4")


def _algorithms(
    kind: type[algos.DigestAlgorithm] | type[algos.SignedDigestAlgorithm], dotted: str, *, null: bool
) -> list[bytes]:
    """The DER AlgorithmIdentifiers of ``dotted`` as asn1crypto encodes them: parameters
    absent, and (``null``) an explicit NULL, the two forms RFC 4055 and RFC 5754 allow."""
    forms = [kind({"algorithm": dotted, "parameters": None}).dump()]
    if null:
        forms.append(kind({"algorithm": dotted, "parameters": core.Null()}).dump())
    return forms


_SHA256, _SHA384, _SHA512 = (f"2.16.840.1.101.3.4.2.{n}" for n in (1, 2, 3))
_HASHES: dict[str, Any] = {_SHA256: hashes.SHA256, _SHA384: hashes.SHA384, _SHA512: hashes.SHA512}
#: a SignerInfo's digestAlgorithm, whole -> the digest's OID: every token of a TSA carries
#: the same few bytes, compared whole rather than read field by field
_DIGESTS: dict[bytes, str] = {
    form: dotted for dotted in _HASHES for form in _algorithms(algos.DigestAlgorithm, dotted, null=True)
}
#: a SignerInfo's signatureAlgorithm, whole -> (key type, the digest it fixes, or None:
#: the SignerInfo's digest). Any other (RSA-PSS, DSA, parameters of another form) is not
#: read here: the token runs the whole check.
_SIGNATURE_ALGORITHMS: dict[bytes, tuple[str, str | None]] = {
    form: meaning
    for dotted, meaning, null in (
        ("1.2.840.113549.1.1.1", ("rsa", None), True),  # rsaEncryption: PKCS #1 v1.5
        ("1.2.840.113549.1.1.11", ("rsa", _SHA256), True),
        ("1.2.840.113549.1.1.12", ("rsa", _SHA384), True),
        ("1.2.840.113549.1.1.13", ("rsa", _SHA512), True),
        ("1.2.840.10045.4.3.2", ("ec", _SHA256), False),
        ("1.2.840.10045.4.3.3", ("ec", _SHA384), False),
        ("1.2.840.10045.4.3.4", ("ec", _SHA512), False),
    )
    for form in _algorithms(algos.SignedDigestAlgorithm, dotted, null=null)
}
#: The signed attribute "content type: TSTInfo", and the start of "message digest: D"
#: for a digest D of each size, as asn1crypto encodes them (DER has one encoding of each).
_CONTENT_TYPE_TST_INFO = cms.CMSAttribute({"type": "content_type", "values": ["1.2.840.113549.1.9.16.1.4"]}).dump()


def _message_digest_prefix(size: int) -> bytes:
    return cms.CMSAttribute({"type": "message_digest", "values": [bytes(size)]}).dump()[:-size]


_MESSAGE_DIGEST_PREFIX = {dotted: _message_digest_prefix(kind.digest_size) for dotted, kind in _HASHES.items()}
#: A PKIStatusInfo that is the status "granted" alone (no text, no failure bits), as
#: asn1crypto encodes it.
_BARE_GRANTED = bytes(tsp.PKIStatusInfo({"status": "granted"}).contents)
#: What asn1crypto raises for bytes it cannot read (it reads lazily: on access, not load).
_UNREADABLE = (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError)


class _SignerParts(NamedTuple):
    """The parts of a time-stamp token that its CMS signature check reads, as asn1crypto
    reads them, and asn1crypto's ``TimeStampResp`` itself (for :func:`encoding_problem`).
    A tuple: immutable, and cheap to make (one per token)."""

    response: tsp.TimeStampResp
    bare_status: bool  # the status is the status alone: no text, no failure bits
    bare_signed_data: bool  # no CRLs
    bare_signer: bool  # no unsigned attributes
    content_type: bytes  # OBJECT IDENTIFIER content octets
    econtent_type: bytes
    econtent: bytes | None  # the eContent OCTET STRING's value (None: not a primitive one)
    certificates: bytes | None  # the [0] IMPLICIT CertificateSet as encoded, if any
    signer_count: int
    signer: Any  # the first asn1crypto SignerInfo
    sid: bytes  # its SignerIdentifier as encoded
    encoding_key: tuple[bytes, ...]  # :func:`_encoding_key`

    @classmethod
    def of(cls, token_der: bytes) -> _SignerParts:
        """Read them from a DER TimeStampResp with asn1crypto.

        Raises:
            ValueError (or another of ``_UNREADABLE``): asn1crypto cannot read the bytes
                as a granted token (or finds bytes after it).
        """
        response = tsp.TimeStampResp.load(token_der, strict=True)
        token = response["time_stamp_token"]
        signed = token["content"]
        encapsulated = signed["encap_content_info"]
        econtent = encapsulated["content"]
        certificates = signed["certificates"]
        signer_infos = signed["signer_infos"]
        signer = signer_infos[0]
        certificates_der = None if isinstance(certificates, core.Void) else certificates.dump()
        sid = signer["sid"].dump()
        return cls(
            response=response,
            bare_status=response["status"].contents == _BARE_GRANTED,
            bare_signed_data=isinstance(signed["crls"], core.Void),
            bare_signer=isinstance(signer["unsigned_attrs"], core.Void),
            content_type=token["content_type"].contents,
            econtent_type=encapsulated["content_type"].contents,
            econtent=econtent.contents if econtent.method == 0 else None,
            certificates=certificates_der,
            signer_count=len(signer_infos),
            signer=signer,
            sid=sid,
            encoding_key=_encoding_key(signed, signer, certificates_der or b"", sid),
        )

    def encoding_known_good(self) -> bool:
        """True only if :func:`encoding_problem` has nothing to say about this token: no
        status text, CRLs or unsigned attributes, one signer, and the parts of
        :func:`_encoding_key` already judged good (a certificate set that is exactly the
        signer's path, the versions and digest algorithms RFC 5652 fixes); False: ask it."""
        return (
            self.bare_status
            and self.bare_signed_data
            and self.bare_signer
            and self.chain_key is not None
            and _certificate_set_problems.get(self.encoding_key, "not judged yet") is None
        )

    @property
    def chain_key(self) -> tuple[bytes, bytes] | None:
        """(certificate set, signer id) as encoded: what a chain check depends on."""
        if self.signer_count != 1 or self.certificates is None:
            return None
        return self.certificates, self.sid


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

    def remember(
        self,
        parts: _SignerParts | None,
        response: rfc3161_client.TimeStampResponse,
        roots: Sequence[x509.Certificate],
    ) -> _Chain | None:
        """Remember the chain of a token that has just passed the reference check.

        The signer is found as rfc3161-client found it (in its reading of the token), and
        only if asn1crypto reads the same certificate set and signer id (what the chain is
        remembered under, and what later tokens are matched by); otherwise nothing is
        remembered and every token of this certificate set runs the whole check.
        """
        key = parts.chain_key if parts is not None else None
        if parts is None or key is None:
            return None
        try:
            sid = parts.signer["sid"]
            if sid.name != "issuer_and_serial_number":
                return None
            ours = {c.chosen.dump() for c in parts.response["time_stamp_token"]["content"]["certificates"]}
            wanted = (sid.chosen["issuer"].dump(), sid.chosen["serial_number"].native)
            signed = response.signed_data
            theirs = set(signed.certificates)
            signers = list(signed.signer_infos)
            if ours != theirs or len(signers) != 1:
                return None
            if (signers[0].issuer.public_bytes(), signers[0].serial_number) != wanted:
                return None
            certificates = [x509.load_der_x509_certificate(der) for der in theirs]
        except _UNREADABLE:
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
    """asn1crypto's reading of the token, or None if it cannot read it (the caller then
    runs the whole reference check, and the encoding check reports what it cannot read)."""
    try:
        return _SignerParts.of(token_der)
    except _UNREADABLE:
        return None


#: A signed attribute's DER -> its type (the OBJECT IDENTIFIER's content octets), as
#: asn1crypto reads it: a pure function of those bytes. Every token of a TSA carries some
#: attributes byte for byte alike (the signing certificate; the signing time within a
#: second), and asn1crypto's reading of an attribute's type costs about 6 µs.
_attribute_types: dict[bytes, bytes] = {}
_MAX_ATTRIBUTE_TYPES = 256


def signed_attributes_problem(parts: _SignerParts, tst_info_der: bytes | None) -> str | None:
    """Why the token's signature does not bind this TSTInfo as a TSTInfo, or None.

    The rules both paths of :func:`afdp.evidence.timestamp.verify_timestamp` apply, read
    by asn1crypto: the token is SignedData whose eContentType is id-ct-TSTInfo, with one
    SignerInfo whose signed attributes are present, in DER order (the order OpenSSL
    re-encodes them in before it checks the signature), and hold the content-type
    attribute exactly once, with the one value id-ct-TSTInfo (RFC 5652, 11.1; RFC 3161,
    2.4.2), and the message-digest attribute exactly once, with the digest of exactly
    ``tst_info_der`` (RFC 5652, 11.2): the TSTInfo bytes rfc3161-client read genTime and
    the imprint from (None: an rfc3161-client that does not give them; asn1crypto's
    eContent is used). rfc3161-client's whole check (OpenSSL) checks the message digest
    but not the content-type attribute: a token its TSA signed with another content type
    passes it, so the cold path applies these rules after it, and a token's verdict
    never depends on what this process remembered.
    """
    if parts.content_type != _SIGNED_DATA:
        return "the token is not CMS SignedData"
    if parts.econtent_type != _TST_INFO:
        return "the token's eContentType is not id-ct-TSTInfo"
    content = tst_info_der if tst_info_der is not None else parts.econtent
    if content is None:
        return "the token's TSTInfo bytes cannot be read"
    if parts.signer_count != 1:
        return f"the token has {parts.signer_count} SignerInfos; one is expected"
    signer = parts.signer
    attributes = signer["signed_attrs"]
    if isinstance(attributes, core.Void):
        return "the SignerInfo has no signed attributes (RFC 3161 requires them)"
    message_digest = _message_digest_attribute(signer["digest_algorithm"], content)
    if message_digest is None:
        return "the SignerInfo's digest algorithm is not one AFDP can recompute"
    encoded = [attribute.dump() for attribute in attributes]
    if encoded != sorted(encoded):
        return "the signed attributes are not in DER order"
    content_types = encoded.count(_CONTENT_TYPE_TST_INFO)
    digests = encoded.count(message_digest)
    for attribute, der in zip(attributes, encoded, strict=True):
        if der in (_CONTENT_TYPE_TST_INFO, message_digest):
            continue
        kind = _attribute_types.get(der)
        if kind is None:
            kind = bytes(attribute["type"].contents)
            if len(_attribute_types) >= _MAX_ATTRIBUTE_TYPES:
                _attribute_types.clear()
            _attribute_types[der] = kind
        if kind == _CONTENT_TYPE_ATTR:
            return "the signed content-type attribute is not id-ct-TSTInfo (RFC 3161, 2.4.2)"
        if kind == _MESSAGE_DIGEST_ATTR:
            return "a signed message-digest attribute is not the digest of the TSTInfo"
    if content_types != 1:
        return f"the signed attributes hold the content-type attribute id-ct-TSTInfo {content_types} times; once is required"
    if digests != 1:
        return f"the signed attributes hold the message-digest attribute of the TSTInfo {digests} times; once is required"
    return None


def _message_digest_attribute(algorithm: Any, content: bytes) -> bytes | None:
    """The one DER encoding of the attribute "message digest: D" for the digest D of
    ``content`` by the SignerInfo's ``algorithm`` (asn1crypto's), or None if hashlib has
    no such digest."""
    digest_oid = _DIGESTS.get(algorithm.dump())
    if digest_oid is not None:  # the usual ones: their encoding's start is known
        return _MESSAGE_DIGEST_PREFIX[digest_oid] + hashlib.new(_HASHES[digest_oid].name, content).digest()
    try:
        value = hashlib.new(algorithm["algorithm"].native, content).digest()
    except (ValueError, TypeError):
        return None
    return bytes(cms.CMSAttribute({"type": "message_digest", "values": [value]}).dump())


def _cms_signature_ok(parts: _SignerParts, tst_info_der: bytes, chain: _Chain) -> bool:
    """Return True only if the token's CMS signature verifies with the chain's signer key.

    What OpenSSL's ``PKCS7_verify`` checks of the signature itself, and the rules of
    :func:`signed_attributes_problem`: the signed attributes bind exactly ``tst_info_der``
    (rfc3161-client's encoding of the TSTInfo it read genTime and the imprint from: so both
    libraries read the same TSTInfo) as a TSTInfo, and the signature over them (as the
    DER SET OF they are) verifies with the key. False on anything else, unusual or
    unreadable: the caller then runs the reference check, whose verdict and message stand
    (and then :func:`signed_attributes_problem`, as for every token).
    """
    if parts.econtent != tst_info_der:  # the very bytes genTime and the imprint were read from
        return False
    try:
        if signed_attributes_problem(parts, tst_info_der) is not None:
            return False
        signer = parts.signer
        digest_oid = _DIGESTS.get(signer["digest_algorithm"].dump())
        algorithm = _SIGNATURE_ALGORITHMS.get(signer["signature_algorithm"].dump())
        if digest_oid is None or algorithm is None or algorithm[1] not in (None, digest_oid):
            return False
        digest = _HASHES[digest_oid]
        # [0] IMPLICIT SET OF Attribute: the signature is over the same contents as a
        # SET OF (tag 0x31), the header asn1crypto writes for them
        signed_bytes = cms.CMSAttributes(contents=signer["signed_attrs"].contents).dump()
        signature = signer["signature"].native
        key = chain.public_key
        if algorithm[0] == "rsa" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, signed_bytes, padding.PKCS1v15(), digest())
        elif algorithm[0] == "ec" and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, signed_bytes, ec.ECDSA(digest()))
        else:
            return False
    except (InvalidSignature, *_UNREADABLE):
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
