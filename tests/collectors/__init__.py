"""Helpers for the collector tests (tests/test_collectors_*.py)."""
