"""The ``analyzers:`` section and thresholds.

Named analyzers; threshold keys (``<metric>_increase``...) against the metrics they
cover and their units; the default tolerance of a comparison that declares none.
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

from afdp.workflow import catalog, logic
from afdp.workflow.business import GROUP_NEEDS, resolve_groups
from afdp.workflow.compiler import mlpredict
from afdp.workflow.compiler.metrics import RESERVED_NAMES, _Metrics
from afdp.workflow.expressions import BOOL, STRING
from afdp.workflow.findings import Finding
from afdp.workflow.loader import DocPath
from afdp.workflow.logic import LogicError, counts_as_degradation, parse_logic
from afdp.workflow.model import Analyze, Analyzer, Threshold
from afdp.workflow.scope import Tree, suggest
from afdp.workflow.units import Quantity, Unit, UnitError, parse_quantity


class _Analyzers(_Metrics):
    """Analyzers and thresholds."""

    def compile_analyzers(self) -> None:
        for name, spec in self.mapping(self.data.get("analyzers")).items():
            if not isinstance(spec, dict):
                continue
            path = ("analyzers", name)
            kind = _kind(spec)
            if kind is None:
                self.fail(
                    path,
                    "an analyzer needs type: threshold (with thresholds:), type: statistical "
                    "(with method:), logic: (with input:), correlate: (business_impact) or "
                    "model: (ml_predictor)",
                    prefer_key=True,
                )
                continue
            if kind not in ("threshold", "statistical"):
                self.compile_guide_analyzer(name, kind, spec, path)
                continue
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

    def compile_guide_analyzer(self, name: str, kind: str, spec: dict[str, Any], path: DocPath) -> None:
        """A ``logic``, ``business_impact`` or ``ml_predictor`` analyzer (the guide's forms)."""
        allowed = {"type", "description", "output", *_KEYS[kind]}
        for key in spec:
            if key not in allowed:
                self.fail(
                    (*path, key),
                    f"{key!r} does not belong to a {kind} analyzer (its keys: {', '.join(sorted(allowed))})",
                    prefer_key=True,
                )
                return
        output = spec.get("output") if isinstance(spec.get("output"), str) else None
        if kind == "business_impact" and (output or name) in (*self.metrics, *RESERVED_NAMES):
            self.fail(
                (*path, "output") if output else path,
                f"output {output or name!r} would hide a metric or a reserved name in conditions; choose another",
                prefer_key=True,
            )
            return
        if kind == "logic":
            inputs = tuple(spec.get("input") or ("baseline", "current"))
            text = spec.get("logic")
            if text is None:
                self.fail(path, "a logic analyzer needs logic: (an if/return program)", prefer_key=True)
                return
            try:
                program = parse_logic(text, inputs, self.metrics)
            except LogicError as exc:
                self.findings.append(self._logic_finding((*path, "logic"), text, exc))
                return
            classes = ", ".join(
                f"{v!r} ({'degradation' if counts_as_degradation(v) else 'recorded, not a degradation'})"
                for v in program.verdicts
            ) or "none"
            reads = ", ".join(
                dict.fromkeys(
                    f"{i}.{w}" + (f" = {m}" if w != m else "") + f" ({s})" for i, w, m, s in program.reads
                )
            )
            self.note(
                (*path, "logic"),
                f"logic analyzer {name}: run by AFDP's own evaluator (no Python); {reads}; "
                "a metric without a statistic is the median of its capture's samples "
                f"({', '.join(logic.STATISTICS)} can be named); verdicts: {classes}; "
                "a verdict counts as a degradation when one of its words says so "
                "(degradation, regression, rollback, failure, ...); no return: no verdict",
            )
            self.analyzers[name] = Analyzer(
                name=name, type="logic", inputs=inputs, logic=program, output=output, metrics=program.metrics
            )
        elif kind == "business_impact":
            raw = spec.get("correlate")
            correlate = tuple(str(g) for g in raw) if isinstance(raw, list) else ()
            if not correlate:
                self.fail(path, "a business_impact analyzer needs correlate: [technical_metrics, revenue_data, user_behavior]", prefer_key=True)
                return
            self.analyzers[name] = Analyzer(
                name=name, type="business_impact", correlate=correlate, output=output or name
            )
        else:
            raw = spec.get("features")
            written = tuple(str(f) for f in raw) if isinstance(raw, list) else ()
            model = spec.get("model") if isinstance(spec.get("model"), str) else None
            pairs, unknown = mlpredict.read_features(written)
            if unknown:
                self.fail((*path, "features"), mlpredict.unknown_message(name, unknown), prefer_key=True)
                return
            problem = mlpredict.selection_problem(name, "features" in spec, pairs)
            if problem:
                self.fail((*path, "features"), problem, prefer_key=True)
                return
            if output is not None and mlpredict.output_reserved(output):
                self.fail((*path, "output"), f"output {output!r} would hide one of the prediction's own outputs; choose another", prefer_key=True)
                return
            self.note(
                (*path, "model") if "model" in spec else path,
                mlpredict.note_text(name, model, pairs, output or mlpredict.DEFAULT_OUTPUT),
            )
            self.analyzers[name] = Analyzer(
                name=name, type="ml_predictor", model=model, features=written, output=output
            )
            self.ml_steps.append(mlpredict.params_of(name, model, pairs, output))

    def check_guide_analyzers(self, chosen: list[Analyzer], metrics: tuple[str, ...], at: DocPath, step: str) -> None:
        """Check that each logic / business_impact analyzer an analysis runs has its inputs there."""
        for analyzer in chosen:
            if analyzer.type == "logic":
                missing = [m for m in analyzer.metrics if m not in metrics]
                if missing:
                    self.fail(
                        at,
                        f"analyzer {analyzer.name!r} reads {', '.join(missing)}, which {step} does "
                        f"not compare (it compares {', '.join(metrics)}); capture it on both sides "
                        "or list the analyses it applies to with analyzers:",
                        prefer_key=True,
                    )
            elif analyzer.type == "business_impact":
                groups = resolve_groups(metrics, {m: self.metrics[m].unit for m in metrics})
                lacking = [g for g in analyzer.correlate if not groups.get(g)]
                if "user_behavior" in analyzer.correlate and "revenue_data" not in analyzer.correlate:
                    lacking.append("revenue_data")
                if lacking:
                    self.fail(
                        at,
                        f"analyzer {analyzer.name!r} correlates {', '.join(analyzer.correlate)}, but "
                        f"{step} compares no metric for "
                        + "; ".join(f"{g} (needs {GROUP_NEEDS[g]})" for g in dict.fromkeys(lacking)),
                        prefer_key=True,
                    )
                    continue
                used = {g: groups[g] for g in analyzer.correlate}
                formula = (
                    "lost orders per hour (user_behavior, baseline - current) x average order "
                    "value (revenue_data / user_behavior at baseline)"
                    if "user_behavior" in used
                    else "revenue per hour at baseline - revenue per hour now (revenue_data)"
                )
                self.note(
                    at,
                    f"business_impact {analyzer.name} -> {analyzer.output}: "
                    + "; ".join(f"{g} = {', '.join(names)}" for g, names in used.items())
                    + f"; money per hour = {formula}, from the medians; positive is money lost",
                )

    def analyzer_tree(self, params: Analyze) -> dict[str, Tree]:
        """Return what an analysis' logic and business_impact analyzers add to conditions."""
        tree: dict[str, Tree] = {}
        verdicts: dict[str, Tree] = {}
        for name in params.analyzers:
            analyzer = self.analyzers.get(name)
            if analyzer is None:
                continue
            if analyzer.type == "logic":
                verdicts[name] = {"verdict": STRING, "degraded": BOOL}
            elif analyzer.type == "business_impact" and analyzer.output:
                groups = resolve_groups(params.metrics, {m: self.metrics[m].unit for m in params.metrics})
                revenue = groups.get("revenue_data") or ()
                if not revenue:
                    continue
                money = self.metrics[revenue[0]].unit.dimension.partition("/")[0]
                tree[analyzer.output] = {
                    "loss_per_hour": f"{money}/time",
                    "average_order_value": money,
                    "lost_orders_per_hour": "number/time",
                    "attributed": BOOL,
                }
        if verdicts:
            tree["analyzers"] = verdicts
        return tree

    def _logic_finding(self, path: DocPath, text: Any, exc: LogicError) -> Finding:
        base = self.doc.finding(path, "", prefer_key=False)
        multi = isinstance(text, str) and "\n" in text
        line = base.line + exc.line if multi else base.line
        column = exc.column if multi else base.column + exc.column
        return dataclasses.replace(
            base, line=line, column=column, message=f"logic line {exc.line}, column {exc.column}: {exc}"
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


_KEYS = {"logic": ("logic", "input"), "business_impact": ("correlate",), "ml_predictor": ("model", "features")}


def _kind(spec: dict[str, Any]) -> str | None:
    """Return the analyzer's type: written, or read from the keys the guide writes."""
    if isinstance(spec.get("type"), str):
        return str(spec["type"])
    for kind, keys in _KEYS.items():
        if keys[0] in spec:
            return kind
    return None


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
