"""Files a user names are read at most to the size their kind can have.

A trust policy, a pinned Sigstore root, a key, a TSA root certificate or a history file
given as ``/dev/zero`` (or a file far too large) was read until the kernel killed the
process (exit 137) or ended in "internal error: MemoryError". Each is now refused with one
line and exit 2, after reading one byte past its limit. The files here are sparse (no
disk used); the real CLI runs in-process.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from afdp.evidence import trust
from afdp.evidence.files import read_at_most


def _sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as handle:
        handle.truncate(size)
    return path


def test_read_at_most_reads_up_to_the_limit_and_refuses_one_byte_more(tmp_path):
    from afdp.errors import ConfigurationError, UsageError

    exact = _sparse(tmp_path / "exact", 1024)
    assert read_at_most(exact, 1024, "thing") == b"\0" * 1024
    over = _sparse(tmp_path / "over", 1025)
    with pytest.raises(ConfigurationError, match=r"thing .*over is larger than the 1024 bytes a thing may hold"):
        read_at_most(over, 1024, "thing")
    with pytest.raises(UsageError, match="cannot read thing"):
        read_at_most(tmp_path / "missing", 1024, "thing", UsageError)
    # a device that never ends is refused just the same
    with pytest.raises(ConfigurationError, match="is larger than the 1 MiB"):
        read_at_most(Path("/dev/zero"), 1 << 20, "thing")


def test_a_trust_policy_too_large_is_one_line_exit_2(tmp_path, repo, cli):
    big = _sparse(tmp_path / "trust.yaml", trust.MAX_POLICY_BYTES + 1)
    done = cli("verify", "--repo", str(repo), "--all", "--trust", str(big))
    assert done.code == 2, done.err
    assert done.err.splitlines() == [f"afdp: error: trust policy {big} is larger than the 4 MiB a trust policy may hold"]


def test_a_pinned_sigstore_root_too_large_is_refused(tmp_path, repo, cli, trust_file):
    root = _sparse(tmp_path / "trusted_root.json", trust.MAX_TRUSTED_ROOT_BYTES + 1)
    policy = tmp_path / "pinned.yaml"
    policy.write_text(trust_file.read_text() + f"sigstore:\n  trusted_root: {root}\n")
    done = cli("verify", "--repo", str(repo), "--all", "--trust", str(policy))
    assert done.code == 2, done.err
    assert "pinned Sigstore trusted root" in done.err and "is larger than the 4 MiB" in done.err
    assert len(done.err.splitlines()) == 1


def test_a_key_or_root_certificate_too_large_is_one_line_exit_2(tmp_path, repo, tsa, cli):
    big = _sparse(tmp_path / "big.pem", (1 << 20) + 1)
    result = tmp_path / "result.json"
    result.write_text('{"p99_ms": 180}')
    recorded = cli("record", "--repo", str(repo), "--service", "api", "--deployment", "d-1", "--step", "s",
                   "--key", str(big), "--tsa", tsa.url, "--result", str(result))
    assert recorded.code == 2 and recorded.err.splitlines() == [
        f"afdp: error: private key {big} is larger than the 1 MiB a private key may hold"], recorded.err
    made = cli("trust", "init", str(tmp_path / "t.yaml"), "--key", str(big), "--tsa-root", str(tsa.directory / "root.pem"))
    assert made.code == 2 and "public key" in made.err and "is larger than the 1 MiB" in made.err, made.err
    assert not (tmp_path / "t.yaml").exists()


def test_a_history_file_too_large_is_refused_before_anything_is_written(tmp_path, repo, keys, tsa, cli, monkeypatch):
    from afdp.pipeline import deploy_history

    monkeypatch.setattr(deploy_history, "MAX_HISTORY_BYTES", 4096)  # in-process: not 256 MiB of zeros
    big = _sparse(tmp_path / "deploys.csv", 4097)
    workflow = tmp_path / "wf.yaml"
    workflow.write_text("name: w\nsteps: []\n")
    done = cli("import", "--repo", str(repo), "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--csv", str(big),
               "--service", "api", "--workflow", str(workflow), "--prometheus", "http://127.0.0.1:1")
    assert done.code == 2
    assert done.err.splitlines() == [f"afdp: error: history file {big} is larger than the 4096 bytes a history file may hold"]


def test_an_admission_policy_too_large_is_named_as_a_policy(tmp_path, cli):
    workflow = tmp_path / "wf.yaml"
    workflow.write_text("name: w\nsteps: []\n")
    big = _sparse(tmp_path / "policy.yaml", (1 << 20) + 1)
    done = cli("validate", str(workflow), "--policy", str(big))
    assert done.code != 0
    assert "admission policy files are limited to 1 MiB" in done.out + done.err, (done.out, done.err)
    assert "workflow files are limited" not in done.out + done.err
