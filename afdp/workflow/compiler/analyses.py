"""Analysis steps: the before/after comparison of two captures.

The pairing of a baseline and an impact capture (a default baseline taken after the
deployment mark is read back from history, or refused), metrics, analyzers,
thresholds and method, and the scope conditions see after an analysis.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, cast

from afdp.workflow import catalog
from afdp.workflow.catalog import StepType
from afdp.workflow.compiler.analyzers import _Analyzers, _method
from afdp.workflow.compiler.captures import _Captures
from afdp.workflow.compiler.common import _fields, _RawStep
from afdp.workflow.compiler.outputs import _Outputs
from afdp.workflow.expressions import BOOL
from afdp.workflow.loader import DocPath
from afdp.workflow.model import Analyze, Capture, EnableFeature, Step
from afdp.workflow.scope import Tree, suggest
from afdp.workflow.units import parse_duration


class _Analyses(_Analyzers, _Captures, _Outputs):
    """Analysis steps and the scope after an analysis."""

    def latest_analysis(self) -> Step | None:
        analyses = [s for s in self.steps if isinstance(s.params, Analyze)]
        return analyses[-1] if analyses else None

    def analysis_scope(self, analysis: Step | None, *, decisions: bool = False) -> dict[str, Tree]:
        scope = self.step_scope()
        if analysis is not None and cast(Analyze, analysis.params).services:
            # Per service (services:, see .services): <service>.<metric>.<field>, ...
            scope.update(self.services_scope(cast(Analyze, analysis.params)))
            scope.update(self.correlation_scope(analysis))
        elif analysis is not None:
            params = cast(Analyze, analysis.params)
            for metric in params.metrics:
                scope[metric] = _fields(catalog.ANALYSIS_FIELDS, self.metrics[metric].unit)
            scope.update(catalog.ANALYSIS_SUMMARY)
            scope.update(self.analyzer_tree(params))
        if decisions:
            scope["success_criteria_met"] = BOOL
        return scope

    def correlation_scope(self, analysis: Step | None) -> dict[str, Tree]:
        """What a cross-service correlation after ``analysis`` adds (:mod:`.services`)."""
        return {}

    def capture_step(self, value: Any, path: DocPath) -> Step | None:
        if not isinstance(value, str):
            return None
        captures = self.captures()
        for step in captures:
            if step.name == value:
                return step
        if any(s.name == value for s in self.steps):
            self.fail(path, f"step {value!r} is not a capture step")
        else:
            self.fail(
                path,
                f"no earlier capture step {value!r}{suggest(value, [s.name for s in captures])}",
            )
        return None

    def analyze(
        self, spec: StepType, item: _RawStep, where: Callable[[str], DocPath], name: str
    ) -> Analyze | None:
        p = item.params
        captures = self.captures()
        baseline = (
            self.capture_step(p.get("baseline"), where("baseline")) if "baseline" in p else None
        )
        impact = self.capture_step(p.get("impact"), where("impact")) if "impact" in p else None
        if "baseline" in p and baseline is None or "impact" in p and impact is None:
            return None
        if baseline is None:
            baseline = self.latest_before() or (captures[0] if captures else None)
            if baseline is not None:
                baseline = self.late_baseline(baseline, item)
                if baseline is None:
                    return None
        elif self.boundary is not None and cast(Capture, baseline.params).role == "after":
            self.note(
                where("baseline"),
                f"baseline {baseline.name!r} is taken after the deployment mark: this "
                "compares two windows after the deployment, not before with after",
                level="warning",
            )
        if impact is None and baseline is not None:
            later = [s for s in captures if s.index > baseline.index]
            impact = later[-1] if later else None
        if baseline is None or impact is None:
            found = ", ".join(s.name for s in captures) or "none"
            self.fail(
                item.path,
                f"{item.type} compares two earlier captures (a baseline and an impact); captures so far: {found}",
                prefer_key=True,
            )
            return None
        groups = self.ab_groups(impact) if "baseline" not in p else None
        if groups is not None:
            # An A/B comparison: control against treatment in the impact's own window.
            baseline = impact
        elif impact.index <= baseline.index:
            self.fail(
                item.path,
                f"the impact capture {impact.name!r} must come after the baseline {baseline.name!r}",
                prefer_key=True,
            )
            return None
        base_metrics = cast(Capture, baseline.params).metrics
        impact_metrics = cast(Capture, impact.params).metrics
        common = tuple(m for m in base_metrics if m in impact_metrics)
        if "metrics" in p:
            metrics = self.check_metric_names(p.get("metrics"), where("metrics"))
            for index, metric in enumerate(metrics):
                if metric not in common:
                    self.fail(
                        (*where("metrics"), index),
                        f"metric {metric!r} is not captured by both {baseline.name!r} and {impact.name!r}",
                    )
            metrics = tuple(m for m in metrics if m in common)
        else:
            metrics = common
        if groups is not None:
            metrics = tuple(m for m in metrics if self.grouped(m))
        if not metrics:
            if not base_metrics or not impact_metrics:
                return None  # a capture whose metrics were all undefined: already reported
            self.fail(
                item.path,
                f"{baseline.name!r} and {impact.name!r} capture no metric in common",
                prefer_key=True,
            )
            return None
        analyzer_names = p.get("analyzers")
        if isinstance(analyzer_names, list):
            chosen = []
            for index, analyzer in enumerate(analyzer_names):
                if analyzer not in self.analyzers:
                    self.fail(
                        (*where("analyzers"), index),
                        f"undefined analyzer {analyzer!r}{suggest(str(analyzer), self.analyzers)}",
                    )
                else:
                    chosen.append(self.analyzers[analyzer])
        else:
            chosen = list(self.analyzers.values())  # declared analyzers apply to every analysis
        self.check_guide_analyzers(chosen, metrics, item.path, item.type)
        thresholds = list(self.thresholds(p.get("thresholds"), where("thresholds"), metrics))
        for analyzer in chosen:
            thresholds.extend(t for t in analyzer.thresholds if t.metric in metrics)
        statistical = next((a for a in chosen if a.method), None)
        method = _method(p.get("method")) or (statistical.method if statistical else None)
        judged_by_default = method is None and not thresholds and "method" not in p
        if judged_by_default:
            # A comparison judged by nothing could never find a degradation (every metric
            # "not degraded": a false green). Mann-Whitney says a shift is not noise; the
            # default tolerance that it matters.
            method = catalog.METHODS[0]
            thresholds = self.default_thresholds(metrics)
            self.note(
                item.path,
                f"{item.type} declares no thresholds and no method: a metric is degraded "
                f"when it moves the worse way by more than {catalog.DEFAULT_TOLERANCE} of its "
                f"baseline and {method} confirms the shift (with one sample a side, the "
                f"{catalog.DEFAULT_TOLERANCE} alone decides, as it does when the samples are "
                "too few or too dependent for the test)",
            )
        if groups is not None and not thresholds and method is not None and not judged_by_default:
            # A/B: a significant difference too small to matter is not a degradation.
            thresholds = self.default_thresholds(metrics)
            self.note(
                item.path,
                f"{item.type} compares {groups[0]!r} (control) with {groups[1]!r} (treatment) "
                f"in {impact.name!r}'s window (not before with after); a metric is degraded "
                f"when the treatment is worse than the control by more than "
                f"{catalog.DEFAULT_TOLERANCE} of the control's value and {method} confirms it",
            )
        confidence = p.get(
            "confidence", statistical.confidence if statistical else catalog.DEFAULT_CONFIDENCE
        )
        min_samples = p.get(
            "min_samples", statistical.min_samples if statistical else catalog.DEFAULT_MIN_SAMPLES
        )
        one_sample = [
            s.name
            for s in (baseline, impact)
            if not cast(Capture, s.params).duration
            and not self.history_only(cast(Capture, s.params).metrics)
        ]
        if method and len(one_sample) == 2 and not judged_by_default:
            self.fail(
                item.path,
                f"a statistical test needs samples over time; give {baseline.name!r} or {impact.name!r} a duration",
                prefer_key=True,
            )
        elif method and len(one_sample) == 2:
            self.note(
                item.path,
                f"{baseline.name!r} and {impact.name!r} take one sample each of a source "
                "without history: no test can judge them, so every metric is inconclusive; "
                "give them a duration",
                level="warning",
            )
        return Analyze(
            baseline=baseline.name,
            impact=impact.name,
            metrics=metrics,
            thresholds=tuple(thresholds),
            method=method,
            confidence=float(confidence)
            if isinstance(confidence, (int, float))
            else catalog.DEFAULT_CONFIDENCE,
            min_samples=int(min_samples)
            if isinstance(min_samples, int)
            else catalog.DEFAULT_MIN_SAMPLES,
            analyzers=tuple(a.name for a in chosen),
            tolerance_decides=judged_by_default,
            groups=groups,
            services=cast(Capture, impact.params).services
            if cast(Capture, baseline.params).services == cast(Capture, impact.params).services
            else (),
        )

    def ab_groups(self, impact: Step) -> tuple[str, str] | None:
        """Return (control, treatment) for an analysis of the per-group capture ``impact``."""
        groups: tuple[str, ...] = getattr(impact.params, "groups", ())
        if len(groups) < 2:
            return None
        flags = [s.params for s in self.steps if isinstance(s.params, EnableFeature)]
        treatment = flags[-1].group if flags and flags[-1].group in groups else groups[-1]
        control = next(g for g in groups if g != treatment)
        return control, treatment

    def replace_step(self, step: Step) -> None:
        """Put ``step`` in the place of the step of the same name built earlier."""
        self.steps[step.index] = step
        self.replaced[step.name] = step

    def history_only(self, metrics: tuple[str, ...]) -> bool:
        """Return True when every metric's collector keeps history (Prometheus)."""
        kinds = {self.collector_type(m) for m in metrics}
        return bool(kinds) and kinds <= catalog.HISTORY_COLLECTORS

    def collector_type(self, metric: str) -> str | None:
        spec = self.metrics.get(metric)
        collector = self.collectors.get(spec.collector) if spec is not None else None
        return collector.type if collector is not None else None

    def late_baseline(self, baseline: Step, item: _RawStep) -> Step | None:
        """A baseline chosen by default that is taken after the deployment mark must not
        silently be post-deployment state: from a source with history it is read back,
        the window ending at the mark; from any other source it is refused.
        """
        params = cast(Capture, baseline.params)
        if params.role == "before" or self.boundary is None:
            return baseline
        marker = self.steps[self.boundary].name
        if not self.history_only(params.metrics):
            kinds = sorted({str(self.collector_type(m)) for m in params.metrics})
            self.fail(
                item.path,
                f"{item.type} compares with {baseline.name!r} as the baseline, but it is taken "
                f"after the deployment mark (step {marker!r}) from a source that keeps no "
                f"history ({', '.join(kinds)}): it would measure the deployed version; move "
                f"{baseline.name!r} above {marker!r}",
                prefer_key=True,
            )
            return None
        window = params.duration or parse_duration(catalog.DEFAULT_LOOKBACK)
        anchored = dataclasses.replace(
            baseline, params=dataclasses.replace(params, role="before")
        )
        self.replace_step(anchored)
        self.note(
            self.step_paths.get(baseline.name, item.path),
            f"{baseline.name!r} is the baseline of {item.type} but comes after the deployment "
            f"mark (step {marker!r}): it is read from Prometheus history, the {window} ending "
            "at the mark, so it measures the version before the deployment",
        )
        return anchored
