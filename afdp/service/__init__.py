"""AFDP as a service (``afdp serve``): the signed intake, the dashboard and ``/metrics``.

- :mod:`.config` -- ``services.yaml``: which services the intake knows and the Prefect
  deployment that runs each one's evidence workflow;
- :mod:`.intake` -- signature checks (constant time), event parsing (GitHub
  ``deployment_status`` and AFDP's generic event) into a :class:`~.intake.DeploymentEvent`;
- :mod:`.deliveries` -- the ledger: replay protection (delivery ids and deployments
  already accepted) and the durable outbox of accepted events, one SQLite file;
- :mod:`.outbox` -- the relay that turns queued events into flow runs in the background
  (back-off, resumption at start-up, failures with their reason);
- :mod:`.submit` -- how an accepted event becomes a Prefect flow run (through
  :func:`afdp.pipeline.flow.submit_deployment_run`; Prefect is imported only there);
- :mod:`.throttle` -- limits on guessing the UI token (per client address and global);
- :mod:`.dashboard` -- the read-only view of the evidence: every deployment's decision and
  its verification by :mod:`afdp.verify` (cached by branch head);
- :mod:`.metrics` -- AFDP's own Prometheus metrics;
- :mod:`.app` -- the Starlette application and the uvicorn server.

The service never writes evidence: the only path to a record is a flow run.
"""
