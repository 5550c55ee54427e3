"""Safe YAML loading with line and column for every value.

Workflow and policy files are read with these defences, each reported as a
:class:`~afdp.workflow.findings.Finding` with file, line and column:

1. Size: at most :data:`MAX_BYTES` (1 MiB), checked before reading.
2. Encoding: UTF-8 (a BOM is allowed).
3. Tabs in indentation: YAML forbids them; we say so instead of a parser riddle.
4. Nesting: at most :data:`MAX_DEPTH` levels (libyaml is quadratic on deep flow nesting,
   so ``[[[[...`` is refused before the parser sees it).
5. One document; no Python or custom tags; mapping keys are plain strings.
6. Duplicate keys are errors (PyYAML silently keeps the last one).
7. Anchors and aliases are allowed, but their expansion is bounded by
   :data:`MAX_VALUES` (billion laughs) and self-referencing aliases are refused.

Plain scalars follow the YAML 1.2 core schema: ``yes``, ``no``, ``on`` and ``off`` stay
strings, ``1_000`` and ``1:30`` are strings, only ``true``/``false`` are booleans. The
result is plain JSON data (dict, list, str, int, float, bool, None), ready for JSON Schema
and RFC 8785, plus a map from document path to source position.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from afdp.errors import UsageError
from afdp.evidence.yamldata import MAX_DEPTH, MAX_NODES
from afdp.workflow.findings import Finding, WorkflowInvalid, format_path

MAX_BYTES = 1024 * 1024
# The bounds of every other YAML AFDP reads (afdp.evidence.yamldata); this loader walks
# libyaml's events itself to keep each value's line and column, within the same bounds.
MAX_VALUES = MAX_NODES
MAX_INT = 2**53 - 1  # I-JSON: integers beyond this are not portable (RFC 8785 refuses them)

DocPath = tuple[str | int, ...]

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "\x00<<"  # internal marker for a plain ``<<`` key; a quoted "<<" is an ordinary key

_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_TRUES = frozenset({"true", "True", "TRUE"})
_FALSES = frozenset({"false", "False", "FALSE"})
_INT_RE = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
_FLOAT_RE = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_SPECIAL_FLOATS = frozenset(
    {
        ".inf",
        ".Inf",
        ".INF",
        "+.inf",
        "+.Inf",
        "+.INF",
        "-.inf",
        "-.Inf",
        "-.INF",
        ".nan",
        ".NaN",
        ".NAN",
    }
)
_BRACKETS = re.compile(r"[\[\]{}]")
_TAB_INDENT = re.compile(r"^[ ]*\t", re.MULTILINE)


@dataclass(frozen=True)
class Mark:
    """A 1-based line and column in a source file."""

    line: int
    column: int


@dataclass(frozen=True)
class Document:
    """A parsed YAML document: plain JSON ``data`` and where each value came from.

    ``marks`` maps a document path to the position of its value; ``key_marks`` to the
    position of the mapping key that holds it (a better place to point at for a
    mapping value or a missing key).
    """

    name: str
    data: Any
    marks: Mapping[DocPath, Mark] = field(default_factory=dict)
    key_marks: Mapping[DocPath, Mark] = field(default_factory=dict)
    #: The file's bytes exactly as read (None for a document parsed from text): what a
    #: run stores in its evidence, so an auditor reads exactly what ran.
    raw: bytes | None = field(default=None, compare=False, repr=False)

    def locate(self, path: DocPath, *, prefer_key: bool = False) -> Mark:
        """Return the position of ``path``, or of its nearest ancestor that has one."""
        probe = tuple(path)
        while True:
            if prefer_key and probe in self.key_marks:
                return self.key_marks[probe]
            mark = self.marks.get(probe)
            if mark is not None:
                return mark
            if not probe:
                return Mark(1, 1)
            probe = probe[:-1]

    def finding(
        self, path: DocPath, message: str, *, prefer_key: bool = False, rule: str = ""
    ) -> Finding:
        """Return a :class:`Finding` at ``path`` in this document."""
        mark = self.locate(path, prefer_key=prefer_key)
        return Finding(self.name, mark.line, mark.column, format_path(path), message, rule)


def read_source(path: str | Path, *, what: str = "workflow") -> tuple[str, str]:
    """Read a YAML file for :func:`parse`: return ``(display name, text)``.

    Raises:
        UsageError: the file does not exist, is a directory or cannot be read (exit 2).
        WorkflowInvalid: larger than :data:`MAX_BYTES` or not UTF-8 (exit 1).
    """
    name, raw = read_bytes(path, what=what)
    return name, decode(name, raw)


def read_bytes(path: str | Path, *, what: str = "workflow") -> tuple[str, bytes]:
    """Read a YAML file's bytes: return ``(display name, bytes)`` (not yet decoded).

    Raises:
        UsageError: the file does not exist, is a directory or cannot be read (exit 2).
        WorkflowInvalid: larger than :data:`MAX_BYTES` or not UTF-8 (exit 1).
    """
    file = Path(path)
    name = str(path)
    try:
        size = file.stat().st_size
    except FileNotFoundError:
        raise UsageError(f"{what} file not found: {name}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {what} file {name}: {exc.strerror or exc}") from None
    if file.is_dir():
        raise UsageError(f"{what} file {name} is a directory")
    if size > MAX_BYTES:
        raise WorkflowInvalid([_too_big(name, size, what)])
    try:
        with file.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {what} file {name}: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:  # grew between stat and read, or a device
        raise WorkflowInvalid([_too_big(name, len(raw), what)])
    return name, raw


def _too_big(name: str, size: int, what: str = "workflow") -> Finding:
    return Finding(
        name, 0, 0, "(file)", f"file is {size / 1e6:.1f} MB; {what} files are limited to 1 MiB"
    )


def decode(name: str, raw: bytes) -> str:
    """Return ``raw`` decoded as UTF-8 (BOM allowed).

    Raises:
        WorkflowInvalid: the bytes are not UTF-8, located at the first bad byte.
    """
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        raise WorkflowInvalid(
            [Finding(name, line, column, "(file)", f"not UTF-8 text (byte 0x{raw[exc.start]:02x})")]
        ) from None


def load(path: str | Path, *, what: str = "workflow") -> Document:
    """Read and parse one YAML file with every defence of this module.

    Returns:
        The :class:`Document`.

    Raises:
        UsageError: the file is missing or unreadable (exit 2).
        WorkflowInvalid: every problem found, each located (exit 1).
    """
    name, raw = read_bytes(path, what=what)
    return dataclasses.replace(parse(decode(name, raw), name=name), raw=raw)


def parse(text: str, *, name: str = "<string>") -> Document:
    """Parse YAML text into a :class:`Document`.

    Raises:
        WorkflowInvalid: too large, tabs in indentation, too deep, not YAML, more than one
            document, a forbidden tag, duplicate keys, or aliases that expand too far.
    """
    if len(text) > MAX_BYTES:
        raise WorkflowInvalid([_too_big(name, len(text.encode("utf-8", "replace")))])
    findings = _precheck(text, name)
    if findings:
        raise WorkflowInvalid(findings)
    return _Builder(text, name).build()


def _show_tag(tag: str) -> str:
    return (
        "!!" + tag.removeprefix("tag:yaml.org,2002:")
        if tag.startswith("tag:yaml.org,2002:")
        else tag
    )


def _precheck(text: str, name: str) -> list[Finding]:
    findings: list[Finding] = []
    for match in _TAB_INDENT.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        column = match.end() - match.start()
        findings.append(
            Finding(
                name,
                line,
                column,
                "(file)",
                "tab character in indentation; YAML indents with spaces only",
            )
        )
        if len(findings) >= 20:
            break
    if findings:
        return findings
    depth = 0
    for match in _BRACKETS.finditer(text):
        if match.group() in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                line = text.count("\n", 0, match.start()) + 1
                column = match.start() - text.rfind("\n", 0, match.start())
                return [
                    Finding(
                        name, line, column, "(file)", f"nested more than {MAX_DEPTH} levels deep"
                    )
                ]
        elif depth:
            depth -= 1
    return findings


class _Frame:
    """A mapping or sequence being built (the parser's events arrive flat)."""

    __slots__ = ("anchor", "count", "key", "key_mark", "merges", "path", "seen", "value")

    def __init__(
        self, value: dict[str, Any] | list[Any], path: DocPath, anchor: str | None
    ) -> None:
        self.value = value
        self.path = path
        self.anchor = anchor
        self.count = 1
        self.key: str | None = None  # a mapping's pending key (None: expecting a key)
        self.key_mark: Mark | None = None
        self.merges: list[Any] = []
        self.seen: dict[str, Mark] = {}


class _Builder:
    """Turns libyaml events into JSON data, marks and findings, iteratively."""

    def __init__(self, text: str, name: str) -> None:
        self.text = text
        self.name = name
        self.marks: dict[DocPath, Mark] = {}
        self.key_marks: dict[DocPath, Mark] = {}
        self.findings: list[Finding] = []
        self.anchors: dict[str, tuple[Any, int]] = {}  # name -> (value, expanded size)
        self.open_anchors: set[str] = set()
        self.total = 0

    def build(self) -> Document:
        import yaml

        loader_class = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        loader = loader_class(self.text)
        try:
            data = self._run(loader, yaml)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
            line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
            raise WorkflowInvalid(
                [Finding(self.name, line, column, "(file)", f"not valid YAML: {problem}")]
            ) from None
        except yaml.YAMLError as exc:
            raise WorkflowInvalid(
                [Finding(self.name, 0, 0, "(file)", f"not valid YAML: {exc}")]
            ) from None
        finally:
            loader.dispose()
        if self.findings:
            raise WorkflowInvalid(self.findings)
        return Document(self.name, data, self.marks, self.key_marks)

    def _fail(self, mark: Mark, path: DocPath, message: str) -> None:
        self.findings.append(Finding(self.name, mark.line, mark.column, format_path(path), message))

    def _run(self, loader: Any, yaml: Any) -> Any:
        stack: list[_Frame] = []
        result: Any = None
        documents = 0
        while loader.check_event():
            event = loader.get_event()
            kind = type(event)
            mark = Mark(event.start_mark.line + 1, event.start_mark.column + 1)
            if kind is yaml.DocumentStartEvent:
                documents += 1
                if documents > 1:
                    raise WorkflowInvalid(
                        [
                            Finding(
                                self.name,
                                mark.line,
                                mark.column,
                                "(file)",
                                "expected one YAML document, found a second",
                            )
                        ]
                    )
                continue
            if kind in (yaml.StreamStartEvent, yaml.StreamEndEvent, yaml.DocumentEndEvent):
                continue
            if kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
                frame = stack.pop()
                if isinstance(frame.value, dict) and frame.merges:
                    self._merge(frame)
                if frame.anchor is not None:
                    self.open_anchors.discard(frame.anchor)
                    self.anchors[frame.anchor] = (frame.value, frame.count)
                if stack:
                    stack[-1].count += frame.count
                    self._attach(stack[-1], frame.value, frame.path, mark)
                else:
                    result = frame.value
                continue

            parent = stack[-1] if stack else None
            # A scalar in key position of a mapping is a key, not a value.
            if parent is not None and isinstance(parent.value, dict) and parent.key is None:
                if kind is not yaml.ScalarEvent:
                    self._fail(
                        mark,
                        parent.path,
                        "mapping keys must be plain strings, not lists or mappings",
                    )
                    raise WorkflowInvalid(self.findings)
                self._take_key(parent, event, mark)
                continue

            path = self._child_path(parent)
            if kind is yaml.AliasEvent:
                value, size = self._alias(event.anchor, mark, path)
                if parent is None:
                    result = value
                else:
                    parent.count += size
                    self._attach(parent, value, path, mark)
                continue

            anchor = getattr(event, "anchor", None)
            if kind is yaml.ScalarEvent:
                value = self._scalar(event, mark, path)
                self.total += 1
                if anchor is not None:
                    self.anchors[anchor] = (value, 1)
                self.marks[path] = mark
                if parent is None:
                    result = value
                else:
                    parent.count += 1
                    self._attach(parent, value, path, mark)
                continue

            # Start of a mapping or sequence.
            is_map = kind is yaml.MappingStartEvent
            tag = event.tag
            if tag not in (None, "!", _MAP if is_map else _SEQ):
                self._fail(
                    mark, path, f"YAML tag {_show_tag(tag)} is not allowed in workflow files"
                )
            if len(stack) >= MAX_DEPTH:
                self._fail(mark, path, f"nested more than {MAX_DEPTH} levels deep")
                raise WorkflowInvalid(self.findings)
            self.marks[path] = mark
            self.total += 1
            if anchor is not None:
                self.open_anchors.add(anchor)
            stack.append(_Frame({} if is_map else [], path, anchor))
        if documents == 0:
            raise WorkflowInvalid(
                [Finding(self.name, 1, 1, "(file)", "the file is empty; expected a YAML mapping")]
            )
        return result

    def _child_path(self, parent: _Frame | None) -> DocPath:
        if parent is None:
            return ()
        if isinstance(parent.value, dict):
            assert parent.key is not None
            return (*parent.path, parent.key)
        return (*parent.path, len(parent.value))

    def _take_key(self, frame: _Frame, event: Any, mark: Mark) -> None:
        if event.tag not in (None, "!", _STR):
            self._fail(
                mark, frame.path, f"YAML tag {_show_tag(event.tag)} is not allowed on a mapping key"
            )
        # Keys are names: always the text as written, so ``on:`` or ``1:`` never turn
        # into booleans or numbers.
        key = event.value
        if key == "<<" and event.implicit[0]:
            frame.key = _MERGE
            frame.key_mark = mark
            return
        if key in frame.seen:
            first = frame.seen[key]
            self._fail(
                mark,
                (*frame.path, key),
                f"duplicate key {key!r} (first defined at line {first.line}, column {first.column})",
            )
        else:
            frame.seen[key] = mark
        frame.key = key
        frame.key_mark = mark
        self.key_marks.setdefault((*frame.path, key), mark)

    def _attach(self, frame: _Frame, value: Any, path: DocPath, mark: Mark) -> None:
        if isinstance(frame.value, list):
            frame.value.append(value)
            return
        key = frame.key
        frame.key = None
        if key == _MERGE:
            sources = value if isinstance(value, list) else [value]
            if not all(isinstance(source, dict) for source in sources):
                self._fail(mark, path, "a merge key (<<) takes a mapping or a list of mappings")
            else:
                frame.merges.extend(sources)
            return
        assert key is not None
        if key not in frame.value:  # a duplicate keeps the first value; it is reported anyway
            frame.value[key] = value

    def _merge(self, frame: _Frame) -> None:
        assert isinstance(frame.value, dict)
        # Explicit keys win over merged ones; earlier merge sources win over later ones.
        for source in frame.merges:
            for key, value in source.items():
                if key not in frame.value:
                    frame.value[key] = value

    def _alias(self, anchor: str, mark: Mark, path: DocPath) -> tuple[Any, int]:
        if anchor in self.open_anchors:
            self._fail(
                mark, path, f"alias *{anchor} refers to a value that contains it (recursive alias)"
            )
            raise WorkflowInvalid(self.findings)
        if anchor not in self.anchors:
            self._fail(mark, path, f"alias *{anchor} refers to no anchor &{anchor} before it")
            raise WorkflowInvalid(self.findings)
        value, size = self.anchors[anchor]
        self.total += size
        if self.total > MAX_VALUES:
            self._fail(
                mark,
                path,
                f"aliases expand to more than {MAX_VALUES} values (a 'billion laughs' document?); "
                "write the values out or use fewer aliases",
            )
            raise WorkflowInvalid(self.findings)
        self.marks.setdefault(path, mark)
        return value, size

    def _scalar(self, event: Any, mark: Mark, path: DocPath) -> Any:
        text: str = event.value
        tag = event.tag
        if tag is None and event.implicit[0]:
            return self._plain(text, mark, path)
        if tag in (None, "!", _STR):  # quoted, or explicitly a string
            return text
            return text
        if tag in (_INT, _FLOAT, _BOOL, _NULL):
            value = self._plain(text, mark, path)
            kinds: dict[str, type | tuple[type, ...]] = {
                _INT: int,
                _FLOAT: (int, float),
                _BOOL: bool,
                _NULL: type(None),
            }
            expected = kinds[tag]
            if isinstance(value, bool) and tag != _BOOL or not isinstance(value, expected):
                self._fail(mark, path, f"{text!r} is not a valid {tag.rsplit(':', 1)[-1]}")
                return text
            return float(value) if tag == _FLOAT and isinstance(value, int) else value
        self._fail(mark, path, f"YAML tag {_show_tag(tag)} is not allowed in workflow files")
        return text

    def _plain(self, text: str, mark: Mark, path: DocPath) -> Any:
        """Resolve a plain scalar by the YAML 1.2 core schema."""
        if text in _NULLS:
            return None
        if text in _TRUES:
            return True
        if text in _FALSES:
            return False
        first = text[0]
        if first.isdigit() or first in "+-.":
            if _INT_RE.fullmatch(text):
                value = int(text, 0) if text.startswith(("0o", "0x")) else int(text)
                if abs(value) > MAX_INT:
                    self._fail(
                        mark,
                        path,
                        f"integer {text} is too large for JSON (limit 2^53 - 1); quote it if it is a name",
                    )
                    return text
                return value
            if _FLOAT_RE.fullmatch(text):
                number = float(text)
                if not math.isfinite(number):
                    self._fail(mark, path, f"number {text} is out of range")
                    return text
                return number
            if text in _SPECIAL_FLOATS:
                self._fail(
                    mark, path, f"{text} is not a finite number; JSON has no infinities or NaN"
                )
                return text
        return text
