"""Success criteria written as the workflow guide writes them.

Besides conditions (``error_rate.increase < 0.5%``), ``success_criteria`` accepts the
guide's phrases. Each is read as a condition over the analysis the decisions step runs
after, with the statistical test where noise could fool a raw difference:

- ``<metric>_increase < 10ms`` (any comparison, any quantity): ``<metric>.shift``, the
  impact-minus-baseline location shift the test estimates (Hodges-Lehmann, the median
  of all pairwise differences, for Mann-Whitney; the mean difference for Welch; without
  a test the difference of the medians). ``<metric>_decrease`` is ``-<metric>.shift``.
- ``no_increase_in_errors``: ``not error_rate.degraded``: the error rate did not rise by
  more than the analysis allows *and* confirmed by the test (one-sided Mann-Whitney at
  the analysis confidence, the default comparison's 10% tolerance or the workflow's
  thresholds).
- ``revenue_stable_or_increasing``: ``not revenue_per_hour.degraded`` (``better:
  higher``: only a confirmed fall beyond the tolerance fails it).
- ``user_satisfaction_maintained``: ``not user_satisfaction.degraded`` (Apdex, built in).

Unknown data (no samples, a test that could not run and no tolerance) leaves
``degraded`` null: the criterion is not met (fail closed). A phrase whose metric the
analysis does not compare is a located error naming what to capture.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any, cast

from afdp.workflow.compiler.analyses import _Analyses
from afdp.workflow.expressions import Expression
from afdp.workflow.loader import DocPath
from afdp.workflow.model import Analyze, Step

#: phrase -> (metrics it can read, first compared wins; what it means)
PHRASES: Mapping[str, tuple[tuple[str, ...], str]] = {
    "no_increase_in_errors": (
        ("error_rate",),
        "the error rate did not rise beyond the analysis' tolerance with the test confirming it",
    ),
    "revenue_stable_or_increasing": (
        ("revenue_per_hour", "revenue"),
        "revenue did not fall beyond the analysis' tolerance with the test confirming it",
    ),
    "user_satisfaction_maintained": (
        ("user_satisfaction", "apdex"),
        "user satisfaction (Apdex) did not fall beyond the analysis' tolerance with the test confirming it",
    ),
}

_CHANGE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)_(increase|decrease)\s*(<=|>=|==|!=|<|>)\s*(.+?)\s*$")


def read_phrase(
    text: str, metrics: Mapping[str, str], compared: Sequence[str]
) -> tuple[str, str] | str | None:
    """Read ``text`` as one of the guide's phrases.

    ``metrics`` maps every defined metric name to its ``better``; ``compared`` lists the
    metrics the analysis compares.

    Returns:
        None when ``text`` is not a phrase (an ordinary condition); ``(condition,
        meaning)`` when it is; an error message (str) when its metric is not compared.
    """
    key = text.strip()
    if key in PHRASES:
        candidates, meaning = PHRASES[key]
        metric = next((m for m in candidates if m in compared), None)
        if metric is None:
            return (
                f"success criterion {key!r} ({meaning}) needs {candidates[0]}, which the analysis "
                f"does not compare: capture it before and after the deployment "
                f"(e.g. '- capture: [..., {candidates[0]}]', or list it under context:)"
            )
        if metrics.get(metric) != "higher" and key != "no_increase_in_errors":
            return (
                f"success criterion {key!r} reads {metric} as higher-is-better, but it is "
                f"declared better: {metrics.get(metric)}; add better: higher to metrics: {metric}"
            )
        return f"not {metric}.degraded", meaning
    match = _CHANGE.match(key)
    if match is None:
        return None
    name, direction, op, limit = match.groups()
    if f"{name}_{direction}" in metrics or name not in metrics:
        return None  # a metric really called that, or not a metric: an ordinary condition
    if name not in compared:
        return (
            f"success criterion {key!r} needs {name}, which the analysis does not compare: "
            f"capture it before and after the deployment (e.g. '- capture: [..., {name}]')"
        )
    sign = "" if direction == "increase" else "-"
    return (
        f"{sign}{name}.shift {op} {limit}",
        f"the {direction} of {name} (the test's location shift, impact minus baseline) {op} {limit}",
    )


class _Criteria(_Analyses):
    """Success criteria: conditions, or the guide's phrases."""

    def criterion(self, text: Any, path: DocPath, analysis: Step | None) -> Expression | None:
        scope = self.analysis_scope(analysis)
        if isinstance(text, str):
            compared = cast(Analyze, analysis.params).metrics if analysis is not None else ()
            read = read_phrase(text, {n: m.better for n, m in self.metrics.items()}, compared)
            if isinstance(read, str):
                self.fail(path, read)
                return None
            if read is not None:
                condition, meaning = read
                expression = self.condition(condition, path, scope)
                if expression is None:
                    return None
                self.note(path, f"success criterion {text.strip()!r} is read as {condition!r}: {meaning}")
                return dataclasses.replace(expression, source=f"{text.strip()}: {condition}")
        return self.condition(text, path, scope)
