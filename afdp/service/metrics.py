"""AFDP's own Prometheus metrics, served on ``/metrics`` (one registry per app, never the
process-global one)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from afdp.service.deliveries import DeliveryLedger


class ServiceMetrics:
    """The counters and histograms of one ``afdp serve``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.accepted = Counter(
            "afdp_events_accepted_total", "Deployment events accepted", ["source", "service"], registry=self.registry
        )
        self.rejected = Counter(
            "afdp_events_rejected_total", "Deployment events refused, by reason", ["source", "reason"],
            registry=self.registry,
        )
        self.ignored = Counter(
            "afdp_events_ignored_total", "Well-signed events that start nothing", ["source"], registry=self.registry
        )
        self.submitted = Counter(
            "afdp_runs_submitted_total", "Flow runs created", ["service"], registry=self.registry
        )
        self.submit_failures = Counter(
            "afdp_run_submit_failures_total", "Attempts to create a flow run that failed", ["service"],
            registry=self.registry,
        )
        self.outbox_depth = Gauge(
            "afdp_outbox_depth", "Accepted events waiting for their flow run", registry=self.registry
        )
        self.outbox_oldest = Gauge(
            "afdp_outbox_oldest_age_seconds", "Age of the oldest accepted event still waiting (0 when none)",
            registry=self.registry,
        )
        self.outbox_failed = Gauge(
            "afdp_outbox_failed", "Accepted events given up (no flow run; GET /events/<id> says why)",
            registry=self.registry,
        )
        self.login_failures = Counter(
            "afdp_login_failures_total", "Wrong UI tokens (login form or Bearer header)", registry=self.registry
        )
        self.login_throttled = Counter(
            "afdp_login_throttled_total", "Token attempts refused with 429, by limit", ["limit"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "afdp_decisions_total", "Decisions seen in verified evidence, by kind (counted once per branch)",
            ["service", "decision"], registry=self.registry,
        )
        self.verifications = Counter(
            "afdp_verifications_total", "Branch verifications run by the dashboard, by result", ["result"],
            registry=self.registry,
        )
        self.verification_failures = Counter(
            "afdp_verification_failures_total", "Branches that failed verification", ["service"],
            registry=self.registry,
        )
        self.intake_seconds = Histogram(
            "afdp_intake_duration_seconds", "Time to check an event and queue it (the answer's latency)", ["source"],
            registry=self.registry,
        )
        self.verify_seconds = Histogram(
            "afdp_verify_duration_seconds", "Time to verify one branch", registry=self.registry,
        )

    def watch(self, ledger: DeliveryLedger) -> None:
        """Read the outbox gauges from ``ledger`` at every scrape."""
        self.outbox_depth.set_function(ledger.depth)
        self.outbox_oldest.set_function(ledger.oldest_queued_age)
        self.outbox_failed.set_function(ledger.failures)
