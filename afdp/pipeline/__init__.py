"""The impact pipeline: runs a compiled workflow and produces the evidence records' results.

- :mod:`.collectors` -- where samples and rows come from (Prometheus, ``/metrics``, SQL, REST);
- :mod:`.analysis` -- statistics, thresholds and verdicts over baseline and impact;
- :mod:`.decide` -- success criteria, gates and decisions; :mod:`.actions` -- what a
  decision does (signed webhooks);
- :mod:`.training` -- the ML training record;
- :mod:`.secrets` -- redaction of secrets before anything is signed;
- :mod:`.runner` -- a run: request, admission, lock, spool, resume and one handler per
  step family; :mod:`.flow` -- the Prefect edge (the only module that imports Prefect).
"""
