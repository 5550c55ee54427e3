"""Trusted public keys, parsed once: signature checks over many records by one key.

securesystemslib's ``Key.verify_signature`` parses the key's PEM for every call. A
verify run checks two signatures per record (the DSSE envelope and the SSH commit
signature) with the same few trusted keys, so :func:`verify_signature` keeps the parsed
key per (key type, scheme, public key text), the exact value that was parsed, and then
runs the very check securesystemslib runs for that scheme (same type and curve checks,
same algorithm). Schemes it does not list, and keys that are not plain ``SSlibKey``\\ s,
go to securesystemslib unchanged.
"""

from __future__ import annotations

import functools
from typing import Any

from securesystemslib.exceptions import UnverifiedSignatureError
from securesystemslib.signer import Key, Signature, SSlibKey

__all__ = ["verify_signature"]


@functools.lru_cache(maxsize=64)
def _parsed(keytype: str, scheme: str, public: str) -> tuple[Any, Any] | None:
    """The parsed key and its signature algorithm, or None (securesystemslib decides)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    try:
        if keytype == "ecdsa" and scheme in ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384"):
            curve, digest = (
                (ec.SECP256R1, hashes.SHA256) if scheme.endswith("256") else (ec.SECP384R1, hashes.SHA384)
            )
            key = serialization.load_pem_public_key(public.encode("utf-8"))
            if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, curve):
                return key, ec.ECDSA(digest())
        elif keytype == "ed25519" and scheme == "ed25519":
            return ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(public)), None
    except (ValueError, TypeError):
        pass  # securesystemslib reports it in its own words
    return None


def verify_signature(key: Key, keyid: str, signature: bytes, data: bytes) -> None:
    """Verify ``signature`` over ``data`` with ``key``, as ``key.verify_signature`` does.

    Raises:
        securesystemslib.exceptions.UnverifiedSignatureError: the signature does not
            verify (securesystemslib's own ``VerificationError`` and its subclasses for
            everything it handles).
    """
    public = key.keyval.get("public") if type(key) is SSlibKey else None
    parsed = _parsed(key.keytype, key.scheme, public) if isinstance(public, str) and keyid == key.keyid else None
    if parsed is None:
        key.verify_signature(Signature(keyid, signature.hex()), data)
        return
    from cryptography.exceptions import InvalidSignature

    loaded, algorithm = parsed
    try:
        if algorithm is None:
            loaded.verify(signature, data)
        else:
            loaded.verify(signature, data, algorithm)
    except InvalidSignature as exc:
        raise UnverifiedSignatureError(f"Failed to verify signature by {key.keyid}") from exc
