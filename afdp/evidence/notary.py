"""AFDP's embedded RFC 3161 time-stamping authority (TSA).

This TSA is for development and air-gapped teams; it is not a public trust anchor. Its
tokens prove *when* a signature existed only to auditors who chose to trust its root
(``afdp trust init --tsa-root root.pem``); anyone else should use one or more public
TSAs (see ``notary/README.md``).

A TSA folder holds three files written by :func:`init_tsa`:

- ``root.pem``: a self-signed ECDSA P-256 root CA certificate; auditors pin this one.
- ``tsa.pem``: the TSA's signing certificate (RSA-2048), issued by the root, with the
  critical ``timeStamping`` extended key usage that RFC 3161 section 2.3 requires.
- ``key.pem``: the TSA's private key (PKCS#8 PEM, mode 0600).

The root's private key is discarded as soon as it has issued ``tsa.pem``: nobody can
later mint a second TSA certificate under the same root, so a stolen ``key.pem`` is the
only way to forge tokens and rotating it means a new root that auditors pin knowingly.

Responses are produced by pyHanko's maintained ``DummyTimeStamper``; the subclass here
only fixes what a long-running service needs (key loaded once, UTC time, AFDP's policy
OID, RFC-conforming rejections, ``certReq`` honoured, thread safety).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import logging
import os
import secrets
import socket
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from asn1crypto import algos, cms, core, tsp
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyhanko.sign import general
from pyhanko.sign.general import simple_cms_attribute
from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper

from afdp.errors import ConfigurationError, NetworkError, UsageError

__all__ = [
    "DEV_TSA_WARNING",
    "MAX_REQUEST_BYTES",
    "POLICY_OID",
    "EmbeddedTSA",
    "TsaFiles",
    "TsaServer",
    "init_tsa",
    "serve",
]

# AFDP's TSA policy (RFC 3161 TSTInfo.policy): an OID under the UUID arc (ITU-T X.667),
# derived from the fixed UUID 57fdddcf-a16b-4092-b9d3-625977f26983, so AFDP needs no
# registered enterprise number and never claims another TSA's (pyHanko's default is
# GlobalSign's) policy.
POLICY_OID = "2.25.116960985601205786386536018080592718211"

DEV_TSA_WARNING = (
    "AFDP embedded TSA: for development and air-gapped teams; not a public trust anchor."
)

# A TimeStampReq is a few hundred bytes; anything much larger is not one.
MAX_REQUEST_BYTES = 64 * 1024

ROOT_FILE = "root.pem"
CERT_FILE = "tsa.pem"
KEY_FILE = "key.pem"

_VALIDITY = dt.timedelta(days=3653)
# Back-date certificates a little so a verifier whose clock lags ours still accepts them.
_CLOCK_SKEW = dt.timedelta(minutes=5)

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


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class TsaFiles:
    """The files of a TSA folder, as written by :func:`init_tsa`."""

    directory: Path
    root: Path
    certificate: Path
    key: Path
    root_sha256: str  # hex SHA-256 fingerprint of root.pem's certificate, for pinning


def init_tsa(
    directory: Path, *, common_name: str = "AFDP development TSA", force: bool = False
) -> TsaFiles:
    """Create a new TSA in ``directory``: root CA, TSA certificate and TSA key.

    The folder is created if missing. The root's private key is not kept (see the module
    docstring for why).

    Returns:
        The paths written and the root's SHA-256 fingerprint.

    Raises:
        UsageError: a TSA file already exists and ``force`` is false, the common name is
            empty, or the folder cannot be written.
    """
    directory = Path(directory)
    if not common_name.strip():
        raise UsageError("the TSA common name must not be empty")
    paths = {name: directory / name for name in (ROOT_FILE, CERT_FILE, KEY_FILE)}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not force:
        raise UsageError(
            f"refusing to overwrite existing TSA files ({', '.join(existing)}); use --force"
        )

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    not_before, not_after = now - _CLOCK_SKEW, now + _VALIDITY

    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name} root"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "AFDP (not a public trust anchor)"),
        ]
    )
    root_ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(root_ski, critical=False)
        .sign(root_key, hashes.SHA256())
    )

    # RSA because pyHanko's DummyTimeStamper signs with PKCS#1 v1.5 only.
    tsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tsa_name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "AFDP (not a public trust anchor)"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(tsa_name)
        .issuer_name(root_name)
        .public_key(tsa_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        # RFC 3161 section 2.3: the TSA certificate MUST carry exactly this, critical.
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(tsa_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski),
            critical=False,
        )
        .sign(root_key, hashes.SHA256())
    )
    del root_key  # deliberately never written anywhere

    key_pem = tsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # Key first: if anything fails later, no certificate names a key that is missing.
        _write_atomic(paths[KEY_FILE], key_pem, mode=0o600)
        _write_atomic(paths[CERT_FILE], cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
        _write_atomic(paths[ROOT_FILE], root.public_bytes(serialization.Encoding.PEM), mode=0o644)
    except OSError as exc:
        raise UsageError(f"cannot write TSA files in {directory}: {exc}") from exc
    return TsaFiles(
        directory=directory,
        root=paths[ROOT_FILE],
        certificate=paths[CERT_FILE],
        key=paths[KEY_FILE],
        root_sha256=root.fingerprint(hashes.SHA256()).hex(),
    )


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    # The temporary file is created with its final mode, so the key is never readable by
    # others even for an instant; os.replace makes the switch atomic.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)  # umask must not loosen or tighten it
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------ responder


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


# --------------------------------------------------------------------------- server


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse one connection
    server_version = "afdp-tsa"
    sys_version = ""
    timeout = 60  # idle keep-alive connections are dropped after a minute
    server: _HTTPServer

    def do_POST(self) -> None:
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/timestamp-query":
            self._drain()
            self._plain(415, "Content-Type must be application/timestamp-query\n")
            return
        length_header = self.headers.get("Content-Length")
        if length_header is None or not length_header.strip().isdigit():
            self.close_connection = True
            self._plain(411, "Content-Length is required\n")
            return
        length = int(length_header)
        if length > MAX_REQUEST_BYTES:
            self.close_connection = True  # the body is not read, so the stream is unusable
            self._plain(413, f"a time-stamp request is at most {MAX_REQUEST_BYTES} bytes\n")
            return
        body = self.rfile.read(length)
        reply = self.server.tsa.respond(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/timestamp-reply")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def do_GET(self) -> None:
        self._plain(405, f"POST an RFC 3161 request here. {DEV_TSA_WARNING}\n", allow=True)

    def do_HEAD(self) -> None:
        self._plain(405, "", allow=True)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def _drain(self) -> None:
        # Read (a bounded) body we are refusing, so the keep-alive stream stays in sync.
        length = self.headers.get("Content-Length", "0").strip()
        if length.isdigit() and int(length) <= MAX_REQUEST_BYTES:
            self.rfile.read(int(length))
        else:
            self.close_connection = True

    def _plain(self, code: int, text: str, *, allow: bool = False) -> None:
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if allow:
            self.send_header("Allow", "POST")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes; with Nagle's algorithm the second
        # waits for the client's delayed ACK (about 40 ms on Linux) on every reply.
        if self.connection.family in (socket.AF_INET, socket.AF_INET6):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        _log.debug("%s %s", self.address_string(), format % args)


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], tsa: EmbeddedTSA) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.tsa = tsa
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket, alive: bool) -> None:
        with self._connections_lock:
            if alive:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        # shutdown() stops accepting but keep-alive handler threads would go on
        # answering; a closed TSA must stop answering at once.
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class TsaServer:
    """A running HTTP front end for an :class:`EmbeddedTSA` (see :func:`serve`)."""

    def __init__(self, httpd: _HTTPServer) -> None:
        self._httpd = httpd
        address = httpd.server_address
        self.host: str = str(address[0])
        self.port: int = int(address[1])
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{self.port}/"
        self._closed = threading.Event()
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"afdp-tsa-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def wait(self) -> None:
        """Block until :meth:`close` is called (Ctrl-C still interrupts)."""
        # Event.wait with a timeout keeps the main thread responsive to signals.
        while not self._closed.wait(0.5):
            pass

    def close(self) -> None:
        """Stop serving and drop open connections; idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.close_connections()
        self._thread.join(timeout=5)

    def __enter__(self) -> TsaServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def serve(tsa: EmbeddedTSA, host: str = "127.0.0.1", port: int = 0) -> TsaServer:
    """Serve ``tsa`` over HTTP (RFC 3161 section 3.4) in a daemon thread.

    ``port=0`` picks a free port; the chosen one is in ``.url``. Use the result as a
    context manager, or call ``.close()``.

    Returns:
        The running server.

    Raises:
        NetworkError: the address cannot be bound (in use, bad host, no permission): exit 3.
    """
    try:
        httpd = _HTTPServer((host, port), tsa)
    except OSError as exc:
        # The port being taken is the machine's state, not a bad argument: operational.
        raise NetworkError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return TsaServer(httpd)
