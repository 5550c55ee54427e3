"""SQL collector: read-only queries through a SQLAlchemy URL (PostgreSQL, SQLite, MySQL).

Evidence collection must never change the system it observes, so a query is read-only
twice over:

1. before anything is sent, :func:`check_read_only` screens the text: exactly one
   statement, starting with ``SELECT``, ``WITH``, ``SHOW``, ``EXPLAIN``, ``VALUES`` or
   ``TABLE``, and no data-changing keyword (``INSERT``, ``UPDATE``, ``DELETE``,
   ``MERGE``, ``INTO``, ``CREATE``, ``DROP``, ...) anywhere outside string literals,
   quoted identifiers and comments -- this refuses ``WITH d AS (DELETE ...) SELECT``,
   ``SELECT ... INTO`` and ``EXPLAIN ANALYZE DELETE``;
2. the database enforces it, whatever the text screen let through (the screen is a
   friendly early refusal, not the boundary): PostgreSQL gets exactly one query, as a
   server-side cursor (``DECLARE ... CURSOR FOR``, whose grammar admits only SELECT,
   VALUES or TABLE: no COMMIT, SET, COPY, PREPARE, DO or second statement) over the
   extended query protocol (which refuses several statements), in a ``READ ONLY``
   transaction of a session with ``default_transaction_read_only=on``, and the
   transaction must still be open, read-only and without a write transaction id after
   it; SQLite is opened read-only (``mode=ro``: a missing file is not created) and an
   authorizer denies everything but reads (ATTACH, DETACH, writes, schema changes,
   transactions, pragmas other than a few that only report); MySQL/MariaDB run
   ``SET SESSION TRANSACTION READ ONLY`` and one statement (their drivers' default).
   Other databases are refused (fail closed). The transaction is always rolled back.

This stops writes, not every side effect a function can have (``pg_terminate_backend``):
give AFDP a database role that can only read.

On PostgreSQL each read is a new psycopg connection (the URL's SQLAlchemy connect
arguments; nothing is sent on connecting) that sends exactly ``BEGIN READ ONLY``,
DECLARE/FETCH/CLOSE on a cursor and on a check cursor, and ``ROLLBACK``. Both cursors are
named after :func:`cursor_name` (128 bits from :mod:`secrets` per process), which no
application statement can carry: ``pg_stat_statements`` keeps the name in those texts and
keeps statements on differently named cursors apart, so a database comparison
(``afdp.pipeline.runner.steps.statements``) leaves AFDP's reads out exactly.

A metric's sample is the first column of the first row (a number; NULL or no row is no
value). The database keeps no history: a past window fails; a window in the future is
polled every ``interval``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import decimal
import math
import re
import secrets
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from afdp.pipeline.collectors.base import (
    DEFAULT_TIMEOUT_SECONDS,
    Clock,
    CollectorFailed,
    MetricData,
    Redactor,
    check_live,
    finite_samples,
    one_line,
    poll,
    render,
    rfc3339,
    sampling_interval,
    seconds_of,
    shown,
)
from afdp.workflow.interpolation import Secret, Template
from afdp.workflow.model import Collector, Metric

DEFAULT_ROW_LIMIT = 10_000
READ_STARTS = frozenset({"SELECT", "WITH", "SHOW", "EXPLAIN", "VALUES", "TABLE"})
WRITE_WORDS = frozenset(
    {
        "INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "INTO", "TRUNCATE", "DROP", "ALTER",
        "CREATE", "GRANT", "REVOKE", "COPY", "CALL", "DO", "EXECUTE", "VACUUM", "REINDEX",
        "CLUSTER", "ATTACH", "DETACH", "PRAGMA", "BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT",
        "RELEASE", "PREPARE", "DEALLOCATE", "LISTEN", "NOTIFY", "UNLISTEN", "REFRESH", "LOAD",
        "IMPORT", "HANDLER", "LOCK", "UNLOCK", "RENAME", "SECURITY",
    }
)  # fmt: skip
MAX_SAFE_INT = 2**53 - 1  # RFC 8785 numbers are IEEE doubles; larger integers become text

#: 128 random bits, drawn once per process: the name of every cursor AFDP reads through.
_CURSOR = "afdp_" + secrets.token_hex(16)
_CURSOR_DRAWN_AT = time.time()
#: The shape of any AFDP cursor name, of any process (a reading that leaves out every
#: AFDP-looking statement uses it; it is a shape, not a proof: see the migration steps).
CURSOR_SHAPE = r"afdp_[0-9a-f]{32}"
#: The suffix of the cursor the read-only check after each query goes through.
CHECK_SUFFIX = "_check"


def cursor_name() -> str:
    """Return the name of the server-side cursor every PostgreSQL read of this process
    goes through (``afdp_`` and 32 hex digits from :mod:`secrets`; the read-only check
    after each query goes through the same name plus ``_check``)."""
    return _CURSOR


def cursor_drawn_at() -> float:
    """Return when (Unix seconds, this machine's clock) :func:`cursor_name` was drawn: no
    statement on that cursor can be older."""
    return _CURSOR_DRAWN_AT


class QueryRefused(CollectorFailed):
    """The query text is not a single read-only statement; nothing was sent."""


# --- 1. the text screen ------------------------------------------------------------------

_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def _strip(sql: str) -> str:
    """Return ``sql`` with comments, string literals and quoted identifiers blanked.

    Raises:
        QueryRefused: an unterminated literal, identifier or comment.
    """
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end
            out.append(" ")
        elif sql.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if sql.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif sql.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            if depth:
                raise QueryRefused("unterminated /* comment in the query")
            i = j
            out.append(" ")
        elif c in "'\"`":
            escapes = c == "'" and i > 0 and sql[i - 1] in "eE"
            j = i + 1
            while True:
                if j >= n:
                    raise QueryRefused(f"unterminated {c} quote in the query")
                if escapes and sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:  # doubled quote inside
                        j += 2
                        continue
                    break
                j += 1
            i = j + 1
            out.append(" '' ")
        elif c == "$" and (match := _DOLLAR_TAG.match(sql, i)) and not (i > 0 and sql[i - 1].isalnum()):
            tag = match.group(0)
            end = sql.find(tag, match.end())
            if end < 0:
                raise QueryRefused(f"unterminated {tag} quote in the query")
            i = end + len(tag)
            out.append(" '' ")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def check_read_only(sql: str) -> None:
    """Refuse any text that is not exactly one read-only statement.

    Raises:
        QueryRefused: empty, several statements, a statement that does not start with a
            reading keyword, or a data-changing keyword anywhere in it.
    """
    body = _strip(sql).strip()
    while body.endswith(";"):
        body = body[:-1].rstrip()
    if ";" in body:
        raise QueryRefused("the query holds more than one statement; AFDP runs exactly one")
    words = [w.upper() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_$]*", body)]
    if not words:
        raise QueryRefused("the query is empty")
    if words[0] not in READ_STARTS:
        raise QueryRefused(
            f"only read-only queries are run (SELECT, WITH, SHOW, EXPLAIN); this one starts with {words[0]}"
        )
    writes = sorted({w for w in words if w in WRITE_WORDS})
    if writes:
        raise QueryRefused(f"the query contains {', '.join(writes)}; only read-only queries are run")


# --- 2. the database's own enforcement --------------------------------------------------


class _Database:
    """An engine for one collector URL, and how to open a read-only transaction on it."""

    def __init__(
        self,
        collector: Collector,
        values: Mapping[str, Any],
        env: Mapping[str, str] | None,
        redactor: Redactor,
    ):
        import sqlalchemy
        from sqlalchemy.engine import make_url
        from sqlalchemy.pool import NullPool

        self.collector = collector.name
        self.redactor = redactor
        self.timeout = seconds_of(collector.timeout, DEFAULT_TIMEOUT_SECONDS)
        rendered = render(collector.url, values, env)
        raw = self.redactor.reveal(rendered)
        try:
            url = make_url(raw)
        except Exception as exc:  # ArgumentError, ValueError: the text is not a URL
            raise CollectorFailed(
                f"not a SQLAlchemy URL: {self.redactor.scrub(one_line(exc))}", collector=self.collector
            ) from None
        self.dialect = url.get_backend_name()
        self.public = (
            rendered.redacted() if isinstance(rendered, Secret) else url.set(password=None).render_as_string()
        )
        self.url = url
        connect_args: dict[str, Any] = {}
        if self.dialect == "postgresql":
            milliseconds = max(1, int(self.timeout * 1000))
            connect_args = {
                "connect_timeout": max(2, math.ceil(self.timeout)),
                "options": f"-c default_transaction_read_only=on -c statement_timeout={milliseconds}",
            }
        elif self.dialect == "sqlite":
            database = url.database or ""
            if database.startswith("file:") or url.query:
                raise CollectorFailed(
                    "a sqlite URL names a database file (sqlite:///path/to/file.db), without "
                    "'file:' URIs or query parameters: AFDP opens it read-only itself",
                    collector=self.collector,
                )
            if not database or database == ":memory:":
                raise CollectorFailed(
                    "a sqlite collector needs a database file, not an in-memory database",
                    collector=self.collector,
                )
            # read-only; never created when missing (mode=ro fails instead)
            self.sqlite_uri = "file:" + quote(database, safe="/") + "?mode=ro"
            connect_args = {"timeout": self.timeout}
        elif self.dialect in ("mysql", "mariadb"):
            connect_args = {"connect_timeout": max(1, math.ceil(self.timeout))}
        else:
            raise CollectorFailed(
                f"AFDP cannot enforce read-only queries on {self.dialect!r}; use postgresql, sqlite or mysql",
                collector=self.collector,
            )
        self.connect_args = connect_args
        try:
            self.engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=connect_args)
        except Exception as exc:  # NoSuchModuleError (driver missing), ArgumentError
            raise CollectorFailed(
                f"cannot use {self.public}: {self.redactor.scrub(one_line(exc))}", collector=self.collector
            ) from None

    def read_only(self) -> str:
        """Return how read-only is enforced, for provenance."""
        return {
            "postgresql": (
                "one query as a server-side cursor (DECLARE ... CURSOR FOR: SELECT, VALUES or "
                "TABLE only) over the extended query protocol, in a READ ONLY transaction "
                "(default_transaction_read_only=on) checked still open and read-only after "
                "it, rolled back; a new connection per read"
            ),
            "sqlite": "opened read-only (mode=ro), an authorizer allowing only reads, rolled back",
        }.get(self.dialect, "SET SESSION TRANSACTION READ ONLY, one statement, rolled back")

    def run(self, query: str, limit: int) -> tuple[list[str], list[tuple[Any, ...]], bool]:
        """Run one query read-only; return (columns, at most ``limit`` rows, truncated).

        The text screen (:func:`check_read_only`) is only a friendly early refusal: the
        guarantee is the database's. PostgreSQL gets exactly one statement through the
        extended query protocol (it refuses several) in a READ ONLY transaction that
        must still be open, read-only and without a write transaction id afterwards;
        SQLite is opened read-only and every statement passes an authorizer that allows
        nothing but reads. A read-only database role is still the real guarantee (a
        function can have side effects a read-only transaction allows).

        Raises:
            CollectorFailed: the database is unreachable or refused the query, or the
                statement tried to leave the read-only transaction.
        """
        try:
            if self.dialect == "postgresql":
                return self._run_postgresql(query, limit)
            if self.dialect == "sqlite":
                return self._run_sqlite(query, limit)
            return self._run_sqlalchemy(query, limit)
        except CollectorFailed:
            raise
        except Exception as exc:  # driver and SQLAlchemy errors
            raise CollectorFailed(
                f"{self.dialect} at {self.public}: {self._reason(exc)}", collector=self.collector
            ) from None

    def _connect_postgresql(self) -> Any:
        """Open a new psycopg connection with the URL's connect arguments, as SQLAlchemy
        would, but without SQLAlchemy's statements on connecting (its dialect checks and
        type lookups: each would count in the database's statement statistics)."""
        import psycopg

        if self.engine.dialect.driver != "psycopg":
            raise CollectorFailed(
                f"AFDP reads PostgreSQL through psycopg (postgresql+psycopg://), not {self.engine.dialect.driver}",
                collector=self.collector,
            )
        args, kwargs = self.engine.dialect.create_connect_args(self.url)
        kwargs.pop("context", None)  # SQLAlchemy's type adapters: psycopg's own are used
        kwargs.update(self.connect_args)
        # No automatic server-side PREPARE (the check counts prepared statements).
        return psycopg.connect(*args, **kwargs, autocommit=False, prepare_threshold=None)

    def _run_postgresql(self, query: str, limit: int) -> tuple[list[str], list[tuple[Any, ...]], bool]:
        import psycopg

        connection = self._connect_postgresql()
        try:
            connection.read_only = True  # BEGIN READ ONLY before the statement
            # A server-side cursor: psycopg sends DECLARE ... CURSOR FOR <query> over the
            # extended query protocol. PostgreSQL's own grammar then admits exactly one
            # SELECT, VALUES or TABLE query (no COMMIT, SET, COPY, PREPARE, DO, CALL, no
            # second statement, no data-modifying WITH): the parser is the boundary.
            with connection.cursor(name=_CURSOR) as cursor:
                try:
                    cursor.execute(query)
                except psycopg.errors.SyntaxError as exc:
                    raise CollectorFailed(
                        "PostgreSQL accepts one query here (SELECT, WITH ... SELECT, VALUES "
                        "or TABLE, run as a read-only cursor; current_setting() instead of "
                        f"SHOW): {self.redactor.scrub(one_line(exc))}",
                        collector=self.collector,
                    ) from None
                columns = [c.name for c in cursor.description] if cursor.description else []
                rows = [tuple(row) for row in cursor.fetchmany(limit + 1)] if columns else []
            status = connection.info.transaction_status
            if status != psycopg.pq.TransactionStatus.INTRANS:
                raise CollectorFailed(
                    "the statement ended or broke the read-only transaction "
                    f"({status.name}); nothing it returned is used",
                    collector=self.collector,
                )
            # Through a cursor of this process too: every statement AFDP sends, but for
            # BEGIN and ROLLBACK, carries the cursor's name.
            with connection.cursor(name=_CURSOR + CHECK_SUFFIX) as cursor:
                cursor.execute(
                    "SELECT current_setting('transaction_read_only'), "
                    "current_setting('default_transaction_read_only'), "
                    "txid_current_if_assigned(), "
                    "(SELECT count(*) FROM pg_prepared_statements)"
                )
                state = cursor.fetchone()
            if state is None or state[:2] != ("on", "on") or state[2] is not None or state[3]:
                raise CollectorFailed(
                    "the statement left the transaction read-write or began a write; "
                    "nothing it returned is used",
                    collector=self.collector,
                )
            return columns, rows[:limit], len(rows) > limit
        finally:
            with contextlib.suppress(Exception):
                connection.rollback()
            connection.close()

    def _run_sqlite(self, query: str, limit: int) -> tuple[list[str], list[tuple[Any, ...]], bool]:
        import sqlite3

        connection = sqlite3.connect(
            self.sqlite_uri, uri=True, timeout=self.timeout, isolation_level=None
        )
        try:
            connection.set_authorizer(_sqlite_authorizer)
            # sqlite3 refuses several statements in one execute ("one statement at a time")
            try:
                cursor = connection.execute(query)
            except sqlite3.DatabaseError as exc:
                if "not authorized" not in str(exc):
                    raise
                raise CollectorFailed(
                    "the read-only authorizer refused the statement (only reads are allowed: "
                    "no ATTACH, writes, schema changes, transactions or pragmas that change state)",
                    collector=self.collector,
                ) from None
            columns = [c[0] for c in cursor.description] if cursor.description else []
            rows = [tuple(row) for row in cursor.fetchmany(limit + 1)] if columns else []
            return columns, rows[:limit], len(rows) > limit
        finally:
            with contextlib.suppress(sqlite3.Error):
                if connection.in_transaction:
                    connection.rollback()
            connection.close()

    def _run_sqlalchemy(self, query: str, limit: int) -> tuple[list[str], list[tuple[Any, ...]], bool]:
        # MySQL/MariaDB: the drivers send one statement (multi-statements are off unless a
        # client flag asks for them), in a session set READ ONLY, rolled back.
        with self.engine.connect() as connection:
            connection.exec_driver_sql("SET SESSION TRANSACTION READ ONLY")
            try:
                result = connection.exec_driver_sql(query)
                columns = list(result.keys()) if result.returns_rows else []
                rows = [tuple(row) for row in result.fetchmany(limit + 1)] if columns else []
            finally:
                connection.rollback()
        return columns, rows[:limit], len(rows) > limit

    def _reason(self, exc: BaseException) -> str:
        original = getattr(exc, "orig", None) or exc
        first = str(original).strip().splitlines()[0] if str(original).strip() else ""
        return self.redactor.scrub(f"{type(original).__name__}: {first}" if first else type(original).__name__)

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_authorizer(action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None) -> int:
    """Allow reads only: SELECT, reading columns, functions, recursive CTEs and a few
    pragmas that only report. ATTACH, DETACH, every write, schema change, transaction
    statement and any other pragma is denied, whatever the query text looks like."""
    import sqlite3

    if action in _SQLITE_READS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and arg2 is None and (arg1 or "").lower() in _SQLITE_PRAGMAS:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def _sqlite_constants() -> tuple[frozenset[int], frozenset[str]]:
    import sqlite3

    reads = frozenset(
        {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
    )
    pragmas = frozenset(
        {"table_info", "table_xinfo", "index_list", "index_info", "page_count", "page_size",
         "freelist_count", "user_version", "schema_version", "data_version", "compile_options",
         "database_list", "table_list"}
    )  # fmt: skip
    return reads, pragmas


_SQLITE_READS, _SQLITE_PRAGMAS = _sqlite_constants()


# --- what the flows call ------------------------------------------------------------------


def query_rows(
    collector: Collector,
    query: Template,
    *,
    values: Mapping[str, Any],
    env: Mapping[str, str] | None,
    limit: int | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run ``query`` read-only on ``collector``; return (JSON-safe rows, provenance).

    At most ``limit`` rows (default 10,000) are kept; ``provenance["truncated"]`` says
    whether there were more.

    Raises:
        QueryRefused: the text is not one read-only statement (nothing was sent).
        CollectorFailed: the database is unreachable, refused the query, or is of a kind
            on which read-only cannot be enforced.
    """
    redactor = Redactor(env)
    rendered = render(query, values, env)
    try:
        sql = redactor.reveal(rendered)
        check_read_only(sql)
    except CollectorFailed as exc:
        raise type(exc)(exc.reason, collector=collector.name) from None
    keep = DEFAULT_ROW_LIMIT if limit is None else max(0, int(limit))
    database = _Database(collector, values, env, redactor)
    collected_at = rfc3339(dt.datetime.now(dt.UTC))
    try:
        columns, rows, truncated = database.run(sql, keep)
    finally:
        database.close()
    provenance = {
        **_source(collector, database, rendered),
        "collected_at": collected_at,
        "columns": columns,
        "row_count": len(rows),
        "limit": keep,
        "truncated": truncated,
    }
    return [dict(zip(columns, (json_value(v) for v in row), strict=True)) for row in rows], provenance


def capture(
    collector: Collector,
    metric: Metric,
    *,
    values: Mapping[str, Any],
    env: Mapping[str, str] | None,
    start: dt.datetime,
    end: dt.datetime,
    interval: float | None,
    clock: Clock,
) -> MetricData:
    """Sample ``metric.query`` (first column of the first row) over ``[start, end]``.

    Returns:
        The samples and provenance.

    Raises:
        QueryRefused: the query is not read-only (nothing was sent).
        CollectorFailed: unreachable, refused, a past window, a non-numeric value, or no
            value in the whole window.
    """
    if metric.query is None:
        raise CollectorFailed("the metric has no query", collector=collector.name, metric=metric.name)
    redactor = Redactor(env)
    rendered = render(metric.query, values, env)
    try:
        sql = redactor.reveal(rendered)
        check_read_only(sql)
    except CollectorFailed as exc:
        raise type(exc)(exc.reason, collector=collector.name, metric=metric.name) from None
    every = sampling_interval(collector, interval)
    try:
        database = _Database(collector, values, env, redactor)
    except CollectorFailed as exc:
        raise CollectorFailed(exc.reason, collector=collector.name, metric=metric.name) from None
    source = f"the {database.dialect} database"
    read_columns: set[str] = set()

    def read() -> float:
        columns, rows, _ = database.run(sql, 1)
        if not rows or not columns:
            return math.nan
        # A query taken from the collector may serve several metrics: each reads the
        # column named after it when there is one.
        index = columns.index(metric.column) if metric.column in columns else 0
        read_columns.add(columns[index])
        return _number(rows[0][index])

    failures = 0
    try:
        if start == end:
            check_live(end, clock, source)
            reads = [(clock.now(), 0.0, read())]
        else:
            polled = poll(read, start=start, end=end, interval=every, clock=clock, source=source)
            reads, failures = polled.reads, polled.failures
    except CollectorFailed as exc:
        raise type(exc)(exc.reason, collector=collector.name, metric=metric.name) from None
    finally:
        database.close()
    samples, dropped = finite_samples((at.timestamp(), value) for at, _, value in reads)
    if not samples:
        raise CollectorFailed(
            f"the query returned no value (no row or NULL) in {len(reads)} reads",
            collector=collector.name,
            metric=metric.name,
        )
    column = next(iter(read_columns)) if len(read_columns) == 1 else None
    provenance = {
        **_source(collector, database, rendered),
        "meaning": (
            f"column {column} of the first row at each read"
            if metric.column is not None and column is not None
            else "the first column of the first row at each read"
        ),
        "window": {"start": rfc3339(start), "end": rfc3339(end)},
        "interval": every,
        "reads": len(reads),
        "failed_reads": failures,
        "sample_count": len(samples),
        "dropped": dropped,
    }
    return MetricData(metric.name, metric.unit.symbol, samples, provenance)


def _number(value: Any) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float, decimal.Decimal)):
        return float(value)
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    raise CollectorFailed(f"the query's first column is {type(value).__name__}, not a number")


def json_value(value: Any) -> Any:
    """Return a database value as a canonical-JSON-safe value.

    Integers beyond 2**53 and non-finite or inexact decimals become text; floats that are
    NaN/Inf become None; dates and times ISO 8601; intervals seconds; bytes base64.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value if abs(value) <= MAX_SAFE_INT else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return None
        if value == value.to_integral_value() and abs(value) <= MAX_SAFE_INT:
            return int(value)
        as_float = float(value)
        return as_float if decimal.Decimal(repr(as_float)) == value else str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    return str(value)


def _source(collector: Collector, database: _Database, rendered: Any) -> dict[str, Any]:
    """Provenance every SQL collection records: where, which query (secrets redacted), how."""
    return {
        "collector": collector.name,
        "type": "sql",
        "source": database.public,
        "dialect": database.dialect,
        "query": shown(rendered),
        "read_only": database.read_only(),
        "timeout": database.timeout,
    }
