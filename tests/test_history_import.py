"""``afdp import``: past deployments judged from Prometheus' real history, recorded as imported.

A real Prometheus (Debian's) is started on a TSDB backfilled with ``promtool tsdb
create-blocks-from openmetrics``: two hours of a service's latency, with a regression
after one deploy time (deployment A, from a CSV) and no change around another
(deployment B, from a GitHub deployments JSON). ``afdp import`` judges both with the live
runner's analysis and decisions; the branches verify with ``afdp verify``; every record
says imported; a deployment older than the data is recorded as no data, never invented;
a second import is a no-op; bad input exits 2 with nothing recorded.
"""

from __future__ import annotations

import base64
import json
import random
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pygit2
import pytest
from infra import backfill_openmetrics, prometheus_missing, start_prometheus

from afdp.evidence import records as rec
from afdp.evidence.ledger import append_record, seal
from afdp.pipeline.importer import HistoryClock, deployment_name, read_history

WORKFLOW = """\
name: history_import
version: "1"
triggers: [deployment_completed, manual_trigger]
variables:
  HOOK_PORT: 9
collectors:
  prom:
    type: prometheus
    url: http://127.0.0.1:1
    step: 5s
    timeout: 10s
metrics:
  latency:
    collector: prom
    query: avg(http_request_duration_seconds{service="${deployment.service}"})
    unit: s
    better: lower
actions:
  rollback:
    webhook: http://127.0.0.1:${workflow.HOOK_PORT}/rollback
    timeout: 2s
notifications:
  oncall:
    type: webhook
    url: http://127.0.0.1:${workflow.HOOK_PORT}/oncall
workflow:
  pre_deployment:
    - capture_baseline:
        duration: 5_minutes
        metrics: [latency]
  deployment:
    - mark_deployment_time
    - capture_deployment_metadata: [git_commit, deployer_id, service_version]
  post_deployment:
    - wait: 1_minute
    - capture_impact:
        duration: 5_minutes
        metrics: [same_as_baseline]
    - wait_for_signal: smoke_tests_passed
    - analyze_differences:
        method: mann_whitney
        thresholds:
          latency_increase: 10ms
    - decisions
    - generate_training_record
decisions:
  rollback_on_regression:
    condition: latency.degraded
    action: rollback
    training_label: regression
    notify: [oncall]
  all_clear:
    condition: all_metrics_within_normal
    action: mark_successful
    training_label: safe_deployment
"""

COMMIT_A = "4f2a9c1e0b7d"
COMMIT_B = "9be1c07d3a2f5e6d7c8b9a0f1e2d3c4b5a697887"


class _Hook(BaseHTTPRequestHandler):
    calls: list[str] = []

    def do_POST(self) -> None:  # noqa: N802
        _Hook.calls.append(self.path)
        self.send_response(200)
        self.end_headers()

    do_GET = do_POST  # noqa: N815

    def log_message(self, *args: object) -> None:
        pass


def _history(now: datetime) -> tuple[str, dict[str, datetime]]:
    """OpenMetrics text: latency every 5 s from now-150 min to now-2 min; +60 ms from
    deployment A (now-120 min) until a fix at now-80 min; steady around B (now-50 min)."""
    start = now - timedelta(minutes=150)
    times = {
        "A": now - timedelta(minutes=120),
        "fix": now - timedelta(minutes=80),
        "B": now - timedelta(minutes=50),
        "C": now - timedelta(minutes=200),  # before the data: Prometheus has nothing
    }
    noise = random.Random(7)
    lines = ["# TYPE http_request_duration_seconds gauge"]
    moment = start
    while moment <= now - timedelta(minutes=2):
        level = 0.160 if times["A"] <= moment < times["fix"] else 0.100
        value = level + noise.gauss(0, 0.003)
        lines.append(f'http_request_duration_seconds{{service="api"}} {value:.6f} {moment.timestamp():.3f}')
        moment += timedelta(seconds=5)
    lines.append("# EOF")
    return "\n".join(lines) + "\n", times


@pytest.fixture(scope="module")
def history_prometheus(tmp_path_factory):
    """A real Prometheus answering a backfilled past (no scrape targets)."""
    reason = prometheus_missing()
    if reason:
        pytest.skip(reason)
    now = datetime.now(UTC).replace(microsecond=0)
    text, times = _history(now)
    directory = tmp_path_factory.mktemp("prometheus-history")
    backfill_openmetrics(text, directory)
    with start_prometheus([], directory) as url:
        yield url, times


@pytest.fixture()
def hook():
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hook.calls = []
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _files(tmp_path: Path, times: dict[str, datetime]) -> tuple[Path, Path, Path]:
    workflow = tmp_path / "workflow.yaml"
    workflow.write_text(WORKFLOW)
    table = tmp_path / "deploys.csv"
    table.write_text(
        "deployed_at,service,version,commit,environment,deployer,change_size,changed_files\n"
        f"{rec.format_time(times['A'])},api,v2.0.0,{COMMIT_A},production,alice,420,src/a.py;src/b.py\n"
        f"{rec.format_time(times['C'])},api,v1.9.0,,production,bob,,\n"
        f"{rec.format_time(times['B'])},billing,v7,,production,carol,,\n"
    )
    github = tmp_path / "deployments.json"
    github.write_text(
        json.dumps(
            [
                {
                    "id": 1001, "sha": COMMIT_B, "ref": "main", "task": "deploy",
                    "payload": {"version": "v2.1.0", "change_size": 12, "changed_files": ["src/c.py"]}, "environment": "production",
                    "description": "routine", "creator": {"login": "dave"},
                    "created_at": rec.format_time(times["B"] - timedelta(minutes=3)),
                    "statuses": [
                        {"state": "in_progress", "created_at": rec.format_time(times["B"] - timedelta(minutes=2))},
                        {"state": "success", "created_at": rec.format_time(times["B"])},
                    ],
                },
                {
                    "id": 1002, "sha": COMMIT_B, "ref": "main", "environment": "production",
                    "creator": {"login": "erin"}, "created_at": rec.format_time(times["B"] + timedelta(minutes=10)),
                    "statuses": [{"state": "failure", "created_at": rec.format_time(times["B"] + timedelta(minutes=11))}],
                },
            ]
        )
    )
    return workflow, table, github


def _import(cli, repo, keys, tsa, prometheus, workflow, *source: str, hook_port: int = 9, extra=()):
    return cli(
        "import", "--repo", str(repo), "--key", str(keys / "dev.key"), "--tsa", tsa.url,
        *source, "--service", "api", "--workflow", str(workflow), "--prometheus", prometheus,
        "--set", f"HOOK_PORT={hook_port}", *extra, "--json",
    )  # fmt: skip


def _predicates(repo: Path, deployment: str) -> list[dict]:
    git = pygit2.Repository(str(repo))
    head = git.get(git.references[f"refs/heads/afdp/api/{deployment}"].target)
    out = []
    for entry in head.tree["records"]["000"]:
        envelope = json.loads(git.get(head.tree[f"records/000/{entry.name}/envelope.json"].id).data)
        out.append(json.loads(base64.b64decode(envelope["payload"]))["predicate"])
    return out


def _refs(repo: Path) -> dict[str, str]:
    git = pygit2.Repository(str(repo))
    return {name: str(git.references[name].target) for name in git.references if name.startswith("refs/heads/afdp/")}


@pytest.mark.slow
def test_import_judges_the_past_from_prometheus_history(tmp_path, cli, keys, tsa, trust_file, history_prometheus, hook):
    prometheus, times = history_prometheus
    repo = tmp_path / "evidence"
    assert cli("init", str(repo)).code == 0
    workflow, table, github = _files(tmp_path, times)

    result = _import(cli, repo, keys, tsa, prometheus, workflow, "--csv", str(table), hook_port=hook,
                     extra=("--team", "payments"))
    assert result.code == 0, result.err
    outcome = result.json()
    by_where = {d["where"]: d for d in outcome["deployments"]}
    regression, no_data, other = by_where["row 2"], by_where["row 3"], by_where["row 4"]
    assert regression["status"] == "imported" and regression["decision"] == "rollback", regression
    assert regression["analysis"] == "degraded"
    assert no_data["status"] == "imported" and no_data["analysis"].startswith("inconclusive"), no_data
    assert other["status"] == "skipped" and "billing" in other["reason"]
    assert _Hook.calls == []  # the rollback of a past deployment is recorded, never carried out (nor notified)

    result = _import(cli, repo, keys, tsa, prometheus, workflow, "--github-deployments", str(github), hook_port=hook)
    assert result.code == 0, result.err
    deployments = {d["deployment"]: d for d in result.json()["deployments"]}
    steady = deployments["imported-ghd-1001"]
    assert steady["status"] == "imported" and steady["decision"] == "mark_successful", steady
    assert steady["analysis"] == "no degradation"
    assert steady["described_time"] == rec.format_time(times["B"])  # the success status's time
    assert deployments["imported-ghd-1002"]["status"] == "skipped"
    assert "never succeeded" in deployments["imported-ghd-1002"]["reason"]

    # Every branch verifies, and says it is imported.
    verified = cli("verify", "--repo", str(repo), "--all", "--trust", str(trust_file), "--json")
    assert verified.code == 0, verified.out
    branches = verified.json()["branches"]
    assert len(branches) == 3 and all(b["state"] == "verified" and b["imported"] for b in branches)
    human = cli("verify", "--repo", str(repo), "--all", "--trust", str(trust_file))
    assert human.out.count("IMPORTED from history") == 3

    name_a = regression["deployment"]
    assert name_a == f"imported-csv-{times['A'].strftime('%Y%m%dT%H%M%SZ')}-{COMMIT_A[:12]}"
    predicates = _predicates(repo, name_a)
    assert [p["step"]["name"] for p in predicates][0] == "genesis" and predicates[-1]["step"]["name"] == "seal"
    for predicate in predicates:
        assert predicate["imported"] is True
        assert predicate["described_time"] == rec.format_time(times["A"])
        # signed times are when it was imported, not the past it describes
        assert rec.parse_time(predicate["started_at"]) > times["A"] + timedelta(minutes=60)
    by_step = {p["step"]["name"]: p for p in predicates}
    genesis = by_step["genesis"]["result"]["metadata"]
    assert genesis["imported"]["source"] == "csv" and genesis["imported"]["entry"] == "row 2"
    assert genesis["imported"]["described_time"] == rec.format_time(times["A"])
    window = by_step["capture_baseline"]["result"]["window"]
    assert window["from_history"] is True and rec.parse_time(window["end"]) == times["A"]
    impact = by_step["capture_impact"]["result"]["window"]
    assert rec.parse_time(impact["start"]) == times["A"] + timedelta(minutes=1)
    assert by_step["capture_impact"]["provenance"]["latency"]["api"] == "query_range"
    assert by_step["decisions"]["result"]["action"]["status"] == "not_performed"
    signal = by_step["wait_for_signal"]
    assert signal["status"] == "skipped" and "cannot be received now" in signal["summary"], signal
    training = by_step["generate_training_record"]["result"]["record"]
    assert training["imported"] is True and training["label"] == "regression"
    assert training["features"]["deployed_at"].startswith(times["A"].strftime("%Y-%m-%dT%H:%M:%S"))

    features = {p["step"]["name"]: p for p in _predicates(repo, "imported-ghd-1001")}["generate_training_record"]["result"]["record"]["features"]
    assert (features["version"], features["change_size"], features["changed_files_count"]) == ("v2.1.0", 12, 1)
    assert features["commit"] == COMMIT_B

    # No data is said, never invented.
    missing = {p["step"]["name"]: p for p in _predicates(repo, no_data["deployment"])}
    assert missing["capture_baseline"]["status"] == "failed"
    assert "no data" in missing["capture_baseline"]["error"]
    assert missing["analyze_differences"]["result"]["analysis"]["metrics"]["latency"]["status"] == "no_data"
    assert missing["generate_training_record"]["result"]["record"]["impacts"]["latency"]["status"] == "no_data"

    # git log and afdp log say it plainly.
    story = cli("log", "--repo", str(repo), "--service", "api", "--deployment", name_a)
    assert "IMPORTED from history" in story.out
    logged = cli("log", "--repo", str(repo), "--service", "api", "--deployment", name_a, "--json").json()
    assert logged["imported"] is True
    assert logged["deployment_facts"]["team"] == "payments"  # --team, in the genesis record
    git = pygit2.Repository(str(repo))
    head = git.get(git.references[f"refs/heads/afdp/api/{name_a}"].target)
    assert head.message.startswith("[imported] seal:")
    assert f"AFDP-Imported: {rec.format_time(times['A'])}" in head.message

    # Importing the same history again records nothing and rewrites nothing.
    before = _refs(repo)
    again = _import(cli, repo, keys, tsa, prometheus, workflow, "--csv", str(table), hook_port=hook)
    assert again.code == 0, again.err
    assert {d["status"] for d in again.json()["deployments"]} == {"skipped"}
    assert all("already imported" in d["reason"] for d in again.json()["deployments"] if d["where"] != "row 4")
    again = _import(cli, repo, keys, tsa, prometheus, workflow, "--github-deployments", str(github), hook_port=hook)
    assert again.code == 0 and again.json()["imported"] == 0
    assert _refs(repo) == before
    # ... nor the same deployment from another history file (same time and commit).
    other_file = tmp_path / "same.csv"
    other_file.write_text(f"deployed_at,id,commit\n{rec.format_time(times['B'])},rel-7,{COMMIT_B}\n")
    again = _import(cli, repo, keys, tsa, prometheus, workflow, "--csv", str(other_file), hook_port=hook)
    item = again.json()["deployments"][0]
    assert item["status"] == "skipped" and "already imported as imported-ghd-1001" in item["reason"], item
    assert _refs(repo) == before

    # The report says so too.
    report = cli("report", "--repo", str(repo), "--service", "api", "--deployment", name_a,
                 "--trust", str(trust_file), "--out", str(tmp_path / "r.json"))  # fmt: skip
    assert report.code == 0, report.err
    section = json.loads((tmp_path / "r.json").read_text())["deployments"][0]
    assert section["imported"] is True and "IMPORTED from history" in section["headline"]


BAD_CSV = [
    ("deployed_at,version\n2026-11-02 14:05:00,v1\n", "row 2, deployed_at", "no time zone"),
    ("deployed_at,version\nyesterday,v1\n", "row 2, deployed_at", "not an RFC 3339 time"),
    ("deployed_at,colour\n2026-11-02T14:05:00Z,red\n", "line 1", "unknown column"),
    ("version\nv1\n", "line 1", "no deployed_at column"),
    ("deployed_at,change_size\n2026-11-02T14:05:00Z,lots\n", "row 2, change_size", "whole number"),
    ("deployed_at,commit\n2026-11-02T14:05:00Z,not-a-sha\n", "row 2, commit", "hex commit"),
    ("deployed_at\n2026-11-02T14:05:00Z\n2026-11-02T14:05:00Z\n", "row 3", "the same deployment as row 2"),
    ("deployed_at\n2999-01-01T00:00:00Z\n", "row 2", "in the future"),
]


@pytest.mark.parametrize(("text", "where", "problem"), BAD_CSV)
def test_bad_csv_exits_2_naming_row_and_field_and_records_nothing(tmp_path, cli, keys, tsa, text, where, problem):
    repo = tmp_path / "evidence"
    assert cli("init", str(repo)).code == 0
    workflow = tmp_path / "workflow.yaml"
    workflow.write_text(WORKFLOW)
    bad = tmp_path / "bad.csv"
    bad.write_text(text)
    # A good row first: nothing is recorded even for it (the file is checked whole first).
    result = _import(cli, repo, keys, tsa, "http://127.0.0.1:1", workflow, "--csv", str(bad))
    assert result.code == 2, (result.out, result.err)
    line = result.err.strip()
    assert len(line.splitlines()) == 1 and str(bad) in line and where in line and problem in line, line
    assert _refs(repo) == {}


BAD_GITHUB = [
    ({"id": 1, "sha": "abc1234"}, "entry 0 (id 1), created_at", "missing"),
    ({"sha": "abc1234", "created_at": "2026-11-02T14:05:00Z"}, "entry 0, id", "not an id"),
    ({"id": 1, "sha": "zz", "created_at": "2026-11-02T14:05:00Z"}, "entry 0 (id 1), sha", "hex commit"),
    ({"id": 1, "created_at": "2026-11-02T14:05:00Z", "creator": "dave"}, "entry 0 (id 1), creator", "user object"),
    ({"id": 1, "created_at": "2026-11-02T14:05:00Z", "statuses": [{"created_at": "x"}]}, "statuses[0].state", "missing"),
]


@pytest.mark.parametrize(("item", "where", "problem"), BAD_GITHUB)
def test_bad_github_deployments_exit_2_and_record_nothing(tmp_path, cli, keys, tsa, item, where, problem):
    repo = tmp_path / "evidence"
    assert cli("init", str(repo)).code == 0
    workflow = tmp_path / "workflow.yaml"
    workflow.write_text(WORKFLOW)
    bad = tmp_path / "deployments.json"
    bad.write_text(json.dumps([item]))
    result = _import(cli, repo, keys, tsa, "http://127.0.0.1:1", workflow, "--github-deployments", str(bad))
    assert result.code == 2, (result.out, result.err)
    assert where in result.err and problem in result.err and str(bad) in result.err, result.err
    assert _refs(repo) == {}


def test_not_json_and_not_a_list_exit_2(tmp_path, cli, keys, tsa):
    repo = tmp_path / "evidence"
    assert cli("init", str(repo)).code == 0
    workflow = tmp_path / "workflow.yaml"
    workflow.write_text(WORKFLOW)
    for text, problem in (("{", "not JSON"), ('{"id": 1}', "expected a JSON array")):
        bad = tmp_path / "releases.json"
        bad.write_text(text)
        result = _import(cli, repo, keys, tsa, "http://127.0.0.1:1", workflow, "--github-releases", str(bad))
        assert result.code == 2 and problem in result.err, result.err
    both = _import(cli, repo, keys, tsa, "http://127.0.0.1:1", workflow, "--csv", "a.csv", "--github-releases", "b.json")
    assert both.code == 2 and "exactly one of" in both.err
    assert _refs(repo) == {}


def test_github_releases_fields(tmp_path):
    path = tmp_path / "releases.json"
    path.write_text(
        json.dumps(
            [
                {"id": 7, "tag_name": "v1.2.0", "target_commitish": "main", "name": "Spring",
                 "draft": False, "created_at": "2026-11-01T09:00:00Z", "published_at": "2026-11-01T10:00:00Z",
                 "author": {"login": "alice"}},
                {"id": 8, "tag_name": "v1.3.0", "target_commitish": "a" * 40, "draft": True,
                 "created_at": "2026-11-02T09:00:00Z", "published_at": None},
            ]
        )
    )  # fmt: skip
    published, draft = read_history(path, "github-releases", service="api")
    assert published.deployed_at == datetime(2026, 11, 1, 10, tzinfo=UTC)  # published_at, not created_at
    assert (published.version, published.branch, published.commit, published.deployer) == ("v1.2.0", "main", None, "alice")
    assert deployment_name(published) == "imported-ghr-7"
    assert draft.skip and "draft" in draft.skip and draft.commit == "a" * 40


def _one_row(tmp_path, cli, table_text="deployed_at,id\n2026-11-02T14:05:00Z,d1\n"):
    """An empty evidence repository, the workflow and a CSV (one deployment by default)."""
    repo = tmp_path / "evidence"
    assert cli("init", str(repo)).code == 0
    workflow = tmp_path / "workflow.yaml"
    workflow.write_text(WORKFLOW)
    table = tmp_path / "d.csv"
    table.write_text(table_text)
    return repo, workflow, table


def test_dry_run_writes_nothing(tmp_path, cli, keys, tsa):
    repo, workflow, table = _one_row(tmp_path, cli)
    result = _import(cli, repo, keys, tsa, "http://127.0.0.1:1", workflow, "--csv", str(table), extra=("--dry-run",))
    assert result.code == 0, result.err
    assert [d["status"] for d in result.json()["deployments"]] == ["would_import"]
    assert result.json()["deployments"][0]["deployment"] == "imported-csv-d1"
    assert _refs(repo) == {}


def test_a_bad_team_exits_2_and_records_nothing(tmp_path, cli, keys, tsa):
    repo, workflow, table = _one_row(tmp_path, cli)
    result = _import(cli, repo, keys, tsa, "http://127.0.0.1:1", workflow, "--csv", str(table),
                     extra=("--team", "pay ments"))
    assert result.code == 2 and "is not a team name" in result.err and "Traceback" not in result.err, result.err
    assert _refs(repo) == {}


def test_recent_deployment_is_not_history_yet(tmp_path, cli, keys, tsa):
    repo, workflow, table = _one_row(tmp_path, cli, f"deployed_at\n{rec.format_time(rec.utc_now() - timedelta(minutes=2))}\n")
    result = _import(cli, repo, keys, tsa, "http://127.0.0.1:1", workflow, "--csv", str(table))
    assert result.code == 0, result.err
    item = result.json()["deployments"][0]
    assert item["status"] == "skipped" and "not history yet" in item["reason"]
    assert _refs(repo) == {}


def test_live_and_imported_records_never_share_a_branch(repo, signer, tsa):
    when = datetime(2026, 11, 2, 14, 5, tzinfo=UTC)
    marked = rec.RecordDraft(kind=rec.KIND_STEP, step="capture", result={}, imported=rec.Imported(when))
    append_record(repo, service="api", deployment="imported-csv-x", draft=marked, signer=signer, tsa_urls=[tsa.url])
    live = rec.RecordDraft(kind=rec.KIND_STEP, step="capture2", result={})
    with pytest.raises(Exception, match="imported .* cannot be appended"):
        append_record(repo, service="api", deployment="imported-csv-x", draft=live, signer=signer, tsa_urls=[tsa.url])
    append_record(repo, service="api", deployment="live", draft=live, signer=signer, tsa_urls=[tsa.url])
    with pytest.raises(Exception, match="live-captured branch"):
        append_record(repo, service="api", deployment="live", draft=marked, signer=signer, tsa_urls=[tsa.url])
    # the seal of an imported branch is imported too
    seal(repo, service="api", deployment="imported-csv-x", signer=signer, tsa_urls=[tsa.url])


def test_verify_fails_a_branch_mixing_imported_and_live_records(repo, signer, tsa, trust_file, cli, tmp_path):
    """A writer that bypasses the ledger's refusal (here: a record built by hand) still
    cannot make a mixed branch pass: check 12i names the record."""
    from afdp.evidence import ledger
    from afdp.evidence.store import EvidenceStore

    when = datetime(2026, 11, 2, 14, 5, tzinfo=UTC)
    marked = rec.RecordDraft(kind=rec.KIND_STEP, step="capture", result={}, imported=rec.Imported(when))
    append_record(repo, service="api", deployment="mixed", draft=marked, signer=signer, tsa_urls=[tsa.url])
    store = EvidenceStore(repo)
    ref = "refs/heads/afdp/api/mixed"
    tail = ledger.read_tail(store, store.head(ref))
    live = rec.build_record(
        rec.RecordDraft(kind=rec.KIND_STEP, step="live", result={}),
        service="api", deployment="mixed", sequence=tail.sequence + 1,
        prev=tail.envelope_sha256, prev_timestamps=tail.timestamps,
    )  # fmt: skip
    ledger._append_once(store, ref, tail.head, live, signer, [tsa.url], 10.0, ("AFDP", "afdp@evidence.invalid"), "api", "mixed")
    result = cli("verify", "--repo", str(repo), "--service", "api", "--deployment", "mixed",
                 "--trust", str(trust_file), "--allow-unsealed", "--json")  # fmt: skip
    assert result.code == 1, result.out
    failures = result.json()["branches"][0]["failures"]
    assert any(f["check"] == "imported" and "not marked imported" in f["reason"] for f in failures), failures
    # and the same branch, all imported, passes
    clean = rec.RecordDraft(kind=rec.KIND_STEP, step="capture", result={}, imported=rec.Imported(when))
    append_record(repo, service="api", deployment="clean", draft=clean, signer=signer, tsa_urls=[tsa.url])
    ok = cli("verify", "--repo", str(repo), "--service", "api", "--deployment", "clean",
             "--trust", str(trust_file), "--allow-unsealed", "--json")  # fmt: skip
    assert ok.code == 0, ok.out
    assert ok.json()["branches"][0]["imported"] is True


def test_history_clock_moves_once_per_parallel_capture():
    start = datetime(2026, 11, 2, 14, 0, tzinfo=UTC)
    clock = HistoryClock(start)
    readings: list[datetime] = []

    end = start + timedelta(seconds=300)

    def collector() -> None:  # as the Prometheus collector waits for its window's end
        wait = (end - clock.now()).total_seconds()
        readings.append(end - timedelta(seconds=wait))
        if wait > 0:
            clock.sleep(wait)

    threads = [threading.Thread(target=collector) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clock.now() == start + timedelta(seconds=300)  # three metrics of one window
    clock.sleep(60)  # the run's own wait
    assert clock.now() == start + timedelta(seconds=360)


class _FlakyTsa(BaseHTTPRequestHandler):
    """A loopback proxy to the real TSA that answers ``budget`` requests, then fails
    (a TSA going down in the middle of an import)."""

    target = ""
    budget = 0

    def do_POST(self) -> None:  # noqa: N802
        import httpx

        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if _FlakyTsa.budget <= 0:
            self.send_response(503)
            self.end_headers()
            return
        _FlakyTsa.budget -= 1
        answer = httpx.post(_FlakyTsa.target, content=body, headers={"Content-Type": "application/timestamp-query"})
        self.send_response(answer.status_code)
        self.send_header("Content-Type", answer.headers.get("Content-Type", "application/timestamp-reply"))
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.slow
def test_interrupted_import_resumes_with_the_same_windows(tmp_path, cli, keys, tsa, trust_file, history_prometheus):
    prometheus, times = history_prometheus
    repo = tmp_path / "evidence"
    assert cli("init", str(repo)).code == 0
    workflow, _, _ = _files(tmp_path, times)
    table = tmp_path / "one.csv"
    table.write_text(f"deployed_at,id,commit\n{rec.format_time(times['A'])},a1,{COMMIT_A}\n")
    server = HTTPServer(("127.0.0.1", 0), _FlakyTsa)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # genesis .. the metadata are written, then the TSA is down: the wait's record is not
    # written (its result is kept in the spool), and the impact is not captured yet
    _FlakyTsa.target, _FlakyTsa.budget = tsa.url, 4
    flaky = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        first = cli("import", "--repo", str(repo), "--key", str(keys / "dev.key"), "--tsa", flaky,
                    "--csv", str(table), "--service", "api", "--workflow", str(workflow),
                    "--prometheus", prometheus, "--json")  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert first.code == 3, (first.out, first.err)
    written = [p["step"]["name"] for p in _predicates(repo, "imported-csv-a1")]
    assert written == ["genesis", "capture_baseline", "mark_deployment_time", "capture_deployment_metadata"], written
    again = _import(cli, repo, keys, tsa, prometheus, workflow, "--csv", str(table))
    assert again.code == 0, again.err
    item = again.json()["deployments"][0]
    assert item["status"] == "resumed" and item["decision"] == "rollback", item
    by_step = {p["step"]["name"]: p for p in _predicates(repo, "imported-csv-a1")}
    impact = by_step["capture_impact"]["result"]["window"]
    assert rec.parse_time(impact["start"]) == times["A"] + timedelta(minutes=1)  # after the wait, as uninterrupted
    assert rec.parse_time(impact["end"]) == times["A"] + timedelta(minutes=6)
    verified = cli("verify", "--repo", str(repo), "--all", "--trust", str(trust_file), "--json")
    assert verified.code == 0, verified.out


def _imported_branch(repo, signer, tsa, deployment="imp"):
    when = datetime(2026, 11, 2, 14, 5, tzinfo=UTC)
    draft = rec.RecordDraft(kind=rec.KIND_STEP, step="capture", result={"p99": 1}, imported=rec.Imported(when))
    append_record(repo, service="api", deployment=deployment, draft=draft, signer=signer, tsa_urls=[tsa.url])
    seal(repo, service="api", deployment=deployment, signer=signer, tsa_urls=[tsa.url])
    return when


def _verify(cli, repo, trust_file, deployment):
    result = cli("verify", "--repo", str(repo), "--service", "api", "--deployment", deployment,
                 "--trust", str(trust_file), "--json")  # fmt: skip
    return result.code, result.json()["branches"][0]


def test_stripping_the_imported_subject_or_trailer_fails_the_commit_check(repo, signer, tsa, trust_file, cli):
    from tamper import edit

    _imported_branch(repo, signer, tsa)
    code, branch = _verify(cli, repo, trust_file, "imp")
    assert code == 0 and branch["imported"] is True
    assert branch["records"][1]["described_time"] == "2026-11-02T14:05:00.000Z"

    def strip(entry):
        lines = [line for line in entry.message.removeprefix("[imported] ").splitlines() if not line.startswith(("AFDP-Imported", "Imported from history"))]
        return type(entry)("\n".join(lines) + "\n", entry.directory, entry.files)

    edit(repo, 1, strip, deployment="imp")
    code, branch = _verify(cli, repo, trust_file, "imp")
    assert code == 1
    assert any(f["check"] == "commit" and f["sequence"] == 1 and "message" in f["reason"] for f in branch["failures"]), branch["failures"]


def test_removing_the_marker_from_a_signed_record_fails_its_signature(repo, signer, tsa, trust_file, cli):
    from tamper import edit, with_file

    _imported_branch(repo, signer, tsa)

    def unmark(entry):
        envelope = json.loads(entry.files["envelope.json"])
        statement = json.loads(base64.b64decode(envelope["payload"]))
        del statement["predicate"]["imported"], statement["predicate"]["described_time"]
        from afdp.evidence.canonical import canonical_bytes

        envelope["payload"] = base64.b64encode(canonical_bytes(statement)).decode()
        return with_file(entry, "envelope.json", canonical_bytes(envelope))

    edit(repo, 1, unmark, deployment="imp")
    code, branch = _verify(cli, repo, trust_file, "imp")
    assert code == 1
    assert any(f["check"] == "signature" and f["sequence"] == 1 for f in branch["failures"]), branch["failures"]


def test_schemas_take_the_marker_only_with_its_described_time():
    from afdp.errors import SchemaError
    from afdp.evidence.schemas import validate

    when = datetime(2026, 11, 2, 14, 5, tzinfo=UTC)
    built = rec.build_record(
        rec.RecordDraft(kind=rec.KIND_STEP, step="capture", result={}, imported=rec.Imported(when)),
        service="api", deployment="d", sequence=1, prev="a" * 64, prev_timestamps={"timestamp-0.tsr": "b" * 64},
    )  # fmt: skip
    predicate = built.statement["predicate"]
    validate("predicate-step.v1", predicate)
    for field_name in ("imported", "described_time"):
        partial = {k: v for k, v in predicate.items() if k != field_name}
        with pytest.raises(SchemaError):
            validate("predicate-step.v1", partial)
    with pytest.raises(SchemaError):
        validate("predicate-step.v1", {**predicate, "imported": False})
    live = rec.build_record(
        rec.RecordDraft(kind=rec.KIND_STEP, step="capture", result={}),
        service="api", deployment="d", sequence=1, prev="a" * 64, prev_timestamps={"timestamp-0.tsr": "b" * 64},
    )  # fmt: skip
    assert "imported" not in live.statement["predicate"]  # live records are unchanged


def test_verify_fails_an_imported_record_on_a_live_branch(repo, signer, tsa, trust_file, cli):
    from afdp.evidence import ledger
    from afdp.evidence.store import EvidenceStore

    live = rec.RecordDraft(kind=rec.KIND_STEP, step="capture", result={})
    append_record(repo, service="api", deployment="d-42", draft=live, signer=signer, tsa_urls=[tsa.url])
    store = EvidenceStore(repo)
    ref = "refs/heads/afdp/api/d-42"
    tail = ledger.read_tail(store, store.head(ref))
    marked = rec.build_record(
        rec.RecordDraft(kind=rec.KIND_STEP, step="late", result={}, imported=rec.Imported(datetime(2026, 1, 1, tzinfo=UTC))),
        service="api", deployment="d-42", sequence=tail.sequence + 1,
        prev=tail.envelope_sha256, prev_timestamps=tail.timestamps,
    )  # fmt: skip
    ledger._append_once(store, ref, tail.head, marked, signer, [tsa.url], 10.0, ("AFDP", "afdp@evidence.invalid"), "api", "d-42")
    result = cli("verify", "--repo", str(repo), "--service", "api", "--deployment", "d-42",
                 "--trust", str(trust_file), "--allow-unsealed", "--json")  # fmt: skip
    assert result.code == 1
    branch = result.json()["branches"][0]
    assert branch["imported"] is False
    assert any(
        f["check"] == "imported" and f["sequence"] == 2 and "live-captured" in f["reason"] for f in branch["failures"]
    ), branch["failures"]


def test_a_branch_of_the_same_name_that_is_not_this_import_is_left_untouched(tmp_path, cli, keys, tsa, signer):
    repo = tmp_path / "evidence"
    assert cli("init", str(repo)).code == 0
    workflow = tmp_path / "workflow.yaml"
    workflow.write_text(WORKFLOW)
    live = rec.RecordDraft(kind=rec.KIND_STEP, step="capture", result={})
    append_record(repo, service="api", deployment="imported-csv-d1", draft=live, signer=signer, tsa_urls=[tsa.url])
    other = rec.RecordDraft(kind=rec.KIND_STEP, step="capture", result={}, imported=rec.Imported(datetime(2026, 1, 1, tzinfo=UTC)))
    append_record(repo, service="api", deployment="imported-csv-d2", draft=other, signer=signer, tsa_urls=[tsa.url])
    before = _refs(repo)
    table = tmp_path / "d.csv"
    table.write_text("deployed_at,id\n2026-11-02T14:05:00Z,d1\n2026-11-02T15:05:00Z,d2\n")
    result = _import(cli, repo, keys, tsa, "http://127.0.0.1:1", workflow, "--csv", str(table))
    assert result.code == 0, result.err
    first, second = result.json()["deployments"]
    assert first["status"] == "skipped" and "live-captured branch" in first["reason"]
    assert second["status"] == "skipped" and "describes 2026-01-01T00:00:00.000Z" in second["reason"]
    assert _refs(repo) == before


def test_environment_filter_skips_other_environments(tmp_path, cli, keys, tsa):
    repo = tmp_path / "evidence"
    assert cli("init", str(repo)).code == 0
    workflow = tmp_path / "workflow.yaml"
    workflow.write_text(WORKFLOW)
    table = tmp_path / "d.csv"
    table.write_text(
        "deployed_at,id,environment\n2026-11-02T14:05:00Z,p1,production\n"
        "2026-11-02T15:05:00Z,s1,staging\n2026-11-02T16:05:00Z,n1,\n"
    )
    result = _import(cli, repo, keys, tsa, "http://127.0.0.1:1", workflow, "--csv", str(table),
                     extra=("--dry-run", "--environment", "production"))  # fmt: skip
    assert result.code == 0, result.err
    got = {d["deployment"]: (d["status"], d["reason"]) for d in result.json()["deployments"]}
    assert got["imported-csv-p1"] == ("would_import", None)
    assert got["imported-csv-s1"] == ("skipped", "environment staging, not production")
    assert got["imported-csv-n1"] == ("skipped", "environment not given, not production")


LIVE_ONLY = """\
name: live_only
version: "1"
variables:
  HOOK_PORT: 9
collectors:
  page:
    type: scrape
    url: http://127.0.0.1:${workflow.HOOK_PORT}/metrics
metrics:
  hits:
    collector: page
    metric: http_requests_total
    unit: 1/s
workflow:
  pre_deployment:
    - capture_baseline:
        duration: 1_minute
        metrics: [hits]
  deployment:
    - mark_deployment_time
  post_deployment:
    - capture_impact:
        duration: 1_minute
        metrics: [same_as_baseline]
    - analyze_differences:
        method: mann_whitney
    - store:
        results: results.json
        url: http://127.0.0.1:${workflow.HOOK_PORT}/store
"""


def test_live_sources_and_live_steps_are_never_used_for_the_past(tmp_path, cli, keys, tsa, trust_file, hook):
    """A /metrics page answers now, never the past: both captures are failed with that
    reason, the page is never read, and the store step (a POST) is skipped."""
    repo = tmp_path / "evidence"
    assert cli("init", str(repo)).code == 0
    workflow = tmp_path / "workflow.yaml"
    workflow.write_text(LIVE_ONLY)
    table = tmp_path / "d.csv"
    table.write_text("deployed_at,id\n2026-11-02T14:05:00Z,p1\n")
    result = _import(cli, repo, keys, tsa, "http://127.0.0.1:1", workflow, "--csv", str(table), hook_port=hook)
    assert result.code == 0, result.err
    assert result.json()["deployments"][0]["status"] == "imported"
    assert _Hook.calls == []
    by_step = {p["step"]["name"]: p for p in _predicates(repo, "imported-csv-p1")}
    assert by_step["capture_baseline"]["status"] == "failed" and "keeps no history" in by_step["capture_baseline"]["error"]
    assert by_step["capture_impact"]["status"] == "failed"
    assert "cannot describe a past deployment" in by_step["capture_impact"]["error"]
    assert by_step["store"]["status"] == "skipped" and "live system" in by_step["store"]["summary"]
    verified = cli("verify", "--repo", str(repo), "--all", "--trust", str(trust_file), "--json")
    assert verified.code == 0 and verified.json()["branches"][0]["imported"] is True
