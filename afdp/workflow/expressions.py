"""The condition language of ``when:``, ``unless:``, decision ``condition:`` and friends.

A small, safe expression language with its own tokenizer and recursive-descent parser.
Conditions are parsed when a workflow is validated, so a bad one is reported before
anything runs, and they are evaluated by walking the tree over plain data: there is no
Python ``eval``, no attribute access on Python objects and no function calls.

Grammar (lowest precedence first)::

    expr    := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | compare
    compare := sum (("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not in") sum)?
    sum     := product (("+" | "-") product)*
    product := unary (("*" | "/") unary)*
    unary   := "-" unary | atom
    atom    := quantity | string | "true" | "false" | "null" | reference
             | "(" expr ")" | "[" [expr ("," expr)*] "]"
    reference := name ("." name | "[" string "]")* | "${" name ("." name)* "}"

Quantities are written as in the rest of the workflow (``10ms``, ``0.5%``, ``2x``,
``$1000_per_hour``, ``1.1``); comparisons and arithmetic respect their dimensions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from afdp.workflow.loader import MAX_DEPTH
from afdp.workflow.units import DIMENSIONLESS, Quantity, UnitError, parse_quantity

MAX_LENGTH = 4096
# The same limit as the YAML loader's. It bounds both the parser's recursion (parentheses,
# brackets, 'not', unary '-') and the height of the syntax tree it builds (each operator,
# including every '+', '-', '*', '/' of a chain, is one level), so evaluating or type
# checking an accepted condition cannot recurse deeper either.
MAX_NESTING = MAX_DEPTH

KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false", "null"})
COMPARISONS = ("==", "!=", "<=", ">=", "<", ">")

# Static types: a dimension string from units ("time", "ratio", "number", "USD/time"...),
# or one of these. ANY is what we cannot know before run time.
BOOL = "bool"
STRING = "string"
NULL = "null"
LIST = "list"
ANY = "any"

_SPACE = re.compile(r"\s+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(
    r"[$€£]?[0-9](?:_?[0-9])*(?:\.[0-9]+)?(?:%|[A-Za-zµ][A-Za-z0-9_µ]*|_[A-Za-z][A-Za-z0-9_]*)?"
)
_TEMPLATE_REF = re.compile(r"\$\{\s*([A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*)\s*\}")
_OPERATORS = ("==", "!=", "<=", ">=", "<", ">", "(", ")", "[", "]", ",", ".", "+", "-", "*", "/")
_HINTS = {
    "&&": "use 'and'",
    "||": "use 'or'",
    "!": "use 'not'",
    "=": "use '==' to compare",
    "**": "powers are not supported",
    "%": "'%' is only a unit after a number (0.5%)",
    "?": "conditional expressions are not supported",
    ":": "':' has no meaning in a condition",
    ";": "one expression only",
    "{": "mappings are not supported in conditions",
    "}": "mappings are not supported in conditions",
}


class ExpressionError(ValueError):
    """A condition that does not parse; ``offset`` is the 0-based character position."""

    def __init__(self, message: str, offset: int = 0) -> None:
        super().__init__(message)
        self.offset = offset


class EvaluationError(ValueError):
    """A condition that cannot be evaluated over the given values (unknown name, unit mismatch)."""


@dataclass(frozen=True)
class Token:
    kind: str  # "name", "number", "string", "ref", "op", "end"
    text: str
    offset: int
    value: Any = None


# --- syntax tree ---------------------------------------------------------------------


@dataclass(frozen=True)
class Literal:
    """A constant: a :class:`Quantity` (numbers too), a string, a boolean or null."""

    value: Any


@dataclass(frozen=True)
class Ref:
    """A field access such as ``deployment.environment`` or ``steps.capture.error_rate.mean``."""

    parts: tuple[str, ...]
    offset: int = 0

    @property
    def dotted(self) -> str:
        """Return the path joined with dots (``steps.capture.mean``)."""
        return ".".join(self.parts)


@dataclass(frozen=True)
class ListExpr:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Unary:
    op: str  # "not" or "-"
    operand: Node


@dataclass(frozen=True)
class Binary:
    op: str  # "+", "-", "*", "/"
    left: Node
    right: Node


@dataclass(frozen=True)
class Compare:
    op: str  # "==", "!=", "<", "<=", ">", ">=", "in", "not in"
    left: Node
    right: Node
    offset: int = 0


@dataclass(frozen=True)
class Logical:
    op: str  # "and" or "or"
    operands: tuple[Node, ...]


Node = Literal | Ref | ListExpr | Unary | Binary | Compare | Logical


@dataclass(frozen=True)
class Expression:
    """A parsed condition: its ``source`` text, syntax tree and the references it reads."""

    source: str
    tree: Node
    refs: tuple[Ref, ...]

    def __str__(self) -> str:
        return self.source

    def evaluate(self, values: Mapping[str, Any]) -> bool:
        """Evaluate the condition over nested mappings of ``values``.

        Returns:
            The boolean result.

        Raises:
            EvaluationError: a name is missing, units do not match, or the result is
                not a boolean. Callers treat this as "could not decide" (fail closed).
        """
        result = _evaluate(self.tree, values)
        if not isinstance(result, bool):
            raise EvaluationError(
                f"condition {self.source!r} is not true or false (it is {_show(result)})"
            )
        return result

    def check(self, type_of: Callable[[Ref], str]) -> list[str]:
        """Return type errors found before run time; ``type_of`` gives each reference's type.

        ``type_of`` returns a dimension (``time``, ``ratio``, ...), ``bool``, ``string``,
        ``list`` or ``any``; name errors are the caller's business (it sees ``refs``).
        """
        problems: list[str] = []
        result = _infer(self.tree, type_of, problems)
        if result not in (BOOL, ANY) and not problems:
            problems.append(
                f"a condition must be true or false, but this is a {_type_name(result)}"
            )
        return problems


# --- tokenizer -----------------------------------------------------------------------


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens.

    Raises:
        ExpressionError: a character or operator that the language does not have.
    """
    tokens: list[Token] = []
    i = 0
    n = len(text)
    while i < n:
        space = _SPACE.match(text, i)
        if space:
            i = space.end()
            continue
        char = text[i]
        if char == "$" and text.startswith("${", i):
            match = _TEMPLATE_REF.match(text, i)
            if match is None:
                raise ExpressionError("malformed ${...} reference; expected ${name.field}", i)
            tokens.append(Token("ref", match.group(), i, tuple(match.group(1).split("."))))
            i = match.end()
            continue
        if char.isdigit() or (char in "$€£" and i + 1 < n and text[i + 1].isdigit()):
            match = _NUMBER.match(text, i)
            if match is None:  # a digit the language does not read (e.g. non-ASCII)
                raise ExpressionError(f"unexpected character {char!r}", i)
            try:
                quantity = parse_quantity(match.group())
            except UnitError as exc:
                raise ExpressionError(str(exc), i) from None
            tokens.append(Token("number", match.group(), i, quantity))
            i = match.end()
            continue
        if char.isalpha() or char == "_":
            match = _NAME.match(text, i)
            if match is None:  # a letter outside names' ASCII alphabet
                raise ExpressionError(f"unexpected character {char!r}: names are ASCII", i)
            tokens.append(Token("name", match.group(), i))
            i = match.end()
            continue
        if char in "'\"":
            value, end = _string(text, i)
            tokens.append(Token("string", text[i:end], i, value))
            i = end
            continue
        for pair in ("&&", "||", "**"):
            if text.startswith(pair, i):
                raise ExpressionError(f"unexpected {pair!r}: {_HINTS[pair]}", i)
        for op in _OPERATORS:
            if text.startswith(op, i):
                tokens.append(Token("op", op, i))
                i += len(op)
                break
        else:
            hint = _HINTS.get(char)
            raise ExpressionError(f"unexpected {char!r}" + (f": {hint}" if hint else ""), i)
    tokens.append(Token("end", "", n))
    return tokens


def _string(text: str, start: int) -> tuple[str, int]:
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text) and text[i + 1] in (quote, "\\"):
            out.append(text[i + 1])
            i += 2
            continue
        if char == quote:
            return "".join(out), i + 1
        out.append(char)
        i += 1
    raise ExpressionError("string is not closed", start)


# --- parser --------------------------------------------------------------------------


def parse_expression(text: object) -> Expression:
    """Parse a condition.

    Returns:
        The :class:`Expression`.

    Raises:
        ExpressionError: empty, too long, not in the grammar, a function call, a
            chained comparison, or nested too deeply.
    """
    if isinstance(text, bool):
        return Expression(str(text).lower(), Literal(text), ())
    if not isinstance(text, str):
        raise ExpressionError(
            f'a condition is text such as "error_rate.increase > 0.5%", not {type(text).__name__}'
        )
    if not text.strip():
        raise ExpressionError("the condition is empty")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"the condition is longer than {MAX_LENGTH} characters")
    parser = _Parser(tokenize(text))
    try:
        tree = parser.expression()
    except RecursionError:  # a safety net only: the nesting limit comes first
        raise ExpressionError(
            f"the condition is nested more than {MAX_NESTING} levels deep"
        ) from None
    token = parser.peek()
    if token.kind != "end":
        raise ExpressionError(f"unexpected {token.text!r} after a complete condition", token.offset)
    return Expression(text.strip(), tree, tuple(parser.refs))


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.position = 0
        self.depth = 0
        self.refs: list[Ref] = []
        # id(node) -> (node, height of its subtree); the node is kept so its id is not reused
        self.heights: dict[int, tuple[Node, int]] = {}

    def deeper(self) -> None:
        """Enter one level of parser recursion; refuse the condition past the limit."""
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise ExpressionError(
                f"the condition is nested more than {MAX_NESTING} levels deep", self.peek().offset
            )

    def built(self, node: Node, children: Sequence[Node], offset: int, chain: bool = False) -> Node:
        """Record ``node``'s tree height (one more than its highest child); refuse past the limit."""
        height = 1 + max((self.heights.get(id(c), (c, 1))[1] for c in children), default=0)
        if height > MAX_NESTING:
            why = " (each '+', '-', '*' or '/' of a chain is one level)" if chain else ""
            raise ExpressionError(
                f"the condition is nested more than {MAX_NESTING} levels deep{why}", offset
            )
        self.heights[id(node)] = (node, height)
        return node

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.position + ahead, len(self.tokens) - 1)]

    def take(self) -> Token:
        token = self.tokens[self.position]
        self.position += 1
        return token

    def accept(self, kind: str, text: str) -> bool:
        token = self.peek()
        if token.kind == kind and token.text == text:
            self.position += 1
            return True
        return False

    def expect(self, text: str, what: str) -> None:
        token = self.peek()
        if not self.accept("op", text):
            found = "the end" if token.kind == "end" else repr(token.text)
            raise ExpressionError(f"expected {what}, found {found}", token.offset)

    def expression(self) -> Node:
        start = self.peek().offset
        self.deeper()
        try:
            operands = [self.conjunction()]
            while self.accept("name", "or"):
                operands.append(self.conjunction())
            if len(operands) == 1:
                return operands[0]
            return self.built(Logical("or", tuple(operands)), operands, start)
        finally:
            self.depth -= 1

    def conjunction(self) -> Node:
        start = self.peek().offset
        operands = [self.negation()]
        while self.accept("name", "and"):
            operands.append(self.negation())
        if len(operands) == 1:
            return operands[0]
        return self.built(Logical("and", tuple(operands)), operands, start)

    def negation(self) -> Node:
        if self.peek().kind == "name" and self.peek().text == "not" and self.peek(1).text != "in":
            offset = self.take().offset
            self.deeper()
            try:
                operand = self.negation()
            finally:
                self.depth -= 1
            return self.built(Unary("not", operand), [operand], offset)
        return self.comparison()

    def _comparison_op(self) -> str | None:
        token = self.peek()
        if token.kind == "op" and token.text in COMPARISONS:
            self.take()
            return token.text
        if token.kind == "name" and token.text == "in":
            self.take()
            return "in"
        if token.kind == "name" and token.text == "not" and self.peek(1).text == "in":
            self.take()
            self.take()
            return "not in"
        return None

    def comparison(self) -> Node:
        left = self.sum()
        offset = self.peek().offset
        op = self._comparison_op()
        if op is None:
            return left
        right = self.sum()
        token = self.peek()
        if self._comparison_op() is not None:
            raise ExpressionError(
                "chained comparisons are not supported; write a < b and b < c", token.offset
            )
        return self.built(Compare(op, left, right, offset), [left, right], offset)

    def sum(self) -> Node:
        node = self.product()
        while self.peek().kind == "op" and self.peek().text in "+-":
            token = self.take()
            right = self.product()
            node = self.built(Binary(token.text, node, right), [node, right], token.offset, True)
        return node

    def product(self) -> Node:
        node = self.unary()
        while self.peek().kind == "op" and self.peek().text in ("*", "/"):
            token = self.take()
            right = self.unary()
            node = self.built(Binary(token.text, node, right), [node, right], token.offset, True)
        return node

    def unary(self) -> Node:
        token = self.peek()
        if self.accept("op", "-"):
            self.deeper()
            try:
                operand = self.unary()
            finally:
                self.depth -= 1
            if isinstance(operand, Literal) and isinstance(operand.value, Quantity):
                q = operand.value
                return Literal(Quantity(-q.value, q.unit, f"-{q.text}" if q.text else ""))
            return self.built(Unary("-", operand), [operand], token.offset)
        return self.atom()

    def atom(self) -> Node:
        token = self.take()
        if token.kind == "number":
            return Literal(token.value)
        if token.kind == "string":
            return Literal(token.value)
        if token.kind == "ref":
            ref = Ref(token.value, token.offset)
            self._no_call(token.text)
            self.refs.append(ref)
            return ref
        if token.kind == "name":
            word = token.text
            if word == "true":
                return Literal(True)
            if word == "false":
                return Literal(False)
            if word == "null":
                return Literal(None)
            if word in KEYWORDS:
                raise ExpressionError(f"unexpected {word!r}; expected a value", token.offset)
            if word in ("True", "False", "None"):
                raise ExpressionError(
                    f"unknown word {word!r}; write {'null' if word == 'None' else word.lower()}",
                    token.offset,
                )
            return self.reference(token)
        if token.kind == "op" and token.text == "(":
            node = self.expression()
            self.expect(")", "')'")
            return node
        if token.kind == "op" and token.text == "[":
            items: list[Node] = []
            if not self.accept("op", "]"):
                items.append(self.expression())
                while self.accept("op", ","):
                    items.append(self.expression())
                self.expect("]", "',' or ']'")
            return self.built(ListExpr(tuple(items)), items, token.offset)
        found = "the end of the condition" if token.kind == "end" else repr(token.text)
        raise ExpressionError(f"expected a value, found {found}", token.offset)

    def reference(self, first: Token) -> Ref:
        parts = [first.text]
        while True:
            token = self.peek()
            if token.kind == "op" and token.text == ".":
                self.take()
                name = self.take()
                if name.kind != "name" and not (name.kind == "number" and name.text.isdigit()):
                    raise ExpressionError(
                        f"expected a field name after '.', found {name.text!r}", name.offset
                    )
                parts.append(name.text)
                continue
            if (
                token.kind == "op"
                and token.text == "["
                and self.peek(1).kind == "string"
                and self.peek(2).text == "]"
            ):
                self.take()
                parts.append(self.take().value)
                self.take()
                continue
            break
        self._no_call(".".join(parts))
        ref = Ref(tuple(parts), first.offset)
        self.refs.append(ref)
        return ref

    def _no_call(self, name: str) -> None:
        token = self.peek()
        if token.kind == "op" and token.text == "(":
            raise ExpressionError(
                f"function calls are not allowed in conditions ({name}(...)); use comparisons, "
                "and/or/not, numbers with units and field access",
                token.offset,
            )


# --- evaluation ----------------------------------------------------------------------


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


def _show(value: Any) -> str:
    if isinstance(value, Quantity):
        return str(value)
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return repr(value)


def _evaluate(node: Node, values: Mapping[str, Any]) -> Any:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Ref):
        return _lookup(node, values)
    if isinstance(node, ListExpr):
        return [_evaluate(item, values) for item in node.items]
    if isinstance(node, Logical):
        for operand in node.operands:
            result = _evaluate(operand, values)
            if not isinstance(result, bool):
                raise EvaluationError(f"'{node.op}' needs true or false, got {_show(result)}")
            if result is (node.op == "or"):
                return result
        return node.op == "and"
    if isinstance(node, Unary):
        operand = _evaluate(node.operand, values)
        if node.op == "not":
            if not isinstance(operand, bool):
                raise EvaluationError(f"'not' needs true or false, got {_show(operand)}")
            return not operand
        number = _number(operand)
        if number is None:
            raise EvaluationError(f"cannot negate {_show(operand)}")
        return Quantity(-number.value, number.unit)
    if isinstance(node, Binary):
        return _arithmetic(node.op, _evaluate(node.left, values), _evaluate(node.right, values))
    assert isinstance(node, Compare)
    return _compare(node.op, _evaluate(node.left, values), _evaluate(node.right, values))


def _arithmetic(op: str, left: Any, right: Any) -> Quantity:
    a, b = _number(left), _number(right)
    if a is None or b is None:
        raise EvaluationError(f"cannot compute {_show(left)} {op} {_show(right)}")
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
            raise EvaluationError(f"'{op}' needs a list or text on its right, got {_show(right)}")
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
        raise EvaluationError(f"cannot order {_show(left)} and {_show(right)}")
    return {"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[op]


def _equal(left: Any, right: Any) -> bool:
    a, b = _number(left), _number(right)
    if a is not None and b is not None:
        return a.dimension == b.dimension and a.base == b.base
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    return bool(left == right)


# --- static types --------------------------------------------------------------------


def _type_name(kind: str) -> str:
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


def _infer(node: Node, type_of: Callable[[Ref], str], problems: list[str]) -> str:
    if isinstance(node, Literal):
        return _literal_type(node.value)
    if isinstance(node, Ref):
        return type_of(node)
    if isinstance(node, ListExpr):
        for item in node.items:
            _infer(item, type_of, problems)
        return LIST
    if isinstance(node, Logical):
        for operand in node.operands:
            kind = _infer(operand, type_of, problems)
            if kind not in (BOOL, ANY):
                problems.append(
                    f"'{node.op}' combines true/false values, but got a {_type_name(kind)}"
                )
        return BOOL
    if isinstance(node, Unary):
        kind = _infer(node.operand, type_of, problems)
        if node.op == "not":
            if kind not in (BOOL, ANY):
                problems.append(f"'not' needs a true/false value, but got a {_type_name(kind)}")
            return BOOL
        return (
            kind
            if _is_quantity(kind) or kind == ANY
            else _bad(problems, f"cannot negate a {_type_name(kind)}")
        )
    if isinstance(node, Binary):
        left = _infer(node.left, type_of, problems)
        right = _infer(node.right, type_of, problems)
        if ANY in (left, right):
            return ANY
        if not (_is_quantity(left) and _is_quantity(right)):
            return _bad(
                problems, f"cannot compute a {_type_name(left)} {node.op} a {_type_name(right)}"
            )
        if node.op in "+-":
            if left != right:
                return _bad(
                    problems,
                    f"cannot add or subtract a {_type_name(left)} and a {_type_name(right)}",
                )
            return left
        if node.op == "*":
            if "number" not in (left, right):
                return _bad(
                    problems, f"cannot multiply a {_type_name(left)} by a {_type_name(right)}"
                )
            return right if left == "number" else left
        if right == "number":
            return left
        return (
            "number"
            if left == right
            else _bad(problems, f"cannot divide a {_type_name(left)} by a {_type_name(right)}")
        )
    assert isinstance(node, Compare)
    left = _infer(node.left, type_of, problems)
    right = _infer(node.right, type_of, problems)
    if ANY in (left, right) or node.op in ("in", "not in", "==", "!=") and NULL in (left, right):
        return BOOL
    if node.op in ("in", "not in"):
        if right not in (LIST, STRING):
            problems.append(
                f"'{node.op}' needs a list or text on its right, but got a {_type_name(right)}"
            )
        return BOOL
    if left != right:
        problems.append(
            f"compares a {_type_name(left)} with a {_type_name(right)}"
            + _mismatch_hint(node, left, right)
        )
    elif node.op not in ("==", "!=") and left in (BOOL, LIST, NULL):
        problems.append(f"cannot order {_type_name(left)}s with {node.op}")
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


def references(expressions: Sequence[Expression]) -> tuple[Ref, ...]:
    """Return every reference read by ``expressions``, in order."""
    return tuple(ref for expression in expressions for ref in expression.refs)
