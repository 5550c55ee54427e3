"""Hostile history files for ``afdp import``: refused whole, before anything is written.

``afdp import`` promises that a bad entry is one line naming the file, the entry and
the field, exit 2, and nothing recorded, and that what it signs about the file (its
digest) is what it imported. Each file here is what an attacker or a broken export
could hand it; the real CLI runs on a real repository; nothing is mocked.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading

import pytest
from test_history_import import WORKFLOW, _import, _refs

GOOD = "2026-01-01T00:00:00Z"

BAD_CSV = [
    # the first row is good and used to be imported (signed, committed) before the second
    # stopped the run with a message naming no file or row
    (f"deployed_at,id\n{GOOD},ok1\n2026-01-02T00:00:00Z,a..b\n", "row 3, id", "'..', a trailing '.' or '.lock'"),
    (f"deployed_at,id\n{GOOD},ok1\n2026-01-02T00:00:00Z,x.lock\n", "row 3, id", "'.lock' is not allowed"),
    # year 0 once in UTC: was OverflowError, "internal error" (exit 3)
    ("deployed_at,id\n0001-01-01T00:00:00+01:00,old\n", "row 2, deployed_at", "out of range in UTC"),
    # over csv's field limit: was "internal error: Error: field larger than field limit"
    (f'deployed_at,id,commit_message\n{GOOD},big,"{"x" * 200_000}"\n', "line 2", "field larger than field limit"),
    # a quoted line break inside a changed file's path
    (f'deployed_at,id,changed_files\n{GOOD},nl,"a.py;b.py\nAFDP-Kind: seal"\n', "row 3, changed_files", "line break"),
]

BAD_GITHUB = [
    # two values for one key: the file's reader and AFDP would import different commits
    (f'[{{"id": 5, "created_at": "{GOOD}", "sha": "aaaaaaa", "sha": "bbbbbbb"}}]', "", "names 'sha' twice"),
    # nested beyond Python's recursion limit: was "internal error: RecursionError"
    ("[" * 100_000 + "]" * 100_000, "", "nested too deeply"),
    # changed files that are not paths were written as their Python repr ("None", "{'a': 1}")
    (json.dumps([{"id": 6, "created_at": GOOD, "payload": {"changed_files": [None, 5, {"a": 1}]}}]),
     "entry 0 (id 6), payload.changed_files", "a list of file paths"),
]


def _setup(tmp_path, cli):
    repo = tmp_path / "evidence"
    assert cli("init", str(repo)).code == 0
    workflow = tmp_path / "workflow.yaml"
    workflow.write_text(WORKFLOW)
    return repo, workflow


@pytest.mark.parametrize(("text", "where", "problem"), BAD_CSV, ids=["dotdot", "lock", "year0", "huge-field", "newline"])
def test_bad_csv_is_refused_whole_and_records_nothing(tmp_path, cli, keys, tsa, text, where, problem):
    _assert_refused_whole(tmp_path, cli, keys, tsa, "--csv", "bad.csv", text, where, problem)


@pytest.mark.parametrize(("text", "where", "problem"), BAD_GITHUB, ids=["duplicate-key", "deep", "files-not-text"])
def test_bad_github_json_is_refused_and_records_nothing(tmp_path, cli, keys, tsa, text, where, problem):
    _assert_refused_whole(tmp_path, cli, keys, tsa, "--github-deployments", "deployments.json", text, where, problem)


def _assert_refused_whole(tmp_path, cli, keys, tsa, flag, name, text, where, problem) -> None:
    """The history file ``text`` given as ``flag`` is one line naming the file, where and
    what, exit 2, and nothing is written (no Prometheus answers: nothing may be read)."""
    repo, workflow = _setup(tmp_path, cli)
    bad = tmp_path / name
    bad.write_text(text)
    result = _import(cli, repo, keys, tsa, "http://127.0.0.1:1", workflow, flag, str(bad))
    line = result.err.strip()
    assert result.code == 2, (result.out, result.err)
    assert len(line.splitlines()) == 1 and str(bad) in line and where in line and problem in line, line
    assert _refs(repo) == {}


def test_history_from_a_pipe_is_read_once_and_its_digest_is_of_what_was_read(tmp_path, cli, keys, tsa):
    """``--csv <(gh api ...)``: the file was read twice, the second time for the digest
    the import records: from a pipe that second read blocked forever (or, had a writer
    come back, digested other bytes than those imported)."""
    repo, workflow = _setup(tmp_path, cli)
    text = f"deployed_at,id\n{GOOD},p1\n"
    pipe = tmp_path / "history.csv"
    os.mkfifo(pipe)

    def feed() -> None:
        with open(pipe, "w") as handle:  # one writer, once, as a shell's <(...) does
            handle.write(text)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    args = ["import", "--repo", str(repo), "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--csv", str(pipe),
            "--service", "api", "--workflow", str(workflow), "--prometheus", "http://127.0.0.1:1",
            "--set", "HOOK_PORT=9", "--dry-run", "--json"]  # fmt: skip
    try:
        result = subprocess.run(
            [sys.executable, "-c", "import sys; from afdp.cli import main; sys.exit(main())", *args],
            capture_output=True, text=True, timeout=60, check=False,
        )
    except subprocess.TimeoutExpired:  # (subprocess.run has killed the blocked child)
        pytest.fail("afdp import blocked reading its history file a second time")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["file_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert [d["status"] for d in document["deployments"]] == ["would_import"]
