"""A/B steps: ``enable_feature`` and ``business_impact``; the ``integrity:`` section.

``segment_users`` (:mod:`.sql`) splits users into groups; ``enable_feature`` switches a
flag on for one group through a provider (a flagd flag file, or a webhook) and, when
nothing else does, marks the deployment; a capture after the split measures metrics
written with ``${segment.group}`` once per group (:mod:`.captures`); an analysis of such
a capture compares control with treatment in the same window (:mod:`.analyses`);
``business_impact`` turns that comparison into a revenue difference with an interval.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, cast

from afdp.workflow import catalog
from afdp.workflow.compiler.analyses import _Analyses
from afdp.workflow.compiler.common import _RawStep
from afdp.workflow.loader import DocPath
from afdp.workflow.model import Analyze, BusinessImpact, EnableFeature, Segment
from afdp.workflow.scope import suggest
from afdp.workflow.units import UnitError, parse_duration, parse_quantity

DEFAULT_FLAG_FILE = "${workflow.FLAG_FILE}"


class _AbTest(_Analyses):
    """enable_feature, business_impact and integrity."""

    def enable_feature(
        self, item: _RawStep, where: Callable[[str], DocPath], name: str
    ) -> EnableFeature | None:
        p = item.params
        segment = self.latest_segment()
        if segment is None:
            self.fail(
                item.path,
                "enable_feature switches a feature on for a group of segment_users; add "
                "'- segment_users: {control_group: 50%, treatment_group: 50%}' before it",
                prefer_key=True,
            )
            return None
        groups = [g for g, _ in cast(Segment, segment.params).groups]
        group = p.get("group", groups[-1])
        if group not in groups:
            self.fail(
                where("group"),
                f"{segment.name!r} has no group {group!r}{suggest(str(group), groups)} "
                f"(groups: {', '.join(groups)})",
            )
            return None
        try:
            percentage = parse_quantity(p.get("percentage", "100%"), allow_negative=False)
        except UnitError:
            return None  # the schema reported it
        if not 0 < percentage.base <= 1:
            self.fail(where("percentage"), "the percentage of the group must be above 0% and at most 100%")
            return None
        flag = p.get("flag")
        if not isinstance(flag, str):
            flag = re.sub(r"[^A-Za-z0-9_.-]", "_", str(self.data.get("name") or "feature"))
        provider = p.get("provider") or ("webhook" if "url" in p else "flagd")
        scope = self.base_scope(env=True)
        file = url = secret = None
        if provider == "flagd":
            for key in ("url", "secret"):
                if key in p:
                    self.fail(where(key), f"{key!r} is for provider: webhook; a flagd provider writes file:")
            file = self.template(
                p.get("file", DEFAULT_FLAG_FILE), where("file"), scope, secrets="a file name"
            )
        else:
            if "file" in p:
                self.fail(where("file"), "'file' is for provider: flagd; a webhook provider posts to url:")
            raw_url = p.get("url")
            if not isinstance(raw_url, str):
                self.fail(item.params_path, "provider: webhook needs url: (where to POST the flag change)", prefer_key=True)
                return None
            if not re.match(r"https?://[A-Za-z0-9]", raw_url):
                self.fail(where("url"), "a flag webhook URL starts literally with http:// or https:// and a host")
                return None
            url = self.template(raw_url, where("url"), scope, secrets="url")
            raw_secret = p.get("secret")
            if raw_secret is not None:
                if not (isinstance(raw_secret, str) and re.fullmatch(r"\$\{env\.[A-Za-z_][A-Za-z0-9_]*\}", raw_secret.strip())):
                    self.fail(where("secret"), "secret: must come from the environment (${env.NAME}): a key written here would be evidence")
                else:
                    secret = self.template(raw_secret, where("secret"), scope, secrets=True)
        timeout = self.duration(p.get("timeout", catalog.DEFAULT_TIMEOUT), where("timeout"))
        if "provider" not in p and "file" not in p and "url" not in p:
            self.note(
                item.path,
                f"enable_feature names no provider: AFDP writes flag {flag!r} into the flagd "
                "flag file ${workflow.FLAG_FILE} (flags.flagd.json unless --set "
                f"FLAG_FILE=...), turning it on for {percentage} of {group!r}; the "
                "record shows the flag before and after",
            )
        if self.boundary is None and not self.has_mark:
            self.note(
                item.path,
                "no mark_deployment_time: enabling the feature marks the deployment (the "
                "captures before it are the baseline, those after it the impact)",
            )
        return EnableFeature(
            flag=flag,
            group=group,
            percentage=percentage,
            segment=segment.name,
            provider=cast(Any, provider),
            file=file,
            url=url,
            secret=secret,
            timeout=timeout or parse_duration(catalog.DEFAULT_TIMEOUT),
        )

    def business_impact(
        self, item: _RawStep, where: Callable[[str], DocPath]
    ) -> BusinessImpact | None:
        p = item.params
        analysis = self.latest_analysis()
        if analysis is None or cast(Analyze, analysis.params).groups is None:
            self.fail(
                item.path,
                "business_impact reads the control/treatment comparison of an earlier "
                "statistical_comparison over a per-group capture (after segment_users)",
                prefer_key=True,
            )
            return None
        params = cast(Analyze, analysis.params)
        revenue = p.get("revenue_metric")
        if revenue is None and p.get("revenue_difference", "calculate") == "calculate":
            revenue = catalog.REVENUE_METRIC if catalog.REVENUE_METRIC in params.metrics else None
            if revenue is None:
                self.fail(
                    item.path,
                    f"revenue_difference: calculate needs {catalog.REVENUE_METRIC} (or "
                    f"revenue_metric:) in {analysis.name!r}'s metrics",
                    prefer_key=True,
                )
                return None
        elif revenue is not None and revenue not in params.metrics:
            self.fail(where("revenue_metric"), f"{revenue!r} is not compared by {analysis.name!r}")
            return None
        satisfaction = p.get("satisfaction_metrics")
        if isinstance(satisfaction, list):
            chosen = tuple(m for m in satisfaction if m in params.metrics)
            for index, metric in enumerate(satisfaction):
                if metric not in params.metrics:
                    self.fail((*where("satisfaction_metrics"), index), f"{metric!r} is not compared by {analysis.name!r}")
        elif "user_satisfaction" in p:
            chosen = tuple(m for m in catalog.SATISFACTION_METRICS if m in params.metrics)
        else:
            chosen = ()
        if "user_satisfaction" in p and not chosen:
            self.fail(
                where("user_satisfaction"),
                "user_satisfaction: measure needs a satisfaction metric in the comparison ("
                + ", ".join(catalog.SATISFACTION_METRICS) + ", or satisfaction_metrics:)",
            )
        self.note(
            item.path,
            f"business_impact: the revenue difference is {revenue}'s treatment mean minus its "
            f"control mean in {analysis.name!r}'s window, with a {params.confidence:.0%} Welch "
            "interval; user satisfaction is measured by "
            + (", ".join(chosen) or "nothing")
            + " (maintained: none of them significantly worse in the treatment)",
        )
        return BusinessImpact(analysis.name, revenue, chosen, params.confidence)

    def compile_integrity(self) -> tuple[str, ...]:
        entries = self.data.get("integrity")
        chosen: list[str] = []
        for index, entry in enumerate(entries if isinstance(entries, list) else []):
            meaning = catalog.INTEGRITY.get(entry) if isinstance(entry, str) else None
            if meaning is None:
                continue  # the schema reported it
            chosen.append(entry)
            self.note(("integrity", index), f"{entry}: {meaning}")
        return tuple(chosen)
