"""A writer killed while it updates a branch never blocks that branch (issue 9, item 13).

Real processes and real locks: a child process takes AFDP's writer lock and libgit2's
ref lock (``refs/heads/afdp/<service>/<deployment>.lock``) on a real repository and is
killed with SIGKILL in the middle; a live child holds them and lets go; a plain file
stands for a ``git`` process's lock. `afdp record` runs through the CLI entry point.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import add_step

from afdp.evidence.names import branch_ref

HOLDER = """
import sys, time
from afdp.evidence.store import EvidenceStore
store = EvidenceStore(sys.argv[1])
ref, hold = sys.argv[2], float(sys.argv[3])
with store._writer_lock(ref, time.monotonic() + 5):
    with store.repo.transaction() as txn:
        txn.lock_ref(ref)
        print("locked", flush=True)
        time.sleep(hold)
        print("releasing", time.monotonic(), flush=True)  # the system-wide monotonic clock
"""


def _hold(repo: Path, seconds: float) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(repo), branch_ref("api", "d-42"), str(seconds)],
        stdout=subprocess.PIPE, text=True,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "locked"
    return child


def _record(cli, repo: Path, keys: Path, tsa, tmp_path: Path, step: str):
    result = tmp_path / f"{step}.json"
    result.write_text(json.dumps({"n": 1}))
    return cli(
        "record", "--repo", str(repo), "--service", "api", "--deployment", "d-42", "--step", step,
        "--result", str(result), "--key", str(keys / "dev.key"), "--tsa", tsa.url,
    )


def _ref_lock(repo: Path) -> Path:
    return repo / ".git" / f"{branch_ref('api', 'd-42')}.lock"


def test_a_writer_killed_mid_update_leaves_no_lasting_lock(cli, repo, signer, keys, tsa, trust_file, tmp_path):
    add_step(repo, signer, tsa, "capture_baseline", {"n": 0})
    child = _hold(repo, 60)
    assert _ref_lock(repo).exists()
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert _ref_lock(repo).exists()  # what a kill leaves behind
    recorded = _record(cli, repo, keys, tsa, tmp_path, "after_the_kill")
    assert recorded.code == 0, recorded.err
    assert "removed stale lock" in recorded.err and "died" in recorded.err
    assert not _ref_lock(repo).exists()
    verified = cli("verify", "--repo", str(repo), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file), "--allow-unsealed")
    assert verified.code == 0, verified.out


def test_a_live_writers_lock_is_waited_for_not_broken(cli, repo, signer, keys, tsa, tmp_path):
    add_step(repo, signer, tsa, "capture_baseline", {"n": 0})
    child = _hold(repo, 1.5)
    recorded = _record(cli, repo, keys, tsa, tmp_path, "after_the_wait")
    finished = time.monotonic()
    out, _ = child.communicate(timeout=10)
    assert recorded.code == 0, recorded.err
    assert "removed stale lock" not in recorded.err
    # It waited for the live holder: it finished after the holder began to let go. (Timed
    # from this side, as "took at least 1 s", a loaded machine's delay between the
    # holder's "locked" and the record's start ate into the 1.5 s hold.)
    released = float(out.split()[-1])
    assert finished > released, (finished, released)


def test_a_lock_no_afdp_writer_left_is_never_broken_and_the_fix_is_named(cli, repo, signer, keys, tsa, tmp_path):
    add_step(repo, signer, tsa, "capture_baseline", {"n": 0})
    lock = _ref_lock(repo)
    lock.write_text("0" * 40 + "\n")  # as a git process updating the ref holds it
    recorded = _record(cli, repo, keys, tsa, tmp_path, "blocked")
    assert recorded.code == 3
    assert f"rm {lock}" in recorded.err and "not AFDP" in recorded.err
    assert lock.exists()  # never broken: it cannot be proven stale
    lock.unlink()  # the named recovery
    assert _record(cli, repo, keys, tsa, tmp_path, "recovered").code == 0
