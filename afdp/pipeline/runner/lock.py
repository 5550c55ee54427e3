"""The run lock: one run per deployment at a time (``flock`` on a file under the repository's ``afdp-locks/``), released by the kernel if the process dies."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from afdp.errors import (
    StorageError,
)
from afdp.evidence import records as rec
from afdp.evidence.store import EvidenceStore

if TYPE_CHECKING:
    pass


#: Where run locks live, inside the evidence repository's git dir.
LOCK_DIR = "afdp-locks"


@contextlib.contextmanager
def run_lock(repository: Path, service: str, deployment: str) -> Iterator[Path]:
    """Hold the exclusive run lock of one deployment for the ``with`` block.

    An ``flock`` on ``<gitdir>/afdp-locks/<service>/<deployment>.lock``: the operating
    system releases it when the process exits or crashes, so a stale lock never blocks.

    Raises:
        StorageError: another run holds the lock (exit 3), naming its pid and start time.
    """
    store = EvidenceStore(repository)
    path = store.path / LOCK_DIR / service / f"{deployment}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 (closed below, which releases the lock)
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().split()
            pid = holder[0] if holder else "?"
            since = holder[1] if len(holder) > 1 else "?"
            raise StorageError(
                f"deployment {deployment} is being recorded by another run (pid {pid}, since {since})"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {rec.format_time(rec.utc_now())}\n")
        handle.flush()
        yield path
    finally:
        handle.close()
