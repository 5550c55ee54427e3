"""AFDP's own Prometheus metrics, served on ``/metrics`` (one registry per app, never the
process-global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


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
            "afdp_run_submit_failures_total", "Flow runs that could not be created", ["service"], registry=self.registry
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
            "afdp_intake_duration_seconds", "Time to check an event and create its flow run", ["source"],
            registry=self.registry,
        )
        self.verify_seconds = Histogram(
            "afdp_verify_duration_seconds", "Time to verify one branch", registry=self.registry,
        )
