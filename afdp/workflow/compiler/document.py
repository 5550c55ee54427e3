"""The whole document: from a parsed document to a validated Workflow.

The schema check, then every section in order (variables, collectors, metrics,
analyzers, stages, steps, decisions, actions, outputs), built into a
:class:`~afdp.workflow.model.Workflow`.
"""

from __future__ import annotations

from collections.abc import Collection

from afdp.errors import UsageError
from afdp.workflow import catalog
from afdp.workflow.compiler.context import _Context
from afdp.workflow.compiler.decisions import _Decisions
from afdp.workflow.compiler.notifications import _Notifications
from afdp.workflow.compiler.predictive import _Predictive
from afdp.workflow.compiler.steps import _Steps
from afdp.workflow.findings import WorkflowInvalid, unique
from afdp.workflow.loader import Document
from afdp.workflow.model import (
    Analyze,
    Capture,
    Check,
    Database,
    EnableFeature,
    Query,
    Step,
    Variable,
    Workflow,
)

SCHEMA = "workflow.v1"


def compile_document(document: Document, *, policy_channels: Collection[str] = ()) -> Workflow:
    """Validate a parsed workflow document and build the typed model.

    ``policy_channels`` are the names of the notification channels the admission policy
    that will judge the workflow provides: ``notify:`` may name them.

    Returns:
        The :class:`Workflow`.

    Raises:
        WorkflowInvalid: every structural and semantic problem, each located.
    """
    from afdp.workflow.structure import check

    findings = check(document, SCHEMA)
    compiler = _Compiler(document)
    compiler.provided_channels = frozenset(policy_channels)
    try:
        workflow = compiler.run()
    except Exception:
        # A document the schema rejected may break assumptions deep in the compiler;
        # the schema findings already explain it. Without them this is our bug.
        if not findings:
            raise
        workflow = None
    findings.extend(compiler.findings)
    if findings or workflow is None:
        raise WorkflowInvalid(findings)
    return workflow


class _Compiler(_Steps, _Decisions, _Notifications, _Predictive, _Context):
    """Every section of the language, compiled in order by :meth:`run`."""

    def run(self) -> Workflow:
        from afdp.evidence.canonical import digest

        data = self.data
        self.compile_variables()
        services = self.compile_services()
        self.compile_collectors()
        self.compile_metrics()
        self.compile_context()
        self.compile_analyzers()
        stages = self.compile_stages()
        predictive = self.compile_before_deployment()
        phases = (*predictive, *self.compile_steps(stages))
        decisions, criteria = self.compile_decisions()
        actions = self.compile_actions()
        notifications = self.compile_notifications()
        self.check_outputs()
        integrity = self.compile_integrity()
        used_metrics = {m for step in self.steps for m in _step_metrics(step)}
        used_metrics |= {m for a in self.analyzers.values() for m in a.metrics}
        metrics = tuple(m for m in self.metrics.values() if not m.builtin or m.name in used_metrics)
        used_collectors = {m.collector for m in metrics} | {
            p.collector for p in (s.params for s in self.steps) if isinstance(p, (Query, Check, Database))
        }
        collectors = tuple(
            c for c in self.collectors.values() if not c.builtin or c.name in used_collectors
        )
        triggers = data.get("triggers")
        if isinstance(triggers, list) and triggers and all(isinstance(t, str) for t in triggers):
            self.note(
                ("triggers",),
                f"runs may start only from {', '.join(triggers)}: `afdp run` is manual_trigger "
                "unless --trigger says otherwise, the GitHub Action and a Prefect deployment "
                "are deployment_completed; any other trigger is refused (exit 2), and the "
                "genesis record names the one that started the run",
            )
        version = data.get("version")
        try:
            workflow_digest = digest(self.doc.data)
        except UsageError as exc:
            # The YAML loader already refuses such numbers; a document built elsewhere may not.
            self.fail((), f"the workflow cannot be digested: {exc}")
            workflow_digest = ""
        return Workflow(
            name=str(data.get("name", "")),
            version="" if version is None else str(version),
            description=str(data.get("description", "")),
            triggers=tuple(data.get("triggers") or ("deployment_completed",)),
            phases=phases,
            collectors=collectors,
            metrics=metrics,
            analyzers=tuple(self.analyzers.values()),
            decisions=decisions,
            success_criteria=criteria,
            outputs=tuple(data.get("outputs") or ()),
            variables=tuple(
                Variable(name, value)
                for name, value in self.variables.items()
                if name not in self.default_variables
                or catalog.DEFAULT_VARIABLES[name][0] in {c.name for c in collectors}
                or (
                    catalog.DEFAULT_VARIABLES[name][0] == catalog.FLAG_FILE_USER
                    and any(isinstance(s.params, EnableFeature) for s in self.steps)
                )
            ),
            stages=tuple(stages),
            digest=workflow_digest,
            source=self.doc.name,
            actions=actions,
            notifications=notifications,
            document=self.doc.data,
            notes=unique(self.notes),
            boundary=self.boundary,
            integrity=integrity,
            context=self.context_metrics,
            services=services,
        )


def _step_metrics(step: Step) -> tuple[str, ...]:
    params = step.params
    if isinstance(params, (Capture, Analyze)):
        return params.metrics
    return ()
