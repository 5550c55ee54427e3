"""Hostile evidence packages, read by the real ``afdp verify --bundle`` in its own process.

Each package is built the way an attacker would (its bundle byte by byte, its files by
hand); nothing is mocked. The CLI runs in a child process under a memory limit and a
timeout, so an unbounded load is a failed assertion, not a stuck or killed test run.
"""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest
from test_export_hardening import _package_with_policy as package_with_policy

_CLI = "import sys; from afdp.cli import main; sys.exit(main())"
MEMORY = 1536 << 20  # far more than verifying a package needs, far less than a bomb takes


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def afdp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _CLI, *args],
        capture_output=True, text=True, timeout=90, check=False, preexec_fn=_limit_memory,
    )


def billion_laughs(levels: int = 9) -> str:
    """600 bytes of YAML that is 10**9 strings once its aliases are expanded."""
    lines = ["version: 1", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    lines += [f"signers: [{{name: *a{levels - 1}, public_key: '-----BEGIN PUBLIC KEY-----'}}]", "tsa_roots: []"]
    return "\n".join(lines) + "\n"


POLICIES = {
    # safe_load made shared references of it; schema validation then printed a billion
    # elements ("[...] is not of type 'string'"): 20 s and MemoryError (exit 3)
    "alias bomb": (billion_laughs(), "expands to more than 200000 nodes through its aliases"),
    # the YAML composer recursed once per level: RecursionError, "internal error" (exit 3)
    "deep nesting": ("version: 1\nsigners: " + "[" * 50_000 + "]" * 50_000 + "\n", "nests deeper than 64 levels"),
    # an alias inside its own anchor: a list containing itself (RecursionError in validation)
    "recursive alias": ("version: 1\nsigners: &s [*s]\ntsa_roots: []\n", "an alias inside its own anchor"),
}


@pytest.mark.parametrize("name", sorted(POLICIES))
@pytest.mark.parametrize("accepted", [False, True], ids=["package-policy", "accepted-with---trust"])
def test_hostile_yaml_in_a_package_trust_policy_is_one_line(tmp_path, name, accepted):
    """Without --trust the package's own policy is loaded; with --trust pkg/trust/... (the
    documented way to accept it) the same file goes through the auditor's loader."""
    text, message = POLICIES[name]
    folder = package_with_policy(tmp_path, text)
    policy = folder / "trust" / "trust-policy.yaml"
    result = afdp("verify", "--bundle", str(folder), *(["--trust", str(policy)] if accepted else []))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("afdp: error: trust policy ") and message in lines[0], lines
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_anchors_within_bounds_still_load():
    """Bounded, not forbidden: anchors and aliases of a reasonable document load as before."""
    import yaml

    from afdp.evidence.yamldata import load_yaml

    text = "svc: &svc [api, web]\nsigners:\n  - {name: a, services: *svc}\n  - {name: b, services: *svc}\n"
    assert load_yaml(text) == yaml.safe_load(text)
    assert load_yaml("[" * 64 + "]" * 64) == yaml.safe_load("[" * 64 + "]" * 64)
