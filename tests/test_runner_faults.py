"""Faults through the whole runner: each is a failed step with a clear reason, the flow
still reaches a decision, and the branch verifies.

Real parts: a SQLite database (SQL collector), a loopback HTTP server answering a
malformed exposition page and an HTML page where JSON is expected, a Prometheus URL with
nothing listening, the embedded TSA and a real Git repository.
"""

from __future__ import annotations

import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from infra import free_port

from afdp.evidence.trust import load_trust_policy
from afdp.pipeline.runner import RunRequest, run_workflow
from afdp.verify.verifier import verify_branch
from afdp.workflow import load_workflow

WORKFLOW = """\
name: faults
version: "1"
variables:
  BAD_URL: http://127.0.0.1:1
  DEAD_PORT: "1"
collectors:
  db:
    type: sql
    url: ${env.FAULTS_DB_URL}
  page:
    type: scrape
    url: ${workflow.BAD_URL}/malformed
    timeout: 2s
  api:
    type: rest
    url: ${workflow.BAD_URL}/html
    timeout: 2s
  prom:
    type: prometheus
    url: http://127.0.0.1:${workflow.DEAD_PORT}
    timeout: 2s
metrics:
  orders:
    collector: db
    query: SELECT count(*) FROM orders
    unit: count
  page_metric:
    collector: page
    metric: some_metric
    unit: count
  api_value:
    collector: api
    select: data.value
    unit: count
  prom_metric:
    collector: prom
    query: up
    unit: count
workflow:
  pre_deployment:
    - capture_baseline:
        duration: 1s
        interval: 250ms
        metrics: [orders, page_metric, api_value, prom_metric]
  deployment:
    - mark_deployment_time
    - record_table_sizes:
        collector: db
        query: SELECT count(*) AS n FROM orders
    - capture_query_patterns:
        collector: db
        query: DELETE FROM orders
    - verify_data_integrity:
        collector: db
        checks:
          three_orders:
            query: SELECT count(*) FROM orders
            expect: 3
          impossible:
            query: SELECT count(*) FROM orders WHERE id < 0
            expect: 1
  post_deployment:
    - capture_impact:
        duration: 1s
        interval: 250ms
        metrics: [same_as_baseline]
    - analyze_differences:
        thresholds:
          orders_increase: 1
    - decisions
success_criteria:
  - orders.increase < 1
decisions:
  investigate:
    condition: not all_metrics_within_normal
    action: alert
"""


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/malformed"):
            body, kind = b"this is { not the exposition format\n", "text/plain; version=0.0.4"
        else:
            body, kind = b"<!DOCTYPE html><html><body>Login</body></html>", "text/html"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002
        pass


@pytest.fixture()
def bad_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_faults_are_failed_steps_and_the_flow_still_decides(tmp_path, bad_server, repo, signer, tsa, trust_file):
    database = tmp_path / "shop.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
        connection.executemany("INSERT INTO orders VALUES (?)", [(1,), (2,), (3,)])
    path = tmp_path / "faults.yaml"
    path.write_text(WORKFLOW)
    workflow = load_workflow(path)
    request = RunRequest(
        workflow=workflow,
        repository=repo,
        service="shop",
        deployment="f-1",
        signer=signer,
        tsa_urls=(tsa.url,),
        overrides={"BAD_URL": bad_server, "DEAD_PORT": str(free_port())},
        env={"FAULTS_DB_URL": f"sqlite:///{database}"},
    )
    outcome = run_workflow(request)
    steps = {s.name: s for s in outcome.steps}

    baseline = steps["capture_baseline"]
    assert baseline.status == "failed"
    assert "captured 1/4" in baseline.summary
    error = baseline.error
    assert "page_metric: " in error and "malformed exposition page" in error
    assert "api_value: " in error and "HTML" in error.upper()
    assert "prom_metric: " in error
    assert "orders: " not in error

    assert steps["record_table_sizes"].status == "ok"
    queried = steps["capture_query_patterns"]
    assert queried.status == "failed" and "DELETE" in queried.error.upper()

    integrity = steps["verify_data_integrity"]
    # a check that does not hold fails its step (issue 10: it used to stay "ok")
    assert integrity.status == "failed" and "1/2 check(s) passed" in integrity.summary
    assert "expected" in integrity.error and "got" in integrity.error

    assert steps["analyze_differences"].status == "ok"
    assert outcome.decision["action"] == "alert"
    assert outcome.sealed
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM orders").fetchone()[0] == 3  # nothing written
    verify_branch(repo, service="shop", deployment="f-1", policy=load_trust_policy(trust_file))
