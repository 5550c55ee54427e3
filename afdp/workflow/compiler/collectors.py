"""The ``collectors:`` section: where metrics and query results come from.

Prometheus, scrape, SQL and REST collectors: URLs, per-type fields, headers and
bodies (with where secrets may stand); the built-in catalog fills in the default
collector. The URL check is shared with the webhooks of ``actions:``.
"""

from __future__ import annotations

import re
from typing import Any, cast
from urllib.parse import urlsplit

from afdp.workflow import catalog
from afdp.workflow.compiler.variables import _Variables
from afdp.workflow.interpolation import Template
from afdp.workflow.loader import DocPath
from afdp.workflow.model import Collector

_SQL_SCHEMES = (
    "postgresql",
    "postgres",
    "mysql",
    "mariadb",
    "sqlite",
    "mssql",
    "oracle",
    "cockroachdb",
)


_METRIC_REF = re.compile(r"\$\{\s*metric\.[^}]*\}")


def _normalize(text: str) -> str:
    return re.sub(r"\$\{\s*metric\.name\s*\}", "${metric.name}", text)


def metric_query(text: str, name: str) -> str:
    """Return a collector's default query ``text`` for the metric ``name``: each
    ``${metric.name}`` replaced by it (metric names are identifiers: nothing to escape)."""
    return _normalize(text).replace("${metric.name}", name)


class _Collectors(_Variables):
    """Collectors and the URLs they (or webhooks) are reached at."""

    def compile_collectors(self) -> None:
        declared = self.mapping(self.data.get("collectors"))
        for name, spec in catalog.DEFAULT_COLLECTORS.items():
            if name not in declared:
                self.collectors[name] = self.collector(name, dict(spec), None, builtin=True)
        for name, spec in declared.items():
            if isinstance(spec, dict):
                self.collectors[name] = self.collector(
                    name, spec, ("collectors", name), builtin=False
                )

    def collector(
        self, name: str, spec: dict[str, Any], path: DocPath | None, *, builtin: bool
    ) -> Collector:
        at: DocPath = path or ("collectors",)
        kind = (
            spec.get("type")
            if spec.get("type") in ("prometheus", "scrape", "sql", "rest")
            else "rest"
        )
        if spec.get("type") == "pull":
            kind = "prometheus"
            self.note(
                (*at, "type"),
                "type: pull is read as type: prometheus: the Prometheus HTTP API at its "
                "endpoint, queried with PromQL (range queries every step, 15s by default)",
            )
        url_key = self.url_key(spec, str(kind), at)
        scope = self.base_scope(env=True)
        url = self.template(spec.get(url_key), (*at, url_key), scope, secrets="url", bare_dollar=True)
        if url is not None:
            self.check_url(url, str(kind), (*at, url_key))
        default_query, query_key = self.default_query(spec, str(kind), at, scope)
        headers = tuple(
            (key, template)
            for key, value in self.mapping(spec.get("headers")).items()
            if (
                template := self.template(
                    value, (*at, "headers", key), scope, secrets=True, bare_dollar=True
                )
            )
        )
        body = self.template(spec.get("body"), (*at, "body"), scope, secrets="a request body")
        for key, allowed in (
            ("method", ("rest",)),
            ("body", ("rest",)),
            ("step", ("prometheus",)),
            ("interval", ("scrape", "rest")),
            ("headers", ("prometheus", "scrape", "rest")),
        ):
            if key in spec and kind not in allowed:
                self.fail(
                    (*at, key),
                    f"{key!r} does not apply to a {kind} collector (only to {', '.join(allowed)})",
                    prefer_key=True,
                )
        if "body" in spec and spec.get("method", "GET") != "POST":
            self.fail((*at, "body"), "a body is only sent with method: POST", prefer_key=True)
        return Collector(
            name=name,
            type=cast(Any, kind),
            url=url or Template("", ()),
            headers=headers,
            method=str(spec.get("method", "GET")),
            body=body,
            step=self.duration(
                spec.get("step", catalog.DEFAULT_PROMETHEUS_STEP if kind == "prometheus" else None),
                (*at, "step"),
            ),
            interval=self.duration(
                spec.get(
                    "interval", catalog.DEFAULT_INTERVAL if kind in ("scrape", "rest") else None
                ),
                (*at, "interval"),
            ),
            timeout=self.duration(spec.get("timeout", catalog.DEFAULT_TIMEOUT), (*at, "timeout")),
            builtin=builtin,
            location=None if path is None else self.location(path),
            url_key=url_key,
            default_query=default_query,
            default_query_key=query_key,
        )

    def url_key(self, spec: dict[str, Any], kind: str, at: DocPath) -> str:
        """Return the key the collector's address is written under: ``url``, or the
        guide's ``endpoint`` (HTTP sources) and ``connection`` (sql); exactly one."""
        given = [key for key in ("url", "endpoint", "connection") if key in spec]
        if len(given) > 1:
            self.fail(
                (*at, given[1]),
                f"{' and '.join(given)} both give the address; write one of them",
                prefer_key=True,
            )
        if not given:
            self.fail(
                at,
                "the collector needs an address: "
                + (
                    "connection: (a database URL, e.g. $DATABASE_URL)"
                    if kind == "sql"
                    else "endpoint: or url: (http://host:port)"
                ),
                prefer_key=True,
            )
            return "url"
        key = given[0]
        if key == "connection" and kind != "sql":
            self.fail(
                (*at, key),
                f"connection: is a sql collector's database URL; a {kind} collector is "
                "reached at endpoint: (or url:)",
                prefer_key=True,
            )
        elif key == "endpoint" and kind == "sql":
            self.fail(
                (*at, key),
                "a sql collector's database URL is written connection: (or url:), not endpoint:",
                prefer_key=True,
            )
        elif key == "endpoint":
            what = {
                "prometheus": "the Prometheus HTTP API's base URL",
                "scrape": "the /metrics page read every interval",
                "rest": "the JSON API called every interval",
            }.get(kind, "the address")
            self.note((*at, key), f"endpoint: is read as url:, {what}")
        elif key == "connection":
            self.note(
                (*at, key),
                "connection: is read as url:, the database's SQLAlchemy URL "
                "(postgresql://user@host/db); queries run read-only",
            )
        return key

    def default_query(
        self, spec: dict[str, Any], kind: str, at: DocPath, scope: Any
    ) -> tuple[str | None, str | None]:
        """Check a prometheus collector's ``query_template`` or a sql collector's
        ``query``: the query of every metric on the collector that gives none."""
        key = "query_template" if "query_template" in spec else "query" if "query" in spec else None
        if key is None or not isinstance(spec.get(key), str):
            return None, None
        wanted = "query_template" if kind == "prometheus" else "query" if kind == "sql" else None
        if key != wanted:
            hint = (
                "a prometheus (pull) collector's default query is query_template:, a sql "
                "collector's is query:"
            )
            self.fail((*at, key), f"{key!r} does not apply to a {kind} collector; {hint}", prefer_key=True)
            return None, None
        if "query_template" in spec and "query" in spec:
            self.fail((*at, "query"), "give query_template: or query:, not both", prefer_key=True)
        text = str(spec[key]).strip()
        other = _METRIC_REF.search(_normalize(text).replace("${metric.name}", ""))
        if other:
            self.fail(
                (*at, key),
                f"{other.group(0)}: a collector's {key} knows only ${{metric.name}} (the "
                "name of the metric it is the query of)",
            )
            return None, None
        # Checked once here, with a stand-in name; each metric renders its own.
        self.template(
            metric_query(text, "metric"), (*at, key), scope, secrets="a query's text"
        )
        self.note(
            (*at, key),
            f"{key}: is the query of every metric on collector {at[-1]!r} that gives no "
            "query: of its own ("
            + (
                "${metric.name} replaced by the metric's name)"
                if "${metric.name}" in _normalize(text)
                else "no ${metric.name} in it: the same query for each)"
            )
            + (
                "; a metric reads the column named after it, else the first column"
                if kind == "sql"
                else ""
            ),
        )
        return text, key

    def check_url(self, url: Template, kind: str, path: DocPath, *, what: str = "") -> None:
        # Only the literal start of a templated URL can be checked before run time.
        head = url.parts[0] if url.parts and isinstance(url.parts[0], str) else ""
        if not head:
            return
        if "://" not in head:
            if url.is_literal:
                expected = "postgresql://user@host/db" if kind == "sql" else "http://host:port/..."
                self.fail(path, f"{head!r} is not a URL; expected {expected}")
            return
        scheme = head.split("://", 1)[0].lower()
        if kind == "sql":
            dialect = scheme.split("+", 1)[0]
            if dialect not in _SQL_SCHEMES:
                self.fail(
                    path,
                    f"unknown database {dialect!r}; expected a SQLAlchemy URL such as postgresql://user@host/db",
                )
            return
        if scheme not in ("http", "https"):
            what = what or f"a {kind} collector"
            self.fail(path, f"{what} is reached over http or https, not {scheme!r}")
            return
        if url.is_literal:
            try:
                host = urlsplit(head).hostname
            except ValueError as exc:
                self.fail(path, f"malformed URL: {exc}")
                return
            if not host:
                self.fail(path, "the URL has no host")
