"""The AFDP evidence flow: one Prefect flow run per deployment, one task run per step.

This is the only module of the package that imports Prefect (``flows/evidence.py`` is a
thin entry point over it, for ``prefect.yaml``). It ships in the wheel, so ``afdp run``
works from a plain ``pip install``.

Thin by design (STYLE.md rule 10): :func:`evidence_flow` builds a
:class:`~afdp.pipeline.runner.RunRequest` from its plain parameters and calls
:func:`afdp.pipeline.runner.run_workflow` with a :class:`PrefectExecutor`, which runs each step's
work as one Prefect task; a capture's metrics are collected concurrently inside its
step's task, each retried there (a task per metric cost ~0.3 s of API calls each). The
flow run id and each step's task run id are written into the context of the step's
evidence record.
After the run the flow publishes two artifacts: a markdown summary of the impact and the
decision, and a table of the analysed metrics.

Server: with ``PREFECT_API_URL`` set the flow runs against that server; without it
Prefect's ephemeral mode starts a local one. Telemetry is off unless the environment
turns it on (``PREFECT_SERVER_ANALYTICS_ENABLED=false``, ``DO_NOT_TRACK=1`` by default).
"""

from __future__ import annotations

import os

# Before Prefect is imported: its settings are read at import time.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import contextlib  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import threading  # noqa: E402
from collections.abc import Callable, Mapping  # noqa: E402
from typing import Any, TypeVar, cast  # noqa: E402

from afdp.errors import AfdpError, ConfigurationError, NetworkError, StorageError  # noqa: E402


def redact(text: str) -> str:
    """URL credentials (``PREFECT_API_URL=https://user:pass@host``, which httpx repeats in
    its errors) replaced by ``***``; the Git layer is imported only when there is an error."""
    from afdp.evidence.remote import redact as hide

    return hide(text)


def _first_lines(exc: BaseException, count: int = 3) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines[:count]) or type(exc).__name__


try:
    from prefect import Flow, task
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    from prefect.cache_policies import NO_CACHE
    from prefect.runtime import flow_run, task_run
    from prefect.states import Failed, State
except ImportError:
    raise  # Prefect is not installed: the caller says "install prefect, or --no-prefect"
except Exception as exc:  # Prefect validates its PREFECT_* settings when imported
    raise ConfigurationError(
        f"Prefect's settings are invalid ({_first_lines(exc)}): fix the PREFECT_* "
        "environment variable or profile, or pass --no-prefect"
    ) from exc

#: Prefect's setting for how long its ephemeral API server may take to start.
STARTUP_SETTING = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
from afdp.pipeline.runner import (  # noqa: E402
    RunOutcome,
    RunRequest,
    StepExecutor,
    StepReport,
    prepare_request,
    run_workflow,
)
from afdp.workflow.model import Step  # noqa: E402

T = TypeVar("T")

#: Attempts after the first for a failing collection (a source that is briefly down).
COLLECTOR_RETRIES = 2
COLLECTOR_RETRY_DELAY_SECONDS = 0.5

_local = threading.local()


def _afdp_error_names(root: type[BaseException] = AfdpError) -> set[str]:
    names = {root.__name__}
    for sub in root.__subclasses__():
        names |= _afdp_error_names(sub)
    return names


class _KnownFailures(logging.Filter):
    """Drop Prefect's traceback logs for AFDP's own, expected failures (a collector that
    is down, a query with no data): each is already recorded as evidence with its reason,
    and the command line promises no tracebacks for known failures. Anything else (a bug)
    is still logged in full.
    """

    _EXCEPTION = re.compile(r"exception:? (\w+):")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], AfdpError):
            return False
        found = self._EXCEPTION.search(record.getMessage())
        return not (found and found.group(1) in _afdp_error_names())


logging.getLogger("prefect.task_runs").addFilter(_KnownFailures())


def _api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return None
    # Never record credentials that may be embedded in a URL.
    return re.sub(r"//[^/@]*@", "//", str(url))


class PrefectExecutor(StepExecutor):
    """Runs each step's work as a Prefect task (and collections as tasks with retries)."""

    def context(self) -> dict[str, Any]:
        return {
            "engine": "prefect",
            "prefect": {
                "flow_run_id": str(flow_run.id),
                "flow_run_name": flow_run.name,
                "api_url": _api_url() or "ephemeral",
            },
        }

    retries = COLLECTOR_RETRIES
    retry_delay_seconds = COLLECTOR_RETRY_DELAY_SECONDS

    def run(self, step: Step, work: Callable[[], T]) -> tuple[T, dict[str, Any]]:
        def body() -> tuple[T, str]:
            return work(), str(task_run.id)

        step_task = task(  # type: ignore[call-overload]
            body,
            name=f"step-{step.name}",
            task_run_name=step.name,
            cache_policy=NO_CACHE,
            persist_result=False,
            log_prints=False,
        )
        value, task_run_id = step_task()
        return value, {"prefect": {"task_run_id": task_run_id}}


class _NotPlain(Exception):
    pass


def _plain_json(value: Any) -> Any:
    """Return a copy of ``value`` as FastAPI's ``jsonable_encoder`` returns it, for
    values built only of str, int, float, bool, None, lists, tuples and dicts with string
    keys (raises :class:`_NotPlain` for anything else, or a key ``jsonable_encoder``
    drops: one starting with ``_sa``)."""
    kind = type(value)
    if kind in (str, int, float, bool) or value is None:
        return value
    if kind in (list, tuple):
        return [_plain_json(item) for item in value]
    if kind is dict:
        out = {}
        for key, item in value.items():
            if type(key) is not str or key.startswith("_sa"):
                raise _NotPlain
            out[key] = _plain_json(item)
        return out
    raise _NotPlain


class _EvidenceFlow(Flow[..., dict[str, Any]]):
    """Prefect's flow, except that parameters of plain JSON values are serialized for
    the API without importing FastAPI (whose encoder Prefect imports for every flow run
    with parameters: about 0.25 s). The values sent are the same; anything else goes
    through Prefect's own encoder."""

    def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        try:
            return {key: _plain_json(value) for key, value in parameters.items()}
        except _NotPlain:
            return super().serialize_parameters(parameters)  # type: ignore[no-any-return]


def _evidence_flow_of(fn: Callable[..., dict[str, Any]]) -> _EvidenceFlow:
    return _EvidenceFlow(
        fn=fn, name="afdp-evidence", flow_run_name="{service}-{deployment}", persist_result=False, log_prints=False
    )


@_evidence_flow_of
def evidence_flow(
    workflow_path: str,
    service: str,
    deployment: str,
    repository: str,
    key: str,
    tsa_urls: list[str],
    public_key: str | None = None,
    info: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    phase: str = "all",
    time_scale: float = 1.0,
    signals: list[str] | None = None,
    signal_dir: str | None = None,
    policy: str | None = None,
    results_dir: str | None = None,
    trigger: str = "deployment_completed",
) -> dict[str, Any]:
    """Run an AFDP evidence workflow for one deployment; return the outcome as JSON.

    Every step is recorded as a signed, time-stamped record on the deployment's branch
    in ``repository``; the flow run id and task run ids are in each record's context.
    """
    progress: Callable[[StepReport], None] | None = getattr(_local, "progress", None)
    prepared: RunRequest | None = getattr(_local, "request", None)
    try:
        # In-process (afdp run): the caller already loaded, admitted and keyed the same
        # parameters; loading them again would only add time. A worker loads them here.
        request = prepared if prepared is not None else prepare_request(
            workflow_path=workflow_path,
            service=service,
            deployment=deployment,
            repository=repository,
            key=key,
            tsa_urls=tsa_urls,
            public_key=public_key,
            info=info,
            overrides=overrides,
            phase=phase,
            time_scale=time_scale,
            signals=signals or (),
            signal_dir=signal_dir,
            policy=policy,
            progress=progress,
            results_dir=results_dir,
            trigger=trigger,
        )
        outcome = run_workflow(request, executor=PrefectExecutor())
    except AfdpError as exc:
        # Kept for the caller (one clean line); returning a Failed state marks the flow
        # run failed without the engine logging a traceback for a known failure.
        _local.error = exc
        return Failed(message=exc.diagnostics())  # type: ignore[return-value]
    _local.outcome = outcome
    publish_artifacts(outcome)
    return outcome.to_json()


def publish_artifacts(outcome: RunOutcome) -> None:
    """Create the markdown summary and the metrics table artifacts for ``outcome``."""
    key = re.sub(r"[^a-z0-9-]+", "-", f"afdp-{outcome.service}-{outcome.deployment}".lower()).strip("-")
    create_markdown_artifact(markdown=summary_markdown(outcome), key=key, description="AFDP impact and decision")
    rows = metric_rows(outcome)
    if rows:
        create_table_artifact(table=rows, key=f"{key}-metrics", description="AFDP analysed metrics")


def metric_rows(outcome: RunOutcome) -> list[dict[str, Any]]:
    """Return one table row per analysed metric (baseline, impact, change, verdict)."""
    analysis = outcome.analysis or {}
    metrics = analysis.get("metrics") or {}
    rows = []
    items = metrics.items() if isinstance(metrics, Mapping) else ((m.get("metric"), m) for m in metrics)
    for name, data in items:
        if not isinstance(data, Mapping):
            continue
        rows.append(
            {
                "metric": name,
                "baseline": data.get("baseline"),
                "impact": data.get("impact"),
                "change": data.get("change"),
                "p_value": data.get("p_value"),
                "degraded": data.get("degraded"),
                "status": data.get("status"),
            }
        )
    return rows


def summary_markdown(outcome: RunOutcome) -> str:
    """Return the markdown summary of a run: decision, action, steps, evidence branch."""
    decision = outcome.decision or {}
    action = outcome.action or {}
    lines = [
        f"# AFDP evidence: {outcome.service} / {outcome.deployment}",
        "",
        f"- **Decision:** {decision.get('action', 'none')} ({decision.get('decision') or 'default'}), "
        f"label `{decision.get('label')}`",
        f"- **Reason:** {decision.get('reason', '-')}",
        f"- **Action:** {action.get('kind', '-')} {action.get('status', '-')}: {action.get('detail', '')}",
        f"- **Evidence:** `{outcome.branch}` in `{outcome.repository}`, "
        f"{'sealed' if outcome.sealed else 'open'}, head `{(outcome.head or '-')[:12]}`",
        f"- **Workflow:** {outcome.workflow} (sha256 `{outcome.workflow_digest[:16]}…`)",
        "",
        "| # | step | status | summary |",
        "|---|------|--------|---------|",
    ]
    for step in outcome.steps:
        summary = step.summary.replace("|", "\\|")
        lines.append(f"| {step.sequence} | {step.name} | {step.status} | {summary} |")
    rows = metric_rows(outcome)
    if rows:
        lines += ["", "| metric | baseline | impact | change | p-value | degraded |", "|---|---|---|---|---|---|"]
        for row in rows:
            lines.append(
                f"| {row['metric']} | {_fmt(row['baseline'])} | {_fmt(row['impact'])} | "
                f"{_fmt(row['change'])} | {_fmt(row['p_value'])} | {row['degraded']} |"
            )
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def run_with_prefect(
    params: Mapping[str, Any],
    *,
    progress: Callable[[StepReport], None] | None = None,
    request: RunRequest | None = None,
) -> RunOutcome:
    """Run :func:`evidence_flow` in this process and return the :class:`RunOutcome`.

    ``request``, when given, is the :class:`RunRequest` already prepared from ``params``
    (the flow then does not load the workflow and key a second time).

    Raises:
        AfdpError: what the run raised (the flow run is marked failed).
        StorageError: the flow run failed for a reason outside AFDP (Prefect itself).
        NetworkError: Prefect's API server could not be started or reached (exit 3).
    """
    _local.progress, _local.error, _local.outcome, _local.request = progress, None, None, request
    try:
        try:
            state = cast("State[Any]", evidence_flow(**params, return_state=True))
        except AfdpError:
            raise
        except Exception as exc:
            # With return_state the flow's own failures come back as a state: what is
            # raised here is the engine failing around it (its API server, its database).
            raise engine_error(exc) from exc
        if _local.error is not None:
            raise _local.error
        if _local.outcome is None or not state.is_completed():
            raise StorageError(f"the Prefect flow run did not complete: {state.message or state.type}")
        outcome: RunOutcome = _local.outcome
        return outcome
    finally:
        _local.progress = _local.outcome = _local.error = _local.request = None


def engine_error(exc: BaseException) -> AfdpError:
    """Return the one-line operational error for Prefect failing around a flow run."""
    text = _first_lines(exc, 1)
    api = _api_url()
    if api:
        where = f"the Prefect API at {api}"
        fix = "check that the server is running and PREFECT_API_URL is right, or pass --no-prefect"
    else:
        timeout = os.environ.get(STARTUP_SETTING)
        where = "Prefect's ephemeral API server" + (f" ({STARTUP_SETTING}={timeout})" if timeout else "")
        fix = (
            "run a Prefect server and set PREFECT_API_URL, raise "
            f"{STARTUP_SETTING}, or pass --no-prefect"
        )
    if "ephemeral" in text.lower() and "time" in text.lower():
        what = f"{where} did not start in time"
    else:
        what = f"{where} failed: {text}"
    return NetworkError(redact(f"{what}; {fix}"))


def submit_deployment_run(
    prefect_deployment: str,
    *,
    parameters: Mapping[str, Any],
    idempotency_key: str,
    tags: list[str] | None = None,
    flow_run_name: str | None = None,
    retries: int = 0,
    retry_delay_seconds: float = 30.0,
) -> str:
    """Create a flow run of ``prefect_deployment`` (``FLOW/DEPLOYMENT``) and return its id.

    Does not wait: a worker of the deployment's work pool picks the run up. The run's
    parameters are the deployment's defaults updated with ``parameters``. Prefect returns
    the existing run for an ``idempotency_key`` it has seen, so one AFDP deployment is one
    flow run however often it is submitted (``afdp serve`` uses ``service/deployment``).

    ``retries``: a failed run (a TSA or signer briefly unreachable) is run again up to this
    many times, ``retry_delay_seconds`` apart; each attempt resumes the branch after its
    last committed record, so nothing is recorded twice. Set on the run in the request
    that creates it (the engine keeps a run's own policy), so ``afdp run`` keeps failing at once.

    Raises:
        ConfigurationError: no such Prefect deployment, or the server refused the run as
            invalid (a 4xx other than 408/429: parameters the deployment does not accept);
            sending it again would not help (exit 2).
        NetworkError: the Prefect API could not be reached, timed out or failed (exit 3).
    """
    import httpx
    from prefect.exceptions import ObjectNotFound

    try:
        from prefect.client.schemas.actions import DeploymentFlowRunCreate
        from prefect.client.schemas.objects import FlowRun, FlowRunPolicy
        from prefect.states import Scheduled, to_state_create

        client = _sync_client()
        try:
            deployment = client.read_deployment_by_name(prefect_deployment)
        except ObjectNotFound:
            raise ConfigurationError(f"no Prefect deployment {prefect_deployment!r} on the server") from None
        # As the client's create_flow_run_from_deployment, plus the retry policy: set in
        # the same request, so no worker can start the run before it has its policy.
        create = DeploymentFlowRunCreate(
            parameters=dict(parameters),
            state=to_state_create(Scheduled()),
            tags=list(tags or ()),
            name=flow_run_name,
            idempotency_key=idempotency_key,
            empirical_policy=FlowRunPolicy(retries=retries, retry_delay=int(retry_delay_seconds)),
        )
        response = client.request(
            "POST",
            "/deployments/{id}/create_flow_run",
            path_params={"id": deployment.id},
            json=create.model_dump(mode="json", exclude_unset=True),
        )
        run = FlowRun.model_validate(response.json())
    except AfdpError:
        raise
    except httpx.HTTPStatusError as exc:
        status = exc.response.status_code
        if 400 <= status < 500 and status not in (408, 429):
            try:
                detail = str(exc.response.json().get("detail"))
            except (ValueError, AttributeError):
                detail = exc.response.text[:300]
            raise ConfigurationError(redact(f"Prefect refused a flow run of {prefect_deployment} ({status}): {detail}")) from exc
        _drop_sync_client()
        raise NetworkError(
            redact(
                f"could not create a flow run of {prefect_deployment} at {_api_url() or 'the Prefect API'}: "
                f"{_first_lines(exc, 1)}"
            )
        ) from exc
    except Exception as exc:
        _drop_sync_client()  # a broken connection is not reused
        raise NetworkError(
            redact(
                f"could not create a flow run of {prefect_deployment} at {_api_url() or 'the Prefect API'}: "
                f"{_first_lines(exc, 1)}"
            )
        ) from exc
    return str(run.id)


_clients = threading.local()


def _sync_client() -> Any:
    """Return this thread's Prefect API client, opened once (opening one per call costs a
    connection and a version check on every event)."""
    client = getattr(_clients, "client", None)
    if client is None:
        from prefect.client.orchestration import get_client

        client = get_client(sync_client=True)
        client.__enter__()
        _clients.client = client
    return client


def _drop_sync_client() -> None:
    client = getattr(_clients, "client", None)
    _clients.client = None
    if client is not None:
        with contextlib.suppress(Exception):
            client.__exit__(None, None, None)
