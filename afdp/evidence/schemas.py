"""JSON Schemas (draft 2020-12) from ``evidence-schema/``, loaded once and cached.

The schemas are the single source of truth for every document AFDP writes or reads.
In a wheel they are package data (``afdp/_data/evidence-schema``); in a source checkout
(editable install) they are read from the repository's ``evidence-schema/`` folder.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
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


def iter_errors(name: str, document: Any) -> Iterator[tuple[str, str]]:
    """Yield ``(json_path, message)`` for every schema violation of ``document``."""
    for error in sorted(validator(name).iter_errors(document), key=lambda e: list(e.path)):
        yield error.json_path, error.message


def validate(name: str, document: Any, *, what: str = "document") -> None:
    """Validate ``document`` against schema ``name``.

    Raises:
        SchemaError: with every violation, each as ``path: message``.
    """
    problems = [f"{path}: {message}" for path, message in iter_errors(name, document)]
    if problems:
        raise SchemaError(f"{what} does not match schema {name}: " + "; ".join(problems))
