"""Shared fixtures: a real embedded TSA over loopback HTTP, real keys, real Git repositories."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from afdp.evidence import records as rec
from afdp.evidence.ledger import append_record, seal
from afdp.evidence.signing import generate_key, load_signer
from afdp.evidence.store import init_repository
from afdp.evidence.trust import write_trust_policy

# The slow end-to-end tests run 6 at a time on 2 cores, and several start a Prefect
# ephemeral API server each; under that load one can take longer than Prefect's default
# 20 s to come up (CI saw it once). The tests are about AFDP, not about how fast Prefect
# starts on a loaded machine: give its start-up room unless the caller chose a value.
# Tests that check the start-up error set their own value in the child's environment.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

# Property tests (Hypothesis), for every test that does not say otherwise (a test's own
# @settings overrides only what it names, and takes the rest from here: this module is
# imported before any test module). On a loaded 2-core CI machine neither a per-example
# deadline nor the "generating data is too slow" health check says anything about AFDP,
# and a run must not pass or fail by which random examples it drew: the examples are
# derived from each test (derandomize), as most property tests here already asked.
# HYPOTHESIS_PROFILE=explore draws new random examples each run (looking for new bugs).
settings.register_profile(
    "ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("explore", parent=settings.get_profile("ci"), derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@dataclass(frozen=True)
class Tsa:
    directory: Path
    url: str


@pytest.fixture(scope="session")
def tsa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tsa]:
    """AFDP's embedded TSA, served over HTTP on a loopback port for the whole session."""
    from afdp.evidence.notary import EmbeddedTSA, init_tsa, serve

    directory = tmp_path_factory.mktemp("tsa")
    init_tsa(directory, force=True)
    with serve(EmbeddedTSA.load(directory), host="127.0.0.1", port=0) as server:
        yield Tsa(directory, server.url)


@pytest.fixture(scope="session")
def other_tsa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tsa]:
    """A second, independent TSA whose root no trust policy here names."""
    from afdp.evidence.notary import EmbeddedTSA, init_tsa, serve

    directory = tmp_path_factory.mktemp("other-tsa")
    init_tsa(directory, force=True)
    with serve(EmbeddedTSA.load(directory), host="127.0.0.1", port=0) as server:
        yield Tsa(directory, server.url)


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    generate_key(directory / "dev.key")
    generate_key(directory / "attacker.key")
    return directory


@pytest.fixture()
def signer(keys: Path):
    return load_signer(str(keys / "dev.key"))


@pytest.fixture()
def attacker(keys: Path):
    return load_signer(str(keys / "attacker.key"))


@pytest.fixture()
def trust_file(tmp_path: Path, keys: Path, tsa: Tsa) -> Path:
    path = tmp_path / "auditor" / "trust.yaml"
    path.parent.mkdir()
    write_trust_policy(path, keys=[keys / "dev.key.pub"], tsa_roots=[tsa.directory / "root.pem"])
    return path


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "evidence"
    init_repository(path)
    return path


def add_step(repo: Path, signer, tsa: Tsa, step: str, result, *, service: str = "api", deployment: str = "d-42", **extra):
    draft = rec.RecordDraft(kind=rec.KIND_STEP, step=step, result=result, **extra)
    return append_record(repo, service=service, deployment=deployment, draft=draft, signer=signer, tsa_urls=[tsa.url])


def build_deployment(repo: Path, signer, tsa: Tsa, *, service: str = "api", deployment: str = "d-42", steps: int = 4, sealed: bool = True) -> None:
    """Write genesis + ``steps`` step records (+ seal) for one deployment."""
    names = ["capture_baseline", "mark_deployment_time", "capture_impact", "analyze_differences", "decide", "training_record"]
    for i in range(steps):
        add_step(repo, signer, tsa, names[i % len(names)], {"i": i, "p99_ms": 120 + i}, service=service, deployment=deployment)
    if sealed:
        seal(repo, service=service, deployment=deployment, signer=signer, tsa_urls=[tsa.url])


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


def run_cli(*args: str) -> CliResult:
    """Run the real CLI entry point in-process and capture exit code, stdout and stderr."""
    from afdp.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    result = CliResult(code, out.getvalue(), err.getvalue())
    assert "Traceback" not in result.err, result.err
    return result


@pytest.fixture()
def cli():
    return run_cli


sys.path.insert(0, str(Path(__file__).parent))

# Real Prometheus / PostgreSQL / SQLite fixtures (tests/infra.py).
pytest_plugins = ("infra",)
