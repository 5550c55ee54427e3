"""Hostile YAML at every entry point that reads YAML: one line, the right exit code.

``yaml.safe_load`` is safe from code, not from size: 600 bytes of nested aliases took
20 s and ended in MemoryError, and a document nested 50,000 levels deep overflowed the
composer (RecursionError). Every YAML AFDP reads goes through one bounded loader
(:mod:`afdp.evidence.yamldata`; the workflow loader walks libyaml's events within the same
bounds). Each entry point here gets an alias bomb and deep nesting: the real CLI in its
own process under a memory limit and a timeout, so an unbounded load is a failed
assertion, not a stuck test run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_hostile_packages import afdp, billion_laughs

from afdp.evidence import yamldata

BOMB = billion_laughs()
DEEP = "x: " + "[" * 50_000 + "]" * 50_000 + "\n"
HOSTILE = {
    "alias bomb": (BOMB, "expands to more than 200000 nodes through its aliases"),
    "deep nesting": (DEEP, "nests deeper than 64 levels"),
}


def one_error_line(result: subprocess.CompletedProcess[str], code: int, *parts: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("afdp: error: "), lines[-5:]
    assert all(part in lines[0] for part in parts), lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_control_mapping_of_report_and_export(tmp_path, repo, signer, tsa, trust_file, name):
    """``--controls`` of ``afdp report`` and ``afdp export``: exit 2, one line, nothing written."""
    from conftest import build_deployment

    build_deployment(repo, signer, tsa)
    text, message = HOSTILE[name]
    controls = tmp_path / "controls.yaml"
    controls.write_text(text)
    common = ("--repo", str(repo), "--trust", str(trust_file), "--controls", str(controls))
    result = afdp("report", *common, "--out", str(tmp_path / "r.html"))
    one_error_line(result, 2, f"control mapping {controls}", message)
    assert not (tmp_path / "r.html").exists()
    result = afdp("export", *common, "--service", "api", "--deployment", "d-42", "--out", str(tmp_path / "pkg"))
    one_error_line(result, 2, f"control mapping {controls}", message)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_services_file_of_serve(tmp_path, repo, name):
    """``afdp serve --config``: refused before anything listens."""
    text, message = HOSTILE[name]
    config = tmp_path / "services.yaml"
    config.write_text(text)
    env = {**os.environ, "AFDP_WEBHOOK_SECRET": "s" * 40}
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from afdp.cli import main; sys.exit(main())",
         "serve", "--repo", str(repo), "--config", str(config), "--port", "0"],
        capture_output=True, text=True, timeout=90, check=False, env=env,
    )
    one_error_line(result, 2, f"services file {config}", message)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_dashboard_trust_material_key_reads_a_hostile_policy_within_bounds(tmp_path, name):
    """The dashboard keys its cache on the policy's pinned files: it parses the policy
    itself, and a bomb there must not cost more than reading the policy does."""
    from afdp.service.dashboard import trust_material_digest

    policy = tmp_path / "trust.yaml"
    policy.write_text(HOSTILE[name][0])
    started = time.monotonic()
    assert len(trust_material_digest(policy)) == 64
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_workflow_recorded_in_evidence_is_read_within_bounds(name):
    """``afdp replay`` (and the dataset's cross-check) compile the workflow.yaml stored in
    a branch: a hostile one is a finding, not a hang."""
    from afdp.audit.recorded import compile_bytes
    from afdp.workflow.findings import WorkflowInvalid

    text = HOSTILE[name][0].replace("x: ", "name: ").replace("version: 1", "name: w")
    started = time.monotonic()
    with pytest.raises(WorkflowInvalid) as caught:
        compile_bytes(text.encode(), "recorded workflow.yaml")
    assert time.monotonic() - started < 5
    assert ("nested more than 64 levels" if name == "deep nesting" else "aliases expand to more than 200000") in str(caught.value)


def test_one_bound_for_every_yaml_reader():
    """The workflow loader keeps its own event walk (it reports line and column), with the
    bounded loader's limits, not a second set."""
    from afdp.workflow import loader

    assert (loader.MAX_DEPTH, loader.MAX_VALUES) == (yamldata.MAX_DEPTH, yamldata.MAX_NODES)


def test_no_plain_safe_load_left():
    """Every YAML read goes through the bounded loader (or the workflow loader's walk):
    ``yaml.safe_load``/``yaml.load`` appear nowhere in afdp/ but the bounded loader."""
    root = Path(__file__).resolve().parent.parent / "afdp"
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if path.name != "yamldata.py"
        and any(call in path.read_text(encoding="utf-8") for call in ("safe_load(", "yaml.load(", "full_load(", "unsafe_load("))
    ]
    assert offenders == []


def test_services_file_that_never_ends_is_one_line(tmp_path, repo):
    """/dev/zero (or a file of gigabytes) as the services file: refused after 4 MiB."""
    env = {**os.environ, "AFDP_WEBHOOK_SECRET": "s" * 40}
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from afdp.cli import main; sys.exit(main())",
         "serve", "--repo", str(repo), "--config", "/dev/zero", "--port", "0"],
        capture_output=True, text=True, timeout=90, check=False, env=env,
    )
    one_error_line(result, 2, "services file /dev/zero is larger than")
