"""Prefect entry points for AFDP: thin flows and tasks over :mod:`afdp.runner`.

Prefect is imported here and nowhere else in AFDP (except the ``afdp run`` command path,
which imports this package when a run asks for Prefect).
"""
