"""The workflow language: YAML definitions of how evidence about a deployment is collected.

:func:`load_workflow` is the one entry point the rest of AFDP uses: it reads a file
safely (:mod:`.loader`), validates and compiles it into the typed, immutable
:class:`~afdp.workflow.model.Workflow` (:mod:`.compiler`) and checks it against an
admission policy (:mod:`.policy`). Nothing heavy is imported here, so the CLI starts fast.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from afdp.workflow.model import Workflow
    from afdp.workflow.policy import AdmissionPolicy


def load_workflow(
    path: str | Path,
    *,
    policy: str | Path | AdmissionPolicy | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Workflow:
    """Read, validate, compile and admit the workflow at ``path``.

    ``policy`` is an admission-policy file (or a loaded :class:`AdmissionPolicy`); None
    applies the shipped default, ``policies/admission.yaml``. ``overrides`` are the
    ``${workflow.*}`` values the run will set: the policy checks hosts and programs with
    them.

    Returns:
        The admitted :class:`~afdp.workflow.model.Workflow`.

    Raises:
        UsageError: the workflow or policy file is missing or unreadable (exit 2).
        PolicyInvalid: the policy file is not a valid policy (exit 2).
        WorkflowInvalid: every problem in the workflow, each located (exit 1).
        PolicyRejected: every admission rule the workflow breaks, each located (exit 1).
    """
    from afdp.workflow.compiler import compile_document
    from afdp.workflow.loader import load
    from afdp.workflow.policy import AdmissionPolicy, load_policy

    rules = policy if isinstance(policy, AdmissionPolicy) else load_policy(policy)
    document = load(path)
    workflow = dataclasses.replace(compile_document(document, policy_channels=rules.channel_names), source_bytes=document.raw)
    return rules.admit(workflow, document, overrides=overrides)


__all__ = ["load_workflow"]
