"""The ``logic:`` of an analyzer: a tiny if/elif/else/return language, parsed, never executed.

The workflow guide writes an analyzer as::

    threshold_checker:
      input: [baseline, current]
      logic: |
        if current.latency > baseline.latency * 1.1:
          return "degradation_detected"

This module reads that text into a tree when the workflow is validated and evaluates the
tree over plain data when the analysis runs. There is no Python ``eval``/``exec`` and no
Python parser: the statements are read line by line here, and every condition is parsed
and evaluated by the condition language (:mod:`afdp.workflow.expressions`), whose names
are only ``<input>.<metric>`` or ``<input>.<metric>.<statistic>`` (anything else is a
located error). Grammar (indentation by spaces; blank lines and ``#`` comment lines are
ignored)::

    program   := statement+
    statement := if | return | "pass"
    if        := "if" condition ":" (return | NEWLINE block)
                 ("elif" condition ":" (return | NEWLINE block))*
                 ("else" ":" (return | NEWLINE block))?
    block     := INDENT statement+ DEDENT
    return    := "return" string | "return" "None"      (a quoted verdict, or no verdict)

Evaluation runs the statements in order; the first ``return`` reached gives the verdict
(a string), falling off the end gives none. A condition that cannot be evaluated (a metric
with no data) stops the program with that reason: the verdict is then unknown, never a
silent pass. Bounds: :data:`MAX_CHARS` characters, :data:`MAX_STATEMENTS` statements,
:data:`MAX_DEPTH` nested blocks, :data:`MAX_VERDICT` characters in a verdict.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from afdp.workflow.expressions import (
    Binary,
    Compare,
    EvaluationError,
    Expression,
    ExpressionError,
    ListExpr,
    Logical,
    Node,
    Ref,
    Unary,
    parse_expression,
)

MAX_CHARS = 4096
MAX_STATEMENTS = 64
MAX_DEPTH = 8
MAX_VERDICT = 64

#: The inputs an analyzer may name and the capture each binds to: ``baseline`` is the
#: analysis' baseline capture, ``current`` (or ``impact``) its impact capture.
INPUTS = {"baseline": "baseline", "current": "impact", "impact": "impact"}

#: The statistics of a metric a logic condition can read (``current.latency.p99``);
#: ``current.latency`` alone is the median.
STATISTICS = ("median", "mean", "min", "max", "p50", "p95", "p99", "count")
DEFAULT_STATISTIC = "median"

#: Metric names the guide uses that are spelled differently in the catalog.
ALIASES = {
    "latency": "response_time",
    "latency_p50": "response_time_p50",
    "latency_p95": "response_time_p95",
    "latency_p99": "response_time_p99",
}

#: A verdict counts as a degradation (for ``any_degradation`` and the default decision)
#: when one of its words (split at ``_``, ``-``, spaces) is one of these.
DEGRADATION_WORDS = frozenset(
    {
        "degradation", "degraded", "degrade", "degrading", "regression", "regressed",
        "rollback", "failure", "failed", "fail", "breach", "breached", "violation",
        "alert", "critical", "unhealthy", "bad",
    }
)

_VERDICT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_ .:/-]*")
_WORDS = re.compile(r"[^A-Za-z0-9]+")


class LogicError(ValueError):
    """The logic text is not in the language; ``line`` and ``column`` are 1-based in the text."""

    def __init__(self, message: str, line: int, column: int = 1) -> None:
        super().__init__(message)
        self.line = line
        self.column = column


@dataclass(frozen=True)
class Return:
    verdict: str | None
    line: int


@dataclass(frozen=True)
class Branch:
    condition: Expression | None  # None: else
    body: tuple[Statement, ...]
    line: int


@dataclass(frozen=True)
class If:
    branches: tuple[Branch, ...]


Statement = Return | If


@dataclass(frozen=True)
class Program:
    """A parsed ``logic:``: its statements, the metrics it reads per input, its verdicts."""

    source: str
    statements: tuple[Statement, ...]
    #: ``(input, metric as written, metric resolved, statistic)`` for every reference.
    reads: tuple[tuple[str, str, str, str], ...]
    verdicts: tuple[str, ...]

    @property
    def metrics(self) -> tuple[str, ...]:
        """Return the (resolved) metric names the program reads, in order, once each."""
        return tuple(dict.fromkeys(r[2] for r in self.reads))


def counts_as_degradation(verdict: str | None) -> bool:
    """Return True when ``verdict`` names a degradation (see :data:`DEGRADATION_WORDS`)."""
    if not verdict:
        return False
    return any(word.lower() in DEGRADATION_WORDS for word in _WORDS.split(verdict) if word)


def resolve_metric(name: str, metrics: Mapping[str, Any]) -> str | None:
    """Return the workflow metric ``name`` stands for (itself, or its alias), or None."""
    if name in metrics:
        return name
    alias = ALIASES.get(name)
    return alias if alias is not None and alias in metrics else None


@dataclass
class _Line:
    number: int
    indent: int
    text: str


def parse_logic(text: Any, inputs: tuple[str, ...], metrics: Mapping[str, Any]) -> Program:
    """Parse ``text`` into a :class:`Program` whose names are ``inputs`` and ``metrics``.

    Raises:
        LogicError: anything outside the language, a name that is not an input's metric
            or statistic, or a bound exceeded; located by line and column of the text.
    """
    if not isinstance(text, str):
        raise LogicError("logic must be text (a block written with '|')", 1)
    if len(text) > MAX_CHARS:
        raise LogicError(f"logic is {len(text)} characters long; the limit is {MAX_CHARS}", 1)
    lines: list[_Line] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise LogicError("tab character in indentation; indent with spaces", number)
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        lines.append(_Line(number, len(raw) - len(raw.lstrip(" ")), stripped))
    if not lines:
        raise LogicError("logic is empty; write at least one 'if ...:' with a 'return'", 1)
    parser = _Parser(lines, inputs, metrics)
    statements = parser.block(lines[0].indent, 0)
    if parser.pos < len(lines):
        extra = lines[parser.pos]
        raise LogicError("unexpected indentation", extra.number, extra.indent + 1)
    return Program(text, statements, tuple(parser.reads), tuple(dict.fromkeys(parser.verdicts)))


class _Parser:
    def __init__(self, lines: list[_Line], inputs: tuple[str, ...], metrics: Mapping[str, Any]) -> None:
        self.lines = lines
        self.pos = 0
        self.inputs = inputs
        self.metrics = metrics
        self.count = 0
        self.reads: list[tuple[str, str, str, str]] = []
        self.verdicts: list[str] = []

    def block(self, indent: int, depth: int) -> tuple[Statement, ...]:
        if depth > MAX_DEPTH:
            line = self.lines[self.pos]
            raise LogicError(f"blocks nested more than {MAX_DEPTH} deep", line.number, line.indent + 1)
        out: list[Statement] = []
        while self.pos < len(self.lines):
            line = self.lines[self.pos]
            if line.indent < indent:
                break
            if line.indent > indent:
                raise LogicError("unexpected indentation", line.number, line.indent + 1)
            out.append(self.statement(line, depth))
        return tuple(out)

    def _count(self, line: _Line) -> None:
        self.count += 1
        if self.count > MAX_STATEMENTS:
            raise LogicError(f"more than {MAX_STATEMENTS} statements", line.number, line.indent + 1)

    def statement(self, line: _Line, depth: int) -> Statement:
        word = re.match(r"[A-Za-z_]+", line.text)
        keyword = word.group() if word else ""
        if keyword == "pass" and line.text == "pass":
            self._count(line)
            self.pos += 1
            return If(())  # does nothing
        if keyword == "return":
            self._count(line)
            self.pos += 1
            return self.ret(line.text, line, line.indent)
        if keyword == "if":
            return self.if_statement(line, depth)
        if keyword in ("elif", "else"):
            raise LogicError(f"'{keyword}' without an 'if' before it", line.number, line.indent + 1)
        hint = _hint(line.text)
        raise LogicError(
            f"expected 'if', 'return' or 'pass', got {line.text[:40]!r}{hint}", line.number, line.indent + 1
        )

    def ret(self, text: str, line: _Line, column: int) -> Return:
        rest = text[len("return"):].strip() if text.startswith("return") else None
        if rest is None or (text[len("return"):][:1] not in (" ", "") ):
            raise LogicError(f"expected 'return', got {text[:40]!r}", line.number, column + 1)
        if rest in ("", "None", "null"):
            return Return(None, line.number)
        if len(rest) >= 2 and rest[0] == rest[-1] and rest[0] in "\"'":
            verdict = rest[1:-1]
            if "\\" in verdict or rest[0] in verdict:
                raise LogicError("a verdict is plain text without quotes or escapes", line.number, column + 1)
            if len(verdict) > MAX_VERDICT or not _VERDICT.fullmatch(verdict):
                raise LogicError(
                    f"a verdict is 1 to {MAX_VERDICT} letters, digits, '_', '-', '.', ':', '/' or spaces, "
                    "starting with a letter or digit",
                    line.number,
                    column + 1,
                )
            self.verdicts.append(verdict)
            return Return(verdict, line.number)
        raise LogicError(
            f"'return' gives a quoted verdict (return \"degradation_detected\"), got {rest[:40]!r}",
            line.number,
            column + 1,
        )

    def if_statement(self, first: _Line, depth: int) -> If:
        branches: list[Branch] = []
        keyword = "if"
        line = first
        while True:
            self._count(line)
            self.pos += 1
            header = line.text[len(keyword):]
            if keyword != "else" and not header[:1].isspace() and header[:1] != "(":
                raise LogicError(f"expected '{keyword} <condition>:'", line.number, line.indent + 1)
            split = _split_colon(header)
            if split is None:
                raise LogicError(f"'{keyword}' line must end with ':'", line.number, line.indent + len(line.text))
            head, tail = split
            condition: Expression | None = None
            if keyword == "else":
                if head.strip():
                    raise LogicError("'else' takes no condition; use 'elif'", line.number, line.indent + 1)
            else:
                condition = self.condition(head, line, line.indent + len(keyword) + 1)
            if tail.strip():
                body: tuple[Statement, ...] = (self.ret(tail.strip(), line, line.indent + len(line.text) - len(tail.strip())),)
                self._count(line)
            else:
                if self.pos >= len(self.lines) or self.lines[self.pos].indent <= first.indent:
                    raise LogicError(f"'{keyword}' needs an indented block after it", line.number, line.indent + 1)
                body = self.block(self.lines[self.pos].indent, depth + 1)
            branches.append(Branch(condition, body, line.number))
            if keyword == "else" or self.pos >= len(self.lines):
                break
            following = self.lines[self.pos]
            match = re.match(r"(elif|else)\b", following.text)
            if following.indent != first.indent or match is None:
                break
            keyword = match.group(1)
            line = following
        return If(tuple(branches))

    def condition(self, text: str, line: _Line, column: int) -> Expression:
        offset = len(text) - len(text.lstrip())
        try:
            expression = parse_expression(text.strip())
        except ExpressionError as exc:
            raise LogicError(f"invalid condition: {exc}", line.number, column + offset + exc.offset) from None
        rewritten = _rewrite(expression.tree, self, line, column + offset)
        refs = tuple(_refs(rewritten))
        bound = Expression(expression.source, rewritten, refs)
        problems = bound.check(self.type_of)
        if problems:
            raise LogicError(f"invalid condition: {problems[0]}", line.number, column + offset)
        return bound

    def type_of(self, ref: Ref) -> str:
        if ref.parts[2] == "count":
            return "number"
        unit = getattr(self.metrics.get(ref.parts[1]), "unit", None)
        return str(getattr(unit, "dimension", "any"))

    def bind(self, ref: Ref, line: _Line, column: int) -> Ref:
        at = column + ref.offset
        head = ref.parts[0]
        if head not in self.inputs:
            known = ", ".join(self.inputs) or "none"
            raise LogicError(
                f"{ref.dotted!r}: a condition reads only the analyzer's inputs ({known}) as "
                "<input>.<metric> or <input>.<metric>.<statistic>",
                line.number,
                at,
            )
        if len(ref.parts) < 2 or len(ref.parts) > 3:
            raise LogicError(
                f"{ref.dotted!r}: write {head}.<metric> or {head}.<metric>.<statistic>", line.number, at
            )
        written = ref.parts[1]
        metric = resolve_metric(written, self.metrics)
        if metric is None:
            alias = f" (an alias of {ALIASES[written]}, which is not defined)" if written in ALIASES else ""
            raise LogicError(f"{head}.{written}: no metric {written!r}{alias}", line.number, at)
        statistic = ref.parts[2] if len(ref.parts) == 3 else DEFAULT_STATISTIC
        if statistic not in STATISTICS:
            raise LogicError(
                f"{ref.dotted!r}: {statistic!r} is not a statistic ({', '.join(STATISTICS)})", line.number, at
            )
        self.reads.append((head, written, metric, statistic))
        return Ref((head, metric, statistic), ref.offset)


def _rewrite(node: Node, parser: _Parser, line: _Line, column: int) -> Node:
    if isinstance(node, Ref):
        return parser.bind(node, line, column)
    if isinstance(node, ListExpr):
        return ListExpr(tuple(_rewrite(i, parser, line, column) for i in node.items))
    if isinstance(node, Unary):
        return Unary(node.op, _rewrite(node.operand, parser, line, column))
    if isinstance(node, Binary):
        return Binary(node.op, _rewrite(node.left, parser, line, column), _rewrite(node.right, parser, line, column))
    if isinstance(node, Compare):
        return Compare(
            node.op, _rewrite(node.left, parser, line, column), _rewrite(node.right, parser, line, column), node.offset
        )
    if isinstance(node, Logical):
        return Logical(node.op, tuple(_rewrite(o, parser, line, column) for o in node.operands))
    return node


def _refs(node: Node) -> list[Ref]:
    if isinstance(node, Ref):
        return [node]
    if isinstance(node, ListExpr):
        return [r for i in node.items for r in _refs(i)]
    if isinstance(node, Unary):
        return _refs(node.operand)
    if isinstance(node, (Binary, Compare)):
        return _refs(node.left) + _refs(node.right)
    if isinstance(node, Logical):
        return [r for o in node.operands for r in _refs(o)]
    return []


def _split_colon(text: str) -> tuple[str, str] | None:
    """Split at the first ':' outside quotes."""
    quote = ""
    for i, char in enumerate(text):
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == ":":
            return text[:i], text[i + 1:]
    return None


def _hint(text: str) -> str:
    for word, hint in (
        ("import", "imports"), ("from", "imports"), ("def", "functions"), ("class", "classes"),
        ("for", "loops"), ("while", "loops"), ("lambda", "functions"), ("with", "'with'"),
        ("try", "exceptions"), ("raise", "exceptions"), ("exec", "code execution"),
        ("eval", "code execution"), ("global", "globals"), ("del", "'del'"),
    ):
        if re.match(rf"{word}\b", text):
            return f": {hint} are not part of the analyzer language"
    if "=" in text and "==" not in text:
        return ": assignments are not part of the analyzer language"
    return ""


@dataclass(frozen=True)
class Outcome:
    """What a program gave: a ``verdict`` (None: none returned), or an ``error`` (unknown)."""

    verdict: str | None
    line: int | None
    error: str | None = None

    @property
    def degraded(self) -> bool | None:
        if self.error is not None:
            return None
        return counts_as_degradation(self.verdict)


def run_logic(program: Program, values: Mapping[str, Any]) -> Outcome:
    """Evaluate ``program`` over ``{input: {metric: {statistic: value}}}``."""
    try:
        found = _run(program.statements, values)
    except EvaluationError as exc:
        return Outcome(None, None, str(exc))
    if found is None:
        return Outcome(None, None)
    return Outcome(found.verdict, found.line)


def _run(statements: tuple[Statement, ...], values: Mapping[str, Any]) -> Return | None:
    for statement in statements:
        if isinstance(statement, Return):
            return statement
        for branch in statement.branches:
            if branch.condition is None or branch.condition.evaluate(values):
                found = _run(branch.body, values)
                if found is not None:
                    return found
                break
    return None
