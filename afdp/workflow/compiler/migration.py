"""Database migration steps as the guide writes them (its Example 2), and ``correlation:``.

- A SQL step in a workflow that declares no sql collector reads the built-in one,
  ``database`` at ``${env.DATABASE_URL}`` (as the built-in ``prometheus`` collector
  reads ``${workflow.PROMETHEUS_URL}``); validate says so in a note.
- ``snapshot_performance`` with no metrics (and none declared) snapshots the database's
  own statistics; ``compare_performance`` / ``analyze_user_impact`` with no captures to
  pair compare that snapshot with a fresh one they take; ``verify_data_integrity``
  without ``checks`` compares row counts and checksums of tables with the fingerprints
  ``record_table_sizes`` took before the migration.
- ``correlation:`` is one step after the last, over past deployments of the service.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, cast

from afdp.workflow import catalog
from afdp.workflow.catalog import StepType
from afdp.workflow.compiler.collectors import _Collectors
from afdp.workflow.compiler.common import _RawStep
from afdp.workflow.compiler.sql import _Sql
from afdp.workflow.interpolation import Template
from afdp.workflow.loader import DocPath
from afdp.workflow.model import Capture, Correlate, Database, Query, SqlCheck, Step


class _Migration(_Sql, _Collectors):
    """The database forms of migration steps, the default database, and correlation."""

    def sql_collector(self, value: Any, path: DocPath, step_type: str) -> str | None:
        if value is None and not any(c.type == "sql" for c in self.collectors.values()):
            self.default_database(path)
        return super().sql_collector(value, path, step_type)

    def query(
        self, spec: StepType, item: _RawStep, where: Callable[[str], DocPath]
    ) -> Query | None:
        built = super().query(spec, item, where)
        if built is None:
            return None
        if item.type == "monitor_locks" and built.duration is None:
            self.note(
                item.path,
                "monitor_locks without a duration looks once, when it runs: it measures how long "
                "each strong lock (SHARE or stronger) has been held (the age of the transaction "
                "holding it) or waited for; longer than alert_threshold fails the step (give "
                "duration: and interval: to keep watching)",
            )
        if spec.fallback is not None and "query" not in item.params:
            built = dataclasses.replace(
                built,
                fallback=Template(spec.fallback, (spec.fallback,)),
                sources=spec.sources,
                probe=Template(spec.probe, (spec.probe,)) if spec.probe else None,
            )
        return built

    def default_database(self, path: DocPath) -> None:
        name = catalog.DEFAULT_SQL_COLLECTOR
        if name in self.collectors:
            return
        spec = dict(catalog.DEFAULT_SQL_COLLECTOR_SPEC)
        self.collectors[name] = self.collector(name, spec, None, builtin=True)
        self.note(
            path,
            f"no sql collector is declared: the database steps read the built-in collector "
            f"{name!r} at {spec['url']} (set DATABASE_URL to a SQLAlchemy URL such as "
            "postgresql://user@host/db; declare collectors: to use another)",
        )

    def database_form(
        self, spec: StepType, item: _RawStep, where: Callable[[str], DocPath]
    ) -> Database | None | bool:
        """Return the :class:`Database` params of a migration step written the guide's
        way, None when it is one but broken (reported), False when it is not one."""
        p = item.params
        if item.type == "snapshot_performance":
            declared = [m for m in self.metrics.values() if not m.builtin]
            if "metrics" in p or declared or p:
                return False
            collector = self.sql_collector(None, item.path, item.type)
            if collector is None:
                return None
            self.note(
                item.path,
                "snapshot_performance without metrics snapshots the database's own statistics: "
                "pg_stat_statements when it is installed, else pg_stat_database (the record says "
                "which); a later compare_performance or analyze_user_impact compares it with a "
                "snapshot it takes itself",
            )
            return Database("snapshot", collector)
        if item.type in ("compare_performance", "analyze_user_impact"):
            if p or any(isinstance(s.params, Capture) for s in self.steps):
                return False
            snapshots = [
                s for s in self.steps
                if isinstance(s.params, Database) and s.params.op == "snapshot"
            ]
            if not snapshots:
                return False
            baseline = snapshots[-1]
            op = "compare" if item.type == "compare_performance" else "user_impact"
            measured = (
                "the mean time per statement, the cache hit ratio and temporary bytes per "
                "transaction" if op == "compare" else
                "the share of transactions rolled back, deadlocks and recovery conflicts"
            )
            self.note(
                item.path,
                f"{item.type} has no captures to compare: it compares the database snapshot "
                f"{baseline.name!r} (the statistics up to then) with the activity since, read "
                f"from a snapshot it takes when it runs: {measured}; a degradation fails the step",
            )
            return Database(cast(Any, op), cast(Database, baseline.params).collector, baseline=baseline.name)
        if item.type == "verify_data_integrity":
            if "checks" in p and "tables" not in p:
                return False
            return self.integrity(item, where)
        return False

    def integrity(self, item: _RawStep, where: Callable[[str], DocPath]) -> Database | None:
        p = item.params
        sizes = [
            s for s in self.steps
            if s.type == "record_table_sizes" and isinstance(s.params, Query)
        ]
        tables_value = p.get("tables")
        tables = tuple(t for t in tables_value if isinstance(t, str)) if isinstance(
            tables_value, list
        ) else ()
        if not sizes:
            self.fail(
                item.path,
                "verify_data_integrity compares tables with the row counts and checksums "
                "record_table_sizes takes before the migration: add record_table_sizes before it, "
                "or give checks:",
                prefer_key=True,
            )
            return None
        source = sizes[-1]
        collector = cast(Query, source.params).collector
        checks: list[SqlCheck] = []
        if "checks" in p:
            built = self.check(item, where)
            checks = list(built.checks) if built is not None else []
        # The fingerprints are taken by record_table_sizes: tell it which tables.
        query = cast(Query, self.replaced.get(source.name, source).params)
        wanted = ("*",) if not tables or "*" in query.fingerprint else tuple(
            dict.fromkeys((*query.fingerprint, *tables))
        )
        self.replaced[source.name] = dataclasses.replace(
            source, params=dataclasses.replace(query, fingerprint=wanted)
        )
        self.note(
            item.path,
            "verify_data_integrity compares the exact row count and a checksum of "
            + (f"tables {', '.join(tables)}" if tables else "every table record_table_sizes lists")
            + f" with the fingerprints step {source.name!r} takes before the migration; the "
            "checksum covers the columns that existed then (a column added by the migration "
            "does not count, a changed, added or deleted row does); a difference fails the step",
        )
        return Database(
            "integrity", collector, source=source.name, tables=tables, checks=tuple(checks)
        )

    def correlation_step(self, raw: list[_RawStep]) -> None:
        """Append the ``correlation:`` section as a step after the last one."""
        figures = self.data.get("correlation")
        if not isinstance(figures, list) or not raw:
            return
        raw.append(
            _RawStep(
                "@correlation", {"figures": figures}, {}, ("correlation",), ("correlation",),
                raw[-1].phase, implicit=True,
            )
        )
        self.note(
            ("correlation",),
            "correlation runs as a step 'correlation' after the last step: each figure is "
            "computed over the past deployments of the same service whose evidence branches "
            "verify against the trust policy given to the run (afdp run --trust); with fewer "
            f"than {catalog.MIN_CORRELATION_DEPLOYMENTS} such deployments a figure is 'not "
            "enough data'",
        )

    def build_correlation(self, item: _RawStep, index: int) -> Step:
        figures = tuple(f for f in item.params.get("figures", []) if isinstance(f, str))
        return Step(
            name="correlation",
            type="correlation",
            kind=catalog.StepKind.CORRELATE,
            index=index,
            phase=item.phase,
            params=Correlate(figures, catalog.MIN_CORRELATION_DEPLOYMENTS),
            description="correlation across past deployments",
            location=self.location(item.path),
        )


__all__ = ["_Migration"]
