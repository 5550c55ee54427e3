"""Every bad input of issue 3, through the real CLI: one clear, located error and exit 1
(2 for a usage error), never a traceback, never a hang."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from afdp.cli import main

HERE = Path(__file__).parent / "workflow"
LOCATED = re.compile(r"^(?P<file>[^\s:]+):(?P<line>\d+):(?P<column>\d+): ")

VALID = """\
name: bad_input
workflow:
  - capture_baseline: [error_rate]
  - mark_deployment_time
  - capture_impact: {duration: 1m}
  - analyze_differences
"""


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``afdp ARGS`` in-process; return (exit code, stdout, stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def validate_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | bytes
) -> tuple[int, list[str], str]:
    path = tmp_path / "w.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    code, out, err = run_cli(capsys, "validate", str(path))
    # notes and warnings are located too, but they are not problems
    findings = [
        line for line in out.splitlines()
        if LOCATED.match(line) and not re.search(r": (note|warning): ", line)
    ]
    return code, findings, out + err


def assert_one_located(code: int, findings: list[str], output: str, expected: str) -> str:
    assert code == 1, output
    assert "Traceback" not in output
    assert len(findings) == 1, output
    assert expected in findings[0], output
    match = LOCATED.match(findings[0])
    assert match is not None and int(match["line"]) >= 1 and int(match["column"]) >= 1
    return findings[0]


def test_the_valid_base_document_is_valid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, findings, output = validate_text(tmp_path, capsys, VALID)
    assert code == 0 and not findings, output
    assert "valid" in output


@pytest.mark.parametrize(
    ("text", "expected", "line"),
    [
        pytest.param("name: x\nworkflow: [\n", "not valid YAML", 3, id="not-yaml"),
        pytest.param("name: [unclosed\n  - :\n", "not valid YAML", None, id="not-yaml-2"),
        pytest.param(
            VALID.replace("name: bad_input\n", "name: bad_input\nname: again\n"),
            "duplicate key 'name'",
            2,
            id="duplicate-keys",
        ),
        pytest.param(
            VALID.replace("  - mark_deployment_time\n", "\t- mark_deployment_time\n"),
            "tab character in indentation",
            4,
            id="tabs",
        ),
        pytest.param(
            VALID + "  - frobnicate_metrics\n",
            "unknown step type 'frobnicate_metrics'",
            7,
            id="unknown-step",
        ),
        pytest.param(
            VALID + "  - analyse_differences\n",
            "did you mean 'analyze_differences'?",
            7,
            id="unknown-step-suggestion",
        ),
        pytest.param(
            VALID + "  - wait: 1m\n    when: __import__('os').system('id')\n",
            "function calls are not allowed",
            8,
            id="when-calls-a-function",
        ),
        pytest.param(
            VALID + "  - wait: 1m\n    when: deployment.service.__class__ == 'x'\n",
            "__class__",
            8,
            id="when-dunder",
        ),
        pytest.param(
            VALID + "variables:\n  A: ${workflow.B}\n  B: x-${workflow.A}\n",
            "recursive interpolation: workflow.A -> workflow.B -> workflow.A",
            7,
            id="recursive-interpolation",
        ),
        pytest.param(
            VALID + "variables:\n  A: ${workflow.A}\n",
            "recursive interpolation",
            7,
            id="self-interpolation",
        ),
        pytest.param(
            VALID + "  - wait: -5_minutes\n", "negative duration '-5_minutes'", 7, id="negative"
        ),
        pytest.param(VALID + "  - wait: forever\n", "'forever' is not a duration", 7, id="forever"),
        pytest.param(VALID + "  - wait: 0s\n", "is zero", 7, id="zero"),
        pytest.param(VALID + "  - wait: 5\n", "has no unit", 7, id="no-unit"),
        pytest.param("!!python/object:os.system\nname: x\n", "tag", 1, id="python-tag"),
        pytest.param(
            "name: a\n---\nname: b\n", "expected one YAML document", 2, id="two-documents"
        ),
        pytest.param(b"name: caf\xe9\n", "not UTF-8", 1, id="latin-1"),
        pytest.param("name: *nothing\n", "refers to no anchor", 1, id="undefined-alias"),
        pytest.param("a: &a [*a]\n", "recursive alias", 1, id="recursive-alias"),
        pytest.param(
            VALID.replace("[error_rate]", "[eror_rate]"),
            "did you mean 'error_rate'?",
            3,
            id="undefined-metric",
        ),
    ],
)
def test_bad_input_is_one_located_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: str | bytes,
    expected: str,
    line: int | None,
) -> None:
    code, findings, output = validate_text(tmp_path, capsys, text)
    finding = assert_one_located(code, findings, output, expected)
    assert finding.startswith(str(tmp_path / "w.yaml"))
    if line is not None:
        match = LOCATED.match(finding)
        assert match is not None and int(match["line"]) == line, finding


def test_billion_laughs_is_refused_quickly(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.perf_counter()
    code, out, err = run_cli(capsys, "validate", str(HERE / "billion_laughs.yaml"))
    assert time.perf_counter() - started < 5
    # notes and warnings are located too, but they are not problems
    findings = [
        line for line in out.splitlines()
        if LOCATED.match(line) and not re.search(r": (note|warning): ", line)
    ]
    assert_one_located(code, findings, out + err, "aliases expand to more than")


def test_ten_megabytes_is_refused_before_parsing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(VALID + "# " + "x" * (10 * 1024 * 1024) + "\n", encoding="utf-8")
    started = time.perf_counter()
    code, out, err = run_cli(capsys, "validate", str(path))
    assert time.perf_counter() - started < 2
    assert code == 1 and "Traceback" not in out + err
    assert "10.5 MB; workflow files are limited to 1 MiB" in out
    assert out.count("limited to 1 MiB") == 1


def test_deep_nesting_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, findings, output = validate_text(
        tmp_path, capsys, "name: x\nworkflow: " + "[" * 5000 + "]" * 5000 + "\n"
    )
    assert_one_located(code, findings, output, "nested more than 64 levels deep")


def test_product_workflow_is_named_as_such(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "validate", str(HERE / "product_workflow.yaml"))
    assert code == 1 and "Traceback" not in out + err
    assert "this looks like a ProductWorkflow" in out


def test_every_problem_is_reported_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = VALID + "  - wait: -5_minutes\n  - wait: forever\n  - frobnicate\n"
    code, findings, output = validate_text(tmp_path, capsys, text)
    assert code == 1
    assert len(findings) == 3, output
    assert [int(LOCATED.match(f)["line"]) for f in findings] == [7, 8, 9]  # type: ignore[index]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("validate", "does-not-exist.yaml"), "workflow file not found: does-not-exist.yaml"),
        (("plan", "does-not-exist.yaml"), "workflow file not found"),
        (("validate",), "Missing argument"),
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], expected: str
) -> None:
    code, out, err = run_cli(capsys, *args)
    assert code == 2, out + err
    assert expected in err and "Traceback" not in out + err


def test_a_directory_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "validate", str(tmp_path))
    assert code == 2 and "is a directory" in err


def test_a_real_process_prints_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(VALID + "  - wait: forever\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "afdp", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "'forever' is not a duration" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
