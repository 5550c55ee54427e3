"""HTTP for the HTTP-based collectors (prometheus, scrape, rest): one place wraps httpx.

An :class:`Endpoint` is a collector's URL and headers rendered for one collection:
the real values (secrets revealed) for the request, and the public form (credentials
stripped, secrets redacted, header names only) for provenance. :func:`send` turns
every httpx failure into a :class:`CollectorFailed` with a one-line, secret-free reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from afdp.deadline import deadline, with_deadlines
from afdp.pipeline.collectors.base import (
    DEFAULT_TIMEOUT_SECONDS,
    CollectorFailed,
    Redactor,
    one_line,
    public_url,
    render,
    seconds_of,
    shown,
)
from afdp.workflow.model import Collector

USER_AGENT = "afdp-collector/1"
MAX_BODY = 32 * 1024 * 1024  # an answer larger than this is not a metrics answer


@dataclass(frozen=True)
class Endpoint:
    """A collector's rendered URL and headers, real (for the request) and public (for evidence)."""

    collector: str
    url: str
    public: str
    headers: Mapping[str, str]
    timeout: float
    redactor: Redactor

    def provenance(self) -> dict[str, Any]:
        """Return ``{"source", "headers" (names only), "timeout"}``."""
        return {
            "source": self.public,
            "headers": sorted(k for k in self.headers if k != "User-Agent"),
            "timeout": self.timeout,
        }


def endpoint(
    collector: Collector, values: Mapping[str, Any], env: Mapping[str, str] | None
) -> Endpoint:
    """Render ``collector``'s URL and headers for one collection.

    Raises:
        CollectorFailed: a value or environment variable it needs is missing.
    """
    redactor = Redactor(env)
    rendered = render(collector.url, values, env)
    url = redactor.reveal(rendered)
    headers = {"User-Agent": USER_AGENT}
    for name, template in collector.headers:
        headers[name] = redactor.reveal(render(template, values, env))
    return Endpoint(
        collector=collector.name,
        url=url.rstrip("/") if collector.type == "prometheus" else url,
        public=public_url(shown(rendered)),
        headers=headers,
        timeout=seconds_of(collector.timeout, DEFAULT_TIMEOUT_SECONDS),
        redactor=redactor,
    )


def client(target: Endpoint) -> httpx.Client:
    """Return an httpx client with the endpoint's headers and timeout (no redirects)."""
    return with_deadlines(
        httpx.Client(
            headers=dict(target.headers), timeout=target.timeout, follow_redirects=False, trust_env=False
        )
    )


def send(
    http: httpx.Client,
    target: Endpoint,
    method: str,
    url: str,
    *,
    what: str,
    params: Mapping[str, Any] | None = None,
    content: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """Send one request; return the response (any status).

    The httpx exception is not chained: its text and URL may hold a revealed secret.

    Raises:
        CollectorFailed: unreachable, timed out, refused, or an answer over 32 MiB.
    """
    try:
        # the collector's timeout is a deadline for the whole exchange, not each read
        with deadline(target.timeout):
            response = http.request(method, url, params=params, content=content, headers=headers)
    except httpx.TimeoutException:
        raise CollectorFailed(
            f"{what} at {target.public} did not answer in full within {target.timeout:g}s",
            collector=target.collector,
        ) from None
    except httpx.ConnectError as exc:
        raise CollectorFailed(
            f"{what} at {target.public} is unreachable ({target.redactor.scrub(one_line(exc))})",
            collector=target.collector,
        ) from None
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
        raise CollectorFailed(
            f"{what} at {target.public} failed: {target.redactor.scrub(one_line(exc))}",
            collector=target.collector,
        ) from None
    if len(response.content) > MAX_BODY:
        raise CollectorFailed(
            f"{what} at {target.public} answered more than {MAX_BODY // (1024 * 1024)} MiB",
            collector=target.collector,
        )
    return response


def describe_body(response: httpx.Response, scrub: Callable[[str], str]) -> str:
    """Return a short, printable description of an unexpected answer body.

    ``scrub`` (the endpoint's redactor) runs over the whole body *before* it is cut: a
    page that echoes a token must not leave a prefix of it behind.
    """
    kind = response.headers.get("content-type", "no content type").split(";")[0].strip()
    text = scrub(response.text[: 64 * 1024])[:200]
    if "html" in kind or text.lstrip().lower().startswith(("<!doctype html", "<html")):
        return f"an HTML page ({kind})"
    snippet = " ".join(text.split())[:80]
    return f"{kind}: {snippet!r}" if snippet else f"an empty {kind} body"
