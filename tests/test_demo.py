"""``afdp demo --fast`` as a user runs it: a subprocess, no configuration, no network."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time

import pytest

AFDP = [sys.executable, "-m", "afdp"]


@pytest.mark.slow
def test_demo_fast_ends_with_a_verify_command_that_passes(tmp_path):
    out = tmp_path / "demo"
    began = time.monotonic()
    done = subprocess.run([*AFDP, "demo", "--fast", "--out", str(out)], capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - began
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    # About 20 s alone, 15 s of it the scaled waits; the slow tests run 6 at a time on 2
    # cores, which stretches the rest. Unscaled (--fast ignored), the waits alone are
    # 2m30s: 100 s still tells the two apart.
    assert elapsed < 100, f"demo --fast took {elapsed:.1f}s"
    lines = done.stdout.rstrip("\n").splitlines()
    assert "decision: rollback" in done.stdout
    assert "service now runs v1" in done.stdout  # the rollback webhook really rolled it back
    last = lines[-1]
    argv = shlex.split(last)
    assert argv[:2] == ["afdp", "verify"]
    assert str(out / "evidence") in argv and str(out / "trust.yaml") in argv
    verify = subprocess.run([*AFDP, *argv[1:], "--json"], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    report = json.loads(verify.stdout)["branches"][0]
    assert report["state"] == "verified"
    steps = [r["step"] for r in report["records"]]
    assert steps[0] == "genesis" and steps[-1] == "seal"
    assert {"capture_baseline", "capture_impact", "analyze_differences", "decisions", "generate_training_record"} <= set(steps)


def test_demo_refuses_a_folder_that_is_not_a_demo(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    done = subprocess.run([*AFDP, "demo", "--fast", "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "not an earlier demo folder" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]
