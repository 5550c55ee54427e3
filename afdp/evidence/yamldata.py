"""YAML that someone else may have written (a trust policy in an evidence package), read
within bounds.

``yaml.safe_load`` is safe from code execution, not from size: an alias (``*a``) is one
shared object, so a 600-byte document of nested aliases ("billion laughs") loads fast
and is then a structure of a billion elements to anything that walks or prints it
(schema validation does both: ``[...] is not of type 'string'``). A document nested a
few thousand levels deep overflows the composer's recursion. :func:`load_yaml` refuses
both, as a :class:`yaml.YAMLError` (every caller already turns that into one line):
the document may nest at most :data:`MAX_DEPTH` levels and, with every alias expanded,
hold at most ``max_nodes`` nodes. Anchors and aliases within those bounds still work.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["MAX_DEPTH", "MAX_NODES", "YAMLTooLarge", "load_yaml"]

#: Nesting levels a document may have (a trust policy has four).
MAX_DEPTH = 64
#: Nodes a document may hold with every alias expanded (a trust policy of a hundred
#: signers has about a thousand).
MAX_NODES = 200_000


class YAMLTooLarge(yaml.YAMLError):
    """The document nests too deeply or expands (through aliases) to too many nodes."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer counts its depth (the composer recurses per level)."""

    def __init__(self, stream: str | bytes) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise YAMLTooLarge(
                    f"nests deeper than {MAX_DEPTH} levels (line {mark.line + 1}); refused"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded_size(node: yaml.Node, limit: int) -> int:
    """The node count of ``node`` with every alias expanded, counting stops past ``limit``.

    Aliases are shared node objects, so each distinct node's size is computed once: the
    work is linear in the document, not in its expansion. Depth is bounded by the loader.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(current: yaml.Node) -> int:
        known = sizes.get(id(current))
        if known is not None:
            return known
        if id(current) in open_nodes:  # ``&a [*a]``: an alias inside its own anchor
            raise YAMLTooLarge("holds an alias inside its own anchor (a recursive structure); refused")
        open_nodes.add(id(current))
        total = 1
        if isinstance(current, yaml.SequenceNode):
            children: list[yaml.Node] = list(current.value)
        elif isinstance(current, yaml.MappingNode):
            children = [part for pair in current.value for part in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > limit:
                break
        open_nodes.discard(id(current))
        sizes[id(current)] = total
        return total

    return size(node)


def load_yaml(text: str | bytes, *, max_nodes: int = MAX_NODES) -> Any:
    """Return the one YAML document in ``text`` as plain data (as ``yaml.safe_load``).

    Raises:
        yaml.YAMLError: not valid YAML, more than one document, or (:class:`YAMLTooLarge`)
            nested deeper than :data:`MAX_DEPTH` or over ``max_nodes`` nodes with its
            aliases expanded.
    """
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        nodes = _expanded_size(node, max_nodes)
        if nodes > max_nodes:
            raise YAMLTooLarge(
                f"expands to more than {max_nodes} nodes through its aliases (&anchor/*alias); refused"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()
