"""AFDP: Git-native forensic evidence pipeline for deployments.

The packages (docs/architecture.md): :mod:`afdp.evidence` makes, proves and stores
records; :mod:`afdp.verify` checks them offline; :mod:`afdp.workflow` is the language;
:mod:`afdp.pipeline` runs a workflow (collect, analyze, decide, act); :mod:`afdp.audit`
reports, exports and tells the story; :mod:`afdp.cli` is the command line. Old 0.1 module
names (``afdp.store``, ``afdp.runner``, ...) still import, with a DeprecationWarning
(:mod:`afdp._legacy`).
"""

from __future__ import annotations

from afdp import _legacy

__version__ = "0.1.0"

_legacy.install()
