"""Validation of a workflow file as ``afdp validate`` reports it: every finding at once.

:func:`validate_file` runs the same checks as :func:`afdp.workflow.load_workflow` (safe
YAML, schema, compiler, admission policy) but returns a :class:`Validation` instead of
raising for a bad workflow, so the CLI can print every finding, as text or JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from afdp.workflow.findings import Finding, PolicyRejected, WorkflowInvalid
from afdp.workflow.model import Workflow

Verdict = Literal["valid", "invalid", "rejected"]


@dataclass(frozen=True)
class Validation:
    """The result of validating one file.

    ``verdict`` is ``valid``; ``invalid`` (the file is not a valid workflow: ``findings``
    are its problems, and the policy was not consulted); or ``rejected`` (a valid
    workflow that breaks admission rules: ``findings`` name each rule).
    """

    file: str
    verdict: Verdict
    findings: tuple[Finding, ...]
    policy: str
    policy_source: str
    workflow: Workflow | None = None

    @property
    def ok(self) -> bool:
        """Return True when the workflow is valid and admitted."""
        return self.verdict == "valid"

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form (``afdp validate --json``)."""
        workflow = self.workflow
        return {
            "file": self.file,
            "valid": self.ok,
            "verdict": self.verdict,
            "policy": {"name": self.policy, "source": self.policy_source},
            "workflow": None
            if workflow is None
            else {
                "name": workflow.name,
                "version": workflow.version,
                "digest": workflow.digest,
                "phases": len(workflow.phases),
                "steps": len(workflow.steps),
                "max_duration": workflow.max_duration().to_json(),
            },
            "findings": [
                {**finding.to_json(), "kind": "policy" if finding.rule else "invalid"}
                for finding in self.findings
            ],
            "notes": [note.to_json() for note in (workflow.notes if workflow else ())],
        }


def validate_file(path: str | Path, *, policy: str | Path | None = None) -> Validation:
    """Validate the workflow at ``path`` and check it against ``policy`` (default: shipped).

    Returns:
        The :class:`Validation` (valid, invalid or rejected, with every finding).

    Raises:
        UsageError: the workflow or policy file is missing or unreadable (exit 2).
        PolicyInvalid: the policy file is not a valid policy (exit 2).
    """
    from afdp.workflow.compiler import compile_document
    from afdp.workflow.loader import load
    from afdp.workflow.policy import load_policy

    rules = load_policy(policy)
    name = str(path)
    try:
        document = load(path)
        workflow = compile_document(document, policy_channels=rules.channel_names)
    except WorkflowInvalid as exc:
        return Validation(name, "invalid", exc.findings, rules.name, rules.source)
    try:
        rules.admit(workflow, document)
    except PolicyRejected as exc:
        return Validation(name, "rejected", exc.findings, rules.name, rules.source, workflow)
    return Validation(name, "valid", (), rules.name, rules.source, workflow)


__all__ = ["Validation", "validate_file"]
