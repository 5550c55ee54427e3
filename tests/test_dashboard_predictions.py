"""The dashboard's prediction per service (:func:`afdp.service.dashboard.service_prediction`
and its cache in :class:`afdp.service.dashboard.Dashboard`).

Real parts: verified history written with the ledger API (``test_learn_dataset.py``'s
``ledger_deployment``: signed, time-stamped by the real TSA fixture), a model recorded on
``afdp/models/<service>`` by :func:`afdp.learn.prediction.predict_impact` (what ``afdp
predict --key --tsa`` does), the real verifier, and attackers' edits in plain Git
(``tests/tamper.py``). The page is rendered by the real app on loopback HTTP.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pygit2
import pytest
import tamper
from test_learn_dataset import ledger_deployment

from afdp.evidence.trust import load_trust_policy
from afdp.learn.features import Planned
from afdp.learn.history import load_history
from afdp.learn.model import MIN_HISTORY, MODELS, load_model
from afdp.learn.prediction import predict_impact
from afdp.service.app import ServeSettings, create_app, running_server
from afdp.service.config import Services
from afdp.service.dashboard import Dashboard, service_prediction
from afdp.service.metrics import ServiceMetrics
from afdp.service.submit import RunSubmitter

SERVICE = "pay"
TOKEN = "dashboard-token-0123456789abcdef"


def write_history(repo: Path, signer, tsa_url: str, *, service: str = SERVICE, n: int = MIN_HISTORY + 2) -> list[str]:
    """``n`` verified deployments of ``service`` (one in three degraded); returns their ids."""
    ids = []
    for i in range(n):
        deployment = f"h-{i:02d}"
        ledger_deployment(repo, signer, tsa_url, service, deployment,
                          deployed_at=f"2026-{1 + i // 28:02d}-{1 + i % 28:02d}T{(i * 5) % 24:02d}:00:00Z", degraded=i % 3 == 0, money=True)
        ids.append(deployment)
    return ids


def record_a_model(repo: Path, trust_file: Path, signer, tsa_url: str, *, service: str = SERVICE) -> str:
    """Record the service's model as ``afdp predict --key --tsa`` does; return its record digest."""
    prediction = predict_impact(repo, trust_file, service=service, planned=Planned.of(change_size=12),
                                signer=signer, tsa_urls=[tsa_url])
    assert prediction.status == "ok" and prediction.model_record
    return prediction.model_record


@pytest.fixture(scope="module")
def _modelled_once(tmp_path_factory, keys, tsa):
    from afdp.evidence.signing import load_signer
    from afdp.evidence.store import init_repository
    from afdp.evidence.trust import write_trust_policy

    base = tmp_path_factory.mktemp("modelled")
    repo = base / "evidence"
    init_repository(repo)
    trust = base / "trust.yaml"
    write_trust_policy(trust, keys=[keys / "dev.key.pub"], tsa_roots=[tsa.directory / "root.pem"])
    signer = load_signer(str(keys / "dev.key"))
    ids = write_history(repo, signer, tsa.url)
    return repo, ids, record_a_model(repo, trust, signer, tsa.url)


@pytest.fixture()
def modelled(_modelled_once, tmp_path):
    """A copy (the tests tamper with it) of one repository with a verified history and its model."""
    source, ids, digest = _modelled_once
    repo = tmp_path / "modelled"
    shutil.copytree(source, repo)
    return repo, ids, digest


def _dashboard(repo: Path, trust: Path | None) -> Dashboard:
    return Dashboard(repo, trust_policy=trust, metrics=ServiceMetrics())


def test_the_prediction_rests_on_the_verified_model_and_cites_it(modelled, trust_file):
    repo, ids, digest = modelled
    found = service_prediction(repo, trust_file, SERVICE)
    assert found.status == "ok" and found.reason is None
    assert found.model_record == digest and found.model_rows == len(ids) == found.history_rows
    # the next deployment is taken to be like the latest verified one, and says so
    assert found.like == ids[-1] and found.query is not None
    # the numbers are the recorded model's (refit, fingerprint-checked) on that deployment
    policy = load_trust_policy(trust_file)
    recorded, fitted = load_model(repo, policy, service=SERVICE, digest=digest)
    rows = load_history(repo, trust_file, services=[SERVICE], jobs=1).rows
    expected = fitted.predict([Planned.from_row(rows[-1])])
    assert {t.target for t in found.targets} == set(expected)
    for target in found.targets:
        value = expected[target.target][0]
        assert (target.low, target.point, target.high) == (value["low"], value["point"], value["high"])
        assert target.low <= target.high
        quality = recorded.document["coverage"][target.target]
        assert (target.nominal, target.coverage, target.covered_n) == (0.9, quality["empirical"], quality["n"])
    document = found.to_json()
    assert document["model"]["record"] == digest and document["status"] == "ok"


def test_a_tampered_model_branch_shows_no_numbers(modelled, trust_file):
    repo, _, digest = modelled
    dashboard = _dashboard(repo, trust_file)
    assert dashboard.prediction(SERVICE).status == "ok"
    envelope = tamper.rec.ENVELOPE_FILE
    tamper.edit(repo, 1, lambda e: tamper.with_file(e, envelope, e.files[envelope] + b" "),
                service=MODELS, deployment=SERVICE)
    found = dashboard.prediction(SERVICE)  # the model branch head moved: computed again
    assert found.status == "unverified" and found.targets == () and "did not verify" in str(found.reason)
    # the page says unverified and shows none of the numbers
    page = _service_page(repo, trust_file)
    assert 'data-status="unverified"' in page and 'id="predictions"' not in page and digest not in page
    assert "the model is unverified" in page


def test_a_model_trained_on_a_deployment_that_no_longer_verifies_shows_no_numbers(modelled, trust_file):
    repo, ids, _ = modelled
    envelope = tamper.rec.ENVELOPE_FILE
    tamper.edit(repo, 2, lambda e: tamper.with_file(e, envelope, e.files[envelope] + b" "),
                service=SERVICE, deployment=ids[3])
    found = service_prediction(repo, trust_file, SERVICE)
    assert found.status == "unverified" and found.targets == ()
    assert f"do not verify under this trust policy ({ids[3]})" in str(found.reason)


def test_below_the_minimum_history_there_is_no_number(repo, signer, tsa, trust_file):
    write_history(repo, signer, tsa.url, n=3)
    found = service_prediction(repo, trust_file, SERVICE)
    assert (found.status, found.reason, found.history_rows, found.targets) == (
        "not_enough_history", f"not enough history: 3 deployments, needs {MIN_HISTORY}", 3, ())
    page = _service_page(repo, trust_file)
    assert 'data-status="not_enough_history"' in page and "Not enough history" in page


def test_without_a_model_or_a_trust_policy_nothing_is_predicted(modelled, trust_file):
    repo, _, _ = modelled
    pygit2.Repository(str(repo)).references.delete(f"refs/heads/afdp/{MODELS}/{SERVICE}")
    found = service_prediction(repo, trust_file, SERVICE)
    assert found.status == "no_model" and found.targets == () and "afdp predict --key" in str(found.reason)
    assert service_prediction(repo, None, SERVICE).status == "unchecked"


def test_the_prediction_is_cached_by_model_head_and_trust_file(modelled, trust_file):
    repo, _, _ = modelled
    dashboard = _dashboard(repo, trust_file)
    first = dashboard.prediction(SERVICE)
    assert dashboard.prediction(SERVICE) is first  # nothing changed: not computed again
    trust_file.write_text(trust_file.read_text() + "\n")
    again = dashboard.prediction(SERVICE)
    assert again is not first and again.model_record == first.model_record


def test_a_prediction_is_cached_under_the_heads_it_verified(modelled, trust_file, monkeypatch):
    # Whoever writes the evidence repository moves a tampered deployment branch (one the
    # model was trained on) to its good head just while the dashboard verifies it, and back
    # afterwards. The dashboard read the tampered head first; a prediction made from the
    # good head must not be cached under it and served from then on (a false green).
    # Real Git and the real verifier; the wrapper below only times the attacker's move
    # (the ref is moved just before that branch is verified), which a thread could hit
    # only by luck.
    import afdp.learn.history as history

    repo, ids, _ = modelled
    git = pygit2.Repository(str(repo))
    ref = f"refs/heads/afdp/{SERVICE}/{ids[3]}"
    good = git.references[ref].target
    envelope = tamper.rec.ENVELOPE_FILE
    tamper.edit(repo, 2, lambda e: tamper.with_file(e, envelope, e.files[envelope] + b" "),
                service=SERVICE, deployment=ids[3])
    bad = git.references[ref].target
    assert good != bad
    real = history.check_branch
    moved: list[str] = []

    def attacker_moves_the_ref_first(path, *, service, deployment, **kwargs):
        if deployment == ids[3] and not moved:
            moved.append(deployment)
            pygit2.Repository(str(repo)).references.create(ref, good, force=True)
        return real(path, service=service, deployment=deployment, **kwargs)

    monkeypatch.setattr(history, "check_branch", attacker_moves_the_ref_first)
    dashboard = _dashboard(repo, trust_file)
    during = dashboard.prediction(SERVICE)
    assert moved and during.status == "ok"  # made from the good head, as verified
    assert during.verified is not None and during.verified.heads[ref] == str(good)
    git.references.create(ref, bad, force=True)  # and back
    now = dashboard.prediction(SERVICE)
    assert now.status == "unverified" and now.targets == (), "the good head's prediction was served for the tampered head"
    assert now.verified is not None and now.verified.heads[ref] == str(bad)
    assert dashboard.prediction(SERVICE) is now  # nothing moved since: cached


def test_the_history_names_the_head_each_branch_verified_at(modelled, trust_file):
    repo, ids, _ = modelled
    git = pygit2.Repository(str(repo))
    found = load_history(repo, trust_file, services=[SERVICE], jobs=1)
    assert found.heads == {f"refs/heads/afdp/{SERVICE}/{d}": str(git.references[f"refs/heads/afdp/{SERVICE}/{d}"].target)
                           for d in ids}


class _NoRuns(RunSubmitter):
    """Test double: no event is posted here."""

    def submit(self, event):
        raise AssertionError("no event is posted in these tests")


def _service_page(repo: Path, trust: Path) -> str:
    settings = ServeSettings(repository=repo, services=Services({}), webhook_secret=b"x" * 32, submitter=_NoRuns(),
                             ui_token=TOKEN, trust_policy=trust)
    with running_server(create_app(settings)) as server:
        response = httpx.get(f"{server.url}/services/{SERVICE}", headers={"Authorization": f"Bearer {TOKEN}"},
                             timeout=120)
        assert response.status_code == 200, response.text
        return response.text


def test_a_model_branch_is_not_listed_as_a_deployment(modelled, trust_file):
    """``afdp/models/<service>`` holds models, not a deployment: the list names every
    deployment of the history and nothing under the reserved service name."""
    repo, ids, _ = modelled
    entries = _dashboard(repo, trust_file).entries()
    assert pygit2.Repository(str(repo)).references.get(f"refs/heads/afdp/{MODELS}/{SERVICE}") is not None
    assert {e.service for e in entries} == {SERVICE}
    assert sorted(e.deployment for e in entries) == sorted(ids)


def test_a_model_trained_on_selected_features_is_shown(modelled, trust_file, signer, tsa):
    """A model an ``ml_predictor`` step recorded with ``features:`` (its inputs a
    selection) is checked against that same selection, not against every feature: its
    numbers are shown, citing it."""
    from afdp.learn.prediction import predict_from_rows

    repo, _, _ = modelled
    policy = load_trust_policy(trust_file, evidence_repository=repo)
    history = load_history(repo, trust_file, services=[SERVICE])
    prediction = predict_from_rows(history.rows, Planned.of(change_size=12), service=SERVICE,
                                   dataset_digest=history.digest, repository=repo, policy=policy, signer=signer,
                                   tsa_urls=[tsa.url], features=["change_size", "hour_utc"])
    assert prediction.status == "ok" and prediction.model_record
    shown = service_prediction(repo, trust_file, SERVICE)
    assert shown.status == "ok", shown.reason
    assert shown.model_record == prediction.model_record
