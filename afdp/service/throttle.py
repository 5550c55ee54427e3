"""Limits on guessing the UI token: per client address and across all addresses.

Every wrong token (the login form, or an ``Authorization: Bearer`` header) counts as a
failure of the client's address. After :attr:`LoginLimits.free_failures` failures an
address must wait before its next try: ``first_delay`` seconds, doubling with each
further failure up to ``max_delay``; an address with no failure for ``forget_after``
seconds starts afresh, and a right token clears its count at once. Across all addresses,
failures draw from a token bucket (``global_burst``, refilled at ``global_per_second``),
so many addresses together guess no faster than that.

While a limit holds, every try from that address (or, for the global limit, every try)
is answered 429 with ``Retry-After`` *without the token being compared*: a right guess
made during a lock-out is not recognised, so the lock-out cannot be used as an oracle. A
right token outside a lock-out is never delayed.

The address is the ASGI client (an IPv6 one counted by its /64 network, which one client
holds whole): the socket peer, or, when ``afdp serve --proxy-headers``
trusts the reverse proxy on loopback, the client the proxy names in ``X-Forwarded-For``
(uvicorn's proxy-headers middleware decides; a header from anyone else is ignored).
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class LoginLimits:
    """How many wrong tokens are allowed, and how fast."""

    free_failures: int = 5
    first_delay: float = 1.0
    max_delay: float = 900.0
    forget_after: float = 3600.0
    global_burst: int = 60
    global_per_second: float = 0.5
    #: Addresses remembered at most (the least recently failed are forgotten first).
    max_addresses: int = 10_000


@dataclass(frozen=True)
class Throttled:
    """A refused try: which limit (``address`` or ``global``) and how long to wait."""

    limit: str
    retry_after: float

    @property
    def header(self) -> str:
        """The ``Retry-After`` value: whole seconds, at least 1."""
        return str(max(1, math.ceil(self.retry_after)))


class LoginThrottle:
    """The failure counts of one ``afdp serve`` (in memory; a restart forgets them)."""

    def __init__(self, limits: LoginLimits | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits or LoginLimits()
        self._clock = clock
        self._lock = threading.Lock()
        # address -> (failures, blocked until, last failure)
        self._addresses: OrderedDict[str, tuple[int, float, float]] = OrderedDict()
        self._tokens = float(self.limits.global_burst)
        self._refilled = clock()

    def check(self, address: str) -> Throttled | None:
        """Return the limit that refuses a try from ``address`` now, or None."""
        address = client_key(address)
        with self._lock:
            now = self._clock()
            self._refill(now)
            entry = self._addresses.get(address)
            if entry is not None and entry[1] > now:
                return Throttled("address", entry[1] - now)
            if self._tokens < 1:
                return Throttled("global", (1 - self._tokens) / self.limits.global_per_second)
            return None

    def failure(self, address: str) -> None:
        """Count a wrong token from ``address``."""
        address = client_key(address)
        limits = self.limits
        with self._lock:
            now = self._clock()
            self._refill(now)
            self._tokens = max(0.0, self._tokens - 1)
            failures, _, last = self._addresses.pop(address, (0, 0.0, now))
            if now - last > limits.forget_after:
                failures = 0
            failures += 1
            blocked = 0.0
            if failures > limits.free_failures:
                blocked = now + min(limits.first_delay * 2 ** min(failures - limits.free_failures - 1, 40),
                                    limits.max_delay)
            self._addresses[address] = (failures, blocked, now)
            while len(self._addresses) > limits.max_addresses:
                self._addresses.popitem(last=False)

    def success(self, address: str) -> None:
        """A right token from ``address``: its count starts afresh."""
        address = client_key(address)
        with self._lock:
            self._addresses.pop(address, None)

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._refilled)
        self._refilled = now
        self._tokens = min(float(self.limits.global_burst), self._tokens + elapsed * self.limits.global_per_second)


def client_key(address: str) -> str:
    """Return what one client's failures are counted under: an IPv4 address (also when
    seen as an IPv4-mapped IPv6 one), an IPv6 address's /64 network (one client holds a
    whole /64 and may use any address in it), or ``address`` as given if it is no address.
    """
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)
