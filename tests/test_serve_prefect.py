"""``afdp serve`` with the real engine: a Prefect server, a process work pool, two process
workers, and events for several demo services at once.

Everything is real and on loopback: ``prefect server start`` (tests/infra.py's
``prefect_api``: one per xdist worker, shared with the other tests of PREFECT_GROUP;
each test here has its own work pool, deployments and flow-run names on it), ``prefect
deploy`` of deployments made from flows/prefect.yaml, ``prefect worker start`` twice,
``afdp serve`` as a subprocess, the embedded TSA and one
:class:`~afdp.demo.service.DemoService` per service as the metric source. Each branch
must then pass ``afdp verify``, and the dashboard must say VERIFIED for each.

Service ``delta``'s TSA is down when its run starts (nothing listens on its port yet): the
run fails, Prefect runs it again (the intake set retries on the flow run), and once a real
TSA answers on that port the run completes and verifies.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml
from infra import PREFECT_GROUP, PrefectServer, free_port, scrape_workflow, start_process, wait_http

from afdp.demo.service import DemoService
from afdp.service.intake import sign

ROOT = Path(__file__).resolve().parents[1]
SECRET = "prefect-e2e-webhook-secret-0123"
TOKEN = "prefect-e2e-ui-token-0123456789"
SERVICES = ("alpha", "beta", "gamma", "delta")
WORKFLOW = scrape_workflow("serve_e2e", window="3s", interval="300ms", triggers=["deployment_completed"])

pytestmark = pytest.mark.xdist_group(PREFECT_GROUP)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


AFDP = [sys.executable, "-c", "from afdp.cli import main; main()"]


def _env(server: PrefectServer, **extra: str) -> dict[str, str]:
    """The workers' and afdp serve's environment: the shared server, workers that poll
    every second, the project directory the deployments' pull step enters."""
    return server.env(PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_WORKER_PREFETCH_SECONDS="1",
                      AFDP_PROJECT_DIR=str(ROOT), AFDP_WEBHOOK_SECRET=SECRET, AFDP_UI_TOKEN=TOKEN, **extra)


@pytest.mark.slow
def test_events_for_several_services_become_verified_branches(tmp_path, repo, keys, tsa, trust_file, prefect_api):
    serve_port, late_tsa_port = free_port(), free_port()
    api = prefect_api.api
    env = _env(prefect_api)
    workflow = tmp_path / "workflow.yaml"
    workflow.write_text(WORKFLOW)
    # One Prefect deployment per service, made from the shipped flows/prefect.yaml.
    prefect_api.deploy(tmp_path, pool="afdp-e2e", names=SERVICES, concurrency_limit=1)

    with ExitStack() as stack:
        demos = {name: stack.enter_context(DemoService(name=name, requests_per_second=50)) for name in SERVICES}
        config = {
            "services": {
                name: {
                    "prefect_deployment": f"afdp-evidence/{name}",
                    "parameters": {
                        "workflow_path": str(workflow),
                        "repository": str(repo),
                        "key": str(keys / "dev.key"),
                        "tsa_urls": [tsa.url if name != "delta" else f"http://127.0.0.1:{late_tsa_port}/"],
                        "overrides": {"METRICS_URL": demos[name].metrics_url},
                    },
                    "retries": 3,
                    "retry_delay_seconds": 5,
                }
                for name in SERVICES
            }
        }
        services = tmp_path / "services.yaml"
        services.write_text(yaml.safe_dump(config))

        for index in (1, 2):
            start_process(stack, ["prefect", "worker", "start", "--pool", "afdp-e2e", "--type", "process",
                                  "--name", f"worker-{index}"], env, tmp_path / f"worker-{index}.log")
        serve = start_process(stack, [*AFDP, "serve", "--repo", str(repo), "--config", str(services), "--port",
                                      str(serve_port), "--trust", str(trust_file)], env, tmp_path / "serve.log")
        url = f"http://127.0.0.1:{serve_port}"
        wait_http(f"{url}/healthz", seconds=60, process=serve)

        def post(event: dict) -> httpx.Response:
            body = json.dumps(event).encode()
            return httpx.post(f"{url}/events", content=body,
                              headers={"X-AFDP-Signature-256": sign(SECRET.encode(), body)}, timeout=60)

        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        events = [
            {"event_id": f"e-{name}-{n}", "service": name, "deployment": f"rel-{n}", "commit": f"{n}abcdef1",
             "deployed_at": now, "version": f"1.{n}", "team": "platform", "environment": "production"}
            for name in SERVICES
            for n in ((1, 2) if name == "alpha" else (1,))
        ]
        answers: dict[str, httpx.Response] = {}
        threads = [threading.Thread(target=lambda e=e: answers.__setitem__(e["event_id"], post(e))) for e in events]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert all(r.status_code == 202 for r in answers.values()), {k: r.text for k, r in answers.items()}
        # A refused event starts nothing on the real engine either.
        assert post(events[0]).status_code == 409  # a replay
        bad = httpx.post(f"{url}/events", content=b"{}", headers={"X-AFDP-Signature-256": "sha256=" + "0" * 64})
        assert bad.status_code == 401

        # delta's first attempt fails (no TSA), and waits for its retry; then the TSA comes up.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            found = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {"name": {"any_": ["delta-rel-1"]}},
                                                                  "work_pools": {"name": {"any_": ["afdp-e2e"]}}},
                               timeout=60).json()
            if found and found[0]["state_name"] == "AwaitingRetry":
                break
            assert not found or found[0]["state_type"] not in ("COMPLETED", "FAILED", "CRASHED"), found[0]
            time.sleep(1)
        else:
            raise AssertionError("delta's run never waited for a retry")
        from afdp.evidence.notary import EmbeddedTSA, serve

        stack.enter_context(serve(EmbeddedTSA.load(tsa.directory), host="127.0.0.1", port=late_tsa_port))

        expected = {(e["service"], e["deployment"]) for e in events}
        headers = {"Authorization": f"Bearer {TOKEN}"}
        deadline = time.monotonic() + 420
        rows: list[dict] = []
        while time.monotonic() < deadline:
            rows = httpx.get(f"{url}/api/deployments", headers=headers, timeout=120).json()
            done = {(r["service"], r["deployment"]) for r in rows if r["verdict"] == "VERIFIED"}
            if expected <= done:
                break
            time.sleep(3)
        else:
            logs = "\n".join((tmp_path / f).read_text()[-3000:] for f in ("worker-1.log", "worker-2.log", "serve.log"))
            raise AssertionError(f"not all verified: {rows}\n{logs}")

        # The verifier, as an auditor runs it, agrees for every branch (one process for
        # them all: --all checks every AFDP branch of the repository, exit 0 only if each
        # verified; the list of branches it checked is exactly the accepted events).
        verified = subprocess.run([*AFDP, "verify", "--repo", str(repo), "--all", "--jobs", "1", "--trust",
                                   str(trust_file), "--json"], env=env, cwd=tmp_path,
                                  capture_output=True, text=True, timeout=300)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        branches = json.loads(verified.stdout)["branches"]
        assert sorted((b["service"], b["deployment"]) for b in branches) == sorted(expected)
        assert all(b["ok"] and b["sealed"] and not b["failures"] for b in branches), branches

        # Prefect ran exactly one flow run per accepted event, on the two workers.
        # (Prefect's REST API directly: this process's Prefect settings point elsewhere;
        # the server is shared, so only this test's work pool is asked about.)
        runs = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {"tags": {"all_": ["afdp"]}},
                                                          "work_pools": {"name": {"any_": ["afdp-e2e"]}}},
                          timeout=60).json()
        assert sorted(r["name"] for r in runs) == sorted(f"{s}-{d}" for s, d in expected)
        assert all(r["state_type"] == "COMPLETED" for r in runs), [(r["name"], r["state_type"]) for r in runs]
        assert {r["name"]: r["run_count"] for r in runs}["delta-rel-1"] >= 2
        # One run at a time per service (concurrency_limit 1): alpha's two runs did not overlap.
        alpha = sorted((r for r in runs if r["name"].startswith("alpha-")), key=lambda r: r["start_time"])
        assert _time(alpha[0]["end_time"]) <= _time(alpha[1]["start_time"])
        metrics = httpx.get(f"{url}/metrics", headers=headers).text
        assert 'afdp_runs_submitted_total{service="alpha"} 2.0' in metrics
        assert 'afdp_events_rejected_total{reason="signature_invalid",source="generic"} 1.0' in metrics


# The baseline lasts long enough that the kill below lands inside it: the test kills as
# soon as it sees the genesis record (polling every 0.5 s), a second or two into a 10 s
# window. (It was 20 s; each second counts twice, once before the kill and once in the
# resumed run.)
FAULT_WORKFLOW = WORKFLOW.replace("duration: 3s", "duration: 10s", 1)


@pytest.mark.slow
def test_a_run_whose_worker_dies_resumes_on_the_other_worker(tmp_path, repo, keys, tsa, trust_file, prefect_api):
    """Kill the worker and the flow-run process mid-baseline; the shipped automation
    (flows/automations.yaml, its window shortened) schedules the run again, the other
    worker resumes it, and the branch verifies with every step recorded once."""
    import pygit2

    serve_port = free_port()
    api = prefect_api.api
    # Prefect's shortest heartbeat is 30 s; the automation's window must stay well above it.
    env = _env(prefect_api, PREFECT_FLOWS_HEARTBEAT_FREQUENCY="30")
    workflow = tmp_path / "workflow.yaml"
    workflow.write_text(FAULT_WORKFLOW)
    automations = yaml.safe_load((ROOT / "flows" / "automations.yaml").read_text())
    automations["automations"][0]["trigger"]["within"] = 60
    automation_file = tmp_path / "automations.yaml"
    automation_file.write_text(yaml.safe_dump(automations))
    name = automations["automations"][0]["name"]

    with ExitStack() as stack:
        demo = stack.enter_context(DemoService(name="omega", requests_per_second=50))
        services = tmp_path / "services.yaml"
        services.write_text(yaml.safe_dump({"services": {"omega": {
            "prefect_deployment": "afdp-evidence/omega",
            "parameters": {"workflow_path": str(workflow), "repository": str(repo), "key": str(keys / "dev.key"),
                           "tsa_urls": [tsa.url], "overrides": {"METRICS_URL": demo.metrics_url}},
        }}}))
        prefect_api.deploy(tmp_path, pool="afdp-fault", names=["omega"])
        prefect_api.cli("automation", "create", "--from-file", str(automation_file), env=env)
        # The server is shared: the automation (it watches every afdp-tagged run) goes with this test.
        stack.callback(_delete_automations, api, name)
        workers = [start_process(stack, ["prefect", "worker", "start", "--pool", "afdp-fault", "--type", "process",
                                         "--name", f"worker-{i}"], env, tmp_path / f"worker-{i}.log") for i in (1, 2)]
        serve = start_process(stack, [*AFDP, "serve", "--repo", str(repo), "--config", str(services), "--port",
                                      str(serve_port)], env, tmp_path / "serve.log")
        url = f"http://127.0.0.1:{serve_port}"
        wait_http(f"{url}/healthz", seconds=60, process=serve)
        body = json.dumps({"event_id": "e-omega", "service": "omega", "deployment": "rel-1", "commit": "abcdef1",
                           "deployed_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}).encode()
        answer = httpx.post(f"{url}/events", content=body,
                            headers={"X-AFDP-Signature-256": sign(SECRET.encode(), body)}, timeout=60)
        assert answer.status_code == 202, answer.text
        # the outbox relay creates the flow run after the 202: its id is on the delivery's status
        deadline = time.monotonic() + 120
        while (status := httpx.get(f"{url}/events/omega/e-omega", headers={"Authorization": f"Bearer {TOKEN}"},
                                   timeout=30).json())["state"] == "queued":
            assert time.monotonic() < deadline, status
            time.sleep(0.5)
        assert status["state"] == "submitted", status
        run_id = status["flow_run_id"]

        # Wait until the run is in its 10 s baseline (genesis on the branch), then kill the
        # flow-run process and the worker that started it: a lost machine.
        ref = "refs/heads/afdp/omega/rel-1"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            run = httpx.get(f"{api}/flow_runs/{run_id}", timeout=30).json()
            if run["state_type"] == "RUNNING" and ref in pygit2.Repository(str(repo)).references:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"the run never started: {run['state_type']}")
        pid = int(str(run["infrastructure_pid"]).rsplit(":", 1)[-1])
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        killed = next(w for w in workers if w.pid in (pid, parent) or _descends(pid, w.pid))
        os.kill(pid, signal.SIGKILL)
        os.killpg(killed.pid, signal.SIGKILL)
        records_before = _steps(repo, ref)
        assert "seal" not in records_before

        deadline = time.monotonic() + 420
        while time.monotonic() < deadline:
            run = httpx.get(f"{api}/flow_runs/{run_id}", timeout=30).json()
            if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            time.sleep(1)
        logs = "\n".join((tmp_path / f).read_text()[-4000:] for f in ("worker-1.log", "worker-2.log"))
        assert run["state_type"] == "COMPLETED", f"{run['state_type']} {run['state_name']}\n{logs}"
        assert run["run_count"] >= 2

        steps = _steps(repo, ref)
        assert steps[: len(records_before)] == records_before  # nothing already recorded was rewritten
        assert len(steps) == len(set(steps)), steps  # every step recorded once
        assert steps[-1] == "seal"
        verified = subprocess.run([*AFDP, "verify", "--repo", str(repo), "--service", "omega", "--deployment",
                                   "rel-1", "--trust", str(trust_file)], env=env, cwd=tmp_path,
                                  capture_output=True, text=True, timeout=300)
        assert verified.returncode == 0, verified.stdout + verified.stderr


def _delete_automations(api: str, name: str) -> None:
    """Clean-up: the server answers 503 while its database is busy (seen under CI's load,
    after the test itself had passed), so each call is retried for up to a minute."""
    found = _with_retries(lambda: httpx.post(f"{api}/automations/filter", json={}, timeout=60)).json()
    for automation in found:
        if automation["name"] == name:
            _with_retries(lambda a=automation: httpx.delete(f"{api}/automations/{a['id']}", timeout=60))


def _with_retries(call):
    deadline = time.monotonic() + 60
    while True:
        try:
            response = call()
            if response.status_code < 500 or time.monotonic() > deadline:
                return response.raise_for_status()
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
        time.sleep(2)


def _descends(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            return False
    return False


def _steps(repo: Path, ref: str) -> list[str]:
    from afdp.audit.story import read_story

    service, deployment = ref.split("/")[-2:]
    return [row.get("step") for row in read_story(repo, service=service, deployment=deployment)["records"]]
