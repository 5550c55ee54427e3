"""Outputs: of each step, for later ``${steps...}``, and the document's ``outputs:``.

What each step makes available to later ``${steps.<name>...}`` references (recorded
as each step is added, with the deployment mark it may set), the scope a step sees,
and the ``outputs:`` list against the steps that produce them.
"""

from __future__ import annotations

from afdp.workflow import catalog
from afdp.workflow.catalog import StepKind
from afdp.workflow.compiler import mlpredict
from afdp.workflow.compiler.common import _fields
from afdp.workflow.compiler.predictive import prediction_outputs
from afdp.workflow.compiler.variables import _Variables
from afdp.workflow.expressions import ANY, BOOL, STRING
from afdp.workflow.model import (
    Analyze,
    BusinessImpact,
    Capture,
    CaptureMetadata,
    Check,
    Correlate,
    CrossService,
    Database,
    Decide,
    EnableFeature,
    Gate,
    Predict,
    Query,
    Segment,
    ShiftTraffic,
    Step,
    WaitForSignal,
)
from afdp.workflow.scope import Tree


class _Outputs(_Variables):
    """Step outputs, the scope of step references, and ``outputs:``."""

    def analyzer_tree(self, params: Analyze) -> dict[str, Tree]:
        """What an analysis' analyzers add to conditions (:class:`_Analyzers` says)."""
        return {}

    def services_scope(self, params: Analyze) -> dict[str, Tree]:
        """What a per-service analysis offers conditions (:mod:`.services` says)."""
        return {}

    def add_step(self, step: Step) -> None:
        self.steps.append(step)
        self.outputs[step.name] = self.step_outputs(step)
        if step.kind is StepKind.MARK and self.boundary is None:
            self.boundary = step.index
        if self.boundary is None and not self.has_mark and isinstance(step.params, EnableFeature):
            self.boundary = step.index  # enabling the feature is the change observed
        if (
            self.boundary is None
            and not self.has_mark
            and isinstance(step.params, WaitForSignal)
            and step.params.signal.startswith("deployment")
        ):
            # Without mark_deployment_time, waiting for the deployment marks it.
            self.boundary = step.index

    def step_scope(self) -> dict[str, Tree]:
        return self.base_scope(steps=True)

    def step_outputs(self, step: Step) -> Tree:
        params = step.params
        kind = step.kind
        if kind is StepKind.WAIT:
            return {"finished_at": STRING}
        if kind is StepKind.SIGNAL:
            return {"received_at": STRING, "signal": STRING}
        if kind is StepKind.MARK:
            return {"deployed_at": STRING}
        if isinstance(params, CaptureMetadata):
            return {f: catalog.METADATA_FIELDS[f] for f in params.fields}
        if isinstance(params, Capture):
            tree: dict[str, Tree] = {"started_at": STRING, "finished_at": STRING}
            per_metric = {
                m: _fields(catalog.CAPTURE_FIELDS, self.metrics[m].unit) for m in params.metrics
            }
            if params.services:  # services: each metric per service, under services.<name>
                tree["services"] = {service: per_metric for service in params.services}
                return tree
            tree.update(per_metric)
            return tree
        if isinstance(params, Query):
            out = dict(catalog.QUERY_OUTPUTS)
            if params.alert_threshold is not None:
                out.update(catalog.LOCK_OUTPUTS)
            return out
        if isinstance(params, Check):
            return dict(catalog.CHECK_OUTPUTS)
        if isinstance(params, Database):
            return dict(catalog.DATABASE_OUTPUTS[params.op])
        if isinstance(params, Correlate):
            return {figure: ANY for figure in params.figures}
        if isinstance(params, Segment):
            return {name: "ratio" for name, _ in params.groups}
        if isinstance(params, ShiftTraffic):
            return {"traffic": "ratio", "stage": STRING}
        if isinstance(params, CrossService):
            return dict(catalog.SERVICES_OUTPUTS)
        if isinstance(params, Analyze) and params.services:
            return self.services_scope(params)
        if isinstance(params, Analyze):
            tree = {
                m: _fields(catalog.ANALYSIS_FIELDS, self.metrics[m].unit) for m in params.metrics
            }
            tree.update(catalog.ANALYSIS_SUMMARY)
            tree.update(self.analyzer_tree(params))
            return tree
        if isinstance(params, EnableFeature):
            return dict(catalog.FLAG_OUTPUTS)
        if isinstance(params, BusinessImpact):
            return dict(catalog.BUSINESS_OUTPUTS)
        if isinstance(params, Gate):
            return {"triggered": BOOL}
        if isinstance(params, Predict) and params.analyzer:
            return mlpredict.outputs_of(params, self.metrics, prediction_outputs(params.prediction, self.metrics))
        if isinstance(params, Predict):
            return prediction_outputs(params.prediction, self.metrics)
        if isinstance(params, Decide):
            return dict(catalog.DECISION_OUTPUTS)
        if kind is StepKind.STORE:
            return dict(catalog.STORE_OUTPUTS)
        return {"label": STRING}

    def check_outputs(self) -> None:
        needs = {
            "ml_training_record": ("generate_training_record",),
            "ab_test_record": ("generate_ab_test_record",),
            "lessons_learned": ("generate_lessons_learned",),
        }
        present = {s.type for s in self.steps}
        has_analysis = any(s.kind is StepKind.ANALYZE for s in self.steps)
        outputs = self.data.get("outputs")
        for index, output in enumerate(outputs if isinstance(outputs, list) else []):
            if output in needs and not present.intersection(needs[output]):
                self.fail(("outputs", index), f"output {output!r} needs a {needs[output][0]} step")
            if output == "impact_analysis_report" and not has_analysis:
                self.fail(
                    ("outputs", index),
                    "output 'impact_analysis_report' needs an analysis step (analyze_differences, compare, ...)",
                )
