"""The intake's outbox relay: queued events become Prefect flow runs, in the background.

The intake answers 202 as soon as an event is committed to the delivery ledger
(:meth:`afdp.service.deliveries.DeliveryLedger.accept`); a :class:`Relay` thread, started
with the application and stopped with it, then creates each queued event's flow run
through the :class:`~afdp.service.submit.RunSubmitter` and records the run id against the
delivery. At start-up it resumes whatever an earlier process left queued.

- A transient failure (the Prefect API unreachable, refusing, timing out) is tried again
  after an exponential back-off (``first_retry`` doubling up to ``max_retry``, with
  jitter), for ``give_up_after`` seconds from acceptance; then the delivery is
  ``failed`` with the last error.
- A permanent failure (no such Prefect deployment, a service no longer in the services
  file) fails the delivery at once, with the reason.
- Exactly once: the flow run's idempotency key is ``service/deployment``
  (:func:`afdp.service.submit.idempotency_key`), so a submission repeated after a crash
  between "Prefect created the run" and "the ledger recorded it" returns the same run.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import datetime

from afdp.errors import AfdpError, UsageError
from afdp.evidence.remote import redact
from afdp.service.config import Services
from afdp.service.deliveries import Delivery, DeliveryLedger
from afdp.service.intake import DeploymentEvent
from afdp.service.metrics import ServiceMetrics
from afdp.service.submit import RunSubmitter

log = logging.getLogger("afdp.serve")

#: First wait after a failed submission (seconds); it doubles on each further failure.
FIRST_RETRY = 1.0
#: Longest wait between two attempts (seconds).
MAX_RETRY = 300.0
#: An event still not submitted this long after it was accepted is given up (seconds).
GIVE_UP_AFTER = 24 * 3600.0
#: How long a relay holds a queued event it is submitting (another process sharing the
#: ledger does not take it meanwhile; a crashed holder's lease ends at the next start-up).
LEASE = 300.0
#: Longest sleep between two looks at the ledger (other processes may queue events).
POLL = 5.0


class Relay:
    """Drains the ledger's queue into flow runs on one background thread."""

    def __init__(self, ledger: DeliveryLedger, submitter: RunSubmitter, services: Services,
                 metrics: ServiceMetrics, *, first_retry: float = FIRST_RETRY, max_retry: float = MAX_RETRY,
                 give_up_after: float = GIVE_UP_AFTER) -> None:
        self.ledger = ledger
        self.submitter = submitter
        self.services = services
        self.metrics = metrics
        self.first_retry = first_retry
        self.max_retry = max_retry
        self.give_up_after = give_up_after
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Resume what is queued and start the background thread."""
        left = self.ledger.resume(now=time.time())
        if left:
            log.warning("afdp serve: resuming %d queued event(s) from %s", left, self.ledger.path)
        self._thread = threading.Thread(target=self._loop, name="afdp-outbox", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look at the queue now (an event was just accepted)."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (a submission in flight is finished or, if it outlasts
        ``timeout``, left queued for the next start)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                worked = self.run_once()
            except Exception as exc:  # the ledger briefly unwritable: the next pass tries again
                log.warning("afdp serve: the outbox relay could not read its ledger: %s", exc)
                worked = 0
            if worked or self._stop.is_set():
                continue
            due = self.ledger.next_due()
            wait = POLL if due is None else min(POLL, max(0.0, due - time.time()))
            self._wake.wait(wait)

    def run_once(self) -> int:
        """Submit every queued event that is due; return how many were tried."""
        rows = self.ledger.take(now=time.time(), lease=LEASE)
        for row in rows:
            if self._stop.is_set():
                break  # its lease ends at the next start-up
            self._submit(row)
        return len(rows)

    def _submit(self, row: Delivery) -> None:
        try:
            event = DeploymentEvent.from_json(row.event or {}, self.services)
            run_id = self.submitter.submit(event)
        except UsageError as exc:  # no such Prefect deployment, service gone: waiting will not help
            self.metrics.submit_failures.labels(service=row.service).inc()
            reason = redact(exc.diagnostics())
            log.warning("afdp serve: delivery %s failed: %s", row.delivery, reason)
            self.ledger.failed(row.delivery, reason=reason)
            return
        except Exception as exc:
            self.metrics.submit_failures.labels(service=row.service).inc()
            error = exc.diagnostics() if isinstance(exc, AfdpError) else f"{type(exc).__name__}: {exc}"
            # credentials in PREFECT_API_URL show in httpx's errors ("for url 'http://u:pw@...'"):
            # what is kept in the ledger, shown by GET /events/<id> and logged never holds them
            self._later(row, redact(error))
            return
        self.ledger.submitted(row.delivery, run_id)
        self.metrics.submitted.labels(service=row.service).inc()

    def _later(self, row: Delivery, error: str) -> None:
        now = time.time()
        age = now - datetime.fromisoformat(row.received_at).timestamp()
        if age >= self.give_up_after:
            reason = f"gave up after {row.attempts + 1} attempt(s) in {age:.0f} s: {error}"
            log.warning("afdp serve: delivery %s failed: %s", row.delivery, reason)
            self.ledger.failed(row.delivery, reason=reason)
            return
        delay = min(self.first_retry * 2 ** min(row.attempts, 30), self.max_retry) * random.uniform(0.8, 1.2)  # noqa: S311
        log.warning("afdp serve: delivery %s not submitted yet (attempt %d), next in %.0f s: %s",
                    row.delivery, row.attempts + 1, delay, error)
        self.ledger.retry(row.delivery, error=error, at=now + delay)
