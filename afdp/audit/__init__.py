"""The audit surfaces: what auditors, compliance teams, engineers and CI read.

- :mod:`.report` -- the compliance report (verify, then HTML, PDF, JSON);
- :mod:`.export` -- the self-contained evidence package and its safe reader;
- :mod:`.story` -- ``afdp log``: a branch read as the story of a deployment;
- :mod:`.action` -- the GitHub Action's entry point (``python -m afdp.audit.action``).

These modules read evidence and verify it (:mod:`afdp.verify`); none of them writes a
record except the Action, which does so through ``afdp run``.
"""
