"""Deeply nested conditions: one located finding and exit 1, never a RecursionError.

`when: "((((...(true)...))))"`, `not not ... true`, `-(-(...))` and long arithmetic
chains (`1 + 1 + ... + 1`, which parse into a tree as deep as the chain is long) used to
crash `afdp validate` (or evaluation) with a RecursionError. The parser refuses anything
nested more than 64 levels deep (the YAML loader's limit), counting both its own
recursion and the height of the tree it builds, so nothing downstream recurses further.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from conftest import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from afdp.workflow.expressions import MAX_NESTING, ExpressionError, parse_expression
from afdp.workflow.loader import MAX_DEPTH

LOCATED = re.compile(r"^(?P<file>[^\s:]+):(?P<line>\d+):(?P<column>\d+): ")
NESTED = "nested more than 64 levels deep"

BASE = """\
name: nesting
workflow:
  - capture_baseline: [error_rate]
  - mark_deployment_time
  - capture_impact: {duration: 1m}
  - analyze_differences
  - wait: 1m
    when: CONDITION
"""


def workflow(condition: str) -> str:
    # a JSON string is a YAML double-quoted scalar: any condition text survives intact
    return BASE.replace("CONDITION", json.dumps(condition, ensure_ascii=False))


def validate(tmp_path: Path, condition: str):
    path = tmp_path / "w.yaml"
    path.write_text(workflow(condition), encoding="utf-8")
    result = run_cli("validate", str(path))  # asserts no "Traceback" on stderr
    findings = [
        line for line in result.out.splitlines()
        if LOCATED.match(line) and not re.search(r": (note|warning): ", line)
    ]
    return result, findings


def chain(op: str, n: int) -> str:
    """``1+1+...+1 > 0`` (n terms); words (and, or) get spaces."""
    return (f" {op} " if op.isalpha() else op).join(["1"] * n) + " > 0"


DEEP = {
    "parens-2000": "(" * 2000 + "true" + ")" * 2000,
    "not-1000": "not " * 1000 + "true",
    "not-parens-500": "not (" * 500 + "true" + ")" * 500,
    "minus-parens-1000": "-(" * 1000 + "1" + ")" * 1000 + " > 0",
    "minus-3000": "-" * 3000 + "1 > 0",
    "minus-ref-100": "-" * 100 + "error_rate.increase > 0ms",
    "sum-1500": chain("+", 1500),
    "difference-1500": chain("-", 1500),
    "product-1500": chain("*", 1500),
    "quotient-1500": chain("/", 1500),
    "sum-of-products": "+".join(["1*1"] * 600) + " > 0",
    "nested-and": "(true and " * 300 + "true" + ")" * 300,
    "brackets-in-parens": "([" * 300 + "1" + "])" * 300 + " == 1",
}


def test_the_limit_is_the_yaml_loaders():
    assert MAX_NESTING == MAX_DEPTH == 64


@pytest.mark.parametrize("condition", list(DEEP.values()), ids=list(DEEP))
def test_deep_conditions_are_one_located_finding(tmp_path, condition):
    assert len(condition) <= 4096  # the length limit is not what refuses them
    result, findings = validate(tmp_path, condition)
    assert result.code == 1, (result.out, result.err)
    assert len(findings) == 1, result.out
    assert NESTED in findings[0], findings[0]
    match = LOCATED.match(findings[0])
    assert match and int(match["line"]) == 8 and int(match["column"]) >= 1, findings[0]
    assert "Traceback" not in result.out + result.err and "RecursionError" not in result.out + result.err


def test_five_thousand_parentheses_are_refused_at_the_condition(tmp_path):
    """Longer than the 4096-character limit: the schema and the parser both say so (two
    findings, both at the condition); no recursion at all."""
    result, findings = validate(tmp_path, "(" * 5000 + "true" + ")" * 5000)
    assert result.code == 1 and findings, result.out
    assert all(LOCATED.match(f)["line"] == "8" and "longer than 4096 characters" in f for f in findings)  # type: ignore[index]
    assert "Traceback" not in result.out + result.err


@pytest.mark.parametrize("condition", list(DEEP.values()), ids=list(DEEP))
def test_the_parser_raises_its_own_error_even_with_little_stack(condition):
    """Refused by the nesting limit, well before Python's recursion limit."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(700)  # the parser needs about 520 frames at the limit
    try:
        with pytest.raises(ExpressionError, match=NESTED) as caught:
            parse_expression(condition)
    finally:
        sys.setrecursionlimit(old)
    assert not isinstance(caught.value.__context__, RecursionError)  # not the safety net


@pytest.mark.parametrize(
    "condition",
    [
        "(" * 63 + "true" + ")" * 63,
        "not " * 62 + "true",
        chain("+", 60),
        " and ".join(["error_rate.increase > 1ms"] * 120),  # long flat chains are not deep
        " or ".join(["true"] * 500),
        "[" * 60 + "1" + "]" * 60 + " == [1]",
    ],
    ids=["parens-63", "not-62", "sum-60", "and-120", "or-500", "brackets-60"],
)
def test_conditions_up_to_the_limit_are_accepted_and_evaluate(condition):
    expression = parse_expression(condition)
    expression.check(lambda ref: "time" if ref.parts[-1] == "increase" else "any")
    values = {"error_rate": {"increase": 0.0}}
    try:
        expression.evaluate(values)
    except Exception as exc:  # noqa: BLE001 - any evaluation error but a recursion one
        assert not isinstance(exc, RecursionError)


def test_accepted_trees_are_no_higher_than_the_limit():
    """Evaluation and type checking recurse once per tree level: bound the tree height."""
    from afdp.workflow.expressions import Binary, Compare, ListExpr, Logical, Unary

    def height(node) -> int:
        children = {
            Unary: lambda n: [n.operand],
            Binary: lambda n: [n.left, n.right],
            Compare: lambda n: [n.left, n.right],
            Logical: lambda n: list(n.operands),
            ListExpr: lambda n: list(n.items),
        }.get(type(node), lambda n: [])(node)
        return 1 + max((height(c) for c in children), default=0)

    for n in range(1, 200):
        for condition in (chain("+", n), "-" * n + "error_rate.increase > 0ms", "not " * n + "true"):
            try:
                expression = parse_expression(condition)
            except ExpressionError as exc:
                assert NESTED in str(exc)
                continue
            assert height(expression.tree) <= MAX_NESTING


# -- property: any condition from the grammar's tokens --------------------------------------
TOKENS = [
    "(", ")", "(", ")", "[", "]", ",", "not ", "not ", " and ", " or ", " in ", " not in ",
    " == ", " != ", " < ", " <= ", " > ", " >= ", "-", "-", "+", "*", "/", "true", "false",
    "null", "0", "1", "0.5", "1_000", "10ms", "5m", "2x", "0.5%", "$1000_per_hour", "3MB",
    "error_rate.increase", "error_rate.change", "latency_p99.mean", "deployment.environment",
    "steps.capture.finished_at", "${workflow.FLAG}", "${x", "'prod'", '"a b"', "'\\''", "'",
    "é", "µs", "🙂", "١", "Ⅻ", " ", "  ", "\t", ".", "..", "&&", "!", "=", "%", "?", "{", "}",
]

deep = st.integers(min_value=1, max_value=1200)
conditions = st.one_of(
    st.lists(st.sampled_from(TOKENS), max_size=80).map("".join),
    st.tuples(st.lists(st.sampled_from(["(", "not ", "-", "[", "-("]), max_size=1), deep).map(
        lambda t: (t[0][0] if t[0] else "(") * t[1] + "1"
    ),
    st.tuples(st.sampled_from(["+", "-", "*", "/", "and", "or"]), deep).map(lambda t: chain(t[0], t[1])),
    st.tuples(st.lists(st.sampled_from(TOKENS), max_size=10).map("".join), deep).map(
        lambda t: "(" * t[1] + t[0] + ")" * t[1]
    ),
)


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(conditions)
def test_any_condition_parses_or_raises_expression_error(text):
    try:
        expression = parse_expression(text)
    except ExpressionError:
        return  # never RecursionError or anything else
    expression.check(lambda ref: "any")
    try:
        expression.evaluate({})
    except ValueError:  # EvaluationError: unknown names, units; never RecursionError
        pass


@settings(
    max_examples=200, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(conditions)
def test_validate_of_any_condition_exits_0_or_1_without_a_traceback(tmp_path_factory, text):
    result, findings = validate(tmp_path_factory.mktemp("w"), text)
    assert result.code in (0, 1), (result.code, result.out, result.err)
    assert "Traceback" not in result.out + result.err
    if result.code == 1:
        assert findings, result.out
