"""The CLI starts in a bare interpreter: nothing it needs may come from site hooks.

A fresh virtualenv imports far less at start-up than a developer's environment (where
``.pth`` files of other packages import ``importlib.util`` and more); a CLI that leaned
on such an import crashed on every command, ``--help`` included, on a fresh machine.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_help_runs_in_an_interpreter_without_site_imports() -> None:
    # -S: no site module, so no .pth file imports anything; the path is given explicitly.
    path = os.pathsep.join([str(ROOT), *site.getsitepackages()])
    code = (
        "import sys\n"
        "assert 'importlib.util' not in sys.modules, 'the test would not reproduce'\n"
        "from afdp.cli import main\n"
        "main(['--help'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-S", "-c", code],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Commands:" in done.stdout
    assert "verify" in done.stdout
