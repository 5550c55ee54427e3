"""Prefect failing around a flow run is an infrastructure failure: exit 3, one line.

Real ``afdp run`` processes with Prefect's ephemeral mode (no PREFECT_API_URL). Prefect's
own setting ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=0`` makes its ephemeral
API server "not start in time" deterministically, the failure a slow CI machine meets.
Exit 1 would read as "rollback" to a CI step, so it must never be the code for this.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKFLOW = """\
name: engine_errors
version: "1"
collectors:
  svc: {type: scrape, url: "http://127.0.0.1:9/metrics"}
metrics:
  latency: {collector: svc, metric: http_request_duration_seconds, unit: s}
workflow:
  pre_deployment:
    - capture_baseline: {duration: 1s, interval: 500ms, metrics: [latency]}
  deployment:
    - mark_deployment_time
  post_deployment:
    - capture_impact: {duration: 1s, interval: 500ms, metrics: [same_as_baseline]}
    - analyze_differences: {method: mann_whitney}
"""


def _run(tmp_path: Path, keys: Path, tsa, **env: str) -> subprocess.CompletedProcess[str]:
    workflow = tmp_path / "wf.yaml"
    workflow.write_text(WORKFLOW)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    environment.update(PREFECT_HOME=str(tmp_path / "prefect-home"), **env)
    command = [
        sys.executable, "-c", "import sys; from afdp.cli import main; sys.exit(main())", "run", str(workflow), "--service", "shop",
        "--deployment", "e-1", "--commit", "abc1234", "--deployer", "alice",
        "--repo", str(tmp_path / "evidence"), "--key", str(keys / "dev.key"), "--tsa", tsa.url,
        "--prefect",
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment, check=False)


@pytest.mark.slow
def test_ephemeral_server_that_does_not_start_is_exit_3_with_what_to_do(tmp_path, keys, tsa):
    done = _run(tmp_path, keys, tsa, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="0")
    assert done.returncode == 3, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("afdp: error: Prefect's ephemeral API server")
    assert "did not start in time" in last
    for fix in ("PREFECT_API_URL", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "--no-prefect"):
        assert fix in last


def test_invalid_prefect_setting_is_a_usage_error_not_a_traceback(tmp_path, keys, tsa):
    done = _run(tmp_path, keys, tsa, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="soon")
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("afdp: error: Prefect's settings are invalid")
    assert "--no-prefect" in last
