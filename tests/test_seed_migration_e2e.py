"""The guide's Example 2 (database migration), pasted as written, run against a real PostgreSQL.

``tests/seeds/example2_database_migration.yaml`` declares no collector: its database is
``${env.DATABASE_URL}``. Each phase runs on its own (``afdp run --phase pre_migration``,
``--phase during_migration``, then the rest) around a real migration on a real table,
through the CLI entry point, and every step's record is read back from the evidence.

- quiet: ``ALTER TABLE orders ADD COLUMN region text`` committed at once, the same
  read-only workload before and after: no lock alert, nothing blocked, data unchanged,
  no degradation, decision ``mark_successful``;
- alerting: one transaction drops the index the workload needs, sets a column NOT NULL
  and updates a row, and holds its ACCESS EXCLUSIVE lock past the alert threshold (30 s,
  /60 by ``--time-scale``) while a reader waits behind it; then the workload's lookups
  scan the table and its inserts fail: the lock alert fires, the blocked query is
  counted, the changed row is detected, statement time and rollbacks are degraded, and
  the decision is ``alert``.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

SEED = Path(__file__).parent / "seeds" / "example2_database_migration.yaml"
SCALE = "60"  # alert_threshold 30_seconds -> 0.5 s
ROWS = 50_000
LOOKUPS = 300


def _connect(url: str):
    import psycopg

    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def _setup(url: str) -> None:
    with _connect(url) as db:
        db.execute("CREATE TABLE orders (id serial PRIMARY KEY, customer int NOT NULL, amount numeric NOT NULL, note text)")
        db.execute(
            "INSERT INTO orders (customer, amount, note) SELECT g %% 5000, g * 1.5, 'n' || g FROM generate_series(1, %s) g",
            (ROWS,),
        )
        db.execute("CREATE INDEX orders_customer ON orders (customer)")
        db.execute("CREATE TABLE customers (id int PRIMARY KEY, name text)")
        db.execute("INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 100) g")
        db.execute("VACUUM ANALYZE orders")
        db.execute("SELECT pg_stat_reset()")


def _workload(url: str, *, failing_inserts: int = 0) -> None:
    """The application: indexed lookups, and inserts (which fail after a bad migration).
    One connection, closed at the end: PostgreSQL flushes its statistics then."""
    with _connect(url) as db:
        for i in range(LOOKUPS):
            db.execute("SELECT sum(amount) FROM orders WHERE customer = %s", (i * 7 % 5000,)).fetchone()
        for i in range(failing_inserts):
            try:
                db.execute("INSERT INTO orders (customer, amount) VALUES (%s, 1)", (i,))
            except Exception:  # noqa: BLE001 - the NOT NULL violation the migration caused
                pass
    time.sleep(0.2)


def _run(cli, repo, keys, tsa, deployment, *extra):
    result = cli(
        "run", str(SEED), "--service", "orders-db", "--deployment", deployment, "--repo", str(repo),
        "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--time-scale", SCALE, "--no-prefect",
        "--json", *extra,
    )
    assert result.code in (0, 1), result.err + result.out
    return json.loads(result.out)


def _records(repo: Path, deployment: str) -> dict[str, dict]:
    """Each step's record (status, result, error) as the evidence branch holds it."""
    from afdp.evidence.ledger import decode_envelope, trailers
    from afdp.evidence.names import branch_ref
    from afdp.evidence.records import ENVELOPE_FILE, KIND_STEP, record_dir
    from afdp.evidence.store import EvidenceStore

    store = EvidenceStore(repo)
    head = store.head(branch_ref("orders-db", deployment))
    found = {}
    for commit in store.history(head):
        info = trailers(store.message_of(commit))
        if info.get("AFDP-Kind") != KIND_STEP:
            continue
        files = store.list_dir(commit.tree, record_dir(int(info["AFDP-Record"]), info["AFDP-Step"]))
        predicate = decode_envelope(files[ENVELOPE_FILE])["predicate"]
        found[info["AFDP-Step"]] = predicate
    return found


def _until_a_query_waits_for_a_lock(url: str, *, seconds: float = 60) -> None:
    """Wait until some session waits for a lock (a fixed sleep after starting the reader
    would count its connection time, which a loaded machine stretches, as waiting)."""
    deadline = time.monotonic() + seconds
    with _connect(url) as db:
        while not db.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()").fetchone()[0]:
            assert time.monotonic() < deadline, "the reader never waited for the migration's lock"
            time.sleep(0.05)


def _migrate(url, cli, repo, keys, tsa, deployment, *, bad: bool, trust=None):
    _workload(url)
    extra = ("--trust", str(trust)) if trust else ()
    pre = _run(cli, repo, keys, tsa, deployment, "--phase", "pre_migration")
    assert [s["name"] for s in pre["steps"]] == ["snapshot_performance", "record_table_sizes", "capture_query_patterns"]
    assert not pre["sealed"]
    holder = _connect(url)
    waiter_done = threading.Event()
    if bad:
        holder.autocommit = False
        holder.execute("DROP INDEX orders_customer")
        holder.execute("ALTER TABLE orders ALTER COLUMN note SET NOT NULL")
        holder.execute("UPDATE orders SET amount = amount + 1 WHERE id = 1")

        def reader() -> None:
            with _connect(url) as db:
                db.execute("SELECT count(*) FROM orders").fetchone()
            waiter_done.set()

        threading.Thread(target=reader, daemon=True).start()
        _until_a_query_waits_for_a_lock(url)  # the reader's connection may take a while under load
        time.sleep(1.0)  # the lock is now held (and waited for) longer than 30 s / 60
    else:
        holder.execute("ALTER TABLE orders ADD COLUMN region text")
    during = _run(cli, repo, keys, tsa, deployment, "--phase", "during_migration")
    assert not during["sealed"]
    if bad:
        holder.commit()
        assert waiter_done.wait(10)
    holder.close()
    _workload(url, failing_inserts=60 if bad else 0)
    post = _run(cli, repo, keys, tsa, deployment, *extra)
    assert post["sealed"]
    return post, _records(repo, deployment)


@pytest.mark.slow
def test_seed_example2_quiet_migration_is_a_success(tmp_path, cli, keys, tsa, fresh_postgres_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", fresh_postgres_url)
    _setup(fresh_postgres_url)
    repo = tmp_path / "evidence"
    assert cli("init", str(repo)).code == 0
    outcome, records = _migrate(fresh_postgres_url, cli, repo, keys, tsa, "m-quiet", bad=False)

    snapshot = records["snapshot_performance"]
    assert snapshot["status"] == "ok"
    assert snapshot["result"]["snapshot"]["source"] == "pg_stat_database"  # not preloaded here
    assert "pg_stat_statements" in snapshot["result"]["snapshot"]["source_reason"]
    patterns = records["capture_query_patterns"]
    assert patterns["status"] == "ok"
    assert patterns["result"]["source"] == "pg_stat_database"
    assert patterns["result"]["outputs"]["rows"][0]["datname"]
    sizes = records["record_table_sizes"]["result"]
    assert {r["table_name"] for r in sizes["outputs"]["rows"]} == {"orders", "customers"}
    assert all(r["total_bytes"] > 0 for r in sizes["outputs"]["rows"])
    fingerprints = {f["table"]: f for f in sizes["fingerprints"]}
    assert fingerprints["public.orders"]["rows"] == ROWS
    assert fingerprints["public.customers"]["rows"] == 100

    locks = records["monitor_locks"]
    assert locks["status"] == "ok", locks.get("error")
    assert locks["result"]["outputs"]["alert"] is False
    assert locks["result"]["outputs"]["longest_lock_wait"] < 0.5
    blocked = records["track_blocked_queries"]["result"]["outputs"]
    assert blocked["value"] == 0
    lag = records["measure_replication_lag"]["result"]["outputs"]["rows"][0]
    assert lag["replication_lag_seconds"] == 0
    assert lag["replicas"] == 0
    assert lag["replication"].startswith("not applicable")

    integrity = records["verify_data_integrity"]
    assert integrity["status"] == "ok", integrity.get("error")
    assert integrity["result"]["outputs"] == {"passed": True, "failed": [], "changed_tables": []}
    orders = next(t for t in integrity["result"]["tables"] if t["name"] == "public.orders")
    assert orders["before"] == orders["after"]  # the added column does not count

    for name in ("compare_performance", "analyze_user_impact"):
        record = records[name]
        assert record["status"] == "ok", (name, record.get("error"), record["result"].get("comparison"))
        assert record["result"]["outputs"]["degraded"] is False
        assert record["result"]["comparison"]["transactions"]["window"] >= LOOKUPS * 0  # counted
    assert outcome["decision"]["action"] == "mark_successful", outcome["decision"]

    lessons = records["generate_lessons_learned"]["result"]["findings"]
    assert lessons["alerted"] == []
    assert lessons["changed"]["lock_alert"] is False
    assert lessons["changed"]["blocked_queries"] == 0
    assert lessons["durations"]["window_seconds"] > 0

    correlation = records["correlation"]
    assert correlation["status"] == "ok"
    assert all(f["status"].startswith("not computed") for f in correlation["result"]["figures"].values())


@pytest.mark.slow
def test_seed_example2_bad_migration_alerts_on_every_step(tmp_path, cli, keys, tsa, fresh_postgres_url, monkeypatch, trust_file, attacker):
    from conftest import build_deployment

    monkeypatch.setenv("DATABASE_URL", fresh_postgres_url)
    _setup(fresh_postgres_url)
    repo = tmp_path / "evidence"
    assert cli("init", str(repo)).code == 0
    # Past evidence: one branch signed by a key the auditor does not trust.
    build_deployment(repo, attacker, tsa, service="orders-db", deployment="forged")
    # and one earlier migration, recorded by this workflow (it verifies).
    earlier, _ = _migrate(fresh_postgres_url, cli, repo, keys, tsa, "m-earlier", bad=False, trust=trust_file)
    assert earlier["decision"]["action"] == "mark_successful"
    outcome, records = _migrate(fresh_postgres_url, cli, repo, keys, tsa, "m-bad", bad=True, trust=trust_file)

    locks = records["monitor_locks"]
    assert locks["status"] == "failed"
    assert locks["result"]["outputs"]["alert"] is True
    assert locks["result"]["outputs"]["longest_lock_wait"] > 0.5
    assert "alert threshold exceeded" in locks["error"]
    held = [lk for lk in locks["result"]["outputs"]["rows"][0]["locks"] if lk["mode"] == "AccessExclusiveLock"]
    assert held and held[0]["granted"]
    blocked = records["track_blocked_queries"]["result"]["outputs"]
    assert blocked["value"] >= 1
    assert blocked["rows"][0]["blocked"][0]["blocked_by"]

    integrity = records["verify_data_integrity"]
    assert integrity["status"] == "failed"
    assert integrity["result"]["outputs"]["changed_tables"] == ["public.orders"]
    assert "checksum changed" in integrity["error"]

    compare = records["compare_performance"]
    assert compare["status"] == "failed", compare["result"]["comparison"]
    assert "mean_statement_time" in compare["result"]["outputs"]["degraded_measures"]
    impact = records["analyze_user_impact"]
    assert impact["status"] == "failed", impact["result"]["comparison"]
    assert "rollback_ratio" in impact["result"]["outputs"]["degraded_measures"]

    assert outcome["decision"]["action"] == "alert", outcome["decision"]
    lessons = records["generate_lessons_learned"]["result"]["findings"]
    assert {a["step"] for a in lessons["alerted"]} >= {"monitor_locks", "verify_data_integrity", "compare_performance", "analyze_user_impact"}
    assert lessons["changed"]["tables"] == ["public.orders"]
    assert lessons["changed"]["lock_alert"] is True
    assert lessons["durations"]["longest_lock_seconds"] > 0.5

    # Correlation read the past through the verifier: the forged branch is excluded and
    # named, the earlier migration is the one deployment behind each figure.
    correlation = records["correlation"]["result"]
    assert [e["deployment"] for e in correlation["excluded"]] == ["forged"]
    assert correlation["excluded"][0]["reason"]  # the failed check and why
    assert correlation["verified"] == ["m-earlier"]
    (past,) = correlation["migrations"]
    assert past["deployment"] == "m-earlier" and past["impact"] is False
    assert past["size_bytes"] > 0 and past["duration_seconds"] > 0 and past["table_class"] == "small"
    for figure in correlation["figures"].values():
        assert figure["status"] == "not enough data" and figure["deployments"] == 1, figure
    assert correlation["minimum"] == 5


NAMED = """\
name: named_tables
workflow:
  before:
    - snapshot_performance
    - record_table_sizes
  after:
    - verify_data_integrity: [customers]
    - compare_performance
"""


@pytest.mark.slow
def test_named_tables_only_those_are_fingerprinted_and_checked(tmp_path, cli, keys, tsa, fresh_postgres_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", fresh_postgres_url)
    _setup(fresh_postgres_url)
    workflow = tmp_path / "named.yaml"
    workflow.write_text(NAMED)
    repo = tmp_path / "evidence"
    assert cli("init", str(repo)).code == 0

    def run(deployment: str, change: str):
        for extra in (("--phase", "before"), ()):
            result = cli(
                "run", str(workflow), "--service", "orders-db", "--deployment", deployment, "--repo", str(repo),
                "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--no-prefect", "--json", *extra,
            )
            assert result.code == 0, result.err + result.out
            if not extra:
                break
            with _connect(fresh_postgres_url) as db:
                db.execute(change)
        records = {}
        from afdp.evidence.ledger import decode_envelope, trailers
        from afdp.evidence.names import branch_ref
        from afdp.evidence.records import ENVELOPE_FILE, KIND_STEP, record_dir
        from afdp.evidence.store import EvidenceStore

        store = EvidenceStore(repo)
        for commit in store.history(store.head(branch_ref("orders-db", deployment))):
            info = trailers(store.message_of(commit))
            if info.get("AFDP-Kind") == KIND_STEP:
                files = store.list_dir(commit.tree, record_dir(int(info["AFDP-Record"]), info["AFDP-Step"]))
                records[info["AFDP-Step"]] = decode_envelope(files[ENVELOPE_FILE])["predicate"]
        return records

    # A table that is not named may change: only customers is fingerprinted and checked.
    quiet = run("n-1", "UPDATE orders SET amount = 0 WHERE id = 2")
    assert [f["table"] for f in quiet["record_table_sizes"]["result"]["fingerprints"]] == ["public.customers"]
    assert quiet["verify_data_integrity"]["status"] == "ok"
    assert [t["name"] for t in quiet["verify_data_integrity"]["result"]["tables"]] == ["public.customers"]
    # A deleted row of a named table is found.
    bad = run("n-2", "DELETE FROM customers WHERE id = 7")
    integrity = bad["verify_data_integrity"]
    assert integrity["status"] == "failed"
    assert integrity["result"]["outputs"]["changed_tables"] == ["public.customers"]
    assert "rows 100 -> 99" in integrity["error"]
