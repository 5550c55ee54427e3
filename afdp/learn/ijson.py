"""Strict JSON for evidence read by the learning code: I-JSON (RFC 7493) numbers only.

Verification holds a record's ``result.json`` to exactly the canonical result (check 5);
:func:`strict_json` stays behind that check: ``NaN``, ``1e400`` and an object naming a
key twice are refused, never read.
"""

from __future__ import annotations

import math
from typing import Any

from afdp.evidence.jsondata import load_json

__all__ = ["NotIJson", "strict_json"]


class NotIJson(ValueError):
    """JSON that holds NaN, Infinity or a number too large for a double (not I-JSON)."""


def _refuse_constant(name: str) -> Any:
    raise NotIJson(f"it holds {name}, which JSON (RFC 8259 / RFC 8785) has no number for")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise NotIJson(f"it holds the number {text}, beyond a double (read as {number})")
    return number


_SAFE_INTEGER = 2**53 - 1


def _safe_int(text: str) -> int:
    number = int(text)
    if abs(number) > _SAFE_INTEGER:
        raise NotIJson(f"it holds the integer {text[:40]}, beyond 2**53 - 1 (RFC 8785 cannot write it)")
    return number


def strict_json(data: bytes | str) -> Any:
    """Parse JSON as RFC 8785 (I-JSON) allows it: NaN, Infinity, numbers that overflow a
    double and integers beyond 2**53 - 1 are refused, never read as numbers (Python's
    ``json`` accepts them all).

    Raises:
        NotIJson: such a number; ValueError: not JSON at all.
    """
    return load_json(data, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_safe_int)
