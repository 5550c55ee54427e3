"""The TSA over HTTP (RFC 3161 section 3.4): :func:`serve` starts a threaded server that answers ``POST`` of ``application/timestamp-query``, caps request size, keeps connections alive and closes them all on shutdown."""

from __future__ import annotations

import http.server
import logging
import socket
import threading
from types import TracebackType
from typing import Any

from afdp.errors import NetworkError
from afdp.evidence.notary.files import DEV_TSA_WARNING
from afdp.evidence.notary.responder import EmbeddedTSA
from afdp.evidence.timestamp.request import serving_here

_log = logging.getLogger(__name__)

# A TimeStampReq is a few hundred bytes; anything much larger is not one.
MAX_REQUEST_BYTES = 64 * 1024


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse one connection
    server_version = "afdp-tsa"
    sys_version = ""
    timeout = 60  # idle keep-alive connections are dropped after a minute
    # Buffer each answer: its headers and body leave in one write, flushed when the
    # request is done (handle_one_request), so the client wakes once per answer.
    wbufsize = -1
    server: _HTTPServer

    def do_POST(self) -> None:
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/timestamp-query":
            self._drain()
            self._plain(415, "Content-Type must be application/timestamp-query\n")
            return
        length_header = self.headers.get("Content-Length")
        if length_header is None or not length_header.strip().isdigit():
            self.close_connection = True
            self._plain(411, "Content-Length is required\n")
            return
        length = int(length_header)
        if length > MAX_REQUEST_BYTES:
            self.close_connection = True  # the body is not read, so the stream is unusable
            self._plain(413, f"a time-stamp request is at most {MAX_REQUEST_BYTES} bytes\n")
            return
        body = self.rfile.read(length)
        reply = self.server.tsa.respond(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/timestamp-reply")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def do_GET(self) -> None:
        self._plain(405, f"POST an RFC 3161 request here. {DEV_TSA_WARNING}\n", allow=True)

    def do_HEAD(self) -> None:
        self._plain(405, "", allow=True)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def _drain(self) -> None:
        # Read (a bounded) body we are refusing, so the keep-alive stream stays in sync.
        length = self.headers.get("Content-Length", "0").strip()
        if length.isdigit() and int(length) <= MAX_REQUEST_BYTES:
            self.rfile.read(int(length))
        else:
            self.close_connection = True

    def _plain(self, code: int, text: str, *, allow: bool = False) -> None:
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if allow:
            self.send_header("Allow", "POST")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes; with Nagle's algorithm the second
        # waits for the client's delayed ACK (about 40 ms on Linux) on every reply.
        if self.connection.family in (socket.AF_INET, socket.AF_INET6):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("%s %s", self.address_string(), format % args)


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], tsa: EmbeddedTSA) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.tsa = tsa
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket, alive: bool) -> None:
        with self._connections_lock:
            if alive:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        # shutdown() stops accepting but keep-alive handler threads would go on
        # answering; a closed TSA must stop answering at once.
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class TsaServer:
    """A running HTTP front end for an :class:`EmbeddedTSA` (see :func:`serve`)."""

    def __init__(self, httpd: _HTTPServer) -> None:
        self._httpd = httpd
        address = httpd.server_address
        self.host: str = str(address[0])
        self.port: int = int(address[1])
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{self.port}/"
        self._closed = threading.Event()
        serving_here(self.port, True)
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"afdp-tsa-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def wait(self) -> None:
        """Block until :meth:`close` is called (Ctrl-C still interrupts)."""
        # Event.wait with a timeout keeps the main thread responsive to signals.
        while not self._closed.wait(0.5):
            pass

    def close(self) -> None:
        """Stop serving and drop open connections; idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        serving_here(self.port, False)
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.close_connections()
        self._thread.join(timeout=5)

    def __enter__(self) -> TsaServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def serve(tsa: EmbeddedTSA, host: str = "127.0.0.1", port: int = 0) -> TsaServer:
    """Serve ``tsa`` over HTTP (RFC 3161 section 3.4) in a daemon thread.

    ``port=0`` picks a free port; the chosen one is in ``.url``. Use the result as a
    context manager, or call ``.close()``.

    Returns:
        The running server.

    Raises:
        NetworkError: the address cannot be bound (in use, bad host, no permission): exit 3.
    """
    try:
        httpd = _HTTPServer((host, port), tsa)
    except OSError as exc:
        # The port being taken is the machine's state, not a bad argument: operational.
        raise NetworkError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return TsaServer(httpd)
