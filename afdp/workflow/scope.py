"""Which names a condition or ``${...}`` may use at a given place in a workflow.

A scope is a tree: inner nodes are mappings from a name to its children, leaves are
static types (``time``, ``ratio``, ``bool``, ``string``, ``any`` ... as in
:mod:`afdp.workflow.expressions`). :class:`Open` stands for "any child name" (for
example every ``${env.NAME}``). Looking a path up either yields its type or a message
naming the unknown part and the closest known name.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeAlias

from afdp.workflow.expressions import ANY


@dataclass(frozen=True)
class Open:
    """Any child name is allowed; each has type ``leaf`` (``secret`` for ``env``)."""

    leaf: str = ANY


Tree: TypeAlias = "Mapping[str, Tree] | str | Open"


class UndefinedName(LookupError):
    """A path that is not defined in a scope; ``str()`` says which part and suggests one."""


def suggest(word: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def lookup(tree: Tree, parts: tuple[str, ...], *, what: str = "name") -> str:
    """Return the type of ``parts`` in ``tree``.

    Raises:
        UndefinedName: a part is undefined (with a suggestion), a leaf is indexed further,
            or the path stops at a group of values.
    """
    node: Tree = tree
    for depth, part in enumerate(parts):
        here = ".".join(parts[: depth + 1])
        if isinstance(node, Open):
            if depth + 1 < len(parts):
                raise UndefinedName(
                    f"{here} is a single value; it has no field {parts[depth + 1]!r}"
                )
            return node.leaf
        if isinstance(node, str):
            parent = ".".join(parts[:depth])
            raise UndefinedName(f"{parent} is a single value; it has no field {part!r}")
        if part not in node:
            parent = ".".join(parts[:depth])
            known = sorted(node)
            where = f" in {parent}" if parent else ""
            listing = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
            hint = suggest(part, known) or (f" (known: {listing})" if known else "")
            raise UndefinedName(f"undefined {what} {here!r}: no {part!r}{where}{hint}")
        node = node[part]
    if isinstance(node, Mapping):
        fields = ", ".join(sorted(node)[:12])
        raise UndefinedName(
            f"{'.'.join(parts)} is a group of values; pick one of its fields: {fields}"
        )
    if isinstance(node, Open):
        raise UndefinedName(f"{'.'.join(parts)} needs a name after it, e.g. {'.'.join(parts)}.NAME")
    return node
