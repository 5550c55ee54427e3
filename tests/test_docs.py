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


def _code_paths() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for ref in sorted(set(re.findall(r"`(afdp/[A-Za-z0-9_/.]+?)(?:::[A-Za-z_]+)?`", text))):
            found.append((path.name, ref))
    return found


@pytest.mark.parametrize(("name", "ref"), _code_paths(), ids=lambda v: str(v)[:60])
def test_every_source_path_the_docs_name_exists(name: str, ref: str) -> None:
    # docs/architecture.md answers "where is ..." with file names: each must be real.
    assert (ROOT / ref.rstrip("/")).exists(), f"{name} names {ref}, which does not exist"


def _dotted_names() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for ref in sorted(set(re.findall(r"`(afdp(?:\.[a-z_][A-Za-z0-9_]*)+)(?![\w/.])", text))):
            found.append((path.name, ref))
    return found


@pytest.mark.parametrize(("name", "ref"), _dotted_names(), ids=lambda v: str(v)[:60])
def test_every_module_name_the_docs_give_imports(name: str, ref: str) -> None:
    import importlib
    import warnings

    parts = ref.split(".")
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # 0.1 names are documented
                obj: object = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            assert hasattr(obj, attribute), f"{name} names {ref}: {module_name} has no {attribute}"
            obj = getattr(obj, attribute)
        return
    pytest.fail(f"{name} names {ref}, which is no module")
