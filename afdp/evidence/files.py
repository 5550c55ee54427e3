"""Reading a file a user names (a key, a trust policy, a pinned root, a history file),
at most a stated size.

Such a path may be ``/dev/zero``, a device or a file far larger than anything of its kind:
a plain ``read_bytes`` would read until memory runs out and the kernel kills the process.
:func:`read_at_most` reads one byte past the limit and refuses the file with one line
instead, before it is all in memory.
"""

from __future__ import annotations

from pathlib import Path

from afdp.errors import AfdpError, ConfigurationError

__all__ = ["read_at_most", "size_words"]


def size_words(limit: int) -> str:
    """``1 MiB``, ``256 MiB``, or a byte count when the limit is not whole MiB."""
    return f"{limit >> 20} MiB" if limit % (1 << 20) == 0 else f"{limit} bytes"


def read_at_most(path: Path, limit: int, what: str, error: type[AfdpError] = ConfigurationError) -> bytes:
    """Return the bytes of ``path`` (``what`` names it in messages), at most ``limit``.

    Raises:
        ``error`` (ConfigurationError by default): the file cannot be read, or holds more
            than ``limit`` bytes (refused after reading ``limit + 1``).
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    if len(data) > limit:
        raise error(f"{what} {path} is larger than the {size_words(limit)} a {what} may hold")
    return data
