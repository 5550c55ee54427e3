"""One module per step family; :data:`afdp.workflow.catalog.STEP_HANDLERS` says which
module and function runs each step kind.

- :mod:`.timing` -- ``wait``, ``wait_for_signal``, ``mark_deployment_time``, deployment metadata;
- :mod:`.capture` -- metric captures (baseline, impact, snapshots) through the collectors;
- :mod:`.sql` -- read-only SQL queries and checks;
- :mod:`.judge` -- segments, analyses, gates and decisions (with their actions);
- :mod:`.record` -- the ML training record (and the other records a workflow emits).

A handler is ``(run, step, values) -> StepResult``: it does the step's work and returns
what the run loop (:mod:`afdp.pipeline.runner.run`) records; it never writes evidence.
"""
