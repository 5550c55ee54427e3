"""The delivery ledger: the replay ledger and the intake's durable outbox, in one SQLite file.

A SQLite file (``<git dir>/afdp-serve/intake.sqlite`` by default, beside the run locks and
never in the evidence) in WAL mode with ``synchronous=FULL``: a commit returns only once
the write-ahead log is on disk. One row per accepted delivery, with two unique keys: the
delivery id (``X-GitHub-Delivery`` or the generic event's ``event_id``) and the AFDP
deployment (service and id).

:meth:`DeliveryLedger.accept` claims the delivery *and* queues the event in one
transaction, so the intake answers 202 only for an event that is on disk, and a crash
before the commit leaves neither (the sender gets no 202 and sends again). A row then
goes ``queued`` -> ``submitted`` (with the flow run id) or ``failed`` (with the reason),
driven by :class:`afdp.service.outbox.Relay`. A second copy of a delivery, or another
event for a deployment already accepted, is refused (409); only a ``failed`` row, which
created no flow run, gives way to a redelivery. Several ``afdp serve`` processes may
share the file (SQLite's own locking; a queued row is leased to one relay at a time).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from afdp.errors import StorageError

QUEUED = "queued"
SUBMITTED = "submitted"
FAILED = "failed"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    delivery TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    deployment TEXT NOT NULL,
    received_at TEXT NOT NULL,
    flow_run TEXT,
    UNIQUE (service, deployment)
);
"""
# Added by the outbox (a ledger written before it gains them; see _migrate).
_OUTBOX_COLUMNS = {
    "source": "TEXT",
    "event": "TEXT",
    "state": "TEXT",
    "attempts": "INTEGER NOT NULL DEFAULT 0",
    "next_attempt": "REAL NOT NULL DEFAULT 0",
    "received": "REAL",
    "error": "TEXT",
    "updated_at": "TEXT",
}


class Replay(Exception):
    """The delivery, or the deployment, was already accepted."""


@dataclass(frozen=True)
class Delivery:
    """One accepted delivery and where its flow run stands."""

    delivery: str
    service: str
    deployment: str
    source: str | None
    received_at: str
    state: str  # queued | submitted | failed
    attempts: int
    flow_run: str | None
    error: str | None
    next_attempt: float
    event: Mapping[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        """Return what ``GET /events/<delivery>`` shows (never the event's body)."""
        out: dict[str, Any] = {
            "delivery": self.delivery,
            "service": self.service,
            "deployment": self.deployment,
            "source": self.source,
            "received_at": self.received_at,
            "state": self.state,
            "attempts": self.attempts,
        }
        if self.flow_run:
            out["flow_run_id"] = self.flow_run
        if self.state == FAILED:
            out["reason"] = self.error
        elif self.state == QUEUED:
            out["last_error"] = self.error
            out["next_attempt_at"] = datetime.fromtimestamp(self.next_attempt, UTC).isoformat()
        return out


_COLUMNS = ("delivery, service, deployment, source, received_at, state, attempts, flow_run, error, next_attempt, "
            "event")


def _row(values: tuple[Any, ...]) -> Delivery:
    event = json.loads(values[10]) if values[10] else None
    return Delivery(values[0], values[1], values[2], values[3], values[4], values[5], int(values[6]), values[7],
                    values[8], float(values[9]), event)


class DeliveryLedger:
    """Claims delivery ids and deployments, once each, and queues their events durably."""

    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            new = not path.exists()
            self._db = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: in WAL mode every commit syncs the log, so an answered 202 survives a power cut
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._migrate()
            if new:
                _sync_directory(path.parent)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open the intake's ledger {path}: {exc}") from exc
        self._lock = threading.Lock()
        self.path = path

    def _migrate(self) -> None:
        have = {row[1] for row in self._db.execute("PRAGMA table_info(deliveries)")}
        missing = [(name, kind) for name, kind in _OUTBOX_COLUMNS.items() if name not in have]
        if not missing:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for name, kind in missing:
                self._db.execute(f"ALTER TABLE deliveries ADD COLUMN {name} {kind}")
            # rows written before the outbox: started (a flow run) or lost in flight (none)
            self._db.execute("UPDATE deliveries SET state = ? WHERE state IS NULL AND flow_run IS NOT NULL",
                             (SUBMITTED,))
            self._db.execute(
                "UPDATE deliveries SET state = ?, error = ? WHERE state IS NULL",
                (FAILED, "accepted before the intake kept an outbox; its flow run was never recorded"),
            )
            self._db.execute("COMMIT")
        except BaseException:
            _rollback(self._db)
            raise
        self._db.execute("CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, next_attempt)")

    def accept(self, *, delivery: str, service: str, deployment: str, source: str,
               event: Mapping[str, Any]) -> Delivery:
        """Claim ``delivery`` for ``service``/``deployment`` and queue ``event``, durably.

        Returns the queued row once it is committed to disk. A ``failed`` row of the same
        delivery or deployment (no flow run was created) is replaced.

        Raises:
            Replay: the delivery id, or the deployment, is already recorded.
            StorageError: the ledger cannot be written (disk full, read-only, locked).
        """
        now = time.time()
        stamp = datetime.fromtimestamp(now, UTC).isoformat()
        body = json.dumps(dict(event), sort_keys=True)
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.execute(
                        "DELETE FROM deliveries WHERE state = ? AND flow_run IS NULL "
                        "AND (delivery = ? OR (service = ? AND deployment = ?))",
                        (FAILED, delivery, service, deployment),
                    )
                    self._db.execute(
                        "INSERT INTO deliveries (delivery, service, deployment, received_at, source, event, state, "
                        "attempts, next_attempt, received, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
                        (delivery, service, deployment, stamp, source, body, QUEUED, now, now, stamp),
                    )
                    self._db.execute("COMMIT")
                except BaseException:
                    _rollback(self._db)
                    raise
            except sqlite3.IntegrityError:
                row = self._db.execute(
                    "SELECT delivery, service, deployment FROM deliveries WHERE delivery = ? OR (service = ? AND deployment = ?)",
                    (delivery, service, deployment),
                ).fetchone()
                if row and row[0] == delivery and (row[1], row[2]) != (service, deployment):
                    # the same id for another deployment: not this event again, and not run
                    raise Replay(f"delivery {delivery} was already received, for deployment {row[1]}/{row[2]}: "
                                 f"this event (deployment {deployment}) was not accepted; give each event its own id") from None
                if row and row[0] == delivery:
                    raise Replay(f"delivery {delivery} was already received") from None
                raise Replay(f"deployment {service}/{deployment} was already started") from None
            except sqlite3.Error as exc:
                raise StorageError(f"cannot queue the event in {self.path}: {exc}") from exc
        return Delivery(delivery, service, deployment, source, stamp, QUEUED, 0, None, None, now, dict(event))

    def take(self, *, now: float, lease: float, limit: int = 16) -> list[Delivery]:
        """Return up to ``limit`` queued deliveries that are due, leased for ``lease`` seconds
        (another relay sharing the file does not take them meanwhile)."""
        taken = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    f"SELECT {_COLUMNS} FROM deliveries WHERE state = ? AND next_attempt <= ? "
                    "ORDER BY next_attempt LIMIT ?",
                    (QUEUED, now, limit),
                ).fetchall()
                for values in rows:
                    self._db.execute("UPDATE deliveries SET next_attempt = ? WHERE delivery = ?",
                                     (now + lease, values[0]))
                    taken.append(_row(values))
                self._db.execute("COMMIT")
            except BaseException:
                _rollback(self._db)
                raise
        return taken

    def resume(self, *, now: float) -> int:
        """Make every queued delivery due now (at start-up: leases and back-offs of a process
        that is gone end). Returns how many are queued."""
        with self._lock:
            self._db.execute("UPDATE deliveries SET next_attempt = ? WHERE state = ? AND next_attempt > ?",
                             (now, QUEUED, now))
            return int(self._db.execute("SELECT COUNT(*) FROM deliveries WHERE state = ?", (QUEUED,)).fetchone()[0])

    def submitted(self, delivery: str, flow_run: str) -> None:
        """Note the flow run created for ``delivery``."""
        self._update(delivery, "state = ?, flow_run = ?, attempts = attempts + 1, error = NULL", (SUBMITTED, flow_run))

    def retry(self, delivery: str, *, error: str, at: float) -> None:
        """Note a failed attempt; the next one is due at ``at`` (epoch seconds)."""
        self._update(delivery, "attempts = attempts + 1, error = ?, next_attempt = ?", (error, at))

    def failed(self, delivery: str, *, reason: str) -> None:
        """Give ``delivery`` up: no flow run will be created; ``reason`` says why."""
        self._update(delivery, "state = ?, attempts = attempts + 1, error = ?", (FAILED, reason))

    def _update(self, delivery: str, assignments: str, values: tuple[Any, ...]) -> None:
        stamp = datetime.now(UTC).isoformat()
        with self._lock:
            self._db.execute(f"UPDATE deliveries SET {assignments}, updated_at = ? WHERE delivery = ? AND state = ?",
                             (*values, stamp, delivery, QUEUED))

    def status(self, delivery: str) -> Delivery | None:
        """Return the row of ``delivery``, or None if it was never accepted."""
        with self._lock:
            values = self._db.execute(f"SELECT {_COLUMNS} FROM deliveries WHERE delivery = ?", (delivery,)).fetchone()
        return _row(values) if values else None

    def depth(self) -> int:
        """Return how many accepted events wait for their flow run."""
        return self._count(QUEUED)

    def failures(self) -> int:
        """Return how many accepted events were given up."""
        return self._count(FAILED)

    def _count(self, state: str) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM deliveries WHERE state = ?", (state,)).fetchone()[0])

    def oldest_queued_age(self, *, now: float | None = None) -> float:
        """Return the age in seconds of the oldest queued event (0 when none waits)."""
        with self._lock:
            value = self._db.execute("SELECT MIN(received) FROM deliveries WHERE state = ?", (QUEUED,)).fetchone()[0]
        return max(0.0, (now or time.time()) - float(value)) if value is not None else 0.0

    def next_due(self) -> float | None:
        """Return when the next queued event is due (epoch seconds), or None."""
        with self._lock:
            value = self._db.execute("SELECT MIN(next_attempt) FROM deliveries WHERE state = ?", (QUEUED,)).fetchone()[0]
        return float(value) if value is not None else None

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _sync_directory(directory: Path) -> None:
    # a new file's directory entry is durable only once its directory is synced
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rollback(db: sqlite3.Connection) -> None:
    # SQLite rolls some failures (a full disk) back itself: a second ROLLBACK would hide the cause
    if db.in_transaction:
        db.execute("ROLLBACK")
