"""steps.store: the ``store`` step, where the run's results go.

The results document (``type: afdp.results``) holds every earlier step's outputs, the
latest analysis, the decision when there is one, and the digest of each evidence record
it comes from, so an export can always be traced back to the signed branch. It is
encoded as RFC 8785 canonical JSON; its SHA-256 is in the step's record, with every
destination: the evidence branch (always), the results file, the URL (with its HTTP
answer). Secrets are scrubbed from the document before it leaves the run.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from afdp.evidence.canonical import canonical_bytes
from afdp.evidence.names import branch_ref
from afdp.pipeline.runner.state import RunState, StepResult, _json_safe, _one_line
from afdp.pipeline.secrets import Scrubber
from afdp.workflow.interpolation import Secret, UnresolvedError
from afdp.workflow.model import Step, Store

RESULTS_TYPE = "afdp.results"


def results_document(run: RunState, step: Step) -> dict[str, Any]:
    """Return the run's results so far as a JSON-safe document (secrets scrubbed)."""
    request = run.request
    earlier = {s.name for s in run.workflow.steps[: step.index]}
    records = [
        {"step": r.step, "sequence": r.sequence, "sha256": r.digest, "status": r.status}
        for r in sorted(run.records.values(), key=lambda r: r.sequence)
    ]
    analysis_name, analysis = next(reversed(run.analyses.items())) if run.analyses else (None, None)
    document = {
        "type": RESULTS_TYPE,
        "service": request.service,
        "deployment": request.deployment,
        "branch": branch_ref(request.service, request.deployment),
        "workflow": {"name": run.workflow.name, "version": run.workflow.version, "sha256": run.workflow.digest},
        "generated_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "steps": {name: outputs for name, outputs in run.outputs.items() if name in earlier},
        "analysis": {"step": analysis_name, **analysis} if analysis else None,
        "decision": dict(run.decision) if run.decision else None,
        "records": records,
    }
    return run.redact.value(_json_safe(document))


def handle_store(run: RunState, step: Step, values: dict[str, Any]) -> StepResult:
    params = step.params
    assert isinstance(params, Store)
    body = canonical_bytes(results_document(run, step))
    digest = hashlib.sha256(body).hexdigest()
    destinations: list[dict[str, Any]] = [
        {"kind": "evidence", "target": branch_ref(run.request.service, run.request.deployment), "status": "ok"}
    ]
    errors: list[str] = []
    if params.results:
        destinations.append(_write_file(run, params.results, body, errors))
    if params.url is not None:
        destinations.append(_post(run, params, values, body, errors))
    for item in destinations[1:]:
        item["sha256"] = digest
        item["bytes"] = len(body)
    outputs = {"destinations": [d["target"] for d in destinations if d["status"] == "ok"], "sha256": digest}
    result = {"outputs": outputs, "store": {"document_sha256": digest, "bytes": len(body), "destinations": destinations}}
    where = ", ".join(f"{d['kind']} {d['target']}" for d in destinations)
    summary = f"results ({digest[:12]}) stored: {where}"
    if errors:
        return StepResult("failed", result, summary, error="; ".join(errors))
    return StepResult("ok", result, summary)


def _write_file(run: RunState, name: str, body: bytes, errors: list[str]) -> dict[str, Any]:
    base = (run.request.results_dir or Path.cwd()).resolve()
    target = (base / name).resolve()
    item: dict[str, Any] = {"kind": "file", "target": str(target), "status": "failed"}
    if base != target and base not in target.parents:
        errors.append(f"results file {name!r} is outside the results directory {base}")
        return item
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(body)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        errors.append(f"cannot write the results file {target}: {_one_line(exc.strerror or str(exc))}")
        return item
    item["status"] = "ok"
    return item


def _post(run: RunState, params: Store, values: dict[str, Any], body: bytes, errors: list[str]) -> dict[str, Any]:
    import httpx

    from afdp.deadline import deadline, with_deadlines
    from afdp.pipeline.actions import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature

    assert params.url is not None
    scrub = Scrubber()
    item: dict[str, Any] = {"kind": "url", "target": None, "status": "failed", "http_status": None, "signed": False}

    def reveal(value: str | Secret) -> str:
        if not isinstance(value, Secret):
            return value
        for name in value.names:
            scrub.add(name, run.env.get(name))
        return value.reveal()

    try:
        rendered = params.url.render(values, env=run.env)
        item["target"] = rendered.redacted() if isinstance(rendered, Secret) else rendered
        url = reveal(rendered)
        key = None
        if params.secret is not None:
            key = reveal(params.secret.render(values, env=run.env)).encode("utf-8")
            if not key:
                raise UnresolvedError("the store secret is empty")
    except UnresolvedError as exc:
        errors.append(f"cannot build the request: {scrub.text(str(exc))}")
        return item
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "afdp-store",
        TIMESTAMP_HEADER: str(int(time.time())),
    }
    if key is not None:
        headers[SIGNATURE_HEADER] = signature(key, body)
        item["signed"] = True
    seconds = params.timeout.seconds if params.timeout else 60.0
    try:
        with with_deadlines(httpx.Client(follow_redirects=False)) as http, deadline(seconds):
            response = http.post(url, content=body, headers=headers, timeout=seconds)
    except httpx.TimeoutException:
        errors.append(f"POST to {item['target']}: no answer within {params.timeout}")
        return item
    except (httpx.HTTPError, ValueError, OSError) as exc:
        errors.append(f"POST to {item['target']} failed: {type(exc).__name__}: {scrub.text(_one_line(str(exc)))}")
        return item
    item["http_status"] = response.status_code
    if not 200 <= response.status_code < 300:
        errors.append(f"POST to {item['target']} answered HTTP {response.status_code}")
        return item
    item["status"] = "ok"
    return item
