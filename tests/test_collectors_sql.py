"""SQL collector against real SQLite files and a real PostgreSQL server (tests/infra.py).

Every refused query is checked twice: it raises, and the table is unchanged afterwards
(read with a separate, writable connection).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy
from collectors.helpers import VALUES, make_workflow, now
from infra import free_port

from afdp.errors import UsageError
from afdp.pipeline.collectors import (
    CollectorFailed,
    QueryRefused,
    capture_metric,
    check_read_only,
    run_query,
)
from afdp.pipeline.collectors.base import Redactor
from afdp.pipeline.collectors.sql import _Database, json_value
from afdp.workflow.interpolation import parse_template

ROWS = [(1, "alpha", 10), (2, "beta", 20), (3, "gamma", 30)]


def sql_workflow(url: str, **extra: object):
    return make_workflow(
        {"db": {"type": "sql", "url": url, **extra}},
        {
            "total": {"collector": "db", "query": "SELECT sum(v) FROM items", "unit": "count"},
            "nothing": {"collector": "db", "query": "SELECT v FROM items WHERE id < 0", "unit": "count"},
            "sneaky": {"collector": "db", "query": "DELETE FROM items", "unit": "count"},
            "word": {"collector": "db", "query": "SELECT name FROM items", "unit": "count"},
        },
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database holding table ``items`` (3 rows), as a SQLAlchemy URL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'app.db'}"
    else:
        url = request.getfixturevalue("fresh_postgres_url")
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE items (id integer PRIMARY KEY, name text, v integer)")
        for row in ROWS:
            connection.execute(
                sqlalchemy.text("INSERT INTO items VALUES (:i, :n, :v)"), {"i": row[0], "n": row[1], "v": row[2]}
            )
    engine.dispose()
    yield url


def table(url: str) -> list[tuple]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(r) for r in connection.exec_driver_sql("SELECT id, name, v FROM items ORDER BY id")]
    finally:
        engine.dispose()


def tables(url: str) -> set[str]:
    engine = sqlalchemy.create_engine(url)
    try:
        return set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def query(text: str):
    return parse_template(text)


def test_select_rows_and_provenance(database: str) -> None:
    workflow = sql_workflow(database)
    result = run_query(
        workflow, "db", query("SELECT id, name, v FROM items ORDER BY id"), values=VALUES, env={}
    )
    assert result.rows == [{"id": i, "name": n, "v": v} for i, n, v in ROWS]
    p = result.provenance
    assert p["row_count"] == 3 and p["truncated"] is False and p["columns"] == ["id", "name", "v"]
    assert p["dialect"] in ("sqlite", "postgresql") and "rolled back" in p["read_only"]
    assert p["collected_at"].endswith("Z") and p["query"].startswith("SELECT id, name")
    json.dumps(result.to_json(), allow_nan=False)


def test_limit_truncates(database: str) -> None:
    result = run_query(
        sql_workflow(database), "db", query("SELECT id FROM items ORDER BY id"), values=VALUES, env={}, limit=2
    )
    assert [r["id"] for r in result.rows] == [1, 2] and result.provenance["truncated"] is True


def test_capture_metric_snapshot_and_window(database: str) -> None:
    workflow = sql_workflow(database)
    at = now()
    data = capture_metric(workflow, "total", values=VALUES, env={}, start=at, end=at)
    assert data.values() == [60.0] and data.provenance["sample_count"] == 1
    start = now()
    data = capture_metric(
        workflow, "total", values=VALUES, env={}, start=start, end=start + timedelta(seconds=1), interval=0.5
    )
    assert data.values() == [60.0, 60.0, 60.0]


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO items VALUES (4, 'delta', 40)",
        "UPDATE items SET v = 0",
        "DELETE FROM items",
        "DROP TABLE items",
        "WITH gone AS (DELETE FROM items RETURNING *) SELECT count(*) FROM gone",
        "SELECT 1; DELETE FROM items",
        "SELECT 1;\nDROP TABLE items;",
        "SELECT * INTO stolen FROM items",
        "EXPLAIN ANALYZE DELETE FROM items",
        "CREATE TABLE stolen AS SELECT * FROM items",
        "/* harmless */ TRUNCATE items",
        "select 1 -- comment\n; update items set v = 0",
    ],
)
def test_writes_are_refused_and_nothing_changes(database: str, statement: str) -> None:
    before, names = table(database), tables(database)
    with pytest.raises(QueryRefused) as failure:
        run_query(sql_workflow(database), "db", query(statement), values=VALUES, env={})
    assert failure.value.exit_code == 3 and failure.value.collector == "db"
    assert table(database) == before == ROWS
    assert tables(database) == names == {"items"}


def test_metric_query_that_writes_is_refused(database: str) -> None:
    at = now()
    with pytest.raises(QueryRefused, match="only read-only"):
        capture_metric(sql_workflow(database), "sneaky", values=VALUES, env={}, start=at, end=at)
    assert table(database) == ROWS


def test_the_database_itself_refuses_writes(database: str) -> None:
    """The second layer, without the text screen: the transaction is read-only."""
    workflow = sql_workflow(database)
    connection = _Database(workflow.collector("db"), VALUES, {}, Redactor({}))
    try:
        for statement in ("DELETE FROM items", "CREATE TABLE stolen (x integer)"):
            with pytest.raises(CollectorFailed, match="read-only|readonly"):
                connection.run(statement, 10)
    finally:
        connection.close()
    assert table(database) == ROWS and tables(database) == {"items"}


def test_postgres_side_effects_blocked_by_read_only_transaction(fresh_postgres_url: str) -> None:
    engine = sqlalchemy.create_engine(fresh_postgres_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE SEQUENCE counter")
    engine.dispose()
    with pytest.raises(CollectorFailed, match="read-only transaction"):
        run_query(
            sql_workflow(fresh_postgres_url), "db", query("SELECT nextval('counter')"), values=VALUES, env={}
        )


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT 'DELETE FROM items' AS text",
        "SELECT 1 /* ; DROP TABLE items */",
        'SELECT 1 AS "update"',
        "SELECT ';' AS semicolon;",
        "WITH t AS (SELECT 1 AS x) SELECT x FROM t",
        "SELECT $$ DELETE $$ AS dollar",
        "  -- leading comment\n  select 2",
    ],
)
def test_screen_ignores_quotes_and_comments(statement: str) -> None:
    check_read_only(statement)


@pytest.mark.parametrize("statement", ["", "   ;", "SELECT 'unterminated", "SELECT 1 /* open"])
def test_screen_refuses_empty_or_unterminated(statement: str) -> None:
    with pytest.raises(QueryRefused):
        check_read_only(statement)


def test_non_numeric_and_empty_metric_values_fail(database: str) -> None:
    workflow = sql_workflow(database)
    at = now()
    with pytest.raises(CollectorFailed, match="not a number"):
        capture_metric(workflow, "word", values=VALUES, env={}, start=at, end=at)
    with pytest.raises(CollectorFailed, match="no value"):
        capture_metric(workflow, "nothing", values=VALUES, env={}, start=at, end=at)


def test_past_window_fails_no_history(database: str) -> None:
    at = now() - timedelta(minutes=10)
    with pytest.raises(CollectorFailed, match="keeps no history"):
        capture_metric(sql_workflow(database), "total", values=VALUES, env={}, start=at, end=at + timedelta(minutes=1))


def test_unreachable_postgres_fails_quickly() -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing"
    began = time.monotonic()
    with pytest.raises(CollectorFailed, match="postgresql at") as failure:
        run_query(sql_workflow(url), "db", query("SELECT 1"), values=VALUES, env={})
    assert time.monotonic() - began < 5 and "\n" not in str(failure.value)


def test_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    with pytest.raises(CollectorFailed, match="sqlite"):
        run_query(sql_workflow(f"sqlite:///{path}"), "db", query("SELECT 1"), values=VALUES, env={})
    assert not path.exists()


def test_secret_url_is_redacted_everywhere(postgres_url: str) -> None:
    secret_url = postgres_url.replace("postgres@", "postgres:hunter2-secret@")
    workflow = sql_workflow("${env.DATABASE_URL}")
    result = run_query(
        workflow, "db", query("SELECT 1 AS one"), values=VALUES, env={"DATABASE_URL": secret_url}
    )
    assert result.rows == [{"one": 1}]
    assert result.provenance["source"] == "[redacted env.DATABASE_URL]"
    assert "hunter2" not in json.dumps(result.to_json())
    broken = secret_url.rsplit(":", 1)[0] + f":{free_port()}/x"
    with pytest.raises(CollectorFailed) as failure:
        run_query(workflow, "db", query("SELECT 1"), values=VALUES, env={"DATABASE_URL": broken})
    assert "hunter2" not in str(failure.value)
    with pytest.raises(CollectorFailed, match="DATABASE_URL is not set"):
        run_query(workflow, "db", query("SELECT 1"), values=VALUES, env={})


def test_literal_url_password_is_not_in_provenance(postgres_url: str) -> None:
    url = postgres_url.replace("postgres@", "postgres:pw-literal@")
    result = run_query(sql_workflow(url), "db", query("SELECT 1 AS one"), values=VALUES, env={})
    assert "pw-literal" not in json.dumps(result.provenance)


def test_unsupported_database_is_refused_fail_closed() -> None:
    workflow = sql_workflow("mssql+pyodbc://user@host/db")
    with pytest.raises(CollectorFailed, match="cannot enforce read-only"):
        run_query(workflow, "db", query("SELECT 1"), values=VALUES, env={})


def test_run_query_needs_a_sql_collector(database: str) -> None:
    workflow = make_workflow(
        {"db": {"type": "sql", "url": database}, "page": {"type": "scrape", "url": "http://127.0.0.1:1/metrics"}},
        {"up": {"collector": "page", "metric": "up", "unit": "count"}},
    )
    with pytest.raises(UsageError, match="not sql"):
        run_query(workflow, "page", query("SELECT 1"), values=VALUES, env={})
    with pytest.raises(UsageError, match="no collector"):
        run_query(workflow, "nope", query("SELECT 1"), values=VALUES, env={})


def test_json_values_are_canonical_safe() -> None:
    import datetime as dt
    import decimal

    assert json_value(decimal.Decimal("12")) == 12
    assert json_value(decimal.Decimal("0.5")) == 0.5
    assert json_value(decimal.Decimal("0.1000000000000000000001")) == "0.1000000000000000000001"
    assert json_value(decimal.Decimal("NaN")) is None
    assert json_value(2**60) == str(2**60)
    assert json_value(float("inf")) is None
    assert json_value(dt.date(2026, 1, 2)) == "2026-01-02"
    assert json_value(b"\x00\x01") == "AAE="
