"""SQL collectors are read-only for real (issue 9, items 4 and 5): the guarantee holds with
the text screen taken away, because the database and the driver enforce it.

Real PostgreSQL (tests/infra.py, a throw-away cluster on loopback) and real SQLite
files. Each attack is sent straight to the database layer (``_Database.run``), as if the
screen had been fooled, and the database must be unchanged afterwards; the same attacks
through `afdp run` are failed steps whose evidence never claims a read-only run.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy
from collectors.helpers import make_workflow

from afdp.pipeline.collectors.base import CollectorFailed, Redactor
from afdp.pipeline.collectors.sql import _Database

VALUES = {"deployment": {"service": "api"}, "workflow": {}}


def _db(url: str) -> _Database:
    """The database layer of a SQL collector, as the collector opens it (no text screen)."""
    workflow = make_workflow(
        {"db": {"type": "sql", "url": url}}, {"m": {"collector": "db", "query": "SELECT 1", "unit": "count"}}
    )
    return _Database(workflow.collector("db"), VALUES, {}, Redactor({}))

POSTGRES_ATTACKS = [
    # several statements: the simple query protocol would run them all
    "COMMIT; BEGIN READ WRITE; CREATE TABLE stolen (x int); INSERT INTO stolen VALUES (1); COMMIT",
    "SELECT 1; CREATE TABLE stolen (x int)",
    # one statement that tries to leave the read-only transaction
    "COMMIT",
    "END",
    "ROLLBACK",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
    "SET transaction_read_only = off",
    "SELECT set_config('transaction_read_only', 'off', true)",
    "SELECT set_config('default_transaction_read_only', 'off', false)",
    # writes the screen's quoting rules could be fooled into passing
    "DO $$ BEGIN CREATE TABLE stolen (x int); END $$",
    "WITH d AS (DELETE FROM items RETURNING *) SELECT count(*) FROM d",
    "CREATE TABLE stolen AS SELECT 1 AS x",
    "INSERT INTO items VALUES (99, 'x', 1)",
    "SELECT nextval('seq')",
    "PREPARE p AS INSERT INTO items VALUES (98, 'y', 1)",
    "COPY items TO '{stolen}'",  # a server-side file write, allowed in a read-only transaction
]


def _postgres(url: str) -> sqlalchemy.Engine:
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE items (id integer PRIMARY KEY, name text, v integer)")
        connection.exec_driver_sql("INSERT INTO items VALUES (1, 'a', 1), (2, 'b', 2), (3, 'c', 3)")
        connection.exec_driver_sql("CREATE SEQUENCE seq")
    return engine


def _state(engine: sqlalchemy.Engine) -> tuple:
    with engine.connect() as connection:
        tables = connection.exec_driver_sql(
            "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'"
        ).scalar()
        rows = connection.exec_driver_sql("SELECT count(*), sum(v) FROM items").one()
        seq = connection.exec_driver_sql("SELECT last_value, is_called FROM seq").one()
    return tables, tuple(rows), tuple(seq)


@pytest.mark.parametrize("attack", POSTGRES_ATTACKS)
def test_postgresql_refuses_writes_without_the_screen(fresh_postgres_url, tmp_path, attack):
    engine = _postgres(fresh_postgres_url)
    before = _state(engine)
    stolen = tmp_path / "stolen"
    tmp_path.chmod(0o777)  # the server (another user) could write here if COPY ran
    database = _db(fresh_postgres_url)
    try:
        with pytest.raises(CollectorFailed):
            database.run(attack.format(stolen=stolen), 10)
    finally:
        database.close()
    assert _state(engine) == before
    assert not stolen.exists()
    engine.dispose()


def test_postgresql_reads_still_work(fresh_postgres_url):
    _postgres(fresh_postgres_url).dispose()
    database = _db(fresh_postgres_url)
    try:
        assert database.run("SELECT sum(v) AS total FROM items", 5) == (["total"], [(6,)], False)
        columns, rows, _ = database.run("SELECT current_setting('server_version') AS v", 5)
        assert columns == ["v"] and rows
        with pytest.raises(CollectorFailed, match="current_setting"):
            database.run("SHOW server_version", 5)  # not a query: the cursor grammar refuses it
    finally:
        database.close()


SQLITE_ATTACKS = [
    "ATTACH DATABASE '{victim}' AS x",
    "/* harmless */ ATTACH '{victim}' AS x",
    "-- comment\nATTACH '{victim}' AS x",
    "SELECT 1 /* ; */; ATTACH '{victim}' AS x",
    "VACUUM INTO '{victim}'",
    "INSERT INTO items VALUES (9, 'x', 1)",
    "CREATE TABLE stolen (x)",
    "DROP TABLE items",
    "PRAGMA journal_mode = WAL",
    "PRAGMA user_version = 7",
    "BEGIN IMMEDIATE",
    "WITH x AS (SELECT 1) DELETE FROM items",
    "SELECT load_extension('/tmp/evil')",
]


@pytest.fixture()
def sqlite_db(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE items (id integer PRIMARY KEY, name text, v integer)")
        connection.executemany("INSERT INTO items VALUES (?, ?, ?)", [(1, "a", 1), (2, "b", 2), (3, "c", 3)])
    return path


@pytest.mark.parametrize("attack", SQLITE_ATTACKS)
def test_sqlite_refuses_attach_and_writes_without_the_screen(sqlite_db, tmp_path, attack):
    victim = tmp_path / "created-by-attack.db"
    before = sqlite_db.read_bytes()
    database = _db(f"sqlite:///{sqlite_db}")
    try:
        with pytest.raises(CollectorFailed):
            database.run(attack.format(victim=victim), 10)
    finally:
        database.close()
    assert not victim.exists()  # no file created on the runner host
    assert sqlite_db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]


def test_sqlite_reads_work_and_a_missing_file_is_not_created(sqlite_db, tmp_path):
    database = _db(f"sqlite:///{sqlite_db}")
    try:
        assert database.run("SELECT sum(v) FROM items", 5)[1] == [(6,)]
        assert database.run("PRAGMA page_count", 5)[1]
    finally:
        database.close()
    missing = tmp_path / "nope.db"
    database = _db(f"sqlite:///{missing}")
    try:
        with pytest.raises(CollectorFailed):
            database.run("SELECT 1", 5)
    finally:
        database.close()
    assert not missing.exists()


@pytest.mark.parametrize("url", ["sqlite:///file:{db}?mode=rw", "sqlite:///{db}?mode=rwc", "sqlite://"])
def test_sqlite_urls_that_would_choose_their_own_mode_are_refused(sqlite_db, url):
    with pytest.raises(CollectorFailed):
        _db(url.format(db=sqlite_db))


PERMISSIVE = "version: 1\nname: test-permissive\nallowed_collector_types: [prometheus, scrape, sql, rest]\n"


def test_a_run_whose_screen_was_fooled_writes_nothing(cli, tmp_path, keys, tsa, fresh_postgres_url, monkeypatch):
    """`afdp run` with the text screen switched off (as if an attacker's spelling got past
    it): the step fails, the database is unchanged, and the run still completes."""
    import afdp.pipeline.collectors.sql as sql

    monkeypatch.setattr(sql, "check_read_only", lambda text: None)
    monkeypatch.setenv("SHOP_DB", fresh_postgres_url)
    engine = _postgres(fresh_postgres_url)
    before = _state(engine)
    workflow, policy, evidence = tmp_path / "wf.yaml", tmp_path / "policy.yaml", tmp_path / "evidence"
    workflow.write_text(
        "name: fooled\ncollectors:\n  db: {type: sql, url: '${env.SHOP_DB}'}\nworkflow:\n"
        "  - record_table_sizes:\n      collector: db\n"
        "      query: \"COMMIT; BEGIN READ WRITE; CREATE TABLE stolen (x int); INSERT INTO stolen VALUES (1); COMMIT\"\n"
    )
    policy.write_text(PERMISSIVE)
    assert cli("init", str(evidence)).code == 0
    result = cli(
        "run", str(workflow), "--service", "shop", "--deployment", "s-1", "--repo", str(evidence),
        "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--policy", str(policy), "--no-prefect", "--json",
    )
    assert result.code == 0, result.err
    step = next(s for s in __import__("json").loads(result.out)["steps"] if s["name"] == "record_table_sizes")
    assert step["status"] == "failed" and "PostgreSQL accepts one query" in step["error"]
    assert _state(engine) == before
    engine.dispose()
