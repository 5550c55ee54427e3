"""How an accepted event becomes a flow run: the flow parameters and the submitter.

:class:`PrefectSubmitter` creates the run through
:func:`afdp.pipeline.flow.submit_deployment_run` (the one module that imports Prefect,
loaded on the first event). The run's parameters are the Prefect deployment's defaults,
then the service's ``parameters`` from the services file, then what the event says
(:func:`flow_parameters`); the evidence branch is the one ``afdp run`` would write for
the same service and deployment.
"""

from __future__ import annotations

from typing import Any

from afdp.service.intake import DeploymentEvent

#: What started a webhook run (recorded in the genesis record).
TRIGGER = "deployment_completed"


def flow_parameters(event: DeploymentEvent) -> dict[str, Any]:
    """Return the flow parameters for ``event``."""
    parameters: dict[str, Any] = dict(event.service.parameters)
    parameters.update(
        service=event.service.name,
        deployment=event.deployment,
        info=dict(event.info),
        trigger=TRIGGER,
    )
    return parameters


def idempotency_key(event: DeploymentEvent) -> str:
    """One AFDP deployment, one flow run (Prefect returns the existing run for a key it knows)."""
    return f"afdp:{event.service.name}/{event.deployment}"


class RunSubmitter:
    """Creates the flow run for an accepted event; returns the run's id.

    Called by the outbox relay (:mod:`afdp.service.outbox`), never inside a request.
    Raises a :class:`~afdp.errors.UsageError` when trying again cannot help (no such
    deployment, the run refused as invalid: the delivery fails with the reason), any
    other :class:`~afdp.errors.AfdpError` when it could not for now (tried again later).
    """

    def prepare(self) -> None:
        """Load what :meth:`submit` needs before the first event arrives (default: nothing)."""

    def submit(self, event: DeploymentEvent) -> str:
        raise NotImplementedError


class PrefectSubmitter(RunSubmitter):
    """Creates a Prefect flow run of the service's deployment (no wait)."""

    def prepare(self) -> None:
        # Importing Prefect takes seconds: done at start-up, not inside the first webhook
        # (GitHub gives a webhook 10 s).
        import afdp.pipeline.flow  # noqa: F401

    def submit(self, event: DeploymentEvent) -> str:
        from afdp.pipeline.flow import submit_deployment_run

        return submit_deployment_run(
            event.service.prefect_deployment,
            parameters=flow_parameters(event),
            idempotency_key=idempotency_key(event),
            tags=event.tags,
            flow_run_name=f"{event.service.name}-{event.deployment}",
            retries=event.service.retries,
            retry_delay_seconds=event.service.retry_delay_seconds,
        )
