"""The ``stages:`` section: progressive rollout after the deployment mark.

Each stage's window, traffic and signal, and its expansion into steps (wait for the
signal, capture the impact, analyze against the baseline, an abort gate).
"""

from __future__ import annotations

from typing import cast

from afdp.workflow import catalog
from afdp.workflow.catalog import STEP_TYPES
from afdp.workflow.compiler.analyses import _Analyses
from afdp.workflow.loader import DocPath
from afdp.workflow.model import (
    Analyze,
    Capture,
    Gate,
    ShiftTraffic,
    Stage,
    Step,
    StepParams,
    WaitForSignal,
)
from afdp.workflow.units import (
    DIMENSIONLESS,
    Duration,
    Quantity,
    UnitError,
    parse_duration,
    parse_quantity,
)


class _Stages(_Analyses):
    """Stages, and the steps each stage expands into."""

    def compile_stages(self) -> list[Stage]:
        stages: list[Stage] = []
        for name, spec in self.mapping(self.data.get("stages")).items():
            if not isinstance(spec, dict):
                continue
            path = ("stages", name)
            if "duration" in spec and "monitor" in spec:
                self.fail(
                    path,
                    "give either duration or monitor (they mean the same: how long to watch), not both",
                    prefer_key=True,
                )
            window = self.duration(
                spec.get("duration", spec.get("monitor")),
                (*path, "duration" if "duration" in spec else "monitor"),
            )
            if window is None and "duration" not in spec and "monitor" not in spec:
                self.fail(
                    path,
                    "a stage needs duration (or monitor): how long to watch it",
                    prefer_key=True,
                )
            try:
                traffic = parse_quantity(spec.get("traffic"), allow_negative=False)
            except UnitError:
                traffic = Quantity(0, DIMENSIONLESS)
            if traffic.base > 1:
                self.fail((*path, "traffic"), f"traffic {traffic} is more than 100%")
            stages.append(
                Stage(
                    name=name,
                    traffic=traffic,
                    window=window or Duration(1),
                    signal=str(spec.get("signal") or f"{name}_started"),
                    abort_on=None,  # compiled with its scope, when the stage's steps exist
                    rollback_available=self.duration(
                        spec.get("rollback_available"), (*path, "rollback_available")
                    ),
                    thresholds=(),
                )
            )
        return stages

    def expand_stage(self, stage: Stage, names: dict[str, DocPath]) -> list[Step]:
        path: DocPath = ("stages", stage.name)
        spec = self.mapping(self.mapping(self.data.get("stages")).get(stage.name))
        baseline = self.latest_before()
        if baseline is None:
            self.fail(
                path,
                f"stage {stage.name!r} compares with a baseline; capture one before the deployment mark",
                prefer_key=True,
            )
            return []
        built: list[Step] = []

        def add(suffix: str, step_type: str, params: StepParams) -> Step | None:
            name = f"{stage.name}_{suffix}"
            if name in names:
                self.fail(
                    path,
                    f"stage step name {name!r} is already used by another step",
                    prefer_key=True,
                )
                return None
            names[name] = path
            step = Step(
                name=name,
                type=step_type,
                kind=STEP_TYPES[step_type].kind,
                index=len(self.steps),
                phase=stage.name,
                params=params,
                description=f"stage {stage.name} ({stage.traffic} of traffic)",
                stage=stage.name,
                location=self.location(path),
            )
            self.add_step(step)
            built.append(step)
            return step

        if self.has_traffic_split() and "signal" not in spec:
            # AFDP shifts the traffic itself (the traffic_split action), then watches.
            add("traffic", "shift_traffic", ShiftTraffic(stage.traffic, stage.name))
        else:
            add(
                "signal",
                "wait_for_signal",
                WaitForSignal(stage.signal, parse_duration(catalog.DEFAULT_SIGNAL_TIMEOUT)),
            )
        baseline_params = cast(Capture, baseline.params)
        impact = add(
            "impact",
            "capture_impact",
            Capture(baseline_params.metrics, stage.window, None, "after"),
        )
        if impact is None:
            return built
        thresholds = list(
            self.thresholds(spec.get("thresholds"), (*path, "thresholds"), baseline_params.metrics)
        )
        chosen = list(self.analyzers.values())
        for analyzer in chosen:
            thresholds.extend(t for t in analyzer.thresholds if t.metric in baseline_params.metrics)
        statistical = next((a for a in chosen if a.method), None)
        # A stage judged by nothing could never abort: with no statistical analyzer and
        # no thresholds, the canary is judged by the defaults of any comparison that
        # declares nothing (Mann-Whitney confirming a move beyond the default tolerance),
        # so `abort_on: any_degradation` bites on a real regression and not on a drift.
        by_default = statistical is None and not thresholds
        if by_default:
            thresholds = self.default_thresholds(baseline_params.metrics)
        analysis = add(
            "analysis",
            "analyze_differences",
            Analyze(
                baseline=baseline.name,
                impact=impact.name,
                metrics=baseline_params.metrics,
                thresholds=tuple(thresholds),
                method=statistical.method
                if statistical
                else (catalog.METHODS[0] if by_default else None),
                confidence=statistical.confidence if statistical else catalog.DEFAULT_CONFIDENCE,
                min_samples=statistical.min_samples if statistical else catalog.DEFAULT_MIN_SAMPLES,
                analyzers=tuple(a.name for a in chosen),
                tolerance_decides=by_default,
            ),
        )
        abort_on = spec.get("abort_on")
        if abort_on is not None and analysis is not None:
            condition = self.condition(abort_on, (*path, "abort_on"), self.analysis_scope(analysis))
            if condition is not None:
                add(
                    "gate",
                    "gate",
                    Gate(condition, "rollback", catalog.DEFAULT_LABELS["rollback"], analysis.name),
                )
        return built

    def has_traffic_split(self) -> bool:
        """Return True when ``actions: traffic_split:`` says how to shift traffic."""
        return "traffic_split" in self.mapping(self.data.get("actions"))

    def shift_traffic(
        self, params: dict[str, object], at: DocPath, step_path: DocPath, phase: str
    ) -> ShiftTraffic | None:
        """A written ``shift_traffic`` step: ``traffic`` (a share up to 100%), ``stage``
        (default: its phase); it needs ``actions: traffic_split``."""
        if not self.has_traffic_split():
            self.fail(
                step_path,
                "shift_traffic sends the traffic share to the traffic_split action; "
                "configure it: actions: {traffic_split: {webhook: https://..., secret: ${env.NAME}}}",
                prefer_key=True,
            )
            return None
        try:
            traffic = parse_quantity(params.get("traffic"), allow_negative=False)
        except UnitError:
            return None  # reported by the schema
        if traffic.base > 1:
            self.fail(at, f"traffic {traffic} is more than 100%")
            return None
        stage = params.get("stage")
        return ShiftTraffic(traffic, stage if isinstance(stage, str) else phase)

    def stage_with_condition(self, stage: Stage, built: list[Step]) -> Stage:
        gate = next((s for s in built if isinstance(s.params, Gate)), None)
        analysis = next((s for s in built if isinstance(s.params, Analyze)), None)
        return Stage(
            name=stage.name,
            traffic=stage.traffic,
            window=stage.window,
            signal=stage.signal,
            abort_on=cast(Gate, gate.params).condition if gate else None,
            rollback_available=stage.rollback_available,
            thresholds=cast(Analyze, analysis.params).thresholds if analysis else (),
        )
