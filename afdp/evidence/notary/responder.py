"""The time-stamp responder: :class:`EmbeddedTSA` loads the TSA folder once (certificate pair checked, key mode warned about) and answers one DER ``TimeStampReq`` with a ``TimeStampResp`` (pyHanko's DummyTimeStamper, fixed for a service: UTC, AFDP's policy OID, ``certReq`` honoured, RFC-conforming rejections, thread safety)."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
import stat
import threading
from pathlib import Path
from typing import Any

from asn1crypto import algos, cms, core, tsp
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from pyhanko.sign import general
from pyhanko.sign.general import simple_cms_attribute
from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper

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


class _AfdpTimeStamper(DummyTimeStamper):
    """pyHanko's responder with the per-request constant work done once.

    ``DummyTimeStamper._sign_tst_info`` re-parses (and so re-validates) the RSA key on
    every request, about 60 ms. Here the key is parsed once, and every part of the token
    that depends only on the certificate (signer id, ESS signing-certificate attribute,
    the certificate set) is encoded once and re-loaded per request from its DER: a lazy
    asn1crypto load costs microseconds, rebuilding those parts from values about 1 ms.
    The structure is pyHanko's, field for field.
    """

    def __init__(self, cert: asn1_x509.Certificate, key: rsa.RSAPrivateKey) -> None:
        super().__init__(
            tsa_cert=cert,
            tsa_key=asn1_keys.PrivateKeyInfo.load(
                key.private_bytes(
                    serialization.Encoding.DER,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            ),
        )
        self._key = key
        self._policy = tsp.ObjectIdentifier(POLICY_OID)
        self._tsa_name_der = asn1_x509.GeneralName(name="directory_name", value=cert.subject).dump()
        self._content_type_attr_der = simple_cms_attribute("content_type", "tst_info").dump()
        self._signing_certificate_attr_der = simple_cms_attribute(
            "signing_certificate", general.as_signing_certificate(cert)
        ).dump()
        self._sid_der = cms.SignerIdentifier(
            {
                "issuer_and_serial_number": cms.IssuerAndSerialNumber(
                    {"issuer": cert.issuer, "serial_number": cert.serial_number}
                )
            }
        ).dump()
        self._signature_algorithm_der = algos.SignedDigestAlgorithm(
            {"algorithm": "rsassa_pkcs1v15"}
        ).dump()
        self._certificates_der = cms.CertificateSet(
            [cms.CertificateChoices({"certificate": cert})]
        ).dump()
        self._digest_algorithm_der = {
            md: algos.DigestAlgorithm({"algorithm": md}).dump() for md in _DIGEST_SIZE
        }
        self._digest_algorithms_der = {
            md: cms.DigestAlgorithms([algos.DigestAlgorithm({"algorithm": md})]).dump()
            for md in _DIGEST_SIZE
        }

    def _build_tst_info(
        self, message_imprint: tsp.MessageImprint, when: dt.datetime, req: tsp.TimeStampReq
    ) -> tsp.TSTInfo:
        info: dict[str, Any] = {
            "version": "v1",
            "policy": self._policy,
            "message_imprint": message_imprint,
            # 127 random bits: serial numbers must be unique per TSA (RFC 3161 section
            # 2.4.2), and no counter would survive restarts or several hosts.
            "serial_number": secrets.randbits(127) | 1,
            "gen_time": when,
            "tsa": asn1_x509.GeneralName.load(self._tsa_name_der),
        }
        if req["nonce"].native is not None:
            info["nonce"] = req["nonce"]
        return tsp.TSTInfo(info)

    def _sign_tst_info(
        self, tst_info_data: bytes, md_algorithm: str, when: dt.datetime
    ) -> tuple[bytes, cms.CMSAttributes]:
        signed_attrs = cms.CMSAttributes(
            [
                cms.CMSAttribute.load(self._content_type_attr_der),
                simple_cms_attribute("signing_time", cms.Time({"utc_time": core.UTCTime(when)})),
                cms.CMSAttribute.load(self._signing_certificate_attr_der),
                simple_cms_attribute(
                    "message_digest", hashlib.new(md_algorithm, tst_info_data).digest()
                ),
            ]
        )
        signed_attrs_der = signed_attrs.dump()
        signature = self._key.sign(signed_attrs_der, padding.PKCS1v15(), _CRYPTO_HASH[md_algorithm])
        # Re-loaded so that re-tagging it as [0] IMPLICIT in SignerInfo copies bytes, not
        # a tree of parsed objects.
        return signature, cms.CMSAttributes.load(signed_attrs_der)

    def _build_signed_data(
        self,
        tst_info_data: bytes,
        md_algorithm: str,
        signature: bytes,
        signed_attrs: cms.CMSAttributes,
        *,
        include_certificates: bool = True,
    ) -> dict[str, Any]:
        signer_info = cms.SignerInfo(
            {
                "version": "v1",
                "sid": cms.SignerIdentifier.load(self._sid_der),
                "digest_algorithm": algos.DigestAlgorithm.load(
                    self._digest_algorithm_der[md_algorithm]
                ),
                "signature_algorithm": algos.SignedDigestAlgorithm.load(
                    self._signature_algorithm_der
                ),
                "signed_attrs": signed_attrs,
                "signature": signature,
            }
        )
        signed_data: dict[str, Any] = {
            # v3: required for the EncapsulatedContentInfo of a TSTInfo (RFC 5652 5.1)
            "version": "v3",
            "digest_algorithms": cms.DigestAlgorithms.load(
                self._digest_algorithms_der[md_algorithm]
            ),
            "encap_content_info": cms.EncapsulatedContentInfo(
                {"content_type": "tst_info", "content": cms.ParsableOctetString(tst_info_data)}
            ),
            "signer_infos": cms.SignerInfos([signer_info]),
        }
        # RFC 3161 section 2.4.1: certificates only when the request's certReq asks.
        if include_certificates:
            signed_data["certificates"] = cms.CertificateSet.load(self._certificates_der)
        return signed_data

    def request_tsa_response(self, req: tsp.TimeStampReq) -> tsp.TimeStampResp:
        # DummyTimeStamper's assembly, but: time in UTC rather than the host's zone, and
        # certReq honoured rather than certificates always sent.
        md_algorithm = _HASH_BY_OID[req["message_imprint"]["hash_algorithm"]["algorithm"].dotted]
        now = dt.datetime.now(dt.UTC)
        tst_info_data = self._build_tst_info(req["message_imprint"], now, req).dump()
        signature, signed_attrs = self._sign_tst_info(tst_info_data, md_algorithm, now)
        signed_data = self._build_signed_data(
            tst_info_data,
            md_algorithm,
            signature,
            signed_attrs,
            include_certificates=bool(req["cert_req"].native),
        )
        # Dumped and re-loaded for the same reason as the signed attributes: the
        # [0] EXPLICIT wrapping in ContentInfo then copies bytes only.
        content = cms.SignedData.load(cms.SignedData(signed_data).dump())
        token = cms.ContentInfo({"content_type": "signed_data", "content": content})
        return tsp.TimeStampResp(
            {"status": tsp.PKIStatusInfo({"status": "granted"}), "time_stamp_token": token}
        )


class EmbeddedTSA:
    """AFDP's RFC 3161 TSA: turns DER TimeStampReq bytes into DER TimeStampResp bytes.

    For development and air-gapped teams; not a public trust anchor. Safe to call from
    many threads at once.
    """

    def __init__(self, certificate: x509.Certificate, key: rsa.RSAPrivateKey) -> None:
        self.certificate = certificate
        self._stamper = _AfdpTimeStamper(
            asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER)),
            key,
        )
        # asn1crypto objects cache parse state inside themselves and are not documented
        # as thread-safe, and the stamper shares a few of them across requests; building
        # a response is CPU-bound work under the GIL anyway, so serialising it costs no
        # throughput while HTTP handling still runs on many threads.
        self._lock = threading.Lock()

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
            with self._lock:
                return self._stamper.request_tsa_response(request).dump()
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
