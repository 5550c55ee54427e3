"""Canonical bytes and digests: RFC 8785 (JSON Canonicalization Scheme) and SHA-256.

Every digest AFDP writes is ``sha256(rfc8785(value))``, so any JCS implementation can
re-hash a record without AFDP.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

import rfc8785

from afdp.errors import UsageError


def canonical_bytes(value: Any) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of a JSON value.

    Raises:
        UsageError: the value is not representable as I-JSON (NaN, infinities, integers
            beyond 2**53, non-string keys, non-JSON types).
    """
    fast = _plain_json_bytes(value)
    if fast is not None:
        return fast
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise UsageError(f"value cannot be canonicalized as JSON (RFC 8785): {exc}") from exc


#: RFC 8785 (I-JSON) integers: what an IEEE 754 double holds exactly.
_INT_LIMIT = 2**53 - 1
_BEYOND_BMP = re.compile(rb"[\xf0-\xf7]")  # the lead byte of a 4-byte UTF-8 sequence


def _plain_json_bytes(value: Any) -> bytes | None:
    """Return the RFC 8785 bytes of ``value`` by the standard library's C encoder, or None.

    For plain values the two encodings are the same bytes: object keys sorted (by code
    point, which is UTF-16 order when no character lies beyond the BMP), strings escaped
    alike (quote, backslash, the five short control escapes, other controls as lowercase
    ``\\u00xx``, nothing else), integers in decimal. So this answers only when every value
    is exactly a dict with string keys, list, str, bool, None, an integer within I-JSON's
    range, or a float that both print alike (finite, not integral, no exponent), and no
    character lies beyond the BMP; anything else is None and goes to rfc8785, which
    also raises for what cannot be canonicalized. ``tests/test_verify_speed_caches.py``
    checks it against rfc8785 over generated values.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if not -_INT_LIMIT <= item <= _INT_LIMIT:
                return None
        elif kind is float:
            text = repr(item)
            if "e" in text or "n" in text or text.endswith(".0"):  # exponent, inf, nan, integral
                return None
        elif kind is dict:
            if not all(type(key) is str for key in item):
                return None
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        else:
            return None
    try:
        data = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        return None
    if not data.isascii() and _BEYOND_BMP.search(data):  # UTF-16 key order may differ
        return None
    return data


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
