"""``${...}`` interpolation in workflow strings, and the redacted :class:`Secret` value.

Four namespaces can be referenced:

- ``${deployment.<field>}``: the deployment being examined (``service``, ``id``, ...);
- ``${workflow.<NAME>}``: a variable declared under ``variables:`` (or given with ``--set``);
- ``${env.<NAME>}``: an environment variable, always **secret**: it may be sent in a
  collector request but is never written into a plan, evidence or a log;
- ``${steps.<name>.<field>}``: an output of an earlier step.

Templates are parsed when the workflow is validated; names are checked against the
scope of the place they appear in (:mod:`afdp.workflow.scope`). Rendering is a single
pass: a substituted value is never scanned for ``${`` again, so values from ``--set`` or
a step cannot inject references. ``$${`` writes a literal ``${``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

NAMESPACES = ("deployment", "workflow", "env", "steps", "segment", "service")
MAX_RENDERED = 64 * 1024

_PLACEHOLDER = re.compile(r"\$\{\s*([A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*)\s*\}")
_BARE_DOLLAR = re.compile(r"(?<!\$)\$([A-Za-z_][A-Za-z0-9_]*)")
_BARE_NAME = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


class TemplateError(ValueError):
    """A malformed ``${...}``; ``offset`` is the 0-based character position in the string."""

    def __init__(self, message: str, offset: int = 0) -> None:
        super().__init__(message)
        self.offset = offset


class UnresolvedError(LookupError):
    """A template refers to a value that is not available when rendering."""


@dataclass(frozen=True)
class Placeholder:
    """One ``${a.b.c}``: its path ``parts`` and where it starts in the string."""

    parts: tuple[str, ...]
    offset: int = 0

    @property
    def dotted(self) -> str:
        """Return ``a.b.c``."""
        return ".".join(self.parts)

    @property
    def secret(self) -> bool:
        """Return True for ``${env.*}``."""
        return self.parts[0] == "env"

    def __str__(self) -> str:
        return "${" + self.dotted + "}"


class Secret:
    """A string built from one or more ``${env.*}`` values; it never shows them.

    ``str()``, ``repr()`` and formatting give the redacted text (``[redacted env.NAME]``
    in place of each value). Only :meth:`reveal` returns the real string, for the one
    place that sends it (a collector request). Pickling is refused so a secret cannot be
    persisted by accident (for example as a cached task input).
    """

    __slots__ = ("_parts",)
    _parts: tuple[str | tuple[str, str | None], ...]

    def __init__(self, parts: tuple[str | tuple[str, str | None], ...]) -> None:
        object.__setattr__(self, "_parts", parts)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("Secret is immutable")

    @property
    def names(self) -> tuple[str, ...]:
        """Return the environment variable names this value is built from."""
        return tuple(part[0] for part in self._parts if isinstance(part, tuple))

    def redacted(self) -> str:
        """Return the text with every secret part replaced by ``[redacted env.NAME]``."""
        return "".join(
            part if isinstance(part, str) else f"[redacted env.{part[0]}]" for part in self._parts
        )

    def reveal(self) -> str:
        """Return the real text, for sending in a request only.

        Raises:
            UnresolvedError: an environment variable it needs was not set.
        """
        out: list[str] = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
            elif part[1] is None:
                raise UnresolvedError(f"environment variable {part[0]} is not set")
            else:
                out.append(part[1])
        return "".join(out)

    def __str__(self) -> str:
        return self.redacted()

    def __repr__(self) -> str:
        return f"Secret({self.redacted()!r})"

    def __format__(self, spec: str) -> str:
        return format(self.redacted(), spec)

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled or persisted; resolve it where it is used")

    def __eq__(self, other: object) -> bool:
        # Equal only to itself: comparing contents would let code probe a secret's value.
        return self is other

    def __hash__(self) -> int:
        return id(self)


@dataclass(frozen=True)
class Template:
    """A parsed string: literal text and :class:`Placeholder` parts, in order."""

    source: str
    parts: tuple[str | Placeholder, ...]

    @property
    def placeholders(self) -> tuple[Placeholder, ...]:
        """Return the ``${...}`` references, in order."""
        return tuple(part for part in self.parts if isinstance(part, Placeholder))

    @property
    def is_literal(self) -> bool:
        """Return True when there is nothing to substitute."""
        return not any(isinstance(part, Placeholder) for part in self.parts)

    @property
    def secret(self) -> bool:
        """Return True when rendering yields a :class:`Secret`."""
        return any(isinstance(part, Placeholder) and part.secret for part in self.parts)

    def __str__(self) -> str:
        return self.source

    def render(
        self,
        values: Mapping[str, Any],
        *,
        env: Mapping[str, str] | None = None,
        keep_missing: bool = False,
        missing: list[str] | None = None,
    ) -> str | Secret:
        """Substitute every placeholder.

        ``values`` maps ``deployment``, ``workflow`` and ``steps`` to nested mappings;
        ``env`` is the environment (None: values unknown, as in a plan). Secrets stay
        inside a :class:`Secret`. With ``keep_missing`` an unavailable value is left as
        ``${...}`` and its name appended to ``missing``.

        Returns:
            A ``str``, or a :class:`Secret` when any ``${env.*}`` is used.

        Raises:
            UnresolvedError: a value is unavailable (and not ``keep_missing``), or the
                result is longer than :data:`MAX_RENDERED`.
        """
        out: list[str | tuple[str, str | None]] = []
        size = 0
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                size += len(part)
                continue
            if part.secret:
                name = part.parts[1]
                value = None if env is None else env.get(name)
                if value is None and env is not None and not keep_missing:
                    raise UnresolvedError(
                        f"environment variable {name} is not set (needed by {part})"
                    )
                out.append((name, value))
                size += len(value or "")
                continue
            try:
                found = _find(values, part.parts)
            except UnresolvedError:
                if not keep_missing:
                    raise
                if missing is not None:
                    missing.append(part.dotted)
                found = str(part)
            text = found.redacted() if isinstance(found, Secret) else _as_text(found)
            out.append(text)
            size += len(text)
            if size > MAX_RENDERED:
                raise UnresolvedError(
                    f"{self.source[:40]!r} expands to more than {MAX_RENDERED} characters"
                )
        if any(isinstance(part, tuple) for part in out):
            return Secret(tuple(out))
        return "".join(out)  # type: ignore[arg-type]


def _find(values: Mapping[str, Any], parts: tuple[str, ...]) -> Any:
    current: Any = values
    for part in parts:
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        else:
            raise UnresolvedError(f"${{{'.'.join(parts)}}} has no value")
    return current


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def parse_template(
    text: str, *, check_bare_dollar: bool = False, bare_env: bool = False
) -> Template:
    """Parse ``${...}`` references in ``text``.

    With ``check_bare_dollar`` a shell-style ``$NAME`` is an error (in URLs and headers it
    is almost always a forgotten ``${env.NAME}``). With ``bare_env`` (the places where
    credentials go: a collector's URL, endpoint or connection, headers, webhooks) it is
    read as ``${env.NAME}``, a secret, and ``$$NAME`` writes a literal ``$NAME``.

    Returns:
        The :class:`Template`.

    Raises:
        TemplateError: an unclosed, empty, nested or malformed ``${...}``, an unknown
            namespace, a namespace without a field, or a bare ``$NAME``.
    """
    parts: list[str | Placeholder] = []
    literal: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        start = text.find("$", i)
        if start < 0:
            literal.append(text[i:])
            break
        literal.append(text[i:start])
        if text.startswith("$${", start):
            literal.append("${")
            i = start + 3
            continue
        if not text.startswith("${", start):
            if bare_env:
                escaped = _BARE_NAME.match(text, start + 1) if text.startswith("$$", start) else None
                if escaped:  # $$NAME: a literal $NAME
                    literal.append("$" + escaped.group(1))
                    i = escaped.end()
                    continue
                bare = _BARE_NAME.match(text, start)
                if bare:
                    joined = "".join(literal)
                    if joined:
                        parts.append(joined)
                    literal = []
                    parts.append(Placeholder(("env", bare.group(1)), start))
                    i = bare.end()
                    continue
            if check_bare_dollar:
                bare = _BARE_DOLLAR.match(text, start)
                if bare:
                    raise TemplateError(
                        f"${bare.group(1)} is not interpolated; write ${{env.{bare.group(1)}}} "
                        "for an environment variable (secret)",
                        start,
                    )
            literal.append("$")
            i = start + 1
            continue
        end = text.find("}", start)
        if end < 0:
            raise TemplateError("'${' is not closed with '}'", start)
        inner = text[start + 2 : end]
        if "${" in inner:
            raise TemplateError("nested ${...} is not supported", start)
        match = _PLACEHOLDER.match(text, start)
        if match is None or match.end() != end + 1:
            raise TemplateError(_malformed(inner), start)
        placeholder = Placeholder(tuple(match.group(1).split(".")), start)
        _check_namespace(placeholder)
        joined = "".join(literal)
        if joined:
            parts.append(joined)
        literal = []
        parts.append(placeholder)
        i = end + 1
    if literal and "".join(literal):
        parts.append("".join(literal))
    return Template(text, tuple(parts))


def _malformed(inner: str) -> str:
    stripped = inner.strip()
    if not stripped:
        return "empty ${}; expected ${namespace.name}, e.g. ${deployment.service}"
    if ":-" in stripped or ":=" in stripped or "|" in stripped:
        return f"${{{stripped}}}: defaults and filters are not supported; declare a variable with a default under variables:"
    if "(" in stripped:
        return f"${{{stripped}}}: function calls are not allowed in ${{...}}"
    return f"${{{stripped}}} is not a reference; expected names separated by dots, e.g. ${{workflow.ENVIRONMENT}}"


def _check_namespace(placeholder: Placeholder) -> None:
    from afdp.workflow.scope import suggest

    head = placeholder.parts[0]
    if head not in NAMESPACES:
        hint = suggest(head, NAMESPACES) or f"; expected one of {', '.join(NAMESPACES)}"
        raise TemplateError(
            f"unknown namespace {head!r} in {placeholder}{hint}", placeholder.offset
        )
    if len(placeholder.parts) == 1:
        raise TemplateError(
            f"{placeholder} needs a field, e.g. ${{{head}.NAME}}", placeholder.offset
        )


def variable_order(references: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Order variables so each comes after the variables its default refers to.

    ``references`` maps a variable name to the names of the ``${workflow.*}`` it uses.

    Returns:
        The names in a resolvable order.

    Raises:
        TemplateError: the references form a cycle; the message shows it
            (``workflow.A -> workflow.B -> workflow.A``).
    """
    order: list[str] = []
    state: dict[str, int] = {}  # 1: in progress, 2: done
    for root in references:
        if state.get(root) == 2:
            continue
        # Iterative depth-first search: a long chain of variables must not hit Python's
        # recursion limit.
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = []
        while stack:
            name, index = stack.pop()
            if index == 0:
                if state.get(name) == 2:
                    continue
                if state.get(name) == 1:
                    cycle = [*path[path.index(name) :], name]
                    raise TemplateError(
                        "recursive interpolation: " + " -> ".join(f"workflow.{n}" for n in cycle)
                    )
                state[name] = 1
                path.append(name)
            deps = [d for d in references.get(name, ()) if d in references]
            if index < len(deps):
                stack.append((name, index + 1))
                stack.append((deps[index], 0))
            else:
                state[name] = 2
                path.pop()
                order.append(name)
    return order
