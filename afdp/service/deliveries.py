"""The replay ledger: every delivery id and every deployment the intake has started.

A SQLite file (``<git dir>/afdp-serve/intake.sqlite`` by default, beside the run locks and
never in the evidence) with two unique keys: the delivery id (``X-GitHub-Delivery`` or
the generic event's ``event_id``) and the AFDP deployment (service and id). A delivery
is *claimed* before its flow run is created and *released* if that fails, so a
redelivery after an outage is accepted and a second copy of the same event, or another
event for a deployment already started, is refused (409). Several ``afdp serve``
processes may share the file (SQLite's own locking).
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

from afdp.errors import StorageError

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


class Replay(Exception):
    """The delivery, or the deployment, was already accepted."""


class DeliveryLedger:
    """Claims delivery ids and deployments, once each."""

    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open the intake's replay ledger {path}: {exc}") from exc
        self._lock = threading.Lock()
        self.path = path

    def claim(self, delivery: str, service: str, deployment: str) -> None:
        """Record ``delivery`` for ``service``/``deployment``.

        Raises:
            Replay: the delivery id, or the deployment, is already recorded.
        """
        now = datetime.now(UTC).isoformat()
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO deliveries (delivery, service, deployment, received_at) VALUES (?, ?, ?, ?)",
                    (delivery, service, deployment, now),
                )
            except sqlite3.IntegrityError:
                row = self._db.execute(
                    "SELECT delivery, service, deployment FROM deliveries WHERE delivery = ? "
                    "OR (service = ? AND deployment = ?)",
                    (delivery, service, deployment),
                ).fetchone()
                if row and row[0] == delivery:
                    raise Replay(f"delivery {delivery} was already received") from None
                raise Replay(f"deployment {service}/{deployment} was already started") from None

    def started(self, delivery: str, flow_run: str) -> None:
        """Note the flow run created for ``delivery``."""
        with self._lock:
            self._db.execute("UPDATE deliveries SET flow_run = ? WHERE delivery = ?", (flow_run, delivery))

    def release(self, delivery: str) -> None:
        """Forget ``delivery`` (its flow run could not be created)."""
        with self._lock:
            self._db.execute("DELETE FROM deliveries WHERE delivery = ? AND flow_run IS NULL", (delivery,))

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
