"""What a migration workflow's database comparison takes out of the window as AFDP's own.

The window of a comparison holds AFDP's own statements (the snapshots, the probe, the
table fingerprints: full reads of each table). What is taken out of it must never be
more than the database itself spent on them, or a real slowdown is hidden:

- ``pg_stat_statements``: every AFDP read goes through a cursor whose name (128 random
  bits per process) the extension keeps in the statements' texts, and the comparison
  leaves those statements out (their calls and time), with one BEGIN READ ONLY and one
  ROLLBACK call per read; an application statement carrying AFDP's old fixed marks, or a
  cursor named like AFDP's, is never left out of the reading that counts only this run's;
- ``pg_stat_database``: the time the database measured for them
  (``clock_timestamp() - statement_timestamp()``, recorded as ``database_server_ms``) is
  taken out of ``active_time``; the client's clock (``database_ms``: connecting, Python,
  load, the network) never is.

The real-database tests run against a real PostgreSQL (tests/infra.py). ``take_snapshot``
and ``fingerprint_tables`` read only a run's workflow and environment; they get a real
loaded workflow and the environment in a ``SimpleNamespace`` (the rest of a run is not
needed for them).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from afdp.pipeline.collectors.sql import cursor_name
from afdp.pipeline.runner.steps.migration import (
    ServerTime,
    compare_snapshots,
    fingerprint_tables,
    own_share,
    take_snapshot,
)
from afdp.workflow import load_workflow

SEED = Path(__file__).parent / "seeds" / "example2_database_migration.yaml"
BIG_ROWS = 400_000


def _snapshot(commit, rollback, active_ms):
    return {
        "source": "pg_stat_database",
        "database": {"xact_commit": commit, "xact_rollback": rollback, "active_time": active_ms,
                     "blks_hit": 1000, "blks_read": 0, "temp_bytes": 0, "deadlocks": 0, "conflicts": 0},
    }


# --- what is taken out: only what the database measured ---------------------------------


def test_the_clients_time_is_never_taken_out_only_the_databases():
    before = {**_snapshot(300, 0, 30.0), "queries_after": 2, "queries_after_server_ms": 0.4}
    # The steps since the snapshot: the client's clock says 3.3 s (connecting per query,
    # Python, a loaded machine), the database measured 2.1 ms of AFDP's own statements.
    results = [
        {"database_queries": 5, "database_ms": 1700.0, "database_server_ms": 1.5},
        {"database_queries": 3, "database_ms": 1600.0},  # the workflow's own queries: no time
        "not a dict",
    ]
    own, own_server_ms = own_share(before, results)
    assert own == 2 + 5 + 3  # one read-only transaction per read
    assert own_server_ms == pytest.approx(1.9)
    # The bad migration: 300 user transactions, each ~2.1 ms slower than the baseline's 0.1 ms.
    after = _snapshot(600, own, 30.0 + 300 * 2.2 + own_server_ms)
    comparison = compare_snapshots(before, after, "compare", own, own_server_ms)
    assert comparison["degraded_measures"] == ["mean_statement_time"]
    assert comparison["afdp_milliseconds_excluded"] == pytest.approx(1.9)
    assert comparison["measures"]["mean_statement_time"]["change"] == pytest.approx(2.1)
    assert "lower bound" in comparison["afdp_excluded"]
    # The client's time, had it been taken out, would have hidden it (the defect).
    hidden = compare_snapshots(before, after, "compare", own, 3300.0)
    assert hidden["degraded_measures"] == []


def test_without_server_times_nothing_is_taken_out():
    before = _snapshot(300, 0, 30.0)
    own, own_server_ms = own_share(before, [{"database_queries": 4, "database_ms": 900.0}])
    assert (own, own_server_ms) == (4, 0.0)


RUN = "afdp_" + "1" * 32
OTHER = "afdp_" + "2" * 32


def _side(calls, total_ms, *, run=(0, 0.0, 0), any_afdp=None, read_through=RUN, commits=None):
    """A pg_stat_statements snapshot: the totals, and apart (calls, ms, reads) of this
    run's cursor and of every AFDP-looking statement (by default: this run's only)."""
    any_afdp = run if any_afdp is None else any_afdp
    return {
        "source": "pg_stat_statements", "statements_cursor": RUN, "statements_cursors": [RUN],
        "read_through": read_through,
        "database": {"xact_commit": calls if commits is None else commits, "xact_rollback": 0},
        "statements": {"calls": calls, "total_exec_time_ms": total_ms, "rows": 0,
                       "run_calls": run[0], "run_time_ms": run[1], "run_reads": run[2],
                       "any_afdp_calls": any_afdp[0], "any_afdp_time_ms": any_afdp[1],
                       "any_afdp_reads": any_afdp[2], "track_utility": "on", "dealloc": 0.0,
                       "stats_reset": "2026-12-04 19:00:00+00"},
    }


def test_pg_stat_statements_sums_are_not_reduced_by_any_time():
    # AFDP's statements are left out by their cursor; no time measured elsewhere is.
    comparison = compare_snapshots(_side(300, 30.0), _side(600, 30.0 + 300 * 1.5), "compare", 0, 5000.0)
    assert comparison["degraded_measures"] == ["mean_statement_time"]
    assert comparison["afdp_milliseconds_excluded"] == 0.0
    assert RUN in comparison["afdp_excluded"] and "BEGIN READ ONLY" in comparison["afdp_excluded"]


def test_afdp_reads_and_their_begin_and_rollback_are_left_out_exactly():
    # Baseline: 200 application calls of 1 ms, and 3 AFDP reads (its snapshot's, the last
    # under way: its BEGIN counted, its ROLLBACK not): 5 BEGIN/ROLLBACK calls of ~0 ms.
    before = _side(200 + 9 + 5, 200.0 + 50.0, run=(9, 50.0, 3))
    # Window: 200 calls of 6 ms; 8 more AFDP reads (5 between, 3 of the fresh snapshot):
    # 24 cursor statements with 900 ms (full-table checksums), 16 BEGIN/ROLLBACK calls.
    after = _side(214 + 200 + 24 + 16, 250.0 + 1200.0 + 900.0, run=(9 + 24, 950.0, 11))
    measure = compare_snapshots(before, after, "compare")["measures"]["mean_statement_time"]
    for name in ("run", "any_afdp"):
        reading = measure["readings"][name]
        assert reading["calls"] == {"baseline": 200, "window": 200}
        assert reading["baseline"] == pytest.approx(1.0) and reading["window"] == pytest.approx(6.0)
        assert reading["afdp_excluded"]["window"] == {"calls": 24, "ms": 900.0, "begin_rollback_calls": 16}
    assert measure["degraded"] is True and measure["change"] == pytest.approx(5.0)


def test_a_statement_on_another_afdp_looking_cursor_is_the_applications_in_one_reading():
    # An application statement imitating AFDP (an old fixed mark, or a cursor named like
    # AFDP's with another token): 100 calls, 1 ms before, 8 ms after; the application's
    # other 100 calls stay at 1 ms.
    before = _side(200, 200.0, any_afdp=(100, 100.0, 0))
    after = _side(400, 200.0 + 100.0 + 800.0, any_afdp=(200, 900.0, 0))
    comparison = compare_snapshots(before, after, "compare")
    measure = comparison["measures"]["mean_statement_time"]
    assert measure["readings"]["any_afdp"]["degraded"] is False  # the imitation left out: hidden
    assert measure["readings"]["run"]["degraded"] is True  # counted: seen
    assert measure["reading"] == "run" and comparison["degraded_measures"] == ["mean_statement_time"]


def test_earlier_afdp_runs_in_the_baseline_cannot_hide_a_slowdown():
    # Earlier runs' full-table checksums (other cursors: 30 reads, 100 statements, 59
    # BEGIN/ROLLBACK calls) make the baseline's mean look slow; 140 application calls.
    before = _side(140 + 100 + 59, 100.0 + 2000.0, any_afdp=(100, 2000.0, 30))
    after = _side(299 + 200, 2100.0 + 200 * 3.0, any_afdp=(100, 2000.0, 30))
    measure = compare_snapshots(before, after, "compare")["measures"]["mean_statement_time"]
    assert measure["readings"]["run"]["degraded"] is False  # 7 ms -> 3 ms: looks better
    assert measure["readings"]["any_afdp"]["calls"] == {"baseline": 140, "window": 200}
    assert measure["readings"]["any_afdp"]["baseline"] == pytest.approx(100.0 / 140)
    assert measure["degraded"] is True and measure["reading"] == "any_afdp"


def test_snapshots_that_leave_afdp_out_differently_are_not_compared_as_statements():
    old = {"source": "pg_stat_statements", "database": {"xact_commit": 300, "xact_rollback": 0},
           "statements": {"calls": 300, "total_exec_time_ms": 30.0}}  # an earlier AFDP version's
    comparison = compare_snapshots(old, _side(600, 480.0), "compare")
    assert comparison["source"] == "pg_stat_database" and "source_reason" in comparison
    other = {**_side(600, 480.0), "statements_cursor": OTHER}
    assert compare_snapshots(_side(300, 30.0), other, "compare")["source"] == "pg_stat_database"


@pytest.mark.parametrize(("key", "value"), [("dealloc", 3.0), ("stats_reset", "2026-12-04 19:30:00+00")])
def test_evicted_or_reset_statements_in_the_window_are_not_compared_as_statements(key, value):
    # 100 slow application calls evicted from the totals would make the window look fast.
    after = _side(600, 480.0)
    after["statements"][key] = value
    assert compare_snapshots(_side(300, 30.0), _side(600, 480.0), "compare")["source"] == "pg_stat_statements"
    comparison = compare_snapshots(_side(300, 30.0), after, "compare")
    assert comparison["source"] == "pg_stat_database"
    assert "evicted entries or was reset" in comparison["source_reason"]


# --- against a real PostgreSQL --------------------------------------------------------------


def _database(server_url: str, *, statements: bool) -> Iterator[str]:
    import sqlalchemy

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = server_url.rsplit("/", 1)[0] + f"/{name}"
        with _connect(url) as db:
            if statements:
                db.execute("CREATE EXTENSION pg_stat_statements")
            db.execute("CREATE TABLE big (id int PRIMARY KEY, payload text NOT NULL)")
            db.execute("INSERT INTO big SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, %s) g",
                       (BIG_ROWS,))
            db.execute("CREATE TABLE small (id int PRIMARY KEY, v int NOT NULL)")
            db.execute("INSERT INTO small SELECT g, g FROM generate_series(1, 1000) g")
            db.execute("VACUUM ANALYZE")
        yield url
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


@pytest.fixture()
def statements_db(postgres_statements_url: str) -> Iterator[str]:
    yield from _database(postgres_statements_url, statements=True)


@pytest.fixture()
def plain_db(postgres_url: str) -> Iterator[str]:
    yield from _database(postgres_url, statements=False)


def _connect(url: str):
    import psycopg

    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def _reset(url: str) -> None:
    with _connect(url) as db:
        db.execute("SELECT pg_stat_reset()")
        if db.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'").fetchone()[0]:
            db.execute("SELECT pg_stat_statements_reset()")


def _workload(url: str, count: int, *, slow_ms: float = 0.0, imitate: str | None = None, flush_stats: bool = False) -> None:
    """The application: indexed lookups, each in its own transaction; with ``slow_ms``,
    each takes that much longer in the database (as after a bad migration). ``imitate``:
    every statement also carries an AFDP-looking mark: ``comment`` (earlier versions'
    ``/* afdp-internal */``), ``cursor`` (read through a cursor named ``afdp_read``, as
    earlier versions did) or ``shaped`` (a cursor named like AFDP's, another token)."""
    sleep = ", pg_sleep(%s)" if slow_ms else ""
    with _connect(url) as db:
        for i in range(count):
            params = ((slow_ms / 1000,) if slow_ms else ()) + (i % 1000 + 1,)
            if imitate is None:
                db.execute(f"SELECT v{sleep} FROM small WHERE id = %s", params).fetchone()
            elif imitate == "comment":
                db.execute(f"SELECT /* afdp-internal */ v{sleep} FROM small WHERE id = %s", params).fetchone()
            else:
                name = "afdp_read" if imitate == "cursor" else "afdp_" + "e" * 32
                with db.transaction(), db.cursor(name=name) as cursor:
                    cursor.execute(f"SELECT v{sleep} FROM small WHERE id = %s", params)
                    cursor.fetchall()
        if flush_stats:
            # pg_stat_database learns a session's time when the session flushes its
            # statistics (at most once a second while busy): under load the snapshot after
            # the workload could read it before this session's last flush. Forced here, and
            # done once the next statement answers (the flush runs as the session goes idle).
            db.execute("SELECT pg_stat_force_next_flush()").fetchone()
            db.execute("SELECT 1").fetchone()


def _run(tmp_path: Path, url: str) -> SimpleNamespace:
    path = tmp_path / "w.yaml"
    path.write_text(SEED.read_text() + "\ncollectors:\n  app_db: {type: sql, url: '${env.APP_DB}'}\n")
    return SimpleNamespace(workflow=load_workflow(path), env={"APP_DB": url})


def _window(run: SimpleNamespace, url: str, *, slow_ms: float, imitate: str | None = None, flush_stats: bool = False) -> dict:
    """Baseline workload, snapshot, AFDP fingerprinting the large table (twice, as
    record_table_sizes and verify_data_integrity do) around the window's workload, a
    fresh snapshot, and the comparison with what the records would say."""
    _reset(url)
    _workload(url, 200, imitate=imitate, flush_stats=flush_stats)
    server = ServerTime()
    before = take_snapshot(run, "app_db", {}, server)
    fingerprints = ServerTime()
    first = fingerprint_tables(run, "app_db", [("public", "big")], {}, server=fingerprints)
    _workload(url, 200, slow_ms=slow_ms, imitate=imitate, flush_stats=flush_stats)
    again = fingerprint_tables(run, "app_db", [("public", "big")], {}, server=fingerprints)
    assert first == again and first[0]["rows"] == BIG_ROWS
    after = take_snapshot(run, "app_db", {}, cursor=before.get("statements_cursor"))
    own, own_server_ms = own_share(
        before, [{"database_queries": 4, "database_ms": 99_999.0, "database_server_ms": fingerprints.ms}]
    )
    comparison = compare_snapshots(before, after, "compare", own, own_server_ms)
    comparison["fingerprint_server_ms"] = fingerprints.ms
    return comparison


def _application_change(url: str) -> float:
    """The application's own change of mean, from its own statements' entries (the
    lookups: fast before, with pg_sleep after): what the comparison must find."""
    with _connect(url) as db:
        rows = db.execute(
            "SELECT query LIKE '%%pg_sleep%%', sum(total_exec_time) / sum(calls) FROM pg_stat_statements "
            "WHERE query LIKE '%%FROM small WHERE id = $%%' AND query NOT LIKE 'DECLARE%%' AND toplevel "
            "GROUP BY 1"
        ).fetchall()
    means = dict(rows)
    return float(means[True] - means[False])


@pytest.mark.slow
def test_pg_stat_statements_leaves_afdp_statements_out_exactly(tmp_path, statements_db):
    run = _run(tmp_path, statements_db)
    quiet = _window(run, statements_db, slow_ms=0.0)
    assert quiet["source"] == "pg_stat_statements"
    # AFDP's full reads of the large table took the database real time...
    assert quiet["fingerprint_server_ms"] > 10
    # ... and are out of the sums: the window's mean is the workload's, not degraded.
    assert quiet["degraded_measures"] == [], quiet["measures"]
    mine = cursor_name()
    with _connect(statements_db) as db:
        texts = dict(db.execute(
            "SELECT query, calls FROM pg_stat_statements WHERE strpos(query, %s) > 0", (mine,)
        ).fetchall())
        fetched = db.execute(
            "SELECT sum(total_exec_time) FROM pg_stat_statements WHERE query LIKE %s", (f'FETCH % "{mine}"',)
        ).fetchone()[0]
    # The extension kept the cursor's name in DECLARE, FETCH and CLOSE (one entry each
    # per statement shape), and the database does the reading in the FETCHes: left out.
    assert {t.split()[0] for t in texts} == {"DECLARE", "FETCH", "CLOSE"}
    assert fetched is not None and fetched > 10
    measure = quiet["measures"]["mean_statement_time"]
    window = measure["readings"]["run"]["afdp_excluded"]["window"]
    assert window["calls"] > 0 and window["ms"] > 10 and window["begin_rollback_calls"] > 0
    # Every AFDP statement in the window is left out: the window holds the 200 lookups.
    assert measure["readings"]["run"]["calls"]["window"] == 200
    slow = _window(run, statements_db, slow_ms=5.0)
    assert slow["degraded_measures"] == ["mean_statement_time"], slow["measures"]
    change = slow["measures"]["mean_statement_time"]["change"]
    # 5 ms slower per statement, found as such: neither the driver's statements (before:
    # +3.6 ms) nor AFDP's reads dilute it.
    assert change == pytest.approx(_application_change(statements_db), rel=0.01)
    assert 4.9 < change < 5.0 + 1.0


@pytest.mark.slow
@pytest.mark.parametrize(("imitate", "slow_ms", "per_call_ms"), [
    ("comment", 5.0, 5.0),
    # Through a cursor each lookup is 5 statements (BEGIN, DECLARE, FETCH, CLOSE,
    # COMMIT), the FETCH doing the work: 10 ms more per lookup is 2 ms per statement.
    ("cursor", 10.0, 2.0),
    ("shaped", 10.0, 2.0),
])
def test_an_application_statement_imitating_afdp_is_not_left_out(
    tmp_path, statements_db, imitate, slow_ms, per_call_ms
):
    run = _run(tmp_path, statements_db)
    slow = _window(run, statements_db, slow_ms=slow_ms, imitate=imitate)
    assert slow["degraded_measures"] == ["mean_statement_time"], slow["measures"]
    measure = slow["measures"]["mean_statement_time"]
    # The reading of this run's own statements counts them as the application's: seen.
    assert measure["reading"] == "run" and measure["readings"]["run"]["degraded"] is True
    assert measure["change"] > 0.8 * per_call_ms
    # The reading that leaves every AFDP-looking statement out cannot see them (so it
    # never decides alone).
    assert measure["readings"]["any_afdp"]["degraded"] is not True


@pytest.mark.slow
def test_pg_stat_database_takes_out_only_the_databases_time(tmp_path, plain_db):
    run = _run(tmp_path, plain_db)
    quiet = _window(run, plain_db, slow_ms=0.0, flush_stats=True)
    assert quiet["source"] == "pg_stat_database"
    assert quiet["fingerprint_server_ms"] > 10
    # The database's time for AFDP's statements is taken out, the client's 99,999 ms never.
    assert 0 < quiet["afdp_milliseconds_excluded"] < 99_999.0
    assert quiet["degraded_measures"] == [], quiet["measures"]
    slow = _window(run, plain_db, slow_ms=5.0, flush_stats=True)
    assert slow["degraded_measures"] == ["mean_statement_time"], slow["measures"]
    assert slow["measures"]["mean_statement_time"]["change"] > 4.0, slow["measures"]


def test_without_tracked_cursor_statements_the_snapshot_does_not_use_pg_stat_statements(tmp_path, statements_db):
    run = _run(tmp_path, statements_db)
    good = take_snapshot(run, "app_db", {})
    assert good["source"] == "pg_stat_statements" and good["statements_cursor"] == cursor_name()
    # A recorded cursor that is not an AFDP cursor name is not summed as one.
    odd = take_snapshot(run, "app_db", {}, cursor="afdp_read")
    assert odd["source"] == "pg_stat_database" and "not an AFDP cursor name" in odd["source_reason"]
    # With utility statements untracked, a cursor's work would be counted under its inner
    # query, which an application query can share: pg_stat_database is read instead.
    name = statements_db.rsplit("/", 1)[1]
    with _connect(statements_db) as db:
        db.execute(f'ALTER DATABASE "{name}" SET pg_stat_statements.track_utility = off')
    off = take_snapshot(run, "app_db", {})
    assert off["source"] == "pg_stat_database" and "track_utility is off" in off["source_reason"]
    assert off["statements"] is None


_PHASE = """
import json, sys
from pathlib import Path
from types import SimpleNamespace
from afdp.pipeline.runner.steps import migration, statements
from afdp.workflow import load_workflow

workflow, url, mode = sys.argv[1], sys.argv[2], sys.argv[3]
run = SimpleNamespace(workflow=load_workflow(Path(workflow)), env={"APP_DB": url})
if mode == "baseline":
    print(json.dumps(migration.take_snapshot(run, "app_db", {})))
else:
    before = json.loads(sys.stdin.read())
    statements.FRESH_AFTER_SECONDS = 0.0  # the phases of this test follow each other at once
    migration.fingerprint_tables(run, "app_db", [("public", "big")], {})
    since = before["taken_locally"] if mode == "fresh" else None
    after = migration.take_snapshot(run, "app_db", {}, cursor=before["statements_cursor"], since=since)
    print(json.dumps(migration.compare_snapshots(before, after, "compare")))
"""


def _phase(tmp_path: Path, url: str, mode: str, stdin: str = "", script: str = _PHASE) -> dict:
    """One phase of a run (``script``, given the workflow, the database URL and ``mode``)
    in a process of its own (its own cursor), as `afdp run --phase`."""
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "w.yaml"), url, mode],
        input=stdin, capture_output=True, text=True, env=env, cwd=root, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_a_later_phase_in_another_process_leaves_its_own_reads_out_too(tmp_path, statements_db):
    import json

    _run(tmp_path, statements_db)  # writes the workflow
    _reset(statements_db)
    _workload(statements_db, 200)
    before = _phase(tmp_path, statements_db, "baseline")
    _workload(statements_db, 200)
    # The comparison's process, drawn after the baseline, reads the large table in full
    # (verify_data_integrity) on its own cursor: summed as this run's, the window is the
    # application's 200 lookups and not degraded.
    fresh = _phase(tmp_path, statements_db, "fresh", json.dumps(before))
    reading = fresh["measures"]["mean_statement_time"]["readings"]["run"]
    assert reading["calls"]["window"] == 200 and fresh["degraded_measures"] == [], fresh["measures"]
    assert before["statements_cursor"] in fresh["afdp_excluded"]
    # Not known to be fresh (no baseline time): its reads count as the application's in
    # the 'run' reading, whose mean jumps with the full-table reads.
    unknown = _phase(tmp_path, statements_db, "unknown", json.dumps(before))
    assert unknown["measures"]["mean_statement_time"]["readings"]["run"]["calls"]["window"] > 200
