"""Prefect entry points for AFDP: thin re-exports of :mod:`afdp.pipeline.flow` (the flow code
ships inside the package; this folder only serves ``prefect.yaml`` deployments).
"""
