"""Network timeouts that are deadlines: the whole exchange, not each read.

An HTTP client's timeout applies to each connect, write and read on its own: a server
that answers one byte a second never trips a 2 s read timeout and holds the caller as
long as it likes (a TSA, a metrics source, a webhook). Every network timeout AFDP
documents is a total deadline for the exchange instead (connect, TLS, request, status
line, headers, body): :func:`deadline` opens the window, and a client made by
:func:`with_deadlines` gives each socket operation only the time left in it, and fails
with ``httpx`` 's own timeout error once it has passed.

It works at httpcore's network-backend level (the one place every socket read and write
of an httpx client goes through), so it holds for slow headers as well as slow bodies,
for HTTP/1.1 keep-alive connections and through proxies.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator
from typing import Any

import httpcore
import httpx

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("afdp_deadline", default=None)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Bound every network operation of the ``with`` block to ``seconds`` in total."""
    token = _DEADLINE.set(time.monotonic() + max(0.0, seconds))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def remaining(timeout: float | None) -> float | None:
    """Return ``timeout`` cut to the time left before the deadline (None: no bound).

    Raises:
        httpcore.ReadTimeout: the deadline has passed (httpx reports a timeout).
    """
    end = _DEADLINE.get()
    if end is None:
        return timeout
    left = end - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("the deadline for this exchange has passed")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, remaining(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, remaining(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, remaining(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None, socket_options: Any = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_tcp(host, port, remaining(timeout), local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_unix_socket(path, remaining(timeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def with_deadlines(client: httpx.Client) -> httpx.Client:
    """Return ``client`` with every transport it may use bound by :func:`deadline`.

    Raises:
        TypeError: a transport is not httpx's own (nothing to bound: fail loudly).
    """
    transports = [client._transport, *client._mounts.values()]  # noqa: SLF001
    for transport in transports:
        if transport is None:
            continue
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if backend is None:
            raise TypeError(f"cannot bound {type(transport).__name__} by a deadline")
        if not isinstance(backend, _Backend):
            pool._network_backend = _Backend(backend)  # type: ignore[union-attr]
    return client


__all__ = ["deadline", "remaining", "with_deadlines"]
