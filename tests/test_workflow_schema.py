"""The JSON Schemas and the catalog agree; validation never crashes on any document (hypothesis)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from afdp.workflow import catalog
from afdp.workflow.catalog import STEP_TYPES, StepKind
from afdp.workflow.compiler import compile_document
from afdp.workflow.findings import Finding, WorkflowInvalid
from afdp.workflow.loader import Document, parse
from afdp.workflow.plan import plan_workflow
from afdp.workflow.policy import load_policy
from afdp.workflow.starter import example_files

REPO = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((REPO / "evidence-schema" / "workflow.v1.schema.json").read_text("utf-8"))
POLICY_SCHEMA = json.loads(
    (REPO / "evidence-schema" / "admission-policy.v1.schema.json").read_text("utf-8")
)
DEFS = SCHEMA["$defs"]
UNSUPPORTED = set(DEFS["unsupported_steps"])
PLATFORM_POLICY = load_policy(REPO / "policies" / "admission.platform-example.yaml")


@pytest.mark.parametrize("schema", [SCHEMA, POLICY_SCHEMA], ids=["workflow", "admission-policy"])
def test_schemas_are_valid_draft_2020_12(schema: dict[str, Any]) -> None:
    # afdp.workflow.structure skips this (slow) check at run time; it is made here.
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(schema)


def test_schema_and_catalog_agree_on_step_types() -> None:
    known = set(STEP_TYPES)
    explicit = set(DEFS["explicit_step"]["properties"]["type"]["enum"])
    short = set(DEFS["short_step"]["properties"]) - {"name", "when", "unless", "description"}
    params = {name.removeprefix("params_") for name in DEFS if name.startswith("params_")}
    assert explicit == known
    assert short - UNSUPPORTED == known
    assert params == known
    # A bare step (no parameters) is allowed exactly when nothing is required.
    bare = set(DEFS["bare_step"]["enum"])
    assert bare == {name for name, spec in STEP_TYPES.items() if not spec.required}
    # Unsupported step names are never real step types.
    assert not UNSUPPORTED & known


def test_schema_and_catalog_agree_on_the_rest() -> None:
    assert SCHEMA["properties"]["triggers"]["items"]["enum"] == list(catalog.TRIGGERS)
    assert SCHEMA["properties"]["outputs"]["items"]["enum"] == list(catalog.OUTPUTS)
    actions = SCHEMA["properties"]["actions"]["propertyNames"]["enum"]
    assert actions == list(catalog.ACTIONS) + list(catalog.STAGE_ACTIONS)
    decision_actions = set(DEFS["decision"]["properties"]["action"]["enum"])
    assert decision_actions == set(catalog.ACTIONS) | set(catalog.ACTION_ALIASES)
    policy_defs = POLICY_SCHEMA["$defs"]
    assert set(policy_defs["step_type"]["enum"]) == set(STEP_TYPES)
    assert set(policy_defs["requirement"]["properties"]["kind"]["enum"]) == {
        k.value for k in StepKind
    }


def test_every_step_kind_has_a_step_type() -> None:
    # (the database and correlate kinds are reached from how a step or section is written)
    assert {spec.kind for spec in STEP_TYPES.values()} == set(StepKind) - catalog.FORM_KINDS


def test_shipped_policies_are_valid() -> None:
    for path in sorted((REPO / "policies").glob("admission*.yaml")):
        assert load_policy(path).rules.rules, path


# --- property tests: validation accepts or reports, never crashes ----------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [
            "5_minutes",
            "-5_minutes",
            "forever",
            "0s",
            "10ms",
            "0.5%",
            "$1000_per_hour",
            "${deployment.service}",
            "${env.X}",
            "${workflow.A}",
            "${steps.x.y}",
            "${",
            "error_rate",
            "same_as_baseline",
            "error_rate.increase > 1%",
            "__import__('os')",
            "http://localhost:9090",
            "rollback",
            "mark_deployment_time",
            "capture_baseline",
        ]
    ),
    st.text(max_size=20),
)
KEYS = st.one_of(
    st.sampled_from(
        sorted(SCHEMA["properties"])
        + sorted(STEP_TYPES)
        + ["metrics", "duration", "thresholds", "condition", "action", "url", "type", "query"]
    ),
    st.text(min_size=1, max_size=12),
)
JSONISH = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=25,
)


def check_document(data: Any) -> None:
    """Compile ``data``; it must either compile or raise WorkflowInvalid with located findings."""
    document = Document("prop.yaml", data, {}, {})
    try:
        workflow = compile_document(document)
    except WorkflowInvalid as exc:
        assert exc.findings
        assert all(isinstance(f, Finding) and f.message and f.line >= 1 for f in exc.findings)
        return
    assert workflow.steps and len(workflow.digest) == 64
    # A compiled workflow can always be planned and checked against a policy.
    plan = plan_workflow(workflow, deployment={"service": "api"}).to_json()
    json.dumps(plan)
    PLATFORM_POLICY.violations(workflow, document)


EXAMPLE_DATA = [parse(f.read_text("utf-8"), name=f.name).data for f in example_files()]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            out.extend(_paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out.extend(_paths(child, (*prefix, index)))
    return out


def _replace(data: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    data = copy.deepcopy(data)
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = new
    return data


def _delete(data: Any, path: tuple[Any, ...]) -> Any:
    if not path:
        return data
    data = copy.deepcopy(data)
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    del parent[path[-1]]
    return data


PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)


@PROPERTY_SETTINGS
@given(JSONISH)
def test_random_documents_never_crash(data: Any) -> None:
    check_document(data)


@PROPERTY_SETTINGS
@given(
    st.dictionaries(KEYS, JSONISH, max_size=6).map(
        lambda extra: {"name": "random", "workflow": [{"wait": "1m"}], **extra}
    )
)
def test_random_top_level_sections_never_crash(data: Any) -> None:
    check_document(data)


@PROPERTY_SETTINGS
@given(st.data())
def test_mutated_examples_never_crash(data: st.DataObject) -> None:
    document = copy.deepcopy(data.draw(st.sampled_from(EXAMPLE_DATA)))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(document)
        path = data.draw(st.sampled_from(paths))
        if data.draw(st.booleans()):
            document = _replace(document, path, data.draw(JSONISH))
        else:
            document = _delete(document, path)
    check_document(document)


YAML_PIECES = st.sampled_from(
    [*"abc:-[]{}&*!|>'\"#\n\t %@`,?.019", "name: x\n", "workflow:\n", "  - wait: 1m\n"]
    + ["&a ", "*a", "<<: ", "!!str ", "!!python/object ", "---\n", "\ufeff", "\x00", "${"]
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.text(max_size=300) | st.lists(YAML_PIECES, max_size=60).map("".join))
def test_random_text_never_crashes_the_loader(text: str) -> None:
    try:
        document = parse(text, name="t.yaml")
    except WorkflowInvalid as exc:
        assert exc.findings
        return
    check_document(document.data)


@pytest.mark.parametrize("example", example_files(), ids=lambda f: f.stem)
def test_examples_survive_yaml_round_trip_of_their_data(example: Path) -> None:
    # The parsed data is plain JSON: the schema, RFC 8785 and the digest can use it.
    data = parse(example.read_text("utf-8"), name=example.name).data
    assert json.loads(json.dumps(data)) == data
