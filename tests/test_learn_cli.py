"""Models as evidence (real repository, real TSA), the CLI's answers on too little history
and bad input, and the predictive steps of a real run (afdp run --no-prefect)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from learn_rows import rows

from afdp.evidence import records as rec
from afdp.evidence.ledger import append_record
from afdp.evidence.trust import load_trust_policy
from afdp.learn.features import Planned
from afdp.learn.model import (
    MIN_HISTORY,
    MODELS,
    ModelUnusable,
    TrainingSet,
    load_model,
    record_model,
    recorded_models,
    train,
)
from afdp.learn.prediction import predict_from_rows

PLANNED = Planned.of(change_size=800, changed_files=20, kinds=["migration"], at=datetime(2026, 12, 7, 14, tzinfo=UTC),
                     environment="production")


def test_a_model_is_recorded_verified_reused_and_refused_when_foreign(repo, signer, attacker, tsa, trust_file):
    history = rows(30, seed=5)
    policy = load_trust_policy(trust_file)
    first = predict_from_rows(history, PLANNED, service="api", dataset_digest="a" * 64, repository=repo,
                              policy=policy, signer=signer, tsa_urls=[tsa.url])
    assert first.model_record and first.model_note == "trained now and recorded"
    models = recorded_models(repo, policy, service="api")
    assert [m.digest for m in models] == [first.model_record]
    assert models[0].dataset_digest == "a" * 64
    cited = dict(zip(models[0].document["training"]["deployments"], models[0].document["training"]["record_digests"], strict=True))
    assert cited == {r["deployment"]: r["record_digests"] for r in history}
    # the same dataset again: the recorded model is refit, fingerprint-checked and cited
    again = predict_from_rows(history, PLANNED, service="api", dataset_digest="a" * 64, repository=repo, policy=policy)
    assert again.model_record == first.model_record and "recorded model" in str(again.model_note)
    assert again.impact == first.impact
    document = again.to_json()
    assert document["cites"]["model_record"] == first.model_record and document["cites"]["dataset_digest"] == "a" * 64
    _, fitted = load_model(repo, policy, service="api", digest=first.model_record[:16])
    assert fitted.fingerprint() == models[0].document["fingerprint"]["sha256"]
    # a record by a key the trust policy does not name: nothing on the branch is used
    draft = rec.RecordDraft(kind=rec.KIND_STEP, step="model", result=models[0].document)
    append_record(repo, service=MODELS, deployment="api", draft=draft, signer=attacker, tsa_urls=[tsa.url])
    with pytest.raises(ModelUnusable, match="did not verify"):
        recorded_models(repo, policy, service="api")


def test_a_recorded_model_of_this_dataset_not_trained_on_its_rows_is_refused(repo, signer, tsa, trust_file):
    # A model record signed by a trusted key names the dataset digest, but its training
    # rows are not the verified history's (one row's impact poisoned; or another service's
    # document on this service's model branch): the prediction must not rest on it.
    history = rows(30, seed=5)
    policy = load_trust_policy(trust_file)
    digest = "b" * 64
    poisoned = [dict(r) for r in history]
    poisoned[3]["impact.latency.increase"] = 9.0
    _, document = train(TrainingSet.of(poisoned, service="api", dataset_digest=digest), assess=False)
    record_model(repo, document, signer=signer, tsa_urls=[tsa.url])
    assert recorded_models(repo, policy, service="api")  # it verifies: the key is trusted
    with pytest.raises(ModelUnusable, match="was not trained on its verified rows"):
        predict_from_rows(history, PLANNED, service="api", dataset_digest=digest, repository=repo, policy=policy)
    # the honest rows, but the document says it models another service
    _, honest = train(TrainingSet.of(history, service="checkout", dataset_digest="c" * 64), assess=False)
    draft = rec.RecordDraft(kind=rec.KIND_STEP, step="model", result=honest)
    append_record(repo, service=MODELS, deployment="api", draft=draft, signer=signer, tsa_urls=[tsa.url])
    with pytest.raises(ModelUnusable, match="was not trained on its verified rows"):
        predict_from_rows(history, PLANNED, service="api", dataset_digest="c" * 64, repository=repo, policy=policy)


def test_cli_predict_with_no_history_says_not_enough_and_exits_0(cli, repo, trust_file):
    result = cli("predict", "--repo", str(repo), "--trust", str(trust_file), "--service", "api",
                 "--change-size", "100", "--kinds", "migration", "--at", "2026-12-07T14:00:00Z", "--json")
    assert result.code == 0, result.err
    document = result.json()
    assert document["status"] == "not_enough_history"
    assert document["reason"] == (
        f"not enough history: 0 deployments, needs {MIN_HISTORY}: no deployment of api is in the verified history, "
        "nor of any other service"
    )
    assert document["impact"] == {} and document["model"]["record"] is None
    human = cli("predict", "--repo", str(repo), "--trust", str(trust_file), "--service", "api", "--change-size", "100")
    assert human.code == 0 and "not enough history: 0 deployments" in human.out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("similar", "--service", "api"), "give one of --deployment, --commit or planned"),
        (("similar", "--service", "api", "--deployment", "d-1", "--change-size", "3"), "give one of"),
        (("similar", "--service", "api", "--deployment", "d-404"), "no verified deployment 'd-404'"),
        (("predict", "--service", "api", "--at", "tomorrow"), "not an RFC 3339 time"),
        (("predict", "--service", "api", "--at", "2026-12-07T14:00:00"), "needs a timezone"),
        (("predict", "--service", "a/b"), "invalid service name"),
        (("predict", "--service", "api", "--key", "k.pem"), "No such file"),
        (("predict", "--service", "api", "--kinds", "migraton"), "unknown change kind 'migraton'"),
        (("similar", "--service", "api", "--kinds", "code,Mobile"), "unknown change kind 'mobile'"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(cli, repo, trust_file, args, message):
    result = cli(*args[:1], "--repo", str(repo), "--trust", str(trust_file), *args[1:])
    assert result.code == 2, (result.out, result.err)
    assert message in result.err and len(result.err.strip().splitlines()) == 1


def test_a_service_with_no_branch_is_a_typo_not_zero_deployments(cli, repo, signer, tsa, trust_file):
    # `insights --service paymnets` said "0 verified deployments" and exited 0, where
    # `afdp report` exits 2 naming the services there
    from conftest import build_deployment

    build_deployment(repo, signer, tsa, service="payments", deployment="d-1")
    for args in (("insights", "--service", "paymnets"), ("similar", "--service", "paymnets", "--change-size", "3")):
        result = cli(args[0], "--repo", str(repo), "--trust", str(trust_file), *args[1:])
        assert result.code == 2, (args, result.out, result.err)
        assert result.err.strip().splitlines() == [
            f"afdp: error: no evidence branch of service paymnets in {repo}; services there: payments"]
    # the service that is there: no error (its history is what it is)
    assert cli("insights", "--repo", str(repo), "--trust", str(trust_file), "--service", "payments").code == 0


def test_cli_insights_on_empty_history(cli, repo, trust_file, tmp_path):
    page = tmp_path / "insights.html"
    result = cli("insights", "--repo", str(repo), "--trust", str(trust_file), "--json", "--html", str(page))
    assert result.code == 0, result.err
    document = result.json()
    assert document["rows"] == 0 and document["notable"] == []
    assert page.read_text().startswith("<!DOCTYPE html>")


PREDICTIVE = """\
name: predictive
version: "1"
before_deployment:
  - analyze_similar_past_deployments
  - predict_likely_impact
  - recommend_deployment_window
  - suggest_rollback_threshold
workflow:
  deployment:
    - mark_deployment_time
    - capture_deployment_metadata: [git_commit]
"""


def test_run_records_predictive_steps_as_skipped_with_the_reason(cli, tmp_path, repo, keys, tsa, trust_file):
    from afdp.verify import check_branch

    path = tmp_path / "wf.yaml"
    path.write_text(PREDICTIVE)
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nname: test-permissive\nallowed_collector_types: [prometheus, scrape, sql, rest]\n")
    base = ["run", str(path), "--policy", str(policy), "--service", "api", "--commit", "abc", "--repo", str(repo),
            "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--no-prefect", "--json"]
    with_trust = cli(*base, "--deployment", "d-1", "--trust", str(trust_file))
    assert with_trust.code == 0, with_trust.err
    steps = {s["name"]: s for s in with_trust.json()["steps"]}
    assert steps["predict_likely_impact"]["status"] == "skipped"
    assert f"not enough history: 0 deployments, needs {MIN_HISTORY}" in steps["predict_likely_impact"]["summary"]
    assert "not enough history: 0 deployments, needs 1" in steps["analyze_similar_past_deployments"]["summary"]
    assert "not enough history" in steps["recommend_deployment_window"]["summary"]
    assert "not enough history: 0 benign deployments" in steps["suggest_rollback_threshold"]["summary"]
    without = cli(*base, "--deployment", "d-2")
    assert without.code == 0, without.err
    steps = {s["name"]: s for s in without.json()["steps"]}
    assert all("no trust policy was given (afdp run --trust)" in steps[n]["summary"] for n in (
        "analyze_similar_past_deployments", "predict_likely_impact"))
    report = check_branch(repo, service="api", deployment="d-1", policy=load_trust_policy(trust_file))
    assert report.ok, report.failures
    assert json.dumps(with_trust.json())  # the outcome stays JSON


GATED = """\
name: gated
version: "1"
collectors:
  shop:
    type: rest
    url: https://shop.example/api
metrics:
  revenue_per_hour:
    collector: shop
    select: revenue
    unit: $/h
    better: higher
before_deployment:
  - predict_likely_impact
workflow:
  deployment:
    - mark_deployment_time
  post_deployment:
    - decisions
decisions:
  hold_risky_deploy:
    condition: steps.predict_likely_impact.predicted_revenue_loss_per_hour_high > $1500_per_hour
    action: alert
"""


def test_a_decision_gates_on_a_predicted_revenue_loss(tmp_path):
    """The docs' example: the condition validates, and the recorded prediction (plain
    numbers plus the currency) is compared in money per hour; a skipped prediction is
    undecidable, so the decision is not taken (fail closed)."""
    from afdp.pipeline.runner.outputs import typed_outputs
    from afdp.workflow import load_workflow
    from afdp.workflow.expressions import parse_expression

    path = tmp_path / "gated.yaml"
    path.write_text(GATED)
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nname: test-permissive\nallowed_collector_types: [prometheus, scrape, sql, rest]\n")
    workflow = load_workflow(path, policy=policy)
    step = workflow.step("predict_likely_impact")
    condition = parse_expression("steps.predict_likely_impact.predicted_revenue_loss_per_hour_high > $1500_per_hour")
    recorded = {"predicted_revenue_loss_per_hour": 1200.0, "predicted_revenue_loss_per_hour_low": 1000.0,
                "predicted_revenue_loss_per_hour_high": 1600.0, "currency": "USD",
                "predicted": {"revenue_per_hour": {"increase": -1200.0, "low": -1600.0, "high": -1000.0}}}
    typed = typed_outputs(workflow, step, recorded)
    assert condition.evaluate({"steps": {"predict_likely_impact": typed}}) is True
    lower = typed_outputs(workflow, step, {**recorded, "predicted_revenue_loss_per_hour_high": 1400.0})
    assert condition.evaluate({"steps": {"predict_likely_impact": lower}}) is False
    per_metric = parse_expression("steps.predict_likely_impact.predicted.revenue_per_hour.low < -$1500_per_hour")
    assert per_metric.evaluate({"steps": {"predict_likely_impact": typed}}) is True
    from afdp.workflow.expressions.nodes import EvaluationError

    with pytest.raises(EvaluationError):  # undecidable: the runner treats it as not met
        condition.evaluate({"steps": {"predict_likely_impact": {}}})


def test_cli_insights_unwritable_html_is_exit_3(cli, repo, trust_file, tmp_path):
    result = cli("insights", "--repo", str(repo), "--trust", str(trust_file), "--html", str(tmp_path / "no" / "dir" / "x.html"))
    assert result.code == 3 and "cannot write" in result.err and len(result.err.strip().splitlines()) == 1


def test_every_kind_a_path_can_have_is_a_kind_the_cli_accepts():
    from afdp.learn.features import CHANGE_KINDS, parse_kinds
    from afdp.learn.history import classify_path

    paths = ["db/migrations/1.sql", "tests/test_a.py", "uv.lock", "Dockerfile", "README.md", "web/app.tsx",
             "config/app.yaml", "src/app.py", "LICENSE"]
    assert sorted({classify_path(p) for p in paths}) == sorted(CHANGE_KINDS)
    assert parse_kinds("Migration, code") == ("code", "migration")


def test_the_models_namespace_holds_only_models(cli, repo, signer, tsa, trust_file, keys, tmp_path, monkeypatch):
    # A service literally named "models" would write its deployments onto afdp/models/<id>,
    # the branches that hold other services' models: refused at every way in.
    from afdp.errors import UsageError
    from afdp.evidence import ledger
    from afdp.evidence.ledger import append_records, open_branch

    step = rec.RecordDraft(kind=rec.KIND_STEP, step="analyze", result={"x": 1})
    with pytest.raises(UsageError, match="'models' is reserved"):
        append_record(repo, service=MODELS, deployment="api", draft=step, signer=signer, tsa_urls=[tsa.url])
    with pytest.raises(UsageError, match="'models' is reserved"):
        append_records(repo, service=MODELS, deployment="api", drafts=[step], signer=signer, tsa_urls=[tsa.url])
    with pytest.raises(UsageError, match="'models' is reserved"):
        open_branch(repo, service=MODELS, deployment="d-1", signer=signer, tsa_urls=[tsa.url])
    result_file = tmp_path / "r.json"
    result_file.write_text('{"x": 1}')
    result = cli("record", "--repo", str(repo), "--service", "models", "--deployment", "api", "--step", "analyze",
                 "--result", str(result_file), "--key", str(keys / "dev.key"), "--tsa", tsa.url)
    assert result.code == 2 and "'models' is reserved" in result.err and len(result.err.strip().splitlines()) == 1
    # a repository written before the name was reserved (the check stood aside to write it):
    # a deployment branch there is not taken for a model branch
    monkeypatch.setattr(ledger, "check_not_models", lambda service, step: None)
    append_record(repo, service=MODELS, deployment="api", draft=step, signer=signer, tsa_urls=[tsa.url])
    monkeypatch.undo()
    with pytest.raises(ModelUnusable, match="not a model branch"):
        recorded_models(repo, load_trust_policy(trust_file), service="api")


def test_similar_says_which_past_deployments_were_imported():
    # an imported past deployment must never pass for a live-captured one in the answer
    from afdp.learn.similar import find_similar

    history = rows(30, seed=5)
    for row in history[:10]:
        row["imported"] = True
    result = find_similar(history, PLANNED, service="api", k=30, radius=100.0)
    document = result.to_json()
    flags = {n["deployment"]: n["imported"] for n in document["neighbours"]}
    assert flags == {r["deployment"]: r["imported"] for r in history}
    assert document["pattern"]["imported"] == 10
    assert result.sentence().endswith("; 10 of them imported from history, not captured live")
    live = find_similar(rows(30, seed=5), PLANNED, service="api", k=3, radius=100.0)
    assert "imported" not in live.sentence() and live.to_json()["pattern"]["imported"] == 0


def test_a_model_branch_is_counted_as_a_model_branch_not_a_failed_deployment(repo, signer, tsa, trust_file):
    from afdp.learn.history import load_history

    _, document = train(TrainingSet.of(rows(30, seed=5), service="api", dataset_digest="d" * 64), assess=False)
    record_model(repo, document, signer=signer, tsa_urls=[tsa.url])
    history = load_history(repo, trust_file)
    assert history.rows == [] and history.considered == 1
    assert [(e.branch, e.reason) for e in history.excluded] == [
        ("refs/heads/afdp/models/api", "model branch (the impact models of api), not a deployment")
    ]
    assert history.excluded_by_reason() == {"model branch": 1}
