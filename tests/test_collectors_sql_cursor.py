"""What a PostgreSQL read of the sql collector sends, as the database's statement
statistics see it: the statements a comparison must be able to tell from the
application's, exactly.

- Every read is a new psycopg connection that sends nothing on connecting, then
  ``BEGIN READ ONLY``, DECLARE/FETCH/CLOSE on AFDP's cursor and on its check cursor,
  and ``ROLLBACK``: no driver or dialect statement (SQLAlchemy's on connecting were
  about a dozen per read, and diluted a slowdown's mean).
- The cursor's name is 128 random bits per process; ``pg_stat_statements`` keeps it in
  the statements' text, keeps a query's comments, and keeps statements on differently
  named cursors apart (an application cursor is never merged into AFDP's entries).

Against a real PostgreSQL with ``pg_stat_statements`` preloaded (tests/infra.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from collectors.helpers import make_workflow

from afdp.pipeline.collectors import run_query
from afdp.pipeline.collectors.sql import CURSOR_SHAPE, cursor_name
from afdp.workflow.interpolation import Template

ROOT = Path(__file__).resolve().parents[1]


def test_the_cursor_name_is_random_per_process():
    assert re.fullmatch(CURSOR_SHAPE, cursor_name())
    assert cursor_name() == cursor_name()  # one name for every read of this process
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    names = {
        subprocess.run(
            [sys.executable, "-c", "from afdp.pipeline.collectors.sql import cursor_name; print(cursor_name())"],
            capture_output=True, text=True, check=True, env=env, cwd=ROOT,
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(names) == 2 and cursor_name() not in names
    assert all(re.fullmatch(CURSOR_SHAPE, name) for name in names)


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture()
def statements_db(postgres_statements_url: str) -> Iterator[str]:
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_plain(postgres_statements_url), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = postgres_statements_url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(_plain(url), autocommit=True) as db:
        db.execute("CREATE EXTENSION pg_stat_statements")
        db.execute("CREATE TABLE small (id int PRIMARY KEY, v int NOT NULL)")
        db.execute("INSERT INTO small SELECT g, g FROM generate_series(1, 100) g")
    yield url
    with psycopg.connect(_plain(postgres_statements_url), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _statements(url: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(_plain(url), autocommit=True) as db:
        rows = db.execute(
            "SELECT query, calls FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND toplevel"
        ).fetchall()
    return {query: int(calls) for query, calls in rows}


def _reset(url: str) -> None:
    import psycopg

    with psycopg.connect(_plain(url), autocommit=True) as db:
        db.execute("SELECT pg_stat_reset()")
        db.execute("SELECT pg_stat_statements_reset()")


def _read(url: str, sql: str) -> list[dict]:
    workflow = make_workflow(
        {"db": {"type": "sql", "url": url}}, {"m": {"collector": "db", "query": "SELECT 1", "unit": "count"}}
    )
    return run_query(workflow, "db", Template(sql, (sql,)), values={}, env={}, limit=10).rows


def test_a_read_sends_only_statements_on_its_cursor_and_one_begin_and_rollback(statements_db):
    import psycopg

    _reset(statements_db)
    for _ in range(3):
        assert _read(statements_db, "SELECT /* app-note */ v FROM small WHERE id = 7") == [{"v": 7}]
    seen = _statements(statements_db)
    mine = cursor_name()
    ours = {q: c for q, c in seen.items() if f'"{mine}' in q}
    rest = {q: c for q, c in seen.items() if q not in ours}
    # Nothing but BEGIN READ ONLY and ROLLBACK outside the cursor's statements (and the
    # reset this test ran): no driver or dialect statement on connecting.
    assert rest == {"BEGIN READ ONLY": 3, "ROLLBACK": 3, "SELECT pg_stat_statements_reset()": 1}
    # DECLARE, FETCH and CLOSE of the query and of the check, 3 calls each; the query's
    # comment is kept in the DECLARE's text.
    assert sorted(q.split()[0] for q in ours) == ["CLOSE", "CLOSE", "DECLARE", "DECLARE", "FETCH", "FETCH"]
    assert set(ours.values()) == {3}
    assert any(q.startswith(f'DECLARE "{mine}" ') and "/* app-note */" in q for q in ours)
    # One read-only transaction per read, rolled back.
    with psycopg.connect(_plain(statements_db), autocommit=True) as db:
        rollbacks = db.execute(
            "SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()[0]
    assert rollbacks == 3


def test_an_application_cursor_is_never_merged_into_afdps_entries(statements_db):
    import psycopg

    _reset(statements_db)
    with psycopg.connect(_plain(statements_db)) as db:
        # The same query on cursors named as earlier AFDP versions did, and like AFDP's
        # now with another token.
        for name in ("afdp_read", "afdp_" + "f" * 32):
            with db.transaction(), db.cursor(name=name) as cursor:
                cursor.execute("SELECT v FROM small WHERE id = 7")
                cursor.fetchall()
    _read(statements_db, "SELECT v FROM small WHERE id = 7")
    seen = _statements(statements_db)
    mine = cursor_name()
    for verb in ("DECLARE", "FETCH", "CLOSE"):
        entries = {q: c for q, c in seen.items() if q.startswith(verb) and not q.endswith("_check")
                   and "_check\"" not in q}
        # Three entries, one per cursor name, each with its own single call.
        assert len(entries) == 3 and set(entries.values()) == {1}, entries
        assert sum(f'"{mine}"' in q for q in entries) == 1
