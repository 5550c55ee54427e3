"""What the workflow language knows: step types, their kinds and outputs, and built-in defaults.

The JSON Schema (``evidence-schema/workflow.v1.schema.json``) fixes the *structure* of
each step's parameters; this module fixes their *meaning*: which kind of work a step
type does (what the flows dispatch on), which parameter a shorthand fills
(``- wait: 2m`` fills ``duration``), what a step outputs for ``${steps.<name>.<field>}``
and conditions, and the built-in metric catalog that lets ``metrics: [error_rate]``
work without declaring anything (defined in :mod:`afdp.workflow.defaults`, re-exported
here). A test keeps the two in step.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from afdp.workflow import defaults as _defaults
from afdp.workflow.expressions import ANY, BOOL, LIST, STRING

# The built-in catalog lives in afdp.workflow.defaults; its users read it here.
DEFAULT_COLLECTORS = _defaults.DEFAULT_COLLECTORS
DEFAULT_VARIABLES = _defaults.DEFAULT_VARIABLES
DEFAULT_METRICS = _defaults.DEFAULT_METRICS
AB_METRICS = _defaults.AB_METRICS
FLAG_FILE_USER = _defaults.FLAG_FILE_USER
REVENUE_METRIC = _defaults.REVENUE_METRIC
SATISFACTION_METRICS = _defaults.SATISFACTION_METRICS


class StepKind(enum.Enum):
    """What a step does; the flows dispatch on this, not on the type name."""

    WAIT = "wait"  # sleep for a duration
    SIGNAL = "signal"  # wait for a named external signal, with a timeout
    MARK = "mark"  # record the deployment time (the before/after boundary)
    METADATA = "metadata"  # record deployment metadata (commit, deployer, changed files)
    CAPTURE = "capture"  # collect metric samples over a window (or one snapshot)
    QUERY = "query"  # run a SQL query (optionally repeatedly) and record the rows
    CHECK = "check"  # run SQL checks and record which passed
    SEGMENT = "segment"  # assign users to groups deterministically and record the rule
    FLAG = "flag"  # switch a feature flag on for a group (flagd file or webhook)
    ANALYZE = "analyze"  # compare two captures: thresholds and statistical tests
    BUSINESS = "business"  # the revenue difference (with an interval) of an A/B comparison
    GATE = "gate"  # evaluate one condition; if true, decide (rollback) and stop
    DECIDE = "decide"  # evaluate success criteria and the workflow's decisions
    RECORD = "record"  # emit an ML training record (or A/B or lessons-learned record)
    PREDICT = "predict"  # a before_deployment prediction (recorded as skipped: no model yet)
    DATABASE = "database"  # database snapshot, comparison or integrity check (migrations)
    CORRELATE = "correlate"  # correlation across past deployments (read through the verifier)
    STORE = "store"  # where the results go: the evidence branch, plus a file or a URL
    TRAFFIC = "traffic"  # shift a share of traffic to the new version (the traffic_split action)
    SERVICES = "services"  # cross-service correlation: cascade, dependencies, combined impact


#: Kinds no step type names by itself: the compiler reaches them from how a step is
#: written (``snapshot_performance`` with no metrics is a database snapshot) or from a
#: section (``correlation:``).
FORM_KINDS = frozenset({StepKind.DATABASE, StepKind.CORRELATE, StepKind.SERVICES})


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
    StepKind.SEGMENT: "abtest:handle_segment",
    StepKind.FLAG: "abtest:handle_enable_feature",
    StepKind.ANALYZE: "judge:handle_analyze",
    StepKind.BUSINESS: "abtest:handle_business_impact",
    StepKind.GATE: "judge:handle_gate",
    StepKind.DECIDE: "judge:handle_decide",
    StepKind.RECORD: "record:handle_record",
    StepKind.PREDICT: "predict:handle_predict",
    StepKind.DATABASE: "migration:handle_database",
    StepKind.CORRELATE: "correlation:handle_correlation",
    StepKind.STORE: "store:handle_store",
    StepKind.TRAFFIC: "traffic:handle_traffic",
    StepKind.SERVICES: "services:handle_services",
}

#: The predictive steps of ``before_deployment:`` and what each does; they need the
#: verified history of past deployments (``afdp run --trust``): without it, or with too
#: little, the run records them as skipped with the reason (docs/learning.md).
PREDICTIONS: Mapping[str, str] = {
    "analyze_similar_past_deployments": "find past deployments of this service like this one in the evidence",
    "predict_likely_impact": "predict this deployment's impact from a model trained on past evidence",
    "recommend_deployment_window": "recommend when to deploy from past deployments' outcomes by hour",
    "suggest_rollback_threshold": "suggest rollback thresholds from past deployments' metric movements",
}
PREDICTION_SKIPPED = "needs a trained model / history (learning from evidence); not run"
#: What each predictive step outputs (``steps.<name>.<field>`` in later conditions);
#: quantities carry the metric's unit, money the workflow's currency per hour.
PREDICTION_OUTPUTS: Mapping[str, Mapping[str, str]] = {
    "analyze_similar_past_deployments": {"similar": LIST, "pattern_count": "number", "pattern_degraded": "number"},
    "predict_likely_impact": {
        "predicted": ANY,
        "model_record": STRING,
        "predicted_revenue_loss_per_hour": ANY,
        "predicted_revenue_loss_per_hour_low": ANY,
        "predicted_revenue_loss_per_hour_high": ANY,
        "currency": STRING,
    },
    "recommend_deployment_window": {
        "recommended_part_of_day": STRING,
        "recommended_hours_utc": STRING,
        "recommended_weekday": STRING,
        "current_part_of_day": STRING,
        "in_recommended_window": BOOL,
    },
    "suggest_rollback_threshold": {"thresholds": ANY},
}


@dataclass(frozen=True)
class StepType:
    """One step type: its kind and how its parameters may be written.

    ``scalar`` names the parameter a scalar shorthand fills (``- wait: 2m``), ``listing``
    the one a list shorthand fills (``- capture_baseline: [error_rate]``). ``required``
    parameters forbid the bare form (``- wait`` alone). ``role`` places a capture before
    or after the deployment for analyses; ``record`` names the record a RECORD step emits;
    ``query`` is the default SQL (PostgreSQL) of a QUERY step; ``fallback`` the default
    SQL run when ``query`` cannot be (an extension not installed: ``probe`` returns false,
    or the query fails), ``sources`` what each of the two reads (recorded as ``source``).
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
    fallback: str | None = None
    sources: tuple[str, str] | None = None
    probe: str | None = None


#: Whether pg_stat_statements can be read (installed and preloaded), asked before reading
#: it: a failed read would count as a rolled-back transaction in the statistics AFDP
#: compares.
PG_STAT_STATEMENTS_PROBE = (
    "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements') AND "
    "current_setting('shared_preload_libraries') ~ 'pg_stat_statements' AS available"
)

#: ``monitor_locks``: the longest a strong relation lock (one that blocks readers or
#: writers: Share and stronger) has been held by another session (the age of the
#: transaction holding it: a lock lasts until its transaction ends) or waited for.
LOCKS_QUERY = (
    "SELECT COALESCE(EXTRACT(EPOCH FROM GREATEST(max(now() - a.xact_start) FILTER (WHERE l.granted), "
    "max(now() - l.waitstart) FILTER (WHERE NOT l.granted))), 0) AS longest_lock_seconds, "
    "COALESCE(EXTRACT(EPOCH FROM max(now() - a.xact_start) FILTER (WHERE l.granted)), 0) AS longest_lock_held_seconds, "
    "COALESCE(EXTRACT(EPOCH FROM max(now() - l.waitstart) FILTER (WHERE NOT l.granted)), 0) AS longest_lock_wait_seconds, "
    "count(*) FILTER (WHERE NOT l.granted) AS waiting_locks, "
    "COALESCE(json_agg(json_build_object('pid', l.pid, 'relation', l.relation::regclass::text, "
    "'mode', l.mode, 'granted', l.granted) ORDER BY l.pid, l.mode), '[]') AS locks "
    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'relation' AND l.pid <> pg_backend_pid() AND l.database = "
    "(SELECT oid FROM pg_database WHERE datname = current_database()) AND (NOT l.granted OR l.mode IN "
    "('ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock'))"
)


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
            "n_live_tup AS live_rows, schemaname AS schema_name FROM pg_stat_user_tables "
            "ORDER BY total_bytes DESC, schema_name, table_name LIMIT 100"
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
        fallback=(
            "SELECT datname, numbackends, xact_commit, xact_rollback, blks_read, blks_hit, "
            "tup_returned, tup_fetched, tup_inserted, tup_updated, tup_deleted, deadlocks, "
            "temp_bytes FROM pg_stat_database WHERE datname = current_database()"
        ),
        sources=("pg_stat_statements", "pg_stat_database"),
        probe=PG_STAT_STATEMENTS_PROBE,
    ),
    StepType(
        "track_blocked_queries",
        StepKind.QUERY,
        "count queries waiting on locks",
        scalar="collector",
        query=(
            "SELECT count(*) AS blocked_queries, COALESCE(json_agg(json_build_object("
            "'pid', pid, 'blocked_by', pg_blocking_pids(pid), 'wait_event', wait_event, "
            "'waiting_seconds', EXTRACT(EPOCH FROM now() - state_change)) ORDER BY pid), '[]') AS blocked "
            "FROM pg_stat_activity WHERE cardinality(pg_blocking_pids(pid)) > 0"
        ),
    ),
    StepType(
        "measure_replication_lag",
        StepKind.QUERY,
        "measure replica replay lag",
        scalar="collector",
        query=(
            "SELECT CASE WHEN pg_is_in_recovery() THEN COALESCE(EXTRACT(EPOCH FROM "
            "now() - pg_last_xact_replay_timestamp()), 0) ELSE COALESCE((SELECT EXTRACT(EPOCH FROM "
            "max(replay_lag)) FROM pg_stat_replication), 0) END AS replication_lag_seconds, "
            "(SELECT count(*) FROM pg_stat_replication) AS replicas, CASE WHEN pg_is_in_recovery() "
            "THEN 'standby: lag is the age of the last replayed transaction' WHEN "
            "(SELECT count(*) FROM pg_stat_replication) = 0 THEN 'not applicable: a primary without "
            "replicas' ELSE 'primary: lag is the longest replay lag of its replicas' END AS replication"
        ),
    ),
    StepType(
        "monitor_locks",
        StepKind.QUERY,
        "watch locks, flag a lock held or waited for longer than alert_threshold",
        scalar="collector",
        query=LOCKS_QUERY,
    ),
    StepType(
        "verify_data_integrity", StepKind.CHECK, "run SQL integrity checks", listing="tables"
    ),
    StepType("segment_users", StepKind.SEGMENT, "assign users to groups by a salted hash"),
    StepType("enable_feature", StepKind.FLAG, "switch a feature flag on for a group"),
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
        "business_impact",
        StepKind.BUSINESS,
        "revenue difference between the A/B groups, with an interval",
    ),
    StepType(
        "gate",
        StepKind.GATE,
        "stop with a decision when a condition holds",
        required=("condition",),
    ),
    StepType(
        "shift_traffic",
        StepKind.TRAFFIC,
        "send the new traffic share to the traffic_split action (a stage's first step)",
        scalar="traffic",
        required=("traffic",),
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
    StepType(
        "store",
        StepKind.STORE,
        "store the results: the evidence branch, plus a results file or a URL",
        scalar="data",
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
    "team": STRING,
    "image": STRING,
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
#: Actions a rollout carries out itself, not a decision: ``traffic_split`` receives each
#: stage's traffic share (``shift_traffic`` steps).
STAGE_ACTIONS = ("traffic_split",)
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
    "shift": "@",
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
STORE_OUTPUTS: Mapping[str, str] = {"destinations": LIST, "sha256": STRING}
DECISION_OUTPUTS: Mapping[str, str] = {
    "decision": STRING,
    "action": STRING,
    "label": STRING,
    "success_criteria_met": BOOL,
}
QUERY_OUTPUTS: Mapping[str, str] = {"rows": LIST, "row_count": "number", "value": ANY}
LOCK_OUTPUTS: Mapping[str, str] = {"longest_lock_wait": "time", "alert": BOOL}
CHECK_OUTPUTS: Mapping[str, str] = {"passed": BOOL, "failed": LIST}
FLAG_OUTPUTS: Mapping[str, str] = {"flag": STRING, "enabled_at": STRING, "changed": BOOL}
BUSINESS_OUTPUTS: Mapping[str, str] = {
    "revenue_difference": "number",
    "revenue_difference_low": "number",
    "revenue_difference_high": "number",
    "user_satisfaction_maintained": BOOL,
}

#: ``integrity:`` entries and the guarantee each one names. None can be switched off:
#: ``afdp validate`` prints each as a note, saying what it means concretely.
INTEGRITY: Mapping[str, str] = {
    "sign_user_segments": (
        "always on: segment_users' record holds the assignment rule (flagd fractional: "
        "MurmurHash3 of the per-deployment salt + user id, its bucket ranges per group), "
        "signed (DSSE) and time-stamped like every record, so anyone can recompute any "
        "user's group and prove it was fixed before the feature was enabled"
    ),
    "notarize_results": (
        "always on: every record, the A/B comparison and the ab_test record included, "
        "carries an RFC 3161 time-stamp token from the TSA (afdp run --tsa), which "
        "openssl ts -verify checks without AFDP"
    ),
    "immutable_audit_trail": (
        "always on: records are hash-chained (each cites its predecessor's digest) on the "
        "deployment's own Git branch, refs move by compare-and-swap only and the seal "
        "commits to every record; afdp verify fails on any change"
    ),
}
DATABASE_OUTPUTS: Mapping[str, Mapping[str, str]] = {
    "snapshot": {"source": STRING, "taken_at": STRING},
    "compare": {"degraded": BOOL, "degraded_measures": LIST},
    "user_impact": {"degraded": BOOL, "degraded_measures": LIST},
    "integrity": {"passed": BOOL, "failed": LIST, "changed_tables": LIST},
}

# The built-in collectors, variables and metrics are in afdp.workflow.defaults (re-exported).
DEFAULT_COLLECTOR_NAME = "prometheus"
#: The database a SQL step reads when the workflow declares no sql collector (the
#: guide's Example 2 declares none): a secret URL, sent and never written.
DEFAULT_SQL_COLLECTOR = "database"
DEFAULT_SQL_COLLECTOR_SPEC: Mapping[str, Any] = {"type": "sql", "url": "${env.DATABASE_URL}"}
#: ``correlation:`` figures, and how many verified past deployments each needs before
#: it is computed (below: "not enough data").
CORRELATIONS = (
    "migration_size_to_duration",
    "time_of_day_to_impact",
    "table_type_to_lock_duration",
)
MIN_CORRELATION_DEPLOYMENTS = 5
#: Cross-service correlation (``services:`` + ``correlate:``): the figures, the name of
#: the step that computes them (after the last per-service analysis), the fewest paired
#: samples a pairwise correlation needs (below: "not enough samples"), and the fewest
#: impact samples after a degradation's onset (the later segment of the change point).
SERVICE_FIGURES = ("cascade_failures", "performance_dependencies", "business_impact_combined")
SERVICES_STEP = "correlate_services"
MIN_DEPENDENCE_SAMPLES = 10
CASCADE_MIN_SEGMENT = 3
#: What a per-service analysis adds to conditions (beside ``<service>.<metric>.<field>``
#: and ``<service>.any_degradation``...), and what the correlation step outputs.
SERVICE_ANALYSIS_SUMMARY: Mapping[str, str] = {
    "any_service_degraded": BOOL,
    "degraded_services": LIST,
}
SERVICES_OUTPUTS: Mapping[str, Any] = {
    "cascade_detected": BOOL,
    "degraded_in_order": LIST,
    "first_degraded": STRING,
    "dependencies": ANY,
    # Money lost per hour by the services together (currency per time), its currency, and
    # whether every service's is in it (complete) or which are not (missing).
    "business_impact_combined": {
        "loss_per_hour": ANY,
        "currency": STRING,
        "currency_dimension": STRING,
        "complete": BOOL,
        "missing": LIST,
    },
}
