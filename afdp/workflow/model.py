"""The typed, validated, immutable workflow that the flows execute.

A :class:`Workflow` is only ever built by :func:`afdp.workflow.compiler.compile_document`
from a document that passed every check, so code that receives one can rely on it:
step names are unique and safe for Git paths, every ``${...}`` and condition refers to
something that exists at that point, every metric has a collector, every analysis has
a baseline and an impact capture, durations and thresholds are typed.

Step parameters are one dataclass per :class:`~afdp.workflow.catalog.StepKind`
(:class:`Wait`, :class:`Capture`, :class:`Analyze`, ...): the flows dispatch on
``step.kind`` and read ``step.params``. Strings that may contain ``${...}`` are
:class:`~afdp.workflow.interpolation.Template` objects; render them with
:meth:`Workflow.values` at run time. ``${env.*}`` renders to a redacted
:class:`~afdp.workflow.interpolation.Secret`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from afdp.workflow.catalog import StepKind
from afdp.workflow.expressions import Expression
from afdp.workflow.findings import Finding
from afdp.workflow.interpolation import Template, UnresolvedError
from afdp.workflow.logic import Program
from afdp.workflow.units import Duration, Quantity, Unit

CollectorType = Literal["prometheus", "scrape", "sql", "rest"]  # (``type: pull`` is prometheus)
Action = Literal["rollback", "alert", "mark_successful", "traffic_split"]
Better = Literal["lower", "higher", "none"]


@dataclass(frozen=True)
class Location:
    """Where something was written: file, 1-based line and column, document path."""

    file: str
    line: int
    column: int
    path: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


# --- collectors, metrics, analyzers ---------------------------------------------------


@dataclass(frozen=True)
class Collector:
    """Where samples come from.

    - ``prometheus``: ``url`` of the Prometheus HTTP API; range queries use ``step``.
    - ``scrape``: ``url`` of a ``/metrics`` endpoint, read every ``interval``.
    - ``sql``: ``url`` is a SQLAlchemy URL (usually ``${env.DATABASE_URL}``).
    - ``rest``: ``url`` answered with JSON; ``method``, ``headers`` and ``body`` are sent,
      metrics pick a field with ``select``.

    ``builtin`` is True for the default ``prometheus`` collector (not in the document).
    ``url_key`` is the key the address was written under (``url``, ``endpoint``, or
    ``connection`` for sql). ``default_query`` is the text of a prometheus collector's
    ``query_template`` or a sql collector's ``query`` (``default_query_key`` says which):
    the query of every metric reading from it that gives none, with ``${metric.name}``
    replaced by the metric's name.
    """

    name: str
    type: CollectorType
    url: Template
    headers: tuple[tuple[str, Template], ...] = ()
    method: str = "GET"
    body: Template | None = None
    step: Duration | None = None
    interval: Duration | None = None
    timeout: Duration | None = None
    builtin: bool = False
    location: Location | None = None
    url_key: str = "url"
    default_query: str | None = None
    default_query_key: str | None = None


@dataclass(frozen=True)
class Metric:
    """A named measurement and how to collect it.

    ``query`` (prometheus, sql), ``metric`` plus ``labels`` and ``aggregate`` (scrape)
    or ``select`` (rest) say what to read from ``collector``. ``unit`` is the unit of the
    collected number; ``better`` says which direction is an improvement. ``column``
    (sql, a query taken from the collector) is the result column read when the row has
    one of that name (else the first column).
    """

    name: str
    collector: str
    unit: Unit
    better: Better = "lower"
    query: Template | None = None
    metric: str | None = None
    labels: tuple[tuple[str, Template], ...] = ()
    aggregate: str | None = None
    select: str | None = None
    builtin: bool = False
    column: str | None = None


@dataclass(frozen=True)
class Threshold:
    """A limit on how much a metric may move between baseline and impact.

    ``direction`` is ``increase``, ``decrease`` or ``change`` (either way). ``mode``:

    - ``absolute``: the difference, in the metric's unit (``10ms`` on a latency);
    - ``relative``: the difference as a fraction of the baseline (``10%`` on a latency);
    - ``factor``: impact divided by baseline (``2x``).

    ``key`` is how it was written (``response_time_increase``); one key may expand to
    several metrics (``response_time`` covers ``response_time_p50`` and ``_p99``).
    """

    metric: str
    direction: Literal["increase", "decrease", "change"]
    limit: Quantity
    mode: Literal["absolute", "relative", "factor"]
    key: str


@dataclass(frozen=True)
class Analyzer:
    """A reusable analysis: thresholds, a statistical test (``mann_whitney`` / ``welch_t``),
    a ``logic`` program over the baseline and current captures (``type: logic``), a
    business impact in money per hour (``type: business_impact``, ``correlate``), or an
    ML predictor (``type: ml_predictor``: run as its own step ``predict_<name>`` from the
    verified history, never inside the analysis).
    """

    name: str
    type: Literal["threshold", "statistical", "logic", "business_impact", "ml_predictor"]
    thresholds: tuple[Threshold, ...] = ()
    method: str | None = None
    confidence: float = 0.95
    min_samples: int = 5
    metrics: tuple[str, ...] = ()
    #: ``logic``: the inputs it names (``baseline``, ``current``) and the parsed program.
    inputs: tuple[str, ...] = ()
    logic: Program | None = None
    #: ``business_impact``: the groups to correlate; ``output``: the name of the result.
    correlate: tuple[str, ...] = ()
    output: str | None = None
    #: ``ml_predictor``: the model and its features (run as the step ``predict_<name>``).
    model: str | None = None
    features: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    """If ``condition`` holds at the decisions step: take ``action`` and label the record."""

    name: str
    condition: Expression
    action: Action
    training_label: str
    notify: tuple[str, ...] = ()
    severity: str | None = None


@dataclass(frozen=True)
class ActionSpec:
    """How a decided ``action`` (rollback, alert, mark_successful) is carried out.

    Exactly one of ``command`` and ``webhook`` is set:

    - ``command``: an argv list of templates, run without a shell, killed after ``timeout``;
    - ``webhook``: an http(s) URL template; the decision is POSTed to it as JSON, signed
      with HMAC-SHA256 under ``secret`` (always a ``${env.*}`` template, so it renders to
      a :class:`~afdp.workflow.interpolation.Secret`) when one is given.

    An action the workflow does not configure is recorded as ``not_configured``.
    """

    action: Action
    command: tuple[Template, ...] | None
    webhook: Template | None
    secret: Template | None
    timeout: Duration
    location: Location | None = None


@dataclass(frozen=True)
class NotificationChannel:
    """A channel a decision's ``notify:`` names (top-level ``notifications:``).

    ``type``: ``webhook`` (the decision POSTed as JSON, HMAC-signed under ``secret``),
    ``slack`` (a Slack-compatible incoming webhook: ``{"text": ...}``) or ``email``
    (SMTP to ``host``:``port`` from ``sender`` to ``recipients``, with ``starttls`` and
    ``username``/``password`` from ``${env.*}``). ``url`` is the webhook/Slack URL, or
    ``smtp://host:port`` for email (what the admission policy judges). ``origin`` is
    ``workflow`` (its ``notifications:``) or ``policy`` (the admission policy's
    ``notification_channels:``, given to every workflow it admits).
    """

    name: str
    type: str
    url: Template
    timeout: Duration
    secret: Template | None = None
    host: str | None = None
    port: int | None = None
    sender: str | None = None
    recipients: tuple[str, ...] = ()
    starttls: bool = False
    username: Template | None = None
    password: Template | None = None
    location: Location | None = None
    origin: Literal["workflow", "policy"] = "workflow"


@dataclass(frozen=True)
class Stage:
    """One rollout stage (canary, partial, full): expanded into steps of its own phase.

    The stage waits for ``signal`` (sent when ``traffic`` is shifted), captures impact for
    ``window``, analyzes it against the baseline and, if ``abort_on`` holds, decides
    ``rollback`` and stops. ``rollback_available`` is recorded, not enforced.
    """

    name: str
    traffic: Quantity
    window: Duration
    signal: str
    abort_on: Expression | None = None
    rollback_available: Duration | None = None
    thresholds: tuple[Threshold, ...] = ()


@dataclass(frozen=True)
class Variable:
    """A ``${workflow.NAME}`` variable and its default (a template, or a number/bool)."""

    name: str
    default: Template | int | float | bool | None


# --- step parameters, one class per kind ----------------------------------------------


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


@dataclass(frozen=True)
class Step:
    """One step, in execution order.

    ``name`` is unique in the workflow (default: the type, then ``type_2``, ``type_3``);
    ``index`` is its 0-based position among all steps; ``kind`` says what to do and
    ``params`` how. The step is skipped when ``when`` is false or ``unless`` is true.
    """

    name: str
    type: str
    kind: StepKind
    index: int
    phase: str
    params: StepParams
    when: Expression | None = None
    unless: Expression | None = None
    description: str = ""
    stage: str | None = None
    location: Location | None = None

    def max_duration(self) -> Duration:
        """Return how long the step may take at most (waits, windows, signal timeouts)."""
        params = self.params
        if isinstance(params, Wait):
            return params.duration
        if isinstance(params, WaitForSignal):
            return params.timeout
        if isinstance(params, (Capture, Query)) and params.duration is not None:
            return params.duration
        return Duration(0, "0s")


@dataclass(frozen=True)
class Phase:
    """A named group of steps (``pre_deployment``, ``deployment``, a stage, ...)."""

    name: str
    steps: tuple[Step, ...]
    stage: Stage | None = None


@dataclass(frozen=True)
class Workflow:
    """A validated workflow definition.

    ``digest`` is the SHA-256 of the RFC 8785 canonical JSON of ``document`` (the
    parsed file): what evidence records cite as ``workflow.sha256``.
    """

    name: str
    version: str
    description: str
    triggers: tuple[str, ...]
    phases: tuple[Phase, ...]
    collectors: tuple[Collector, ...]
    metrics: tuple[Metric, ...]
    analyzers: tuple[Analyzer, ...]
    decisions: tuple[Decision, ...]
    success_criteria: tuple[Expression, ...]
    outputs: tuple[str, ...]
    variables: tuple[Variable, ...]
    stages: tuple[Stage, ...]
    digest: str
    source: str
    actions: tuple[ActionSpec, ...] = ()
    notifications: tuple[NotificationChannel, ...] = ()
    document: Any = field(default=None, compare=False, hash=False, repr=False)
    #: Warnings and notes for the author (``afdp validate`` prints them): how AFDP read
    #: what the file leaves open, and constructs that would give a meaningless verdict.
    notes: tuple[Finding, ...] = field(default=(), compare=False, hash=False)
    #: Index of the step that marks the deployment (mark_deployment_time, or without one
    #: a ``wait_for_signal: deployment...``); None when nothing marks it.
    boundary: int | None = field(default=None, compare=False, hash=False)
    #: The admission policy that admitted this workflow and the ``${workflow.*}`` values
    #: it was admitted with (set by ``AdmissionPolicy.admit``); None: never admitted.
    #: A run with other values is admitted again with them before anything runs.
    admission: Any = field(default=None, compare=False, hash=False, repr=False)
    #: The ``integrity:`` entries the workflow lists (each always on; validate says how).
    integrity: tuple[str, ...] = ()
    #: Business context metrics (``context:``): captured with every baseline and impact
    #: capture, shown in analyses and reports, judged only when a criterion names them.
    context: tuple[str, ...] = ()
    #: The services a cross-service workflow watches (``services:`` + ``correlate:``).
    services: Services | None = None
    #: The workflow file's bytes exactly as read (None: compiled from text, not a file);
    #: a run stores them in its genesis record (``workflow.yaml``).
    source_bytes: bytes | None = field(default=None, compare=False, hash=False, repr=False)

    @property
    def steps(self) -> tuple[Step, ...]:
        """Return every step, in execution order."""
        return tuple(step for phase in self.phases for step in phase.steps)

    def step(self, name: str) -> Step:
        """Return the step called ``name``.

        Raises:
            KeyError: no such step.
        """
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    def collector(self, name: str) -> Collector:
        """Return the collector called ``name`` (declared or built in).

        Raises:
            KeyError: no such collector.
        """
        for collector in self.collectors:
            if collector.name == name:
                return collector
        raise KeyError(name)

    def metric(self, name: str) -> Metric:
        """Return the metric called ``name`` (declared or built in).

        Raises:
            KeyError: no such metric.
        """
        for metric in self.metrics:
            if metric.name == name:
                return metric
        raise KeyError(name)

    def action(self, name: str) -> ActionSpec | None:
        """Return how action ``name`` (rollback, alert, mark_successful) is carried out.

        Returns:
            The :class:`ActionSpec`, or None when the workflow does not configure it.
        """
        for spec in self.actions:
            if spec.action == name:
                return spec
        return None

    def channel(self, name: str) -> NotificationChannel | None:
        """Return the notification channel ``name`` (None when not configured)."""
        for channel in self.notifications:
            if channel.name == name:
                return channel
        return None

    def unjudged_context(self) -> frozenset[str]:
        """Return the ``context:`` metrics no success criterion, decision, gate or
        threshold names: analyses show them but do not judge them."""
        conditions = [*self.success_criteria, *(d.condition for d in self.decisions)]
        named: set[str] = set()
        for step in self.steps:
            if isinstance(step.params, Gate):
                conditions.append(step.params.condition)
            if isinstance(step.params, Analyze):
                named.update(
                    t.metric for t in step.params.thresholds if not t.key.startswith("default_")
                )
        for expression in conditions:
            for ref in expression.refs:
                parts = ref.parts
                named.update(str(p) for p in parts[:1])
                if parts and parts[0] == "steps" and len(parts) > 2:
                    named.add(str(parts[2]))
        return frozenset(self.context) - named

    def max_duration(self) -> Duration:
        """Return the longest the workflow can run: waits, capture windows, signal timeouts."""
        total = sum(step.max_duration().milliseconds for step in self.steps)
        return Duration(total)

    def variable_values(
        self,
        overrides: Mapping[str, Any] | None = None,
        *,
        deployment: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Return ``${workflow.*}`` values: defaults rendered in dependency order, then ``overrides``.

        ``overrides`` (from ``--set workflow.NAME=...``) are taken literally, never
        interpolated. Defaults may use ``${deployment.*}`` from ``deployment``; a default
        that refers to an unknown value keeps that ``${...}`` unresolved.
        """
        from afdp.workflow.interpolation import variable_order

        given = dict(overrides or {})
        defaults = {v.name: v.default for v in self.variables}
        refs = {
            name: tuple(p.parts[1] for p in value.placeholders if p.parts[0] == "workflow")
            if isinstance(value, Template)
            else ()
            for name, value in defaults.items()
        }
        values: dict[str, Any] = {}
        for name in variable_order(refs):
            if name in given:
                values[name] = given[name]
                continue
            default = defaults[name]
            if isinstance(default, Template):
                rendered = default.render(
                    {"workflow": values, "deployment": dict(deployment or {})}, keep_missing=True
                )
                values[name] = str(rendered)
            elif default is not None:
                values[name] = default
        for name, value in given.items():
            values.setdefault(name, value)
        return values

    def values(
        self,
        *,
        deployment: Mapping[str, Any] | None = None,
        overrides: Mapping[str, Any] | None = None,
        steps: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Return the namespaces ``deployment``, ``workflow`` and ``steps`` for rendering.

        Pass the result to :meth:`Template.render` (with ``env=os.environ`` where a
        request is sent) or to :meth:`Expression.evaluate`.
        """
        return {
            "deployment": dict(deployment or {}),
            "workflow": self.variable_values(overrides, deployment=deployment),
            "steps": dict(steps or {}),
        }


__all__ = [
    "ActionSpec",
    "Analyze",
    "Analyzer",
    "Capture",
    "CaptureMetadata",
    "Check",
    "Collector",
    "CrossService",
    "Decide",
    "Decision",
    "Gate",
    "GenerateRecord",
    "Location",
    "MarkDeployment",
    "Metric",
    "Phase",
    "Query",
    "Segment",
    "Services",
    "SqlCheck",
    "Stage",
    "Step",
    "StepKind",
    "StepParams",
    "Threshold",
    "UnresolvedError",
    "Variable",
    "Wait",
    "WaitForSignal",
    "Workflow",
]
