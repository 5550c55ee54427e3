"""The ``collectors:`` section: where metrics and query results come from.

Prometheus, scrape, SQL and REST collectors: URLs, per-type fields, headers and
bodies (with where secrets may stand); the built-in catalog fills in the default
collector. The URL check is shared with the webhooks of ``actions:``.
"""

from __future__ import annotations

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
        scope = self.base_scope(env=True)
        url = self.template(spec.get("url"), (*at, "url"), scope, secrets="url", bare_dollar=True)
        if url is not None:
            self.check_url(url, str(kind), (*at, "url"))
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
        )

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
