"""JSON Schema patterns are ECMA-262 regular expressions; Python's ``re`` reads two things
differently: ``$`` also matches just before a final newline, and ``\\s`` counts U+001C to
U+001F as spaces. A schema "valid" is given only when the reference validator and the
ECMA-262 reading (jsonschema-rs) both accept (afdp/evidence/schemas.py::iter_errors).
"""

from __future__ import annotations

import copy
import json
import re

import pytest

from afdp.evidence import records as rec
from afdp.evidence import schemas


def _statement() -> dict:
    draft = rec.RecordDraft(kind=rec.KIND_STEP, step="capture_impact", result={"ok": True})
    record = rec.build_record(draft, service="api", deployment="d-42", sequence=3, prev="b" * 64,
                              prev_timestamps={"timestamp-0.tsr": "a" * 64})
    return copy.deepcopy(record.statement)


def test_python_re_alone_would_take_a_trailing_newline():
    # the premise: what the reference's own regex engine does with the schema's pattern
    assert re.search("^[0-9a-f]{64}$", "b" * 64 + "\n")


def test_a_digest_with_a_trailing_newline_is_not_schema_valid():
    statement = _statement()
    assert not list(schemas.iter_errors("statement.v1", statement))
    predicate = statement["predicate"]
    assert not list(schemas.iter_errors("predicate-step.v1", predicate))
    predicate["prev"]["sha256"] += "\n"
    errors = list(schemas.iter_errors("predicate-step.v1", predicate))
    assert errors and any("does not match" in message for _, message in errors), errors
    assert ("$.prev.sha256" in [path for path, _ in errors]), errors


def test_a_step_name_with_a_trailing_newline_is_not_schema_valid_in_the_predicate_schema():
    predicate = _statement()["predicate"]
    predicate["step"]["name"] += "\n"
    assert list(schemas.iter_errors("predicate-step.v1", predicate))
    with pytest.raises(Exception, match="does not match schema"):
        schemas.validate("predicate-step.v1", predicate, what="predicate")


def test_a_schema_with_formats_is_read_as_ecma_too():
    # deployment-event.v1 has format keywords, so it has no fast path; the reference
    # alone took "abcdef0\n" as a commit
    assert schemas.fast_validator("deployment-event.v1") is None
    event = {"event_id": "a", "service": "api", "commit": "abcdef0", "deployed_at": "2026-12-04T07:00:00Z"}
    assert not list(schemas.iter_errors("deployment-event.v1", event))
    event["commit"] = "abcdef0\n"
    assert list(schemas.iter_errors("deployment-event.v1", event))


def test_a_workflow_name_with_a_trailing_newline_is_refused():
    workflow = {"name": "deploy\n", "workflow": [{"wait": "1s"}]}
    messages = [message for _, message in schemas.iter_errors("workflow.v1", workflow)]
    assert any("does not match" in message for message in messages), messages
    workflow["name"] = "deploy"
    assert not [m for _, m in schemas.iter_errors("workflow.v1", workflow) if "does not match" in m]


def test_what_the_ecma_reading_cannot_take_is_not_called_valid(monkeypatch):
    import jsonschema_rs

    # A pattern over text with a lone surrogate (json.loads gives one for "\\ud800"):
    # Python's re takes it, the ECMA-262 reading cannot read it: not "valid".
    schema = {"type": "object", "properties": {"c": {"type": "string", "pattern": "^.+$"}}}
    monkeypatch.setattr(schemas, "ecma_validator", lambda name: jsonschema_rs.Draft202012Validator(schema))
    assert list(schemas._ecma_errors("any", {"c": "text"})) == []
    assert list(schemas._ecma_errors("any", {"c": "text\n"}))  # "." is not a line terminator in ECMA-262
    errors = list(schemas._ecma_errors("any", json.loads('{"c": "\\ud800"}')))
    assert errors and "cannot be checked" in errors[0][1], errors


def test_error_paths_name_the_field():
    statement = _statement()
    statement["subject"][0]["digest"]["sha256"] = "c" * 64 + "\n"
    paths = [path for path, _ in schemas.iter_errors("statement.v1", statement)]
    assert "$.subject[0].digest.sha256" in paths, paths


def test_afdp_validate_refuses_a_block_scalar_name_with_its_line_break(tmp_path):
    from afdp.workflow.loader import parse
    from afdp.workflow.structure import check

    # ``name: |`` keeps the line break: "deploy\n", which Python's re took for ^...$
    document = parse("name: |\n  deploy\nworkflow:\n  - wait: 1s\n", name="w.yaml")
    findings = check(document, "workflow.v1")
    assert findings and findings[0].line == 1 and "does not match" in findings[0].message, findings
    assert not check(parse("name: deploy\nworkflow:\n  - wait: 1s\n", name="w.yaml"), "workflow.v1")
