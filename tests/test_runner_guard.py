"""What a user of ``afdp run`` met (QA): concurrent runs, a TSA that is down or goes down,
Ctrl-C, missing secrets, unknown ``--set`` variables, live sources asked for the past,
unclear output, ``--json`` on errors, and running from a wheel.

Real parts: Git repositories, the embedded TSA over loopback HTTP (behind a loopback
forwarding proxy that can be switched off, to take the TSA down mid-run), the demo
service's real /metrics page, the real CLI (in-process and as a subprocess).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pygit2
import pytest
from test_runner import predicates, request_for, workflow_from

from afdp.errors import StorageError, TimestampError
from afdp.evidence.names import branch_ref
from afdp.evidence.store import EvidenceStore
from afdp.evidence.trust import load_trust_policy
from afdp.pipeline.runner import (
    InterruptibleClock,
    RunCancelled,
    action_text,
    analysis_summary,
    run_lock,
    run_workflow,
)
from afdp.verify.verifier import verify_branch

AFDP = [sys.executable, "-m", "afdp"]

STEPS = """\
name: guarded
version: "1"
variables:
  FLAG: "off"
  LIMIT: 3
  TAG: v1
workflow:
  pre_deployment:
    - wait: 1s
    - wait_for_signal: go
  deployment:
    - mark_deployment_time
  post_deployment:
    - wait: 1s
"""


def head_of(repo: Path, deployment: str = "d-1"):
    return EvidenceStore(repo).head(branch_ref("api", deployment))


# --------------------------------------------------------------------------- A: one run at a time


def test_a_second_run_of_the_same_deployment_is_refused_before_writing(tmp_path, repo, signer, tsa):
    workflow = workflow_from(tmp_path, STEPS)
    refused = pytest.raises(StorageError, match=r"deployment d-1 is being recorded by another run \(pid \d+, since 20")
    with run_lock(repo, "api", "d-1"), refused:  # what a first, still running `afdp run` holds
        run_workflow(request_for(workflow, repo, signer, tsa))
    assert head_of(repo) is None
    # Released: the run goes ahead; another deployment is never blocked.
    with run_lock(repo, "api", "d-2"):
        assert run_workflow(request_for(workflow, repo, signer, tsa)).sealed


def test_two_concurrent_cli_runs_one_is_refused_with_exit_3(tmp_path, repo, keys, tsa):
    path = tmp_path / "wf.yaml"
    # The first run waits (10 minutes, 5 scaled) until it is interrupted at the end: the
    # second run must find it running, and under load (two `afdp` start-ups in a row) a
    # 30 s wait (15 s scaled) could end first and move the branch under the check below.
    path.write_text(STEPS.replace("wait: 1s", "wait: 10m", 1))
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nname: p\nallowed_collector_types: [prometheus, scrape, sql, rest]\n")
    argv = [*AFDP, "run", str(path), "--service", "api", "--deployment", "d-1", "--repo", str(repo),
            "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--no-prefect", "--policy", str(policy),
            "--signal", "go", "--time-scale", "2"]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while head_of(repo) is None and time.monotonic() < deadline and first.poll() is None:  # genesis: the first run holds the lock
            time.sleep(0.1)
        assert head_of(repo) is not None, "the first run wrote no genesis record"
        before = str(head_of(repo).id)
        second = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert second.returncode == 3, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith(f"afdp: error: deployment d-1 is being recorded by another run (pid {first.pid}, since 20")
        assert str(head_of(repo).id) == before  # the second run wrote nothing
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=30)


def test_a_foreign_record_appended_mid_run_stops_the_run(tmp_path, repo, signer, tsa):
    from conftest import add_step

    workflow = workflow_from(tmp_path, STEPS)

    def intrude(report):
        if report.name == "wait":
            add_step(repo, signer, tsa, "intruder", {"x": 1}, deployment="d-1")

    with pytest.raises(StorageError, match="ends with 'intruder' where 'wait' was expected"):
        run_workflow(request_for(workflow, repo, signer, tsa, progress=intrude))
    names = [p["step"]["name"] for p in predicates(repo)]
    assert names == ["genesis", "wait", "intruder"]  # nothing of this run after the foreign record


# --------------------------------------------------------------------------- B: TSA down


class _Proxy:
    """A loopback HTTP forwarder to the real TSA that can be switched off (503)."""

    def __init__(self, target: str) -> None:
        self.down = False
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if proxy.down:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                answer = httpx.post(target, content=body, headers={"Content-Type": self.headers["Content-Type"]})
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("Content-Type", "application/timestamp-reply"))
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, format, *args):  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def tsa_proxy(tsa):
    proxy = _Proxy(tsa.url)
    yield proxy
    proxy.close()


def test_a_tsa_that_is_down_fails_in_seconds_before_anything_is_collected(tmp_path, repo, signer, tsa_proxy):
    workflow = workflow_from(tmp_path, STEPS.replace("wait: 1s", "wait: 5m", 1))
    tsa_proxy.down = True
    began = time.monotonic()
    with pytest.raises(TimestampError, match="no TSA gave a valid time-stamp token"):
        run_workflow(request_for(workflow, repo, signer, tsa_proxy, time_scale=1.0))
    assert time.monotonic() - began < 5  # not after the 5 minute wait
    assert head_of(repo) is None


def test_the_genesis_record_is_written_before_the_first_step_runs(tmp_path, repo, signer, tsa):
    workflow = workflow_from(tmp_path, STEPS)
    seen: list[list[str]] = []

    class Progress:
        def starting(self, step, seconds):
            seen.append([p["step"]["name"] for p in predicates(repo)])

        def __call__(self, report):
            pass

    run_workflow(request_for(workflow, repo, signer, tsa, progress=Progress(), overrides={"FLAG": "on"}))
    assert seen[0] == ["genesis"]


def test_a_tsa_going_down_mid_run_spools_the_result_and_a_rerun_records_it(tmp_path, repo, signer, tsa_proxy, trust_file):
    workflow = workflow_from(tmp_path, STEPS)

    def take_down(report):
        if report.name == "wait":
            tsa_proxy.down = True

    with pytest.raises(StorageError) as caught:
        run_workflow(request_for(workflow, repo, signer, tsa_proxy, progress=take_down))
    message = str(caught.value)
    assert "the result of step wait_for_signal was not recorded but is kept in" in message
    spool = Path(message.split("is kept in ", 1)[1].split(":", 1)[0])
    assert spool.exists() and json.loads(spool.read_text())["status"] == "ok"
    assert [p["step"]["name"] for p in predicates(repo)] == ["genesis", "wait"]

    tsa_proxy.down = False
    # No --signal this time: had the step run again it would fail ("was not given").
    outcome = run_workflow(request_for(workflow, repo, signer, tsa_proxy, signals=frozenset()))
    assert outcome.sealed and not spool.exists()
    step = {p["step"]["name"]: p for p in predicates(repo)}["wait_for_signal"]
    assert step["status"] == "ok" and step["result"]["outputs"]["signal"] == "go"
    assert step["context"]["spool"]["reason"].startswith("no TSA gave a valid time-stamp token")
    assert step["context"]["run_id"] == outcome.run_id
    verify_branch(repo, service="api", deployment="d-1", policy=load_trust_policy(trust_file))


# --------------------------------------------------------------------------- C: interrupts


def test_an_interruptible_clock_stops_sleeping_when_cancelled():
    clock = InterruptibleClock(type("C", (), {"now": lambda self: None})())
    threading.Timer(0.2, clock.cancel).start()
    began = time.monotonic()
    with pytest.raises(RunCancelled):
        clock.sleep(30)
    assert time.monotonic() - began < 2


CAPTURE = """\
name: long_capture
version: "1"
variables:
  METRICS_URL: http://127.0.0.1:1/metrics
collectors:
  svc:
    type: scrape
    url: ${workflow.METRICS_URL}
metrics:
  requests:
    collector: svc
    metric: http_requests_total
    unit: 1/s
workflow:
  pre_deployment:
    - capture_baseline:
        duration: 2m
        interval: 1s
        metrics: [requests]
  deployment:
    - mark_deployment_time
  post_deployment:
    - capture_impact:
        duration: 1s
        metrics: [same_as_baseline]
"""


def _interrupt_a_run(tmp_path, repo, keys, tsa, *extra: str) -> tuple[subprocess.CompletedProcess, float, str]:
    from afdp.demo.service import DemoService

    path = tmp_path / "long.yaml"
    path.write_text(CAPTURE)
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nname: p\nallowed_collector_types: [prometheus, scrape, sql, rest]\n")
    with DemoService(name="api", version="v1") as service:
        argv = [*AFDP, "run", str(path), "--service", "api", "--deployment", "d-1", "--repo", str(repo),
                "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--policy", str(policy),
                "--set", f"METRICS_URL={service.metrics_url}", *extra]
        env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
        env.pop("PREFECT_API_URL", None)
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 150
        while head_of(repo) is None and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.1)
        assert head_of(repo) is not None, child.communicate(timeout=30)
        genesis = str(head_of(repo).id)
        time.sleep(1.0)  # inside the baseline window
        began = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
        elapsed = time.monotonic() - began
    return subprocess.CompletedProcess(argv, child.returncode, out, err), elapsed, genesis


def test_ctrl_c_without_prefect_is_one_line_exit_130_at_once(tmp_path, repo, keys, tsa):
    done, elapsed, genesis = _interrupt_a_run(tmp_path, repo, keys, tsa, "--no-prefect")
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines() == ["afdp: interrupted; evidence already committed is unchanged"]
    assert elapsed < 3, f"took {elapsed:.1f}s"
    assert str(head_of(repo).id) == genesis  # the branch is at its last complete record
    pygit2.Repository(str(repo))  # still a sound repository


@pytest.mark.slow
def test_ctrl_c_in_prefect_mode_is_one_line_exit_130_at_once(tmp_path, repo, keys, tsa):
    done, elapsed, genesis = _interrupt_a_run(tmp_path, repo, keys, tsa, "--prefect")
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines() == ["afdp: interrupted; evidence already committed is unchanged"]
    assert elapsed < 4, f"took {elapsed:.1f}s"
    assert str(head_of(repo).id) == genesis


# --------------------------------------------------------------------------- D, E: start-up checks


SECRET = """\
name: secret
version: "1"
collectors:
  api:
    type: rest
    url: http://127.0.0.1:1/x
    headers:
      Authorization: Bearer ${env.GUARD_TEST_TOKEN}
metrics:
  value:
    collector: api
    select: data.value
    unit: count
workflow:
  pre_deployment:
    - capture_baseline:
        duration: 1s
        metrics: [value]
"""


def _cli_args(tmp_path, repo, keys, tsa, text: str, *extra: str) -> list[str]:
    path = tmp_path / "wf.yaml"
    path.write_text(text)
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nname: p\nallowed_collector_types: [prometheus, scrape, sql, rest]\n")
    return ["run", str(path), "--service", "api", "--deployment", "d-1", "--repo", str(repo), "--key",
            str(keys / "dev.key"), "--tsa", tsa.url, "--no-prefect", "--policy", str(policy), *extra]


def test_a_missing_env_secret_is_exit_2_before_anything_is_written(tmp_path, repo, keys, tsa, cli, monkeypatch):
    monkeypatch.delenv("GUARD_TEST_TOKEN", raising=False)
    done = cli(*_cli_args(tmp_path, repo, keys, tsa, SECRET))
    assert done.code == 2
    assert done.err.strip().splitlines() == [
        "afdp: error: workflow secret needs environment variable(s) GUARD_TEST_TOKEN "
        "(${env.GUARD_TEST_TOKEN}); set them before running"
    ]
    assert head_of(repo) is None


def test_start_up_checks_fail_before_prefect_is_even_imported(tmp_path, repo, keys, tsa):
    args = _cli_args(tmp_path, repo, keys, tsa, SECRET)
    args[args.index("--no-prefect")] = "--prefect"
    code = (
        "import sys\n"
        "from afdp.cli import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit as exc:\n    print(exc.code, 'prefect' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "GUARD_TEST_TOKEN"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert done.stdout.split() == ["2", "False"], done.stdout + done.stderr
    assert "GUARD_TEST_TOKEN" in done.stderr
    assert head_of(repo) is None


@pytest.mark.parametrize("setting", ["NOPE=1", "workflow.NOPE=1", "LIMIT=many"])
def test_unknown_or_mistyped_variables_are_refused_like_plan(tmp_path, repo, keys, tsa, cli, setting):
    done = cli(*_cli_args(tmp_path, repo, keys, tsa, STEPS, "--signal", "go", "--set", setting))
    assert done.code == 2, done.err
    assert len(done.err.strip().splitlines()) == 1
    assert ("no variable 'NOPE'" in done.err) or ("expected a number" in done.err)
    assert head_of(repo) is None


def test_overrides_are_recorded_in_the_evidence(tmp_path, repo, keys, tsa, cli):
    done = cli(*_cli_args(tmp_path, repo, keys, tsa, STEPS, "--signal", "go", "--time-scale", "100",
                          "--set", "FLAG=on", "--set", "workflow.LIMIT=5", "--set", "TAG=1.10"))
    assert done.code == 0, done.err
    found = predicates(repo)
    given = {"FLAG": "on", "LIMIT": 5, "TAG": "1.10"}  # typed by each variable's default
    assert found[0]["result"]["metadata"]["overrides"] == given
    assert all(p["context"]["overrides"] == given for p in found[1:-1])


# --------------------------------------------------------------------------- G: no history


def test_post_phase_never_files_a_live_sample_as_the_baseline(tmp_path, repo, signer, tsa, trust_file):
    from afdp.demo.service import DemoService

    workflow = workflow_from(tmp_path, CAPTURE.replace("2m", "2s"))
    with DemoService(name="api", version="v1") as service:
        outcome = run_workflow(
            request_for(workflow, repo, signer, tsa, phase="post", overrides={"METRICS_URL": service.metrics_url})
        )
    baseline = {s.name: s for s in outcome.steps}["capture_baseline"]
    assert baseline.status == "failed"
    assert baseline.error == "requests: scrape source keeps no history; run --phase pre before deploying"
    record = {p["step"]["name"]: p for p in predicates(repo)}["capture_baseline"]
    assert record["result"]["series"] == {} and "requests" not in record["result"]["outputs"]
    verify_branch(repo, service="api", deployment="d-1", policy=load_trust_policy(trust_file))


# --------------------------------------------------------------------------- H: output


def test_action_lines_say_what_happened():
    assert action_text("mark_successful", {"status": "not_configured", "kind": None, "detail": "x"}) == (
        "no action configured for mark_successful"
    )
    assert action_text("rollback", {"status": "ok", "kind": "webhook", "detail": "HTTP 200"}) == (
        "rollback action (webhook) ok: HTTP 200"
    )
    assert "None" not in action_text("alert", None)


def test_analysis_summary_leads_with_missing_data():
    metrics = ["a", "b", "c", "d"]
    assert analysis_summary(metrics, [], ["a", "b", "c"]) == (
        "inconclusive: 3 of 4 metric(s) could not be compared (a, b, c); no degradation in the rest"
    )
    assert analysis_summary(metrics, [], []) == "no degradation detected"
    assert analysis_summary(metrics, ["d"], ["a"]).startswith("degraded: d; inconclusive: 1 of 4")
    assert analysis_summary(metrics, [], metrics) == "inconclusive: no metric could be compared (a, b, c, d)"
    # never "no data" for what may have had samples (too few independent ones, a zero baseline)
    assert "no data" not in analysis_summary(metrics, ["d"], ["a"])


def test_json_errors_are_a_json_object_on_stdout(tmp_path, repo, keys, tsa, cli):
    done = cli(*_cli_args(tmp_path, repo, keys, tsa, STEPS, "--set", "NOPE=1", "--json"))
    assert done.code == 2
    answer = json.loads(done.out)
    assert answer["ok"] is False and answer["exit_code"] == 2 and "NOPE" in answer["error"]
    assert len(done.err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- F: packaged flow


def test_the_prefect_flow_ships_in_the_package_not_in_flows():
    """``afdp run --prefect`` must not need the source tree's flows/ folder (a wheel has none)."""
    code = (
        "import sys\n"
        "sys.modules['flows'] = None  # as in a wheel install: no flows package\n"
        "from afdp.pipeline.flow import evidence_flow, run_with_prefect\n"
        "import afdp.cli.run as r, afdp.demo.run as d, inspect\n"
        "assert 'flows.' not in inspect.getsource(r) and 'flows.' not in inspect.getsource(d)\n"
        "print(evidence_flow.name)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "afdp-evidence"


# --------------------------------------------------------------------------- I: retries inside the step


def test_collections_retry_inside_the_step_only_where_a_retry_can_help():
    from afdp.pipeline.runner import StepExecutor

    class Retrying(StepExecutor):
        retries = 2
        retry_delay_seconds = 0.01

    attempts = {"prom": 0, "live": 0}

    def flaky(name: str, history: bool):
        def call():
            attempts[name] += 1
            if attempts[name] < 2:
                raise ConnectionError(f"{name} attempt {attempts[name]} failed")
            return name

        call.history = history
        return call

    out, context = Retrying().collect(None, {"prom": flaky("prom", True), "live": flaky("live", False)})
    assert out["prom"] == "prom" and attempts["prom"] == 2  # a history source: retried
    assert str(out["live"]) == "live attempt 1 failed" and attempts["live"] == 1  # window gone: not retried
    assert context == {"collector_retries": {"prom": 2, "live": 0}}
