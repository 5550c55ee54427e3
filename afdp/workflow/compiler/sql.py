"""SQL steps (queries and ``verify_data_integrity`` checks) and ``segment_users``.

A SQL step names its sql collector (or there is exactly one); its queries are templates
checked like any ``${...}``, and a secret may not stand in a query's text. The groups of
``segment_users`` must add up to 100%.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from afdp.workflow.catalog import StepType
from afdp.workflow.compiler.common import _RawStep
from afdp.workflow.compiler.variables import _Variables
from afdp.workflow.loader import DocPath
from afdp.workflow.model import Check, Query, Segment, SqlCheck
from afdp.workflow.scope import suggest
from afdp.workflow.units import Quantity, UnitError, parse_quantity


class _Sql(_Variables):
    """SQL query and check steps, and segments."""

    def sql_collector(self, value: Any, path: DocPath, step_type: str) -> str | None:
        sql = [c.name for c in self.collectors.values() if c.type == "sql"]
        if value is None:
            if len(sql) == 1:
                return sql[0]
            if not sql:
                self.fail(
                    path,
                    f"{step_type} queries a database: declare a sql collector (collectors: db: {{type: sql, url: ${{env.DATABASE_URL}}}})",
                    prefer_key=True,
                )
            else:
                self.fail(
                    path,
                    f"{step_type}: several sql collectors ({', '.join(sql)}); name one with collector:",
                    prefer_key=True,
                )
            return None
        if not isinstance(value, str):
            return None
        collector = self.collectors.get(value)
        if collector is None:
            self.fail(
                path, f"undefined collector {value!r}{suggest(value, sql or list(self.collectors))}"
            )
            return None
        if collector.type != "sql":
            self.fail(
                path,
                f"{step_type} needs a sql collector; {value!r} is a {collector.type} collector",
            )
            return None
        return value

    def query(
        self, spec: StepType, item: _RawStep, where: Callable[[str], DocPath]
    ) -> Query | None:
        p = item.params
        collector = self.sql_collector(
            p.get("collector"), where("collector") if "collector" in p else item.path, item.type
        )
        text = p.get("query", spec.query)
        scope = self.base_scope(env=True, steps=True)
        query = self.template(
            text, where("query") if "query" in p else item.path, scope, secrets="a query's text"
        )
        duration = self.duration(p.get("duration"), where("duration"))
        interval = self.duration(p.get("interval"), where("interval"))
        if interval and not duration:
            self.fail(where("interval"), "an interval needs a duration: how long to keep querying")
        threshold = self.duration(p.get("alert_threshold"), where("alert_threshold"))
        if collector is None or query is None:
            return None
        limit = p.get("limit")
        return Query(
            collector,
            query,
            duration,
            interval,
            threshold,
            limit if isinstance(limit, int) else None,
        )

    def check(self, item: _RawStep, where: Callable[[str], DocPath]) -> Check | None:
        p = item.params
        collector = self.sql_collector(
            p.get("collector"), where("collector") if "collector" in p else item.path, item.type
        )
        scope = self.base_scope(env=True, steps=True)
        checks = []
        for name, spec in self.mapping(p.get("checks")).items():
            if not isinstance(spec, dict):
                continue
            query = self.template(
                spec.get("query"), (*where("checks"), name, "query"), scope,
                secrets="a query's text",
            )
            if query is not None:
                checks.append(SqlCheck(name, query, spec.get("expect")))
        if collector is None or not checks:
            return None
        return Check(collector, tuple(checks))

    def segment(self, item: _RawStep) -> Segment | None:
        groups: list[tuple[str, Quantity]] = []
        for name, value in item.params.items():
            try:
                share = parse_quantity(value, allow_negative=False)
            except UnitError:
                continue  # reported by the schema
            groups.append((name, share))
        total = sum(share.base for _, share in groups)
        if groups and abs(total - 1) > 1e-9:
            self.fail(
                item.params_path,
                f"the groups add up to {total * 100:g}%, not 100%",
                prefer_key=True,
            )
        return Segment(tuple(groups)) if groups else None
