"""AFDP: Git-native forensic evidence pipeline for deployments."""

from __future__ import annotations

__version__ = "0.1.0"
