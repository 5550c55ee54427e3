"""``afdp serve``: events per second the intake accepts, and flow runs per minute the
workers complete, for K services on this machine; names the limiting factor.

``python benchmarks/bench_intake.py --services 3 --events 300 --runs 2 --workers 2``

1. Intake alone: the real app over HTTP on loopback (signature, JSON, schema, replay
   ledger and the fsync'd outbox commit) with a submitter that creates no flow run,
   ``--events`` signed events from 8 client threads. This is the intake's own ceiling.
2. With the engine (skipped with ``--no-prefect``): a Prefect server (own PREFECT_HOME),
   a process work pool, ``--workers`` process workers and one deployment per service;
   ``--runs`` events per service through the intake with the Prefect submitter, each a
   real evidence run (2 s baseline and impact windows against a DemoService, embedded
   TSA). Reports the intake's acceptance rate and p50/p99 latency (the 202 comes once the
   event is on disk; the outbox relay creates the flow runs after), how long the outbox
   took to create every flow run, completed runs/min, and where a run's time goes
   (queue wait, process start, the workflow itself). Then, while the workers run those,
   a burst of ``--burst`` events (8 senders) for a service whose deployment sits in a
   work pool with no worker: flow runs created and never run, so the figure is the
   intake's (and the outbox's) under a busy engine, not the workers'.
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


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def latency(values: list[float]) -> str:
    return (f"p50 {statistics.median(values) * 1000:.0f} ms, p99 {percentile(values, 0.99) * 1000:.0f} ms, "
            f"max {max(values) * 1000:.0f} ms")


def drain(app, accepted: int, began: float, limit: float = 900) -> float:  # type: ignore[no-untyped-def]
    """Wait until the outbox has created every accepted event's flow run; return when."""
    while app.state.ledger.depth() and time.monotonic() - began < limit:
        time.sleep(0.2)
    return time.monotonic() - began


def intake_alone(root: Path, services: list[str], events: int) -> float:
    repo = root / "evidence-alone"
    init_repository(repo)
    config = Services({s: ServiceConfig(s, f"afdp-evidence/{s}") for s in services})
    app = create_app(ServeSettings(repository=repo, services=config, webhook_secret=SECRET, submitter=NoRun()))
    bodies = [event(services[i % len(services)], i, "alone") for i in range(events)]
    with running_server(app) as server:
        seconds, codes, latencies = post_all(server.url, bodies)
    accepted = codes.count(202)
    print(f"intake alone: {accepted}/{events} accepted ({accepted / events:.0%}) in {seconds:.2f} s = "
          f"{accepted / seconds:.0f} events/s ({latency(latencies)}; 8 clients, {len(services)} services)")
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


def with_engine(root: Path, services: list[str], runs: int, workers: int, tsa_url: str, alone_p50: float,
                burst: int) -> None:
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
    idle = copy.deepcopy(shipped["deployments"][0])
    idle.update(name="burst", parameters={}, work_pool={"name": "bench-idle"})
    project["deployments"].append(idle)
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
        for pool in ("bench", "bench-idle"):
            subprocess.run(["prefect", "work-pool", "create", pool, "--type", "process"], env=env, cwd=ROOT,
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
        } | {"burst": ServiceConfig("burst", "afdp-evidence/burst", parameters={
            "workflow_path": str(workflow), "repository": str(repo), "key": str(root / "dev.key"),
            "tsa_urls": [tsa_url]})})
        submitter = PrefectSubmitter()
        loading = time.perf_counter()
        submitter.prepare()
        print(f"loading Prefect in afdp serve (once, at start-up): {time.perf_counter() - loading:.1f} s")
        app = create_app(ServeSettings(repository=repo, services=config, webhook_secret=SECRET,
                                       submitter=submitter))
        bodies = [event(s, n, "run") for s in services for n in range(runs)]
        with running_server(app) as intake:
            began = time.monotonic()
            seconds, codes, latencies = post_all(intake.url, bodies, threads=4)
            accepted = codes.count(202)
            print(f"intake with Prefect (outbox): {accepted}/{len(bodies)} accepted ({accepted / len(bodies):.0%}) in "
                  f"{seconds:.2f} s = {accepted / seconds:.1f} events/s ({latency(latencies)}; 4 senders; the 202 "
                  "comes once the event is committed, before its flow run exists)")
            drained = drain(app, accepted, began)
            left = app.state.ledger.depth()
            print(f"outbox: every flow run created {drained:.1f} s after the first event "
                  f"({accepted - left}/{accepted} created, {accepted / drained:.2f} runs created/s through the "
                  f"Prefect API, {left} still queued)")
            intake_latencies = latencies
            names = [f"{s}-run-{n}" for s in services for n in range(runs)]
            filter_body = {"flow_runs": {"name": {"any_": names}}}
            while not any(r["state_type"] == "RUNNING"
                          for r in httpx.post(f"{api}/flow_runs/filter", json=filter_body, timeout=60).json()):
                time.sleep(1)
            if burst:
                burst_bodies = [event("burst", n, "b") for n in range(burst)]
                burst_began = time.monotonic()
                seconds, codes, latencies = post_all(intake.url, burst_bodies, threads=8)
                accepted = codes.count(202)
                print(f"burst while the workers run: {accepted}/{burst} accepted ({accepted / burst:.0%}) in "
                      f"{seconds:.2f} s = {accepted / seconds:.1f} events/s ({latency(latencies)}; 8 senders; "
                      f"answers other than 202: {sorted(set(codes) - {202}) or 'none'})")
                drained = drain(app, accepted, burst_began)
                left = app.state.ledger.depth()
                print(f"outbox after the burst: {accepted - left}/{accepted} flow runs created in {drained:.1f} s = "
                      f"{(accepted - left) / drained:.2f} runs created/s (one relay thread, each a Prefect API "
                      f"round trip), {left} still queued")
                intake_latencies = intake_latencies + latencies
            while True:
                found = httpx.post(f"{api}/flow_runs/filter", json=filter_body, timeout=60).json()
                finished = [r for r in found if r["state_type"] in ("COMPLETED", "FAILED", "CRASHED")]
                if len(finished) >= len(bodies) or time.monotonic() - began > 1200:
                    break
                time.sleep(2)
            elapsed = time.monotonic() - began
    locked = (root / "server.log").read_text(errors="replace").count("database is locked")
    print(f"limiting factor (intake): its own checks and the outbox's fsync'd commit ({statistics.median(intake_latencies) * 1000:.0f} "
          f"ms median with the engine busy, {alone_p50 * 1000:.0f} ms alone), no longer Prefect; creating the flow "
          f"runs (in the background) is bound by the Prefect API, whose SQLite database reported 'database is locked' "
          f"{locked} time(s): writes from the outbox and the workers wait on one file (use PostgreSQL for many teams)")
    done = [r for r in finished if r["state_type"] == "COMPLETED"]
    if done:  # from the first run's creation to the last one's end (not the burst's drain)
        elapsed = (max(_t(r["end_time"]) for r in done) - min(_t(r["created"]) for r in done)).total_seconds()
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
    parser.add_argument("--burst", type=int, default=200, help="events sent at once while the workers run")
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
            with_engine(root, services, args.runs, args.workers, tsa.url, alone_p50, args.burst)


if __name__ == "__main__":
    sys.exit(main())
