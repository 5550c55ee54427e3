"""Issue 12, the rest: the demo service from the command line, and the guide's Example 3
run against it exactly as docs/workflows.md says.

``python -m afdp.demo.service`` takes ``--flag-file``/``--feature-effect`` (the A/B
experiment) and ``--deploy-to``/``--deploy-after`` (a deployment it announces with its
time). The slow test reads the commands of docs/workflows.md's "The guide's examples
against the demo service" (the block marked ``example3-demo``) and runs them: the demo
service as a real subprocess (only its port changed to a free one), ``afdp run`` of the
workflow ``afdp init --examples`` shipped (``workflows/guide/feature_flag_analysis.yaml``,
the guide's bytes) through the CLI entry point, a real Prometheus scraping the service,
the embedded TSA. The harmful feature must be found.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from infra import free_port, wait_for_series

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "workflows.md"


def _service(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "afdp.demo.service", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def _line(process: subprocess.Popen[str], contains: str, timeout: float = 20.0) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if contains in line:
            return line.strip()
        if not line and process.poll() is not None:
            break
    raise AssertionError(f"no line with {contains!r} (exit {process.poll()})")


def _stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=15)


def test_demo_service_cli_deploys_and_simulates_the_experiment(tmp_path):
    import httpx

    flag_file = tmp_path / "flags.flagd.json"
    port = free_port()
    process = _service(
        "--port", str(port), "--name", "shop", "--flag-file", str(flag_file), "--feature-effect", "harmful",
        "--deploy-to", "v2", "--deploy-after", "0.5",
    )  # fmt: skip
    try:
        assert _line(process, "serving") == f"shop v1 serving http://127.0.0.1:{port}/metrics (Ctrl-C to stop)"
        assert f"A/B experiment on flag feature_flag_analysis from {flag_file}" in _line(process, "A/B")
        deployed = _line(process, "deployed")
        assert re.fullmatch(r"shop deployed v2 at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", deployed), deployed
        page = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'demo_service_version_info{service="shop",version="v2"} 1.0' in page
        # No flag in the file yet: no user has a group, so no A/B series.
        assert "ab_sessions_total{" not in page
        flag_file.write_text(json.dumps({"flags": {"feature_flag_analysis": {
            "state": "ENABLED", "variants": {"control_group": False, "treatment_group": True},
            "defaultVariant": "control_group",
            "targeting": {"fractional": [{"var": "targetingKey"}, ["control_group", 50], ["treatment_group", 50]]},
        }}}))  # fmt: skip
        deadline = time.monotonic() + 10
        while 'ab_sessions_total{group="treatment_group",service="shop"}' not in page and time.monotonic() < deadline:
            time.sleep(0.2)
            page = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'ab_sessions_total{group="control_group",service="shop"}' in page
        assert 'ab_sessions_total{group="treatment_group",service="shop"}' in page
    finally:
        assert _stop(process) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--deploy-after", "3"], "--deploy-after needs --deploy-to"),
        (["--feature-effect", "evil"], "invalid choice: 'evil'"),
        (["--flag-file", "f.json", "--sessions-per-second", "0"], "sessions_per_second must be positive"),
    ],
)
def test_demo_service_cli_refuses_bad_options_in_one_line(args, message):
    process = _service("--port", "0", *args)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert message in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("python -m afdp.demo.service: error:")


def _documented_commands() -> list[str]:
    """The shell commands of the block docs/workflows.md marks ``example3-demo``."""
    text = DOCS.read_text(encoding="utf-8")
    block = text.split("<!-- example3-demo", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [" ".join(part.strip() for part in command.split("\\\n")) for command in re.split(r"\n(?!\s)", block.strip())]


def test_the_docs_name_the_shipped_example3_and_the_service_options():
    commands = _documented_commands()
    assert commands[0].startswith("python -m afdp.demo.service ") and commands[0].endswith(" &")
    assert commands[1].startswith("afdp run evidence/workflows/guide/feature_flag_analysis.yaml ")
    shipped = ROOT / "afdp" / "workflow" / "examples" / "guide" / "feature_flag_analysis.yaml"
    assert shipped.read_bytes() == (ROOT / "tests" / "seeds" / "example3_feature_flag.yaml").read_bytes()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus is not installed")
def test_example3_runs_against_the_demo_service_as_the_docs_say(tmp_path, cli, prometheus_server, keys, tsa, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("init", "evidence", "--examples").code == 0
    assert (tmp_path / "evidence" / "workflows" / "guide" / "feature_flag_analysis.yaml").exists()
    shutil.copy(keys / "dev.key", tmp_path / "dev.key")  # as `afdp keys generate dev.key` writes it
    port = free_port()
    service_line, run_line = _documented_commands()
    service_line = service_line.replace("--port 8001", f"--port {port}")
    assert f"--port {port}" in service_line
    prometheus = prometheus_server([f"http://127.0.0.1:{port}/metrics"])
    variables = {"PWD": str(tmp_path), "TSA": tsa.url, "PROMETHEUS_URL": prometheus}

    def expand(line: str) -> list[str]:
        return [re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], word) for word in shlex.split(line)]

    argv = expand(service_line.removesuffix("&").strip())
    assert argv[:3] == ["python", "-m", "afdp.demo.service"]
    process = _service(*argv[3:])
    try:
        _line(process, "serving")
        wait_for_series(prometheus, 'http_requests_total{service="shop"}')
        run = expand(run_line)
        assert run[0] == "afdp"
        result = cli(*run[1:])
    finally:
        assert _stop(process) == 0
    assert result.code == 0, result.err
    outcome = json.loads(result.out)
    assert all(s["status"] == "ok" for s in outcome["steps"]), [(s["name"], s["status"], s.get("error")) for s in outcome["steps"]]
    metrics = outcome["analysis"]["metrics"]
    assert metrics["conversion_rate"]["degraded"] is True, metrics["conversion_rate"]
    assert outcome["decision"]["action"] == "alert" and outcome["decision"]["label"] == "degraded"
    document = json.loads((tmp_path / "flags.flagd.json").read_text())
    assert document["flags"]["feature_flag_analysis"]["variants"] == {"control_group": False, "treatment_group": True}
