"""A small local service with real Prometheus metrics and a real regression to find.

:class:`DemoService` is what ``afdp demo`` deploys and measures, and what the end-to-end
tests point a real Prometheus at. It runs an HTTP server on a loopback port (port 0 by
default: the system picks a free one) in a background thread and exports, with its own
``prometheus_client`` registry (never the process-global one):

- ``http_request_duration_seconds`` (histogram, label ``service``), fine buckets around
  the 20-200 ms range so a 40 ms shift moves the p50/p99 estimates;
- ``http_requests_total`` (counter, labels ``service`` and ``code``);
- ``active_users`` (gauge, label ``service``);
- ``demo_service_version_info`` (gauge 1, labels ``service`` and ``version``).

Traffic is synthetic and generated inside the service: a background thread simulates
``requests_per_second`` requests in small ticks, drawing latencies and status codes from
a seeded :class:`random.Random`, so two runs with the same seed see the same sequence of
draws. :meth:`DemoService.deploy` switches the behaviour to another version's
:class:`Profile`: ``v1`` answers in ~45 ms (log-normal, p99 ~100 ms) with ~1% 5xx;
``v2`` adds 40 ms to every request and fails ~5%. With the default 200 requests per
second, each one-second interval aggregates ~200 requests, so per-interval means and
error rates of v1 and v2 do not overlap and Mann-Whitney separates 10 samples of each.

With ``flag_file`` (a flagd flag file) the service also simulates an A/B experiment on
feature flag ``flag``: ``sessions_per_second`` user sessions, each user's group being the
*variant* the flag evaluates to for that user id (:func:`afdp.pipeline.flags.evaluate`,
flagd's ``fractional`` rule) and the feature on when the variant's *value* is true. The
file is re-read when it changes. Per ``group`` label (the variant) it exports
``ab_sessions_total``, ``ab_conversions_total``, ``ab_feature_used_total``,
``ab_revenue_dollars_total`` (counters) and ``ab_session_duration_seconds`` (summary),
which the catalog's ``conversion_rate``, ``session_duration``, ``feature_adoption`` and
``revenue_per_user`` read. ``feature_effect`` (:data:`AB_EFFECTS`) says what the feature
does to the users who get it: ``none``, ``harmful`` (fewer conversions, shorter sessions,
smaller orders) or ``helpful``. Without a flag file none of these series exist.

Real requests are served too: ``GET /`` answers JSON and is measured like the synthetic
ones; ``GET /metrics`` is the exposition page; ``GET /healthz`` answers ``ok``.

Run it by hand with ``python -m afdp.demo.service --port 8000 --version v1``; add
``--deploy-to v2 --deploy-after 120`` to deploy the regression two minutes later (it prints
the deployment time), and ``--flag-file flags.flagd.json --feature-effect harmful`` for
the A/B experiment (docs/workflows.md, "The guide's examples against the demo service").
"""

from __future__ import annotations

import argparse
import json
import math
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Summary,
)
from prometheus_client.exposition import generate_latest

from afdp.errors import UsageError

LATENCY_BUCKETS = (
    0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1, 0.12, 0.14, 0.16,
    0.18, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
)  # fmt: skip


@dataclass(frozen=True)
class Profile:
    """How one version behaves.

    Latency is log-normal with median ``latency_median`` seconds and shape
    ``latency_sigma``, plus ``latency_added`` seconds on every request; ``error_rate`` is
    the share of requests answered 500.
    """

    latency_median: float = 0.045
    latency_sigma: float = 0.35
    latency_added: float = 0.0
    error_rate: float = 0.01


@dataclass(frozen=True)
class ABEffect:
    """What the feature does to a session that has it: conversion probability added,
    session duration and order value multiplied."""

    conversion: float = 0.0
    duration_factor: float = 1.0
    order_factor: float = 1.0


AB_EFFECTS: dict[str, ABEffect] = {
    "none": ABEffect(),
    "harmful": ABEffect(conversion=-0.04, duration_factor=0.8, order_factor=0.85),
    "helpful": ABEffect(conversion=0.03, duration_factor=1.2),
}
AB_CONVERSION = 0.10  # a session converts (places an order) with this probability
AB_USERS = 20_000  # sessions come from this many distinct user ids

PROFILES: dict[str, Profile] = {
    "v1": Profile(),
    "v2": Profile(latency_added=0.040, error_rate=0.05),
}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        service = self.server.demo
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._answer(200, generate_latest(service.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._answer(200, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/":
            latency, code = service.simulate_one()
            # A real request pays the simulated latency (capped: a probe should be quick).
            time.sleep(min(latency, 0.5))
            body = json.dumps({"service": service.name, "version": service.version}).encode()
            self._answer(code, body + b"\n", "application/json")
        else:
            self._answer(404, b"not found\n", "text/plain; charset=utf-8")

    def _answer(self, code: int, body: bytes, content_type: str) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a scrape that timed out on a busy machine)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # a demo should not print one line per scrape


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    demo: DemoService

    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        # A scraper that gave up (its timeout, on a loaded machine) closes the connection
        # before the answer is written: nothing is wrong with the service, say nothing.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class DemoService:
    """A running demo service; see the module docstring.

    The server and traffic threads start in the constructor; :meth:`close` (or leaving
    the ``with`` block) stops both.

    Raises:
        UsageError: an unknown ``version``, or a non-positive ``requests_per_second``.
        OSError: the port could not be bound.
    """

    def __init__(
        self,
        name: str = "demo-api",
        *,
        version: str = "v1",
        seed: int = 42,
        requests_per_second: float = 200.0,
        host: str = "127.0.0.1",
        port: int = 0,
        tick: float = 0.05,
        flag_file: str | Path | None = None,
        flag: str = "feature_flag_analysis",
        feature_effect: str = "none",
        sessions_per_second: float = 1000.0,
    ) -> None:
        if version not in PROFILES:
            raise UsageError(f"unknown demo version {version!r}; expected one of {', '.join(PROFILES)}")
        if not requests_per_second > 0:
            raise UsageError("requests_per_second must be positive")
        self.name = name
        self.registry = CollectorRegistry(auto_describe=True)
        self._latency = Histogram(
            "http_request_duration_seconds",
            "Time to answer an HTTP request.",
            ["service"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._requests = Counter(
            "http_requests_total", "HTTP requests answered.", ["service", "code"], registry=self.registry
        )
        self._users = Gauge("active_users", "Users active now.", ["service"], registry=self.registry)
        self._info = Gauge(
            "demo_service_version_info", "The running version (always 1).", ["service", "version"],
            registry=self.registry,
        )  # fmt: skip
        # Make every series exist from the first scrape, so rates start at zero, not absent.
        for code in ("200", "500"):
            self._requests.labels(service=name, code=code)
        self._latency.labels(service=name)
        if feature_effect not in AB_EFFECTS:
            raise UsageError(f"unknown feature effect {feature_effect!r}; expected one of {', '.join(AB_EFFECTS)}")
        self._ab: _ABExperiment | None = (
            _ABExperiment(self, Path(flag_file), flag, AB_EFFECTS[feature_effect], sessions_per_second)
            if flag_file is not None
            else None
        )
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._rate = float(requests_per_second)
        self._tick = tick
        self._users_now = 100.0
        self._version = version
        self._profile = PROFILES[version]
        self._info.labels(service=name, version=version).set(1)
        self.deployed_at = datetime.now(UTC)
        self._stop = threading.Event()
        self._server = _Server((host, port), _Handler)
        self._server.demo = self
        self._threads = [
            threading.Thread(target=self._server.serve_forever, name="demo-http", daemon=True),
            threading.Thread(target=self._traffic, name="demo-traffic", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # --- what callers use ---------------------------------------------------------------

    @property
    def port(self) -> int:
        """Return the TCP port the service listens on."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Return the base URL, ``http://127.0.0.1:PORT``."""
        host = self._server.server_address[0]
        return f"http://{host if isinstance(host, str) else host.decode()}:{self.port}"

    @property
    def metrics_url(self) -> str:
        """Return the URL of the Prometheus exposition page."""
        return f"{self.url}/metrics"

    @property
    def version(self) -> str:
        """Return the version running now."""
        return self._version

    def deploy(self, version: str) -> datetime:
        """Switch to ``version`` now; return the (UTC) deployment time.

        Raises:
            UsageError: an unknown version.
        """
        if version not in PROFILES:
            raise UsageError(f"unknown demo version {version!r}; expected one of {', '.join(PROFILES)}")
        with self._lock:
            self._info.remove(self.name, self._version)
            self._version = version
            self._profile = PROFILES[version]
            self._info.labels(service=self.name, version=version).set(1)
            self.deployed_at = datetime.now(UTC)
            return self.deployed_at

    def close(self) -> None:
        """Stop the traffic generator and the HTTP server (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> DemoService:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- simulation -----------------------------------------------------------------------

    def simulate_one(self) -> tuple[float, int]:
        """Simulate one request with the current profile, record it; return (latency, code)."""
        with self._lock:
            return self._record_one()

    def _record_one(self) -> tuple[float, int]:
        profile = self._profile
        rng = self._random
        latency = profile.latency_added + profile.latency_median * math.exp(
            rng.gauss(0.0, profile.latency_sigma)
        )
        code = 500 if rng.random() < profile.error_rate else 200
        self._latency.labels(service=self.name).observe(latency)
        self._requests.labels(service=self.name, code=str(code)).inc()
        return latency, code

    def _traffic(self) -> None:
        carry = 0.0
        last = time.monotonic()
        while not self._stop.wait(self._tick):
            now = time.monotonic()
            carry += (now - last) * self._rate
            last = now
            count = int(carry)
            carry -= count
            with self._lock:
                for _ in range(count):
                    self._record_one()
                if self._ab is not None:
                    self._ab.tick(now)
                # Active users wander around 100 (mean-reverting random walk).
                self._users_now += 0.1 * (100.0 - self._users_now) + self._random.gauss(0.0, 2.0)
                self._users.labels(service=self.name).set(round(max(self._users_now, 0.0)))


class _ABExperiment:
    """The A/B sessions of a :class:`DemoService` (see the module docstring)."""

    def __init__(self, service: DemoService, path: Path, flag: str, effect: ABEffect, rate: float) -> None:
        if not rate > 0:
            raise UsageError("sessions_per_second must be positive")
        self.service, self.path, self.flag, self.effect, self.rate = service, path, flag, effect, rate
        self.random = random.Random(7)
        self.carry = 0.0
        self.last: float | None = None
        self.stamp: tuple[int, int] | None = None
        self.document: dict[str, object] = {}
        self.cache: dict[str, tuple[str, object] | None] = {}
        registry, labels = service.registry, ["service", "group"]
        self.sessions = Counter("ab_sessions_total", "A/B sessions.", labels, registry=registry)
        self.conversions = Counter("ab_conversions_total", "A/B sessions that ordered.", labels, registry=registry)
        self.used = Counter("ab_feature_used_total", "A/B sessions that used the feature.", labels, registry=registry)
        self.revenue = Counter("ab_revenue_dollars_total", "A/B order revenue.", labels, registry=registry)
        self.duration = Summary("ab_session_duration_seconds", "A/B session length.", labels, registry=registry)

    def _reload(self) -> None:
        from afdp.pipeline.flags import FlagError, read_flagd

        try:
            stat = self.path.stat()
        except OSError:
            self.stamp, self.document, self.cache = None, {}, {}
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self.stamp:
            return
        try:
            self.document = read_flagd(self.path)
        except FlagError:
            self.document = {}
        self.stamp, self.cache = stamp, {}

    def tick(self, now: float) -> None:
        from afdp.pipeline.flags import evaluate

        self._reload()
        if self.last is None:
            self.last = now
            return
        self.carry += (now - self.last) * self.rate
        self.last = now
        count = int(self.carry)
        self.carry -= count
        rng, effect, name = self.random, self.effect, self.service.name
        totals: dict[str, list[float]] = {}
        durations: dict[str, list[float]] = {}
        for _ in range(count):
            user = f"user-{rng.randrange(AB_USERS)}"
            if user not in self.cache:
                self.cache[user] = evaluate(self.document, self.flag, user)
            got = self.cache[user]
            if got is None:
                continue  # no experiment yet: the user has no group
            group, value = got
            on = value is True
            row = totals.setdefault(group, [0.0, 0.0, 0.0, 0.0])
            row[0] += 1
            conversion = AB_CONVERSION + (effect.conversion if on else 0.0)
            if rng.random() < conversion:
                row[1] += 1
                order = 50.0 * math.exp(rng.gauss(0.0, 0.3)) * (effect.order_factor if on else 1.0)
                row[3] += order
            if on and rng.random() < 0.6:
                row[2] += 1
            length = 120.0 * math.exp(rng.gauss(0.0, 0.5)) * (effect.duration_factor if on else 1.0)
            durations.setdefault(group, []).append(length)
        for group, (sessions, conversions, used, revenue) in totals.items():
            self.sessions.labels(service=name, group=group).inc(sessions)
            self.conversions.labels(service=name, group=group).inc(conversions)
            self.used.labels(service=name, group=group).inc(used)
            self.revenue.labels(service=name, group=group).inc(revenue)
            summary = self.duration.labels(service=name, group=group)
            for length in durations.get(group, []):
                summary.observe(length)


def main(argv: list[str] | None = None) -> int:
    """Run a demo service in the foreground until interrupted (SIGINT or SIGTERM); return
    the exit code (0; 2 bad options; 3 the port could not be bound).

    It prints one line when it serves (``<name> <version> serving <metrics URL>``), one
    when it deploys (``<name> deployed <version> at <UTC time>``: the time to give
    ``afdp run --deployed-at``) and, with ``--flag-file``, one naming the A/B experiment.
    """
    parser = argparse.ArgumentParser(prog="python -m afdp.demo.service", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8000, help="TCP port (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--name", default="demo-api", help="value of the service label")
    parser.add_argument("--version", default="v1", choices=sorted(PROFILES))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rps", type=float, default=200.0, help="synthetic requests per second")
    parser.add_argument(
        "--deploy-to", choices=sorted(PROFILES), help="switch to this version after --deploy-after seconds"
    )
    parser.add_argument("--deploy-after", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument(
        "--flag-file",
        type=Path,
        help="a flagd flag file: simulate the A/B experiment whose groups the flag assigns "
        "(the file is re-read when it changes; afdp's segment_users/enable_feature write it)",
    )
    parser.add_argument("--flag", default="feature_flag_analysis", help="the flag's name (default: %(default)s)")
    parser.add_argument(
        "--feature-effect", default="none", choices=sorted(AB_EFFECTS),
        help="what the feature does to the users who get it (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--sessions-per-second", type=float, default=1000.0, help="A/B user sessions per second")
    args = parser.parse_args(argv)
    if args.deploy_to is None and args.deploy_after:
        parser.error("--deploy-after needs --deploy-to")
    if args.deploy_after < 0:
        parser.error("--deploy-after must not be negative")
    try:
        service = DemoService(
            args.name, version=args.version, seed=args.seed, requests_per_second=args.rps,
            host=args.host, port=args.port, flag_file=args.flag_file, flag=args.flag,
            feature_effect=args.feature_effect, sessions_per_second=args.sessions_per_second,
        )  # fmt: skip
    except (UsageError, OSError) as exc:
        print(f"python -m afdp.demo.service: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 3
    print(f"{service.name} {service.version} serving {service.metrics_url} (Ctrl-C to stop)", flush=True)
    if args.flag_file is not None:
        print(
            f"{service.name} A/B experiment on flag {args.flag} from {args.flag_file} "
            f"(feature effect: {args.feature_effect})",
            flush=True,
        )
    stop = threading.Event()

    def deploy_later() -> None:
        if not stop.wait(args.deploy_after):
            at = service.deploy(args.deploy_to)
            stamp = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            print(f"{service.name} deployed {args.deploy_to} at {stamp}", flush=True)

    if args.deploy_to is not None:
        threading.Thread(target=deploy_later, name="demo-deploy", daemon=True).start()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        signal.signal(signal.SIGTERM, previous)
        service.close()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    raise SystemExit(main())
