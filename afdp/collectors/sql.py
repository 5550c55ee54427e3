"""SQL collector: read-only queries through a SQLAlchemy URL (PostgreSQL, SQLite, MySQL).

Evidence collection must never change the system it observes, so a query is read-only
twice over:

1. before anything is sent, :func:`check_read_only` screens the text: exactly one
   statement, starting with ``SELECT``, ``WITH``, ``SHOW``, ``EXPLAIN``, ``VALUES`` or
   ``TABLE``, and no data-changing keyword (``INSERT``, ``UPDATE``, ``DELETE``,
   ``MERGE``, ``INTO``, ``CREATE``, ``DROP``, ...) anywhere outside string literals,
   quoted identifiers and comments -- this refuses ``WITH d AS (DELETE ...) SELECT``,
   ``SELECT ... INTO`` and ``EXPLAIN ANALYZE DELETE``;
2. the database enforces it: PostgreSQL sessions start with
   ``default_transaction_read_only=on`` and the transaction is ``READ ONLY``; SQLite is
   opened read-only (``mode=ro``) with ``PRAGMA query_only``; MySQL/MariaDB run
   ``SET SESSION TRANSACTION READ ONLY``. Other databases are refused (fail closed).
   The transaction is always rolled back.

This stops writes, not every side effect a function can have (``pg_terminate_backend``):
give AFDP a database role that can only read.

A metric's sample is the first column of the first row (a number; NULL or no row is no
value). The database keeps no history: a past window fails; a window in the future is
polled every ``interval``.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
import re
import uuid
from collections.abc import Mapping
from typing import Any

from afdp.collectors.base import (
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
        connect_args: dict[str, Any] = {}
        if self.dialect == "postgresql":
            milliseconds = max(1, int(self.timeout * 1000))
            connect_args = {
                "connect_timeout": max(2, math.ceil(self.timeout)),
                "options": f"-c default_transaction_read_only=on -c statement_timeout={milliseconds}",
            }
        elif self.dialect == "sqlite":
            database = url.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                url = url.set(database=f"file:{database}", query={**url.query, "mode": "ro", "uri": "true"})
            connect_args = {"timeout": self.timeout}
        elif self.dialect in ("mysql", "mariadb"):
            connect_args = {"connect_timeout": max(1, math.ceil(self.timeout))}
        else:
            raise CollectorFailed(
                f"AFDP cannot enforce read-only queries on {self.dialect!r}; use postgresql, sqlite or mysql",
                collector=self.collector,
            )
        try:
            self.engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=connect_args)
        except Exception as exc:  # NoSuchModuleError (driver missing), ArgumentError
            raise CollectorFailed(
                f"cannot use {self.public}: {self.redactor.scrub(one_line(exc))}", collector=self.collector
            ) from None

    def read_only(self) -> str:
        """Return how read-only is enforced, for provenance."""
        return {
            "postgresql": "READ ONLY transaction, default_transaction_read_only=on, rolled back",
            "sqlite": "opened mode=ro, PRAGMA query_only=ON, rolled back",
        }.get(self.dialect, "SET SESSION TRANSACTION READ ONLY, rolled back")

    def run(self, query: str, limit: int) -> tuple[list[str], list[tuple[Any, ...]], bool]:
        """Run one screened query read-only; return (columns, at most ``limit`` rows, truncated).

        Raises:
            CollectorFailed: the database is unreachable or refused the query.
        """
        from sqlalchemy import text

        try:
            with self.engine.connect() as connection:
                if self.dialect == "postgresql":
                    connection = connection.execution_options(postgresql_readonly=True)
                elif self.dialect == "sqlite":
                    connection.exec_driver_sql("PRAGMA query_only = ON")
                else:
                    connection.exec_driver_sql("SET SESSION TRANSACTION READ ONLY")
                try:
                    result = connection.execute(text(query))
                    columns = list(result.keys()) if result.returns_rows else []
                    rows = [tuple(row) for row in result.fetchmany(limit + 1)] if columns else []
                finally:
                    connection.rollback()
        except CollectorFailed:
            raise
        except Exception as exc:  # SQLAlchemyError and driver errors
            raise CollectorFailed(
                f"{self.dialect} at {self.public}: {self._reason(exc)}", collector=self.collector
            ) from None
        return columns, rows[:limit], len(rows) > limit

    def _reason(self, exc: BaseException) -> str:
        original = getattr(exc, "orig", None) or exc
        first = str(original).strip().splitlines()[0] if str(original).strip() else ""
        return self.redactor.scrub(f"{type(original).__name__}: {first}" if first else type(original).__name__)

    def close(self) -> None:
        self.engine.dispose()


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

    def read() -> float:
        columns, rows, _ = database.run(sql, 1)
        if not rows or not columns:
            return math.nan
        return _number(rows[0][0])

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
    provenance = {
        **_source(collector, database, rendered),
        "meaning": "the first column of the first row at each read",
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
