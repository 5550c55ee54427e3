"""Static types: a condition's type inferred from the types of the names it references, so a comparison of a duration with a percentage is reported when the workflow is validated, with a hint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from afdp.workflow.expressions.nodes import (
    ANY,
    BOOL,
    LIST,
    NULL,
    STRING,
    Binary,
    Compare,
    ListExpr,
    Literal,
    Logical,
    Node,
    Ref,
    Unary,
)
from afdp.workflow.units import Quantity


def type_name(kind: str) -> str:
    return {
        BOOL: "true/false value",
        STRING: "text",
        NULL: "null",
        LIST: "list",
        "number": "plain number",
    }.get(kind, f"{kind} quantity")


def _literal_type(value: Any) -> str:
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, Quantity):
        return value.dimension
    if isinstance(value, str):
        return STRING
    return NULL if value is None else ANY


def infer(node: Node, type_of: Callable[[Ref], str], problems: list[str]) -> str:
    if isinstance(node, Literal):
        return _literal_type(node.value)
    if isinstance(node, Ref):
        return type_of(node)
    if isinstance(node, ListExpr):
        for item in node.items:
            infer(item, type_of, problems)
        return LIST
    if isinstance(node, Logical):
        for operand in node.operands:
            kind = infer(operand, type_of, problems)
            if kind not in (BOOL, ANY):
                problems.append(
                    f"'{node.op}' combines true/false values, but got a {type_name(kind)}"
                )
        return BOOL
    if isinstance(node, Unary):
        kind = infer(node.operand, type_of, problems)
        if node.op == "not":
            if kind not in (BOOL, ANY):
                problems.append(f"'not' needs a true/false value, but got a {type_name(kind)}")
            return BOOL
        return (
            kind
            if _is_quantity(kind) or kind == ANY
            else _bad(problems, f"cannot negate a {type_name(kind)}")
        )
    if isinstance(node, Binary):
        left = infer(node.left, type_of, problems)
        right = infer(node.right, type_of, problems)
        if ANY in (left, right):
            return ANY
        if not (_is_quantity(left) and _is_quantity(right)):
            return _bad(
                problems, f"cannot compute a {type_name(left)} {node.op} a {type_name(right)}"
            )
        if node.op in "+-":
            if left != right:
                return _bad(
                    problems,
                    f"cannot add or subtract a {type_name(left)} and a {type_name(right)}",
                )
            return left
        if node.op == "*":
            if "number" not in (left, right):
                return _bad(
                    problems, f"cannot multiply a {type_name(left)} by a {type_name(right)}"
                )
            return right if left == "number" else left
        if right == "number":
            return left
        return (
            "number"
            if left == right
            else _bad(problems, f"cannot divide a {type_name(left)} by a {type_name(right)}")
        )
    assert isinstance(node, Compare)
    left = infer(node.left, type_of, problems)
    right = infer(node.right, type_of, problems)
    if ANY in (left, right) or node.op in ("in", "not in", "==", "!=") and NULL in (left, right):
        return BOOL
    if node.op in ("in", "not in"):
        if right not in (LIST, STRING):
            problems.append(
                f"'{node.op}' needs a list or text on its right, but got a {type_name(right)}"
            )
        return BOOL
    if left != right:
        problems.append(
            f"compares a {type_name(left)} with a {type_name(right)}"
            + _mismatch_hint(node, left, right)
        )
    elif node.op not in ("==", "!=") and left in (BOOL, LIST, NULL):
        problems.append(f"cannot order {type_name(left)}s with {node.op}")
    return BOOL


def _mismatch_hint(node: Compare, left: str, right: str) -> str:
    """Return the most likely fix for a comparison of two different types."""
    if LIST in (left, right):
        return "; test a list with 'in' (for example 'name' in steps.check.failed)"
    if not (_is_quantity(left) and _is_quantity(right)):
        return ""
    # A percentage against an absolute movement: the relative one is `.change`.
    for side, kind, other in ((node.left, left, right), (node.right, right, left)):
        if (
            other == "ratio"
            and kind != "ratio"
            and isinstance(side, Ref)
            and side.parts[-1] in ("increase", "decrease")
        ):
            relative = ".".join((*side.parts[:-1], "change"))
            return (
                f"; {side.dotted} is in the metric's own unit; for a relative change "
                f"compare {relative} (for example {relative} > 5%)"
            )
    if "number" in (left, right):
        return "; give the number a unit (for example 10ms or 0.5%)"
    return ""


def _is_quantity(kind: str) -> bool:
    return kind not in (BOOL, STRING, NULL, LIST, ANY)


def _bad(problems: list[str], message: str) -> str:
    problems.append(message)
    return ANY
