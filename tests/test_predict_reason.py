"""``afdp predict --service NAME`` for a service with no deployment in the verified history:
still exit 0 (a new service has no history), but the reason says so by name and names the
services that do have one, so a mistyped name is visible. Real repository, real TSA,
real verification: a service is named only if one of its branches verified and gave a row."""

from __future__ import annotations

import pytest
from test_learn_dataset import ledger_deployment

from afdp.evidence.signing import load_signer
from afdp.evidence.store import init_repository
from afdp.evidence.trust import load_trust_policy, write_trust_policy
from afdp.learn.history import services_in_history
from afdp.learn.model import MIN_HISTORY

NONE = f"not enough history: 0 deployments, needs {MIN_HISTORY}"
PLANNED = ("--change-size", "100", "--kinds", "migration", "--at", "2026-12-07T14:00:00Z")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, keys, tsa):
    """api and web: one verified deployment each; ops: verified but no training record
    (no row); evil: signed by a key the auditor does not trust (fails verification)."""
    tmp = tmp_path_factory.mktemp("predict-reason")
    repo = tmp / "evidence"
    init_repository(repo)
    trust = tmp / "auditor" / "trust.yaml"
    trust.parent.mkdir()
    write_trust_policy(trust, keys=[keys / "dev.key.pub"], tsa_roots=[tsa.directory / "root.pem"])
    signer, attacker = load_signer(str(keys / "dev.key")), load_signer(str(keys / "attacker.key"))
    ledger_deployment(repo, signer, tsa.url, "api", "d-1", deployed_at="2026-01-05T09:30:00Z")
    ledger_deployment(repo, signer, tsa.url, "web", "w-1", deployed_at="2026-01-06T09:30:00Z")
    ledger_deployment(repo, signer, tsa.url, "ops", "o-1", deployed_at="2026-01-07T09:30:00Z", training=False)
    ledger_deployment(repo, attacker, tsa.url, "evil", "e-1", deployed_at="2026-01-08T09:30:00Z")
    return repo, trust


def predict(cli, repo, trust, service, *extra):
    return cli("predict", "--repo", str(repo), "--trust", str(trust), "--service", service, *PLANNED, *extra)


def test_a_mistyped_service_names_the_services_that_have_verified_history(cli, fleet):
    repo, trust = fleet
    result = predict(cli, repo, trust, "apii", "--json")
    assert result.code == 0, result.err  # a new service legitimately has no history
    document = result.json()
    assert document["status"] == "not_enough_history" and document["impact"] == {}
    # named: only services with a verified row (not ops: no training record; not evil: untrusted signer)
    assert document["reason"] == f"{NONE}: no deployment of apii is in the verified history; services that are: api, web"
    human = predict(cli, repo, trust, "apii")
    assert human.code == 0
    assert human.out.strip() == f"apii: {NONE}: no deployment of apii is in the verified history; services that are: api, web; no prediction made"


def test_a_service_whose_branches_were_all_left_out_says_how_many_and_why(cli, fleet):
    repo, trust = fleet
    ops = predict(cli, repo, trust, "ops", "--json")
    assert ops.code == 0, ops.err
    assert ops.json()["reason"] == (
        f"{NONE}: no deployment of ops is in the verified history (its 1 evidence branch(es) were left out: no training record: 1)"
    )
    evil = predict(cli, repo, trust, "evil", "--json")
    assert evil.code == 0, evil.err
    reason = evil.json()["reason"]
    assert reason.startswith(f"{NONE}: no deployment of evil is in the verified history (its 1 evidence branch(es) were left out: verification failed: ")


def test_a_repository_with_no_verified_history_at_all_says_so(cli, tmp_path, trust_file):
    repo = tmp_path / "empty"
    init_repository(repo)
    result = predict(cli, repo, trust_file, "api", "--json")
    assert result.code == 0, result.err
    assert result.json()["reason"] == f"{NONE}: no deployment of api is in the verified history, nor of any other service"


def test_at_most_limit_services_are_named_and_the_rest_counted(fleet):
    repo, trust = fleet
    policy = load_trust_policy(trust)
    assert services_in_history(repo, policy) == (["api", "web"], 0)
    # name order: api is found first; evil, ops and web are not reached
    assert services_in_history(repo, policy, limit=1) == (["api"], 3)
