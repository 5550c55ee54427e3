"""The guide's ``collectors:`` block, pasted as written, validates, plans and runs.

The snippet (tests/seeds/collectors.yaml, verbatim) is completed with the smallest rest:
a name, one metric per collector, and a baseline / deployment / impact / analysis. Read
as docs/workflows.md ("Collectors as the guide writes them") says:

- ``type: pull`` + ``endpoint`` + ``query_template``: a Prometheus collector at that URL
  whose template is the query of each metric on it that gives none;
- ``type: sql`` + ``connection: $DATABASE_URL`` + ``query``: the database URL is the
  environment secret ``${env.DATABASE_URL}``; the query is the default of its metrics;
- ``type: rest`` + ``endpoint`` + ``headers: {Authorization: Bearer $API_TOKEN}``: the
  token is the environment secret ``${env.API_TOKEN}``, sent, never written.

The end-to-end tests run ``afdp run`` through the CLI against real sources: Debian's
Prometheus scraping the demo service, a real PostgreSQL (its URL, with a password, only in
the environment as DATABASE_URL) and a loopback REST server that answers only the right
Bearer token. Only the two host names the guide invents (``prometheus:9090``,
``api.internal``) are replaced by the loopback addresses, as a user replaces them by theirs.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from collectors.helpers import Answer, serve
from infra import wait_for_series

from afdp.demo.service import DemoService
from afdp.workflow import load_workflow
from afdp.workflow.plan import plan_workflow

SEED = Path(__file__).parent / "seeds" / "collectors.yaml"
TOKEN = "tok-9c2f7e1b5a-seed-collectors"
DB_PASSWORD = "pw-seed-4f81d2c7"

# The smallest rest: a name, metrics that read from the three collectors, and a workflow.
REST = """
metrics:
  request_rate:            # no query: the collector's query_template
    collector: prometheus
    aggregate: sum         # the demo service answers one series per status code
    unit: 1/s
  active_users:            # no query: the collector's query, column active_users
    collector: custom_database
    better: higher
  revenue_per_minute:
    collector: business_api
    select: revenue_per_minute
    unit: $/min
    better: higher
workflow:
  - capture_baseline:
      metrics: [request_rate, active_users, revenue_per_minute]
      duration: 5m
  - mark_deployment_time
  - capture_impact:
      duration: 5m
  - analyze_differences:   # the request rate is captured and recorded, not judged
      metrics: [active_users, revenue_per_minute]
"""


def seed_text(*, prometheus: str | None = None, api: str | None = None) -> str:
    text = "name: seed_collectors\n" + SEED.read_text() + REST
    if prometheus is not None:
        text = text.replace("http://prometheus:9090", prometheus)
    if api is not None:
        text = text.replace("https://api.internal", api)
    return text


def write(tmp_path: Path, text: str, name: str = "collectors.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- validate and plan -------------------------------------------------------------------


def test_the_seed_validates_with_notes_saying_how_it_was_read(tmp_path, cli) -> None:
    path = write(tmp_path, seed_text())
    result = cli("validate", str(path), "--json")
    assert result.code == 0, result.out
    report = result.json()
    assert report["valid"] and not report["findings"], report["findings"]
    notes = {(n["path"], n["message"].split(":")[0]) for n in report["notes"]}
    messages = " | ".join(n["message"] for n in report["notes"])
    assert ("collectors.prometheus.type", "type") in notes
    assert "type: pull is read as type: prometheus" in messages
    assert "endpoint: is read as url:, the Prometheus HTTP API's base URL" in messages
    assert "query_template: is the query of every metric on collector 'prometheus'" in messages
    assert "$DATABASE_URL is read as the environment secret ${env.DATABASE_URL}" in messages
    assert "$API_TOKEN is read as the environment secret ${env.API_TOKEN}" in messages
    assert "connection: is read as url:" in messages
    assert "query: is the query of every metric on collector 'custom_database'" in messages
    human = cli("validate", str(path))
    assert human.code == 0
    assert f"{path}:4:5: collectors.prometheus.type: note: type: pull is read as type: prometheus" in human.out
    assert "collectors.business_api.headers.Authorization: note: $API_TOKEN is read as" in human.out


def test_the_seed_compiles_to_typed_collectors_and_metrics(tmp_path) -> None:
    workflow = load_workflow(write(tmp_path, seed_text()))
    prometheus = workflow.collector("prometheus")
    assert prometheus.type == "prometheus" and prometheus.url.source == "http://prometheus:9090"
    assert prometheus.url_key == "endpoint" and prometheus.default_query_key == "query_template"
    database = workflow.collector("custom_database")
    assert database.type == "sql" and database.url_key == "connection"
    assert [str(p) for p in database.url.placeholders] == ["${env.DATABASE_URL}"]
    api = workflow.collector("business_api")
    (name, header), = api.headers
    assert name == "Authorization" and header.secret
    assert [str(p) for p in header.placeholders] == ["${env.API_TOKEN}"]
    rate = workflow.metric("request_rate")
    assert rate.query is not None and rate.query.source == "sum(rate(http_requests_total[5m]))"
    users = workflow.metric("active_users")
    assert users.query is not None and users.query.source.startswith("SELECT COUNT(*) as active_users")
    assert "INTERVAL '5 minutes'" in users.query.source and users.column == "active_users"


def test_the_plan_shows_the_queries_and_never_a_secret(tmp_path, cli, monkeypatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{DB_PASSWORD}@db.internal/shop")
    monkeypatch.setenv("API_TOKEN", TOKEN)
    path = write(tmp_path, seed_text())
    result = cli("plan", str(path), "--set", "deployment.service=api", "--set", "deployment.id=d-1", "--json")
    assert result.code == 0, result.out + result.err
    plan = result.json()
    collectors = {c["name"]: c for c in plan["collectors"]}
    assert collectors["prometheus"]["type"] == "prometheus"
    assert collectors["prometheus"]["url"] == "http://prometheus:9090"
    assert collectors["custom_database"]["url"] == "[redacted env.DATABASE_URL]"
    assert collectors["business_api"]["headers"] == {"Authorization": "Bearer [redacted env.API_TOKEN]"}
    metrics = {m["name"]: m for m in plan["metrics"]}
    assert metrics["request_rate"]["query"] == "sum(rate(http_requests_total[5m]))"
    assert "FROM sessions" in metrics["active_users"]["query"]
    human = cli("plan", str(path), "--set", "deployment.service=api", "--set", "deployment.id=d-1")
    for text in (result.out, human.out):
        assert TOKEN not in text and DB_PASSWORD not in text and "$API_TOKEN" not in text


def test_metric_name_placeholder_in_a_query_template(tmp_path) -> None:
    text = """name: templated
collectors:
  prometheus:
    type: pull
    endpoint: http://127.0.0.1:9090
    query_template: sum(rate(${metric.name}{service="${deployment.service}"}[1m]))
metrics:
  http_requests_total: {collector: prometheus, unit: 1/s}
  http_errors_total: {collector: prometheus, unit: 1/s}
  latency: {collector: prometheus, query: 'avg(up)', unit: s}
  busiest: {collector: prometheus, query: 'rate(cpu_seconds_total[1m])', aggregate: max, unit: s}
workflow:
  - capture_baseline: {metrics: [http_requests_total, http_errors_total, latency, busiest], duration: 1m}
  - mark_deployment_time
  - capture_impact: {duration: 1m}
  - analyze_differences
"""
    workflow = load_workflow(write(tmp_path, text))
    assert workflow.metric("http_requests_total").query.source == (
        'sum(rate(http_requests_total{service="${deployment.service}"}[1m]))'
    )
    assert workflow.metric("http_errors_total").query.source.startswith("sum(rate(http_errors_total{")
    assert workflow.metric("latency").query.source == "avg(up)"  # its own query wins
    assert workflow.metric("busiest").query.source == "max(rate(cpu_seconds_total[1m]))"
    plan = plan_workflow(workflow, deployment={"service": "api", "id": "d-1"})
    rendered = {m["name"]: m["query"] for m in plan.to_json()["metrics"]}
    assert rendered["http_errors_total"] == 'sum(rate(http_errors_total{service="api"}[1m]))'


def _problems(cli, tmp_path, text: str) -> list[str]:
    result = cli("validate", str(write(tmp_path, text, "bad.yaml")))
    assert result.code == 1, result.out
    return [line for line in result.out.splitlines() if line.startswith(str(tmp_path))]


BASE = "name: bad\ncollectors:\n  src:\n{collector}\nmetrics:\n  m: {{collector: src, {metric}unit: count}}\nworkflow:\n  - capture_baseline: {{metrics: [m], duration: 1m}}\n  - mark_deployment_time\n  - capture_impact: {{duration: 1m}}\n  - analyze_differences\n"


@pytest.mark.parametrize(
    ("collector", "metric", "message"),
    [
        ("    type: pull\n    url: http://a:1\n    endpoint: http://b:2", "", "collectors.src.endpoint: url and endpoint both give the address; write one of them"),
        ("    type: pull", "", "collectors.src: the collector needs an address: endpoint: or url:"),
        ("    type: sql", "", "the collector needs an address: connection:"),
        ("    type: pull\n    connection: http://a:1", "", "connection: is a sql collector's database URL; a prometheus collector is reached at endpoint:"),
        ("    type: sql\n    endpoint: postgresql://a/b", "", "a sql collector's database URL is written connection:"),
        ("    type: sql\n    connection: $DB\n    query_template: SELECT 1", "", "'query_template' does not apply to a sql collector"),
        ("    type: pull\n    endpoint: http://a:1\n    query: up", "", "'query' does not apply to a prometheus collector"),
        ("    type: rest\n    endpoint: http://a:1/x\n    query: SELECT 1", "select: v, ", "'query' does not apply to a rest collector"),
        ("    type: pull\n    endpoint: http://a:1\n    query_template: rate(${metric.unit}[1m])", "", "${metric.unit}: a collector's query_template knows only ${metric.name}"),
        ("    type: pull\n    endpoint: http://a:1", "", "metric 'm' reads from prometheus collector 'src', so it needs 'query'"),
        ("    type: pull\n    endpoint: http://a:1\n    query_template: up{token=\"${env.T}\"}", "", "${env.T} is a secret"),
        ("    type: rest\n    endpoint: http://a:1/x?token=$API_TOKEN", "select: v, ", "${env.API_TOKEN} is a secret; secrets may only stand where credentials go"),
        ("    type: rest\n    endpoint: http://$API_HOST/x", "select: v, ", "not in a URL's host"),
        ("    type: pulled\n    endpoint: http://a:1", "", "expected one of: prometheus, pull, scrape, sql, rest; did you mean 'pull'?"),
    ],
)
def test_collector_keys_refused_with_a_located_reason(tmp_path, cli, collector, metric, message) -> None:
    problems = _problems(cli, tmp_path, BASE.format(collector=collector, metric=metric))
    assert any(message in line for line in problems), problems
    assert all("Traceback" not in line for line in problems)


def test_a_literal_dollar_is_written_twice(tmp_path) -> None:
    text = BASE.format(
        collector="    type: rest\n    endpoint: http://127.0.0.1:9/x\n    headers:\n      X-Price: $$PRICE",
        metric="select: v, ",
    )
    workflow = load_workflow(write(tmp_path, text))
    (_, header), = workflow.collector("src").headers
    assert header.is_literal and header.render({}) == "$PRICE"


def test_dollar_names_stay_errors_in_conditions_and_money_still_parses(tmp_path, cli) -> None:
    rest = seed_text() + "  - decisions\ndecisions:\n  lost_revenue:\n    condition: revenue_per_minute.decrease > {limit}\n    action: rollback\n"
    ok = cli("validate", str(write(tmp_path, rest.format(limit="$1000_per_hour"), "money.yaml")))
    assert ok.code == 0, ok.out
    bad = cli("validate", str(write(tmp_path, rest.format(limit="$API_TOKEN"), "secret.yaml")))
    assert bad.code == 1, bad.out
    assert "decisions.lost_revenue.condition: invalid condition: $API_TOKEN is not read in conditions" in bad.out


def test_the_policy_judges_the_real_database_target_behind_dollar_database_url(tmp_path, cli, monkeypatch, keys, tsa) -> None:
    policy = write(
        tmp_path,
        "version: 1\nallowed_collector_hosts: [prometheus, api.internal, db.allowed]\nunresolved_hosts: allow\n",
        "policy.yaml",
    )
    path = write(tmp_path, seed_text())
    assert cli("validate", str(path), "--policy", str(policy)).code == 0
    monkeypatch.setenv("API_TOKEN", TOKEN)
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{DB_PASSWORD}@db.elsewhere/shop")
    result = cli(
        "run", str(path), "--service", "api", "--deployment", "d-1", "--repo", str(tmp_path / "ev"),
        "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--policy", str(policy), "--no-prefect",
    )  # fmt: skip
    assert result.code == 1, result.out + result.err
    assert (
        "collectors.custom_database: allowed_collector_hosts: collector 'custom_database' connects to "
        "a host from ${env.*} (as the database driver reads the URL), which the policy does not allow"
    ) in result.err
    assert not (tmp_path / "ev").exists()  # refused before anything was written
    assert DB_PASSWORD not in result.err and "db.elsewhere" not in result.err
    types = write(tmp_path, "version: 1\nallowed_collector_types: [prometheus, rest]\n", "types.yaml")
    refused = cli("validate", str(path), "--policy", str(types))
    assert refused.code == 1
    assert "collector 'custom_database' is a sql collector" in refused.out
    assert "allowed_collector_types: collector 'prometheus'" not in refused.out  # pull is prometheus


# --- real sources ------------------------------------------------------------------------


class BusinessApi:
    """The guide's ``business_api``: answers revenue per minute (±2% noise) only to the
    right Bearer token; records every request's Authorization header."""

    def __init__(self, revenue: float = 120.0) -> None:
        self.revenue = revenue
        self.authorizations: list[str | None] = []
        self._random = random.Random(7)
        self._lock = threading.Lock()

    def __call__(self, request: dict) -> Answer:
        authorization = request["headers"].get("Authorization")
        with self._lock:
            self.authorizations.append(authorization)
            noise = self._random.uniform(-0.02, 0.02)
        if authorization != f"Bearer {TOKEN}":
            return Answer(status=401, body=b'{"error": "unauthorized"}')
        if request["path"] != "/v1/metrics":
            return Answer(status=404, body=b'{"error": "not found"}')
        return Answer(body=json.dumps({"revenue_per_minute": self.revenue * (1 + noise)}).encode())


def test_the_rest_collector_sends_the_token_from_the_environment_never_the_text(tmp_path) -> None:
    from datetime import UTC, datetime

    from afdp.pipeline.collectors import CollectorFailed, capture_metric

    api = BusinessApi()
    with serve(api) as server:
        workflow = load_workflow(write(tmp_path, seed_text(api=server.url)))
        values = workflow.values(deployment={"service": "api", "id": "d-1"})
        at = datetime.now(UTC)
        data = capture_metric(
            workflow, "revenue_per_minute", values=values, env={"API_TOKEN": TOKEN}, start=at, end=at
        )
        assert 117 < data.values()[0] < 123
        assert api.authorizations == [f"Bearer {TOKEN}"]
        assert TOKEN not in json.dumps(data.to_json())
        assert data.provenance["headers"] == ["Authorization"]
        with pytest.raises(CollectorFailed, match="API_TOKEN is not set"):
            capture_metric(workflow, "revenue_per_minute", values=values, env={}, start=at, end=at)
    assert len(api.authorizations) == 1  # nothing was sent without the secret, least of all "$API_TOKEN"


def test_a_missing_environment_variable_stops_the_run_before_anything_is_written(tmp_path, cli, monkeypatch, keys, tsa) -> None:
    path = write(tmp_path, seed_text())
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@127.0.0.1:9/shop")
    monkeypatch.delenv("API_TOKEN", raising=False)
    result = cli(
        "run", str(path), "--service", "api", "--deployment", "d-1", "--repo", str(tmp_path / "ev"),
        "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--no-prefect",
    )  # fmt: skip
    assert result.code == 2, result.out + result.err  # a usage error (DESIGN.md: exit codes)
    assert "needs environment variable(s) API_TOKEN (${env.API_TOKEN}); set them before running" in result.err
    assert result.err.count("\n") == 1 and not (tmp_path / "ev").exists()


class Sessions:
    """A ``sessions`` table kept near ``target`` users seen now (plus stale sessions the
    seed's query must leave out), replaced in one transaction every 0.1 s."""

    def __init__(self, url: str, target: int = 200) -> None:
        import sqlalchemy

        self.target = target
        self._engine = sqlalchemy.create_engine(url)
        self._random = random.Random(11)
        self._stop = threading.Event()
        with self._engine.begin() as connection:
            connection.exec_driver_sql(
                "CREATE TABLE sessions (user_id integer NOT NULL, last_seen timestamptz NOT NULL)"
            )
        self._refresh()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _refresh(self) -> None:
        count = self.target + self._random.randint(-4, 4)
        with self._engine.begin() as connection:
            connection.exec_driver_sql("DELETE FROM sessions")
            connection.exec_driver_sql(
                "INSERT INTO sessions SELECT g, now() - mod(g, 200) * interval '1 second' "
                f"FROM generate_series(1, {count}) AS g"
            )
            connection.exec_driver_sql(
                "INSERT INTO sessions SELECT g, now() - interval '1 hour' FROM generate_series(1, 50) AS g"
            )

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self._refresh()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._engine.dispose()


def _blobs(repo: Path) -> bytes:
    """Every object in the evidence repository, decompressed."""
    return subprocess.run(
        ["git", "-C", str(repo), "cat-file", "--batch-all-objects", "--batch"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip


def _run_seed(tmp_path, cli, prometheus_server, keys, tsa, monkeypatch, database_url, *, regression: bool):
    repo = tmp_path / "evidence"
    assert cli("init", str(repo)).code == 0
    api = BusinessApi()
    password_url = database_url.replace("postgres@", f"postgres:{DB_PASSWORD}@", 1)
    sessions = Sessions(database_url)
    try:
        with DemoService(name="api", version="v1") as service, serve(api) as server:
            prometheus = prometheus_server([service.metrics_url])
            wait_for_series(prometheus, 'http_requests_total{service="api"}')
            path = write(tmp_path, seed_text(prometheus=prometheus, api=server.url))
            monkeypatch.setenv("DATABASE_URL", password_url)
            monkeypatch.setenv("API_TOKEN", TOKEN)
            common = (
                str(path), "--service", "api", "--deployment", "seed-1", "--commit", "4f2a9c1",
                "--repo", str(repo), "--key", str(keys / "dev.key"), "--tsa", tsa.url,
                "--time-scale", "30", "--no-prefect", "--json",
            )  # fmt: skip
            before = cli("run", *common, "--phase", "pre")
            assert before.code == 0, before.err
            if regression:  # the deploy loses users and revenue
                service.deploy("v2")
                sessions.target, api.revenue = 80, 60.0
            else:
                service.deploy("v1")
            after = cli("run", *common, "--phase", "post")
    finally:
        sessions.close()
    assert after.code == 0, after.err  # alert or success: the run completed
    outcome = json.loads(after.out)
    assert [s["summary"] for s in outcome["steps"] if s["kind"] == "capture"] == ["captured 3/3 metric(s)"] * 2
    for step in ("000001-capture_baseline", "000003-capture_impact"):
        rate = _series(repo, step, "request_rate")
        assert rate["provenance"]["type"] == "prometheus" and rate["provenance"]["source"] == prometheus
        assert rate["provenance"]["query"] == "sum(rate(http_requests_total[5m]))"  # the template
        assert len(rate["samples"]) >= 3 and all(v > 0 for _, v in rate["samples"])
        users = _series(repo, step, "active_users")["provenance"]
        assert users["source"] == "[redacted env.DATABASE_URL]" and users["dialect"] == "postgresql"
        assert users["query"].startswith("SELECT COUNT(*) as active_users") and users["read_only"]
        assert users["meaning"] == "column active_users of the first row at each read"
        revenue = _series(repo, step, "revenue_per_minute")["provenance"]
        assert revenue["headers"] == ["Authorization"] and revenue["source"] == server.url + "/v1/metrics"
    assert api.authorizations and set(api.authorizations) == {f"Bearer {TOKEN}"}
    blobs = _blobs(repo)
    assert b"[redacted env.DATABASE_URL]" in blobs
    for secret in (TOKEN, DB_PASSWORD):
        assert secret.encode() not in blobs
        assert base64.b64encode(secret.encode()) not in blobs
    return repo, outcome


def _series(repo: Path, step: str, metric: str) -> dict:
    shown = subprocess.run(
        ["git", "-C", str(repo), "show", f"afdp/api/seed-1:records/000/{step}/series-{metric}.json"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return json.loads(shown)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus is not installed")
def test_seed_collectors_regression_is_decided_alert(tmp_path, cli, prometheus_server, keys, tsa, trust_file, monkeypatch, fresh_postgres_url) -> None:
    repo, outcome = _run_seed(
        tmp_path, cli, prometheus_server, keys, tsa, monkeypatch, fresh_postgres_url, regression=True
    )
    metrics = outcome["analysis"]["metrics"]
    assert metrics["active_users"]["degraded"] is True, metrics["active_users"]
    assert 190 <= metrics["active_users"]["baseline"] <= 210 and 70 <= metrics["active_users"]["impact"] <= 90
    assert metrics["revenue_per_minute"]["degraded"] is True, metrics["revenue_per_minute"]
    assert "request_rate" not in metrics
    assert outcome["decision"]["action"] == "alert" and outcome["decision"]["label"] == "degraded"
    verified = cli("verify", "--repo", str(repo), "--service", "api", "--deployment", "seed-1", "--trust", str(trust_file))
    assert verified.code == 0, verified.out


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus is not installed")
def test_seed_collectors_no_change_is_a_success(tmp_path, cli, prometheus_server, keys, tsa, monkeypatch, fresh_postgres_url) -> None:
    _, outcome = _run_seed(
        tmp_path, cli, prometheus_server, keys, tsa, monkeypatch, fresh_postgres_url, regression=False
    )
    metrics = outcome["analysis"]["metrics"]
    assert not [m for m, v in metrics.items() if v["degraded"]], metrics
    assert set(metrics) == {"active_users", "revenue_per_minute"}
    assert outcome["decision"]["action"] == "mark_successful", outcome["decision"]


def test_dollar_names_in_webhooks_are_environment_secrets_too(tmp_path) -> None:
    text = seed_text() + "actions:\n  alert:\n    webhook: https://afdp:$HOOK_PW@hooks.example.com/afdp\n    secret: $AFDP_WEBHOOK_SECRET\n"
    workflow = load_workflow(write(tmp_path, text))
    (alert,) = workflow.actions
    assert [str(p) for p in alert.webhook.placeholders] == ["${env.HOOK_PW}"]
    assert [str(p) for p in alert.secret.placeholders] == ["${env.AFDP_WEBHOOK_SECRET}"]
    assert str(alert.secret.render({}, env={"AFDP_WEBHOOK_SECRET": "k"})) == "[redacted env.AFDP_WEBHOOK_SECRET]"
