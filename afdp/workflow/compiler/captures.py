"""Capture steps: ``capture_baseline``, ``capture_impact``, ``capture``, ``monitor_continuously``...

Their role before or after the deployment mark, their metrics (``same_as_baseline``),
duration and interval.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from afdp.workflow import catalog
from afdp.workflow.catalog import StepType
from afdp.workflow.compiler.common import _RawStep
from afdp.workflow.compiler.metrics import _Metrics
from afdp.workflow.loader import DocPath
from afdp.workflow.model import Capture, Segment, Step


class _Captures(_Metrics):
    """Capture steps, and the captures built so far."""

    def captures(self) -> list[Step]:
        return [s for s in self.steps if isinstance(s.params, Capture)]

    def latest_before(self) -> Step | None:
        before = [s for s in self.captures() if cast(Capture, s.params).role == "before"]
        return before[-1] if before else None

    def capture(
        self, spec: StepType, item: _RawStep, where: Callable[[str], DocPath]
    ) -> Capture | None:
        p = item.params
        after_boundary = self.boundary is not None
        role = spec.role or ("after" if after_boundary else "before")
        if spec.role == "before" and after_boundary:
            marker = self.steps[cast(int, self.boundary)].name
            self.fail(
                item.path,
                f"{item.type} captures the baseline, but it comes after the deployment is marked (step {marker!r})",
                prefer_key=True,
            )
        if spec.role == "after" and not after_boundary and self.has_mark:
            self.fail(
                item.path,
                f"{item.type} captures the impact, but it comes before mark_deployment_time",
                prefer_key=True,
            )
        baseline = self.latest_before()
        raw_metrics = p.get("metrics")
        metrics: tuple[str, ...]
        if isinstance(raw_metrics, list) and "same_as_baseline" in raw_metrics:
            if baseline is None:
                self.fail(
                    where("metrics"),
                    "same_as_baseline: there is no earlier baseline capture to copy the metrics of",
                )
                return None
            rest = [m for m in raw_metrics if m != "same_as_baseline"]
            metrics = cast(Capture, baseline.params).metrics + tuple(
                m
                for m in self.check_metric_names(rest, where("metrics"))
                if m not in cast(Capture, baseline.params).metrics
            )
        elif isinstance(raw_metrics, list):
            # Undefined names are reported; the capture keeps the others (possibly none) so
            # later steps that pair with it do not repeat the same problem.
            metrics = self.check_metric_names(raw_metrics, where("metrics"))
        elif role == "after" and baseline is not None:
            metrics = cast(Capture, baseline.params).metrics
        else:
            metrics = tuple(m.name for m in self.metrics.values() if not m.builtin)
            if not metrics:
                self.fail(
                    item.path,
                    f"{item.type} has no metrics to capture: list them (metrics: [error_rate, ...]) or declare metrics:",
                    prefer_key=True,
                )
                return None
        # Business context (context:) is captured with every baseline and impact.
        metrics += tuple(m for m in self.context_metrics if m not in metrics)
        duration = self.duration(p.get("duration"), where("duration"))
        interval = self.duration(p.get("interval"), where("interval"))
        if duration and interval and interval > duration:
            self.fail(
                where("interval"), f"interval {interval} is longer than the capture ({duration})"
            )
        if interval and not duration:
            self.fail(where("interval"), "an interval needs a duration: how long to keep sampling")
        groups: tuple[str, ...] = ()
        grouped = [m for m in metrics if self.grouped(m)]
        if grouped:
            segment = self.latest_segment()
            if segment is None:
                self.fail(
                    where("metrics"),
                    f"{', '.join(grouped)} {'is' if len(grouped) == 1 else 'are'} measured per "
                    "A/B group (${segment.group}); add '- segment_users: {control_group: 50%, "
                    "treatment_group: 50%}' before this step",
                )
                return None
            groups = tuple(name for name, _ in cast(Segment, segment.params).groups)
            if duration is None:
                self.note(
                    item.path,
                    f"{item.type} captures {', '.join(grouped)} per group "
                    f"({', '.join(groups)}) of {segment.name!r}; written without a duration, it "
                    f"samples the next {catalog.DEFAULT_LOOKBACK} (the groups exist from "
                    f"{segment.name!r} on, so there is no history to read back)",
                )
        services = self.capture_services(metrics, item, where)
        return Capture(metrics, duration, interval, cast(Any, role), groups, services)

    def capture_services(
        self, metrics: tuple[str, ...], item: _RawStep, where: Callable[[str], DocPath]
    ) -> tuple[str, ...]:
        """Return the services each metric is captured for (``services:``, see
        :mod:`.services`); none here."""
        return ()

    def latest_segment(self) -> Step | None:
        segments = [s for s in self.steps if isinstance(s.params, Segment)]
        return segments[-1] if segments else None
