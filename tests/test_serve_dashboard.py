"""The dashboard in a real headless Chromium (Playwright, the Debian /usr/bin/chromium).

Evidence is real: two ``afdp run`` runs against a :class:`~afdp.demo.service.DemoService`
(metric series, analysis, decision), one ledger branch, and one branch an attacker
edited. Verification status must come from the verifier: the edited branch reads FAILED
and its decision is marked unverified; without a trust policy nothing reads VERIFIED.
"""

from __future__ import annotations

import json
import shutil

import httpx
import pytest
import tamper
from conftest import build_deployment
from infra import scrape_workflow
from test_dashboard_predictions import record_a_model, write_history

from afdp.demo.service import DemoService
from afdp.service.app import ServeSettings, create_app, running_server
from afdp.service.config import ServiceConfig, Services
from afdp.service.submit import RunSubmitter

TOKEN = "dashboard-token-0123456789abcdef"
WORKFLOW = scrape_workflow("dashboard_test", window="2s", interval="250ms", requests=False)


class NoRuns(RunSubmitter):
    """Test double: the dashboard tests post no events."""

    def submit(self, event):
        raise AssertionError("no event is posted in the dashboard tests")


def settings(repo, trust):
    services = Services({"shop": ServiceConfig("shop", "afdp-evidence/shop")})
    return ServeSettings(repository=repo, services=services, webhook_secret=b"x" * 32, submitter=NoRuns(),
                         ui_token=TOKEN, trust_policy=trust)


@pytest.fixture(scope="module")
def evidence_template(tmp_path_factory, keys, tsa):
    """The evidence, written once per module (two real runs take ~10 s): each test gets a copy."""
    from conftest import run_cli

    from afdp.evidence.signing import load_signer
    from afdp.evidence.store import init_repository

    root = tmp_path_factory.mktemp("dashboard-evidence")
    repo, signer = root / "evidence", load_signer(str(keys / "dev.key"))
    init_repository(repo)
    workflow = root / "workflow.yaml"
    workflow.write_text(WORKFLOW)
    decisions: dict[str, str] = {}
    with DemoService(name="shop", requests_per_second=50) as demo:
        for number in (1, 2):
            result = run_cli("run", str(workflow), "--service", "shop", "--deployment", f"r-{number}", "--repo",
                             str(repo), "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--no-prefect",
                             "--set", f"workflow.METRICS_URL={demo.metrics_url}", "--commit", f"abc{number}def",
                             "--version", f"1.{number}", "--json")
            assert result.code in (0, 1), result.err
            decisions[f"r-{number}"] = result.json()["decision"]["action"]
    build_deployment(repo, signer, tsa, service="api", deployment="d-ok")
    build_deployment(repo, signer, tsa, service="api", deployment="d-bad")
    envelope = tamper.rec.ENVELOPE_FILE
    tamper.edit(repo, 1, lambda e: tamper.with_file(e, envelope, e.files[envelope] + b" "),
                service="api", deployment="d-bad")
    (repo / "decisions.json").write_text(json.dumps(decisions))
    return repo


@pytest.fixture()
def evidence(repo, evidence_template):
    """This test's own copy of the module's evidence, at the ``repo`` fixture's path."""
    shutil.rmtree(repo)
    shutil.copytree(evidence_template, repo, symlinks=True)
    return repo


@pytest.fixture()
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                     args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.mark.slow
def test_dashboard_in_a_browser(evidence, trust_file, browser, signer, tsa):
    app = create_app(settings(evidence, trust_file))
    with running_server(app) as server:
        page = browser.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(f"{server.url}/")
        assert page.url.endswith("/login")  # not logged in: the login page
        page.fill("#token", "wrong")
        page.click("#login")
        assert page.text_content("#error") == "wrong token"
        errors.clear()  # the wrong token's 401 was expected
        page.fill("#token", TOKEN)
        page.click("#login")
        page.wait_for_selector("#deployments")
        rows = {
            (r.get_attribute("data-service"), r.get_attribute("data-deployment")): r
            for r in page.query_selector_all("#deployments tr[data-service]")
        }
        assert set(rows) == {("shop", "r-1"), ("shop", "r-2"), ("api", "d-ok"), ("api", "d-bad")}
        verdicts = {k: r.get_attribute("data-verdict") for k, r in rows.items()}
        assert verdicts == {("shop", "r-1"): "VERIFIED", ("shop", "r-2"): "VERIFIED",
                            ("api", "d-ok"): "VERIFIED", ("api", "d-bad"): "FAILED"}
        decision = rows[("shop", "r-1")].query_selector(".decision").text_content().strip()
        recorded = json.loads((evidence / "decisions.json").read_text())
        assert decision == recorded["r-1"]
        # A deployment's timeline: every record, the analysis, the impact plot.
        page.click("a[href='/deployments/shop/r-1']")
        page.wait_for_selector("#timeline")
        assert page.text_content("#headline").startswith("VERIFIED: shop/r-1")
        steps = [c.text_content() for c in page.query_selector_all("#timeline tr td:nth-child(2)")]
        assert steps[:2] == ["genesis", "capture_baseline"] and steps[-1] == "seal", steps
        assert page.query_selector("#impact") is not None
        assert page.query_selector("svg.plot[data-metric='latency_mean']") is not None
        # The tampered branch: FAILED, with the verifier's reasons.
        page.goto(f"{server.url}/deployments/api/d-bad")
        assert page.text_content("#headline").startswith("FAILED")
        assert page.query_selector_all("#failures li")
        # Trends per service.
        page.goto(f"{server.url}/services/shop")
        counted = sum(int(c.text_content()) for c in page.query_selector_all("#decisions td:nth-child(2)"))
        assert counted == 2
        assert page.query_selector("svg.plot") is not None
        # The team filter: these runs name no team, so a team has none of them.
        page.goto(f"{server.url}/?team=payments")
        assert page.text_content("#team-filter") == "payments" and page.query_selector("#empty") is not None
        # Predictions: too little history for shop; a verified model for pay, every number citing it.
        page.goto(f"{server.url}/services/shop")
        assert page.get_attribute("#prediction", "data-status") == "not_enough_history"
        assert "Not enough history" in page.text_content("#prediction-reason")
        write_history(evidence, signer, tsa.url)
        digest = record_a_model(evidence, trust_file, signer, tsa.url)
        page.goto(f"{server.url}/services/pay")
        page.wait_for_selector("#predictions")
        assert page.is_visible("#predictions")
        assert page.get_attribute("#prediction", "data-status") == "ok"
        assert page.get_attribute("#prediction", "data-model-record") == digest
        assert page.text_content("#prediction .model-record") == f"sha256:{digest[:16]}"
        intervals = page.query_selector_all("#predictions td.interval a")
        assert intervals and all(" to " in a.text_content() for a in intervals)
        assert page.text_content("#predictions td.nominal") == "90%"
        links = page.query_selector_all("#predictions a")
        assert links and all(a.get_attribute("href").startswith("/deployments/models/pay#record-") and
                             a.get_attribute("title") == f"model record sha256:{digest}" for a in links)
        assert page.text_content("#prediction .n-deployments") == "22"
        intervals[0].click()  # the number leads to the model record on the verified model branch
        page.wait_for_selector("#timeline")
        assert page.url.endswith("/deployments/models/pay#record-1")
        assert page.text_content("#record-1 td:nth-child(2)") == "model"
        assert page.text_content("#record-1 code").startswith(digest[:16])
        # Log out: the session is gone.
        page.click("nav button")
        page.goto(f"{server.url}/")
        assert page.url.endswith("/login")
        assert errors == [], errors  # nothing the CSP blocked, no script errors


@pytest.mark.slow
def test_without_a_trust_policy_nothing_reads_verified(evidence):
    with running_server(create_app(settings(evidence, None))) as server:
        rows = httpx.get(f"{server.url}/api/deployments", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        assert {r["verdict"] for r in rows} == {"UNCHECKED"}
        page = httpx.get(f"{server.url}/", headers={"Authorization": f"Bearer {TOKEN}"}).text
        assert "VERIFIED" not in page and "no-trust" in page


@pytest.mark.slow
def test_verification_is_cached_by_head_and_redone_when_the_branch_moves(evidence, trust_file):
    app = create_app(settings(evidence, trust_file))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with running_server(app) as server:
        def verdicts():
            rows = httpx.get(f"{server.url}/api/deployments", headers=headers, timeout=60).json()
            return {(r["service"], r["deployment"]): (r["verdict"], r["head"]) for r in rows}

        def verifications() -> float:
            text = httpx.get(f"{server.url}/metrics", headers=headers).text
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("afdp_verifications_total{"))

        first = verdicts()
        assert first[("api", "d-ok")][0] == "VERIFIED"
        assert verifications() == 4
        assert verdicts() == first and verifications() == 4  # cached by head: nothing re-verified
        # Someone rewrites the branch: the head moves, the verifier runs again and fails it
        # (a cached VERIFIED is never shown for a head it did not verify).
        envelope = tamper.rec.ENVELOPE_FILE
        tamper.edit(evidence, 2, lambda e: tamper.with_file(e, envelope, e.files[envelope] + b"\n"),
                    service="api", deployment="d-ok")
        now = verdicts()
        assert now[("api", "d-ok")][1] != first[("api", "d-ok")][1]
        assert now[("api", "d-ok")][0] == "FAILED"
        assert verifications() == 5
        assert 'afdp_verification_failures_total{service="api"} 2.0' in httpx.get(
            f"{server.url}/metrics", headers=headers).text
        # A changed trust policy file: every branch is verified again under it.
        trust_file.write_text(trust_file.read_text() + "\n")
        verdicts()
        assert verifications() == 9


@pytest.mark.slow
def test_grafana_annotations(evidence, trust_file):
    with running_server(create_app(settings(evidence, trust_file))) as server:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        got = httpx.get(f"{server.url}/api/annotations", params={"service": "shop"}, headers=headers).json()
        assert [a["title"].split(":")[0] for a in got] == ["shop/r-1", "shop/r-2"]
        assert all("evidence:verified" in a["tags"] and isinstance(a["time"], int) for a in got)
        # SimpleJSON datasource shape: POST with a range and the annotation's query.
        body = {"range": {"from": "2000-01-01T00:00:00Z", "to": "2000-01-02T00:00:00Z"},
                "annotation": {"name": "deploys", "query": "shop"}}
        assert httpx.post(f"{server.url}/api/annotations", json=body, headers=headers).json() == []
        body["range"]["to"] = "2100-01-01T00:00:00Z"
        posted = httpx.post(f"{server.url}/api/annotations", json=body, headers=headers).json()
        assert len(posted) == 2 and posted[0]["annotation"]["name"] == "deploys"
        assert httpx.post(f"{server.url}/api/annotations", content=b"[1]", headers=headers).status_code == 400
        assert httpx.get(f"{server.url}/api/annotations").status_code == 401
        # Decisions by kind: each verified branch counted once, however often it is viewed.
        text = httpx.get(f"{server.url}/metrics", headers=headers).text
        shop = [line for line in text.splitlines() if line.startswith('afdp_decisions_total{') and 'service="shop"' in line]
        assert sum(float(line.rsplit(" ", 1)[1]) for line in shop) == 2
