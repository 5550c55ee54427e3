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

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# --- Which heavy packages each everyday command loads (issue 14: start-up) -----------------
#
# Module sets, not timings (machines are shared and noisy): the figures are printed by
# benchmarks/bench_startup.py. Each command runs through the real entry point, in a fresh
# interpreter, on real inputs; the child prints its exit code and which of HEAVY it loaded.

#: Packages none of --help, validate and verify may import unless listed as needed below.
HEAVY = (
    "prefect", "sigstore", "pyarrow", "sklearn", "mapie", "matplotlib", "numpy", "scipy", "pandas",
    "jinja2", "starlette", "uvicorn", "fastapi", "pydantic", "httpx", "httpcore", "sqlalchemy", "psycopg",
    "prometheus_client", "pyhanko", "jsonschema", "rich", "pygit2", "cryptography", "rfc3161_client",
    "securesystemslib", "asn1crypto", "yaml", "multiprocessing", "concurrent.futures", "importlib.abc",
)

#: What verifying a branch needs: Git, the signature and time-stamp libraries, the trust
#: policy's YAML.
VERIFY_NEEDS = {"pygit2", "cryptography", "rfc3161_client", "securesystemslib", "asn1crypto", "yaml"}

# securesystemslib's signer package imports boto3 (for its AWS KMS signer) wherever boto3
# is installed, e.g. beside moto on a developer's machine, and boto3 brings
# multiprocessing, concurrent.futures and importlib.abc. boto3 is no dependency of AFDP:
# the child runs as on a fresh install, where that import fails and securesystemslib
# carries on without its AWS signer.
_AS_ON_A_FRESH_INSTALL = (
    "import sys\n"
    "class _NotInstalled:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('boto3', 'botocore'):\n"
    "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
    "sys.meta_path.insert(0, _NotInstalled())\n"
)


def _loaded_by(
    argv: list[str], env: dict[str, str] | None = None, *, watched: tuple[str, ...] = HEAVY
) -> tuple[int, set[str], str]:
    """Run ``afdp argv`` in a fresh interpreter; return (exit code, ``watched`` modules
    loaded (HEAVY by default), stderr).

    The command's stdout, if any, is appended to the returned text after the stderr."""
    code = _AS_ON_A_FRESH_INSTALL + (
        "import json, sys\n"
        "from afdp.cli import main\n"
        "try:\n"
        f"    rc = main({argv!r})\n"
        "except SystemExit as exc:\n"
        "    rc = exc.code\n"
        "sys.stdout.flush()\n"
        f"print(json.dumps([rc or 0, [m for m in {watched!r} if m in sys.modules]]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    import json

    assert done.stdout.strip(), done.stderr
    *printed, last = done.stdout.strip().splitlines()
    rc, loaded = json.loads(last)
    return rc, set(loaded), done.stderr + "\n".join(printed)


def test_help_loads_only_click() -> None:
    rc, loaded, err = _loaded_by(["--help"])
    assert rc == 0, err
    assert loaded == set()


#: AFDP's own modules that do a command's work: ``--help`` has no reason to load them.
AFDP_WORK = (
    "afdp.evidence.ledger", "afdp.evidence.store", "afdp.evidence.timestamp", "afdp.evidence.trust",
    "afdp.evidence.signing", "afdp.evidence.records", "afdp.verify.verifier", "afdp.verify.checks",
    "afdp.workflow.model", "afdp.workflow.validation", "afdp.pipeline", "afdp.audit", "afdp.learn",
    "afdp.service", "afdp.demo",
)


def _commands() -> list[str]:
    from afdp.cli import _COMMANDS

    return list(_COMMANDS)


@pytest.mark.parametrize("command", ["verify", *(c for c in _commands() if c != "verify")])
def test_help_of_every_command_loads_no_heavy_module(command: str) -> None:
    # `afdp verify --help` (and every other command's --help) imports the command's module
    # to read its options, and nothing that does the work: no Git, crypto, schema, YAML,
    # rich or engine library, and none of AFDP's own working modules.
    rc, loaded, err = _loaded_by([command, "--help"], watched=HEAVY + AFDP_WORK)
    assert rc == 0, err
    assert f"afdp {command}" in err, err  # the usage line: the help really printed
    assert loaded == set(), f"afdp {command} --help loaded {sorted(loaded)}"


def test_the_module_check_sees_a_loaded_module() -> None:
    # The negative case of the check above: a command that does its work is seen loading
    # the working modules (an empty set above is not the check failing to look).
    example = ROOT / "afdp" / "workflow" / "examples" / "api_deployment_impact.yaml"
    rc, loaded, err = _loaded_by(["validate", str(example)], watched=HEAVY + AFDP_WORK)
    assert rc == 0, err
    assert {"yaml", "afdp.workflow.model", "afdp.workflow.validation"} <= loaded


def test_validate_loads_yaml_but_no_schema_library_for_a_valid_workflow() -> None:
    # The Rust schema validator says "valid"; the Python one (jsonschema, with referencing,
    # attrs and rpds) is imported only to explain a workflow that is not.
    example = ROOT / "afdp" / "workflow" / "examples" / "api_deployment_impact.yaml"
    rc, loaded, err = _loaded_by(["validate", str(example)])
    assert rc == 0, err
    assert loaded == {"yaml"}


def test_validate_of_an_invalid_workflow_still_explains_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    source = (ROOT / "afdp" / "workflow" / "examples" / "api_deployment_impact.yaml").read_text()
    bad.write_text(source.replace('version: "1.0"', "version: [1, 0]", 1))
    assert source != bad.read_text()
    rc, loaded, err = _loaded_by(["validate", str(bad)])
    assert rc == 1
    assert "version" in err and "Traceback" not in err, err
    assert "jsonschema" in loaded  # the reference validator gave the message


@pytest.fixture()
def sealed_branch(repo: Path, keys: Path, tsa, trust_file: Path) -> list[str]:
    from afdp.evidence.signing import load_signer
    from tests.conftest import build_deployment

    build_deployment(repo, load_signer(str(keys / "dev.key")), tsa, service="api", deployment="d1")
    return ["verify", "--repo", str(repo), "--service", "api", "--deployment", "d1", "--trust", str(trust_file)]


def test_verify_loads_what_verification_needs_and_nothing_more(sealed_branch: list[str]) -> None:
    # The verdict goes to a pipe here, in words rich would print as themselves: no rich.
    rc, loaded, err = _loaded_by(sealed_branch)
    assert rc == 0, err
    assert loaded == VERIFY_NEEDS
    assert err.strip().splitlines()[-1].startswith("VERIFIED api/d1: "), err


def test_verify_leaves_the_verdict_to_rich_where_rich_decides(sealed_branch: list[str]) -> None:
    # FORCE_COLOR makes rich colour a pipe: rich prints the verdict, in colour.
    rc, loaded, err = _loaded_by(sealed_branch, {"FORCE_COLOR": "1"})
    assert rc == 0, err
    assert loaded == VERIFY_NEEDS | {"rich"}
    assert "\x1b[" in err and "VERIFIED" in err, err


def test_verify_json_does_not_load_rich(sealed_branch: list[str]) -> None:
    rc, loaded, err = _loaded_by([*sealed_branch, "--json"])
    assert rc == 0, err
    assert loaded == VERIFY_NEEDS


def test_a_missing_dependency_is_still_one_clear_line(sealed_branch: list[str], tmp_path: Path) -> None:
    # Lazy imports must not hide a broken installation: with rich unimportable, human
    # output that needs rich (here: FORCE_COLOR asks for colours on a pipe) fails with one
    # line naming it (exit 3, no traceback), while --json and a plain verdict on a pipe,
    # which never need rich, still verify.
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class _NoRich:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'rich' or name.startswith('rich.'):\n"
        "            raise ModuleNotFoundError(\"No module named 'rich'\", name='rich')\n"
        "        return None\n"
        "sys.meta_path.insert(0, _NoRich())\n"
    )
    env = {"PYTHONPATH": os.pathsep.join([str(blocker), str(ROOT)])}
    rc, loaded, err = _loaded_by(sealed_branch, {**env, "FORCE_COLOR": "1"})
    assert rc == 3
    lines = err.strip().splitlines()  # nothing on stdout either
    assert len(lines) == 1 and "No module named 'rich'" in lines[0], err
    for argv in ([*sealed_branch, "--json"], sealed_branch):
        rc, loaded, err = _loaded_by(argv, env)
        assert rc == 0, err
        assert "rich" not in loaded


# --- The verdict printed to a pipe without rich: the same bytes as rich prints ------------

_PIECES = [*"ab Z09.-_/,;()'\"~#@", "[", "]", "\\", ":", "[/]", "[bold]", ":lock:", ":x", "\t", "\r", "\x1b", "\x07", "é", "🔒"]
_VALUE = st.lists(st.sampled_from(_PIECES), max_size=8).map("".join)


@settings(max_examples=300, deadline=None)
@given(where=_VALUE, check=_VALUE, reason=_VALUE, indent=st.sampled_from(["", "  "]))
def test_a_line_printed_without_rich_is_the_line_rich_prints(where: str, check: str, reason: str, indent: str) -> None:
    # Every shape of verdict line (own tags around escaped evidence text), printed on a
    # stream that is no terminal: the direct path, where it is taken, writes exactly what
    # rich's console writes there (tags dropped, no emoji codes, no control characters).
    import contextlib
    import io

    from rich.console import Console

    from afdp.cli import output

    markup = f"{indent}[bold red]FAILED[/] {output.escape(where)}: [bold]{output.escape(check)}[/]: {output.escape(reason)}"
    reference = io.StringIO()
    try:
        Console(file=reference, highlight=False, soft_wrap=True).print(markup)
    except Exception as exc:  # noqa: BLE001 - then the direct path must not print either
        expected: str | type[BaseException] = type(exc)
    else:
        expected = reference.getvalue()
    printed = io.StringIO()
    output._stdout_console.cache_clear()
    try:
        with contextlib.redirect_stdout(printed):
            output._say(markup)
    except Exception as exc:  # noqa: BLE001
        assert expected is type(exc)
    else:
        assert printed.getvalue() == expected, (markup, printed.getvalue(), expected)
    finally:
        output._stdout_console.cache_clear()


def test_the_direct_path_is_taken_only_off_a_terminal_and_without_force_color(monkeypatch: pytest.MonkeyPatch) -> None:
    from afdp.cli import output

    class Stream:
        def __init__(self, tty: bool) -> None:
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    monkeypatch.setattr(sys, "stdout", Stream(False))
    assert output._plain_stream()
    monkeypatch.setattr(sys, "stdout", Stream(True))
    assert not output._plain_stream()  # a terminal: rich, with colours
    monkeypatch.setattr(sys, "stdout", Stream(False))
    for name, value in (("FORCE_COLOR", "1"), ("FORCE_COLOR", ""), ("TTY_COMPATIBLE", "1")):
        monkeypatch.setenv(name, value)
        assert not output._plain_stream(), name  # rich decides what these mean
        monkeypatch.delenv(name)


def test_piped_log_and_verify_all_load_no_rich(sealed_branch: list[str]) -> None:
    # Off a terminal the story and the --all table are plain rows, decided without rich.
    repo = sealed_branch[sealed_branch.index("--repo") + 1]
    trust = sealed_branch[sealed_branch.index("--trust") + 1]
    rc, loaded, err = _loaded_by(["log", "--repo", repo, "--service", "api", "--deployment", "d1"])
    assert rc == 0, err
    assert "rich" not in loaded and "\tgenesis\t" in err, err
    rc, loaded, err = _loaded_by(["verify", "--repo", repo, "--all", "--trust", trust, "--jobs", "1"])
    assert rc == 0, err
    assert "rich" not in loaded and "VERIFIED api/d1: " in err, err
    rc, loaded, err = _loaded_by(["log", "--repo", repo, "--service", "api", "--deployment", "d1"], {"FORCE_COLOR": "1"})
    assert rc == 0, err
    assert "rich" in loaded  # rich decides what FORCE_COLOR means: a table
