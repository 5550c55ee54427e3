"""The exit-code contract on Prefect's path, through the real CLI (issue 10).

0 the run completed (success or alert), 1 a rollback was decided, 2 usage, 3
infrastructure (tests/test_flow_engine_errors.py). Each run here is a real Prefect flow
run against a real Prefect server (tests/infra.py's, shared by the session), with a real evidence repository and the
embedded TSA over loopback HTTP.
"""

from __future__ import annotations

import json

import pytest
from infra import PREFECT_GROUP

WORKFLOW = """\
name: exit_codes
version: "1"
variables:
  VERDICT: ship
workflow:
  deployment:
    - mark_deployment_time
    - capture_deployment_metadata: [git_commit, deployer_id]
  post_deployment:
    - decisions
decisions:
  roll_back:
    condition: workflow.VERDICT == 'rollback'
    action: rollback
  warn:
    condition: workflow.VERDICT == 'alert'
    action: alert
  ship:
    condition: workflow.VERDICT == 'ship'
    action: mark_successful
"""
PERMISSIVE = "version: 1\nname: test-permissive\nallowed_collector_types: [prometheus, scrape, sql, rest]\n"


@pytest.fixture()
def prefect_server(prefect_api):
    """This process's Prefect client pointed at the session's Prefect server (infra.prefect_api)."""
    with prefect_api.in_this_process():
        yield


@pytest.mark.slow
@pytest.mark.xdist_group(PREFECT_GROUP)
@pytest.mark.parametrize(("verdict", "code"), [("ship", 0), ("alert", 0), ("rollback", 1)])
def test_prefect_runs_exit_by_the_decision(prefect_server, cli, tmp_path, keys, tsa, verdict, code):
    evidence = tmp_path / "evidence"
    assert cli("init", str(evidence)).code == 0
    workflow, policy = tmp_path / "wf.yaml", tmp_path / "policy.yaml"
    workflow.write_text(WORKFLOW)
    policy.write_text(PERMISSIVE)
    result = cli(
        "run", str(workflow), "--service", "shop", "--deployment", f"x-{verdict}", "--repo", str(evidence),
        "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--policy", str(policy), "--prefect",
        "--set", f"workflow.VERDICT={verdict}", "--json",
    )
    assert result.code == code, (result.code, result.err)
    outcome = json.loads(result.out)
    assert outcome["context"]["engine"] == "prefect"
    assert outcome["decision"]["action"] == {"ship": "mark_successful", "alert": "alert", "rollback": "rollback"}[verdict]
    assert outcome["sealed"] is True
