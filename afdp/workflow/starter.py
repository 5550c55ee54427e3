"""The example workflows shipped with AFDP, and copying them into a project.

The examples live in ``afdp/workflow/examples/`` (package data: they are installed with
the wheel), so ``afdp init DIR --examples`` works from an installed ``afdp`` without the
source tree. Each one validates against the shipped default admission policy.

Two sets: the worked examples (``examples/*.yaml``: real collectors, decisions and
actions spelled out, each header saying what it adds to the guide) and the AFDP workflow
guide's own workflows exactly as the guide prints them (``examples/guide/*.yaml``:
Examples 1-3 and Getting Started step 1), which AFDP reads as written (docs/workflows.md
says how); ``--examples`` copies them to ``workflows/`` and ``workflows/guide/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from afdp.errors import UsageError

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"


def example_files() -> list[Path]:
    """Return the shipped worked example workflow files, sorted by name."""
    return sorted(EXAMPLES_DIR.glob("*.yaml"))


def guide_files() -> list[Path]:
    """Return the guide's own workflows, verbatim (``examples/guide/``), sorted by name."""
    return sorted((EXAMPLES_DIR / "guide").glob("*.yaml"))


def install_examples(directory: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Copy the example workflows into ``directory``/workflows/ (the guide's own into
    ``workflows/guide/``).

    Existing files are kept unless ``overwrite``: a user's edited copy is never replaced
    silently.

    Returns:
        The paths written (files that already existed and were kept are not listed).

    Raises:
        UsageError: the folder cannot be created or written.
    """
    target = Path(directory) / "workflows"
    written: list[Path] = []
    try:
        (target / "guide").mkdir(parents=True, exist_ok=True)
        sources = [(f, target / f.name) for f in example_files()]
        sources += [(f, target / "guide" / f.name) for f in guide_files()]
        for source, destination in sources:
            if destination.exists() and not overwrite:
                continue
            shutil.copyfile(source, destination)
            written.append(destination)
    except OSError as exc:
        raise UsageError(
            f"cannot write example workflows to {target}: {exc.strerror or exc}"
        ) from None
    return written


__all__ = ["EXAMPLES_DIR", "example_files", "guide_files", "install_examples"]
