"""Human output of the ledger commands when piped, and text from evidence kept inert.

Piped output (CI logs, ``| grep``) is never hard-wrapped, and ``afdp log`` prints one
tab-separated line per record. Anything read from the evidence (paths, summaries) is
printed as itself: an attacker-chosen name such as ``[/bold]`` must not be taken as
rich markup (which would crash the command or restyle the verdict).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pygit2
from conftest import build_deployment

from afdp.evidence.names import branch_ref
from afdp.evidence.store import COMMITTER


def _afdp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "afdp", *args], capture_output=True, text=True, timeout=120
    )


def test_piped_log_is_one_plain_line_per_record(repo: Path, signer, tsa) -> None:
    build_deployment(repo, signer, tsa, steps=3)
    done = _afdp("log", "--repo", str(repo), "--service", "api", "--deployment", "d-42")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("api/d-42 ")
    rows = [line.split("\t") for line in lines[1:-1]]
    assert [row[0] for row in rows] == [str(n) for n in range(len(rows))]
    assert all(len(row) == 7 for row in rows), rows
    assert rows[0][1] == "genesis" and rows[-1][1] == "seal"
    assert all(len(row[5]) == 16 for row in rows)  # digests whole, never folded
    assert "┃" not in done.stdout and "│" not in done.stdout


def test_markup_in_evidence_is_printed_literally(repo: Path, signer, tsa, trust_file: Path) -> None:
    build_deployment(repo, signer, tsa, steps=2)
    git = pygit2.Repository(str(repo))
    ref = branch_ref("api", "d-42")
    head = git.get(git.references[ref].target)
    builder = git.TreeBuilder(head.tree)
    builder.insert("[red]planted", git.create_blob(b"planted"), pygit2.enums.FileMode.BLOB)
    who = pygit2.Signature(*COMMITTER)
    commit = git.create_commit(None, who, who, "planted\n", builder.write(), [head.id])
    git.references[ref].set_target(commit)
    done = _afdp(
        "verify", "--repo", str(repo), "--service", "api", "--deployment", "d-42",
        "--trust", str(trust_file),
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "[red]planted" in done.stdout
    assert done.stdout.startswith("FAILED api/d-42")
    # Not hard-wrapped at 80 columns: every failure is one line.
    assert all(line.startswith(("FAILED", "  ")) for line in done.stdout.splitlines())


def test_json_errors_are_a_json_object_on_stdout_for_every_command(tmp_path: Path) -> None:
    """With --json, a failing command prints a JSON object on stdout (one line on stderr too)."""
    import json

    missing = str(tmp_path / "nowhere")
    for args, code in (
        (("verify", "--repo", missing, "--service", "api", "--deployment", "d-1", "--trust", missing), 2),
        (("log", "--repo", missing, "--service", "api", "--deployment", "d-1"), 2),
        (("plan", missing + ".yaml"), 2),
        (("verify", "--no-such-option"), 2),
    ):
        done = _afdp(*args, "--json")
        assert done.returncode == code, (args, done.stderr)
        document = json.loads(done.stdout)
        assert document["ok"] is False and document["exit_code"] == code
        assert document["error"] and "Traceback" not in done.stderr
