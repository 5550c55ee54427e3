"""Prefect entry point for ``prefect.yaml`` (``flows/evidence.py:evidence_flow``).

The flow itself lives in the package (:mod:`afdp.pipeline.flow`), so it is in the wheel; this file
only re-exports it for deployments made from a source checkout.
"""

from __future__ import annotations

from afdp.pipeline.flow import PrefectExecutor, evidence_flow, publish_artifacts, run_with_prefect

__all__ = ["PrefectExecutor", "evidence_flow", "publish_artifacts", "run_with_prefect"]
