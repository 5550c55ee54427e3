"""Evaluation: a walk over the syntax tree and plain data (no ``eval``, no attribute access on Python objects, no calls); quantities keep their units through arithmetic and comparison."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from afdp.workflow.expressions.nodes import (
    Binary,
    Compare,
    EvaluationError,
    ListExpr,
    Literal,
    Logical,
    Node,
    Ref,
    Unary,
)
from afdp.workflow.units import DIMENSIONLESS, Quantity


def _lookup(ref: Ref, values: Mapping[str, Any]) -> Any:
    current: Any = values
    for depth, part in enumerate(ref.parts):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
            continue
        where = ".".join(ref.parts[: depth + 1])
        raise EvaluationError(f"{where} has no value")
    return current


def _number(value: Any) -> Quantity | None:
    if isinstance(value, Quantity):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Quantity(float(value), DIMENSIONLESS)
    return None


def show(value: Any) -> str:
    if isinstance(value, Quantity):
        return str(value)
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return repr(value)


def evaluate_node(node: Node, values: Mapping[str, Any]) -> Any:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Ref):
        return _lookup(node, values)
    if isinstance(node, ListExpr):
        return [evaluate_node(item, values) for item in node.items]
    if isinstance(node, Logical):
        for operand in node.operands:
            result = evaluate_node(operand, values)
            if not isinstance(result, bool):
                raise EvaluationError(f"'{node.op}' needs true or false, got {show(result)}")
            if result is (node.op == "or"):
                return result
        return node.op == "and"
    if isinstance(node, Unary):
        operand = evaluate_node(node.operand, values)
        if node.op == "not":
            if not isinstance(operand, bool):
                raise EvaluationError(f"'not' needs true or false, got {show(operand)}")
            return not operand
        number = _number(operand)
        if number is None:
            raise EvaluationError(f"cannot negate {show(operand)}")
        return Quantity(-number.value, number.unit)
    if isinstance(node, Binary):
        return _arithmetic(node.op, evaluate_node(node.left, values), evaluate_node(node.right, values))
    assert isinstance(node, Compare)
    return _compare(node.op, evaluate_node(node.left, values), evaluate_node(node.right, values))


def _arithmetic(op: str, left: Any, right: Any) -> Quantity:
    a, b = _number(left), _number(right)
    if a is None or b is None:
        raise EvaluationError(f"cannot compute {show(left)} {op} {show(right)}")
    if op in "+-":
        if a.dimension != b.dimension:
            raise EvaluationError(
                f"cannot compute {a} {op} {b}: {a.dimension} and {b.dimension} differ"
            )
        other = b.base / a.unit.factor
        return Quantity(a.value + other if op == "+" else a.value - other, a.unit)
    if op == "*":
        if b.dimension == "number":
            return Quantity(a.value * b.value, a.unit)
        if a.dimension == "number":
            return Quantity(a.value * b.value, b.unit)
        raise EvaluationError(f"cannot multiply {a} by {b}: only by a plain number")
    if b.base == 0:
        raise EvaluationError(f"division by zero in {a} / {b}")
    if b.dimension == "number":
        return Quantity(a.value / b.value, a.unit)
    if a.dimension == b.dimension:
        return Quantity(a.base / b.base, DIMENSIONLESS)
    raise EvaluationError(f"cannot divide {a} by {b}: {a.dimension} and {b.dimension} differ")


def _compare(op: str, left: Any, right: Any) -> bool:
    if op in ("in", "not in"):
        if isinstance(right, str) and isinstance(left, str):
            found = left in right
        elif isinstance(right, (list, tuple)):
            found = any(_equal(left, item) for item in right)
        else:
            raise EvaluationError(f"'{op}' needs a list or text on its right, got {show(right)}")
        return found if op == "in" else not found
    if op in ("==", "!="):
        same = _equal(left, right)
        return same if op == "==" else not same
    a, b = _number(left), _number(right)
    if a is not None and b is not None:
        if a.dimension != b.dimension:
            raise EvaluationError(f"cannot compare {a} ({a.dimension}) with {b} ({b.dimension})")
        x, y = a.base, b.base
    elif isinstance(left, str) and isinstance(right, str):
        x, y = left, right  # type: ignore[assignment]
    else:
        raise EvaluationError(f"cannot order {show(left)} and {show(right)}")
    return {"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[op]


def _equal(left: Any, right: Any) -> bool:
    a, b = _number(left), _number(right)
    if a is not None and b is not None:
        return a.dimension == b.dimension and a.base == b.base
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    return bool(left == right)
