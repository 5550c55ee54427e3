"""The team that owns a deployment: recorded in the signed genesis record and read back by
every surface (``afdp log``, ``afdp find --team``, ``afdp report``, the dataset's ``team``
column, the dashboard's deployment list).

Real parts: ``afdp run --no-prefect`` against the demo service (the CLI path that builds
the genesis metadata), the ledger API for evidence written before teams were recorded
(no ``team`` key at all), the real TSA fixture, the intake's event parsers, the JSON
Schemas, and an attacker's edit of the genesis record in plain Git (``tests/tamper.py``).
"""

from __future__ import annotations

import base64
import json
import re

import pytest
import tamper
from conftest import run_cli
from test_learn_dataset import ledger_deployment

from afdp.evidence import records as rec
from afdp.evidence.canonical import canonical_bytes
from afdp.evidence.ledger import append_record, seal
from afdp.evidence.schemas import load_schema
from afdp.pipeline.runner.request import TEAM_PATTERN, DeploymentInfo, check_team
from afdp.service.config import ServiceConfig, Services
from afdp.service.intake import EventRejected, parse_generic, parse_github

WORKFLOW = """\
name: team_test
version: "1"
variables:
  METRICS_URL: http://127.0.0.1:1/metrics
collectors:
  svc:
    type: scrape
    url: ${workflow.METRICS_URL}
metrics:
  latency_mean:
    collector: svc
    metric: http_request_duration_seconds
    unit: s
workflow:
  pre_deployment:
    - capture_baseline:
        duration: 2s
        interval: 250ms
        metrics: [latency_mean]
  deployment:
    - mark_deployment_time
  post_deployment:
    - capture_impact:
        duration: 2s
        interval: 250ms
        metrics: [same_as_baseline]
    - analyze_differences:
        method: mann_whitney
    - decisions
    - generate_training_record
success_criteria:
  - latency_mean.increase < 50ms
"""

BAD_TEAMS = ["has space", "-leading-dash", "x" * 101, "semi;colon", "", "ünïcode"]


def _run(tmp_path, repo, keys, tsa, deployment: str, *extra: str):
    from afdp.demo.service import DemoService

    workflow = tmp_path / "workflow.yaml"
    workflow.write_text(WORKFLOW)
    with DemoService(name="api", requests_per_second=50) as demo:
        return run_cli("run", str(workflow), "--service", "api", "--deployment", deployment, "--repo", str(repo),
                       "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--no-prefect",
                       "--set", f"workflow.METRICS_URL={demo.metrics_url}", "--commit", "4f2a9c1",
                       "--deployer", "alice", "--environment", "production", "--version", "1.4.2", "--json", *extra)


def _genesis_deployment(repo, deployment: str) -> dict:
    (entry,) = tamper.read_branch(repo, service="api", deployment=deployment)[:1]
    envelope = json.loads(entry.files[rec.ENVELOPE_FILE])
    statement = json.loads(base64.b64decode(envelope["payload"]))
    return statement["predicate"]["result"]["metadata"]["deployment"]


@pytest.mark.slow
def test_a_recorded_team_survives_into_log_find_report_and_dataset(tmp_path, repo, keys, tsa, signer, trust_file, cli,
                                                                  monkeypatch):
    monkeypatch.setenv("AFDP_INDEX_KEY", str(tmp_path / "index.key"))
    result = _run(tmp_path, repo, keys, tsa, "d-team", "--team", "payments/core")
    assert result.code in (0, 1), result.err
    recorded = _genesis_deployment(repo, "d-team")
    assert recorded["team"] == "payments/core"
    assert (recorded["deployer"], recorded["environment"], recorded["version"], recorded["commit"]) == (
        "alice", "production", "1.4.2", "4f2a9c1")
    # Evidence written before teams were recorded: its genesis metadata has no team key.
    ledger_deployment(repo, signer, tsa.url, "api", "d-old", deployed_at="2026-01-02T10:00:00Z")
    assert "team" not in _genesis_deployment(repo, "d-old")
    # Both verify (the field is optional in the genesis schema).
    for deployment in ("d-team", "d-old"):
        verified = cli("verify", "--repo", str(repo), "--service", "api", "--deployment", deployment,
                       "--trust", str(trust_file))
        assert verified.code == 0, verified.out + verified.err

    # afdp log: the team, verified with --trust; "unknown" for the old branch
    story = cli("log", "--repo", str(repo), "--service", "api", "--deployment", "d-team",
                "--trust", str(trust_file), "--json").json()
    assert story["deployment_facts"]["team"] == "payments/core" and story["deployment_facts"]["verified"] is True
    assert story["deployment_facts"]["deployer"] == "alice"
    text = cli("log", "--repo", str(repo), "--service", "api", "--deployment", "d-team")
    assert "deployment: team payments/core, deployer alice, environment production" in text.out
    assert "[unverified]" in text.out  # no --trust
    old = cli("log", "--repo", str(repo), "--service", "api", "--deployment", "d-old", "--trust", str(trust_file))
    assert old.code == 0 and "deployment: team unknown" in old.out

    # afdp find --team: from the index rebuilt from the evidence, each hit verified
    hits = cli("find", "--repo", str(repo), "--team", "payments/core", "--trust", str(trust_file), "--json").json()
    assert [(h["deployment"], h["team"], h["verification"]) for h in hits["hits"]] == [
        ("d-team", "payments/core", "verified")]
    assert hits["query"]["team"] == "payments/core"
    assert cli("find", "--repo", str(repo), "--team", "other", "--json").json()["hits"] == []
    both = cli("find", "--repo", str(repo), "--service", "api", "--json").json()["hits"]
    assert {h["deployment"]: h["team"] for h in both} == {"d-team": "payments/core", "d-old": None}
    plain = cli("find", "--repo", str(repo), "--service", "api")
    assert re.search(r"d-old\t.*\tunknown$", plain.out, re.M) and re.search(r"d-team\t.*\tpayments/core$", plain.out, re.M)

    # afdp report: JSON facts and the HTML table
    out = tmp_path / "report.json"
    cli("report", "--repo", str(repo), "--service", "api", "--trust", str(trust_file), "--out", str(out))
    facts = {d["deployment"]: d["deployment_facts"] for d in json.loads(out.read_text())["deployments"]}
    assert facts["d-team"]["team"] == "payments/core" and facts["d-old"]["team"] is None
    html = tmp_path / "report.html"
    cli("report", "--repo", str(repo), "--service", "api", "--trust", str(trust_file), "--out", str(html))
    page = html.read_text()
    assert "<th>team</th><td>payments/core</td>" in page and "<th>team</th><td>unknown (not recorded)</td>" in page

    # the dataset's team column (and the datasheet says why it is null for the old branch)
    data = tmp_path / "rows.jsonl"
    exported = cli("dataset", "export", "--repo", str(repo), "--trust", str(trust_file), "--out", str(data), "--jobs", "1")
    assert exported.code == 0, exported.err
    rows = {r["deployment"]: r for r in map(json.loads, data.read_text().splitlines())}
    assert rows["d-team"]["team"] == "payments/core" and rows["d-old"]["team"] is None
    sheet = json.loads((tmp_path / "rows.jsonl.datasheet.json").read_text())
    assert {k: v for k, v in sheet["columns"][3].items() if k != "meaning"} == {"column": "team", "type": "string|null"}
    assert any(m["column"] == "team" and m["null_rows"] == 1 for m in sheet["missing"])

    # one deployment, one team: the same deployment run again naming another team is refused
    other = _run(tmp_path, repo, keys, tsa, "d-team", "--team", "intruders")
    assert other.code == 2 and "opened with team 'payments/core'; this run says 'intruders'" in other.err
    # a bad team never starts a run: exit 2, one line, no branch
    for bad in ("has space", "x" * 101):
        refused = _run(tmp_path, repo, keys, tsa, "d-bad", "--team", bad)
        assert refused.code == 2 and len(refused.err.strip().splitlines()) == 1, refused.err
        assert "is not a team name" in refused.err
    assert cli("log", "--repo", str(repo), "--service", "api", "--deployment", "d-bad").code != 0


def _ledger_with_team(repo, signer, tsa, deployment: str, team: str) -> None:
    metadata = {"deployment": {"commit": "c0ffee1", "team": team}}
    append_record(repo, service="api", deployment=deployment, signer=signer, tsa_urls=[tsa.url],
                  draft=rec.RecordDraft(kind=rec.KIND_STEP, step="decisions", result={"decision": {"action": "mark_successful"}}),
                  genesis_metadata=metadata)
    seal(repo, service="api", deployment=deployment, signer=signer, tsa_urls=[tsa.url])


def test_a_tampered_team_fails_verification(tmp_path, repo, signer, tsa, trust_file, cli, monkeypatch):
    monkeypatch.setenv("AFDP_INDEX_KEY", str(tmp_path / "index.key"))
    _ledger_with_team(repo, signer, tsa, "d-1", "payments")
    assert cli("verify", "--repo", str(repo), "--service", "api", "--deployment", "d-1", "--trust", str(trust_file)).code == 0

    def retag(entry):
        envelope = json.loads(entry.files[rec.ENVELOPE_FILE])
        statement = json.loads(base64.b64decode(envelope["payload"]))
        statement["predicate"]["result"]["metadata"]["deployment"]["team"] = "intruders"
        envelope["payload"] = base64.b64encode(canonical_bytes(statement)).decode()
        return tamper.with_file(entry, rec.ENVELOPE_FILE, canonical_bytes(envelope))

    tamper.edit(repo, 0, retag, service="api", deployment="d-1")
    assert _genesis_deployment(repo, "d-1")["team"] == "intruders"
    verified = cli("verify", "--repo", str(repo), "--service", "api", "--deployment", "d-1", "--trust", str(trust_file))
    assert verified.code == 1
    # the forged team is reported only as a failed hit, and the log says the branch failed
    hits = cli("find", "--repo", str(repo), "--team", "intruders", "--trust", str(trust_file), "--json")
    assert hits.code == 1 and [h["verification"] for h in hits.json()["hits"]] == ["failed"]
    story = cli("log", "--repo", str(repo), "--service", "api", "--deployment", "d-1", "--trust", str(trust_file), "--json")
    assert story.code == 1 and story.json()["deployment_facts"]["verified"] is False


@pytest.mark.parametrize("bad", BAD_TEAMS)
def test_a_bad_team_is_refused_with_one_line(bad, cli, repo, tmp_path):
    with pytest.raises(Exception, match="is not a team name"):
        check_team(bad)
    with pytest.raises(Exception, match="is not a team name"):
        DeploymentInfo.from_json({"team": bad})
    result = cli("find", "--repo", str(repo), "--team", bad)
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1 and "is not a team name" in result.err


def test_good_teams_and_old_metadata():
    for good in ("payments", "org/payments-core", "Team_1.x", "a" * 100):
        assert check_team(good) == good
    # a genesis deployment object written before teams were recorded reads as team unknown
    old = DeploymentInfo.from_json({"commit": "abc1234", "deployer": "ci", "environment": "prod"})
    assert old.team is None and old.to_json()["team"] is None


def test_the_schemas_carry_the_same_team_rule_and_keep_it_optional():
    genesis = load_schema("predicate-genesis.v1")
    team_rule = genesis["properties"]["result"]["properties"]["metadata"]["properties"]["deployment"]["properties"]["team"]
    event = load_schema("deployment-event.v1")
    assert team_rule["oneOf"][1]["pattern"] == event["properties"]["team"]["pattern"] == f"^{TEAM_PATTERN}$"

    def errors(metadata: dict) -> list:
        document = {"service": "api", "deployment": "d-1", "opened_at": "2026-01-01T00:00:00Z", "metadata": metadata}
        from jsonschema import Draft202012Validator

        return list(Draft202012Validator(genesis["properties"]["result"]).iter_errors(document))

    assert errors({"deployment": {"commit": "abc"}}) == []  # absent: old evidence
    assert errors({"deployment": {"team": None}}) == []
    assert errors({"deployment": {"team": "payments"}}) == []
    assert errors({"deployment": {"team": "bad team"}})
    assert errors({"deployment": {"team": 7}})


SERVICES = Services({"api": ServiceConfig("api", "afdp-evidence/api", github_repository="acme/api")})


def _generic(**extra):
    return {"event_id": "e-1", "service": "api", "commit": "4f2a9c1e0b", "deployed_at": "2026-12-04T07:00:00Z", **extra}


def _github(payload):
    return {"deployment_status": {"state": "success", "created_at": "2026-12-04T07:00:00Z"},
            "deployment": {"id": 1234, "sha": "0123456789abcdef0123456789abcdef01234567", "environment": "production",
                           "creator": {"login": "octocat"}, "payload": payload},
            "repository": {"full_name": "acme/api"}}


def test_the_intake_maps_the_team_into_the_run_metadata_and_refuses_a_bad_one():
    assert parse_generic(_generic(team="payments"), SERVICES).info["team"] == "payments"
    # no team in the event: none is invented (the genesis record says null)
    assert "team" not in parse_generic(_generic(), SERVICES).info
    with pytest.raises(EventRejected, match="team") as refused:
        parse_generic(_generic(team="bad team"), SERVICES)
    assert refused.value.status == 400
    event = parse_github("deployment_status", "delivery-1", _github({"team": "core"}), SERVICES)
    assert event.info["team"] == "core" and "team:core" in event.tags
    assert "team" not in parse_github("deployment_status", "delivery-2", _github({}), SERVICES).info
    with pytest.raises(EventRejected, match="not a team name") as refused:
        parse_github("deployment_status", "delivery-3", _github({"team": "core; rm"}), SERVICES)
    assert refused.value.status == 400
    # what the worker's run is built from accepts what the intake accepted
    assert DeploymentInfo.from_json(dict(event.info)).team == "core"


def test_the_dashboard_lists_a_teams_deployments(tmp_path, repo, signer, tsa, trust_file):
    import httpx

    from afdp.service.app import ServeSettings, create_app, running_server
    from afdp.service.dashboard import Dashboard
    from afdp.service.metrics import ServiceMetrics
    from afdp.service.submit import RunSubmitter

    _ledger_with_team(repo, signer, tsa, "d-1", "payments")
    _ledger_with_team(repo, signer, tsa, "d-2", "core")
    ledger_deployment(repo, signer, tsa.url, "api", "d-old", deployed_at="2026-01-02T10:00:00Z")
    dashboard = Dashboard(repo, trust_policy=trust_file, metrics=ServiceMetrics())
    assert [e.deployment for e in dashboard.entries(team="payments")] == ["d-1"]
    assert {e.deployment: e.to_json()["team"] for e in dashboard.entries()} == {"d-1": "payments", "d-2": "core",
                                                                                 "d-old": None}
    with pytest.raises(Exception, match="is not a team name"):
        dashboard.entries(team="no such/team!")
    # a branch that fails still shows under its team (a filter never hides a failure), marked unverified
    envelope = rec.ENVELOPE_FILE
    tamper.edit(repo, 1, lambda e: tamper.with_file(e, envelope, e.files[envelope] + b" "), service="api", deployment="d-2")

    class NoRuns(RunSubmitter):
        """Test double: no event is posted here."""

    token = "dashboard-token-0123456789abcdef"
    settings = ServeSettings(repository=repo, services=SERVICES, webhook_secret=b"x" * 32, submitter=NoRuns(),
                             ui_token=token, trust_policy=trust_file)
    headers = {"Authorization": f"Bearer {token}"}
    with running_server(create_app(settings)) as server:
        page = httpx.get(f"{server.url}/", params={"team": "core"}, headers=headers).text
        assert 'data-deployment="d-2" data-verdict="FAILED"' in page and 'data-deployment="d-1"' not in page
        assert '<a href="/?team=core">core</a> <span class="unverified">(unverified)</span>' in page
        everything = httpx.get(f"{server.url}/", headers=headers).text
        assert '<td class="team">unknown</td>' in everything  # d-old: none recorded
        api = httpx.get(f"{server.url}/api/deployments", params={"team": "payments"}, headers=headers).json()
        assert [(r["deployment"], r["team"], r["verdict"]) for r in api] == [("d-1", "payments", "VERIFIED")]
        bad = httpx.get(f"{server.url}/", params={"team": "bad team"}, headers=headers)
        assert bad.status_code == 400 and "is not a team name" in bad.text


def test_a_workflow_can_name_the_team_and_image_like_any_deployment_fact():
    """``${deployment.team}`` and ``${deployment.image}`` are deployment facts a workflow
    may use (a notification's text, a label); the run gives them the recorded values."""
    from types import SimpleNamespace

    from afdp.pipeline.runner.request import _deployment_values
    from afdp.workflow import catalog

    assert {"team", "image"} <= set(catalog.DEPLOYMENT_FIELDS)
    info = DeploymentInfo.from_json({"team": "payments", "image": "ghcr.io/acme/api@sha256:" + "a" * 64})
    values = _deployment_values(SimpleNamespace(service="api", deployment="d-1", info=info))  # type: ignore[arg-type]
    assert values["team"] == "payments" and values["image"].endswith("a" * 64)
    # a fact not recorded is absent (never invented), like the deployer's
    bare = _deployment_values(SimpleNamespace(service="api", deployment="d-1", info=DeploymentInfo()))  # type: ignore[arg-type]
    assert "team" not in bare and "image" not in bare
