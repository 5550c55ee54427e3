"""A check that fails fails its step, and that reaches the decision (issue 10, item 6).

Real parts: a SQLite database read by the SQL collector, the embedded TSA over loopback
HTTP, a real evidence repository, ``afdp run --no-prefect`` through the CLI entry point.
Before: a failing ``verify_data_integrity`` check or a ``monitor_locks`` whose alert
threshold fired left its step "ok", and the default decision was mark_successful.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

PERMISSIVE = "version: 1\nname: test-permissive\nallowed_collector_types: [prometheus, scrape, sql, rest]\n"

WORKFLOW = """\
name: failed_checks
version: "1"
variables:
  LOST_ORDERS: "0"
  LOCK_WAIT: "0"
collectors:
  db:
    type: sql
    url: ${env.SHOP_DB}
workflow:
  deployment:
    - mark_deployment_time
  post_deployment:
    - monitor_locks:
        collector: db
        query: SELECT ${workflow.LOCK_WAIT} AS longest_lock_wait_seconds
        alert_threshold: 30s
    - verify_data_integrity:
        collector: db
        checks:
          orders_kept:
            query: SELECT count(*) - ${workflow.LOST_ORDERS} FROM orders
            expect: 3
    - decisions
decisions:
  ship_it:                        # matches always: only a failed step may stop it
    condition: deployment.service == 'shop'
    action: mark_successful
"""


@pytest.fixture()
def shop(tmp_path: Path) -> Path:
    database = tmp_path / "shop.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
        connection.executemany("INSERT INTO orders VALUES (?)", [(1,), (2,), (3,)])
    return database


def _run(cli, tmp_path: Path, keys: Path, tsa, shop: Path, monkeypatch, deployment: str, *settings: str):
    monkeypatch.setenv("SHOP_DB", f"sqlite:///{shop}")
    evidence = tmp_path / "evidence"
    if not evidence.exists():
        assert cli("init", str(evidence)).code == 0
    workflow, policy = tmp_path / "wf.yaml", tmp_path / "policy.yaml"
    workflow.write_text(WORKFLOW)
    policy.write_text(PERMISSIVE)
    result = cli(
        "run", str(workflow), "--service", "shop", "--deployment", deployment, "--repo", str(evidence),
        "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--policy", str(policy), "--no-prefect", "--json",
        *[x for s in settings for x in ("--set", s)],
    )
    assert result.code == 0, result.err
    outcome = json.loads(result.out)
    return outcome, {s["name"]: s for s in outcome["steps"]}


def test_everything_holds_is_success(cli, tmp_path, keys, tsa, shop, monkeypatch):
    outcome, steps = _run(cli, tmp_path, keys, tsa, shop, monkeypatch, "ok-1")
    assert steps["verify_data_integrity"]["status"] == "ok", steps["verify_data_integrity"]
    assert steps["monitor_locks"]["status"] == "ok"
    assert outcome["decision"]["action"] == "mark_successful"


def test_a_check_that_does_not_hold_fails_its_step_and_the_decision(cli, tmp_path, keys, tsa, shop, monkeypatch):
    outcome, steps = _run(cli, tmp_path, keys, tsa, shop, monkeypatch, "bad-1", "workflow.LOST_ORDERS=1")
    integrity = steps["verify_data_integrity"]
    assert integrity["status"] == "failed"
    assert "orders_kept: expected 3, got 2" in integrity["error"]
    assert outcome["decision"]["action"] == "alert"
    assert outcome["decision"]["label"] == "degraded"
    assert "step 'verify_data_integrity' failed" in outcome["decision"]["reason"]


def test_a_monitor_whose_alert_fires_fails_its_step_and_the_decision(cli, tmp_path, keys, tsa, shop, monkeypatch):
    outcome, steps = _run(cli, tmp_path, keys, tsa, shop, monkeypatch, "lock-1", "workflow.LOCK_WAIT=45")
    monitor = steps["monitor_locks"]
    assert monitor["status"] == "failed"
    assert "alert threshold exceeded: 45s > 30s" in monitor["error"]
    assert outcome["decision"]["action"] == "alert"
    assert "step 'monitor_locks' failed" in outcome["decision"]["reason"]
