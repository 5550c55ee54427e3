"""``afdp run`` benchmarks (figures, not assertions: machines are shared and noisy).

    python benchmarks/bench_run.py [--runs 3] [--scale 300] [--skip-ephemeral]

Runs the API example (afdp/workflow/examples/api_deployment_impact.yaml, its collector
pointed at a real local Prometheus scraping a demo service) as ``afdp run`` in a
subprocess, exactly as a user would, and reports:

1. overhead of ``afdp run`` with a Prefect server already running (``PREFECT_API_URL``):
   wall time minus the collectors' own I/O and the workflow's waits (each capture
   record's ``collect_seconds``, the longest of its concurrent collections, and the
   durations of the wait and signal records, read back from the evidence), beside
   Prefect's own floor (a process importing Prefect only, running an empty flow with as
   many tasks against the same server, right after each run), split
   into process start and imports, one flow run, and one task. Target: AFDP's part over
   that floor <= 1.5 s. Each run's CPU time (and the Prefect server's) is printed too:
   on a shared, loaded machine wall time swells with the load, CPU time much less.
2. the same without Prefect (``--no-prefect``), for comparison;
3. per recorded step: the median cost of one step record (sign, RFC3161 time-stamp over
   loopback, commit), in a process of its own as in ``afdp run``. Target < 50 ms;
4. Prefect's ephemeral mode cold start: the same run with no ``PREFECT_API_URL`` and a
   fresh ``PREFECT_HOME`` (Prefect starts a temporary local server).

Waits are shortened with ``--time-scale`` (recorded in the evidence) so a run takes
seconds; the example's 17 minutes of windows become ~3.5 s at the default scale 300.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pygit2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from infra import free_port, prometheus_missing, start_prometheus, wait_for_series  # noqa: E402

from afdp.demo.service import DemoService  # noqa: E402
from afdp.evidence.notary import EmbeddedTSA, init_tsa, serve  # noqa: E402
from afdp.evidence.signing import generate_key  # noqa: E402
from afdp.evidence.store import init_repository  # noqa: E402

EXAMPLE = ROOT / "afdp" / "workflow" / "examples" / "api_deployment_impact.yaml"
WAITING_KINDS = {"wait", "signal"}


def waited_seconds(repo: Path, service: str, deployment: str) -> tuple[float, int]:
    """Return (seconds spent in capture/wait/signal steps, number of records) from the branch."""
    git = pygit2.Repository(str(repo))
    commit = git.get(git.references[f"refs/heads/afdp/{service}/{deployment}"].target)
    total, count = 0.0, 0
    tree = commit.tree
    for shard in git.get(tree["records"].id):
        for entry in git.get(shard.id):
            envelope = json.loads(git.get(git.get(entry.id)["envelope.json"].id).data)
            predicate = json.loads(base64.b64decode(envelope["payload"]))["predicate"]
            count += 1
            kind = (predicate.get("context") or {}).get("step", {}).get("kind")
            timings = (predicate.get("result") or {}).get("collect_seconds")
            if kind == "capture" and timings:
                # Collections of one capture run concurrently: the longest is the I/O.
                total += max(timings.values())
            elif kind in WAITING_KINDS:
                started = _time(predicate["started_at"])
                finished = _time(predicate["finished_at"])
                total += finished - started
    return total, count


def _time(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def child_cpu() -> float:
    """CPU seconds (user + system) used so far by this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def server_cpu() -> float:
    """CPU seconds used so far by the Prefect server started here (0 if none)."""
    if SERVER_PID is None:
        return 0.0
    fields = Path(f"/proc/{SERVER_PID}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


SERVER_PID: int | None = None


def run_once(args: list[str], env: dict[str, str]) -> tuple[float, dict, float, float]:
    """Run ``afdp run``; return its wall time, outcome, CPU time, and the Prefect
    server's CPU time meanwhile (CPU time is what a loaded shared machine cannot blur)."""
    cpu, served = child_cpu(), server_cpu()
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "afdp", "run", *args, "--json"], capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"afdp run failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    return elapsed, json.loads(done.stdout), child_cpu() - cpu, server_cpu() - served


def start_prefect_server(home: Path, stack: ExitStack) -> str:
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    env.pop("PREFECT_API_URL", None)
    log = (home / "server.log").open("wb")
    process = subprocess.Popen(
        ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    stack.callback(lambda: (process.terminate(), process.wait(timeout=20)))
    global SERVER_PID
    SERVER_PID = process.pid
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"prefect server did not start; see {home / 'server.log'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", type=float, default=300.0)
    parser.add_argument("--skip-ephemeral", action="store_true")
    options = parser.parse_args()
    missing = prometheus_missing()
    if missing:
        raise SystemExit(missing)
    with tempfile.TemporaryDirectory(prefix="afdp-bench-run-") as tmp, ExitStack() as stack:
        base = Path(tmp)
        generate_key(base / "dev.key")
        init_tsa(base / "tsa", force=True)
        tsa = stack.enter_context(serve(EmbeddedTSA.load(base / "tsa")))
        repo = base / "evidence"
        init_repository(repo)
        service = stack.enter_context(DemoService(name="api", version="v1"))
        prometheus = stack.enter_context(start_prometheus([service.metrics_url], base / "prometheus"))
        wait_for_series(prometheus, 'http_requests_total{service="api"}')
        workflow = base / "api_deployment_impact.yaml"
        workflow.write_text(EXAMPLE.read_text().replace("http://prometheus:9090", prometheus))

        def args(deployment: str, *extra: str) -> list[str]:
            return [
                str(workflow), "--service", "api", "--deployment", deployment, "--commit", "4f2a9c1",
                "--deployer", "bench", "--changed-file", "api/app.py", "--deployment-size", "12",
                "--repo", str(repo), "--key", str(base / "dev.key"), "--tsa", tsa.url,
                "--signal", "deployment_started", "--time-scale", str(options.scale), *extra,
            ]

        cpus: dict[str, list[float]] = {}

        def measure(
            label: str, env: dict[str, str], extra: tuple[str, ...], runs: int, after_each: Any = None
        ) -> list[float]:
            overheads = []
            for i in range(runs):
                deployment = f"{label}-{i}"
                elapsed, outcome, cpu, served = run_once(args(deployment, *extra), env)
                waited, records = waited_seconds(repo, "api", deployment)
                overheads.append(elapsed - waited)
                cpus.setdefault(label, []).append(cpu)
                cpus.setdefault(f"{label}-server", []).append(served)
                print(
                    f"  {label} run {i + 1}: wall {elapsed:.2f}s, collectors+waits {waited:.2f}s, "
                    f"overhead {elapsed - waited:.2f}s; CPU {cpu:.2f}s (+ Prefect server {served:.2f}s) "
                    f"({records} records, decision {outcome['decision']['action']})"
                )
                if after_each is not None:
                    after_each()
            return overheads

        env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
        # An installed wheel runs from compiled bytecode (pip compiles at install). From a
        # checkout with PYTHONDONTWRITEBYTECODE set and no __pycache__, every `afdp run`
        # would compile AFDP's own sources again (about 0.3 s of CPU here), which no user
        # pays: compile them once, untimed, and let the runs read the bytecode.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "afdp")], env=env, check=True, capture_output=True)
        # The example's alert webhook names ${env.AFDP_WEBHOOK_SECRET}: afdp run checks it is set.
        env.setdefault("AFDP_WEBHOOK_SECRET", "bench-only-secret")
        print(f"API example, time scale {options.scale:g}, Prometheus {prometheus}")
        print("1. with a Prefect server already running:")
        home = base / "prefect-server-home"
        home.mkdir()
        api = start_prefect_server(home, stack)
        server_env = {**env, "PREFECT_API_URL": api, "PREFECT_HOME": str(home)}
        # Prefect's floor is measured right after each run (a shared machine's load drifts).
        floors: list[tuple[float, float]] = []

        def floor_run() -> None:
            floors.append(prefect_floor(server_env, tasks=with_server_tasks(repo), runs=1))

        with_server = measure("server", server_env, (), options.runs, after_each=floor_run)
        tasks = with_server_tasks(repo)
        floor = statistics.median(wall for wall, _ in floors)
        floor_cpu = statistics.median(cpu for _, cpu in floors)
        print(
            f"  Prefect's own floor (a subprocess importing Prefect only and running an empty flow "
            f"with the same number of tasks, {tasks}, after each run): wall "
            f"{', '.join(f'{wall:.2f}s' for wall, _ in floors)}; CPU "
            f"{', '.join(f'{cpu:.2f}s' for _, cpu in floors)}"
        )
        imported, imported_cpu = prefect_floor(server_env, tasks=-1)
        empty, empty_cpu = prefect_floor(server_env, tasks=0)
        many_tasks = 4 * max(tasks, 1)
        many, many_cpu = prefect_floor(server_env, tasks=many_tasks)
        print(
            f"  of which (wall / CPU): process start and imports {imported:.2f}s / {imported_cpu:.2f}s; "
            f"one flow run with no task {empty - imported:.2f}s / {empty_cpu - imported_cpu:.2f}s; "
            f"per task {(many - empty) / many_tasks * 1000:.0f} ms / "
            f"{(many_cpu - empty_cpu) / many_tasks * 1000:.0f} ms (from {many_tasks} tasks)"
        )
        print("2. without Prefect (--no-prefect):")
        inline = measure("inline", env, ("--no-prefect",), options.runs)

        print("3. per recorded step (its own process, sign + time-stamp + commit):")
        per_step = step_cost(base, tsa.url)

        cold = None
        if not options.skip_ephemeral:
            print("4. ephemeral mode cold start (no PREFECT_API_URL, fresh PREFECT_HOME):")
            fresh = base / "prefect-ephemeral-home"
            fresh.mkdir()
            ephemeral_env = {**env, "PREFECT_HOME": str(fresh)}
            ephemeral_env.pop("PREFECT_API_URL", None)
            cold = measure("ephemeral", ephemeral_env, (), 1)[0]

        print()
        print(f"overhead with a Prefect server: median {statistics.median(with_server):.2f}s; "
              f"of which Prefect's own floor {floor:.2f}s, so AFDP's part over that floor "
              f"{statistics.median(with_server) - floor:.2f}s (target <= 1.5 s)")
        print(f"overhead without Prefect:       median {statistics.median(inline):.2f}s")
        server_cpu_run = statistics.median(cpus["server"])
        print(
            f"CPU of afdp run with a server:  median {server_cpu_run:.2f}s (+ the server's "
            f"{statistics.median(cpus['server-server']):.2f}s); Prefect's floor {floor_cpu:.2f}s, so "
            f"AFDP's part over the floor {server_cpu_run - floor_cpu:.2f}s CPU"
        )
        print(f"CPU of afdp run --no-prefect:   median {statistics.median(cpus['inline']):.2f}s")
        print(f"per recorded step:              median {per_step * 1000:.1f} ms (target < 50 ms)")
        if cold is not None:
            print(f"ephemeral cold start overhead:  {cold:.2f}s")


FLOOR = """
import os
import sys
# The Prefect settings afdp.pipeline.flow sets before importing Prefect, and nothing of
# AFDP: importing AFDP's own modules (about 0.5 s) is AFDP's part, not Prefect's floor.
for name, value in (("PREFECT_SERVER_ANALYTICS_ENABLED", "false"), ("DO_NOT_TRACK", "1"), ("PREFECT_LOGGING_LEVEL", "WARNING")):
    os.environ.setdefault(name, value)
from prefect import flow, task

@task
def step():
    return 1

@flow
def empty():
    for _ in range(int(sys.argv[1])):
        step()

if int(sys.argv[1]) >= 0:
    empty()
"""


def prefect_floor(env: dict[str, str], *, tasks: int, runs: int = 2) -> tuple[float, float]:
    """Return the median wall time of a process that imports Prefect and runs an empty
    flow with ``tasks`` tasks against the same server: what any Prefect run costs here
    (``tasks=-1``: the imports only, no flow run), and its median CPU time.
    """
    times, cpus = [], []
    for _ in range(runs):
        cpu = child_cpu()
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", FLOOR, str(tasks)], env={**env, "PYTHONPATH": str(ROOT)}, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
        cpus.append(child_cpu() - cpu)
    return statistics.median(times), statistics.median(cpus)


def with_server_tasks(repo: Path) -> int:
    """Return how many task runs one server run of the API example made (from its records)."""
    git = pygit2.Repository(str(repo))
    commit = git.get(git.references["refs/heads/afdp/api/server-0"].target)
    count = 0
    for shard in git.get(commit.tree["records"].id):
        for entry in git.get(shard.id):
            envelope = json.loads(git.get(git.get(entry.id)["envelope.json"].id).data)
            prefect = json.loads(base64.b64decode(envelope["payload"]))["predicate"]["context"].get("prefect") or {}
            count += 1 if "task_run_id" in prefect else len(prefect.get("task_run_ids") or {})
    return count


STEP_COST = """
import statistics, sys, time
from pathlib import Path
from afdp.evidence import records as rec
from afdp.evidence.ledger import append_record
from afdp.evidence.signing import load_signer
from afdp.evidence.store import init_repository
repo, key, url, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
init_repository(Path(repo))
signer = load_signer(key)
times = []
for i in range(n):
    draft = rec.RecordDraft(kind=rec.KIND_STEP, step=f"s{i}", result={"outputs": {"x": i}}, workflow_digest="0" * 64)
    started = time.perf_counter()
    append_record(repo, service="api", deployment="steps", draft=draft, signer=signer, tsa_urls=[url])
    times.append(time.perf_counter() - started)
print(statistics.median(times[1:]))
"""


def step_cost(base: Path, tsa_url: str, n: int = 50) -> float:
    """Return the median time of one ``append_record`` in a process of its own, as in
    ``afdp run`` (this benchmark's process also serves the demo service and the TSA,
    whose threads would compete with it for the interpreter lock)."""
    done = subprocess.run(
        [sys.executable, "-c", STEP_COST, str(base / "steps"), str(base / "dev.key"), tsa_url, str(n)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))},
        check=True, capture_output=True, text=True,
    )
    return float(done.stdout.strip())


if __name__ == "__main__":
    main()
