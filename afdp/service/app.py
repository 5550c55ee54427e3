"""The ``afdp serve`` application (Starlette) and its server (uvicorn).

Routes:

- ``POST /events/github``, ``POST /events``: the signed intake (public: the HMAC
  signature is the credential). Checks run in this order, and a refused event starts
  nothing and records nothing: body size (413), signature (401), JSON (400), event shape
  (400), service (404), environment (422), replay (409). An accepted event is committed to
  the ledger's outbox (:mod:`.deliveries`) and answered 202 with its delivery id at once;
  the outbox relay (:mod:`.outbox`, started with the app) creates the flow run. If the
  outbox cannot be written (disk full, read-only) the answer is 503 and nothing is kept,
  so the sender's retry is accepted.
- ``GET /events/<delivery>`` (token): where an accepted event stands: queued, submitted
  (with the flow run id) or failed (with the reason).
- ``GET /healthz``: public liveness.
- everything else needs the UI token (``AFDP_UI_TOKEN``) as ``Authorization: Bearer`` or
  the session cookie set by ``POST /login`` (HttpOnly, SameSite=Strict, Secure behind TLS,
  valid :data:`SESSION_SECONDS`): the dashboard (``/``, ``/deployments/...``,
  ``/services/...``), ``/api/deployments``, ``/api/annotations`` (Grafana) and ``/metrics``.
  Without a configured token they answer 403: the dashboard is off. Wrong tokens are
  limited per client address and globally (:mod:`.throttle`): 429 with ``Retry-After``.

No route writes evidence: the intake only creates flow runs, and the dashboard reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route

from afdp.errors import AfdpError, NotFoundError, StorageError, UsageError
from afdp.evidence.names import branch_ref, check_name
from afdp.service.config import Services
from afdp.service.dashboard import Dashboard
from afdp.service.deliveries import DeliveryLedger, Replay
from afdp.service.intake import (
    GENERIC_SIGNATURE,
    GITHUB_DELIVERY,
    GITHUB_EVENT,
    GITHUB_SIGNATURE,
    EventRejected,
    Ignored,
    check_signature,
    parse_generic,
    parse_github,
    parse_json,
)
from afdp.service.metrics import ServiceMetrics
from afdp.service.outbox import FIRST_RETRY, GIVE_UP_AFTER, MAX_RETRY, Relay
from afdp.service.submit import RunSubmitter
from afdp.service.throttle import LoginLimits, LoginThrottle, Throttled

#: Default cap on a request body (GitHub's deployment_status payloads are ~10-30 KiB).
MAX_BODY = 256 * 1024
#: Shortest webhook secret or UI token accepted (bytes): a guessable one protects nothing.
MIN_SECRET = 16
SESSION_COOKIE = "afdp_session"
#: How long a dashboard session (the cookie set by POST /login) lasts.
SESSION_SECONDS = 12 * 3600
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class ServeSettings:
    """Everything one ``afdp serve`` needs."""

    repository: Path
    services: Services
    webhook_secret: bytes
    submitter: RunSubmitter
    ui_token: str | None = None
    trust_policy: Path | None = None
    ledger_path: Path | None = None
    max_body: int = MAX_BODY
    #: The outbox relay's back-off (seconds) and when it gives an event up.
    first_retry: float = FIRST_RETRY
    max_retry: float = MAX_RETRY
    give_up_after: float = GIVE_UP_AFTER
    login_limits: LoginLimits = LoginLimits()


class _BodyTooLarge(Exception):
    pass


def _session_value(token: str, expires: int) -> str:
    """The session cookie: ``<expiry>.<HMAC-SHA256 under the token of the expiry>``.

    It carries a value derived from the token, never the token itself, and it ends: a
    cookie copied from a browser is worthless after :data:`SESSION_SECONDS` (rotating
    the token ends every session at once)."""
    mac = hmac.new(token.encode(), f"afdp-ui-session:{expires}".encode(), hashlib.sha256).hexdigest()
    return f"{expires}.{mac}"


def _session_valid(token: str, cookie: str, now: float) -> bool:
    expires, _, _ = cookie.partition(".")
    if not (expires.isascii() and expires.isdigit() and len(expires) <= 12):
        expires = "0"
    expected = _session_value(token, int(expires))
    # compared in full even when the expiry is bad, so the time says nothing
    matches = hmac.compare_digest(cookie.encode(), expected.encode())
    return matches and now < int(expires) <= now + SESSION_SECONDS


def token_matches(given: str, token: str) -> bool:
    """Return whether ``given`` is ``token``, in time independent of both.

    :func:`hmac.compare_digest` returns early when the lengths differ; comparing the
    SHA-256 digests (always 32 bytes) says nothing about the token's length either."""
    return hmac.compare_digest(hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest(),
                               hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest())


def client_address(request: Request) -> str:
    """Return the client's address: the socket peer, or the client named by a reverse proxy
    that ``--proxy-headers`` trusts (uvicorn rewrites the ASGI client only then)."""
    return request.client.host if request.client else "unknown"


def default_ledger_path(repository: Path) -> Path:
    """Return ``<git dir>/afdp-serve/intake.sqlite`` of the evidence repository."""
    from afdp.evidence.store import EvidenceStore

    return EvidenceStore(repository).path / "afdp-serve" / "intake.sqlite"


def create_app(settings: ServeSettings) -> Starlette:
    """Return the Starlette application for ``settings``.

    Raises:
        UsageError: a webhook secret (or a UI token) shorter than :data:`MIN_SECRET` bytes; a
            trust policy inside the evidence repository.
        ConfigurationError: the trust policy does not load.
        StorageError / NotFoundError: the evidence repository or the replay ledger cannot be opened.
    """
    from afdp.service import ui

    if len(settings.webhook_secret) < MIN_SECRET:
        # an empty or short key makes every signature computable by anyone
        raise UsageError(f"the webhook secret must be at least {MIN_SECRET} bytes")
    if settings.ui_token and len(settings.ui_token.encode()) < MIN_SECRET:
        raise UsageError(f"the UI token must be at least {MIN_SECRET} bytes")
    metrics = ServiceMetrics()
    dashboard = Dashboard(settings.repository, trust_policy=settings.trust_policy, metrics=metrics)
    # The trust policy is loaded now: one that does not load (or lies inside the evidence
    # repository) stops afdp serve at start, not every page after it.
    dashboard.load_policy()
    ledger = DeliveryLedger(settings.ledger_path or default_ledger_path(settings.repository))
    metrics.watch(ledger)
    relay = Relay(ledger, settings.submitter, settings.services, metrics, first_retry=settings.first_retry,
                  max_retry=settings.max_retry, give_up_after=settings.give_up_after)
    throttle = LoginThrottle(settings.login_limits)
    token = settings.ui_token or None

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > settings.max_body:
            raise _BodyTooLarge
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > settings.max_body:
                raise _BodyTooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    async def intake(request: Request, source: str) -> Response:
        started = time.monotonic()
        try:
            try:
                body = await read_body(request)
            except _BodyTooLarge:
                raise EventRejected(413, "too_large", f"body larger than {settings.max_body} bytes") from None
            header = GITHUB_SIGNATURE if source == "github" else GENERIC_SIGNATURE
            check_signature(settings.webhook_secret, body, request.headers.get(header))
            document = parse_json(body)
            if source == "github":
                event = parse_github(
                    request.headers.get(GITHUB_EVENT), request.headers.get(GITHUB_DELIVERY), document,
                    settings.services,
                )
            else:
                event = parse_generic(document, settings.services)
            if isinstance(event, Ignored):
                metrics.ignored.labels(source=source).inc()
                status = 200 if event.reason == "ping" else 202
                return JSONResponse({"accepted": False, "ignored": event.reason}, status_code=status)
            try:
                # committed to disk (claim and queue in one transaction) before the 202
                await run_in_threadpool(
                    lambda: ledger.accept(delivery=event.delivery, service=event.service.name,
                                          deployment=event.deployment, source=source, event=event.to_json())
                )
            except Replay as exc:
                raise EventRejected(409, "replay", str(exc)) from None
            except StorageError as exc:
                metrics.rejected.labels(source=source, reason="outbox_unavailable").inc()
                logging.getLogger("afdp.serve").warning("afdp serve: %s", exc.diagnostics())
                # the cause (SQLite's words), not the ledger's path, goes to the sender
                return JSONResponse(
                    {"accepted": False, "reason": "outbox_unavailable",
                     "error": f"the event could not be queued, send it again later: {exc.__cause__ or exc}"},
                    status_code=503, headers={"Retry-After": "30"},
                )
            relay.wake()
            metrics.accepted.labels(source=source, service=event.service.name).inc()
            return JSONResponse(
                {
                    "accepted": True,
                    "state": "queued",
                    "delivery": event.delivery,
                    "service": event.service.name,
                    "deployment": event.deployment,
                    "branch": branch_ref(event.service.name, event.deployment),
                    "status": f"/events/{event.delivery}",
                },
                status_code=202,
            )
        except EventRejected as exc:
            metrics.rejected.labels(source=source, reason=exc.reason).inc()
            return JSONResponse({"accepted": False, "reason": exc.reason, "error": exc.diagnostics()},
                                status_code=exc.status)
        finally:
            metrics.intake_seconds.labels(source=source).observe(time.monotonic() - started)

    async def github_events(request: Request) -> Response:
        return await intake(request, "github")

    async def generic_events(request: Request) -> Response:
        return await intake(request, "generic")

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    def too_many(limited: Throttled, *, page: bool) -> Response:
        metrics.login_throttled.labels(limit=limited.limit).inc()
        headers = {"Retry-After": limited.header}
        message = f"too many wrong tokens: try again in {limited.header} s"
        if page:
            return HTMLResponse(ui.render("login.html", error=message, enabled=True), status_code=429,
                                headers=headers)
        return JSONResponse({"error": message}, status_code=429, headers=headers)

    def check_token(request: Request, given: str, *, page: bool) -> Response | bool:
        """Return whether ``given`` is the token, or the 429 when its address (or everyone)
        is locked out; a wrong token counts against the address."""
        assert token is not None
        address = client_address(request)
        limited = throttle.check(address)
        if limited is not None:
            return too_many(limited, page=page)  # the token is not even compared
        if token_matches(given, token):
            throttle.success(address)
            return True
        throttle.failure(address)
        metrics.login_failures.inc()
        return False

    def authorized(request: Request) -> Response | bool:
        if token is None:
            return False
        header = request.headers.get("authorization", "")
        if header[:7].lower() == "bearer ":
            return check_token(request, header[7:].strip(), page=False)
        return _session_valid(token, request.cookies.get(SESSION_COOKIE, ""), time.time())

    def guarded(handler: Any, *, page: bool) -> Any:
        async def endpoint(request: Request) -> Response:
            if token is None:
                return PlainTextResponse(
                    "the dashboard is off: start afdp serve with AFDP_UI_TOKEN set", status_code=403
                )
            allowed = authorized(request)
            if isinstance(allowed, Response):
                return allowed
            if not allowed:
                if page:
                    return RedirectResponse("/login", status_code=303)
                return JSONResponse({"error": "a valid token is required (Authorization: Bearer)"},
                                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
            try:
                response: Response = await handler(request)
            except NotFoundError as exc:
                response = PlainTextResponse(exc.diagnostics(), status_code=404)
            except AfdpError as exc:
                response = PlainTextResponse(exc.diagnostics(), status_code=400)
            return response

        return endpoint

    async def login_page(request: Request) -> Response:
        return HTMLResponse(ui.render("login.html", error=None, enabled=token is not None))

    async def login(request: Request) -> Response:
        try:
            body = await read_body(request)
        except _BodyTooLarge:
            return PlainTextResponse("too large", status_code=413)
        given = (parse_qs(body.decode("utf-8", "replace")).get("token") or [""])[0]
        allowed = check_token(request, given, page=True) if token is not None else False
        if isinstance(allowed, Response):
            return allowed
        if token is None or not allowed:
            return HTMLResponse(ui.render("login.html", error="wrong token", enabled=token is not None),
                                status_code=401)
        response = RedirectResponse("/", status_code=303)
        session = _session_value(token, int(time.time()) + SESSION_SECONDS)
        response.set_cookie(SESSION_COOKIE, session, max_age=SESSION_SECONDS, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path="/")
        return response

    async def logout(request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    async def index(request: Request) -> Response:
        team = request.query_params.get("team") or None
        entries = await run_in_threadpool(dashboard.entries, team=team)
        services = sorted({e.service for e in entries} | set(settings.services.by_name))
        return HTMLResponse(ui.render("index.html", entries=entries, services=services,
                                      trust=settings.trust_policy, team=team))

    async def deployment_page(request: Request) -> Response:
        service, deployment = _names(request)
        entry = await run_in_threadpool(dashboard.entry, service, deployment)
        return HTMLResponse(ui.render("deployment.html", entry=entry, plots=ui.plots(entry)))

    async def service_page(request: Request) -> Response:
        service = check_name(request.path_params["service"], what="service")
        entries = await run_in_threadpool(dashboard.entries, service=service)
        prediction = await run_in_threadpool(dashboard.prediction, service)
        return HTMLResponse(ui.render("service.html", service=service, entries=entries,
                                      trends=ui.trends(entries), prediction=prediction))

    async def api_deployments(request: Request) -> Response:
        service = request.query_params.get("service")
        team = request.query_params.get("team") or None
        entries = await run_in_threadpool(dashboard.entries, service=service, team=team)
        return JSONResponse([e.to_json() for e in entries])

    async def annotations(request: Request) -> Response:
        query: Mapping[str, Any] = {}
        if request.method == "POST":
            try:
                query = json.loads(await read_body(request) or b"{}")
            except (ValueError, RecursionError, _BodyTooLarge):  # RecursionError: "[[[[..." too deep
                return JSONResponse({"error": "body is not a JSON object"}, status_code=400)
            if not isinstance(query, Mapping):
                return JSONResponse({"error": "body is not a JSON object"}, status_code=400)
        entries = await run_in_threadpool(dashboard.entries)
        return JSONResponse(ui.grafana_annotations(entries, dict(request.query_params), query))

    async def api_root(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def metrics_page(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def event_status(request: Request) -> Response:
        row = await run_in_threadpool(ledger.status, request.path_params["delivery"])
        if row is None:
            return JSONResponse({"error": "no such delivery was accepted"}, status_code=404)
        answer = row.to_json()
        answer["branch"] = branch_ref(row.service, row.deployment)
        return JSONResponse(answer)

    async def stylesheet(request: Request) -> Response:
        return Response(ui.STYLESHEET, media_type="text/css")

    routes = [
        Route("/events/github", github_events, methods=["POST"]),
        Route("/events", generic_events, methods=["POST"]),
        Route("/events/{delivery:path}", guarded(event_status, page=False), methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/static/afdp.css", stylesheet, methods=["GET"]),
        Route("/favicon.ico", lambda request: Response(status_code=204), methods=["GET"]),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", guarded(index, page=True), methods=["GET"]),
        Route("/deployments/{service}/{deployment}", guarded(deployment_page, page=True), methods=["GET"]),
        Route("/services/{service}", guarded(service_page, page=True), methods=["GET"]),
        Route("/api/", guarded(api_root, page=False), methods=["GET"]),
        Route("/api/deployments", guarded(api_deployments, page=False), methods=["GET"]),
        Route("/api/annotations", guarded(annotations, page=False), methods=["GET", "POST"]),
        Route("/metrics", guarded(metrics_page, page=False), methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        relay.start()  # and resume what an earlier process left queued
        try:
            yield
        finally:
            await run_in_threadpool(relay.stop)
            ledger.close()

    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(SecurityHeaders)])
    app.state.metrics = metrics
    app.state.ledger = ledger
    app.state.relay = relay
    app.state.throttle = throttle
    app.state.dashboard = dashboard
    return app


class SecurityHeaders:
    """Adds :data:`_SECURITY_HEADERS` to every HTTP response (pure ASGI: streams untouched)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _names(request: Request) -> tuple[str, str]:
    return (
        check_name(request.path_params["service"], what="service"),
        check_name(request.path_params["deployment"], what="deployment"),
    )


@dataclass
class RunningServer:
    """A server started by :func:`running_server`: its base URL and the app."""

    url: str
    app: Starlette


@contextlib.contextmanager
def running_server(
    app: Starlette, *, host: str = "127.0.0.1", port: int = 0, proxy_headers: bool = False
) -> Iterator[RunningServer]:
    """Serve ``app`` with uvicorn in a background thread for the ``with`` block.

    Raises:
        NetworkError: the server did not start (port in use...).
    """
    import uvicorn

    from afdp.errors import NetworkError

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on",
                            proxy_headers=proxy_headers, forwarded_allow_ips="127.0.0.1" if proxy_headers else None,
                            server_header=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="afdp-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise NetworkError(f"afdp serve could not listen on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    try:
        yield RunningServer(f"http://{shown}:{bound}", app)
    finally:
        server.should_exit = True
        thread.join(10)


def serve_forever(app: Starlette, *, host: str, port: int, proxy_headers: bool = False,
                  forwarded_allow_ips: str | None = None) -> None:
    """Run ``app`` with uvicorn in this thread until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", proxy_headers=proxy_headers,
                forwarded_allow_ips=forwarded_allow_ips, server_header=False)

