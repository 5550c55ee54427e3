"""The package layout (docs/architecture.md): import rules and the 0.1 module names.

The import rules are import-linter contracts in pyproject.toml, checked here the way CI
runs them (``lint-imports``), so a module that imports upward fails the suite. Scripts
written against the 0.1 names (``afdp.store``, ``afdp.runner``, ``python -m
afdp.action``...) keep working: the old name is the very same module object.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from afdp import _legacy

ROOT = Path(__file__).resolve().parents[1]


def test_import_rules_hold() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "broken" in done.stdout and " 0 broken" in done.stdout, done.stdout


@pytest.mark.parametrize("old", sorted(_legacy.MOVED))
def test_old_module_names_are_the_new_modules(old: str) -> None:
    new = importlib.import_module(_legacy.MOVED[old])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sys.modules.pop(old, None)
        aliased = importlib.import_module(old)
    assert aliased is new
    assert new.__spec__ is not None and new.__spec__.name == new.__name__
    assert any(
        issubclass(w.category, DeprecationWarning) and _legacy.MOVED[old] in str(w.message)
        for w in caught
    )


def test_old_submodule_names_follow_their_package() -> None:
    real = importlib.import_module("afdp.pipeline.collectors.sql")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import afdp.collectors.sql as old  # type: ignore[import-not-found]
    import afdp.pipeline.collectors.sql as new

    # One module object under both names: no second copy loaded through the old name,
    # and the package's attribute (what `import a.b.c as x` reads) is still the real one.
    assert old is real and new is real
    assert sys.modules["afdp.pipeline.collectors.sql"] is real
    assert importlib.import_module("afdp.pipeline.collectors").sql is real


def test_a_monkeypatch_through_the_new_name_still_works_after_an_old_import(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import afdp.collectors.sql  # type: ignore[import-not-found]  # noqa: F401
    import afdp.pipeline.collectors.sql as sql
    from afdp.pipeline.collectors.sql import QueryRefused

    monkeypatch.setattr(sql, "check_read_only", lambda text: None)
    # The code that runs the screen reads the patched function: nothing is refused.
    importlib.import_module("afdp.pipeline.collectors.sql").check_read_only("SELECT 1; SELECT 2")
    monkeypatch.undo()
    with pytest.raises(QueryRefused):
        sql.check_read_only("SELECT 1; SELECT 2")


def test_unknown_names_are_still_missing() -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("afdp.no_such_module")
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("afdp.store.no_such_module")


def test_python_dash_m_runs_an_old_entry_point() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "afdp.demo_service", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "usage: python -m afdp.demo.service" in done.stdout


def test_no_top_level_module_but_the_foundation() -> None:
    # The flat room is gone: at the top only the foundation every package may import.
    top = sorted(p.name for p in (ROOT / "afdp").glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "_legacy.py", "deadline.py", "errors.py"]


def test_every_step_kind_has_the_handler_the_catalog_names() -> None:
    from afdp.pipeline.runner import handler_for
    from afdp.workflow.catalog import STEP_HANDLERS, StepKind

    assert set(STEP_HANDLERS) == set(StepKind)
    for kind, target in STEP_HANDLERS.items():
        module, _, function = target.partition(":")
        handler = handler_for(kind)
        assert handler.__name__ == function
        assert handler.__module__ == f"afdp.pipeline.runner.steps.{module}"


def test_a_step_kind_without_a_handler_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from afdp.errors import UsageError
    from afdp.pipeline.runner import handler_for
    from afdp.workflow import catalog

    handler_for.cache_clear()
    monkeypatch.setitem(catalog.STEP_HANDLERS, catalog.StepKind.WAIT, "timing:no_such_handler")
    try:
        with pytest.raises(UsageError, match="not supported"):
            handler_for(catalog.StepKind.WAIT)
    finally:
        handler_for.cache_clear()


# -- module size (issue 11: "no module over about 600 lines unless it is one cohesive thing
# and says why in its docstring") ------------------------------------------------------------
MAX_LINES = 650  # "about 600"


def _oversized(path: Path) -> str | None:
    import ast

    text = path.read_text(encoding="utf-8")
    lines = text.count("\n") + 1
    if lines <= MAX_LINES:
        return None
    if "Why one module" in (ast.get_docstring(ast.parse(text)) or ""):
        return None
    return f"{path} ({lines} lines, no 'Why one module' in its docstring)"


def test_no_module_is_much_over_600_lines_unless_its_docstring_says_why() -> None:
    modules = sorted((ROOT / "afdp").rglob("*.py"))
    assert any(path.name == "store.py" for path in modules)
    offenders = [reason for reason in map(_oversized, modules) if reason]
    assert not offenders, "modules over about 600 lines:\n" + "\n".join(offenders)


def test_the_size_rule_catches_a_long_module_without_a_reason(tmp_path: Path) -> None:
    body = "x = 1\n" * (MAX_LINES + 1)
    silent = tmp_path / "silent.py"
    silent.write_text('"""A module."""\n' + body, encoding="utf-8")
    assert _oversized(silent)
    justified = tmp_path / "justified.py"
    justified.write_text('"""A module.\n\nWhy one module: it is one parser."""\n' + body, encoding="utf-8")
    assert _oversized(justified) is None
    short = tmp_path / "short.py"
    short.write_text("x = 1\n", encoding="utf-8")
    assert _oversized(short) is None
