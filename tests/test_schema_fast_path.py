"""The Rust schema validator (jsonschema-rs) may only ever say "valid" where the reference
(Python jsonschema) says so: it is the verifier's fast path, and a document it accepts is
not looked at again (afdp/evidence/schemas.py::iter_errors).

Generated documents: real records' statements, predicates and envelopes, mutated the
way an attacker edits JSON (keys dropped, added, retyped; strings with newlines, Unicode
digits, huge numbers; values swapped between places).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from afdp.evidence import records as rec
from afdp.evidence import schemas

PREV = {"timestamp-0.tsr": "a" * 64}


def _documents() -> dict[str, Any]:
    draft = rec.RecordDraft(
        kind=rec.KIND_STEP, step="capture_impact", result={"p99_ms": 120.5, "ok": True, "n": 3},
        summary="p99 120.5 ms",
    )
    record = rec.build_record(draft, service="api", deployment="d-42", sequence=3, prev="b" * 64, prev_timestamps=PREV)
    envelope = json.loads(rec.envelope_json(b"{}", "k" * 64, b"\x01" * 64))
    return {
        "statement.v1": record.statement,
        "predicate-step.v1": record.statement["predicate"],
        "dsse-envelope.v1": envelope,
    }


DOCS = _documents()

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["a" * 64 + "\n", "\u0663" * 4, "2026-12-04T00:00:00Z\n", "A" * 64, "", "sha256", "afdp:api/d-42/000003-x"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, Any]:
    name = draw(st.sampled_from(sorted(DOCS)))
    doc = copy.deepcopy(DOCS[name])
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        if not path:
            continue
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        action = draw(st.sampled_from(["replace", "delete", "add", "copy"]))
        if action == "replace":
            parent[last] = draw(values)
        elif action == "delete" and isinstance(parent, dict):
            del parent[last]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(values)
        elif action == "copy":
            other = draw(st.sampled_from(paths))
            source = doc
            for step in other:
                source = source[step]
            parent[last] = copy.deepcopy(source)
    return name, doc


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_fast_path_never_accepts_what_the_reference_rejects(case: tuple[str, Any]) -> None:
    name, doc = case
    fast = schemas.fast_validator(name)
    assert fast is not None
    try:
        accepted = fast.is_valid(doc)
    except (ValueError, TypeError, OverflowError):
        accepted = False
    if accepted:
        assert schemas.validator(name).is_valid(doc), f"{name}: fast path accepted {doc!r}"


@pytest.mark.parametrize("name", sorted(DOCS))
def test_fast_path_is_not_vacuous(name: str) -> None:
    fast = schemas.fast_validator(name)
    assert fast is not None and fast.is_valid(DOCS[name])
    broken = copy.deepcopy(DOCS[name])
    broken.pop(next(iter(broken)))
    assert not fast.is_valid(broken)
    # ... and the errors of a rejected document are the reference's, with their paths.
    assert list(schemas.iter_errors(name, broken)) == [
        (e.json_path, e.message) for e in sorted(schemas.validator(name).iter_errors(broken), key=lambda e: list(e.path))
    ]


def test_schemas_with_formats_have_no_fast_path() -> None:
    assert schemas.fast_validator("training-record.v1") is None
