"""Usage errors are one line on stderr with exit code 2, like every other error.

click's own form is three lines (usage, a "Try ... --help" hint, the error); a CI log
or a wrapper script reading stderr gets one line here that names the command, says
what was wrong and where the help is.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _afdp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "afdp", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("verify", "--bogus"), "No such option '--bogus'"),
        (("verify", "--jobs", "x"), "'--jobs'"),
        (("record",), "Missing option '--repo'"),
        (("nosuch",), "No such command 'nosuch'"),
    ],
)
def test_usage_error_is_one_line_exit_2(args: tuple[str, ...], needle: str) -> None:
    done = _afdp(*args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert needle in lines[0]
    assert "--help" in lines[0]
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_usage_error_names_the_sub_command() -> None:
    done = _afdp("verify", "--bogus")
    assert done.stderr.startswith("afdp verify: error: ")


def test_usage_error_with_json_is_a_json_object_on_stdout() -> None:
    done = _afdp("verify", "--bogus", "--json")
    assert done.returncode == 2
    payload = json.loads(done.stdout)
    assert payload["ok"] is False and payload["exit_code"] == 2
    assert "--bogus" in payload["error"]
