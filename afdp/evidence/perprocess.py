"""One object per process, made on first use and forgotten in a forked child.

The time-stamp client's kept-alive sockets and the threads that write a record's blobs
while its time-stamp is requested are both of this kind: a forked child must not share
the parent's sockets (two processes writing requests on one TCP stream interleave them)
and has none of its threads, so it makes its own when it needs one (under a fresh
lock, in case a thread of the parent held the old one at the fork).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["PerProcess"]

T = TypeVar("T")


class PerProcess(Generic[T]):
    """``make()``'s result, made once per process on the first :meth:`get`."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._value: T | None = None
        self._lock = threading.Lock()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._forget)

    def get(self) -> T:
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._make()
                value = self._value
        return value

    def _forget(self) -> None:
        self._value = None
        self._lock = threading.Lock()
