"""Findings: one located problem in a workflow or policy file, and the errors that carry them.

Every check (YAML, schema, units, expressions, interpolation, policy) reports a
:class:`Finding` with file, line, column, the path inside the document and a message
saying what was expected. Checks collect findings instead of stopping at the first, so
a user sees every problem at once; :class:`WorkflowInvalid` and :class:`PolicyRejected`
carry them to the CLI, which prints each one and exits 1. A broken admission-policy
file is the operator's configuration error: :class:`PolicyInvalid` (exit 2).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from afdp.errors import ConfigurationError, PolicyViolation, SchemaError

Path = tuple[str | int, ...]

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def format_path(path: Sequence[str | int]) -> str:
    """Return a document path as text: ``workflow.post_deployment[1].wait`` (``(top level)`` for root)."""
    if not path:
        return "(top level)"
    out: list[str] = []
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _PLAIN_KEY.fullmatch(part):
            out.append(f".{part}" if out else part)
        else:
            out.append(f"[{part!r}]")
    return "".join(out)


@dataclass(frozen=True, order=True)
class Finding:
    """One problem: where it is (file, 1-based line and column, document path) and what is wrong.

    ``rule`` names the admission-policy rule for policy findings (empty otherwise).
    ``level`` is empty for a problem; ``warning`` (a construct that would give a
    meaningless verdict) or ``note`` (how AFDP reads something the file leaves open) for
    what a valid workflow still tells its author (:attr:`Workflow.notes`).
    """

    file: str
    line: int
    column: int
    path: str
    message: str
    rule: str = ""
    level: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        level = f"{self.level}: " if self.level else ""
        return f"{where}: {self.path}: {level}{self.message}"

    def to_json(self) -> dict[str, object]:
        """Return the finding as a JSON object (``--json`` output)."""
        out: dict[str, object] = {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
        }
        if self.rule:
            out["rule"] = self.rule
        if self.level:
            out["level"] = self.level
        return out


def _summary(what: str, findings: Sequence[Finding]) -> str:
    if len(findings) == 1:
        return str(findings[0])
    files = sorted({f.file for f in findings})
    return f"{', '.join(files)}: {len(findings)} {what}"


def unique(findings: Iterable[Finding]) -> tuple[Finding, ...]:
    """Return findings sorted by position, without exact duplicates (two checks may agree)."""
    return tuple(sorted(set(findings), key=lambda f: (f.file, f.line, f.column, f.path, f.message)))


def _diagnostics(summary: str, findings: Sequence[Finding]) -> str:
    if len(findings) <= 1:
        return summary
    return "\n".join([summary, *(f"  {finding}" for finding in findings)])


class WorkflowInvalid(SchemaError):
    """A workflow (or policy) file is not valid; ``findings`` lists every problem (exit 1)."""

    def __init__(self, findings: Sequence[Finding]) -> None:
        self.findings: tuple[Finding, ...] = unique(findings)
        super().__init__(_summary("problems", self.findings))

    def diagnostics(self) -> str:
        """Return the summary line, then every finding on its own line."""
        return _diagnostics(str(self), self.findings)


class PolicyRejected(PolicyViolation):
    """A valid workflow breaks admission-policy rules; ``findings`` names each rule (exit 1)."""

    def __init__(self, findings: Sequence[Finding]) -> None:
        self.findings: tuple[Finding, ...] = unique(findings)
        super().__init__(_summary("admission policy violations", self.findings))

    def diagnostics(self) -> str:
        """Return the summary line, then every violation on its own line."""
        return _diagnostics(str(self), self.findings)


class PolicyInvalid(ConfigurationError):
    """An admission-policy file is not valid; ``findings`` lists every problem (exit 2)."""

    def __init__(self, findings: Sequence[Finding]) -> None:
        self.findings: tuple[Finding, ...] = unique(findings)
        super().__init__(_summary("problems in the admission policy", self.findings))

    def diagnostics(self) -> str:
        """Return the summary line, then every problem on its own line."""
        return _diagnostics(str(self), self.findings)
