"""The predictive steps of `afdp run` for a service with no deployment in the verified
history: still skipped, with the step's own minimum, and, as `afdp predict` says it, by
name and with the services that do have history (a mistyped --service is visible).
Real repository, real TSA, real verification (afdp run --no-prefect)."""

from __future__ import annotations

from test_learn_cli import PREDICTIVE
from test_learn_dataset import ledger_deployment

from afdp.evidence.signing import load_signer
from afdp.evidence.store import init_repository
from afdp.evidence.trust import write_trust_policy
from afdp.learn.model import MIN_HISTORY

STEPS = {
    "analyze_similar_past_deployments": "not enough history: 0 deployments, needs 1",
    "predict_likely_impact": f"not enough history: 0 deployments, needs {MIN_HISTORY}",
    "recommend_deployment_window": "not enough history: 0 deployments, needs 10",
    "suggest_rollback_threshold": "not enough history: 0 benign deployments, needs 19",
}


def _run(cli, tmp_path, keys, tsa, service, *, fleet=True):
    repo = tmp_path / "evidence"
    init_repository(repo)
    trust = tmp_path / "auditor" / "trust.yaml"
    trust.parent.mkdir()
    write_trust_policy(trust, keys=[keys / "dev.key.pub"], tsa_roots=[tsa.directory / "root.pem"])
    if fleet:
        signer = load_signer(str(keys / "dev.key"))
        ledger_deployment(repo, signer, tsa.url, "api", "d-1", deployed_at="2026-01-05T09:30:00Z")
        ledger_deployment(repo, signer, tsa.url, "web", "w-1", deployed_at="2026-01-06T09:30:00Z")
        ledger_deployment(repo, signer, tsa.url, "ops", "o-1", deployed_at="2026-01-07T09:30:00Z", training=False)
    path = tmp_path / "wf.yaml"
    path.write_text(PREDICTIVE)
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nname: test-permissive\nallowed_collector_types: [prometheus, scrape, sql, rest]\n")
    done = cli("run", str(path), "--policy", str(policy), "--service", service, "--commit", "abc",
               "--repo", str(repo), "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--no-prefect",
               "--json", "--deployment", "x-1", "--trust", str(trust))
    assert done.code == 0, done.err
    return {s["name"]: s for s in done.json()["steps"]}


def test_a_mistyped_service_is_named_and_the_services_with_history_listed(cli, tmp_path, keys, tsa):
    steps = _run(cli, tmp_path, keys, tsa, "apii")
    for name, start in STEPS.items():
        assert steps[name]["status"] == "skipped", steps[name]
        assert steps[name]["summary"] == (
            f"skipped: {start}: no deployment of apii is in the verified history; services that are: api, web"
        ), steps[name]["summary"]


def test_a_service_with_history_keeps_the_plain_reason(cli, tmp_path, keys, tsa):
    steps = _run(cli, tmp_path, keys, tsa, "api")
    # one deployment of api: not 0 rows, so no note (and no lookup of other services)
    assert steps["recommend_deployment_window"]["summary"] == "skipped: not enough history: 1 deployments, needs 10"


def test_no_history_at_all_says_so(cli, tmp_path, keys, tsa):
    steps = _run(cli, tmp_path, keys, tsa, "api", fleet=False)
    assert steps["analyze_similar_past_deployments"]["summary"] == (
        f"skipped: {STEPS['analyze_similar_past_deployments']}: no deployment of api is in the verified history, "
        "nor of any other service"
    )


def test_a_service_whose_branches_were_left_out_says_how_many_and_why(cli, tmp_path, keys, tsa):
    steps = _run(cli, tmp_path, keys, tsa, "ops")
    # o-1 (no training record) is counted; this run's own branch (not sealed yet) is not
    assert steps["predict_likely_impact"]["summary"] == (
        f"skipped: {STEPS['predict_likely_impact']}: no deployment of ops is in the verified history "
        "(its 1 evidence branch(es) were left out: no training record: 1)"
    )
