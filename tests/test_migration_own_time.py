"""What a migration workflow's database comparison takes out of the window as AFDP's own.

The window of a comparison holds AFDP's own statements (the snapshots, the probe, the
table fingerprints: full reads of each table). What is taken out of it must never be
more than the database itself spent on them, or a real slowdown is hidden:

- ``pg_stat_statements``: AFDP's internal statements carry a marker the extension keeps
  in their text, and the sums leave them out (their calls and time) exactly;
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

from afdp.pipeline.runner.steps.migration import (
    AFDP_CURSOR,
    INTERNAL_MARK,
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
    assert own == (2 + 5 + 3) * 2
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
    assert (own, own_server_ms) == (8, 0.0)


def test_pg_stat_statements_sums_are_not_reduced_by_any_time():
    # AFDP's internal statements are out of the sums already; nothing else is taken out.
    def side(calls, total):
        return {"source": "pg_stat_statements", "database": {"xact_commit": calls, "xact_rollback": 0},
                "statements": {"calls": calls, "total_exec_time_ms": total}}

    comparison = compare_snapshots(side(300, 30.0), side(600, 30.0 + 300 * 1.5), "compare", 0, 5000.0)
    assert comparison["degraded_measures"] == ["mean_statement_time"]
    assert comparison["afdp_milliseconds_excluded"] == 0.0
    assert INTERNAL_MARK in comparison["afdp_excluded"]


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


def _workload(url: str, count: int, *, slow_ms: float = 0.0) -> None:
    """The application: indexed lookups, each in its own transaction; with ``slow_ms``,
    each takes that much longer in the database (as after a bad migration)."""
    with _connect(url) as db:
        for i in range(count):
            if slow_ms:
                db.execute("SELECT v, pg_sleep(%s) FROM small WHERE id = %s", (slow_ms / 1000, i % 1000 + 1))
            else:
                db.execute("SELECT v FROM small WHERE id = %s", (i % 1000 + 1,)).fetchone()


def _run(tmp_path: Path, url: str) -> SimpleNamespace:
    path = tmp_path / "w.yaml"
    path.write_text(SEED.read_text() + "\ncollectors:\n  app_db: {type: sql, url: '${env.APP_DB}'}\n")
    return SimpleNamespace(workflow=load_workflow(path), env={"APP_DB": url})


def _window(run: SimpleNamespace, url: str, *, slow_ms: float) -> dict:
    """Baseline workload, snapshot, AFDP fingerprinting the large table (twice, as
    record_table_sizes and verify_data_integrity do) around the window's workload, a
    fresh snapshot, and the comparison with what the records would say."""
    _reset(url)
    _workload(url, 200)
    server = ServerTime()
    before = take_snapshot(run, "app_db", {}, server)
    fingerprints = ServerTime()
    first = fingerprint_tables(run, "app_db", [("public", "big")], {}, server=fingerprints)
    _workload(url, 200, slow_ms=slow_ms)
    again = fingerprint_tables(run, "app_db", [("public", "big")], {}, server=fingerprints)
    assert first == again and first[0]["rows"] == BIG_ROWS
    after = take_snapshot(run, "app_db", {})
    own, own_server_ms = own_share(
        before, [{"database_queries": 4, "database_ms": 99_999.0, "database_server_ms": fingerprints.ms}]
    )
    comparison = compare_snapshots(before, after, "compare", own, own_server_ms)
    comparison["fingerprint_server_ms"] = fingerprints.ms
    return comparison


@pytest.mark.slow
def test_pg_stat_statements_leaves_afdp_statements_out_exactly(tmp_path, statements_db):
    run = _run(tmp_path, statements_db)
    quiet = _window(run, statements_db, slow_ms=0.0)
    assert quiet["source"] == "pg_stat_statements"
    # AFDP's full reads of the large table took the database real time...
    assert quiet["fingerprint_server_ms"] > 10
    # ... and are out of the sums: the window's mean is the workload's, not degraded.
    assert quiet["degraded_measures"] == [], quiet["measures"]
    with _connect(statements_db) as db:
        marked = db.execute(
            "SELECT count(*), sum(calls) FROM pg_stat_statements WHERE query LIKE %s", (f"%{INTERNAL_MARK}%",)
        ).fetchone()
        fetched = db.execute(
            "SELECT sum(total_exec_time) FROM pg_stat_statements WHERE query LIKE %s", (f"FETCH %{AFDP_CURSOR}",)
        ).fetchone()[0]
    assert marked[0] >= 4 and marked[1] >= 6  # the extension kept the marker in their text
    # The database does the reading in the FETCHes on AFDP's cursor: out of the sums too.
    assert fetched is not None and fetched > 10
    slow = _window(run, statements_db, slow_ms=5.0)
    assert slow["degraded_measures"] == ["mean_statement_time"], slow["measures"]
    # 5 ms slower per statement; the driver's fast statements on connecting (about a
    # dozen per AFDP read: BEGIN, ROLLBACK, settings) stay in the calls and dilute it.
    assert slow["measures"]["mean_statement_time"]["change"] > 2.0


@pytest.mark.slow
def test_pg_stat_database_takes_out_only_the_databases_time(tmp_path, plain_db):
    run = _run(tmp_path, plain_db)
    quiet = _window(run, plain_db, slow_ms=0.0)
    assert quiet["source"] == "pg_stat_database"
    assert quiet["fingerprint_server_ms"] > 10
    # The database's time for AFDP's statements is taken out, the client's 99,999 ms never.
    assert 0 < quiet["afdp_milliseconds_excluded"] < 99_999.0
    assert quiet["degraded_measures"] == [], quiet["measures"]
    slow = _window(run, plain_db, slow_ms=5.0)
    assert slow["degraded_measures"] == ["mean_statement_time"], slow["measures"]
    assert slow["measures"]["mean_statement_time"]["change"] > 4.0
