"""The ``services:`` and ``correlate:`` sections: several services watched together.

The guide's cross-service pattern::

    services: [api_gateway, payment_service, user_service]
    correlate: [cascade_failures, performance_dependencies, business_impact_combined]

is read as follows (``afdp validate`` prints each reading as a note):

- every metric capture captures each of its metrics **once per listed service, in the
  same window** (concurrently); a metric is addressed per service by its query and
  labels: ``${service.name}`` is the listed service, and so is ``${deployment.service}``
  there (the catalog's metrics select ``service="${deployment.service}"``, the
  Prometheus convention), so the list form works with the catalog as written. A metric
  whose query and labels name no service would read the same series for every service
  and is refused; so is a collector address that depends on the service (the admission
  policy judges the one address a run reaches);
- every analysis compares each service's impact with **its own** baseline;
- ``correlate:`` adds the step ``correlate_services`` right after the last analysis
  (before the decisions), which computes the listed figures
  (:mod:`afdp.pipeline.analysis.cascade`).

A per-service analysis offers conditions ``<service>.<metric>.<field>``,
``<service>.any_degradation`` (and the other summary names), ``<service>.degraded``, the
summary names over all services and ``any_service_degraded``/``degraded_services``; the
correlation step adds ``cascade_detected``, ``degraded_in_order``, ``first_degraded``,
``dependencies`` and ``business_impact_combined`` to the decisions' scope.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from afdp.workflow import catalog
from afdp.workflow.catalog import StepKind
from afdp.workflow.compiler.analyses import _Analyses
from afdp.workflow.compiler.common import _fields, _RawStep
from afdp.workflow.compiler.metrics import RESERVED_NAMES
from afdp.workflow.expressions import BOOL
from afdp.workflow.loader import DocPath
from afdp.workflow.model import Analyze, Collector, CrossService, Services, Step
from afdp.workflow.scope import Tree

#: The placeholders that address a metric per service (in its query or labels).
_SERVICE_REFS = (("service", "name"), ("deployment", "service"))


class _Services(_Analyses):
    """``services:`` + ``correlate:``: per-service captures and analyses, and the
    correlation step after the last analysis."""

    def compile_services(self) -> Services | None:
        """Read ``services:`` and ``correlate:`` (before metrics: metric queries may use
        ``${service.name}``). Returns the section, or None without ``services:``."""
        raw = self.data.get("services")
        figures_raw = self.data.get("correlate")
        figures = tuple(f for f in figures_raw if isinstance(f, str)) if isinstance(figures_raw, list) else ()
        if raw is None:
            if figures_raw is not None:
                self.fail(
                    ("correlate",),
                    "correlate: correlates the services listed under services:; list them "
                    "(services: [api_gateway, payment_service])",
                    prefer_key=True,
                )
            return None
        names = tuple(n for n in raw if isinstance(n, str)) if isinstance(raw, list) else ()
        if len(names) < 2 or len(set(names)) != len(names):
            return None  # the schema says what is wrong
        for index, name in enumerate(names):
            if name in RESERVED_NAMES or name in catalog.SERVICE_ANALYSIS_SUMMARY or name in catalog.SERVICES_OUTPUTS:
                self.fail(
                    ("services", index),
                    f"{name!r} is a reserved name (conditions read it); a service cannot be called that",
                )
        for section in ("stages", "correlation"):
            if self.data.get(section):
                self.fail(
                    ("services",),
                    f"services: and {section}: cannot be combined yet: write the cross-service "
                    "workflow and the other one separately",
                    prefer_key=True,
                )
        self.service_names = names
        self.note(
            ("services",),
            f"every metric capture captures each metric once per service ({', '.join(names)}) "
            "in the same window; a metric's query and labels address the service with "
            "${service.name} or ${deployment.service} (the catalog's metrics select "
            'service="<name>"); every analysis compares each service with its own baseline',
        )
        if figures:
            self.note(
                ("correlate",),
                f"correlate runs as a step {catalog.SERVICES_STEP!r} right after the last "
                "analysis: " + "; ".join(_FIGURE_NOTES[f] for f in figures if f in _FIGURE_NOTES),
            )
        else:
            self.note(
                ("services",),
                "no correlate: each service is captured and analyzed, nothing is correlated",
            )
        return Services(names, figures)

    # --- captures ---------------------------------------------------------------------

    def capture_services(
        self, metrics: tuple[str, ...], item: _RawStep, where: Callable[[str], DocPath]
    ) -> tuple[str, ...]:
        """Return the services a capture of ``metrics`` captures each metric for (all the
        listed ones, or none), reporting metrics that cannot be addressed per service."""
        names = self.service_names
        per_service = [m for m in metrics if self._names_service(m, ("service", "name"))]
        if not names:
            if per_service:
                self.fail(
                    where("metrics"),
                    f"{', '.join(per_service)} {'is' if len(per_service) == 1 else 'are'} "
                    "measured per service (${service.name}); list the services under services:",
                )
            return ()
        for metric in metrics:
            spec = self.metrics.get(metric)
            if spec is None:
                continue
            if metric in names:
                self.fail(
                    where("metrics"),
                    f"metric {metric!r} has the name of a listed service: conditions could not "
                    f"tell {metric}.degraded (the service) from the metric; rename one of them",
                )
            if not any(self._names_service(metric, ref) for ref in _SERVICE_REFS):
                self.fail(
                    where("metrics"),
                    f"metric {metric!r} is captured per service ({', '.join(names)}), but its "
                    "query and labels name no service: every service would get the same series; "
                    'address the service with ${service.name} (e.g. {service="${service.name}"})',
                )
            collector = self.collectors.get(spec.collector)
            placeholder = _service_placeholder(collector) if collector is not None else None
            if collector is not None and placeholder:
                self.fail(
                    where("metrics"),
                    f"metric {metric!r} reads collector {collector.name!r}, whose address "
                    f"depends on {placeholder}: per service it would reach another "
                    "host than the one the admission policy judged; address the service in "
                    "the metric's query or labels instead",
                )
            if self.grouped(metric):
                self.fail(
                    where("metrics"),
                    f"metric {metric!r} is measured per A/B group; services: and A/B groups "
                    "cannot be combined",
                )
        return names

    def _names_service(self, metric: str, ref: tuple[str, str]) -> bool:
        spec = self.metrics.get(metric)
        if spec is None:
            return False
        templates = [spec.query, *(template for _, template in spec.labels)]
        return any(
            p.parts[:2] == ref for t in templates if t is not None for p in t.placeholders
        )

    # --- the analysis scope -----------------------------------------------------------

    def services_scope(self, params: Analyze) -> dict[str, Tree]:
        """Return what a per-service analysis offers conditions."""
        scope: dict[str, Tree] = {}
        per_metric = {
            m: _fields(catalog.ANALYSIS_FIELDS, self.metrics[m].unit) for m in params.metrics
        }
        for service in params.services:
            scope[service] = {
                **per_metric,
                **catalog.ANALYSIS_SUMMARY,
                **self.analyzer_tree(params),
                "degraded": BOOL,
            }
        scope.update(catalog.ANALYSIS_SUMMARY)
        scope.update(catalog.SERVICE_ANALYSIS_SUMMARY)
        return scope

    def correlation_scope(self, analysis: Step | None) -> dict[str, Tree]:
        """Return the correlation step's outputs when one follows ``analysis``: the
        decisions after it read them by name (``cascade_detected``...)."""
        if analysis is None:
            return {}
        found = [
            s for s in self.steps if isinstance(s.params, CrossService) and s.index > analysis.index
        ]
        return dict(catalog.SERVICES_OUTPUTS) if found else {}

    # --- the correlation step ---------------------------------------------------------

    def services_step(self, raw: list[_RawStep]) -> None:
        """Insert ``correlate_services`` right after the last analysis (before the
        decisions AFDP adds, which then decide after it)."""
        if not self.service_names:
            return
        figures = self.data.get("correlate")
        if not isinstance(figures, list) or not figures:
            return
        kinds = [catalog.STEP_TYPES[r.type].kind if r.type in catalog.STEP_TYPES else None for r in raw]
        analyses = [i for i, kind in enumerate(kinds) if kind is StepKind.ANALYZE]
        if not analyses:
            self.fail(
                ("correlate",),
                "correlate: needs an analysis to correlate (e.g. '- analyze_differences' after "
                "the impact capture)",
                prefer_key=True,
            )
            return
        after = raw[analyses[-1]]
        raw.insert(
            analyses[-1] + 1,
            _RawStep(
                "@services", {"figures": figures}, {}, ("correlate",), ("correlate",),
                after.phase, implicit=True,
            ),
        )

    def build_services_step(self, item: _RawStep, index: int) -> Step | None:
        analyses = [s for s in self.steps if isinstance(s.params, Analyze)]
        analysis = analyses[-1] if analyses else None
        if analysis is None or not cast(Analyze, analysis.params).services:
            return None  # the analysis' own problem is already reported
        params = cast(Analyze, analysis.params)
        figures = tuple(f for f in item.params.get("figures", []) if isinstance(f, str))
        return Step(
            name=catalog.SERVICES_STEP,
            type=catalog.SERVICES_STEP,
            kind=StepKind.SERVICES,
            index=index,
            phase=item.phase,
            params=CrossService(
                services=params.services,
                figures=figures,
                analysis=analysis.name,
                impact=params.impact,
                min_samples=catalog.MIN_DEPENDENCE_SAMPLES,
                min_segment=catalog.CASCADE_MIN_SEGMENT,
            ),
            description="cross-service correlation: " + ", ".join(figures),
            location=self.location(item.path),
        )


def _service_placeholder(collector: Collector) -> str | None:
    """Return the ``${...}`` naming the service in the collector's address, headers or
    body (None: the collector reaches the same place for every service)."""
    templates = [collector.url, *(t for _, t in collector.headers), collector.body]
    for template in templates:
        for p in template.placeholders if template is not None else ():
            if p.parts[:2] in _SERVICE_REFS or p.parts[0] == "service":
                return str(p)
    return None


_FIGURE_NOTES = {
    "cascade_failures": (
        "cascade_failures: which services degraded and in what order, by when each degraded "
        "metric's series changed level (the least-squares change point of its baseline then "
        "impact samples, the shifted segment's median beyond the metric's limit; cascade_detected: "
        "two or more services degraded)"
    ),
    "performance_dependencies": (
        "performance_dependencies: Pearson's r of each pair of services' series of each "
        f"metric in the impact window, paired by time ('not enough samples' below "
        f"{catalog.MIN_DEPENDENCE_SAMPLES} pairs)"
    ),
    "business_impact_combined": (
        "business_impact_combined: the sum of the services' money lost per hour where it is "
        "known (a business_impact analyzer, else a money-per-time metric); null with the "
        "reason when no service's is known"
    ),
}


__all__ = ["_Services"]
