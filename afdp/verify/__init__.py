"""Offline verification of evidence branches (see :mod:`afdp.verify.verifier`)."""

from __future__ import annotations
