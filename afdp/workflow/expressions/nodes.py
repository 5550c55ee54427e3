"""The condition language's syntax tree (one frozen dataclass per node), its tokens, its limits and type names, and its two errors: :class:`ExpressionError` (the text is not a valid condition; found when a workflow is validated) and :class:`EvaluationError` (a value does not fit at run time)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from afdp.workflow.loader import MAX_DEPTH

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
