"""JSON Schemas (draft 2020-12) from ``evidence-schema/``, loaded once and cached.

The schemas are the single source of truth for every document AFDP writes or reads.
In a wheel they are package data (``afdp/_data/evidence-schema``); in a source checkout
(editable install) they are read from the repository's ``evidence-schema/`` folder.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from afdp.errors import SchemaError

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # afdp/ (this file is afdp/evidence/schemas.py)


def data_dir(name: str) -> Path:
    """Return the folder of shipped data ``name`` (``evidence-schema`` or ``policies``).

    Raises:
        SchemaError: neither the wheel's package data nor the source tree has it.
    """
    for candidate in (_PACKAGE_DIR / "_data" / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise SchemaError(f"AFDP installation is incomplete: no {name}/ folder found")


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """Return the schema document ``evidence-schema/<name>.schema.json``."""
    path = data_dir("evidence-schema") / f"{name}.schema.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]
    except (OSError, ValueError) as exc:
        raise SchemaError(f"cannot load schema {name!r}: {exc}") from exc


@functools.cache
def validator(name: str) -> Any:
    """Return a compiled ``Draft202012Validator`` for schema ``name`` (cached)."""
    import jsonschema

    schema = load_schema(name)
    cls = jsonschema.Draft202012Validator
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


@functools.cache
def ecma_validator(name: str) -> Any:
    """A compiled jsonschema-rs validator for schema ``name`` that reads every pattern as
    ECMA-262, as JSON Schema defines them (formats not checked: the reference does that).

    Python's ``re``, which the reference validator uses, differs from ECMA-262 where it
    matters to a forensic schema: ``$`` also matches just before a final newline, so
    ``^[0-9a-f]{7,40}$`` takes ``"abcdef0\\n"``; ``\\s`` counts U+001C-U+001F and U+0085
    as spaces. :func:`iter_errors` therefore asks this validator too whenever the reference
    finds a document valid: a document is valid only when both say so.
    """
    import jsonschema_rs

    return jsonschema_rs.Draft202012Validator(load_schema(name), validate_formats=False)


@functools.cache
def fast_validator(name: str) -> Any:
    """The ECMA-262 validator (:func:`ecma_validator`) for schema ``name`` as a fast path, or None.

    Verification validates three documents per record; the Rust validator answers "valid"
    in a few microseconds where the Python one takes about half a millisecond. Its "valid"
    stands only for schemas without a ``format`` keyword, whose checks the two libraries
    implement differently (:func:`fast_accepts`); anything it rejects (or cannot take) is
    judged again, with its messages, by :func:`validator`.
    ``tests/test_schema_fast_path.py`` checks, over generated documents, that it never
    accepts what the reference rejects.
    """
    if '"format"' in json.dumps(load_schema(name)):
        return None
    return ecma_validator(name)


def fast_accepts(name: str, document: Any) -> bool:
    """True only when the Rust validator (:func:`fast_validator`) finds ``document`` valid
    and its "valid" is known to be the reference's; False means "ask the reference".

    The two regex engines read ``\\s`` differently for some control characters (Python
    counts U+001C-U+001F and U+0085 as spaces, jsonschema-rs's ECMAScript dialect does
    not), so for a schema whose patterns use ``\\s`` or ``\\S`` a document holding any
    control character other than tab, newline and carriage return always goes to the
    reference. ``tests/test_schema_fast_path.py`` and
    ``tests/test_workflow_schema_fast_path.py`` check over generated documents that this
    never accepts what the reference rejects.
    """
    fast = fast_validator(name)
    if fast is None or (_reads_spaces(name) and _has_control_character(document)):
        return False
    try:
        return bool(fast.is_valid(document))
    except (ValueError, TypeError, OverflowError):
        return False  # a schema or value the Rust side cannot take: the reference judges it


@functools.cache
def _reads_spaces(name: str) -> bool:
    # ``\s`` or ``\S`` in any pattern (JSON-escaped: two backslashes, then s or S)
    return re.search(r"\\\\[sS]", json.dumps(load_schema(name))) is not None


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _has_control_character(data: Any) -> bool:
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if _CONTROL.search(value):
                return True
        elif isinstance(value, Mapping):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


def iter_errors(name: str, document: Any) -> Iterator[tuple[str, str]]:
    """Yield ``(json_path, message)`` for every schema violation of ``document``.

    The verdict is the reference validator's (Python ``jsonschema``, formats checked) and,
    where the reference finds nothing, ECMA-262's reading of the patterns
    (:func:`ecma_validator`): valid only when both accept.
    """
    if fast_accepts(name, document):
        return
    errors = sorted(validator(name).iter_errors(document), key=lambda e: list(e.path))
    if errors:
        for error in errors:
            yield error.json_path, error.message
        return
    yield from _ecma_errors(name, document)


def _ecma_errors(name: str, document: Any) -> Iterator[tuple[str, str]]:
    for parts, message in ecma_problems(name, document):
        yield _json_path(parts), message


def ecma_problems(name: str, document: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """Every violation the ECMA-262 reading of schema ``name`` finds in ``document``, as
    ``(path parts, message)``; a document it cannot read at all is one violation at the root.
    """
    try:
        errors = list(ecma_validator(name).iter_errors(document))
    except (ValueError, TypeError, OverflowError) as exc:
        # A lone surrogate, a key that is not text: nothing the patterns could be read
        # over. A schema's "valid" is not given for what it could not check.
        return [((), f"cannot be checked against the schema's patterns: {' '.join(str(exc).split())}")]
    return [(tuple(error.instance_path), error.message) for error in errors]


def _json_path(parts: Sequence[str | int]) -> str:
    path = "$"
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            path += f".{part}"
        else:
            path += f"[{json.dumps(part)}]"
    return path


def validate(name: str, document: Any, *, what: str = "document") -> None:
    """Validate ``document`` against schema ``name``.

    Raises:
        SchemaError: with every violation, each as ``path: message``.
    """
    problems = [f"{path}: {message}" for path, message in iter_errors(name, document)]
    if problems:
        raise SchemaError(f"{what} does not match schema {name}: " + "; ".join(problems))
