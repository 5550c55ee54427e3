"""The ``pg_stat_statements`` side of a database comparison (:mod:`.migration`): its
totals, and apart the statements of AFDP's own reads, so that a comparison leaves them
out exactly.

Every PostgreSQL read of AFDP's sql collector goes through a cursor named
:func:`afdp.pipeline.collectors.sql.cursor_name` (128 random bits per process): the
extension keeps the name in the text of the DECLARE, FETCH and CLOSE statements and keeps
statements on differently named cursors apart, so the statements on this run's cursors
are AFDP's, exactly; each read's only other statements are one BEGIN READ ONLY and one
ROLLBACK, counted from the cursor's DECLAREs. Statements on AFDP's *other* cursors
(earlier runs, other phases' processes) cannot be told from an application statement that
imitates their names: a comparison reads the totals twice (:data:`READINGS`) and judges
both.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any


def _num(data: Any, key: str) -> float | None:
    value = data.get(key) if isinstance(data, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


#: What earlier AFDP versions marked their statements with (a fixed comment and cursor
#: name, which any application statement could carry): only the reading that leaves out
#: every AFDP-looking statement uses them.
LEGACY_MARKS = ("/* afdp-internal */", '"afdp_read"')

#: The two readings of pg_stat_statements a comparison judges (see migration.compare_snapshots).
READINGS = {
    "run": "without the statements on this run's cursors (exactly AFDP's)",
    "any_afdp": "without every statement on a cursor named like AFDP's (any run, earlier versions' marks)",
}


def totals_query(cursors: Sequence[str]) -> str:
    """The totals of pg_stat_statements (top-level statements of this database) and, apart,
    of the statements on ``cursors`` (this run's: each name is 128 random bits) and of every
    statement on an AFDP-shaped cursor; ``*_reads``: the DECLAREs of the query cursors, one
    per AFDP read, each read also being one BEGIN READ ONLY and one ROLLBACK."""
    from afdp.pipeline.collectors import CollectorFailed
    from afdp.pipeline.collectors.sql import CHECK_SUFFIX, CURSOR_SHAPE

    for cursor in cursors:
        if not re.fullmatch(CURSOR_SHAPE, cursor):
            raise CollectorFailed(f"not an AFDP cursor name: {cursor[:80]!r}")
    quote = chr(34)
    run = " OR ".join(f"strpos(query, {_literal(quote + c)}) > 0" for c in cursors)
    run_read = " OR ".join(f"starts_with(query, {_literal(f'DECLARE {quote}{c}{quote} ')})" for c in cursors)
    legacy = " OR ".join(f"strpos(query, {_literal(mark)}) > 0" for mark in LEGACY_MARKS)
    shaped = _literal(f"{quote}{CURSOR_SHAPE}({CHECK_SUFFIX})?{quote}")
    shaped_read = _literal(f"^DECLARE {quote}({CURSOR_SHAPE}|afdp_read){quote} ")
    return (
        "SELECT COALESCE(sum(calls), 0)::float8 AS calls, "
        "COALESCE(sum(total_exec_time), 0)::float8 AS total_exec_time_ms, "
        "COALESCE(sum(rows), 0)::float8 AS rows, "
        "COALESCE(sum(calls) FILTER (WHERE run), 0)::float8 AS run_calls, "
        "COALESCE(sum(total_exec_time) FILTER (WHERE run), 0)::float8 AS run_time_ms, "
        "COALESCE(sum(calls) FILTER (WHERE run_read), 0)::float8 AS run_reads, "
        "COALESCE(sum(calls) FILTER (WHERE any_afdp), 0)::float8 AS any_afdp_calls, "
        "COALESCE(sum(total_exec_time) FILTER (WHERE any_afdp), 0)::float8 AS any_afdp_time_ms, "
        "COALESCE(sum(calls) FILTER (WHERE any_afdp_read), 0)::float8 AS any_afdp_reads, "
        "current_setting('pg_stat_statements.track_utility') AS track_utility, "
        "(SELECT dealloc::float8 FROM pg_stat_statements_info) AS dealloc, "
        "(SELECT stats_reset::text FROM pg_stat_statements_info) AS stats_reset "
        f"FROM (SELECT calls, total_exec_time, rows, ({run}) AS run, ({run_read}) AS run_read, "
        f"(query ~ {shaped} OR {legacy}) AS any_afdp, query ~ {shaped_read} AS any_afdp_read "
        "FROM pg_stat_statements "
        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND toplevel) s"
    )


#: A cursor drawn this long after a baseline snapshot (this machine's clock) has no
#: statement before it, and is summed as this run's too (clocks of machines may differ).
FRESH_AFTER_SECONDS = 5.0


def listed_cursors(snapshot: dict[str, Any]) -> list[str]:
    listed = snapshot.get("statements_cursors")
    return [c for c in listed if isinstance(c, str)] if isinstance(listed, list) else []


def step_cursors(before: dict[str, Any], results: Sequence[Any]) -> list[str]:
    """The cursors the SQL steps recorded after the baseline snapshot ``before`` read
    through (``read_through``), those drawn after it (``read_through_drawn_at``, later
    than its ``taken_locally`` by FRESH_AFTER_SECONDS): a later phase in a process of its
    own has no statement on its cursor in the baseline, and its reads are this run's."""
    from afdp.pipeline.collectors.sql import CURSOR_SHAPE

    since = before.get("taken_locally")
    if not isinstance(since, (int, float)) or isinstance(since, bool):
        return []
    found: list[str] = []
    for result in results:
        result = result if isinstance(result, dict) else {}
        name, drawn = result.get("read_through"), result.get("read_through_drawn_at")
        if (isinstance(name, str) and re.fullmatch(CURSOR_SHAPE, name) and isinstance(drawn, (int, float))
                and not isinstance(drawn, bool) and drawn > since + FRESH_AFTER_SECONDS and name not in found):
            found.append(name)
    return found


def separates_afdp(snapshot: dict[str, Any]) -> bool:
    statements = snapshot.get("statements")
    return isinstance(statements, dict) and all(
        _num(statements, f"{p}_{k}") is not None for p in ("run", "any_afdp") for k in ("calls", "time_ms", "reads")
    )


def reading(before: dict[str, Any], after: dict[str, Any], name: str) -> dict[str, Any]:
    """One reading of the two pg_stat_statements snapshots: the baseline (totals at the
    first) and the window (what was added since), each without AFDP's statements as
    ``name`` (``run`` or ``any_afdp``) counts them: their calls and time, and the
    BEGIN READ ONLY and ROLLBACK of each AFDP read (calls only: their time is not known
    apart; left in, it can only make the mean higher)."""
    b, a = before["statements"], after["statements"]
    cursors = {before.get("statements_cursor"), *listed_cursors(before), *listed_cursors(after)}

    def value(stats: dict[str, Any], key: str) -> float:
        return _num(stats, key) or 0.0

    def in_flight(snapshot: dict[str, Any], stats: dict[str, Any]) -> int:
        # The read that took the totals (its DECLARE counted) had sent its BEGIN, not
        # yet its ROLLBACK.
        ours = name == "any_afdp" or snapshot.get("read_through") in cursors
        return int(ours and value(stats, f"{name}_reads") > 0)

    own_b = (value(b, f"{name}_calls"), value(b, f"{name}_time_ms"),
             2 * value(b, f"{name}_reads") - in_flight(before, b))
    own_w = (value(a, f"{name}_calls") - own_b[0], value(a, f"{name}_time_ms") - own_b[1],
             2 * (value(a, f"{name}_reads") - value(b, f"{name}_reads"))
             + in_flight(before, b) - in_flight(after, a))
    calls_b = value(b, "calls") - own_b[0] - own_b[2]
    time_b = value(b, "total_exec_time_ms") - own_b[1]
    calls_w = value(a, "calls") - value(b, "calls") - own_w[0] - own_w[2]
    time_w = value(a, "total_exec_time_ms") - value(b, "total_exec_time_ms") - own_w[1]

    def mean(time_ms: float, calls: float) -> float | None:
        return time_ms / calls if calls > 0 and time_ms >= 0 else None

    return {
        "baseline": mean(time_b, calls_b),
        "window": mean(time_w, calls_w) if calls_w >= 0 else None,
        "calls": {"baseline": calls_b, "window": calls_w},
        "afdp_excluded": {
            "baseline": {"calls": own_b[0], "ms": round(own_b[1], 3), "begin_rollback_calls": own_b[2]},
            "window": {"calls": own_w[0], "ms": round(own_w[1], 3), "begin_rollback_calls": own_w[2]},
        },
        "meaning": READINGS[name],
    }


__all__ = ["FRESH_AFTER_SECONDS", "LEGACY_MARKS", "READINGS", "listed_cursors", "reading",
           "separates_afdp", "step_cursors", "totals_query"]
