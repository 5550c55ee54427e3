"""The module names of AFDP 0.1 (a flat ``afdp/``) keep working, with a DeprecationWarning.

In 0.2 the modules moved into packages that show the design (docs/architecture.md):
``afdp.evidence`` (records, signing, time-stamps, the Git store), ``afdp.pipeline``
(collectors, analysis, decisions, the runner, the Prefect flow), ``afdp.audit`` (report,
export, story, the GitHub Action) and ``afdp.demo``. A script that still imports an old
name (``import afdp.store``, ``from afdp.runner import run_workflow``, ``python -m
afdp.action``) gets the very module object of the new name -- monkeypatching through
either name changes the same module -- and one DeprecationWarning naming the new place.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import warnings
from types import CodeType, ModuleType
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from importlib.abc import Loader

#: Old module name -> the module that replaced it (submodules follow their package).
MOVED: dict[str, str] = {
    "afdp.canonical": "afdp.evidence.canonical",
    "afdp.records": "afdp.evidence.records",
    "afdp.names": "afdp.evidence.names",
    "afdp.schemas": "afdp.evidence.schemas",
    "afdp.signing": "afdp.evidence.signing",
    "afdp.keyless": "afdp.evidence.keyless",
    "afdp.sshsig": "afdp.evidence.sshsig",
    "afdp.timestamp": "afdp.evidence.timestamp",
    "afdp.notary": "afdp.evidence.notary",
    "afdp.store": "afdp.evidence.store",
    "afdp.ledger": "afdp.evidence.ledger",
    "afdp.trust": "afdp.evidence.trust",
    "afdp.collectors": "afdp.pipeline.collectors",
    "afdp.analysis": "afdp.pipeline.analysis",
    "afdp.decide": "afdp.pipeline.decide",
    "afdp.actions": "afdp.pipeline.actions",
    "afdp.training": "afdp.pipeline.training",
    "afdp.runner": "afdp.pipeline.runner",
    "afdp.flow": "afdp.pipeline.flow",
    "afdp.secrets": "afdp.pipeline.secrets",
    "afdp.report": "afdp.audit.report",
    "afdp.export": "afdp.audit.export",
    "afdp.story": "afdp.audit.story",
    "afdp.action": "afdp.audit.action",
    "afdp.demo_service": "afdp.demo.service",
}


def new_name(old: str) -> str | None:
    """The module that replaced ``old``, or None if ``old`` did not move."""
    if old in MOVED:
        return MOVED[old]
    package, _, rest = old.rpartition(".")
    while package:
        if package in MOVED:
            return MOVED[package] + old[len(package) :]
        package, _, _ = package.rpartition(".")
    return None


class _MovedModules:
    """Resolves an old name to the already-importable new module (same object).

    A meta path finder and loader by protocol (``find_spec``; ``create_module`` and
    ``exec_module``), not by subclassing :mod:`importlib.abc`: importing that module
    costs every ``afdp`` command, ``--help`` included, about 10 ms (it imports
    ``importlib.resources``, ``tempfile``, ``zipfile`` and more).
    """

    def __init__(self) -> None:
        self._real_specs: dict[str, importlib.machinery.ModuleSpec | None] = {}

    def find_spec(
        self, fullname: str, path: object = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("afdp."):
            return None
        target_name = new_name(fullname)
        if target_name is None or importlib.util.find_spec(target_name) is None:
            return None
        # The import system never calls the legacy load_module when exec_module exists.
        return importlib.util.spec_from_loader(fullname, cast("Loader", self), origin=target_name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        assert spec.origin is not None
        warnings.warn(
            f"{spec.name} is deprecated: the module moved to {spec.origin} (AFDP 0.2 layout)",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(spec.origin)
        # the import system overwrites __spec__ with this alias spec; exec_module puts
        # the module's own back, so reload() and pickling see the real module.
        self._real_specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._real_specs.get(module.__name__, module.__spec__)

    def get_code(self, fullname: str) -> CodeType | None:
        """For ``python -m <old name>``: the new module's code, run as ``__main__``."""
        target_name = new_name(fullname)
        spec = importlib.util.find_spec(target_name) if target_name else None
        loader = getattr(spec, "loader", None)
        get_code = getattr(loader, "get_code", None)
        return get_code(target_name) if get_code is not None else None


def install() -> None:
    """Add the finder once, before the normal ones.

    First, because a moved package's old name resolves to the new package object, whose
    ``__path__`` the normal finders would then search for ``afdp.collectors.sql``: they
    would load a second copy of the submodule under the old name and set it as the
    package's ``sql`` attribute, so ``import afdp.pipeline.collectors.sql`` (which reads
    that attribute) would give the copy, and a monkeypatch on it would change nothing.
    This finder answers only for old ``afdp.*`` names (no file exists under them any
    more) and returns None for everything else at the cost of one prefix test.
    """
    if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
        sys.meta_path.insert(0, _MovedModules())
