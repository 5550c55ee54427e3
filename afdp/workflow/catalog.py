"""What the workflow language knows: step types, their kinds and outputs, and built-in defaults.

The JSON Schema (``evidence-schema/workflow.v1.schema.json``) fixes the *structure* of
each step's parameters; this module fixes their *meaning*: which kind of work a step
type does (what the flows dispatch on), which parameter a shorthand fills
(``- wait: 2m`` fills ``duration``), what a step outputs for ``${steps.<name>.<field>}``
and conditions, and the built-in metric catalog that lets ``metrics: [error_rate]``
work without declaring anything. A test keeps the two in step.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from afdp.workflow.expressions import ANY, BOOL, LIST, STRING


class StepKind(enum.Enum):
    """What a step does; the flows dispatch on this, not on the type name."""

    WAIT = "wait"  # sleep for a duration
    SIGNAL = "signal"  # wait for a named external signal, with a timeout
    MARK = "mark"  # record the deployment time (the before/after boundary)
    METADATA = "metadata"  # record deployment metadata (commit, deployer, changed files)
    CAPTURE = "capture"  # collect metric samples over a window (or one snapshot)
    QUERY = "query"  # run a SQL query (optionally repeatedly) and record the rows
    CHECK = "check"  # run SQL checks and record which passed
    SEGMENT = "segment"  # record a declared user segmentation (the flag system splits)
    ANALYZE = "analyze"  # compare two captures: thresholds and statistical tests
    GATE = "gate"  # evaluate one condition; if true, decide (rollback) and stop
    DECIDE = "decide"  # evaluate success criteria and the workflow's decisions
    RECORD = "record"  # emit an ML training record (or A/B or lessons-learned record)
    PREDICT = "predict"  # a before_deployment prediction (recorded as skipped: no model yet)


#: The one table of which module runs each step kind: ``module:function`` under
#: :mod:`afdp.pipeline.runner.steps` (one module per step family). The workflow language
#: may not import the pipeline, so the table names the handler and the runner resolves it
#: (``afdp.pipeline.runner.run.handler_for``); a test checks every kind resolves. To add
#: a step kind: a member above, its :class:`StepType` entries below, a handler function
#: ``(run, step, values) -> StepResult`` in a steps module, and its line here.
STEP_HANDLERS: dict[StepKind, str] = {
    StepKind.WAIT: "timing:handle_wait",
    StepKind.SIGNAL: "timing:handle_signal",
    StepKind.MARK: "timing:handle_mark",
    StepKind.METADATA: "timing:handle_metadata",
    StepKind.CAPTURE: "capture:handle_capture",
    StepKind.QUERY: "sql:handle_query",
    StepKind.CHECK: "sql:handle_check",
    StepKind.SEGMENT: "judge:handle_segment",
    StepKind.ANALYZE: "judge:handle_analyze",
    StepKind.GATE: "judge:handle_gate",
    StepKind.DECIDE: "judge:handle_decide",
    StepKind.RECORD: "record:handle_record",
    StepKind.PREDICT: "predict:handle_predict",
}

#: The predictive steps of ``before_deployment:`` and what each would do; they need a
#: trained model and past deployments' evidence, so the run records them as skipped.
PREDICTIONS: Mapping[str, str] = {
    "analyze_similar_past_deployments": "find past deployments of this service like this one in the evidence",
    "predict_likely_impact": "predict this deployment's impact from a model trained on past evidence",
    "recommend_deployment_window": "recommend when to deploy from past deployments' outcomes by hour",
    "suggest_rollback_threshold": "suggest rollback thresholds from past deployments' metric movements",
}
PREDICTION_SKIPPED = "needs a trained model / history (learning from evidence); not run"


@dataclass(frozen=True)
class StepType:
    """One step type: its kind and how its parameters may be written.

    ``scalar`` names the parameter a scalar shorthand fills (``- wait: 2m``), ``listing``
    the one a list shorthand fills (``- capture_baseline: [error_rate]``). ``required``
    parameters forbid the bare form (``- wait`` alone). ``role`` places a capture before
    or after the deployment for analyses; ``record`` names the record a RECORD step emits;
    ``query`` is the default SQL (PostgreSQL) of a QUERY step.
    """

    name: str
    kind: StepKind
    summary: str
    scalar: str | None = None
    listing: str | None = None
    required: tuple[str, ...] = ()
    role: str | None = None
    record: str | None = None
    query: str | None = None


_TYPES = (
    StepType(
        "wait", StepKind.WAIT, "wait for a duration", scalar="duration", required=("duration",)
    ),
    StepType(
        "wait_for_signal",
        StepKind.SIGNAL,
        "wait for a named signal",
        scalar="signal",
        required=("signal",),
    ),
    StepType(
        "wait_for",
        StepKind.SIGNAL,
        "wait for a named signal (same as wait_for_signal)",
        scalar="signal",
        required=("signal",),
    ),
    StepType("mark_deployment_time", StepKind.MARK, "record the deployment time"),
    StepType(
        "capture_deployment_metadata",
        StepKind.METADATA,
        "record commit, deployer, changed files",
        listing="fields",
    ),
    StepType(
        "capture_baseline",
        StepKind.CAPTURE,
        "capture metrics before the deployment",
        listing="metrics",
        role="before",
    ),
    StepType(
        "capture_impact",
        StepKind.CAPTURE,
        "capture metrics after the deployment",
        listing="metrics",
        role="after",
    ),
    StepType("capture", StepKind.CAPTURE, "capture metrics", scalar="metrics", listing="metrics"),
    StepType(
        "snapshot_performance", StepKind.CAPTURE, "capture a snapshot of metrics", listing="metrics"
    ),
    StepType(
        "capture_baseline_behavior",
        StepKind.CAPTURE,
        "capture metrics before a rollout",
        listing="metrics",
        role="before",
    ),
    StepType(
        "monitor_continuously",
        StepKind.CAPTURE,
        "sample metrics at an interval for a duration",
        listing="metrics",
        required=("interval", "duration"),
        role="after",
    ),
    StepType(
        "record_table_sizes",
        StepKind.QUERY,
        "record table sizes and row counts",
        scalar="collector",
        query=(
            "SELECT relname AS table_name, pg_total_relation_size(relid) AS total_bytes, "
            "n_live_tup AS live_rows FROM pg_stat_user_tables ORDER BY total_bytes DESC LIMIT 100"
        ),
    ),
    StepType(
        "capture_query_patterns",
        StepKind.QUERY,
        "record the most expensive query patterns (pg_stat_statements)",
        scalar="collector",
        query=(
            "SELECT queryid, calls, total_exec_time, mean_exec_time, rows FROM pg_stat_statements "
            "ORDER BY total_exec_time DESC LIMIT 20"
        ),
    ),
    StepType(
        "track_blocked_queries",
        StepKind.QUERY,
        "count queries waiting on locks",
        scalar="collector",
        query="SELECT count(*) AS blocked_queries FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
    ),
    StepType(
        "measure_replication_lag",
        StepKind.QUERY,
        "measure replica replay lag",
        scalar="collector",
        query=(
            "SELECT COALESCE(EXTRACT(EPOCH FROM max(replay_lag)), 0) AS replication_lag_seconds "
            "FROM pg_stat_replication"
        ),
    ),
    StepType(
        "monitor_locks",
        StepKind.QUERY,
        "watch lock waits, flag waits longer than alert_threshold",
        scalar="collector",
        query=(
            "SELECT COALESCE(EXTRACT(EPOCH FROM max(now() - query_start)), 0) AS longest_lock_wait_seconds, "
            "count(*) AS waiting_queries FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        ),
    ),
    StepType(
        "verify_data_integrity", StepKind.CHECK, "run SQL integrity checks", required=("checks",)
    ),
    StepType("segment_users", StepKind.SEGMENT, "record the declared user segments"),
    StepType("analyze_differences", StepKind.ANALYZE, "compare baseline and impact"),
    StepType("compare", StepKind.ANALYZE, "compare two captures", scalar="pairing"),
    StepType("compare_performance", StepKind.ANALYZE, "compare two performance snapshots"),
    StepType(
        "analyze_user_impact", StepKind.ANALYZE, "compare user-facing metrics", listing="metrics"
    ),
    StepType(
        "statistical_comparison",
        StepKind.ANALYZE,
        "statistical test of baseline vs impact",
        required=("method",),
    ),
    StepType(
        "gate",
        StepKind.GATE,
        "stop with a decision when a condition holds",
        required=("condition",),
    ),
    StepType("decisions", StepKind.DECIDE, "evaluate success criteria and decisions"),
    StepType(
        "generate_training_record",
        StepKind.RECORD,
        "emit the ML training record",
        record="training",
    ),
    StepType(
        "generate_ab_test_record", StepKind.RECORD, "emit an A/B test record", record="ab_test"
    ),
    StepType(
        "generate_lessons_learned",
        StepKind.RECORD,
        "emit a lessons-learned record",
        record="lessons_learned",
    ),
    # The guide's predictive steps (usually under before_deployment:): recorded as
    # skipped until models are trained from evidence (PREDICTIONS says what each would do).
    StepType("analyze_similar_past_deployments", StepKind.PREDICT, "find similar past deployments (needs history; skipped)"),
    StepType("predict_likely_impact", StepKind.PREDICT, "predict the impact (needs a trained model; skipped)"),
    StepType("recommend_deployment_window", StepKind.PREDICT, "recommend a deployment window (needs history; skipped)"),
    StepType("suggest_rollback_threshold", StepKind.PREDICT, "suggest rollback thresholds (needs history; skipped)"),
)

STEP_TYPES: Mapping[str, StepType] = {t.name: t for t in _TYPES}

# Fields ``capture_deployment_metadata`` can record (all of them when none are listed).
METADATA_FIELDS: Mapping[str, str] = {
    "git_commit": STRING,
    "git_branch": STRING,
    "commit_message": STRING,
    "deployer_id": STRING,
    "deployment_size": "number",
    "changed_files": LIST,
    "service_version": STRING,
}

# ``${deployment.<field>}``: what the flow knows about the deployment before any step.
DEPLOYMENT_FIELDS: Mapping[str, str] = {
    "service": STRING,
    "id": STRING,
    "environment": STRING,
    "version": STRING,
    "commit": STRING,
    "deployer": STRING,
    "repository": STRING,
}

TRIGGERS = ("deployment_completed", "deployment_started", "manual_trigger")
OUTPUTS = (
    "impact_analysis_report",
    "ml_training_record",
    "notarized_evidence_package",
    "ab_test_record",
    "lessons_learned",
)
ACTIONS = ("rollback", "alert", "mark_successful")
# The seed documents' spellings of the same actions.
ACTION_ALIASES: Mapping[str, str] = {"trigger_rollback": "rollback", "send_alert": "alert"}
DEFAULT_LABELS: Mapping[str, str] = {
    "rollback": "rollback",
    "alert": "degraded",
    "mark_successful": "safe_deployment",
}
METHODS = ("mann_whitney", "welch_t")
# ``t_test`` (the seed's word) means Welch's t-test: it does not assume equal variances,
# which before/after production samples rarely have.
METHOD_ALIASES: Mapping[str, str] = {"t_test": "welch_t"}

DEFAULT_SIGNAL_TIMEOUT = "30_minutes"
DEFAULT_CONFIDENCE = 0.95
DEFAULT_MIN_SAMPLES = 5
DEFAULT_TIMEOUT = "10s"
DEFAULT_ACTION_TIMEOUT = "60s"
DEFAULT_PROMETHEUS_STEP = "15s"
DEFAULT_INTERVAL = "15s"
#: A capture written without a duration (``- capture: response_time``) of sources that
#: keep history (Prometheus) reads this window back from history, ending when it runs
#: (a baseline: at the deployment mark): enough samples for a comparison to judge.
DEFAULT_LOOKBACK = "2m"
#: A comparison that declares no thresholds and no method is judged by Mann-Whitney
#: *and* this movement the worse way (relative to the baseline): the test says the shift
#: is not noise, the tolerance that it matters (smooth series such as rate(...[1m]) make
#: a 0.5% drift "significant"). Without a test (one sample a side) the tolerance alone.
DEFAULT_TOLERANCE = "10%"
#: Collector types that can answer a window in the past from their own storage.
HISTORY_COLLECTORS = frozenset({"prometheus"})

# Fields of one metric in a capture's output, and in an analysis's output. "@" stands
# for the metric's own dimension.
CAPTURE_FIELDS: Mapping[str, str] = {
    "mean": "@",
    "min": "@",
    "max": "@",
    "last": "@",
    "p50": "@",
    "p95": "@",
    "p99": "@",
    "count": "number",
}
ANALYSIS_FIELDS: Mapping[str, str] = {
    "baseline": "@",
    "impact": "@",
    "increase": "@",
    "decrease": "@",
    "change": "ratio",
    "factor": "ratio",
    "p_value": "number",
    "significant": BOOL,
    "exceeded": BOOL,
    "degraded": BOOL,
}
ANALYSIS_SUMMARY: Mapping[str, str] = {
    "any_degradation": BOOL,
    "significant_degradation": BOOL,
    "all_metrics_within_normal": BOOL,
    "exceeded": LIST,
}
DECISION_OUTPUTS: Mapping[str, str] = {
    "decision": STRING,
    "action": STRING,
    "label": STRING,
    "success_criteria_met": BOOL,
}
QUERY_OUTPUTS: Mapping[str, str] = {"rows": LIST, "row_count": "number", "value": ANY}
LOCK_OUTPUTS: Mapping[str, str] = {"longest_lock_wait": "time", "alert": BOOL}
CHECK_OUTPUTS: Mapping[str, str] = {"passed": BOOL, "failed": LIST}

# The built-in collector and metric catalog. Queries follow common Prometheus naming
# (http_request_duration_seconds histogram, http_requests_total with a ``code`` label,
# series labelled ``service``); a workflow overrides any of them by declaring a metric
# or a collector with the same name.
DEFAULT_COLLECTOR_NAME = "prometheus"
DEFAULT_COLLECTORS: Mapping[str, Mapping[str, Any]] = {
    "prometheus": {"type": "prometheus", "url": "${workflow.PROMETHEUS_URL}"},
}
#: Variables a workflow has without declaring them, each only while the workflow does not
#: declare the collector that reads it: ``--set PROMETHEUS_URL=...`` points the built-in
#: collector at a Prometheus, so a workflow written with the catalog's metrics alone (the
#: guide's Example 1) runs as written.
DEFAULT_VARIABLES: Mapping[str, tuple[str, str]] = {
    "PROMETHEUS_URL": ("prometheus", "http://localhost:9090"),
}


def _latency(quantile: str) -> dict[str, Any]:
    return {
        "collector": "prometheus",
        "query": (
            f"histogram_quantile({quantile}, sum by (le) "
            '(rate(http_request_duration_seconds_bucket{service="${deployment.service}"}[1m])))'
        ),
        "unit": "s",
        "better": "lower",
    }


DEFAULT_METRICS: Mapping[str, Mapping[str, Any]] = {
    "response_time": {
        "collector": "prometheus",
        "query": (
            'sum(rate(http_request_duration_seconds_sum{service="${deployment.service}"}[1m])) / '
            'sum(rate(http_request_duration_seconds_count{service="${deployment.service}"}[1m]))'
        ),
        "unit": "s",
        "better": "lower",
    },
    "response_time_p50": _latency("0.5"),
    "response_time_p95": _latency("0.95"),
    "response_time_p99": _latency("0.99"),
    "error_rate": {
        "collector": "prometheus",
        "query": (
            'sum(rate(http_requests_total{service="${deployment.service}",code=~"5.."}[1m])) / '
            'sum(rate(http_requests_total{service="${deployment.service}"}[1m]))'
        ),
        "unit": "ratio",
        "better": "lower",
    },
    "request_rate": {
        "collector": "prometheus",
        "query": 'sum(rate(http_requests_total{service="${deployment.service}"}[1m]))',
        "unit": "1/s",
        "better": "none",
    },
    "active_users": {
        "collector": "prometheus",
        "query": 'sum(active_users{service="${deployment.service}"})',
        "unit": "count",
        "better": "higher",
    },
    "cpu_usage": {
        "collector": "prometheus",
        "query": 'sum(rate(process_cpu_seconds_total{service="${deployment.service}"}[1m]))',
        "unit": "count",
        "better": "lower",
    },
    "memory_usage": {
        "collector": "prometheus",
        "query": 'sum(process_resident_memory_bytes{service="${deployment.service}"})',
        "unit": "B",
        "better": "lower",
    },
}
