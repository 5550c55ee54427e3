"""The parts a workflow declares besides its steps: collectors, metrics, thresholds,
analyzers, decisions, actions, notification channels, stages and variables, and the
:class:`Location` each was written at.

Part of the typed workflow (:mod:`afdp.workflow.model`, which re-exports every name).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from afdp.workflow.expressions import Expression
from afdp.workflow.interpolation import Template
from afdp.workflow.logic import Program
from afdp.workflow.units import Duration, Quantity, Unit

__all__ = [
    "Action",
    "ActionSpec",
    "Analyzer",
    "Better",
    "Collector",
    "CollectorType",
    "Decision",
    "Location",
    "Metric",
    "NotificationChannel",
    "Stage",
    "Threshold",
    "Variable",
]

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
