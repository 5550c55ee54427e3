"""Feature flags for A/B workflows: the assignment rule, and switching a flag through a provider.

**Assignment.** A user belongs to a group by the rule of flagd's ``fractional`` operator
(the OpenFeature flagd provider specification), so AFDP's record and the flag provider
agree on every user: ``h = MurmurHash3_x86_32(salt + user_id, seed 0)`` read as a signed
32-bit integer, ``bucket = |h| / (2^31 - 1) * 100``, and the user falls in the first group
whose cumulative share (in segment order) exceeds ``bucket``. The salt is per
deployment (:func:`deployment_salt`), so two experiments never split users alike.

**flagd provider.** :func:`write_flagd` edits one flag of a flagd flag file
(``{"flags": {...}}``, other flags untouched) and replaces the file atomically (a
temporary file in the same directory, fsync, ``os.replace``): a reader sees the old file
or the new one, never half of one. The flag's variants are the group names; its
targeting is ``fractional`` over ``cat(salt, targetingKey)``: so the OpenFeature
evaluation's *variant* is the user's group (what analytics label events with), and its
*value* says whether the feature is on. ``segment_users`` installs the split with every
group off (an A/A period); ``enable_feature`` turns the treatment's variant on (for a
percentage below 100%, the treatment's bucket is split into ``<group>`` on and
``<group>_holdout`` off). A file that exists but is not a flagd document is refused,
never overwritten.

**webhook provider.** The change is POSTed as canonical JSON, HMAC-signed with the
workflow's secret exactly like an action webhook (:mod:`afdp.pipeline.actions`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from afdp.errors import AfdpError

FLAGD_SCHEMA = "https://flagd.dev/schema/v0/flags.json"
WEIGHT_SCALE = 10_000  # shares are written as integer weights in basis points
MAX_FLAG_FILE = 1 << 20


class FlagError(AfdpError):
    """The flag could not be switched (the provider refused it, or the file is not flagd's)."""


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """Return MurmurHash3 x86 32-bit of ``data`` (unsigned)."""
    c1, c2, mask = 0xCC9E2D51, 0x1B873593, 0xFFFFFFFF
    h = seed & mask
    blocks = len(data) // 4
    for i in range(blocks):
        k = int.from_bytes(data[i * 4 : i * 4 + 4], "little")
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        k = (k * c2) & mask
        h ^= k
        h = ((h << 13) | (h >> 19)) & mask
        h = (h * 5 + 0xE6546B64) & mask
    tail = data[blocks * 4 :]
    k = 0
    if len(tail) >= 3:
        k ^= tail[2] << 16
    if len(tail) >= 2:
        k ^= tail[1] << 8
    if tail:
        k ^= tail[0]
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        k = (k * c2) & mask
        h ^= k
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & mask
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & mask
    h ^= h >> 16
    return h


def bucket(key: str) -> float:
    """Return the user's bucket in [0, 100] for ``key`` (salt + user id), as flagd does."""
    h = murmur3_32(key.encode("utf-8"))
    signed = h - (1 << 32) if h & 0x80000000 else h
    return min(abs(signed) / 0x7FFFFFFF * 100, 100.0)


def assign(salt: str, user_id: str, weights: Sequence[tuple[str, int]]) -> str:
    """Return the variant ``user_id`` gets under ``weights`` ((name, integer weight), in order)."""
    total = sum(w for _, w in weights)
    point = bucket(salt + user_id)
    end = 0.0
    for name, weight in weights:
        end += weight * 100 / total
        if point < end:
            return name
    return weights[-1][0]


def deployment_salt(service: str, deployment: str) -> str:
    """Return the per-deployment salt: readable, and different for every deployment."""
    digest = hashlib.sha256(f"afdp:{service}:{deployment}".encode()).hexdigest()[:16]
    return f"{digest}:"


def segment_weights(groups: Sequence[tuple[str, float]]) -> list[tuple[str, int]]:
    """Return integer weights (basis points) for groups given as (name, share 0..1)."""
    return [(name, round(share * WEIGHT_SCALE)) for name, share in groups]


def rollout_weights(
    groups: Sequence[tuple[str, float]], group: str, percentage: float
) -> list[tuple[str, int]]:
    """Weights after enabling ``group`` for ``percentage`` (0..1) of its users."""
    out: list[tuple[str, int]] = []
    for name, weight in segment_weights(groups):
        if name == group and percentage < 1:
            on = round(weight * percentage)
            out += [(name, on), (f"{name}_holdout", weight - on)]
        else:
            out.append((name, weight))
    return out


def flag_definition(
    salt: str, weights: Sequence[tuple[str, int]], enabled: Sequence[str], previous: Any = None
) -> dict[str, Any]:
    """Return one flagd flag: variants are the groups (``True`` for ``enabled`` ones)."""
    definition: dict[str, Any] = dict(previous) if isinstance(previous, Mapping) else {}
    definition.update(
        {
            "state": "ENABLED",
            "variants": {name: name in enabled for name, _ in weights},
            "defaultVariant": weights[0][0],
            "targeting": {
                "fractional": [
                    {"cat": [salt, {"var": "targetingKey"}]},
                    *[[name, weight] for name, weight in weights],
                ]
            },
        }
    )
    return definition


def read_flagd(path: Path) -> dict[str, Any]:
    """Return the flagd document at ``path`` (an empty one when there is no file).

    Raises:
        FlagError: the file is not a flagd flag document (never overwritten).
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {"$schema": FLAGD_SCHEMA, "flags": {}}
    except OSError as exc:
        raise FlagError(f"cannot read flag file {path}: {exc.strerror}") from None
    if len(raw) > MAX_FLAG_FILE:
        raise FlagError(f"flag file {path} is over 1 MiB; not a flagd flag file AFDP will rewrite")
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise FlagError(f"{path} is not JSON; refusing to overwrite a file that is not a flagd flag file") from None
    if not isinstance(document, dict) or not isinstance(document.get("flags"), dict):
        raise FlagError(f"{path} has no 'flags' object; refusing to overwrite a file that is not a flagd flag file")
    return document


def write_flagd(path: Path, flag: str, definition: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Set ``flag`` to ``definition`` in the flagd file at ``path``, atomically.

    Returns:
        (the flag before, or None; the flag after).

    Raises:
        FlagError: see :func:`read_flagd`; or the file could not be written.
    """
    if path.suffix != ".json":
        raise FlagError(f"flag file {path} must end in .json (a flagd flag file)")
    document = read_flagd(path)
    before = document["flags"].get(flag)
    document["flags"][flag] = dict(definition)
    data = (json.dumps(document, indent=2, sort_keys=False) + "\n").encode()
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise FlagError(f"cannot write flag file {path}: {exc.strerror or exc}") from None
    return before, dict(definition)


def evaluate(document: Mapping[str, Any], flag: str, user_id: str) -> tuple[str, Any] | None:
    """Evaluate ``flag`` for ``user_id`` as flagd does for the targeting AFDP writes
    (``fractional`` over ``cat(salt, targetingKey)``): return (variant, value), or None
    when the flag is missing or disabled. Used by the demo service and the tests."""
    definition = (document.get("flags") or {}).get(flag)
    if not isinstance(definition, Mapping) or definition.get("state") != "ENABLED":
        return None
    variants = definition.get("variants") or {}
    variant = definition.get("defaultVariant")
    rule = (definition.get("targeting") or {}).get("fractional")
    if isinstance(rule, list) and len(rule) >= 2:
        parts = (rule[0] or {}).get("cat") or []
        salt = "".join(p for p in parts if isinstance(p, str))
        weights = [(str(r[0]), int(r[1]) if len(r) > 1 else 1) for r in rule[1:]]
        variant = assign(salt, user_id, weights)
    if variant not in variants:
        return None
    return str(variant), variants[variant]
