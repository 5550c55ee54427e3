"""A real Prefect flow run (a Prefect server shared by the test session: infra.prefect_api).

Checks that the flow run id and every task run id land in the evidence, that they are
the ids Prefect itself knows, that the artifacts exist, and that a failure inside the
run comes back as the AFDP error (one line) with the flow run marked failed.
"""

from __future__ import annotations

import base64
import json
import uuid

import pygit2
import pytest
from infra import PREFECT_GROUP, scrape_workflow

from afdp.demo.service import DemoService
from afdp.errors import TimestampError

WORKFLOW = scrape_workflow("flow_test", window="3s", interval="300ms", extra_metrics="""\
  missing:
    collector: svc
    metric: no_such_metric_on_the_page
    unit: count
""")


@pytest.fixture()
def prefect_server(prefect_api):
    """This process's Prefect client pointed at the session's Prefect server."""
    with prefect_api.in_this_process():
        yield


def predicates(repo, service, deployment):
    git = pygit2.Repository(str(repo))
    commit = git.get(git.references[f"refs/heads/afdp/{service}/{deployment}"].target)
    found = []
    while True:
        step = [line.split(": ", 1)[1] for line in commit.message.splitlines() if line.startswith("AFDP-Step")][0]
        seq = int([line.split(": ", 1)[1] for line in commit.message.splitlines() if line.startswith("AFDP-Record")][0])
        envelope = json.loads(git.get(commit.tree[f"records/000/{seq:06d}-{step}/envelope.json"].id).data)
        found.append(json.loads(base64.b64decode(envelope["payload"]))["predicate"])
        if not commit.parents:
            return list(reversed(found))
        commit = commit.parents[0]


@pytest.mark.slow
@pytest.mark.xdist_group(PREFECT_GROUP)
def test_flow_and_task_run_ids_land_in_the_evidence(prefect_server, tmp_path, repo, keys, tsa, trust_file, caplog):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from afdp.evidence.trust import load_trust_policy
    from afdp.pipeline.flow import run_with_prefect
    from afdp.verify.verifier import verify_branch

    path = tmp_path / "wf.yaml"
    path.write_text(WORKFLOW)
    with DemoService(name="shop", version="v1") as service:
        params = {
            "workflow_path": str(path),
            "service": "shop",
            "deployment": "p-1",
            "repository": str(repo),
            "key": str(keys / "dev.key"),
            "tsa_urls": [tsa.url],
            "info": {"commit": "abc", "deployer": "ci"},
            "overrides": {"METRICS_URL": service.metrics_url},
            "time_scale": 1.0,
        }
        outcome = run_with_prefect(params)
    assert outcome.sealed and outcome.decision is not None
    flow_run_id = outcome.context["prefect"]["flow_run_id"]
    uuid.UUID(flow_run_id)
    steps = predicates(repo, "shop", "p-1")[1:-1]
    recorded_tasks: set[str] = set()
    for predicate in steps:
        context = predicate["context"]
        assert context["engine"] == "prefect"
        assert context["prefect"]["flow_run_id"] == flow_run_id
        if predicate["step"]["name"].startswith("capture"):
            # One task per step: the metrics are collected inside it; a live (scrape)
            # source is not retried (its window has passed by then: only "no history").
            assert context["collector_retries"] == {"latency_mean": 0, "requests": 0, "missing": 0}
            # A failing collection is a failed step with its reason.
            assert predicate["status"] == "failed"
            assert "no_such_metric_on_the_page" in predicate["error"]
        recorded_tasks.add(context["prefect"]["task_run_id"])
    assert len(recorded_tasks) == len(steps) == 5  # one task run per step
    # Known failures are evidence, not tracebacks in the log.
    assert not [r for r in caplog.records if r.exc_info and "CollectorFailed" in repr(r.exc_info[1])]
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(uuid.UUID(flow_run_id))
        assert flow_run.state.is_completed()
        assert flow_run.name == "shop-p-1"
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
        known = {str(t.id) for t in task_runs}
        assert recorded_tasks <= known
        artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
        keys_found = {a.key for a in artifacts if a.flow_run_id == flow_run.id}
        assert {"afdp-shop-p-1", "afdp-shop-p-1-metrics"} <= keys_found
    verify_branch(repo, service="shop", deployment="p-1", policy=load_trust_policy(trust_file))


@pytest.mark.slow
@pytest.mark.xdist_group(PREFECT_GROUP)
def test_a_failure_inside_the_flow_is_the_afdp_error(prefect_server, tmp_path, repo, keys):
    from afdp.pipeline.flow import run_with_prefect

    path = tmp_path / "wf.yaml"
    path.write_text(WORKFLOW)
    params = {
        "workflow_path": str(path),
        "service": "shop",
        "deployment": "p-2",
        "repository": str(repo),
        "key": str(keys / "dev.key"),
        "tsa_urls": ["http://127.0.0.1:9/"],  # nothing listens: no record can be time-stamped
        "time_scale": 10.0,
    }
    with pytest.raises(TimestampError):
        run_with_prefect(params)
    assert pygit2.Repository(str(repo)).references.get("refs/heads/afdp/shop/p-2") is None


def test_prefect_yaml_deployments_point_at_the_flow():
    """The shipped deployments load the real flow, with parameters it accepts."""
    import inspect
    from pathlib import Path

    import yaml
    from prefect.flows import load_flow_from_entrypoint

    root = Path(__file__).resolve().parent.parent
    document = yaml.safe_load((root / "flows" / "prefect.yaml").read_text())
    assert document["deployments"]
    for deployment in document["deployments"]:
        file, _, name = deployment["entrypoint"].partition(":")
        flow = load_flow_from_entrypoint(f"{root / file}:{name}")
        assert flow.name == "afdp-evidence"
        accepted = set(inspect.signature(flow.fn).parameters)
        assert set(deployment["parameters"]) <= accepted
        assert (root / deployment["parameters"]["workflow_path"]).exists()


@pytest.mark.parametrize("command", ["verify", "log", "validate", "run", "demo"])
def test_commands_do_not_import_prefect_until_a_flow_runs(command):
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from afdp.cli import main\n"
        f"try:\n    main([{command!r}, '--help'])\nexcept SystemExit:\n    pass\n"
        "import afdp.pipeline.runner, afdp.demo.run\n"
        "print('prefect' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
