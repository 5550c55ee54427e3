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

The package: :mod:`.nodes` (syntax tree, errors, limits), :mod:`.parse` (tokenizer and
parser), :mod:`.expression` (:class:`Expression`), :mod:`.evaluate` (evaluation) and
:mod:`.types` (static types).
"""

from __future__ import annotations

from afdp.workflow.expressions.expression import Expression, references
from afdp.workflow.expressions.nodes import (
    ANY,
    BOOL,
    COMPARISONS,
    KEYWORDS,
    LIST,
    MAX_LENGTH,
    MAX_NESTING,
    NULL,
    STRING,
    Binary,
    Compare,
    EvaluationError,
    ExpressionError,
    ListExpr,
    Literal,
    Logical,
    Node,
    Ref,
    Token,
    Unary,
)
from afdp.workflow.expressions.parse import parse_expression, tokenize

__all__ = [
    "ANY",
    "BOOL",
    "COMPARISONS",
    "KEYWORDS",
    "LIST",
    "MAX_LENGTH",
    "MAX_NESTING",
    "NULL",
    "STRING",
    "Binary",
    "Compare",
    "EvaluationError",
    "Expression",
    "ExpressionError",
    "ListExpr",
    "Literal",
    "Logical",
    "Node",
    "Ref",
    "Token",
    "Unary",
    "parse_expression",
    "references",
    "tokenize",
]
