"""The time-stamp responder: :class:`EmbeddedTSA` loads the TSA folder once (certificate pair checked, key mode warned about) and answers one DER ``TimeStampReq`` with a ``TimeStampResp`` (the structure of pyHanko's DummyTimeStamper, fixed for a service: UTC, AFDP's policy OID, ``certReq`` honoured, RFC-conforming rejections, thread safety), assembled from parts encoded once."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
import stat
from pathlib import Path
from typing import Any

from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from pyhanko.sign import general
from pyhanko.sign.general import simple_cms_attribute

from afdp.errors import ConfigurationError
from afdp.evidence.notary.files import CERT_FILE, KEY_FILE, POLICY_OID, ROOT_FILE

_HASH_BY_OID: dict[str, str] = {
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}
_DIGEST_SIZE = {"sha256": 32, "sha384": 48, "sha512": 64}
_CRYPTO_HASH: dict[str, hashes.HashAlgorithm] = {
    "sha256": hashes.SHA256(),
    "sha384": hashes.SHA384(),
    "sha512": hashes.SHA512(),
}
_log = logging.getLogger(__name__)


class _Rejection(Exception):
    """A request the TSA refuses; becomes a ``rejection`` TimeStampResp."""

    def __init__(self, fail_info: str, text: str) -> None:
        super().__init__(text)
        self.fail_info = fail_info
        self.text = text


def _der(tag: int, content: bytes) -> bytes:
    """One DER TLV: ``tag`` (a single identifier octet) and the definite length."""
    size = len(content)
    if size < 0x80:
        return bytes((tag, size)) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


def _der_integer(value: int) -> bytes:
    # non-negative only (serial numbers): minimal two's complement, a 0x00 before a high bit
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


_SEQUENCE, _SET, _OCTETS, _CONTEXT_0 = 0x30, 0x31, 0x04, 0xA0


class _TokenAssembler:
    """Builds granted TimeStampResp DER from precomputed parts, per request only what changes.

    The structure is pyHanko's DummyTimeStamper's, field for field (a TSTInfo in a CMS
    SignedData, v3, signed attributes content-type, signing-time, ESS signing-certificate
    and message-digest, an RSA PKCS#1 v1.5 signature, the certificate when ``certReq``
    asks), with UTC times and AFDP's policy. Every part that depends only on the
    certificate, the key or the hash algorithm is encoded once with asn1crypto (and
    pyHanko for the ESS attribute) when the TSA loads; a request costs its own fields
    (imprint and nonce copied from the request as encoded, serial, times, digest, the
    signature) and a few DER headers. Building the same tree with asn1crypto per request
    cost about 1 ms, several times the RSA signature itself.
    """

    def __init__(self, cert: asn1_x509.Certificate, key: rsa.RSAPrivateKey) -> None:
        self._key = key
        self._version_v1 = core.Integer(1).dump()
        self._policy = core.ObjectIdentifier(POLICY_OID).dump()
        self._tsa_name = asn1_x509.GeneralName(name="directory_name", value=cert.subject).dump()
        self._content_type_attr = simple_cms_attribute("content_type", "tst_info").dump()
        self._signing_certificate_attr = simple_cms_attribute(
            "signing_certificate", general.as_signing_certificate(cert)
        ).dump()
        self._signing_time_oid = core.ObjectIdentifier("1.2.840.113549.1.9.5").dump()
        self._message_digest_oid = core.ObjectIdentifier("1.2.840.113549.1.9.4").dump()
        self._sid = cms.SignerIdentifier(
            {
                "issuer_and_serial_number": cms.IssuerAndSerialNumber(
                    {"issuer": cert.issuer, "serial_number": cert.serial_number}
                )
            }
        ).dump()
        self._signature_algorithm = algos.SignedDigestAlgorithm(
            {"algorithm": "rsassa_pkcs1v15"}
        ).dump()
        # [0] IMPLICIT CertificateSet: the SET's content under the context tag
        certificate_set = cms.CertificateSet([cms.CertificateChoices({"certificate": cert})])
        self._certificates = _der(_CONTEXT_0, certificate_set.contents)
        self._digest_algorithm = {
            md: algos.DigestAlgorithm({"algorithm": md}).dump() for md in _DIGEST_SIZE
        }
        self._digest_algorithms = {
            md: cms.DigestAlgorithms([algos.DigestAlgorithm({"algorithm": md})]).dump()
            for md in _DIGEST_SIZE
        }
        self._tst_info_type = cms.ContentType("tst_info").dump()
        self._signed_data_type = cms.ContentType("signed_data").dump()
        self._version_v3 = core.Integer(3).dump()
        self._granted = tsp.PKIStatusInfo({"status": "granted"}).dump()

    def respond(self, req: tsp.TimeStampReq, now: dt.datetime, serial: int) -> bytes:
        """Return the DER TimeStampResp granting ``req`` at ``now`` with ``serial``."""
        md = _HASH_BY_OID[req["message_imprint"]["hash_algorithm"]["algorithm"].dotted]
        gen_time = core.GeneralizedTime(now).dump()
        nonce = req["nonce"].dump() if req["nonce"].native is not None else b""
        tst_info = _der(
            _SEQUENCE,
            self._version_v1
            + self._policy
            + req["message_imprint"].dump()
            + _der_integer(serial)
            + gen_time
            + nonce
            + _der(_CONTEXT_0, self._tsa_name),
        )
        signing_time = _der(
            _SEQUENCE,
            self._signing_time_oid + _der(_SET, core.UTCTime(now).dump()),
        )
        message_digest = _der(
            _SEQUENCE,
            self._message_digest_oid
            + _der(_SET, _der(_OCTETS, hashlib.new(md, tst_info).digest())),
        )
        # DER orders the members of a SET OF by their encodings
        attributes = b"".join(
            sorted(
                (
                    self._content_type_attr,
                    signing_time,
                    self._signing_certificate_attr,
                    message_digest,
                )
            )
        )
        signature = self._key.sign(_der(_SET, attributes), padding.PKCS1v15(), _CRYPTO_HASH[md])
        signer_info = _der(
            _SEQUENCE,
            self._version_v1
            + self._sid
            + self._digest_algorithm[md]
            + _der(_CONTEXT_0, attributes)  # signedAttrs: [0] IMPLICIT SET OF
            + self._signature_algorithm
            + _der(_OCTETS, signature),
        )
        # RFC 3161 section 2.4.1: certificates only when the request's certReq asks.
        certificates = self._certificates if req["cert_req"].native else b""
        signed_data = _der(
            _SEQUENCE,
            # v3: required for the EncapsulatedContentInfo of a TSTInfo (RFC 5652 5.1)
            self._version_v3
            + self._digest_algorithms[md]
            + _der(_SEQUENCE, self._tst_info_type + _der(_CONTEXT_0, _der(_OCTETS, tst_info)))
            + certificates
            + _der(_SET, signer_info),
        )
        content_info = _der(_SEQUENCE, self._signed_data_type + _der(_CONTEXT_0, signed_data))
        return _der(_SEQUENCE, self._granted + content_info)


class EmbeddedTSA:
    """AFDP's RFC 3161 TSA: turns DER TimeStampReq bytes into DER TimeStampResp bytes.

    For development and air-gapped teams; not a public trust anchor. Safe to call from
    many threads at once.
    """

    def __init__(self, certificate: x509.Certificate, key: rsa.RSAPrivateKey) -> None:
        self.certificate = certificate
        self._assembler = _TokenAssembler(
            asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER)),
            key,
        )

    @classmethod
    def load(cls, directory: Path) -> EmbeddedTSA:
        """Load the TSA in ``directory`` (as written by :func:`init_tsa`).

        Returns:
            A ready responder.

        Raises:
            ConfigurationError: a file is missing or unreadable, does not parse, the key
                does not match the certificate, the certificate lacks the critical
                timeStamping usage, or it was not issued by ``root.pem``.
        """
        directory = Path(directory)
        blobs: dict[str, bytes] = {}
        for name in (ROOT_FILE, CERT_FILE, KEY_FILE):
            try:
                blobs[name] = (directory / name).read_bytes()
            except FileNotFoundError:
                raise ConfigurationError(
                    f"{directory} is not a TSA folder: {name} is missing (run `afdp tsa init`)"
                ) from None
            except OSError as exc:
                raise ConfigurationError(f"cannot read {directory / name}: {exc}") from exc
        try:
            root = x509.load_pem_x509_certificate(blobs[ROOT_FILE])
        except ValueError as exc:
            raise ConfigurationError(f"{directory / ROOT_FILE}: not a PEM certificate") from exc
        try:
            cert = x509.load_pem_x509_certificate(blobs[CERT_FILE])
        except ValueError as exc:
            raise ConfigurationError(f"{directory / CERT_FILE}: not a PEM certificate") from exc
        try:
            key = serialization.load_pem_private_key(blobs[KEY_FILE], password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(
                f"{directory / KEY_FILE}: not an unencrypted PEM private key"
            ) from exc
        _check_pair(directory, root, cert, key)
        assert isinstance(key, rsa.RSAPrivateKey)  # _check_pair refused anything else
        mode = stat.S_IMODE((directory / KEY_FILE).stat().st_mode)
        if mode & 0o077:
            _log.warning("%s is readable by group or others (mode %o)", directory / KEY_FILE, mode)
        return cls(cert, key)

    def respond(self, request_der: bytes) -> bytes:
        """Answer one RFC 3161 request.

        Returns:
            A DER TimeStampResp: ``granted`` with a token for a well-formed SHA-256/384/512
            request, otherwise ``rejection`` with a failInfo (``badRequest``, ``badAlg``,
            ``unacceptedPolicy``, ``unacceptedExtension``, ``systemFailure``). Never raises
            for bad input.
        """
        try:
            request = _parse_request(request_der)
            # 127 random bits: serial numbers must be unique per TSA (RFC 3161 section
            # 2.4.2), and no counter would survive restarts or several hosts. The
            # assembler shares only immutable bytes, so requests need no lock.
            return self._assembler.respond(
                request, dt.datetime.now(dt.UTC), secrets.randbits(127) | 1
            )
        except _Rejection as rejection:
            return _rejection(rejection.fail_info, rejection.text)
        except Exception:  # a bug must cost one request, not the service
            _log.exception("time-stamp request failed")
            return _rejection("system_failure", "internal error")


def _check_pair(directory: Path, root: x509.Certificate, cert: x509.Certificate, key: Any) -> None:
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigurationError(f"{directory / KEY_FILE}: the embedded TSA needs an RSA key")
    if key.public_key() != cert.public_key():
        raise ConfigurationError(f"{directory}: key.pem does not belong to tsa.pem")
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        eku = None
    if eku is None or not eku.critical or ExtendedKeyUsageOID.TIME_STAMPING not in eku.value:
        raise ConfigurationError(
            f"{directory / CERT_FILE}: lacks the critical timeStamping extended key usage"
        )
    try:
        cert.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise ConfigurationError(f"{directory}: tsa.pem was not issued by root.pem") from exc


def _parse_request(der: bytes) -> tsp.TimeStampReq:
    # Checks, in order, everything the responder will rely on, so that every bad request
    # becomes a precise rejection rather than an exception deep inside asn1crypto.
    try:
        request = tsp.TimeStampReq.load(der, strict=True)
        request.native  # noqa: B018 - force the lazy parse of every field now
        version = request["version"].native
        algorithm = request["message_imprint"]["hash_algorithm"]["algorithm"].dotted
        imprint = request["message_imprint"]["hashed_message"].native
    except Exception as exc:
        raise _Rejection("bad_request", "not a DER TimeStampReq") from exc
    if version != "v1":
        raise _Rejection("bad_request", "unsupported TimeStampReq version")
    md = _HASH_BY_OID.get(algorithm)
    if md is None:
        raise _Rejection("bad_alg", f"unsupported hash algorithm {algorithm}")
    if len(imprint) != _DIGEST_SIZE[md]:
        raise _Rejection("bad_request", f"message imprint is not a {md} digest")
    policy = request["req_policy"].native
    if policy is not None and request["req_policy"].dotted != POLICY_OID:
        raise _Rejection("unaccepted_policy", f"this TSA only issues under policy {POLICY_OID}")
    if request["extensions"].native:
        raise _Rejection("unaccepted_extensions", "request extensions are not supported")
    return request


class _RejectionResp(core.Sequence):
    # asn1crypto's TimeStampResp marks timeStampToken as required, but RFC 3161 section
    # 2.4.2 says it is absent unless the status is granted; this is that shape.
    _fields = [("status", tsp.PKIStatusInfo)]


def _rejection(fail_info: str, text: str) -> bytes:
    return _RejectionResp(
        {
            "status": tsp.PKIStatusInfo(
                {
                    "status": "rejection",
                    "status_string": [text],
                    "fail_info": tsp.PKIFailureInfo({fail_info}),
                }
            )
        }
    ).dump()
