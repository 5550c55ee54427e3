"""Offline verification of evidence branches: it reads only what :mod:`afdp.evidence` writes.

- :mod:`.verifier` -- :func:`verify_branch` / :func:`check_branch` / :func:`check_all`:
  walk a branch, run the per-record checks (in worker processes for long branches), then
  the chain checks;
- :mod:`.checks` -- the per-record checks 1-10 (schema, envelope, signature, digests,
  time-stamps...), each failure naming its check;
- :mod:`.chain` -- the chain checks 11-15 (commit shape, links, time order, seal);
- :mod:`.report` -- :class:`BranchReport`, :class:`VerifiedRecord`, :class:`Failure`.

The main names are importable from ``afdp.verify`` itself; they load on first use, so
``import afdp.verify`` costs nothing until one is needed.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BranchReport": "afdp.verify.report",
    "EvidenceVerificationError": "afdp.verify.report",
    "Failure": "afdp.verify.report",
    "VerifiedRecord": "afdp.verify.report",
    "iter_failures": "afdp.verify.report",
    "check_all": "afdp.verify.verifier",
    "check_branch": "afdp.verify.verifier",
    "unsafe_branch_reports": "afdp.verify.verifier",
    "verify_branch": "afdp.verify.verifier",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'afdp.verify' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
