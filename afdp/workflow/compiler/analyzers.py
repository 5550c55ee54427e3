"""The ``analyzers:`` section and thresholds.

Named analyzers; threshold keys (``<metric>_increase``...) against the metrics they
cover and their units; the default tolerance of a comparison that declares none.
"""

from __future__ import annotations

from typing import Any, cast

from afdp.workflow import catalog
from afdp.workflow.compiler.metrics import _Metrics
from afdp.workflow.loader import DocPath
from afdp.workflow.model import Analyzer, Threshold
from afdp.workflow.scope import suggest
from afdp.workflow.units import Quantity, Unit, UnitError, parse_quantity


class _Analyzers(_Metrics):
    """Analyzers and thresholds."""

    def compile_analyzers(self) -> None:
        for name, spec in self.mapping(self.data.get("analyzers")).items():
            if not isinstance(spec, dict):
                continue
            path = ("analyzers", name)
            metrics = self.check_metric_names(spec.get("metrics"), (*path, "metrics"))
            thresholds = self.thresholds(
                spec.get("thresholds"), (*path, "thresholds"), metrics or tuple(self.metrics)
            )
            self.analyzers[name] = Analyzer(
                name=name,
                type="statistical" if spec.get("type") == "statistical" else "threshold",
                thresholds=thresholds,
                method=_method(spec.get("method")),
                confidence=float(spec.get("confidence", catalog.DEFAULT_CONFIDENCE)),
                min_samples=int(spec.get("min_samples", catalog.DEFAULT_MIN_SAMPLES)),
                metrics=metrics,
            )

    def thresholds(
        self, raw: Any, path: DocPath, metrics: tuple[str, ...], *, strict: bool = True
    ) -> tuple[Threshold, ...]:
        out: list[Threshold] = []
        for key, value in self.mapping(raw).items():
            at = (*path, key)
            base, _, direction = key.rpartition("_")
            if direction not in ("increase", "decrease", "change") or not base:
                continue  # the schema reports the key's form
            try:
                limit = parse_quantity(value, allow_negative=False)
            except UnitError:
                continue  # reported by the schema
            covered = [m for m in metrics if m == base or m.startswith(base + "_")]
            if not covered:
                if strict:
                    known = ", ".join(metrics) or "none"
                    self.fail(
                        at,
                        f"threshold {key!r}: no metric {base!r} (or {base}_*) is compared here{suggest(base, metrics)} (compared: {known})",
                        prefer_key=True,
                    )
                continue
            for metric_name in covered:
                metric = self.metrics[metric_name]
                mode = _threshold_mode(limit, metric.unit)
                if mode is None:
                    self.fail(
                        at,
                        f"threshold {key}: {limit} ({limit.dimension}) does not fit metric {metric_name} ({metric.unit.dimension}{', ' + metric.unit.symbol if metric.unit.symbol else ''})",
                    )
                    continue
                out.append(Threshold(metric_name, cast(Any, direction), limit, mode, key))
        return tuple(out)

    def default_thresholds(self, metrics: tuple[str, ...]) -> list[Threshold]:
        """Return the default tolerance on each metric's worse direction."""
        limit = parse_quantity(catalog.DEFAULT_TOLERANCE, allow_negative=False)
        worse = {"lower": "increase", "higher": "decrease", "none": "change"}
        return [
            Threshold(
                m,
                cast(Any, worse.get(self.metrics[m].better, "change")),
                limit,
                "relative",
                f"default_{worse.get(self.metrics[m].better, 'change')}",
            )
            for m in metrics
            if m in self.metrics
        ]


def _method(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    method = catalog.METHOD_ALIASES.get(value, value)
    return method if method in catalog.METHODS else None


def _threshold_mode(limit: Quantity, unit: Unit) -> Any:
    if limit.unit.symbol == "x":
        return "factor"
    if limit.dimension == unit.dimension:
        return "absolute"
    if limit.dimension == "ratio":
        return "relative"
    return None
