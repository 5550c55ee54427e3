"""The ``workflow:`` section: the steps, in execution order.

Step items normalized (flat or in phases, shorthand or ``type:``/``config:``), stages
inserted after the phase that marks the deployment, an implicit decisions step, step
names, ``when``/``unless`` against earlier steps' outputs, and typed parameters per
step kind (the kinds with more to check have their own modules).
"""

from __future__ import annotations

from typing import Any, cast

from afdp.workflow import catalog
from afdp.workflow.catalog import STEP_TYPES, StepKind, StepType
from afdp.workflow.compiler.abtest import _AbTest
from afdp.workflow.compiler.common import _RawStep
from afdp.workflow.compiler.migration import _Migration
from afdp.workflow.compiler.services import _Services
from afdp.workflow.compiler.stages import _Stages
from afdp.workflow.compiler.store import _Store
from afdp.workflow.loader import DocPath
from afdp.workflow.model import (
    CaptureMetadata,
    Database,
    Decide,
    Gate,
    GenerateRecord,
    MarkDeployment,
    Phase,
    Predict,
    Stage,
    Step,
    StepParams,
    Wait,
    WaitForSignal,
)

COMMON_STEP_KEYS = frozenset({"name", "when", "unless", "description"})


FLAT_PHASE = "main"


class _Steps(_Stages, _Migration, _AbTest, _Store, _Services):
    """The workflow's steps, in execution order."""

    def raw_steps(self, stages: list[Stage]) -> list[_RawStep]:
        workflow = self.data.get("workflow")
        if isinstance(workflow, list):
            phases: list[tuple[str, Any]] = [(FLAT_PHASE, workflow)]
            base: DocPath = ("workflow",)
            flat = True
        else:
            phases = list(self.mapping(workflow).items())
            base = ("workflow",)
            flat = False
        raw: list[_RawStep] = []
        for phase, items in phases:
            phase_path = base if flat else (*base, phase)
            for index, item in enumerate(items if isinstance(items, list) else []):
                normalized = self.normalize(item, (*phase_path, index), phase)
                if normalized is not None:
                    raw.append(normalized)
        if stages:
            marks = [i for i, r in enumerate(raw) if r.type == "mark_deployment_time"]
            if not marks:
                marks = self.implicit_mark(raw)
            if not marks:
                self.fail(
                    ("stages",),
                    "stages run after the deployment mark; add '- mark_deployment_time' to the workflow",
                    prefer_key=True,
                )
                return raw
            taken = {phase for phase, _ in phases}
            for stage in stages:
                if stage.name in taken:
                    self.fail(
                        ("stages", stage.name),
                        f"stage {stage.name!r} has the name of a workflow phase",
                        prefer_key=True,
                    )
            # Stages go right after the phase that marks the deployment.
            mark_phase = raw[marks[0]].phase
            cut = max(i for i, r in enumerate(raw) if r.phase == mark_phase) + 1
            inserted = [
                _RawStep("@stage", {}, {}, ("stages", s.name), ("stages", s.name), s.name, stage=s)
                for s in stages
            ]
            raw[cut:cut] = inserted
        self.services_step(raw)
        self.implicit_decision(raw)
        self.correlation_step(raw)
        return raw

    def implicit_mark(self, raw: list[_RawStep]) -> list[int]:
        """Stages with no ``mark_deployment_time``: the rollout is the deployment, so AFDP
        marks it right after the last baseline capture (the stages follow that step's
        phase) and says so in a note. Returns the mark's index, or [] when nothing
        captures a baseline (the stages' own error then says what is missing) or a
        ``wait_for: deployment...`` signal already marks the deployment elsewhere.
        """
        if any(r.type in ("wait_for_signal", "wait_for") for r in raw):
            return []
        before = [
            i for i, r in enumerate(raw)
            if r.type in STEP_TYPES and STEP_TYPES[r.type].role == "before"
        ]
        if not before:
            return []
        after = raw[before[-1]]
        raw.insert(
            before[-1] + 1,
            _RawStep("mark_deployment_time", {}, {}, after.path, after.path, after.phase, implicit=True),
        )
        self.note(
            ("stages",),
            "no mark_deployment_time: the rollout is the deployment, so AFDP marks it "
            f"right after {after.type} (the last baseline capture); every stage is "
            "compared with that baseline",
        )
        return [before[-1] + 1]

    def implicit_decision(self, raw: list[_RawStep]) -> None:
        """Give a workflow that judges something but never decides (no ``- decisions``
        step, no ``decisions:``/``success_criteria:``) a decisions step right after the
        last step that judges (an analysis, a check, a stage): its degradation is an
        alert and its absence a success, so a run never ends without a decision and a
        training label.
        """
        if self.data.get("decisions"):
            return  # declared: compile_decisions asks for the step that evaluates them
        kinds = [STEP_TYPES[r.type].kind if r.type in STEP_TYPES else None for r in raw]
        if StepKind.DECIDE in kinds:
            return
        judging = (StepKind.ANALYZE, StepKind.CHECK, StepKind.BUSINESS)
        judged = [
            i for i, r in enumerate(raw)
            if r.stage is not None or kinds[i] in judging or r.type == "@services"
        ]
        if not judged:
            return
        after = raw[judged[-1]]
        raw.insert(
            judged[-1] + 1,
            _RawStep("decisions", {}, {}, after.path, after.path, after.phase, implicit=True),
        )
        if self.data.get("success_criteria"):
            self.note(
                after.path,
                "no decisions step: AFDP adds one right after this step; it evaluates the "
                "success_criteria: all met and no degradation decides mark_successful (label "
                "safe_deployment), otherwise alert",
            )
            return
        self.note(
            after.path,
            "no decisions step: AFDP adds one right after this step; degradation found by "
            "the analysis (or a failed step) decides alert (label degraded), none decides "
            "mark_successful (label safe_deployment)",
        )

    def normalize(self, item: Any, path: DocPath, phase: str) -> _RawStep | None:
        if isinstance(item, str):
            return _RawStep(item, {}, {}, path, path, phase) if item in STEP_TYPES else None
        if not isinstance(item, dict):
            return None
        if "type" in item:
            kind = item.get("type")
            if kind not in STEP_TYPES:
                return None
            common = {k: v for k, v in item.items() if k in COMMON_STEP_KEYS}
            return _RawStep(
                str(kind), self.mapping(item.get("config")), common, path, (*path, "config"), phase
            )
        keys = [k for k in item if k not in COMMON_STEP_KEYS]
        common = {k: v for k, v in item.items() if k in COMMON_STEP_KEYS}
        if not keys:
            self.fail(
                path,
                "a step needs a step type, e.g. '- wait: 2m' or '- capture_baseline: {...}'",
                prefer_key=True,
            )
            return None
        if len(keys) > 1:
            known = [k for k in keys if k in STEP_TYPES]
            if len(known) > 1:
                self.fail(
                    path,
                    f"a step has exactly one step type; this one has {', '.join(repr(k) for k in known)} (write each as its own '- ' item)",
                    prefer_key=True,
                )
            return None
        kind = keys[0]
        if kind not in STEP_TYPES:
            return None
        spec = STEP_TYPES[kind]
        value = item[kind]
        params_path = (*path, kind)
        if isinstance(value, dict):
            params = value
        elif isinstance(value, list):
            params = {spec.listing: value} if spec.listing else {}
        elif value is None:
            params = {}
        else:
            params = {spec.scalar: value} if spec.scalar else {}
            if spec.scalar == "metrics" and isinstance(value, str):
                params = {"metrics": [value]}
        return _RawStep(kind, params, common, path, params_path, phase)

    def compile_steps(self, stages: list[Stage]) -> tuple[Phase, ...]:
        raw = self.raw_steps(stages)
        self.has_mark = any(r.type == "mark_deployment_time" for r in raw)
        counts: dict[str, int] = {}
        names: dict[str, DocPath] = {}
        phases: dict[str, list[Step]] = {}
        phase_stage: dict[str, Stage] = {}
        for item in raw:
            if item.stage is not None:
                built = self.expand_stage(item.stage, names)
                phases.setdefault(item.stage.name, []).extend(built)
                phase_stage[item.stage.name] = self.stage_with_condition(item.stage, built)
                continue
            if item.type == "@correlation":
                if "correlation" in names:
                    self.fail(
                        ("correlation",),
                        "correlation runs as a step named 'correlation'; another step has that name",
                        prefer_key=True,
                    )
                    continue
                correlation = self.build_correlation(item, len(self.steps))
                self.add_step(correlation)
                phases.setdefault(item.phase, []).append(correlation)
                continue
            if item.type == "@services":
                if catalog.SERVICES_STEP in names:
                    self.fail(
                        ("correlate",),
                        f"correlate runs as a step named {catalog.SERVICES_STEP!r}; another step has that name",
                        prefer_key=True,
                    )
                    continue
                services = self.build_services_step(item, len(self.steps))
                if services is not None:
                    names[services.name] = item.path
                    self.add_step(services)
                    phases.setdefault(item.phase, []).append(services)
                continue
            counts[item.type] = counts.get(item.type, 0) + 1
            explicit = item.common.get("name")
            name = (
                explicit
                if isinstance(explicit, str)
                else (item.type if counts[item.type] == 1 else f"{item.type}_{counts[item.type]}")
            )
            if name in names:
                self.fail(
                    (*item.path, "name") if isinstance(explicit, str) else item.path,
                    f"step name {name!r} is already used by the step at line {self.location(names[name]).line}; "
                    "give one of them a different 'name:' (derived names are <type>, <type>_2, ...)",
                    prefer_key=True,
                )
                continue
            names[name] = item.path
            self.step_paths[name] = item.path
            step = self.step(item, name)
            if step is not None:
                self.add_step(step)
                phases.setdefault(item.phase, []).append(step)
        stage_list = [phase_stage.get(s.name, s) for s in stages]
        stages[:] = stage_list
        return tuple(
            Phase(
                name, tuple(self.replaced.get(s.name, s) for s in steps), phase_stage.get(name)
            )
            for name, steps in phases.items()
        )

    def step(self, item: _RawStep, name: str) -> Step | None:
        spec = STEP_TYPES[item.type]
        index = len(self.steps)
        scope = self.step_scope()
        when = self.condition(item.common.get("when"), (*item.path, "when"), scope)
        unless = self.condition(item.common.get("unless"), (*item.path, "unless"), scope)
        params = self.params(spec, item, name)
        if params is None:
            return None
        description = item.common.get("description")
        return Step(
            name=name,
            type=item.type,
            kind=catalog.StepKind.DATABASE if isinstance(params, Database) else spec.kind,
            index=index,
            phase=item.phase,
            params=params,
            when=when,
            unless=unless,
            description=description if isinstance(description, str) else "",
            location=self.location(item.path),
        )

    def params(self, spec: StepType, item: _RawStep, name: str) -> StepParams | None:
        p = item.params
        at = item.params_path
        scalar_shorthand = (
            spec.scalar is not None
            and at == (*item.path, item.type)
            and not isinstance(self.doc_value(at), (dict, list))
        )

        def where(key: str) -> DocPath:
            # A shorthand value (``- wait: 2m``) is reported at the value itself.
            return at if scalar_shorthand and key == spec.scalar else (*at, key)

        kind = spec.kind
        database = self.database_form(spec, item, where)
        if database is not False:
            return cast(Database | None, database)
        if kind is StepKind.WAIT:
            duration = self.duration(p.get("duration"), where("duration"))
            return Wait(duration) if duration else None
        if kind is StepKind.SIGNAL:
            timeout = self.duration(
                p.get("timeout", catalog.DEFAULT_SIGNAL_TIMEOUT), where("timeout")
            )
            signal = p.get("signal")
            return WaitForSignal(signal, timeout) if isinstance(signal, str) and timeout else None
        if kind is StepKind.MARK:
            if self.boundary is not None and any(s.kind is StepKind.MARK for s in self.steps):
                self.fail(
                    item.path,
                    "the deployment is marked twice; keep one mark_deployment_time",
                    prefer_key=True,
                )
            return MarkDeployment()
        if kind is StepKind.METADATA:
            fields = p.get("fields")
            chosen = (
                tuple(f for f in fields if f in catalog.METADATA_FIELDS)
                if isinstance(fields, list)
                else tuple(catalog.METADATA_FIELDS)
            )
            return CaptureMetadata(chosen)
        if kind is StepKind.CAPTURE:
            return self.capture(spec, item, where)
        if kind is StepKind.QUERY:
            return self.query(spec, item, where)
        if kind is StepKind.CHECK:
            return self.check(item, where)
        if kind is StepKind.SEGMENT:
            return self.segment(item)
        if kind is StepKind.FLAG:
            return self.enable_feature(item, where, name)
        if kind is StepKind.TRAFFIC:
            return self.shift_traffic(p, where("traffic"), item.path, item.phase)
        if kind is StepKind.ANALYZE:
            return self.analyze(spec, item, where, name)
        if kind is StepKind.BUSINESS:
            return self.business_impact(item, where)
        if kind is StepKind.GATE:
            analysis = self.latest_analysis()
            condition = self.condition(
                p.get("condition"), where("condition"), self.analysis_scope(analysis)
            )
            action = catalog.ACTION_ALIASES.get(
                p.get("action", "rollback"), p.get("action", "rollback")
            )
            label = p.get("training_label") or catalog.DEFAULT_LABELS.get(action, "rollback")
            if condition is None:
                return None
            return Gate(condition, cast(Any, action), label, analysis.name if analysis else None)
        if kind is StepKind.DECIDE:
            analysis = self.latest_analysis()
            names = tuple(self.mapping(self.data.get("decisions")))
            if not names and not self.data.get("success_criteria") and not item.implicit:
                self.fail(
                    item.path,
                    "the decisions step has nothing to decide: declare decisions: (and/or success_criteria:)",
                    prefer_key=True,
                )
            return Decide(names, analysis.name if analysis else None)
        if kind is StepKind.RECORD:
            return GenerateRecord(spec.record or "training", p.get("training_label"))
        if kind is StepKind.STORE:
            return self.store(item, where)
        if kind is StepKind.PREDICT:
            self.note(
                item.path,
                f"{item.type} needs a trained model / history of past deployments (learning "
                "from evidence); it is recorded as skipped with that reason, not run and not an error",
            )
            return Predict(item.type, catalog.PREDICTION_SKIPPED)
        raise AssertionError(kind)

    def doc_value(self, path: DocPath) -> Any:
        current: Any = self.doc.data
        for part in path:
            try:
                current = current[part]
            except (KeyError, IndexError, TypeError):
                return None
        return current
