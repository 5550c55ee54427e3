"""The documentation's examples are real: every YAML block parses, and the README
names only commands the CLI has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "notary").glob("*.md")])
_BLOCK = re.compile(r"```ya?ml\n(.*?)```", re.S)


def _blocks() -> list[tuple[str, int, str]]:
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 2
            found.append((path.name, line, match.group(1)))
    return found


@pytest.mark.parametrize(("name", "line", "block"), _blocks(), ids=lambda v: str(v)[:30])
def test_every_yaml_block_in_the_docs_parses(name: str, line: int, block: str) -> None:
    try:
        yaml.safe_load(block)
    except yaml.YAMLError as exc:
        pytest.fail(f"{name}:{line}: not valid YAML: {exc}")


def test_readme_commands_exist() -> None:
    from afdp.cli import cli

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    used = set(re.findall(r"^\s*afdp ([a-z]+)", text, re.M)) | set(re.findall(r"`afdp ([a-z]+)", text))
    available = set(cli.list_commands(None))  # type: ignore[arg-type]
    assert used, "the README shows no afdp command"
    assert used <= available, f"README names commands the CLI lacks: {sorted(used - available)}"
