"""The guide's ``ml_predictor`` analyzer: compiled into its own step ``predict_<name>``,
run from verified history, recorded as its own evidence record.

Real parts: the compiler and ``afdp validate``; for the runs, verified history written
with the ledger API (``tests/test_learn_dataset.py``'s ``ledger_deployment``: signed and
time-stamped by the real TSA fixture), then ``afdp run --no-prefect --trust`` against the
demo service, ``afdp verify`` and ``afdp replay``; the model branch is tampered in Git.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli
from tamper import edit, with_file
from test_learn_dataset import ledger_deployment

from afdp.evidence import records as rec
from afdp.evidence.signing import load_signer
from afdp.evidence.store import init_repository
from afdp.learn.model import MIN_HISTORY
from afdp.workflow.compiler import compile_document, mlpredict
from afdp.workflow.findings import WorkflowInvalid
from afdp.workflow.loader import parse
from afdp.workflow.model import Predict

GUIDE = """\
analyzers:
  ml_predictor:
    model: deployment_impact_v2
    features:
      - code_change_size
      - deployment_hour
      - current_load
    output: predicted_impact
"""

WORKFLOW = """\
name: ml_run
version: "1"
variables:
  METRICS_URL: http://127.0.0.1:1/metrics
collectors:
  demo:
    type: scrape
    url: ${workflow.METRICS_URL}
    interval: 250ms
    timeout: 5s
metrics:
  latency_p99:
    collector: demo
    metric: http_request_duration_seconds
    labels:
      service: ${deployment.service}
    unit: s
    better: lower
  revenue:
    collector: demo
    metric: http_requests_total
    labels:
      service: ${deployment.service}
    unit: $/h
    better: higher
analyzers:
  guard:
    model: deployment_impact_v2
    features: [code_change_size, deployment_hour]
    output: predicted_impact
workflow:
  pre_deployment:
    - capture_baseline:
        duration: 2s
        interval: 250ms
        metrics: [latency_p99]
  deployment:
    - mark_deployment_time
  post_deployment:
    - capture_impact:
        duration: 2s
        interval: 250ms
        metrics: [same_as_baseline]
    - analyze_differences:
        thresholds:
          latency_p99_increase: 1s
    - decisions
decisions:
  hold_risky_deploy:
    condition: steps.predict_guard.predicted_impact > $10_per_hour
    action: alert
    training_label: predicted_loss
  all_clear:
    condition: not latency_p99.degraded
    action: mark_successful
"""

REST = """\
name: ml_seed
metrics:
  revenue_per_hour: {query: 'sum(rate(revenue_total[1m])) * 3600', unit: $/hour, better: higher}
workflow:
  - capture_baseline: {metrics: [response_time], duration: 5m}
  - mark_deployment_time
  - capture_impact: {duration: 10m}
  - analyze_differences
  - decisions
decisions:
  money:
    condition: steps.predict_ml_predictor.predicted_impact_high > $1000_per_hour
    action: rollback
"""


def _compile(text: str):
    return compile_document(parse(text, name="w.yaml"))


def _findings(text: str) -> list[str]:
    with pytest.raises(WorkflowInvalid) as caught:
        _compile(text)
    return [str(f) for f in caught.value.findings]


# --- compile and validate -------------------------------------------------------------


def test_the_guides_ml_predictor_compiles_to_its_own_step_with_the_features_read(tmp_path, cli):
    workflow = _compile(REST + GUIDE)
    step = workflow.step("predict_ml_predictor")
    assert step.phase == "before_deployment" and step.index == 0
    params = step.params
    assert isinstance(params, Predict) and params.analyzer == "ml_predictor"
    assert params.model == "deployment_impact_v2" and params.output == "predicted_impact"
    assert params.features == (("code_change_size", "change_size"), ("deployment_hour", "hour_utc"),
                               ("current_load", "load"))
    assert [d.name for d in workflow.decisions] == ["money"]  # the decision on its output validates
    path = tmp_path / "w.yaml"
    path.write_text(REST + GUIDE)
    result = cli("validate", str(path), "--json")
    assert result.code == 0, result.err
    note = next(n for n in result.json()["notes"] if n["path"].startswith("analyzers.ml_predictor"))
    assert "runs as its own step predict_ml_predictor" in note["message"]
    assert "the model is trained on exactly these features: code_change_size = change_size" in note["message"]
    assert "deployment_hour = hour_utc" in note["message"]
    assert "current_load = load" in note["message"]
    assert f"{MIN_HISTORY} past deployments" in note["message"]


def test_the_notes_history_figure_is_the_models():
    assert mlpredict.MIN_HISTORY == MIN_HISTORY


def test_an_unknown_feature_is_refused_with_the_known_ones():
    found = _findings(REST.replace("  - decisions\n", "").split("decisions:")[0]
                      + GUIDE.replace("current_load", "moon_phase"))
    assert any("feature 'moon_phase' is not a learning feature" in f and "code_change_size" in f for f in found), found


def test_an_output_that_hides_the_predictions_own_field_is_refused():
    text = REST.split("decisions:")[0].replace("  - decisions\n", "") + GUIDE.replace(
        "output: predicted_impact", "output: predicted_revenue_loss_per_hour_low")
    found = _findings(text.replace("predicted_revenue_loss_per_hour_low", "currency"))
    assert any("would hide one of the prediction's own outputs" in f for f in found), found


def test_a_decision_on_an_output_it_does_not_have_is_refused():
    found = _findings(REST.replace("predicted_impact_high", "predicted_impacts") + GUIDE)
    assert any("predicted_impacts" in f for f in found), found


# --- a run with verified history ------------------------------------------------------


def _history(repo: Path, keys: Path, tsa) -> None:
    signer = load_signer(str(keys / "dev.key"))
    for i in range(MIN_HISTORY + 2):
        ledger_deployment(repo, signer, tsa.url, "api", f"h-{i:02d}", deployed_at=f"2026-01-{1 + i:02d}T{(i * 5) % 24:02d}:00:00Z",
                          degraded=i % 3 == 0, money=True)


def _run(tmp_path: Path, repo: Path, keys: Path, tsa, trust: Path, deployment: str, *extra: str):
    from afdp.demo.service import DemoService

    path = tmp_path / "wf.yaml"
    path.write_text(WORKFLOW)
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nname: p\nallowed_collector_types: [prometheus, scrape, sql, rest]\n")
    with DemoService(name="api", version="v1") as demo:
        return run_cli("run", str(path), "--service", "api", "--deployment", deployment, "--repo", str(repo),
                       "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--policy", str(policy),
                       "--set", f"METRICS_URL={demo.metrics_url}", "--commit", "4f2a9c1",
                       "--environment", "prod", "--changed-file", "src/app.py", "--deployment-size", "12",
                       "--no-prefect", "--json", *extra)


def _record(repo: Path, deployment: str, step: str) -> dict:
    import base64

    from tamper import read_branch

    for entry in read_branch(repo, service="api", deployment=deployment):
        if rec.ENVELOPE_FILE not in entry.files:
            continue
        envelope = json.loads(entry.files[rec.ENVELOPE_FILE])
        predicate = json.loads(base64.b64decode(envelope["payload"]))["predicate"]
        if (predicate.get("step") or {}).get("name") == step:
            return predicate
    raise AssertionError(f"no record of {step}")


@pytest.mark.slow
def test_a_run_with_history_records_the_prediction_as_its_own_cited_record(tmp_path, keys, tsa, trust_file):
    from afdp.learn.model import recorded_models
    from afdp.learn.source import trust_of

    repo = tmp_path / "evidence"
    init_repository(repo)
    _history(repo, keys, tsa)
    done = _run(tmp_path, repo, keys, tsa, trust_file, "d-1", "--trust", str(trust_file))
    assert done.code == 0, (done.out, done.err)
    steps = {s["name"]: s for s in done.json()["steps"]}
    assert steps["predict_guard"]["status"] == "ok", steps["predict_guard"]
    predicate = _record(repo, "d-1", "predict_guard")
    result = predicate["result"]
    models = recorded_models(repo, trust_of(repo, trust_file), service="api")
    assert models and result["model_record"] == models[-1].digest  # cites the model record it used
    assert result["dataset_digest"] == models[-1].dataset_digest == result["outputs"]["dataset_digest"]
    assert result["analyzer"]["features"] == [{"written": "code_change_size", "feature": "change_size"},
                                              {"written": "deployment_hour", "feature": "hour_utc"}]
    # the features selected the model's inputs: exactly those, recorded with the prediction and the model
    assert result["analyzer"]["model_features"] == ["change_size", "hour_utc"]
    assert result["analyzer"]["model_inputs"] == ["log_change_size", "hour_sin", "hour_cos"]
    assert models[-1].document["features"]["selected"] == ["change_size", "hour_utc"]
    assert models[-1].document["training"]["columns"] == ["log_change_size", "hour_sin", "hour_cos"]
    loss = result["outputs"]["predicted_impact"]
    assert loss == result["outputs"]["predicted_revenue_loss_per_hour"] == pytest.approx(20.0, abs=5.0)
    assert result["outputs"]["predicted_impact_low"] <= loss <= result["outputs"]["predicted_impact_high"]
    assert result["outputs"]["currency"] == "USD"
    # the decision gated on it (> $10/h): taken
    assert done.json()["decision"]["decision"] == "hold_risky_deploy", done.json()["decision"]
    # the analysis document holds no prediction: it points at the record
    analysis = _record(repo, "d-1", "analyze_differences")["result"]["analysis"]
    entry = next(a for a in analysis["analyzers"] if a["name"] == "guard")
    assert entry["status"] == "skipped" and entry["record"] == "predict_guard"
    assert f"{loss:.6g}"[:5] not in json.dumps(entry) and "loss" not in json.dumps(entry)  # no number in it
    verified = run_cli("verify", "--repo", str(repo), "--service", "api", "--deployment", "d-1", "--trust", str(trust_file))
    assert verified.code == 0, verified.out + verified.err
    replayed = run_cli("replay", "--repo", str(repo), "--trust", str(trust_file), "--service", "api", "--deployment", "d-1")
    assert replayed.code == 0 and "IDENTICAL" in replayed.out, replayed.out + replayed.err

    # a tampered model branch: the analyzer refuses it, never a prediction; the decision is undecidable
    def forge(entry):
        envelope = json.loads(entry.files[rec.ENVELOPE_FILE])
        envelope["signatures"][0]["sig"] = envelope["signatures"][0]["sig"][::-1]
        return with_file(entry, rec.ENVELOPE_FILE, json.dumps(envelope).encode())

    edit(repo, -1, forge, service="models", deployment="api")
    again = _run(tmp_path, repo, keys, tsa, trust_file, "d-2", "--trust", str(trust_file))
    steps = {s["name"]: s for s in again.json()["steps"]}
    assert steps["predict_guard"]["status"] == "failed", steps["predict_guard"]
    assert "model branch afdp/models/api did not verify" in steps["predict_guard"]["summary"]
    refused = _record(repo, "d-2", "predict_guard")["result"]
    assert refused["outputs"] == {} and "model_record" not in refused and refused["analyzer"]["name"] == "guard"
    assert again.json()["decision"]["decision"] != "hold_risky_deploy"


@pytest.mark.slow
def test_without_enough_history_the_analyzer_is_skipped_with_the_reason(tmp_path, keys, tsa, trust_file):
    repo = tmp_path / "evidence"
    init_repository(repo)
    signer = load_signer(str(keys / "dev.key"))
    for i in range(3):
        ledger_deployment(repo, signer, tsa.url, "api", f"h-{i}", deployed_at=f"2026-01-0{1 + i}T10:00:00Z", money=True)
    done = _run(tmp_path, repo, keys, tsa, trust_file, "d-1", "--trust", str(trust_file))
    assert done.code == 0, done.err
    step = {s["name"]: s for s in done.json()["steps"]}["predict_guard"]
    assert step["status"] == "skipped"
    assert f"not enough history: 3 deployments, needs {MIN_HISTORY}" in step["summary"]
    assert _record(repo, "d-1", "predict_guard")["result"]["outputs"] == {}
    assert done.json()["decision"]["decision"] != "hold_risky_deploy"  # undecidable, not taken
    plain = _run(tmp_path, repo, keys, tsa, trust_file, "d-2")
    step = {s["name"]: s for s in plain.json()["steps"]}["predict_guard"]
    assert step["status"] == "skipped" and "no trust policy was given" in step["summary"]
