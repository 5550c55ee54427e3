"""Canonical bytes and digests: RFC 8785 (JSON Canonicalization Scheme) and SHA-256.

Every digest AFDP writes is ``sha256(rfc8785(value))``, so any JCS implementation can
re-hash a record without AFDP.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import rfc8785

from afdp.errors import UsageError


def canonical_bytes(value: Any) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of a JSON value.

    Raises:
        UsageError: the value is not representable as I-JSON (NaN, infinities, integers
            beyond 2**53, non-string keys, non-JSON types).
    """
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise UsageError(f"value cannot be canonicalized as JSON (RFC 8785): {exc}") from exc


def sha256_hex(data: bytes) -> str:
    """Return the lowercase hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def digest(value: Any) -> str:
    """Return the hex SHA-256 of the canonical bytes of a JSON value."""
    return sha256_hex(canonical_bytes(value))


def json_safe(value: Any) -> Any:
    """Return ``value`` with non-finite floats replaced by ``None``.

    Analysis results may legitimately contain NaN (an empty baseline); canonical JSON
    cannot, so such numbers are written as null and the reason is recorded beside them.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
