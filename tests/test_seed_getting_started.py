"""The guide's Getting Started, as written: validate, plan, the results a store step exports,
context metrics that are shown but not judged, and the guide's success-criteria phrases.

The snippets in tests/seeds/ are verbatim; a snippet that is only a section is completed
here with the smallest rest (the name and the first workflow's steps). ``afdp run``
against the demo service and a real Prometheus is in test_seed_getting_started_e2e.py;
the store step's file and URL exports run here for real (loopback HTTP server, files).
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from afdp.evidence import records as rec
from afdp.evidence.canonical import canonical_bytes
from afdp.evidence.ledger import decode_envelope
from afdp.evidence.names import branch_ref
from afdp.evidence.store import EvidenceStore
from afdp.pipeline.actions import SIGNATURE_HEADER, verify_signature
from afdp.pipeline.analysis import analyze
from afdp.pipeline.decide import decide
from afdp.workflow import load_workflow
from afdp.workflow.model import Analyze, Decide, Store

SEEDS = Path(__file__).parent / "seeds"
STEP1 = SEEDS / "getting_started_step1.yaml"
STEP2 = SEEDS / "getting_started_step2_context.yaml"
STEP3 = SEEDS / "getting_started_step3_success_criteria.yaml"

FIRST_STEPS = """name: my_first_workflow
version: 1.0

workflow:
  - wait_for: deployment
  - capture: {metrics}
  - wait: 5_minutes
  - capture: {metrics}
  - compare: before_vs_after
"""
STEP3_METRICS = "[response_time, error_rate, revenue_per_hour, user_satisfaction]"


def completed(tmp_path: Path, snippet: Path, *, metrics: str = "response_time", name: str = "w.yaml") -> Path:
    """The snippet verbatim, then the first workflow's steps (the smallest rest)."""
    path = tmp_path / name
    path.write_text(snippet.read_text("utf-8") + FIRST_STEPS.format(metrics=metrics), "utf-8")
    return path


def validate(cli, path: Path, *extra: str) -> dict:
    result = cli("validate", str(path), "--json", *extra)
    return {"code": result.code, **result.json()}


# --- Step 1: store: results ------------------------------------------------------------


def test_step1_verbatim_validates_and_notes_where_results_go(cli):
    report = validate(cli, STEP1)
    assert report["code"] == 0 and report["valid"], report["findings"]
    notes = [n["message"] for n in report["notes"]]
    assert any("store: results keeps the results on the evidence branch only" in n for n in notes), notes
    workflow = load_workflow(STEP1)
    store = workflow.step("store")
    assert store.kind.value == "store" and store.params == Store(None, None, None, store.params.timeout)


def test_step1_plan_shows_the_store_step(cli):
    result = cli("plan", str(STEP1), "--set", "deployment.service=api", "--set", "deployment.id=d-1", "--json")
    assert result.code == 0, result.err
    steps = [s for phase in result.json()["phases"] for s in phase["steps"]]
    assert [s["name"] for s in steps][-2:] == ["decisions", "store"]
    assert steps[-1]["type"] == "store" and steps[-1]["status"] == "run"


@pytest.mark.parametrize(
    ("store", "message"),
    [
        ("{results: ../outside.json}", "relative file name"),
        ("{results: /etc/passwd}", "relative file name"),
        ("{url: ftp://example.com/x}", "http"),
        ("{url: 'https://h.example.com/', secret: plain-text}", "must come from the environment"),
        ("{secret: '${env.S}'}", "this store has no url"),
        ("everything", "expected one of: results"),
        ("[results]", "does not take a list"),
        ("{results: r.json, format: csv}", "unknown key 'format'"),
    ],
)
def test_bad_store_steps_are_located_errors(tmp_path, cli, store, message):
    path = tmp_path / "w.yaml"
    path.write_text(STEP1.read_text("utf-8").replace("- store: results", f"- store: {store}"), "utf-8")
    result = cli("validate", str(path))
    assert result.code == 1, result.out
    lines = [line for line in result.out.splitlines() if ": note:" not in line]
    assert any(f"{path.name}:10:" in line and message in line for line in lines), result.out


def test_a_store_url_is_judged_by_the_webhook_host_rule(tmp_path, cli):
    path = tmp_path / "w.yaml"
    path.write_text(
        STEP1.read_text("utf-8").replace("- store: results", "- store: {url: 'https://evil.example.net/in'}"), "utf-8"
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nallowed_webhook_hosts: [hooks.example.com]\n", "utf-8")
    result = cli("validate", str(path), "--policy", str(policy))
    assert result.code == 1
    assert "allowed_webhook_hosts: the store url of step 'store' reaches host 'evil.example.net'" in result.out
    policy.write_text("version: 1\nallowed_webhook_hosts: [evil.example.net]\n", "utf-8")
    assert cli("validate", str(path), "--policy", str(policy)).code == 0


class _Receiver(BaseHTTPRequestHandler):
    status = 200
    got: list[tuple[dict, bytes]] = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).got.append((dict(self.headers), body))
        self.send_response(type(self).status)
        self.end_headers()
        self.wfile.write(b"stored")

    def log_message(self, *args):
        pass


@pytest.fixture()
def receiver():
    class Handler(_Receiver):
        got: list[tuple[dict, bytes]] = []

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, Handler
    finally:
        server.shutdown()
        server.server_close()


def _store_predicate(repo: Path, deployment: str) -> dict:
    store = EvidenceStore(repo)
    for commit in store.history(store.head(branch_ref("api", deployment))):
        info = dict(line.split(": ", 1) for line in commit.message.splitlines() if line.startswith("AFDP-"))
        if info.get("AFDP-Step") == "store":
            path = f"{rec.record_dir(int(info['AFDP-Record']), info['AFDP-Step'])}/envelope.json"
            return decode_envelope(store.read_blob(commit.tree, path))["predicate"]
    raise AssertionError("no store record")


EXPORT = """name: export_results
workflow:
  - wait: 1s
  - store:
      results: out/results.json
      url: http://127.0.0.1:{port}/results
      secret: ${{env.AFDP_STORE_SECRET}}
"""


def _export_run(tmp_path, cli, keys, tsa, port: int, deployment: str):
    path = tmp_path / "export.yaml"
    path.write_text(EXPORT.format(port=port), "utf-8")
    policy = tmp_path / "open-policy.yaml"
    policy.write_text("version: 1\n", "utf-8")
    repo = tmp_path / "evidence"
    if not repo.exists():
        assert cli("init", str(repo)).code == 0
    return repo, cli(
        "run", str(path), "--service", "api", "--deployment", deployment, "--repo", str(repo),
        "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--policy", str(policy),
        "--results-dir", str(tmp_path / "results"), "--time-scale", "10", "--no-prefect", "--json",
    )


def test_store_writes_the_results_file_and_posts_the_same_signed_document(tmp_path, cli, keys, tsa, receiver, monkeypatch):
    server, handler = receiver
    monkeypatch.setenv("AFDP_STORE_SECRET", "s3cret-store-key-123")
    repo, result = _export_run(tmp_path, cli, keys, tsa, server.server_address[1], "exp-1")
    assert result.code == 0, result.err
    outcome = result.json()
    assert [s["status"] for s in outcome["steps"]] == ["ok", "ok"], outcome["steps"]
    written = (tmp_path / "results" / "out" / "results.json").read_bytes()
    document = json.loads(written)
    assert document["type"] == "afdp.results" and document["deployment"] == "exp-1"
    assert "wait" in document["steps"] and document["records"][0]["step"] == "wait"
    assert canonical_bytes(document) == written
    # The same bytes were POSTed, signed with the secret, which is nowhere in them.
    headers, body = handler.got[0]
    assert body == written
    assert verify_signature(b"s3cret-store-key-123", body, headers[SIGNATURE_HEADER])
    assert b"s3cret" not in body
    # The record names every destination and the digest of what was exported.
    predicate = _store_predicate(repo, "exp-1")
    stored = predicate["result"]["store"]
    digest = hashlib.sha256(written).hexdigest()
    assert stored["document_sha256"] == digest
    kinds = {d["kind"]: d for d in stored["destinations"]}
    assert kinds["evidence"]["target"] == branch_ref("api", "exp-1")
    assert kinds["file"]["target"] == str((tmp_path / "results" / "out" / "results.json").resolve())
    assert kinds["file"]["sha256"] == digest and kinds["url"]["sha256"] == digest
    assert kinds["url"]["http_status"] == 200 and kinds["url"]["signed"] is True
    assert "s3cret" not in json.dumps(predicate)


def test_a_refused_export_fails_the_store_step_and_is_recorded(tmp_path, cli, keys, tsa, receiver, monkeypatch):
    server, handler = receiver
    handler.status = 503
    monkeypatch.setenv("AFDP_STORE_SECRET", "s3cret-store-key-123")
    repo, result = _export_run(tmp_path, cli, keys, tsa, server.server_address[1], "exp-2")
    assert result.code == 0, result.err
    store = result.json()["steps"][-1]
    assert store["status"] == "failed" and "answered HTTP 503" in store["error"], store
    destinations = {d["kind"]: d for d in _store_predicate(repo, "exp-2")["result"]["store"]["destinations"]}
    assert destinations["url"]["status"] == "failed" and destinations["file"]["status"] == "ok"


# --- Step 2: context ---------------------------------------------------------------------


def test_step2_completed_validates_with_context_notes_and_captures(tmp_path, cli):
    path = completed(tmp_path, STEP2)
    report = validate(cli, path)
    assert report["code"] == 0 and report["valid"], report["findings"]
    notes = " ".join(n["message"] for n in report["notes"])
    assert "not judged unless a success criterion or decision names them" in notes
    for name in ("user_sessions_active", "orders_per_minute", "support_tickets_rate", "custom_kpi_metric"):
        assert f'sum({name}{{service="${{deployment.service}}"}})' in notes
    workflow = load_workflow(path)
    context = ("user_sessions_active", "orders_per_minute", "support_tickets_rate", "custom_kpi_metric")
    assert workflow.context == context
    for name in ("capture", "capture_2"):
        assert workflow.step(name).params.metrics == ("response_time", *context)
    assert workflow.unjudged_context() == frozenset(context)
    plan = cli("plan", str(path), "--set", "deployment.service=api", "--set", "deployment.id=d", "--json").json()
    queries = {m["name"]: m for m in plan["metrics"]}
    assert queries["orders_per_minute"]["query"] == 'sum(orders_per_minute{service="api"})'


def test_a_context_metric_named_by_a_criterion_is_judged(tmp_path):
    path = completed(tmp_path, STEP2)
    path.write_text(path.read_text("utf-8") + "success_criteria:\n  - orders_per_minute.change > -10%\n", "utf-8")
    workflow = load_workflow(path)
    assert "orders_per_minute" not in workflow.unjudged_context()
    assert "custom_kpi_metric" in workflow.unjudged_context()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("context:\n  - success_criteria_met\n", "reserved name"),
        ("context: user_sessions_active\n", "expected a list"),
        ("context:\n  - 9lives\n", "metric name"),
        (
            "collectors:\n  prometheus: {type: scrape, url: 'http://api:8080/metrics'}\ncontext:\n  - custom_kpi_metric\n",
            "declare it under metrics:",
        ),
    ],
)
def test_bad_context_is_a_located_error(tmp_path, cli, text, message):
    path = tmp_path / "w.yaml"
    path.write_text(text + FIRST_STEPS.format(metrics="error_rate"), "utf-8")
    result = cli("validate", str(path))
    assert result.code == 1 and message in result.out, result.out


def test_context_metrics_are_shown_not_judged():
    workflow = load_workflow_text(
        "context: [orders_per_minute]\n" + FIRST_STEPS.format(metrics="[response_time]")
    )
    params = workflow.step("compare").params
    assert isinstance(params, Analyze) and params.metrics == ("response_time", "orders_per_minute")
    rng = np.random.default_rng(7)
    baseline = {"response_time": rng.normal(0.05, 0.002, 30), "orders_per_minute": rng.normal(100, 2, 30)}
    impact = {"response_time": rng.normal(0.05, 0.002, 30), "orders_per_minute": rng.normal(50, 2, 30)}
    result = analyze(params, workflow, baseline, impact, context=workflow.unjudged_context())
    document = result.to_json()
    orders = document["metrics"]["orders_per_minute"]
    assert orders["context"] is True and orders["degraded"] is None and orders["decided_by"] == "context"
    assert orders["change"] < -0.4 and orders["significant"] is True  # shown: it halved
    assert document["summary"]["context"] == ["orders_per_minute"]
    assert document["summary"]["inconclusive"] == [] and document["summary"]["any_degradation"] is False
    outcome = decide(workflow, Decide((), "compare"), {**result.values()})
    assert outcome.action == "mark_successful", outcome.reason
    # Without the context marking, the halving would be judged (better: none, a change).
    judged = analyze(params, workflow, baseline, impact).to_json()
    assert judged["metrics"]["orders_per_minute"]["degraded"] is True


def load_workflow_text(text: str):
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "w.yaml"
        path.write_text(text, "utf-8")
        return load_workflow(path)


# --- Step 3: success criteria --------------------------------------------------------------


def test_step3_completed_validates_and_says_how_each_phrase_is_read(tmp_path, cli):
    path = completed(tmp_path, STEP3, metrics=STEP3_METRICS)
    report = validate(cli, path)
    assert report["code"] == 0 and report["valid"], report["findings"]
    notes = {n["path"]: n["message"] for n in report["notes"]}
    assert "'response_time.shift < 10ms'" in notes["success_criteria[0]"]
    assert "'not error_rate.degraded'" in notes["success_criteria[1]"]
    assert "'not revenue_per_hour.degraded'" in notes["success_criteria[2]"]
    assert "'not user_satisfaction.degraded'" in notes["success_criteria[3]"]
    workflow = load_workflow(path)
    assert [c.source.split(":")[0] for c in workflow.success_criteria] == [
        "response_time_increase < 10ms", "no_increase_in_errors", "revenue_stable_or_increasing",
        "user_satisfaction_maintained",
    ]  # fmt: skip
    assert workflow.steps[-1].kind.value == "decide"  # added: the criteria are evaluated
    plan = cli("plan", str(path), "--set", "deployment.service=api", "--set", "deployment.id=d", "--json")
    assert plan.code == 0, plan.err


def test_step3_with_the_first_workflow_names_what_to_capture(tmp_path, cli):
    path = completed(tmp_path, STEP3)
    result = cli("validate", str(path))
    assert result.code == 1
    errors = [line for line in result.out.splitlines() if "success_criteria[" in line and ": note:" not in line]
    assert len(errors) == 3, result.out
    assert errors[0].startswith(f"{path}:3:5: success_criteria[1]: ") and "needs error_rate" in errors[0]
    assert "needs revenue_per_hour" in errors[1] and "needs user_satisfaction" in errors[2]
    assert all("capture" in line for line in errors)


@pytest.mark.parametrize(
    ("criterion", "metrics", "message"),
    [
        ("response_time_increase < 10%", STEP3_METRICS, "invalid condition"),
        ("revenue_stable_or_increasing", "[response_time, revenue]", "declared better: none"),
        ("latency_increase < 10ms", STEP3_METRICS, "undefined name"),
        ("error_rate_increase < 1%", "[response_time]", "needs error_rate"),
    ],
)
def test_bad_criteria_are_located_errors(tmp_path, cli, criterion, metrics, message):
    path = tmp_path / "w.yaml"
    extra = "metrics:\n  revenue: {query: 'sum(revenue)', unit: $/hour}\n" if "revenue]" in metrics else ""
    path.write_text(f"success_criteria:\n  - {criterion}\n" + extra + FIRST_STEPS.format(metrics=metrics), "utf-8")
    result = cli("validate", str(path))
    assert result.code == 1, result.out
    assert any(line.startswith(f"{path}:2:5: success_criteria[0]: ") and message in line for line in result.out.splitlines()), result.out


def _step3_verdict(tmp_path, *, latency_added: float, errors_after: float, revenue_after: float, seed: int):
    """Decide the completed Step 3 over synthetic noisy samples (30 a side)."""
    workflow = load_workflow(completed(tmp_path, STEP3, metrics=STEP3_METRICS))
    params = workflow.step("compare").params
    rng = np.random.default_rng(seed)
    n = 30
    baseline = {
        "response_time": 0.045 + rng.normal(0, 0.004, n),
        "error_rate": np.clip(rng.normal(0.01, 0.004, n), 0, None),
        "revenue_per_hour": rng.normal(10_000, 400, n),
        "user_satisfaction": np.clip(rng.normal(0.97, 0.01, n), 0, 1),
    }
    impact = {
        "response_time": 0.045 + latency_added + rng.normal(0, 0.004, n),
        "error_rate": np.clip(rng.normal(errors_after, 0.004, n), 0, None),
        "revenue_per_hour": rng.normal(revenue_after, 400, n),
        "user_satisfaction": np.clip(rng.normal(0.97, 0.01, n), 0, 1),
    }
    result = analyze(params, workflow, baseline, impact, context=workflow.unjudged_context())
    return decide(workflow, workflow.steps[-1].params, result.values())


def test_step3_criteria_hold_when_nothing_changed(tmp_path):
    for seed in range(5):
        outcome = _step3_verdict(tmp_path, latency_added=0.0, errors_after=0.01, revenue_after=10_000, seed=seed)
        assert [c.result for c in outcome.criteria] == [True, True, True, True], outcome.to_json()
        assert outcome.action == "mark_successful"


@pytest.mark.parametrize(
    ("change", "failing"),
    [
        ({"latency_added": 0.015}, 0),  # +15 ms: response_time_increase < 10ms is false
        ({"errors_after": 0.03}, 1),  # 1% -> 3% errors
        ({"revenue_after": 8_000}, 2),  # revenue down 20%
    ],
)
def test_step3_each_criterion_catches_its_regression(tmp_path, change, failing):
    values = {"latency_added": 0.0, "errors_after": 0.01, "revenue_after": 10_000, **change}
    outcome = _step3_verdict(tmp_path, seed=3, **values)
    results = [c.result for c in outcome.criteria]
    assert results[failing] is False and results.count(False) == 1, outcome.to_json()
    assert outcome.action == "alert" and not outcome.success_criteria_met


def test_a_small_latency_shift_within_10ms_passes(tmp_path):
    outcome = _step3_verdict(tmp_path, latency_added=0.004, errors_after=0.01, revenue_after=10_000, seed=1)
    assert outcome.criteria[0].result is True, outcome.criteria[0]


def test_the_report_marks_context_metrics_as_not_judged():
    from afdp.audit.report.build import metric_verdict

    verdict, why = metric_verdict({"status": "ok", "degraded": None, "context": True, "reasons": []})
    assert verdict == "context (not judged)" and "not judged" in why[0]
    assert metric_verdict({"status": "ok", "degraded": None, "reasons": []})[0] == "inconclusive"
