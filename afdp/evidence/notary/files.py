"""The TSA's folder: :func:`init_tsa` makes the root CA (then discards its key), the TSA signing certificate and key (``root.pem``, ``tsa.pem``, ``key.pem``), written atomically with safe modes; the TSA's policy OID and the development warning it carries."""

from __future__ import annotations

import datetime as dt
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from afdp.errors import UsageError

# AFDP's TSA policy (RFC 3161 TSTInfo.policy): an OID under the UUID arc (ITU-T X.667),
# derived from the fixed UUID 57fdddcf-a16b-4092-b9d3-625977f26983, so AFDP needs no
# registered enterprise number and never claims another TSA's (pyHanko's default is
# GlobalSign's) policy.
POLICY_OID = "2.25.116960985601205786386536018080592718211"
DEV_TSA_WARNING = (
    "AFDP embedded TSA: for development and air-gapped teams; not a public trust anchor."
)
ROOT_FILE = "root.pem"
CERT_FILE = "tsa.pem"
KEY_FILE = "key.pem"
_VALIDITY = dt.timedelta(days=3653)


# Back-date certificates a little so a verifier whose clock lags ours still accepts them.
_CLOCK_SKEW = dt.timedelta(minutes=5)


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
