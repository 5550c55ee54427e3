"""How a step's work is executed: inline with retries by default; the Prefect flow (:mod:`afdp.pipeline.flow`) substitutes its own executor so each step is a Prefect task."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from afdp.workflow.model import (
    Step,
)

if TYPE_CHECKING:
    pass
from afdp.pipeline.runner.request import RunCancelled, T


class StepExecutor:
    """Runs the work of each step. This default runs it in the calling thread (and a
    capture's metrics in parallel threads); ``flows/`` subclasses it to run Prefect tasks.
    """

    def context(self) -> dict[str, Any]:
        """Return context recorded in every record (e.g. the Prefect flow run id)."""
        return {"engine": "afdp"}

    def run(self, step: Step, work: Callable[[], T]) -> tuple[T, dict[str, Any]]:
        """Run ``work`` for ``step``; return its value and context for the record.

        Raises whatever ``work`` raises.
        """
        return work(), {}

    def collect(
        self, step: Step, calls: Mapping[str, Callable[[], T]]
    ) -> tuple[dict[str, T | Exception], dict[str, Any]]:
        """Run collector ``calls`` concurrently (one per metric: they share a time window).

        Returns ``({label: value or the Exception it raised}, context)``.
        """
        if not calls:
            return {}, {}
        out: dict[str, T | Exception] = {}
        pool = ThreadPoolExecutor(max_workers=min(8, len(calls)), thread_name_prefix="afdp-collect")
        finished = False
        try:
            futures = {label: pool.submit(self._with_retries, call) for label, call in calls.items()}
            for label, future in futures.items():
                try:
                    out[label] = future.result()
                except Exception as exc:  # recorded as the metric's failure
                    out[label] = exc
            finished = True
        finally:
            # On Ctrl-C do not wait for the collections' windows to end: the run's clock
            # is cancelled by run_workflow, which makes their sleeps return at once.
            pool.shutdown(wait=finished, cancel_futures=not finished)
        retries = {label: self.retries if getattr(call, "history", True) else 0 for label, call in calls.items()}
        return out, ({"collector_retries": retries} if self.retries else {})

    #: Attempts after the first for a failing collection (a source briefly down).
    retries: int = 0
    retry_delay_seconds: float = 1.0

    def _with_retries(self, call: Callable[[], T]) -> T:
        """Return ``call()``, retried ``retries`` times when its source keeps history (a
        live source's window has passed by then: a retry could only add "no history");
        a failure raises the first error."""
        first: Exception | None = None
        retries = self.retries if getattr(call, "history", True) else 0
        for attempt in range(retries + 1):
            try:
                return call()
            except RunCancelled:
                raise
            except Exception as exc:
                first = first or exc
                if attempt < retries:
                    time.sleep(self.retry_delay_seconds)
        assert first is not None
        raise first
