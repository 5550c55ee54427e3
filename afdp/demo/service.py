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

Real requests are served too: ``GET /`` answers JSON and is measured like the synthetic
ones; ``GET /metrics`` is the exposition page; ``GET /healthz`` answers ``ok``.

Run it by hand with ``python -m afdp.demo.service --port 8000 --version v1``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
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
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # a demo should not print one line per scrape


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    demo: DemoService

    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return  # a scraper that gave up (its timeout) is not the service's error
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
                # Active users wander around 100 (mean-reverting random walk).
                self._users_now += 0.1 * (100.0 - self._users_now) + self._random.gauss(0.0, 2.0)
                self._users.labels(service=self.name).set(round(max(self._users_now, 0.0)))


def main(argv: list[str] | None = None) -> int:
    """Run a demo service in the foreground until interrupted; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m afdp.demo.service", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8000, help="TCP port (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--name", default="demo-api", help="value of the service label")
    parser.add_argument("--version", default="v1", choices=sorted(PROFILES))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rps", type=float, default=200.0, help="synthetic requests per second")
    args = parser.parse_args(argv)
    try:
        service = DemoService(
            args.name, version=args.version, seed=args.seed, requests_per_second=args.rps,
            host=args.host, port=args.port,
        )  # fmt: skip
    except (UsageError, OSError) as exc:
        print(f"error: {exc}")
        return 2 if isinstance(exc, UsageError) else 3
    print(f"{service.name} {service.version} serving {service.metrics_url} (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        service.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
