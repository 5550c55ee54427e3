"""Signers and public keys, through securesystemslib.

A signer comes from a key file (PKCS#8 PEM, the default ``afdp keys generate`` writes)
or from any private-key URI securesystemslib supports (``file2:``, ``gcpkms:``,
``awskms:``, ``azurekms:``, ``hsm:``, ...), so KMS and HSM signers need no AFDP code.
A signer that cannot sign raises :class:`SigningError`; nothing unsigned is recorded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.signer import Key, Signer, SSlibKey

from afdp.errors import ConfigurationError, SigningError, UsageError
from afdp.evidence.keyless import INSTANCES, KeylessSigner

PASSPHRASE_ENV = "AFDP_KEY_PASSPHRASE"
#: Signer URIs for keyless signing: ``sigstore:`` (production) or ``sigstore:staging``.
KEYLESS_SCHEME = "sigstore"
#: What may sign a record: a securesystemslib signer, or Sigstore keyless.
AnySigner = Signer | KeylessSigner


@dataclass(frozen=True)
class GeneratedKey:
    """Paths written by :func:`generate_key` and the key's securesystemslib keyid."""

    private_path: Path
    public_path: Path
    keyid: str


def generate_key(path: Path, *, force: bool = False) -> GeneratedKey:
    """Generate an ECDSA P-256 key: ``path`` (PKCS#8 PEM, mode 0600) and ``path.pub``.

    Raises:
        UsageError: a file exists and ``force`` is false.
    """
    public_path = path.with_name(path.name + ".pub")
    for target in (path, public_path):
        if target.exists() and not force:
            raise UsageError(f"{target} exists; pass --force to overwrite it")
    private_key = ec.generate_private_key(ec.SECP256R1())
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    # Created 0600 from the start: the key is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public_path.write_bytes(public_pem)
    return GeneratedKey(path, public_path, SSlibKey.from_crypto(private_key.public_key()).keyid)


def public_key_from_pem(pem: bytes, *, source: str = "public key") -> SSlibKey:
    """Return the securesystemslib key for a PEM SubjectPublicKeyInfo.

    Raises:
        ConfigurationError: the PEM does not parse or is not a supported key type.
    """
    try:
        loaded = serialization.load_pem_public_key(pem)
        return SSlibKey.from_crypto(loaded)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"{source} is not a usable PEM public key: {exc}") from exc


def load_signer(key: str, *, public_key: str | None = None) -> AnySigner:
    """Return a signer for a key file path, a private-key URI, or ``sigstore:``.

    ``key`` is a path to a PEM private key (passphrase from ``$AFDP_KEY_PASSPHRASE``
    if encrypted), or a URI whose scheme securesystemslib knows; URIs need the matching
    ``public_key`` PEM file, as securesystemslib's ``Signer.from_priv_key_uri`` does.
    ``sigstore:`` (or ``sigstore:staging``) is keyless signing with the ambient OIDC
    token of the CI job (:class:`afdp.evidence.keyless.KeylessSigner`).

    Raises:
        ConfigurationError: the key does not parse, the file is missing, or a URI lacks
            its public key.
        SigningError: keyless signing was asked for and there is no OIDC token (exit 3).
    """
    scheme = key.split(":", 1)[0] if ":" in key else ""
    if scheme == KEYLESS_SCHEME:
        instance = key.split(":", 1)[1] or "production"
        if instance not in INSTANCES:
            raise ConfigurationError(
                f"unknown Sigstore instance in {key!r}: use sigstore: or sigstore:staging"
            )
        return KeylessSigner.from_environment(instance=instance)
    from securesystemslib.signer import SIGNER_FOR_URI_SCHEME

    if scheme in SIGNER_FOR_URI_SCHEME:
        if public_key is None:
            raise ConfigurationError(
                f"signer URI {key!r} needs --public-key with its PEM public key"
            )
        pub = public_key_from_pem(_read(Path(public_key), "public key"), source=public_key)
        try:
            return Signer.from_priv_key_uri(key, pub)
        except Exception as exc:  # securesystemslib raises many types per backend
            raise ConfigurationError(f"cannot load signer {key!r}: {exc}") from exc
    return _file_signer(Path(key))


def _file_signer(path: Path) -> Signer:
    from securesystemslib.signer import CryptoSigner

    pem = _read(path, "private key")
    passphrase = os.environ.get(PASSPHRASE_ENV)
    try:
        private_key = serialization.load_pem_private_key(
            pem, password=passphrase.encode() if passphrase else None
        )
    except TypeError as exc:
        raise ConfigurationError(
            f"private key {path} is encrypted; set ${PASSPHRASE_ENV}"
            if "encrypted" in str(exc)
            else f"private key {path} does not parse: {exc}"
        ) from exc
    except ValueError as exc:
        raise ConfigurationError(f"private key {path} does not parse as PEM: {exc}") from exc
    try:
        return CryptoSigner(private_key)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigurationError(f"private key {path} is not a supported key type: {exc}") from exc


def _read(path: Path, what: str) -> bytes:
    # a key in PEM is a few KiB: /dev/zero or a huge file is refused, not read until killed
    from afdp.evidence.files import read_at_most

    return read_at_most(path, 1 << 20, what)


def signer_keyid(signer: Signer) -> str:
    """Return the keyid of the signer's public key."""
    key: Key = signer.public_key
    return key.keyid


def sign_bytes(signer: Signer, data: bytes) -> bytes:
    """Sign ``data`` (the DSSE PAE) and return the raw signature bytes.

    Raises:
        SigningError: the signer failed (KMS unreachable, HSM locked, ...).
    """
    try:
        signature = signer.sign(data)
    except Exception as exc:  # any backend failure must stop the record, never skip signing
        raise SigningError(f"signer could not sign: {exc}") from exc
    raw = bytes.fromhex(signature.signature)
    if not raw:
        raise SigningError("signer returned an empty signature")
    return raw
