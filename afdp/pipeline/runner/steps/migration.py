"""Database steps of a migration workflow (kind ``database``; the guide's Example 2).

- ``snapshot``: the database's own statistics at one moment: ``pg_stat_database`` for
  the current database always, and ``pg_stat_statements`` when it can be read (the
  record's ``source`` says which one the statement times come from).
- ``compare`` / ``user_impact``: the snapshot named ``baseline`` (the statistics up to
  then, since the last reset) against the activity since (the difference between a
  fresh snapshot and it): each measure in :data:`MEASURES`, degraded when it moves the
  worse way by more than its tolerance relative to the baseline *and* its absolute
  floor, with at least :data:`MIN_ACTIVITY` transactions on both sides (else not judged).
  A degradation fails the step, as a fired lock alert does.
- ``integrity``: the exact row count and an order-independent checksum of each table
  ``record_table_sizes`` fingerprinted before the migration, taken again over the same
  columns, plus any SQL ``checks``; a difference fails the step.

Every query is read-only, built here from names the database itself returned, with
identifiers quoted (``"..."``) and never interpolated as ``${...}``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from afdp.errors import AfdpError
from afdp.evidence import records as rec
from afdp.pipeline.runner.state import RunState, StepResult, _json_safe, _one_line
from afdp.pipeline.runner.steps import statements as pgss
from afdp.workflow.catalog import PG_STAT_STATEMENTS_PROBE
from afdp.workflow.interpolation import Template
from afdp.workflow.model import Database, Step

#: Rolled-back transactions each read-only query of AFDP's sql collector costs on
#: PostgreSQL: the query's own READ ONLY transaction (a new connection per read sends
#: nothing else).
TRANSACTIONS_PER_QUERY = 1

#: Fewer transactions than this on either side of a comparison: the measure is not judged.
MIN_ACTIVITY = 10

#: name -> (step op, better, relative tolerance, absolute floor, unit): a measure is
#: degraded when it moves the worse way by more than both.
MEASURES: dict[str, tuple[str, str, float, float, str]] = {
    "mean_statement_time": ("compare", "lower", 0.10, 1.0, "ms"),
    "cache_hit_ratio": ("compare", "higher", 0.10, 0.01, "ratio"),
    "temp_bytes_per_transaction": ("compare", "lower", 0.10, 1_048_576.0, "B"),
    "rollback_ratio": ("user_impact", "lower", 0.10, 0.01, "ratio"),
    "deadlocks": ("user_impact", "lower", 0.0, 0.0, "count"),
    "conflicts": ("user_impact", "lower", 0.0, 0.0, "count"),
}

_DATABASE = (
    "SELECT to_jsonb(d) AS stats, now() AS taken_at FROM pg_stat_database d "
    "WHERE datname = current_database()"
)

_COUNTERS = (
    "numbackends", "xact_commit", "xact_rollback", "blks_read", "blks_hit", "tup_returned",
    "tup_fetched", "tup_inserted", "tup_updated", "tup_deleted", "conflicts", "temp_files",
    "temp_bytes", "deadlocks", "active_time", "session_time", "stats_reset",
)


def _same(got: Any, expect: Any) -> bool:
    # As verify_data_integrity's checks compare (steps.sql, which imports this module).
    if isinstance(got, (int, float)) and isinstance(expect, (int, float)) and not isinstance(got, bool):
        return math.isclose(float(got), float(expect), rel_tol=1e-9, abs_tol=1e-12)
    return bool(got == expect)


def _sql(text: str) -> Template:
    return Template(text, (text,))


@dataclass
class ServerTime:
    """The milliseconds the database itself measured for AFDP's internal statements
    (from the statement's start to its last row: a lower bound of what the database
    counts as their active time; never the client's clock, which adds connecting,
    Python, load and the network)."""

    ms: float = 0.0
    statements: int = 0


def _internal(text: str) -> str:
    # The database measures the statement: clock_timestamp() is evaluated for the outer
    # row, after the inner query has produced its rows.
    return (
        "SELECT q.*, (extract(epoch FROM clock_timestamp() - statement_timestamp())"
        f" * 1000)::float8 AS afdp_server_ms FROM ({text}) q"
    )


def _rows(
    run: RunState, collector: str, text: str, values: dict[str, Any], server: ServerTime
) -> list[dict[str, Any]]:
    """Run one of AFDP's internal queries (timed by the database, which adds its time to
    ``server``); return its rows without the timing column."""
    from afdp.pipeline.collectors import run_query

    answer = run_query(run.workflow, collector, _sql(_internal(text)), values=values, env=run.env, limit=1000)
    rows = [_json_safe(dict(row)) for row in answer.rows]
    took = [r.pop("afdp_server_ms", None) for r in rows]
    measured = [float(t) for t in took if isinstance(t, (int, float)) and not isinstance(t, bool)]
    server.ms += max(measured, default=0.0)
    server.statements += 1
    return rows


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def take_snapshot(
    run: RunState,
    collector: str,
    values: dict[str, Any],
    server: ServerTime | None = None,
    *,
    cursor: str | None = None,
    since: float | None = None,
    also: Sequence[str] = (),
) -> dict[str, Any]:
    """Return the database's statistics now: ``database`` (pg_stat_database counters),
    ``statements`` (pg_stat_statements totals, with apart the totals of the statements on
    ``cursor`` -- by default this process's, the one this snapshot reads through -- and
    of every AFDP-looking statement; or None), ``source`` and why. ``server`` gathers the
    database's time for its queries. A comparison passes the baseline's ``cursor`` and
    when it was taken (``since``, Unix seconds): this process's cursor is summed with it
    when it was drawn after then (it has no statement in the baseline)."""
    from afdp.pipeline.collectors import CollectorFailed
    from afdp.pipeline.collectors.sql import cursor_drawn_at, cursor_name

    server = server if server is not None else ServerTime()
    reader = cursor_name()
    cursor = cursor or reader
    cursors = [cursor]
    if reader != cursor and since is not None and cursor_drawn_at() > since + pgss.FRESH_AFTER_SECONDS:
        cursors.append(reader)
    cursors += [c for c in also if c not in cursors]  # later steps' own, drawn after the baseline
    taken_locally = round(time.time(), 3)
    rows = _rows(run, collector, _DATABASE, values, server)
    after = ServerTime()
    stats = rows[0]["stats"] if rows and isinstance(rows[0].get("stats"), dict) else {}
    snapshot: dict[str, Any] = {
        "taken_at": rows[0]["taken_at"] if rows else rec.format_time(rec.utc_now()),
        "database": {k: stats.get(k) for k in _COUNTERS if k in stats},
        # Read-only transactions this snapshot runs after reading the counters (each
        # ends in a rollback, which a later comparison must not count as the users').
        "queries_after": 1,
        # The cursor this snapshot's own reads went through (the last one was under way
        # when pg_stat_statements was read: its BEGIN is in the totals, its ROLLBACK not).
        "read_through": reader,
        "taken_locally": taken_locally,
    }
    try:
        probe = _rows(run, collector, PG_STAT_STATEMENTS_PROBE, values, after)
        if not (probe and probe[0].get("available") is True):
            raise CollectorFailed("pg_stat_statements is not installed and preloaded")
        snapshot["queries_after"] = 2
        statements = _rows(run, collector, pgss.totals_query(cursors), values, after)
        if not statements or statements[0].get("track_utility") != "on":
            # DECLARE, FETCH and CLOSE would not be tracked: a cursor's work would be
            # counted under its inner query, which an application query can share.
            raise CollectorFailed(
                "pg_stat_statements.track_utility is off: AFDP's reads cannot be told apart"
            )
    except AfdpError as exc:
        snapshot["statements"] = None
        snapshot["source"] = "pg_stat_database"
        snapshot["source_reason"] = "pg_stat_statements cannot be read: " + _one_line(
            exc.diagnostics()
        )[:300]
    else:
        snapshot["statements"] = statements[0]
        snapshot["source"] = "pg_stat_statements"
        snapshot["statements_cursor"] = cursor
        snapshot["statements_cursors"] = cursors
        snapshot["statements_excluded"] = (
            f"totals with, apart, those of the statements on cursors {', '.join(cursors)} (run_*) and of "
            "every statement on a cursor named like AFDP's or with an earlier version's "
            "mark (any_afdp_*); *_reads: AFDP reads (one BEGIN READ ONLY and one ROLLBACK each)"
        )
    # The database's own time for the queries after the counters were read.
    snapshot["queries_after_server_ms"] = round(after.ms, 3)
    server.ms += after.ms
    server.statements += after.statements
    return snapshot


def _num(data: Any, key: str) -> float | None:
    value = data.get(key) if isinstance(data, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _ratio(top: float | None, bottom: float | None) -> float | None:
    if top is None or bottom is None or bottom <= 0:
        return None
    return top / bottom


def _sides(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per counter: the baseline (cumulative at the snapshot) and the window (since)."""
    sides: dict[str, dict[str, float | None]] = {"baseline": {}, "window": {}}
    for group in ("database", "statements"):
        b, a = before.get(group) or {}, after.get(group) or {}
        for key in set(b) | set(a):
            old, new = _num(b, key), _num(a, key)
            sides["baseline"][f"{group}.{key}"] = old
            sides["window"][f"{group}.{key}"] = (
                new - old if new is not None and old is not None and new >= old else None
            )
    return sides


def _measures(side: dict[str, float | None], source: str) -> dict[str, float | None]:
    commits, rollbacks = side.get("database.xact_commit"), side.get("database.xact_rollback")
    transactions = commits + rollbacks if commits is not None and rollbacks is not None else None
    hit, read = side.get("database.blks_hit"), side.get("database.blks_read")
    # pg_stat_statements: its readings replace this (compare_snapshots); else the time
    # sessions spent running statements, per transaction.
    mean = None if source == "pg_stat_statements" else _ratio(side.get("database.active_time"), transactions)
    return {
        "transactions": transactions,
        "mean_statement_time": mean,
        "cache_hit_ratio": _ratio(hit, hit + read if hit is not None and read is not None else None),
        "temp_bytes_per_transaction": _ratio(side.get("database.temp_bytes"), transactions),
        "rollback_ratio": _ratio(rollbacks, transactions),
        "deadlocks": side.get("database.deadlocks"),
        "conflicts": side.get("database.conflicts"),
    }


def _judge(old: float | None, new: float | None, better: str, tolerance: float, floor: float,
           unit: str, active: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"baseline": old, "window": new, "unit": unit}
    if old is None or new is None or not active:
        entry.update(degraded=None, reason=(
            f"not judged: fewer than {MIN_ACTIVITY} transactions on a side"
            if not active else "not judged: no data"))
        return entry
    worse = new - old if better == "lower" else old - new
    entry["change"] = new - old
    entry["relative_change"] = (new - old) / old if old else None
    entry["degraded"] = worse > floor and worse > tolerance * abs(old)
    entry["rule"] = f"worse by more than {tolerance:.0%} of the baseline and more than {floor:g} {unit}"
    return entry


def compare_snapshots(
    before: dict[str, Any], after: dict[str, Any], op: str, own: int = 0, own_server_ms: float = 0.0
) -> dict[str, Any]:
    """Return the comparison of two snapshots for ``op`` (``compare``/``user_impact``);
    ``own``: AFDP's own read-only transactions in the window (each a rollback), taken
    out of the window's rollbacks and transactions; ``own_server_ms``: the time the
    database itself measured for AFDP's internal statements in the window (a lower
    bound of their active time), taken out of the window's ``active_time``.

    With ``pg_stat_statements`` the mean statement time is judged in two readings, and is
    degraded when either is: ``run`` leaves out exactly this run's statements (those on
    the cursor the baseline read through, whose name no application statement can
    carry); ``any_afdp`` leaves out every statement on a cursor named like AFDP's (other
    runs and phases of AFDP, which ``run`` counts as the application's, as an earlier
    run's statements in the baseline) and earlier versions' marks (which an application
    statement could carry: that reading alone never clears a slowdown the other shows).
    Both leave out one BEGIN READ ONLY and one ROLLBACK call per AFDP read. Nothing is
    taken out of any time that the database did not measure as AFDP's: taking out more
    than the database spent would hide a slowdown."""
    statements = before.get("source") == after.get("source") == "pg_stat_statements"
    same = statements and pgss.separates_afdp(before) and pgss.separates_afdp(after) \
        and before.get("statements_cursor") == after.get("statements_cursor")
    # Entries evicted (pg_stat_statements.max) or a reset in the window take their counts
    # out of the totals: the difference of two totals is then no one's activity.
    kept = same and all(
        (before["statements"].get(k) == after["statements"].get(k)) for k in ("dealloc", "stats_reset")
    )
    source = "pg_stat_statements" if kept else "pg_stat_database"
    sides = _sides(before, after)
    window_sides = sides["window"]
    for key, taken in (
        ("database.xact_rollback", float(own)),
        ("database.active_time", own_server_ms),
    ):
        value = window_sides.get(key)
        if value is not None:
            window_sides[key] = max(0.0, value - taken)
    base, window = _measures(sides["baseline"], source), _measures(sides["window"], source)
    active = min(base["transactions"] or 0, window["transactions"] or 0) >= MIN_ACTIVITY
    measures: dict[str, Any] = {}
    for name, (owner, better, tolerance, floor, unit) in MEASURES.items():
        if owner != op:
            continue
        old, new = base[name], window[name]
        if name in ("deadlocks", "conflicts"):
            # Counts: the baseline is the total so far, the window is what happened since.
            measures[name] = {"baseline_total": old, "window": new, "unit": unit,
                              "degraded": None if new is None else new > 0,
                              "rule": "any in the window"}
            continue
        if name == "mean_statement_time" and source == "pg_stat_statements":
            readings = {r: pgss.reading(before, after, r) for r in pgss.READINGS}
            judged = {r: _judge(v["baseline"], v["window"], better, tolerance, floor, unit, active)
                      for r, v in readings.items()}
            for r, entry in judged.items():
                readings[r].update({k: entry[k] for k in ("change", "relative_change", "degraded", "reason")
                                    if k in entry})
            # The reading that shows more degradation is the one reported.
            worst = max(judged, key=lambda r: (bool(judged[r].get("degraded")), judged[r].get("change") or 0.0))
            entry = dict(judged[worst])
            if any(j.get("degraded") for j in judged.values()):
                entry["degraded"] = True
            entry.update(reading=worst, readings=readings)
            measures[name] = entry
            continue
        measures[name] = _judge(old, new, better, tolerance, floor, unit, active)
    degraded = [n for n, m in measures.items() if m.get("degraded")]
    result: dict[str, Any] = {
        "source": source,
        "transactions": {"baseline": base["transactions"], "window": window["transactions"]},
        "afdp_transactions_excluded": own,
        "afdp_milliseconds_excluded": round(own_server_ms, 3) if source == "pg_stat_database" else 0.0,
        "afdp_excluded": (
            "from the pg_stat_statements sums (top-level statements of this database), in two "
            "readings judged apart, a degradation in either counting: 'run': the statements on "
            f"this run's cursors ({', '.join(pgss.listed_cursors(after))}: the baseline's, and the "
            "comparison's own when drawn after the baseline) that its reads went "
            "through (DECLARE, FETCH, CLOSE: the database keeps the name in their text and "
            "keeps them apart from other cursors' statements; 128 random bits, so no "
            "application statement carries it), their calls and the time the database "
            "counted for them; 'any_afdp': the same for every cursor named like AFDP's and "
            "earlier AFDP versions' marks (AFDP's other runs and phases, which 'run' counts "
            "as the application's). In both, one BEGIN READ ONLY and one ROLLBACK call per "
            "AFDP read, counted from its cursor's DECLAREs (not their time, not known apart)"
            if source == "pg_stat_statements" else
            "from active_time: the time the database measured for AFDP's internal statements "
            "(clock_timestamp() - statement_timestamp(), a lower bound); nothing for the "
            "workflow's own queries and checks"
        ) + "; from the rollbacks: AFDP's read-only transactions",
        "measures": measures,
        "degraded_measures": degraded,
    }
    if statements and not same:
        result["source_reason"] = (
            "the snapshots' pg_stat_statements totals do not leave AFDP's reads out the same "
            "way (a snapshot of an earlier AFDP version, or another cursor)"
        )
    elif statements and not kept:
        result["source_reason"] = (
            "pg_stat_statements evicted entries or was reset in the window (dealloc "
            f"{before['statements'].get('dealloc')} -> {after['statements'].get('dealloc')}, "
            f"reset {before['statements'].get('stats_reset')} -> {after['statements'].get('stats_reset')}): "
            "the difference of its totals is not the window's activity"
        )
    return result


def fingerprint_tables(
    run: RunState,
    collector: str,
    tables: Sequence[tuple[str, str]],
    values: dict[str, Any],
    columns: dict[str, list[str]] | None = None,
    server: ServerTime | None = None,
) -> list[dict[str, Any]]:
    """Return each table's exact row count and checksum (over ``columns`` when given:
    the columns it had before, else its current ones); ``server`` gathers the
    database's time for these queries."""
    server = server if server is not None else ServerTime()
    found: list[dict[str, Any]] = []
    for schema, table in tables:
        name = f"{schema}.{table}"
        entry: dict[str, Any] = {"table": name}
        try:
            attributes = _rows(
                run,
                collector,
                "SELECT attname, attnum FROM pg_attribute WHERE attrelid = to_regclass(format('%I.%I', "
                f"{_literal(schema)}, {_literal(table)})) AND attnum > 0 AND NOT attisdropped",
                values,
                server,
            )
            current = [str(row["attname"]) for row in sorted(attributes, key=lambda r: int(r["attnum"]))]
            if not current:
                entry["error"] = "no such table"
                found.append(entry)
                continue
            wanted = current if columns is None else columns.get(name, current)
            missing = [c for c in wanted if c not in current]
            entry["columns"] = wanted
            if missing:
                entry["missing_columns"] = missing
                wanted = [c for c in wanted if c in current]
            row = ", ".join(_ident(c) for c in wanted)
            digest = (
                f"COALESCE(sum(('x' || substr(md5(ROW({row})::text), 1, 15))::bit(60)::bigint), 0)::text"
                if wanted else "'0'"
            )
            answer = _rows(
                run,
                collector,
                f"SELECT count(*) AS row_count, {digest} AS checksum FROM {_ident(schema)}.{_ident(table)}",
                values,
                server,
            )
            entry.update(rows=answer[0]["row_count"], checksum=answer[0]["checksum"])
        except AfdpError as exc:
            entry["error"] = _one_line(exc.diagnostics())[:300]
        found.append(entry)
    return found


def handle_database(run: RunState, step: Step, values: dict[str, Any]) -> StepResult:
    params = step.params
    assert isinstance(params, Database)
    if params.op == "snapshot":
        started = time.monotonic()
        server = ServerTime()
        snapshot = take_snapshot(run, params.collector, values, server)
        return StepResult(
            "ok",
            {"outputs": {"source": snapshot["source"], "taken_at": snapshot["taken_at"]},
             "snapshot": snapshot, "database_queries": 1 + int(snapshot["queries_after"]),
             "database_ms": round((time.monotonic() - started) * 1000, 3),
             "database_server_ms": round(server.ms, 3)},
            f"database statistics from {snapshot['source']}",
        )
    if params.op in ("compare", "user_impact"):
        return _compare(run, params, values)
    return _integrity(run, params, values)


def _recorded(run: RunState, name: str | None, key: str) -> Any:
    recorded = run.records.get(name or "")
    result = recorded.result if recorded is not None and isinstance(recorded.result, dict) else {}
    return result.get(key)


def own_share(before: dict[str, Any], results: Sequence[Any]) -> tuple[int, float]:
    """Return how many read-only transactions AFDP ran on the database since the
    baseline snapshot read its counters, and the time the database itself measured for
    AFDP's internal statements (``database_server_ms``), as the results of the steps
    since then say. The client's elapsed time (``database_ms``) is never used: it is
    far more than the database spent."""
    queries = int(before.get("queries_after") or 0)
    server_ms = before.get("queries_after_server_ms")
    elapsed = float(server_ms) if isinstance(server_ms, (int, float)) else 0.0
    for result in results:
        result = result if isinstance(result, dict) else {}
        count = result.get("database_queries")
        if isinstance(count, int):
            queries += count
        took = result.get("database_server_ms")
        if isinstance(took, (int, float)) and not isinstance(took, bool):
            elapsed += float(took)
    return queries * TRANSACTIONS_PER_QUERY, elapsed


def _own_queries(run: RunState, baseline: str | None, before: dict[str, Any]) -> tuple[int, float]:
    start = run.records.get(baseline or "")
    if start is None:
        return own_share(before, [])
    return own_share(before, [r.result for r in run.records.values() if r.sequence > start.sequence])


def _compare(run: RunState, params: Database, values: dict[str, Any]) -> StepResult:
    before = _recorded(run, params.baseline, "snapshot")
    if not isinstance(before, dict):
        reason = f"the baseline snapshot {params.baseline!r} was not recorded"
        return StepResult("failed", {"outputs": {}}, reason, reason)
    started = time.monotonic()
    server = ServerTime()
    cursor, since = before.get("statements_cursor"), before.get("taken_locally")
    start = run.records.get(params.baseline or "")
    later = [r.result for r in run.records.values() if start is not None and r.sequence > start.sequence]
    after = take_snapshot(run, params.collector, values, server,
                          cursor=cursor if isinstance(cursor, str) else None,
                          since=float(since) if isinstance(since, (int, float)) else None,
                          also=pgss.step_cursors(before, later))
    own, own_server_ms = _own_queries(run, params.baseline, before)
    comparison = compare_snapshots(before, after, params.op, own, own_server_ms)
    degraded = comparison["degraded_measures"]
    outputs = {"degraded": bool(degraded), "degraded_measures": degraded}
    result = {"outputs": outputs, "baseline": params.baseline, "snapshot": after,
              "comparison": comparison, "database_queries": 1 + int(after["queries_after"]),
              "database_ms": round((time.monotonic() - started) * 1000, 3),
              "database_server_ms": round(server.ms, 3)}
    window = comparison["transactions"]["window"]
    summary = (
        f"{'DEGRADED: ' + ', '.join(degraded) if degraded else 'no degradation'} "
        f"({comparison['source']}, {window:g} transaction(s) since the snapshot)"
        if window is not None else f"no comparison ({comparison['source']})"
    )
    if degraded:
        details = "; ".join(
            f"{name} {comparison['measures'][name].get('baseline', comparison['measures'][name].get('baseline_total'))}"
            f" -> {comparison['measures'][name]['window']}"
            for name in degraded
        )
        return StepResult("failed", result, summary, f"degraded since the snapshot: {details}")
    return StepResult("ok", result, summary)


def _integrity(run: RunState, params: Database, values: dict[str, Any]) -> StepResult:
    started = time.monotonic()
    before = _recorded(run, params.source, "fingerprints")
    entries: list[dict[str, Any]] = []
    errors: list[str] = []
    if not isinstance(before, list):
        reason = f"step {params.source!r} recorded no table fingerprints"
        return StepResult("failed", {"outputs": {"passed": False, "failed": [], "changed_tables": []}},
                          reason, reason)
    wanted = set(params.tables)
    old = [
        b for b in before
        if isinstance(b, dict) and (not wanted or b.get("table") in wanted
                                     or str(b.get("table", "")).removeprefix("public.") in wanted)
    ]
    columns = {b["table"]: list(b.get("columns") or []) for b in old if "columns" in b}
    tables = [tuple(str(b["table"]).split(".", 1)) for b in old]
    server = ServerTime()
    now = fingerprint_tables(run, params.collector, [(s, t) for s, t in tables], values, columns, server)
    for b, a in zip(old, now, strict=True):
        entry: dict[str, Any] = {"name": b["table"], "before": {k: b.get(k) for k in ("rows", "checksum")},
                                 "after": {k: a.get(k) for k in ("rows", "checksum")}}
        changes = []
        if "error" in b or "error" in a:
            changes.append(f"could not be read: {a.get('error') or b.get('error')}")
        else:
            if b.get("rows") != a.get("rows"):
                changes.append(f"rows {b.get('rows')} -> {a.get('rows')}")
            elif b.get("checksum") != a.get("checksum"):
                changes.append("checksum changed: rows were modified")
            if a.get("missing_columns"):
                changes.append(f"columns gone: {', '.join(a['missing_columns'])}")
        entry.update(passed=not changes, changes=changes)
        entries.append(entry)
        if changes:
            errors.append(f"{b['table']}: {'; '.join(changes)}")
    changed = [e["name"] for e in entries if not e["passed"]]
    checks: list[dict[str, Any]] = []
    from afdp.pipeline.collectors import run_query

    for check in params.checks:
        item: dict[str, Any] = {"name": check.name, "expect": _json_safe(check.expect)}
        try:
            answer = run_query(run.workflow, params.collector, check.query, values=values, env=run.env, limit=1)
            rows = answer.rows
            got = _json_safe(next(iter(rows[0].values()))) if rows and rows[0] else None
            item.update(actual=got, passed=_same(got, check.expect))
            if not item["passed"]:
                errors.append(f"{check.name}: expected {check.expect!r}, got {got!r}")
        except AfdpError as exc:
            item.update(passed=False, error=exc.diagnostics())
            errors.append(f"{check.name}: {exc.diagnostics()}")
        checks.append(item)
    failed = changed + [c["name"] for c in checks if not c["passed"]]
    outputs = {"passed": not failed, "failed": failed, "changed_tables": changed}
    result = {"outputs": outputs, "source": params.source, "tables": entries,
              "checks": checks, "taken_at": rec.format_time(rec.utc_now()),
              "database_queries": 2 * len(entries) + len(checks),
              "database_ms": round((time.monotonic() - started) * 1000, 3),
              # The checks are the workflow's queries: none of their time is AFDP's own.
              "database_server_ms": round(server.ms, 3)}
    total = len(entries) + len(checks)
    summary = f"{total - len(failed)}/{total} table(s) and check(s) unchanged/passed"
    if failed:
        return StepResult("failed", result, summary, "; ".join(errors))
    return StepResult("ok", result, summary)


__all__ = ["MEASURES", "MIN_ACTIVITY", "ServerTime", "compare_snapshots",
           "fingerprint_tables", "handle_database", "own_share", "take_snapshot"]
