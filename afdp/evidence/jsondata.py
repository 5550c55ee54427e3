"""JSON that someone else wrote (a step result, a batch line, a history file, an event
body), read so that it means one thing.

``{"sha": "A", "sha": "B"}`` is valid JSON (RFC 8259 only says names *should* be
unique) and parsers disagree on it: Python's ``json`` and ``jq`` keep the last value,
others the first. Signed as Python read it, the evidence would say ``B`` while the
sender's own tooling showed ``A``. :func:`load_json` refuses such a document
(:class:`DuplicateKey`, a ``ValueError``) instead of guessing; every caller already turns
a ``ValueError`` into one line. A document nested past the parser's recursion is
refused the same way (``RecursionError`` is not a ``ValueError``).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["DuplicateKey", "load_json", "unique_keys"]


class DuplicateKey(ValueError):
    """A JSON object names the same key twice: which value it means is ambiguous."""


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for :func:`json.loads`: the object, or :class:`DuplicateKey`."""
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise DuplicateKey(f"an object names {key[:40]!r} twice (a duplicate key): which value it means is ambiguous")
        document[key] = value
    return document


def load_json(data: bytes | str, **options: Any) -> Any:
    """:func:`json.loads` with unique keys; ``options`` go to it (e.g. ``parse_constant``).

    Raises:
        DuplicateKey: an object names a key twice; ValueError: not JSON, or nested too
            deeply to read.
    """
    try:
        return json.loads(data, object_pairs_hook=unique_keys, **options)
    except RecursionError:
        raise ValueError("nested too deeply to read") from None
