"""The ``metrics:`` section, and metric names wherever a section lists them.

Each metric's collector, per-type fields (query, metric, labels, aggregate, select)
and unit; the built-in catalog fills in metrics the workflow uses but does not declare.
"""

from __future__ import annotations

from typing import Any

from afdp.workflow import catalog
from afdp.workflow.compiler.collectors import metric_query
from afdp.workflow.compiler.variables import _Variables
from afdp.workflow.interpolation import Template, TemplateError, parse_template
from afdp.workflow.loader import DocPath
from afdp.workflow.model import Metric
from afdp.workflow.scope import suggest
from afdp.workflow.units import DIMENSIONLESS, UnitError, parse_unit

_AGGREGATES = ("sum", "avg", "max", "min")
RESERVED_NAMES = frozenset(
    {"deployment", "workflow", "steps", "env", "success_criteria_met", "analyzers", *catalog.ANALYSIS_SUMMARY}
)


class _Metrics(_Variables):
    """Metrics, and metric names listed elsewhere."""

    def compile_metrics(self) -> None:
        declared = self.mapping(self.data.get("metrics"))
        for name, spec in catalog.DEFAULT_METRICS.items():
            if name not in declared:
                metric = self.metric(name, dict(spec), None, builtin=True)
                if metric is not None:
                    self.metrics[name] = metric
        for name, spec in declared.items():
            path = ("metrics", name)
            if name in RESERVED_NAMES:
                self.fail(
                    path,
                    f"{name!r} is a reserved name (used by analyses and conditions); choose another",
                    prefer_key=True,
                )
                continue
            if isinstance(spec, dict):
                metric = self.metric(name, spec, path, builtin=False)
                if metric is not None:
                    self.metrics[name] = metric

    def metric(
        self, name: str, spec: dict[str, Any], path: DocPath | None, *, builtin: bool
    ) -> Metric | None:
        at: DocPath = path or ("metrics",)
        collector_name = spec.get("collector")
        if collector_name is None:
            declared = [c for c in self.collectors.values() if not c.builtin]
            collector_name = (
                declared[0].name if len(declared) == 1 else catalog.DEFAULT_COLLECTOR_NAME
            )
        collector = self.collectors.get(collector_name)
        if collector is None:
            if not builtin:
                self.fail(
                    (*at, "collector"),
                    f"undefined collector {collector_name!r}{suggest(collector_name, self.collectors)}",
                )
            return None
        needs = {"prometheus": "query", "sql": "query", "scrape": "metric", "rest": "select"}[
            collector.type
        ]
        if builtin and needs not in spec:
            return None  # the built-in catalog only fits a Prometheus collector
        inherited = needs == "query" and "query" not in spec and collector.default_query is not None
        if needs not in spec and not inherited:
            self.fail(
                at,
                f"metric {name!r} reads from {collector.type} collector {collector.name!r}, so it needs {needs!r}",
                prefer_key=True,
            )
        applies = {
            "query": ("prometheus", "sql"),
            "metric": ("scrape",),
            "labels": ("scrape",),
            "aggregate": ("scrape", "prometheus"),
            "select": ("rest",),
        }
        for key, kinds in applies.items():
            if key in spec and collector.type not in kinds:
                self.fail(
                    (*at, key),
                    f"{key!r} does not apply to a metric from a {collector.type} collector",
                    prefer_key=True,
                )
        unit = DIMENSIONLESS
        if isinstance(spec.get("unit"), str):
            try:
                unit = parse_unit(spec["unit"])
            except UnitError as exc:
                self.fail((*at, "unit"), str(exc))
        scope = self.base_scope(env=True)
        # A/B metrics are written per group: a capture after segment_users renders them
        # once per group (``group``) over a rate window of its sampling interval (``window``).
        scope["segment"] = {"group": "string", "window": "string"}
        # Per service (services:): a capture renders it once per listed service.
        scope["service"] = {"name": "string"}
        query = self.template(spec.get("query"), (*at, "query"), scope, secrets="a query's text")
        if inherited and collector.default_query is not None:
            try:  # checked (and any problem reported) where the collector writes it
                query = parse_template(metric_query(collector.default_query, name))
            except TemplateError:
                query = None
        aggregate = spec.get("aggregate", "sum" if collector.type == "scrape" else None)
        if collector.type == "prometheus" and query is not None and aggregate in _AGGREGATES:
            # aggregate: sum on a PromQL metric: one series from an answer of several.
            query = Template(
                f"{aggregate}({query.source})", (f"{aggregate}(", *query.parts, ")")
            )
        labels = tuple(
            (key, template)
            for key, value in self.mapping(spec.get("labels")).items()
            if (
                template := self.template(
                    value, (*at, "labels", key), scope, secrets="a query's labels"
                )
            )
        )
        return Metric(
            name=name,
            collector=collector.name,
            unit=unit,
            better=spec.get("better", "none")
            if spec.get("better") in ("lower", "higher", "none")
            else "none",
            query=query,
            metric=spec.get("metric") if isinstance(spec.get("metric"), str) else None,
            labels=labels,
            aggregate=aggregate,
            select=spec.get("select") if isinstance(spec.get("select"), str) else None,
            builtin=builtin,
            column=name if inherited and collector.type == "sql" else None,
        )

    def grouped(self, name: str) -> bool:
        """Return True when metric ``name`` is written per A/B group (``${segment.*}``)."""
        metric = self.metrics.get(name)
        if metric is None:
            return False
        templates = [metric.query, *(template for _, template in metric.labels)]
        return any(
            p.parts[0] == "segment"
            for template in templates
            if template is not None
            for p in template.placeholders
        )

    def check_metric_names(self, names: Any, path: DocPath) -> tuple[str, ...]:
        out: list[str] = []
        for index, name in enumerate(names if isinstance(names, list) else []):
            if not isinstance(name, str):
                continue
            if name not in self.metrics:
                self.fail(
                    (*path, index),
                    f"undefined metric {name!r}{suggest(name, self.metrics) or ''}; declare it under metrics: "
                    "(built in: " + ", ".join(catalog.DEFAULT_METRICS) + ")",
                )
                continue
            out.append(name)
        return tuple(out)
