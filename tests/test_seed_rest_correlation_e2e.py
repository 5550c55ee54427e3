"""Issue 12, the rest: Example 2's ``correlation:`` over enough verified past migrations.

The guide's Example 2 (tests/seeds/example2_database_migration.yaml, verbatim) runs six
times against a real PostgreSQL started with ``shared_preload_libraries =
pg_stat_statements`` (tests/infra.py), so the snapshot, the query patterns and the
comparison read statement times from ``pg_stat_statements`` for real. Each migration runs
phase by phase (``afdp run --phase pre_migration``, ``--phase during_migration``, then the
rest with ``--trust``) through the CLI entry point, on a table that grows between
migrations, with a pause that grows too (so duration follows size; the sixth's is
short: its duration is in no figure), and the third migration changes a row behind
the integrity check's back (an impact).

- The fifth migration's correlation sees four verified past migrations: every figure is
  ``not enough data`` (the documented minimum is 5), naming 4 deployments.
- The sixth sees five: Pearson's r and the slope between size and duration, the share of
  migrations with an impact per part of the day, and the mean and longest lock per table
  class, each equal to the figure computed here independently (numpy) from what the
  verified records hold, and each naming the 5 deployments behind it.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from test_seed_migration_e2e import _connect, _records, _run, _setup, _workload

from afdp.evidence.records import parse_time
from afdp.workflow.catalog import MIN_CORRELATION_DEPLOYMENTS

# Seconds between the lock monitor and the checks. A migration's measured duration is its
# pause plus the runs' own time, which a loaded CI machine (the slow tests run 6 at a
# time on 2 cores) varies by seconds: 2.5 s steps (a spread of 3.5 s, not 1.4 s) keep
# "duration follows size" (r > 0.5) true through that noise. The sixth migration's own
# duration is in no figure (it reads the five before it): a short pause.
PAUSES = (0.5, 3.0, 5.5, 8.0, 10.5, 0.5)


def _grow(url: str, rows: int) -> None:
    with _connect(url) as db:
        db.execute(
            "INSERT INTO orders (customer, amount, note) SELECT g %% 5000, g * 1.5, 'n' || g "
            "FROM generate_series(1, %s) g",
            (rows,),
        )
        db.execute("VACUUM ANALYZE orders")


def _migration(url, cli, repo, keys, tsa, trust, index: int) -> dict:
    deployment = f"m-{index}"
    _grow(url, 2_000 * index)  # the tables stay small (< 10 MiB): one lock class
    _workload(url)
    _run(cli, repo, keys, tsa, deployment, "--phase", "pre_migration")
    with _connect(url) as db:
        db.execute(f"ALTER TABLE orders ADD COLUMN c{index} text")
    _run(cli, repo, keys, tsa, deployment, "--phase", "during_migration")
    time.sleep(PAUSES[index - 1])
    if index == 3:  # a row changed by the migration: verify_data_integrity must fail
        with _connect(url) as db:
            db.execute("UPDATE orders SET amount = amount + 1 WHERE id = 7")
    _workload(url)
    outcome = _run(cli, repo, keys, tsa, deployment, "--trust", str(trust))
    assert outcome["sealed"]
    return _records(repo, deployment)


@pytest.mark.slow
def test_example2_correlation_over_five_verified_past_migrations(
    tmp_path, cli, keys, tsa, trust_file, postgres_statements_url, monkeypatch
):
    import sqlalchemy

    assert MIN_CORRELATION_DEPLOYMENTS == 5  # what docs/workflows.md documents
    admin = sqlalchemy.create_engine(postgres_statements_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql('CREATE DATABASE "correlation"')
    admin.dispose()
    url = postgres_statements_url.rsplit("/", 1)[0] + "/correlation"
    with _connect(url) as db:
        db.execute("CREATE EXTENSION pg_stat_statements")
    monkeypatch.setenv("DATABASE_URL", url)
    _setup(url)
    repo = tmp_path / "evidence"
    assert cli("init", str(repo)).code == 0

    runs = [_migration(url, cli, repo, keys, tsa, trust_file, i) for i in range(1, 7)]

    # pg_stat_statements is preloaded and installed: the real path, not the fallback.
    first = runs[0]
    assert first["snapshot_performance"]["result"]["snapshot"]["source"] == "pg_stat_statements"
    assert first["capture_query_patterns"]["result"]["source"] == "pg_stat_statements"
    statements = first["capture_query_patterns"]["result"]["outputs"]["rows"]
    assert statements and all({"queryid", "calls", "mean_exec_time"} <= set(row) for row in statements), statements
    comparison = first["compare_performance"]["result"]["comparison"]
    assert comparison["source"] == "pg_stat_statements", comparison
    assert runs[2]["verify_data_integrity"]["status"] == "failed"  # the planted impact

    # Below the minimum: four verified past migrations are not enough for any figure.
    fifth = runs[4]["correlation"]["result"]
    assert fifth["verified"] == ["m-1", "m-2", "m-3", "m-4"] and fifth["excluded"] == []
    assert fifth["minimum"] == 5
    for name, figure in fifth["figures"].items():
        assert figure["status"] == "not enough data", (name, figure)
        assert figure["deployments"] == 4, (name, figure)
    assert set(runs[4]["correlation"]["result"]["outputs"].values()) == {"not enough data"}

    # Five: every figure computed, from exactly the five verified migrations.
    sixth = runs[5]["correlation"]
    assert sixth["status"] == "ok"
    result = sixth["result"]
    assert result["verified"] == ["m-1", "m-2", "m-3", "m-4", "m-5"] and result["excluded"] == []
    past = {m["deployment"]: m for m in result["migrations"]}
    assert sorted(past) == ["m-1", "m-2", "m-3", "m-4", "m-5"]
    # The migration facts are the verified records' own numbers.
    for index in range(1, 6):
        records = runs[index - 1]
        tables = records["record_table_sizes"]["result"]["outputs"]["rows"]
        assert past[f"m-{index}"]["size_bytes"] == sum(t["total_bytes"] for t in tables)
        before = max(records[s]["finished_at"] for s in ("snapshot_performance", "record_table_sizes"))
        after = records["verify_data_integrity"]["started_at"]
        assert past[f"m-{index}"]["duration_seconds"] == pytest.approx(
            (parse_time(after) - parse_time(before)).total_seconds(), abs=1e-6
        )
        assert past[f"m-{index}"]["duration_seconds"] > PAUSES[index - 1]
        assert past[f"m-{index}"]["impact"] is (index == 3)
        largest = max(t["total_bytes"] for t in tables)
        assert largest < 10 * 2**20 and past[f"m-{index}"]["table_class"] == "small"
    sizes = np.array([past[f"m-{i}"]["size_bytes"] for i in range(1, 6)], dtype=float)
    durations = np.array([past[f"m-{i}"]["duration_seconds"] for i in range(1, 6)], dtype=float)
    assert list(sizes) == sorted(sizes)  # the table grew between migrations

    size_duration = result["figures"]["migration_size_to_duration"]
    assert size_duration["status"] == "computed" and size_duration["deployments"] == 5
    r = float(np.corrcoef(sizes, durations)[0, 1])
    slope = float(np.polyfit(sizes, durations, 1)[0])
    assert size_duration["pearson_r"] == pytest.approx(r, abs=1e-9)
    assert size_duration["seconds_per_megabyte"] == pytest.approx(slope * 2**20, rel=1e-9)
    assert r > 0.5, (sizes, durations)  # longer pauses with bigger tables: duration follows size

    time_of_day = result["figures"]["time_of_day_to_impact"]
    assert time_of_day["deployments"] == 5
    parts = {}
    for m in past.values():
        part = ["night", "morning", "afternoon", "evening"][m["started_hour_utc"] // 6]
        parts.setdefault(part, []).append(m["impact"])
    assert {name: g["deployments"] for name, g in time_of_day["groups"].items()} == {
        name: len(v) for name, v in parts.items()
    }
    for name, impacts in parts.items():
        group = time_of_day["groups"][name]
        if len(impacts) >= 5:
            assert group["status"] == "computed" and group["impact_share"] == pytest.approx(sum(impacts) / len(impacts))
        else:  # the run crossed a part of the day: that group alone has too few
            assert group["status"] == "not enough data"
    if len(parts) == 1:
        assert time_of_day["status"] == "computed"
        assert list(time_of_day["value"].values()) == [pytest.approx(0.2)]  # one of five

    locks = result["figures"]["table_type_to_lock_duration"]
    assert locks["status"] == "computed" and locks["deployments"] == 5
    seen = np.array([past[f"m-{i}"]["longest_lock_seconds"] for i in range(1, 6)], dtype=float)
    small = locks["groups"]["small"]
    assert small["deployments"] == 5
    assert small["mean_lock_seconds"] == pytest.approx(float(seen.mean()), rel=1e-9, abs=1e-12)
    assert small["longest_lock_seconds"] == pytest.approx(float(seen.max()), rel=1e-9, abs=1e-12)
    # The outputs conditions read are the figures' values.
    outputs = result["outputs"]
    assert outputs["migration_size_to_duration"] == pytest.approx(r, abs=1e-9)
    assert outputs["table_type_to_lock_duration"] == {"small": pytest.approx(float(seen.mean()), rel=1e-9, abs=1e-12)}
