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


def test_verify_loads_no_http_stack_and_no_engine(repo, keys, tsa, trust_file) -> None:
    # Verification is offline: it must not pay for (or depend on) HTTP, Prefect or Sigstore
    # signing when the branch has no keyless records.
    from afdp.evidence import records as rec
    from afdp.evidence.ledger import append_record
    from afdp.evidence.signing import load_signer

    draft = rec.RecordDraft(kind=rec.KIND_STEP, step="capture", result={"p99_ms": 12.5})
    append_record(repo, service="api", deployment="d1", draft=draft, signer=load_signer(str(keys / "dev.key")), tsa_urls=[tsa.url])
    code = (
        "import sys\n"
        "from afdp.cli import main\n"
        "try:\n"
        f"    rc = main(['verify', '--repo', {str(repo)!r}, '--service', 'api', '--deployment', 'd1', '--trust', {str(trust_file)!r}, '--allow-unsealed'])\n"
        "except SystemExit as exc:\n"
        "    rc = exc.code\n"
        "print('exit', rc or 0)\n"
        "print(sorted(m for m in ('httpx', 'httpcore', 'prefect', 'pyarrow', 'sqlalchemy') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert "exit 0" in done.stdout, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
