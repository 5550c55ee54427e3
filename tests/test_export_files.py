"""A package's files are opened only as regular files, without blocking (issue 9, item 8).

A real package from `afdp export`, packed and unpacked with the real `tar` (which keeps
FIFOs and symlinks), then `afdp verify --bundle` in a separate process with a time limit:
a FIFO named README.md used to hang it forever.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile

import pytest
from test_export import package  # noqa: F401  (fixture)

VERIFY = "import sys; from afdp.cli import main; sys.exit(main())"


def _verify_bundle(path, *args, timeout=60):
    return subprocess.run(
        [sys.executable, "-c", VERIFY, "verify", "--bundle", str(path), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def _retar(folder, tmp_path):
    """Pack the folder with tar and unpack it elsewhere, as an auditor receives it."""
    archive = tmp_path / "pkg.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(folder, arcname="pkg")
    out = tmp_path / "received"
    out.mkdir()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(out)], check=True)
    return out / "pkg"


@pytest.mark.parametrize("name", ["README.md", "trust/trust-policy.yaml"])
@pytest.mark.parametrize("kind", ["fifo", "symlink-to-zero", "directory"])
def test_special_files_in_a_package_fail_promptly_with_one_line(package, trust_file, tmp_path, name, kind):  # noqa: F811
    target = package / name
    target.unlink()
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "symlink-to-zero":
        target.symlink_to("/dev/zero")
    else:
        target.mkdir()
    received = _retar(package, tmp_path)
    for args in ((), ("--trust", str(trust_file))):
        done = _verify_bundle(received, *args)  # a hang fails here (TimeoutExpired)
        if args and name.startswith("trust/"):
            # the auditor's --trust: the package's own policy is never read at all
            assert done.returncode == 0, done.stderr
            continue
        assert done.returncode in (1, 2), (done.returncode, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("afdp: error:"), done.stderr


def test_a_fifo_bundle_given_by_path_fails_promptly(package, tmp_path):  # noqa: F811
    bundle = next(package.glob("*.bundle"))
    bundle.unlink()
    os.mkfifo(bundle)
    done = _verify_bundle(bundle)
    assert done.returncode == 2 and "Traceback" not in done.stderr
