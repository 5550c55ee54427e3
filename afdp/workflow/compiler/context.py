"""The ``context:`` section: business context metrics.

Each name is a metric: declared under ``metrics:``, built in, or else read as the
Prometheus series of that name (``sum(<name>{service="${deployment.service}"})``), said
in a note. Context metrics are added to every capture (so every baseline and impact has
them), shown in analyses and reports, and judged only when a success criterion, a
decision or a gate names them (the analysis marks the others ``context``).
"""

from __future__ import annotations

from afdp.workflow import catalog
from afdp.workflow.compiler.metrics import RESERVED_NAMES, _Metrics


class _Context(_Metrics):
    """Business context metrics."""

    def compile_context(self) -> None:
        raw = self.data.get("context")
        names: list[str] = []
        for index, name in enumerate(raw if isinstance(raw, list) else []):
            if not isinstance(name, str) or name in names:
                continue
            path = ("context", index)
            if name in RESERVED_NAMES:
                self.fail(path, f"{name!r} is a reserved name (used by analyses and conditions); choose another")
                continue
            if name not in self.metrics:
                prometheus = self.collectors.get(catalog.DEFAULT_COLLECTOR_NAME)
                if prometheus is None or prometheus.type != "prometheus":
                    self.fail(
                        path,
                        f"context metric {name!r} is not defined and there is no Prometheus collector "
                        f"named {catalog.DEFAULT_COLLECTOR_NAME!r} to read it from; declare it under "
                        f"metrics: ({name}: {{collector: ..., query: ...}})",
                    )
                    continue
                spec = {
                    "collector": prometheus.name,
                    "query": f'sum({name}{{service="${{deployment.service}}"}})',
                    "unit": "count",
                    "better": "none",
                }
                metric = self.metric(name, spec, None, builtin=True)
                if metric is None:
                    continue
                self.metrics[name] = metric
                self.note(
                    path,
                    f"context metric {name!r} is not declared under metrics: or built in; it is read "
                    f'as the Prometheus series sum({name}{{service="${{deployment.service}}"}}) '
                    "(declare it under metrics: to read it another way)",
                )
            names.append(name)
        self.context_metrics = tuple(names)
        if names:
            self.note(
                ("context",),
                "context metrics (" + ", ".join(names) + ") are captured with every baseline and "
                "impact capture and shown in the analysis, but not judged unless a success "
                "criterion or decision names them",
            )
