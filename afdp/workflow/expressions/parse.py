"""The tokenizer and the recursive-descent parser: :func:`parse_expression` turns text into an :class:`Expression`, bounded in length and nesting."""

from __future__ import annotations

import re
from collections.abc import Sequence

from afdp.workflow.expressions.expression import Expression
from afdp.workflow.expressions.nodes import (
    COMPARISONS,
    KEYWORDS,
    MAX_LENGTH,
    MAX_NESTING,
    Binary,
    Compare,
    ExpressionError,
    ListExpr,
    Literal,
    Logical,
    Node,
    Ref,
    Token,
    Unary,
)
from afdp.workflow.units import Quantity, UnitError, parse_quantity

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
        if char == "$" and (bare := re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)", text[i:])):
            raise ExpressionError(
                f"${bare.group(1)} is not read in conditions: environment variables (secrets) "
                "cannot be used there; money is a number after the sign ($1000_per_hour)",
                i,
            )
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
