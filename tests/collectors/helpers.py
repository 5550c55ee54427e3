"""Build workflows around collectors, and serve canned HTTP answers on loopback."""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml

from afdp.workflow.compiler import compile_document
from afdp.workflow.loader import parse
from afdp.workflow.model import Workflow


def make_workflow(collectors: dict[str, Any], metrics: dict[str, Any]) -> Workflow:
    """Compile a minimal real workflow that captures ``metrics`` from ``collectors``."""
    document = {
        "name": "collector_test",
        "version": "1.0",
        "collectors": collectors,
        "metrics": metrics,
        "workflow": [{"capture": sorted(metrics)}],
    }
    return compile_document(parse(yaml.safe_dump(document, sort_keys=False), name="test.yaml"))


def now() -> datetime:
    return datetime.now(UTC)


VALUES = {"deployment": {"service": "demo-api", "id": "d-1"}, "workflow": {}, "steps": {}}


@dataclass(frozen=True)
class Answer:
    status: int = 200
    content_type: str = "application/json"
    body: bytes = b"{}"
    delay: float = 0.0


@dataclass
class Served:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)


@contextlib.contextmanager
def serve(answer: Callable[[dict[str, Any]], Answer] | Answer) -> Iterator[Served]:
    """Serve ``answer`` (or ``answer(request)``) to every request on a loopback port.

    Each request is recorded as ``{"method", "path", "headers", "body"}``.
    """
    served = Served("")

    class Handler(http.server.BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = {
                "method": self.command,
                "path": self.path,
                "headers": dict(self.headers.items()),
                "body": self.rfile.read(length).decode() if length else "",
            }
            served.requests.append(request)
            reply = answer(request) if callable(answer) else answer
            if reply.delay:
                time.sleep(reply.delay)
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
            except OSError:
                pass  # the client gave up (timeout tests)

        do_GET = _handle  # noqa: N815
        do_POST = _handle  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
