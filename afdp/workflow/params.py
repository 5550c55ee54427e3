"""Step parameters: one frozen dataclass per :class:`~afdp.workflow.catalog.StepKind`
(:class:`Wait`, :class:`Capture`, :class:`Analyze`, ...), and :data:`StepParams`, their union.

Part of the typed workflow (:mod:`afdp.workflow.model`, which re-exports every name).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from afdp.workflow.expressions import Expression
from afdp.workflow.interpolation import Template
from afdp.workflow.parts import Action, Threshold
from afdp.workflow.units import Duration, Quantity

__all__ = [
    "Analyze",
    "BusinessImpact",
    "Capture",
    "CaptureMetadata",
    "Check",
    "Correlate",
    "CrossService",
    "Database",
    "Decide",
    "EnableFeature",
    "Gate",
    "GenerateRecord",
    "MarkDeployment",
    "Predict",
    "Query",
    "Segment",
    "Services",
    "ShiftTraffic",
    "SqlCheck",
    "StepParams",
    "Store",
    "Wait",
    "WaitForSignal",
]


@dataclass(frozen=True)
class Wait:
    """Sleep for ``duration``."""

    duration: Duration


@dataclass(frozen=True)
class WaitForSignal:
    """Wait until ``signal`` arrives; fail the step after ``timeout``."""

    signal: str
    timeout: Duration


@dataclass(frozen=True)
class MarkDeployment:
    """Record the deployment time: the boundary between before and after."""


@dataclass(frozen=True)
class CaptureMetadata:
    """Record these deployment ``fields`` (commit, deployer, changed files, ...)."""

    fields: tuple[str, ...]


@dataclass(frozen=True)
class Capture:
    """Collect ``metrics`` for ``duration`` (one snapshot when None), a sample every ``interval``.

    ``role`` is ``before`` or ``after`` the deployment mark; analyses pair them.
    """

    metrics: tuple[str, ...]
    duration: Duration | None
    interval: Duration | None
    role: Literal["before", "after"]
    #: Per-group capture (after ``segment_users``, of metrics written with
    #: ``${segment.group}``): each metric is captured once per group, in this order.
    groups: tuple[str, ...] = ()
    #: Per-service capture (``services:``): each metric is captured once per listed
    #: service, all in the same window (``${service.name}``, and ``${deployment.service}``
    #: in the metric's query and labels, name the service).
    services: tuple[str, ...] = ()


@dataclass(frozen=True)
class Query:
    """Run ``query`` on the sql ``collector``; repeat every ``interval`` for ``duration``.

    ``alert_threshold`` (``monitor_locks``): flag lock waits longer than this.
    """

    collector: str
    query: Template
    duration: Duration | None = None
    interval: Duration | None = None
    alert_threshold: Duration | None = None
    limit: int | None = None
    #: Run when ``query`` fails (the default's extension is not installed); ``sources``
    #: names what each reads, recorded as ``source``.
    fallback: Template | None = None
    sources: tuple[str, str] | None = None
    probe: Template | None = None
    #: ``record_table_sizes`` read by a later ``verify_data_integrity``: also fingerprint
    #: (exact row count and checksum) these tables, or, with ``("*",)``, every table listed.
    fingerprint: tuple[str, ...] = ()


@dataclass(frozen=True)
class SqlCheck:
    """One integrity check: the first column of the first row must equal ``expect``."""

    name: str
    query: Template
    expect: Any


@dataclass(frozen=True)
class Check:
    """Run integrity ``checks`` on the sql ``collector``."""

    collector: str
    checks: tuple[SqlCheck, ...]


@dataclass(frozen=True)
class Database:
    """A database step of a migration workflow (kind ``database``).

    ``op`` is ``snapshot`` (``snapshot_performance`` with no metrics: the database's own
    statistics), ``compare``/``user_impact`` (``compare_performance`` /
    ``analyze_user_impact`` with no captures: the snapshot ``baseline`` against a fresh
    one), or ``integrity`` (``verify_data_integrity`` with no checks: row counts and
    checksums of ``tables``, or of every table ``source`` fingerprinted, against the
    fingerprints ``source`` took before).
    """

    op: Literal["snapshot", "compare", "user_impact", "integrity"]
    collector: str
    baseline: str | None = None
    source: str | None = None
    tables: tuple[str, ...] = ()
    checks: tuple[SqlCheck, ...] = ()


@dataclass(frozen=True)
class Correlate:
    """The ``correlation:`` section, run as a step after the last one: each named figure
    over the past deployments of the same service whose branches verify."""

    figures: tuple[str, ...]
    minimum: int


@dataclass(frozen=True)
class Services:
    """The ``services:`` section (with ``correlate:``): the services a workflow watches.

    Every metric capture captures each metric once per service in ``names`` in the same
    window, every analysis compares each service with itself, and ``figures`` are
    computed by the step ``correlate_services`` after the last analysis.
    """

    names: tuple[str, ...]
    figures: tuple[str, ...]


@dataclass(frozen=True)
class CrossService:
    """The cross-service correlation step: ``figures`` over the per-service ``analysis``
    (a step name) and its ``impact`` capture's series.

    ``min_samples`` is the fewest paired samples a pairwise correlation needs,
    ``min_segment`` the fewest impact samples after an onset (the change point's later
    segment).
    """

    services: tuple[str, ...]
    figures: tuple[str, ...]
    analysis: str
    impact: str
    min_samples: int
    min_segment: int


@dataclass(frozen=True)
class Segment:
    """The declared split of users into ``groups`` (name, share); shares add up to 100%."""

    groups: tuple[tuple[str, Quantity], ...]


@dataclass(frozen=True)
class EnableFeature:
    """Switch feature ``flag`` on for ``percentage`` of ``group`` (an earlier ``segment``).

    ``provider`` ``flagd``: the flag is written (atomically) into the flagd flag file
    ``file``; ``webhook``: the change is POSTed as JSON to ``url`` (HMAC-signed with
    ``secret``). Enabling the feature marks the deployment when nothing else does.
    """

    flag: str
    group: str
    percentage: Quantity
    segment: str
    provider: Literal["flagd", "webhook"]
    file: Template | None = None
    url: Template | None = None
    secret: Template | None = None
    timeout: Duration | None = None


@dataclass(frozen=True)
class BusinessImpact:
    """The business difference between the groups of the A/B ``analysis`` (a step name):
    ``revenue_metric``'s treatment-minus-control difference with a confidence interval,
    and whether each of ``satisfaction_metrics`` held up."""

    analysis: str
    revenue_metric: str | None
    satisfaction_metrics: tuple[str, ...]
    confidence: float = 0.95


@dataclass(frozen=True)
class Analyze:
    """Compare capture ``baseline`` with capture ``impact`` (step names) over ``metrics``.

    ``thresholds`` (inline and from ``analyzers``) flag movements; ``method`` (None, or
    ``mann_whitney`` / ``welch_t``) tests significance at ``confidence`` when both sides
    have ``min_samples`` samples.
    """

    baseline: str
    impact: str
    metrics: tuple[str, ...]
    thresholds: tuple[Threshold, ...] = ()
    method: str | None = None
    confidence: float = 0.95
    min_samples: int = 5
    analyzers: tuple[str, ...] = ()
    #: Judged by the defaults (no thresholds, no method written): when the test cannot
    #: run, the default tolerance alone decides (not exceeded: not degraded).
    tolerance_decides: bool = False
    #: An A/B comparison: (control, treatment) groups of the ``impact`` capture, compared
    #: in the same window (``baseline`` is then the same capture); None: before vs after.
    groups: tuple[str, str] | None = None
    #: Per service (``services:``): each listed service's baseline against its own impact.
    services: tuple[str, ...] = ()


@dataclass(frozen=True)
class Gate:
    """If ``condition`` holds: decide ``action`` with ``training_label`` and stop the workflow."""

    condition: Expression
    action: Action
    training_label: str
    analysis: str | None = None


@dataclass(frozen=True)
class Decide:
    """Evaluate ``success_criteria`` then ``decisions`` (first match wins) over ``analysis``."""

    decisions: tuple[str, ...]
    analysis: str | None


@dataclass(frozen=True)
class GenerateRecord:
    """Emit a ``record`` (``training``, ``ab_test``, ``lessons_learned``) for the ML dataset."""

    record: str
    training_label: str | None = None


@dataclass(frozen=True)
class Predict:
    """A predictive step of ``before_deployment:`` (``predict_likely_impact``, ...).

    It needs a trained model and the history of past deployments (the learning from
    evidence); until that exists the run records it as skipped with ``reason``.
    """

    prediction: str
    reason: str
    #: For the step of an ``ml_predictor`` analyzer (``predict_<analyzer>``): the
    #: analyzer's name, its ``model:`` and ``output:`` names, and its ``features:`` as
    #: (the guide's name, the learning feature it reads) pairs.
    analyzer: str | None = None
    model: str | None = None
    output: str | None = None
    features: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Store:
    """Where the run's results go: the evidence branch always, plus optional exports.

    ``results``: a file name (relative, under the run's results directory) the JSON
    results document is written to; ``url``: where the same document is POSTed (with an
    HMAC ``secret`` when given). Neither: the evidence branch only.
    """

    results: str | None = None
    url: Template | None = None
    secret: Template | None = None
    timeout: Duration | None = None


@dataclass(frozen=True)
class ShiftTraffic:
    """Send ``traffic`` (a share, 0..1) of the deployment's traffic to the new version for
    ``stage``, through the workflow's ``traffic_split`` action (an HMAC-signed webhook or
    a command)."""

    traffic: Quantity
    stage: str


StepParams = (
    Wait
    | WaitForSignal
    | MarkDeployment
    | CaptureMetadata
    | Capture
    | Query
    | Check
    | Segment
    | EnableFeature
    | Database
    | Correlate
    | CrossService
    | Analyze
    | BusinessImpact
    | Gate
    | Decide
    | GenerateRecord
    | Predict
    | Store
    | ShiftTraffic
)
