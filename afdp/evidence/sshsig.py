"""Git-native commit signatures: SSH signatures (OpenSSH PROTOCOL.sshsig) made by the record's signer.

Every evidence commit written with a key signer carries, in git's ``gpgsig`` header, the
SSH signature that ``ssh-keygen -Y sign -n git`` would make with the same key, so plain
``git log --show-signature`` (``gpg.format=ssh`` and an allowed-signers file built from
the signer's public key, see :func:`allowed_signers_line`) prints ``Good "git" signature``.

The signature is made *through the securesystemslib signer* (it signs the SSHSIG
"signed data" blob exactly as it signs a DSSE PAE), so file keys and KMS/HSM keys of a
scheme SSH can express produce one with no extra code. Schemes SSH cannot express
(RSA-PSS) and keyless (Sigstore) signers make no commit signature; the DSSE signature
inside the record remains the evidence. :func:`ssh_capable` is the single rule both the
writer and the verifier use, so a stripped signature is always detected.

Format (PROTOCOL.sshsig)::

    "SSHSIG" uint32(1) string(publickey) string(namespace) string(reserved)
             string(hash_algorithm) string(signature)

    signed data = "SSHSIG" string(namespace) string(reserved) string(hash_algorithm)
                  string(H(message))
"""

from __future__ import annotations

import base64
import functools
import hashlib
import struct
import textwrap
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from securesystemslib.signer import Key, Signer

from afdp.errors import ConfigurationError, SigningError, VerificationError
from afdp.evidence.publickeys import verify_signature

MAGIC = b"SSHSIG"
VERSION = 1
NAMESPACE = "git"
HASH_ALGORITHM = "sha512"  # ssh-keygen's default
_HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}
BEGIN = "-----BEGIN SSH SIGNATURE-----"
END = "-----END SSH SIGNATURE-----"
#: The principal AFDP writes into allowed-signers lines: the evidence committer's e-mail.
DEFAULT_PRINCIPAL = "afdp@evidence.invalid"


@dataclass(frozen=True)
class _Scheme:
    signature_type: str  # the SSH signature algorithm name inside the signature blob
    ecdsa: bool  # securesystemslib returns DER (r, s); SSH wants two mpints


# securesystemslib scheme -> how SSH names and encodes the same signature
_SCHEMES = {
    "ecdsa-sha2-nistp256": _Scheme("ecdsa-sha2-nistp256", ecdsa=True),
    "ecdsa-sha2-nistp384": _Scheme("ecdsa-sha2-nistp384", ecdsa=True),
    "ed25519": _Scheme("ssh-ed25519", ecdsa=False),
    "rsa-pkcs1v15-sha256": _Scheme("rsa-sha2-256", ecdsa=False),
    "rsa-pkcs1v15-sha512": _Scheme("rsa-sha2-512", ecdsa=False),
}


class CommitSignatureError(VerificationError):
    """A commit's SSH signature is missing, malformed, or not by the trusted key."""


def ssh_capable(key: Key) -> bool:
    """Return True if records signed by ``key`` must carry an SSH commit signature."""
    return key.scheme in _SCHEMES and _public_blob(key) is not None


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _mpint(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 8) // 8, "big") if value else b""
    return _string(raw)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, size: int) -> bytes:
        if self.at + size > len(self.data):
            raise ValueError("truncated")
        chunk = self.data[self.at : self.at + size]
        self.at += size
        return chunk

    def string(self) -> bytes:
        (size,) = struct.unpack(">I", self.take(4))
        return self.take(size)

    def uint32(self) -> int:
        (value,) = struct.unpack(">I", self.take(4))
        return int(value)

    def done(self) -> bool:
        return self.at == len(self.data)


@functools.lru_cache(maxsize=64)
def _blob_of_pem(pem: str) -> bytes | None:
    try:
        public = serialization.load_pem_public_key(pem.encode())
        line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    except (ValueError, TypeError):
        return None
    return base64.b64decode(line.split()[1])


def _public_blob(key: Key) -> bytes | None:
    public = getattr(key, "keyval", {}).get("public")
    if not isinstance(public, str):
        return None
    if key.keytype == "ed25519" and not public.startswith("-----"):
        # securesystemslib keeps Ed25519 public keys as the raw 32 bytes in hex
        try:
            raw = bytes.fromhex(public)
        except ValueError:
            return None
        return _string(b"ssh-ed25519") + _string(raw) if len(raw) == 32 else None
    return _blob_of_pem(public)


def _signed_data(message: bytes, hash_algorithm: str) -> bytes:
    digest = _HASHES[hash_algorithm](message).digest()
    return (
        MAGIC
        + _string(NAMESPACE.encode())
        + _string(b"")
        + _string(hash_algorithm.encode())
        + _string(digest)
    )


def sign_git_commit(signer: Signer, content: bytes) -> str | None:
    """Return the armored SSH signature of a commit's content, or None if SSH cannot express it.

    ``content`` is the commit object without its signature header (what
    ``git verify-commit`` checks). None means the signer's scheme has no SSH form (for
    example RSA-PSS) or the signer has no SSH-encodable public key.

    Raises:
        SigningError: the signer failed (nothing is committed then).
    """
    key = signer.public_key
    scheme = _SCHEMES.get(key.scheme)
    blob = _public_blob(key)
    if scheme is None or blob is None:
        return None
    try:
        raw = bytes.fromhex(signer.sign(_signed_data(content, HASH_ALGORITHM)).signature)
    except Exception as exc:  # a failing backend stops the record, as for the DSSE signature
        raise SigningError(f"signer could not sign the evidence commit: {exc}") from exc
    if scheme.ecdsa:
        r, s = decode_dss_signature(raw)
        raw = _mpint(r) + _mpint(s)
    signature = _string(scheme.signature_type.encode()) + _string(raw)
    body = (
        MAGIC
        + struct.pack(">I", VERSION)
        + _string(blob)
        + _string(NAMESPACE.encode())
        + _string(b"")
        + _string(HASH_ALGORITHM.encode())
        + _string(signature)
    )
    lines = textwrap.wrap(base64.b64encode(body).decode(), 70)
    return "\n".join([BEGIN, *lines, END])


def verify_git_commit(armored: bytes, content: bytes, key: Key) -> None:
    """Verify a commit's SSH signature over ``content`` against the trusted ``key``.

    Returns None when the signature is valid.

    Raises:
        CommitSignatureError: the armor or the SSHSIG structure does not parse, the
            namespace is not ``git``, the hash algorithm is unknown, the signature was
            made by another key, or it does not verify over this commit.
    """
    try:
        text = armored.decode("ascii").strip()
        if not (text.startswith(BEGIN) and text.endswith(END)):
            raise ValueError("not an SSH signature")
        body = base64.b64decode("".join(text[len(BEGIN) : -len(END)].split()), validate=True)
        reader = _Reader(body)
        if reader.take(6) != MAGIC or reader.uint32() != VERSION:
            raise ValueError("not an SSHSIG version 1 signature")
        blob, namespace, _reserved = reader.string(), reader.string(), reader.string()
        hash_algorithm = reader.string().decode()
        inner = _Reader(reader.string())
        signature_type, raw = inner.string().decode(), inner.string()
        if not (reader.done() and inner.done()):
            raise ValueError("trailing data")
    except (ValueError, UnicodeDecodeError, struct.error) as exc:
        raise CommitSignatureError(f"commit signature does not parse: {exc}") from None
    if namespace != NAMESPACE.encode():
        raise CommitSignatureError(f"commit signature is for namespace {namespace!r}, not 'git'")
    if hash_algorithm not in _HASHES:
        raise CommitSignatureError(f"commit signature uses unknown hash {hash_algorithm!r}")
    scheme = _SCHEMES.get(key.scheme)
    expected_blob = _public_blob(key)
    if scheme is None or expected_blob is None:
        raise CommitSignatureError(f"trusted key scheme {key.scheme} has no SSH form")
    if blob != expected_blob:
        raise CommitSignatureError("commit is signed by another key than the record's trusted signer")
    if signature_type != scheme.signature_type:
        raise CommitSignatureError(
            f"commit signature algorithm {signature_type} does not match the key ({scheme.signature_type})"
        )
    if scheme.ecdsa:
        try:
            numbers = _Reader(raw)
            r = int.from_bytes(numbers.string(), "big")
            s = int.from_bytes(numbers.string(), "big")
            raw = encode_dss_signature(r, s)
        except ValueError:
            raise CommitSignatureError("commit signature does not parse: bad ECDSA value") from None
    try:
        verify_signature(key, key.keyid, raw, _signed_data(content, hash_algorithm))
    except Exception:  # securesystemslib raises several types for a bad signature
        raise CommitSignatureError(
            "commit signature does not verify over this commit with the trusted key"
        ) from None


def allowed_signers_line(public_pem: bytes, *, principal: str = DEFAULT_PRINCIPAL) -> str:
    """Return a git/ssh-keygen allowed-signers line for a PEM public key.

    Raises:
        ConfigurationError: the PEM does not parse or has no SSH form.
    """
    blob = _blob_of_pem(public_pem.decode("ascii", "replace"))
    if blob is None:
        raise ConfigurationError("public key does not parse as PEM or has no SSH form")
    key_type = _Reader(blob).string().decode()
    if not principal or any(c.isspace() for c in principal):
        raise ConfigurationError(f"invalid principal {principal!r}")
    return f'{principal} namespaces="{NAMESPACE}" {key_type} {base64.b64encode(blob).decode()}'
