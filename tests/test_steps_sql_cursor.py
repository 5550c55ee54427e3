"""A during_migration SQL step run as a phase of its own (its own process, its own
cursor) records the cursor it read through, and the database comparison in a later
process leaves its statements out as this run's in the ``run`` reading too, not only in
``any_afdp``. Real PostgreSQL with pg_stat_statements (tests/infra.py), each phase a
real process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_migration_own_time import _phase as run_phase
from test_migration_own_time import _reset, _run, _workload, statements_db  # noqa: F401

from afdp.pipeline.runner.steps.statements import step_cursors

_PHASE = """
import json, sys, time
from pathlib import Path
from types import SimpleNamespace
from afdp.pipeline.runner.steps import migration, sql, statements
from afdp.workflow import load_workflow

workflow, url, mode = sys.argv[1], sys.argv[2], sys.argv[3]
run = SimpleNamespace(workflow=load_workflow(Path(workflow)), env={"APP_DB": url},
                      scaled=lambda seconds: 0.0, clock=SimpleNamespace(sleep=time.sleep))
statements.FRESH_AFTER_SECONDS = 0.0  # the phases of this test follow each other at once
if mode == "baseline":
    print(json.dumps(migration.take_snapshot(run, "app_db", {})))
elif mode == "step":
    phase = next(p for p in run.workflow.phases if p.name == "during_migration")
    step = next(s for s in phase.steps if s.name == "track_blocked_queries")
    print(json.dumps(sql.handle_query(run, step, {}).result))
else:
    given = json.loads(sys.stdin.read())
    before, steps = given["before"], given["steps"]
    after = migration.take_snapshot(run, "app_db", {}, cursor=before["statements_cursor"],
                                    since=before["taken_locally"], also=statements.step_cursors(before, steps))
    print(json.dumps(migration.compare_snapshots(before, after, "compare")))
"""


def _phase(tmp_path: Path, url: str, mode: str, stdin: str = "") -> dict:
    return run_phase(tmp_path, url, mode, stdin, script=_PHASE)


@pytest.mark.slow
def test_a_during_migration_step_in_its_own_process_is_left_out_in_the_run_reading(tmp_path, statements_db):  # noqa: F811
    _run(tmp_path, statements_db)  # writes the workflow
    _reset(statements_db)
    _workload(statements_db, 200)
    before = _phase(tmp_path, statements_db, "baseline")
    _workload(statements_db, 200)
    step = _phase(tmp_path, statements_db, "step")
    assert step["read_through"] != before["statements_cursor"] and step["database_queries"] == 1
    compared = _phase(tmp_path, statements_db, "compare", json.dumps({"before": before, "steps": [step]}))
    run = compared["measures"]["mean_statement_time"]["readings"]["run"]
    assert run["calls"]["window"] == 200, compared["measures"]  # only the application's lookups
    # Negative: the same step without the cursor recorded (as before): its statements are
    # counted as the application's in the 'run' reading.
    _reset(statements_db)
    _workload(statements_db, 200)
    before = _phase(tmp_path, statements_db, "baseline")
    _workload(statements_db, 200)
    step = _phase(tmp_path, statements_db, "step")
    unrecorded = {k: v for k, v in step.items() if not k.startswith("read_through")}
    counted = _phase(tmp_path, statements_db, "compare", json.dumps({"before": before, "steps": [unrecorded]}))
    assert counted["measures"]["mean_statement_time"]["readings"]["run"]["calls"]["window"] > 200


def test_only_wellformed_cursors_drawn_after_the_baseline_are_taken():
    name = "afdp_" + "a" * 32
    before = {"taken_locally": 1000.0}
    fresh = {"read_through": name, "read_through_drawn_at": 1010.0}
    assert step_cursors(before, [fresh, fresh]) == [name]
    # drawn before the baseline (it may have statements in it), malformed, or no baseline time
    assert step_cursors(before, [{"read_through": name, "read_through_drawn_at": 999.0}]) == []
    assert step_cursors(before, [{"read_through": "x'; DROP", "read_through_drawn_at": 1010.0}]) == []
    assert step_cursors({}, [fresh]) == []
    assert step_cursors(before, [{"read_through": name}, None, "text"]) == []


CHECKS = """\
name: checks
version: "1"
collectors:
  db: {type: sql, url: '${env.DB}'}
workflow:
  post_deployment:
    - verify_data_integrity:
        collector: db
        checks:
          three: {query: SELECT 3, expect: 3}
          four: {query: SELECT 4, expect: 4}
"""


def _check(tmp_path: Path, url: str) -> dict:
    from types import SimpleNamespace

    from afdp.pipeline.collectors.sql import cursor_name
    from afdp.pipeline.runner.steps.sql import handle_check
    from afdp.workflow import load_workflow

    path = tmp_path / "checks.yaml"
    path.write_text(CHECKS)
    policy = tmp_path / "policy.yaml"  # a workflow of one check step, without baseline or impact
    policy.write_text("version: 1\nname: test-permissive\nallowed_collector_types: [sql]\n")
    workflow = load_workflow(path, policy=policy)
    step = next(s for p in workflow.phases for s in p.steps if s.name == "verify_data_integrity")
    done = handle_check(SimpleNamespace(workflow=workflow, env={"DB": url}), step, {})  # type: ignore[arg-type]
    assert done.status == "ok", done
    return {**done.result, "cursor": cursor_name()}


def test_a_check_step_on_postgresql_records_its_reads_and_cursor(tmp_path, statements_db):  # noqa: F811
    result = _check(tmp_path, statements_db)
    assert result["database_queries"] == 2 and result["read_through"] == result["cursor"]
    assert isinstance(result["read_through_drawn_at"], float)


def test_a_check_step_on_sqlite_names_no_cursor(tmp_path):
    import sqlite3

    database = tmp_path / "shop.db"
    sqlite3.connect(database).close()
    result = _check(tmp_path, f"sqlite:///{database}")
    assert result["database_queries"] == 2 and "read_through" not in result
