"""The structural check of a workflow or admission policy (afdp/workflow/structure.py) asks
the Rust validator (jsonschema-rs) first, so a valid file never imports the Python one.

It may only ever say "valid" where the reference (Python jsonschema) says so: a document
it accepts is not looked at again. Generated documents: the shipped example workflows and
the default admission policy, mutated the way a user or an attacker edits YAML (keys
dropped, added, retyped; strings with newlines, control characters, Unicode digits and
marks, values swapped between places).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from afdp.evidence import schemas
from afdp.workflow import structure
from afdp.workflow.loader import Document, load

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "afdp" / "workflow" / "examples").glob("*.yaml"))
SOURCES: list[tuple[str, Any]] = [("workflow.v1", load(path).data) for path in EXAMPLES]
SOURCES.append(("admission-policy.v1", load(ROOT / "policies" / "admission.yaml").data))
SOURCES.append(("admission-policy.v1", load(ROOT / "policies" / "admission.platform-example.yaml").data))

TRICKY = [
    "5m\n", "10ms", "0.5%", "\u0663\u0664s", "a\u0301", "https://a\x1cb/x", "https://a\x85b", "https://a\ufeffb",
    "/bin/true\n", "a/../b", "a\r/../b", "\u2028", "p99", "error_rate.increase > 1%", "", "$1000_per_hour", "x" * 70,
    "prometheus", "capture", "baseline", "impact", "http://h:9090/x", "ops@example.com", "*.example.com", "[::1]",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(TRICKY),
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
    name, source = draw(st.sampled_from(SOURCES))
    doc = copy.deepcopy(source)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        if not path:
            continue
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        action = draw(st.sampled_from(["replace", "delete", "add", "copy", "suffix"]))
        if action == "replace":
            parent[last] = draw(values)
        elif action == "delete" and isinstance(parent, dict):
            del parent[last]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=8) | st.sampled_from(TRICKY))] = draw(values)
        elif action == "copy":
            other = draw(st.sampled_from(paths))
            source_value = doc
            for step in other:
                source_value = source_value[step]
            parent[last] = copy.deepcopy(source_value)
        elif action == "suffix" and isinstance(parent[last], str):
            parent[last] += draw(st.sampled_from(["\n", "\x1c", "\x1f", "\x85", "\u0301", "\u0663", " ", "/..", "\ufeff"]))
    return name, doc


def _doc(data: Any) -> Document:
    return Document("generated.yaml", data, {}, {})


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_fast_path_never_accepts_what_the_reference_rejects(case: tuple[str, Any]) -> None:
    name, doc = case
    if schemas.fast_accepts(name, doc):
        assert schemas.validator(name).is_valid(doc), f"{name}: fast path accepted {doc!r}"
        assert structure.check(_doc(doc), name) == []


@pytest.mark.parametrize(("name", "data"), SOURCES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(SOURCES)])
def test_fast_path_is_not_vacuous_and_rejections_get_the_references_findings(name: str, data: Any) -> None:
    assert schemas.fast_accepts(name, data)
    assert structure.check(_doc(data), name) == []
    broken = copy.deepcopy(data)
    broken["version"] = ["not", "a", "version"]
    assert not schemas.fast_accepts(name, broken)
    findings = structure.check(_doc(broken), name)
    assert findings and all(f.path.startswith("version") for f in findings), findings


@pytest.mark.parametrize("character", ["\x1c", "\x1f", "\x85"])
def test_control_characters_go_to_the_reference(character: str) -> None:
    # The Rust validator's ECMAScript \s does not include these; Python's does, so the
    # reference rejects a URL holding one where the Rust validator alone would accept it.
    name, policy = SOURCES[-2]
    doc = copy.deepcopy(policy)
    doc["allowed_notification_destinations"] = [f"https://a{character}b/x"]
    assert schemas.fast_validator(name).is_valid(doc)  # the divergence the guard is for
    assert not schemas.fast_accepts(name, doc)
    findings = structure.check(_doc(doc), name)
    assert [f.path for f in findings] == ["allowed_notification_destinations[0]"], findings
