"""``afdp serve``: events per second the intake accepts, and flow runs per minute the
workers complete, for K services on this machine; names the limiting factor.

``python benchmarks/bench_intake.py --services 3 --events 300 --runs 2 --workers 2``

1. Intake alone: the real app over HTTP on loopback (signature, JSON, schema, replay
   ledger) with a submitter that creates no flow run, ``--events`` signed events from 8
   client threads. This is the intake's own ceiling.
2. With the engine (skipped with ``--no-prefect``): a Prefect server (own PREFECT_HOME),
   a process work pool, ``--workers`` process workers and one deployment per service;
   ``--runs`` events per service through the intake with the Prefect submitter, each a
   real evidence run (2 s baseline and impact windows against a DemoService, embedded
   TSA); reports accepted events/s with real flow-run creation, completed runs/min, and
   where a run's time goes (queue wait, process start, the workflow itself).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import httpx
import yaml

from afdp.demo.service import DemoService
from afdp.evidence.notary import EmbeddedTSA, init_tsa, serve
from afdp.evidence.signing import generate_key
from afdp.evidence.store import init_repository
from afdp.service.app import ServeSettings, create_app, running_server
from afdp.service.config import ServiceConfig, Services
from afdp.service.intake import sign
from afdp.service.submit import RunSubmitter

ROOT = Path(__file__).resolve().parents[1]
SECRET = b"bench-intake-secret-0123456789"
WORKFLOW = """\
name: bench_intake
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
    - capture_baseline: {duration: 2s, interval: 250ms, metrics: [latency_mean]}
  deployment:
    - mark_deployment_time
  post_deployment:
    - capture_impact: {duration: 2s, interval: 250ms, metrics: [same_as_baseline]}
    - analyze_differences: {method: mann_whitney}
    - decisions
success_criteria:
  - latency_mean.increase < 50ms
"""
WINDOWS_SECONDS = 4.0


class NoRun(RunSubmitter):
    """Creates no flow run: measures the intake alone."""

    def submit(self, event):  # type: ignore[no-untyped-def]
        return "none"


def event(service: str, n: int, prefix: str) -> bytes:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps({"event_id": f"{prefix}-{service}-{n}", "service": service, "deployment": f"{prefix}-{n}",
                       "commit": f"{n:07x}", "deployed_at": now}).encode()


def post_all(url: str, bodies: list[bytes], threads: int = 8) -> tuple[float, list[int], list[float]]:
    codes: list[int] = []
    latencies: list[float] = []
    lock = threading.Lock()
    queue = list(bodies)

    def client() -> None:
        with httpx.Client(timeout=60) as http:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                started = time.perf_counter()
                code = http.post(f"{url}/events", content=body,
                                 headers={"X-AFDP-Signature-256": sign(SECRET, body)}).status_code
                with lock:
                    codes.append(code)
                    latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    workers = [threading.Thread(target=client) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - started, codes, latencies


def intake_alone(root: Path, services: list[str], events: int) -> float:
    repo = root / "evidence-alone"
    init_repository(repo)
    config = Services({s: ServiceConfig(s, f"afdp-evidence/{s}") for s in services})
    app = create_app(ServeSettings(repository=repo, services=config, webhook_secret=SECRET, submitter=NoRun()))
    bodies = [event(services[i % len(services)], i, "alone") for i in range(events)]
    with running_server(app) as server:
        seconds, codes, latencies = post_all(server.url, bodies)
    accepted = codes.count(202)
    print(f"intake alone: {accepted}/{events} accepted in {seconds:.2f} s = {accepted / seconds:.0f} events/s "
          f"(p50 {statistics.median(latencies) * 1000:.1f} ms, 8 clients, {len(services)} services)")
    return statistics.median(latencies)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(stack: ExitStack, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    handle = stack.enter_context(open(log, "w"))  # noqa: SIM115
    proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)

    def stop() -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    stack.callback(stop)
    return proc


def with_engine(root: Path, services: list[str], runs: int, workers: int, tsa_url: str, alone_p50: float) -> None:
    from afdp.service.submit import PrefectSubmitter

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_HOME": str(root / "prefect-home"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false", "DO_NOT_TRACK": "1",
           "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "1", "AFDP_PROJECT_DIR": str(ROOT)}
    os.environ["PREFECT_API_URL"] = api  # this process's submitter (Prefect is not loaded yet)
    workflow = root / "workflow.yaml"
    workflow.write_text(WORKFLOW)
    repo = root / "evidence"
    init_repository(repo)
    shipped = yaml.safe_load((ROOT / "flows" / "prefect.yaml").read_text())
    project = copy.deepcopy(shipped)
    project["deployments"] = []
    for name in services:
        deployment = copy.deepcopy(shipped["deployments"][0])
        deployment.update(name=name, parameters={}, work_pool={"name": "bench"})
        project["deployments"].append(deployment)
    (root / "prefect.yaml").write_text(yaml.safe_dump(project))
    with ExitStack() as stack:
        demos = {s: stack.enter_context(DemoService(name=s, requests_per_second=50)) for s in services}
        server = start(stack, ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)], env,
                       root / "server.log")
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the Prefect server did not start: see " + str(root / "server.log"))
            time.sleep(0.5)
        subprocess.run(["prefect", "work-pool", "create", "bench", "--type", "process"], env=env, cwd=ROOT,
                       check=True, capture_output=True)
        subprocess.run(["prefect", "--no-prompt", "deploy", "--prefect-file", str(root / "prefect.yaml"), "--all"],
                       env=env, cwd=ROOT, check=True, capture_output=True)
        for i in range(workers):
            start(stack, ["prefect", "worker", "start", "--pool", "bench", "--type", "process", "--name", f"w{i}"],
                  env, root / f"worker-{i}.log")
        config = Services({
            s: ServiceConfig(s, f"afdp-evidence/{s}", parameters={
                "workflow_path": str(workflow), "repository": str(repo), "key": str(root / "dev.key"),
                "tsa_urls": [tsa_url], "overrides": {"METRICS_URL": demos[s].metrics_url}})
            for s in services
        })
        submitter = PrefectSubmitter()
        loading = time.perf_counter()
        submitter.prepare()
        print(f"loading Prefect in afdp serve (once, at start-up): {time.perf_counter() - loading:.1f} s")
        app = create_app(ServeSettings(repository=repo, services=config, webhook_secret=SECRET,
                                       submitter=submitter))
        bodies = [event(s, n, "run") for s in services for n in range(runs)]
        with running_server(app) as intake:
            began = time.monotonic()
            first, codes, _ = post_all(intake.url, bodies[:1], threads=1)
            print(f"one event alone on an idle Prefect server: {first * 1000:.0f} ms (HTTP {codes[0]})")
            bodies_left = bodies[1:]
            seconds, codes, latencies = post_all(intake.url, bodies_left, threads=4)
            print(f"intake with Prefect: {codes.count(202)}/{len(bodies_left)} accepted in {seconds:.2f} s = "
                  f"{codes.count(202) / seconds:.1f} events/s (latency p50 {statistics.median(latencies) * 1000:.0f} ms, "
                  f"max {max(latencies) * 1000:.0f} ms: each creates a flow run through the Prefect API)")
            intake_latencies = latencies
            filter_body = {"flow_runs": {"tags": {"all_": ["afdp"]}}}
            while True:
                found = httpx.post(f"{api}/flow_runs/filter", json=filter_body, timeout=60).json()
                finished = [r for r in found if r["state_type"] in ("COMPLETED", "FAILED", "CRASHED")]
                if len(finished) >= len(bodies) or time.monotonic() - began > 1200:
                    break
                time.sleep(2)
            elapsed = time.monotonic() - began
    locked = (root / "server.log").read_text(errors="replace").count("database is locked")
    print(f"limiting factor (intake): the Prefect API creating each flow run ({statistics.median(intake_latencies) * 1000:.0f} "
          f"ms median per event, against {alone_p50 * 1000:.0f} ms for the intake's own checks); the Prefect server's "
          f"SQLite database reported 'database is locked' {locked} time(s): writes from the intake and the workers "
          "wait on one file (use PostgreSQL for many teams)")
    done = [r for r in finished if r["state_type"] == "COMPLETED"]
    print(f"workers: {len(done)}/{len(bodies)} runs completed in {elapsed:.0f} s = {len(done) / elapsed * 60:.1f} runs/min "
          f"({workers} process workers, {len(services)} services, 2 cores)")
    if not done:
        return
    waits = [(_t(r["start_time"]) - _t(r["expected_start_time"])).total_seconds() for r in done]
    totals = [r["total_run_time"] for r in done]
    print(f"per run: from creation to running (worker pick-up, new process, pull step) median "
          f"{statistics.median(waits):.1f} s; flow run time median "
          f"{statistics.median(totals):.1f} s, of which {WINDOWS_SECONDS:.0f} s are capture windows")
    overhead = statistics.median(totals) - WINDOWS_SECONDS
    if statistics.median(waits) > statistics.median(totals):
        factor = (f"starting runs: {statistics.median(waits):.0f} s from creation to running (each run is a new "
                  "Python process importing Prefect and AFDP on 2 shared cores); add worker machines")
    elif overhead > WINDOWS_SECONDS:
        factor = (f"CPU per run: {overhead:.0f} s beyond the capture windows (a new Python process per flow run, "
                  "Prefect's engine start-up, signing and RFC3161 time-stamps) on 2 shared cores")
    else:
        factor = "the workflow's own capture windows"
    print(f"limiting factor: {factor}")


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=3, help="K services")
    parser.add_argument("--events", type=int, default=300, help="events for the intake-alone measurement")
    parser.add_argument("--runs", type=int, default=2, help="evidence runs per service with the engine")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-prefect", action="store_true", help="measure the intake alone")
    args = parser.parse_args()
    services = [f"svc-{i}" for i in range(args.services)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        alone_p50 = intake_alone(root, services, args.events)
        if args.no_prefect:
            return
        init_tsa(root / "tsa")
        generate_key(root / "dev.key")
        with serve(EmbeddedTSA.load(root / "tsa"), host="127.0.0.1", port=0) as tsa:
            with_engine(root, services, args.runs, args.workers, tsa.url, alone_p50)


if __name__ == "__main__":
    sys.exit(main())
