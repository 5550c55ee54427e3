"""Structural validation against a JSON Schema, with messages a workflow author can act on.

The schema in ``evidence-schema/`` is the single source of truth for structure; this
module runs it (through :mod:`afdp.evidence.schemas`) and turns each JSON Schema error into a
:class:`~afdp.workflow.findings.Finding` located in the YAML file, saying what was
expected. The schema annotates itself for that purpose:

- ``x-afdp-kind``: the value's text is parsed further (``duration``, ``threshold``,
  ``percent``, ``condition``, ``unit``); the parser gives the message;
- ``x-afdp-expected``: words for "expected ..." in type and pattern errors;
- ``x-afdp-unsupported``: a key that is part of the language but not supported yet;
- ``x-afdp-message``: a fixed message for a shape that is always wrong.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

from afdp.workflow.findings import Finding
from afdp.workflow.loader import Document
from afdp.workflow.scope import suggest

_JSON_TYPES = {
    "object": "a mapping",
    "array": "a list",
    "string": "text",
    "number": "a number",
    "integer": "a whole number",
    "boolean": "true or false",
    "null": "nothing (null)",
}


def describe(value: Any) -> str:
    """Return the kind of a YAML value in words ("a mapping", "text 'x'", ...)."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    text = str(value)
    return f"text {text[:60] + '...' if len(text) > 60 else text!r}"


def check(document: Document, schema_name: str) -> list[Finding]:
    """Validate ``document.data`` against ``evidence-schema/<schema_name>.schema.json``.

    Returns:
        Every structural problem as a located finding (empty when valid).

    Raises:
        SchemaError: the schema itself cannot be loaded (a broken installation).
    """
    from afdp.evidence.schemas import fast_accepts, load_schema

    # jsonschema-rs first (only ever trusted to say "valid"): a valid file never imports
    # the Python validator, about a fifth of ``afdp validate``'s start-up
    if fast_accepts(schema_name, document.data):
        return []
    root = load_schema(schema_name)
    findings: list[Finding] = []
    for error in _validator(schema_name).iter_errors(document.data):
        findings.extend(_translate(error, document, root))
    if not findings:
        # Python's re reads a pattern's ``$`` and ``\s`` otherwise than ECMA-262, the dialect
        # of JSON Schema (``name: "deploy\n"`` matched ``^...$``): what the reference took is
        # read again as ECMA-262 (afdp.evidence.schemas.iter_errors does the same).
        from afdp.evidence.schemas import ecma_problems

        for path, message in ecma_problems(schema_name, document.data):
            findings.append(document.finding(path, message))
    return findings


@functools.cache
def _validator(schema_name: str) -> Any:
    # Unlike afdp.evidence.schemas.validator, the schema is not checked against the metaschema
    # here: that costs more than 100 ms, on every `afdp validate`, for a file that only
    # changes with AFDP itself. tests/test_workflow_schema.py checks it instead.
    import jsonschema

    from afdp.evidence.schemas import load_schema

    return jsonschema.Draft202012Validator(load_schema(schema_name))


def _translate(error: Any, document: Document, root: Mapping[str, Any]) -> Iterable[Finding]:
    path = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    keyword = error.validator
    value = error.instance
    kind = schema.get("x-afdp-kind")

    if "propertyNames" in error.schema_path and isinstance(value, str):
        # jsonschema checks a mapping's keys as instances at the mapping's own path.
        expected = schema.get("x-afdp-expected", "a valid name")
        yield document.finding(
            (*path, value), f"invalid name {value!r}: expected {expected}", prefer_key=True
        )
        return

    if keyword == "not":
        key = path[-1] if path else ""
        if "x-afdp-unsupported" in schema:
            yield document.finding(
                path,
                f"{key!r} is not supported yet: {schema['x-afdp-unsupported']}",
                prefer_key=True,
            )
        else:
            yield document.finding(
                path,
                schema.get("x-afdp-message", "this value is not allowed here"),
                prefer_key=True,
            )
        return

    if kind in ("duration", "threshold", "percent", "unit") and keyword in (
        "type",
        "pattern",
        "minimum",
    ):
        yield document.finding(path, _value_message(kind, value))
        return
    if kind == "condition" and keyword == "type":
        yield document.finding(
            path,
            f'expected a condition (text such as "error_rate.increase > 0.5%"), got {describe(value)}',
        )
        return

    if keyword == "additionalProperties":
        allowed = list(schema.get("properties", {}))
        unsupported = _unsupported_names(schema, root)
        candidates = [name for name in allowed if name not in unsupported]
        for key in _extra_keys(value, schema):
            if kind == "step-keys":
                message = f"unknown step type {key!r}{suggest(key, candidates) or ''}"
                if not suggest(key, candidates):
                    message += "; see 'Step types' in docs/workflows.md"
            else:
                hint = suggest(key, candidates) or f"; expected one of: {_listing(candidates)}"
                message = f"unknown key {key!r}{hint}"
            yield document.finding((*path, key), message, prefer_key=True)
        return

    if keyword == "required":
        present = value if isinstance(value, dict) else {}
        for key in error.validator_value:
            if key not in present:
                yield document.finding(path, f"missing required key {key!r}", prefer_key=True)
        return

    if keyword == "enum":
        yield document.finding(path, _enum_message(value, list(error.validator_value), kind, root))
        return

    if keyword == "const":
        yield document.finding(path, f"expected {error.validator_value!r}, got {describe(value)}")
        return

    if keyword == "type":
        expected = schema.get("x-afdp-expected") or _types(error.validator_value)
        yield document.finding(
            path,
            f"expected {expected}, got {describe(value)}",
            prefer_key=isinstance(value, (dict, list)),
        )
        return

    if keyword == "pattern":
        expected = schema.get("x-afdp-expected", f"text matching {error.validator_value}")
        yield document.finding(path, f"{describe(value)} is not valid; expected {expected}")
        return

    if keyword in ("anyOf", "oneOf", "maxProperties") and schema.get("x-afdp-message"):
        yield document.finding(path, schema["x-afdp-message"], prefer_key=True)
        return

    yield document.finding(
        path, _generic(keyword, error, value), prefer_key=isinstance(value, (dict, list))
    )


def _value_message(kind: str, value: Any) -> str:
    from afdp.workflow.units import UnitError, parse_duration, parse_quantity, parse_unit

    try:
        if kind == "duration":
            parse_duration(value)
        elif kind == "percent":
            if not (isinstance(value, str) and value.strip().endswith("%")):
                return f"expected a percentage such as 50% or 0.5%, got {describe(value)}"
            parse_quantity(value, allow_negative=False)
        elif kind == "unit":
            parse_unit(str(value))
        else:
            parse_quantity(value, allow_negative=False)
    except UnitError as exc:
        return str(exc)
    expected = {
        "duration": "a duration such as 30s, 2m or 5_minutes",
        "percent": "a percentage such as 50%",
        "unit": "a unit such as ms, s, %, $/hour",
        "threshold": "a threshold such as 10ms, 0.5%, 2x or $1000_per_hour",
    }[kind]
    return f"expected {expected}, got {describe(value)}"


def _enum_message(value: Any, allowed: list[Any], kind: str | None, root: Mapping[str, Any]) -> str:
    from afdp.workflow.catalog import STEP_TYPES

    if kind in ("bare-step", "step-type") and isinstance(value, str):
        reason = _unsupported_step(value, root)
        if reason:
            return f"step type {value!r} is not supported yet: {reason}"
        known = STEP_TYPES.get(value)
        if known is not None and kind == "bare-step":
            needs = ", ".join(known.required)
            shorthand = f" (for example '- {value}: ...')" if known.scalar else ""
            return f"step type {value!r} needs parameters: {needs}{shorthand}"
        hint = suggest(value, list(STEP_TYPES)) or "; see 'Step types' in docs/workflows.md"
        return f"unknown step type {value!r}{hint}"
    shown = ", ".join(str(a) for a in allowed[:15]) + (", ..." if len(allowed) > 15 else "")
    hint = suggest(value, [str(a) for a in allowed]) if isinstance(value, str) else ""
    return f"{describe(value)} is not allowed; expected one of: {shown}{hint}"


def _unsupported_step(name: str, root: Mapping[str, Any]) -> str | None:
    entry = root.get("$defs", {}).get("unsupported_steps", {}).get(name)
    return entry.get("x-afdp-unsupported") if isinstance(entry, Mapping) else None


def _unsupported_names(schema: Mapping[str, Any], root: Mapping[str, Any]) -> set[str]:
    names: set[str] = set()
    unsupported_steps = root.get("$defs", {}).get("unsupported_steps", {})
    for name, sub in schema.get("properties", {}).items():
        if not isinstance(sub, Mapping):
            continue
        if (
            "x-afdp-unsupported" in sub
            or sub.get("$ref", "").startswith("#/$defs/unsupported_steps/")
            or name in unsupported_steps
        ):
            names.add(name)
    return names


def _extra_keys(value: Any, schema: Mapping[str, Any]) -> list[str]:
    if not isinstance(value, dict):
        return []
    allowed = schema.get("properties", {})
    return [key for key in value if key not in allowed]


def _listing(names: list[str]) -> str:
    return ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")


def _types(types: Any) -> str:
    if isinstance(types, str):
        return _JSON_TYPES.get(types, types)
    return " or ".join(_JSON_TYPES.get(t, t) for t in types)


def _generic(keyword: str, error: Any, value: Any) -> str:
    limit = error.validator_value
    if keyword == "minItems":
        return f"expected at least {limit} item{'s' if limit != 1 else ''}, got {len(value)}"
    if keyword == "maxItems":
        return f"expected at most {limit} items, got {len(value)}"
    if keyword == "minProperties":
        return (
            "must not be empty"
            if limit == 1
            else f"expected at least {limit} entries, got {len(value)}"
        )
    if keyword == "maxProperties":
        return f"expected at most {limit} entries, got {len(value)}"
    if keyword == "minLength":
        return "must not be empty"
    if keyword == "maxLength":
        return f"text is longer than {limit} characters"
    if keyword == "uniqueItems":
        return "items must not repeat"
    if keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        word = {
            "minimum": "at least",
            "maximum": "at most",
            "exclusiveMinimum": "more than",
            "exclusiveMaximum": "less than",
        }[keyword]
        return f"expected a number {word} {limit}, got {value}"
    return str(error.message)
