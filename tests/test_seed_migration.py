"""The guide's Example 2 (database migration) validates and plans as written; its readings
are notes; bad variants get one located error; the comparison and correlation rules.

The end-to-end runs against PostgreSQL are in tests/test_seed_migration_e2e.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from afdp.pipeline.runner.steps.correlation import NOT_ENOUGH, _figure
from afdp.pipeline.runner.steps.migration import MIN_ACTIVITY, compare_snapshots
from afdp.workflow import catalog, load_workflow
from afdp.workflow.catalog import StepKind
from afdp.workflow.findings import WorkflowInvalid
from afdp.workflow.model import Correlate, Database, Query

SEED = Path(__file__).parent / "seeds" / "example2_database_migration.yaml"


def test_seed_example2_validates_with_notes_for_each_reading(cli):
    result = cli("validate", str(SEED), "--json")
    assert result.code == 0, result.out
    report = result.json()
    assert report["valid"] and report["findings"] == []
    notes = " | ".join(n["message"] for n in report["notes"])
    for reading in (
        "built-in collector 'database' at ${env.DATABASE_URL}",
        "pg_stat_statements when it is installed, else pg_stat_database",
        "monitor_locks without a duration looks once",
        "verify_data_integrity compares the exact row count and a checksum",
        "compare_performance has no captures to compare",
        "analyze_user_impact has no captures to compare",
        "no decisions step",
        "correlation runs as a step 'correlation'",
    ):
        assert reading in notes, reading


def test_seed_example2_compiles_to_database_steps():
    workflow = load_workflow(SEED)
    steps = {s.name: s for s in workflow.steps}
    assert [p.name for p in workflow.phases] == ["pre_migration", "during_migration", "post_migration"]
    assert steps["snapshot_performance"].kind is StepKind.DATABASE
    assert steps["snapshot_performance"].params == Database("snapshot", "database")
    sizes = steps["record_table_sizes"].params
    assert isinstance(sizes, Query) and sizes.fingerprint == ("*",)
    patterns = steps["capture_query_patterns"].params
    assert isinstance(patterns, Query) and patterns.sources == ("pg_stat_statements", "pg_stat_database")
    locks = steps["monitor_locks"].params
    assert isinstance(locks, Query) and locks.alert_threshold is not None
    assert locks.alert_threshold.seconds == 30
    assert steps["verify_data_integrity"].params == Database("integrity", "database", source="record_table_sizes")
    assert steps["compare_performance"].params == Database("compare", "database", baseline="snapshot_performance")
    assert steps["analyze_user_impact"].params == Database("user_impact", "database", baseline="snapshot_performance")
    assert [s.name for s in workflow.steps][-3:] == ["decisions", "generate_lessons_learned", "correlation"]
    correlation = steps["correlation"]
    assert correlation.kind is StepKind.CORRELATE
    assert correlation.params == Correlate(catalog.CORRELATIONS, catalog.MIN_CORRELATION_DEPLOYMENTS)
    (collector,) = workflow.collectors
    assert (collector.name, collector.type, collector.builtin) == ("database", "sql", True)


def test_seed_example2_plans_without_reading_the_secret(cli, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://user:hunter2-secret@db.internal/orders")
    result = cli("plan", str(SEED), "--set", "deployment.service=orders-db", "--set", "deployment.id=m-1", "--json")
    assert result.code == 0, result.out
    assert "hunter2" not in result.out
    plan = result.json()
    kinds = [s["kind"] for phase in plan["phases"] for s in phase["steps"]]
    assert kinds.count("database") == 4 and kinds[-1] == "correlate"


def test_a_declared_sql_collector_is_used_and_no_default_is_added(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text(SEED.read_text() + "\ncollectors:\n  app_db: {type: sql, url: '${env.APP_DB}'}\n")
    workflow = load_workflow(path)
    assert [c.name for c in workflow.collectors] == ["app_db"]
    assert not [n for n in workflow.notes if "built-in collector 'database'" in n.message]


def _invalid(tmp_path, text: str) -> list[str]:
    path = tmp_path / "w.yaml"
    path.write_text(text)
    with pytest.raises(WorkflowInvalid) as caught:
        load_workflow(path)
    return [f"{f.line}:{f.column}: {f.path}: {f.message}" for f in caught.value.findings]


def test_integrity_without_a_fingerprinting_step_is_one_located_error(tmp_path):
    found = _invalid(tmp_path, "name: m\nworkflow:\n  - snapshot_performance\n  - verify_data_integrity\n  - compare_performance\n")
    assert len(found) == 1, found
    assert found[0].startswith("4:5: workflow[1]: verify_data_integrity compares tables")
    assert "add record_table_sizes before it" in found[0]


def test_an_unknown_correlation_is_one_located_error(tmp_path):
    found = _invalid(tmp_path, SEED.read_text().replace("time_of_day_to_impact", "moon_phase_to_impact"))
    assert len(found) == 1, found
    assert "correlation[1]" in found[0] and "moon_phase_to_impact" in found[0]
    assert "time_of_day_to_impact" in found[0]


def test_named_tables_are_fingerprinted_and_checked(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text(
        "name: m\nworkflow:\n  - snapshot_performance\n  - record_table_sizes\n"
        "  - verify_data_integrity: [orders, audit.events]\n  - compare_performance\n"
    )
    workflow = load_workflow(path)
    assert workflow.step("record_table_sizes").params.fingerprint == ("orders", "audit.events")
    assert workflow.step("verify_data_integrity").params.tables == ("orders", "audit.events")


def test_an_unknown_phase_is_a_usage_error(cli, tmp_path, keys, tsa, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@127.0.0.1:1/x")
    result = cli(
        "run", str(SEED), "--service", "orders-db", "--deployment", "m-1", "--repo", str(tmp_path / "ev"),
        "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--phase", "mid_migration", "--no-prefect",
    )
    assert result.code == 2
    assert "invalid phase 'mid_migration'" in result.err
    assert "during_migration" in result.err


# --- the comparison of two database snapshots -------------------------------------------


def _snapshot(commit, rollback, active_ms, hit=1000, read=0, deadlocks=0):
    return {
        "source": "pg_stat_database",
        "database": {"xact_commit": commit, "xact_rollback": rollback, "active_time": active_ms,
                     "blks_hit": hit, "blks_read": read, "temp_bytes": 0, "deadlocks": deadlocks,
                     "conflicts": 0},
    }


def test_the_same_activity_is_not_degraded():
    before = _snapshot(300, 0, 30.0)
    after = _snapshot(600, 0, 60.0, hit=2000)
    assert compare_snapshots(before, after, "compare")["degraded_measures"] == []
    assert compare_snapshots(before, after, "user_impact")["degraded_measures"] == []


def test_slower_statements_rollbacks_and_deadlocks_are_degraded():
    before = _snapshot(300, 0, 30.0)
    after = _snapshot(600, 60, 1500.0, deadlocks=1)
    assert compare_snapshots(before, after, "compare")["degraded_measures"] == ["mean_statement_time"]
    impact = compare_snapshots(before, after, "user_impact")
    assert impact["degraded_measures"] == ["rollback_ratio", "deadlocks"]


def test_afdp_own_transactions_are_not_the_users_rollbacks():
    before = _snapshot(300, 0, 30.0)
    after = _snapshot(600, 36, 60.0)
    assert compare_snapshots(before, after, "user_impact")["degraded_measures"] == ["rollback_ratio"]
    quiet = compare_snapshots(before, after, "user_impact", own=36)
    assert quiet["degraded_measures"] == [] and quiet["afdp_transactions_excluded"] == 36


def test_too_little_activity_is_not_judged():
    before = _snapshot(MIN_ACTIVITY - 1, 0, 1.0)
    after = _snapshot(MIN_ACTIVITY + 200, 0, 5000.0)
    measure = compare_snapshots(before, after, "compare")["measures"]["mean_statement_time"]
    assert measure["degraded"] is None and "not judged" in measure["reason"]


# --- correlation figures -------------------------------------------------------------------


def _migration(i, *, size, duration, hour, impact, lock, table_class):
    return {"deployment": f"m-{i}", "size_bytes": size, "duration_seconds": duration,
            "started_hour_utc": hour, "impact": impact, "longest_lock_seconds": lock,
            "table_class": table_class}


def test_below_the_minimum_every_figure_is_not_enough_data():
    sample = [_migration(i, size=i * 1e6, duration=i * 10.0, hour=3, impact=False, lock=1.0, table_class="small")
              for i in range(1, 5)]
    for name in catalog.CORRELATIONS:
        figure = _figure(name, sample, 5)
        assert figure["status"] == NOT_ENOUGH and figure["deployments"] == 4


def test_figures_over_enough_past_migrations():
    sample = [
        _migration(i, size=i * 2**20, duration=2.0 * i + 1, hour=2 if i <= 5 else 14, impact=i > 5,
                   lock=0.1 * i if i <= 5 else 9.0, table_class="small" if i <= 5 else "large")
        for i in range(1, 11)
    ]
    size = _figure("migration_size_to_duration", sample, 5)
    assert size["status"] == "computed" and size["deployments"] == 10
    assert size["pearson_r"] == pytest.approx(1.0)
    assert size["seconds_per_megabyte"] == pytest.approx(2.0)
    time_of_day = _figure("time_of_day_to_impact", sample, 5)
    assert time_of_day["value"] == {"night": 0.0, "afternoon": 1.0}
    assert time_of_day["groups"]["night"]["deployments"] == 5
    locks = _figure("table_type_to_lock_duration", sample, 5)
    assert locks["value"]["large"] == pytest.approx(9.0)
    assert locks["value"]["small"] == pytest.approx(0.3)
    # A group below the minimum says so, even when the whole sample is enough.
    sample.append(_migration(11, size=1.0, duration=1.0, hour=20, impact=True, lock=1.0, table_class="medium"))
    figure = _figure("time_of_day_to_impact", sample, 5)
    assert figure["groups"]["evening"] == {"deployments": 1, "status": NOT_ENOUGH}
    assert json.dumps(figure)  # JSON-safe: it becomes a record


def test_afdp_own_query_time_is_not_the_users_statement_time():
    before = _snapshot(300, 0, 30.0)
    after = _snapshot(600, 36, 1000.0)  # 940 ms of it: AFDP's own full-table checksums, as the database measured them
    assert compare_snapshots(before, after, "compare", own=36)["degraded_measures"] == ["mean_statement_time"]
    quiet = compare_snapshots(before, after, "compare", own=36, own_server_ms=940.0)
    assert quiet["degraded_measures"] == [] and quiet["afdp_milliseconds_excluded"] == 940.0
