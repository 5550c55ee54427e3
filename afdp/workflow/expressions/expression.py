""":class:`Expression`: a parsed condition with its source text, evaluation and type checking; :func:`references` lists the names a set of conditions read."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from afdp.workflow.expressions.evaluate import evaluate_node, show
from afdp.workflow.expressions.nodes import ANY, BOOL, EvaluationError, Node, Ref
from afdp.workflow.expressions.types import infer, type_name


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
        result = evaluate_node(self.tree, values)
        if not isinstance(result, bool):
            raise EvaluationError(
                f"condition {self.source!r} is not true or false (it is {show(result)})"
            )
        return result

    def check(self, type_of: Callable[[Ref], str]) -> list[str]:
        """Return type errors found before run time; ``type_of`` gives each reference's type.

        ``type_of`` returns a dimension (``time``, ``ratio``, ...), ``bool``, ``string``,
        ``list`` or ``any``; name errors are the caller's business (it sees ``refs``).
        """
        problems: list[str] = []
        result = infer(self.tree, type_of, problems)
        if result not in (BOOL, ANY) and not problems:
            problems.append(
                f"a condition must be true or false, but this is a {type_name(result)}"
            )
        return problems


def references(expressions: Sequence[Expression]) -> tuple[Ref, ...]:
    """Return every reference read by ``expressions``, in order."""
    return tuple(ref for expression in expressions for ref in expression.refs)
