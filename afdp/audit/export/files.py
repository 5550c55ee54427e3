"""The files of an evidence package, and reading them when the package is untrusted.

The names inside a package (``trust/trust-policy.yaml``, ``report.html``, ``README.md``...),
:class:`BundleError`, and :func:`read_regular`: every file the package reader opens is
read as a regular file only, without blocking or following links, within a size limit.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from afdp.errors import UsageError, VerificationError

TRUST_DIR = "trust"
TRUST_POLICY_FILE = "trust-policy.yaml"
SIGSTORE_ROOT_FILE = "sigstore-trusted-root.json"
REPORT_FILE = "report.html"
README_FILE = "README.md"


class BundleError(VerificationError):
    """A bundle is malformed, incomplete or altered (exit 1: the evidence does not verify)."""


_MIB = 1024 * 1024


def _limit(value: int) -> str:
    return f"{value // _MIB} MiB" if value % _MIB == 0 else f"{value}-byte"


def read_regular(path: Path, limit: int, what: str = "file") -> bytes:
    """Read a file of a package: a regular file only, opened without blocking and
    without following a symbolic link, at most ``limit`` bytes.

    A package may come from anyone (tar keeps FIFOs, devices and symlinks): a FIFO named
    README.md would block a plain ``open`` forever, a link could point at ``/dev/zero``.
    Every file the package reader opens goes through here.

    Raises:
        BundleError: not a regular file (named), a link, or larger than ``limit``.
        UsageError: it cannot be opened at all (missing, no permission).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BundleError(f"{path.name} is a symbolic link; a package holds regular files only") from None
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BundleError(
                f"{path.name} is a {_kind(info.st_mode)}, not a regular file; "
                "a package holds regular files only"
            )
        if info.st_size > limit:
            raise BundleError(
                f"{path.name} is {info.st_size} bytes, more than the {_limit(limit)} limit for a {what}"
            )
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise BundleError(f"{path.name} is more than the {_limit(limit)} limit for a {what}")
        return b"".join(chunks)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


_KINDS = (
    (stat.S_ISFIFO, "FIFO (named pipe)"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISDIR, "directory"),
    (stat.S_ISLNK, "symbolic link"),
)


def _kind(mode: int) -> str:
    """What a non-regular file is, in words ("FIFO (named pipe)", "directory", ...)."""
    return next((name for test, name in _KINDS if test(mode)), "special file")
