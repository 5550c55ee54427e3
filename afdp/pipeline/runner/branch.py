"""The branch as the run's state: read back the records already there (resume), check that a re-run describes the same deployment with the same workflow, restore earlier outputs, and open a new branch with its genesis record."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from afdp.errors import (
    StorageError,
    UsageError,
)
from afdp.evidence import records as rec
from afdp.evidence.canonical import sha256_hex
from afdp.evidence.ledger import decode_envelope, trailers
from afdp.evidence.names import branch_ref
from afdp.evidence.store import EvidenceStore
from afdp.workflow.catalog import StepKind
from afdp.workflow.model import (
    Step,
)

if TYPE_CHECKING:
    pass
from afdp.pipeline.runner.outputs import typed_outputs
from afdp.pipeline.runner.request import RunRequest, StepReport
from afdp.pipeline.runner.state import RecordedStep, RunState, _json_safe


def _read_branch(request: RunRequest) -> tuple[list[RecordedStep], int | None]:
    """Return the step records already on the branch (in order) and the seal's sequence."""
    store = EvidenceStore(request.repository)
    head = store.head(branch_ref(request.service, request.deployment))
    if head is None:
        return [], None
    found: list[RecordedStep] = []
    sealed: int | None = None
    for commit in store.history(head):
        info = trailers(store.message_of(commit))
        try:
            sequence, step, kind = int(info["AFDP-Record"]), info["AFDP-Step"], info["AFDP-Kind"]
        except (KeyError, ValueError) as exc:
            raise StorageError(
                f"commit {str(commit.id)[:12]} on the branch is not an AFDP record; run 'afdp verify'"
            ) from exc
        directory = rec.record_dir(sequence, step)
        files = store.list_dir(commit.tree, directory)
        envelope = files.get(rec.ENVELOPE_FILE)
        if envelope is None:
            raise StorageError(f"record {sequence} has no envelope; run 'afdp verify'")
        if kind == rec.KIND_SEAL:
            sealed = sequence
            continue
        if kind != rec.KIND_STEP:
            continue
        predicate = decode_envelope(envelope)["predicate"]
        workflow_ref = (predicate.get("workflow") or {}).get("sha256")
        if workflow_ref and workflow_ref != request.workflow.digest:
            raise UsageError(
                f"{request.service}/{request.deployment} was recorded with workflow "
                f"{workflow_ref[:12]}, not this one ({request.workflow.digest[:12]}); "
                "use a new deployment id"
            )
        result = predicate.get("result")
        if predicate.get("result_ref"):
            result = json.loads(files.get(rec.RESULT_FILE, b"null"))
        attachments = {
            name: data
            for name, data in files.items()
            if name not in (rec.ENVELOPE_FILE, rec.RESULT_FILE)
            and not rec.TIMESTAMP_FILE.fullmatch(name)
        }
        found.append(
            RecordedStep(
                sequence,
                step,
                sha256_hex(envelope),
                predicate["status"],
                result,
                attachments,
                predicate.get("summary") or "",
                predicate.get("error"),
            )
        )
    return found, sealed


def _check_prefix(request: RunRequest, existing: Sequence[RecordedStep]) -> None:
    steps = request.workflow.steps
    if len(existing) > len(steps):
        raise UsageError(
            f"{request.service}/{request.deployment} has more step records than the workflow has steps"
        )
    for recorded, step in zip(existing, steps, strict=False):
        if recorded.step != step.name:
            raise UsageError(
                f"{request.service}/{request.deployment} does not follow this workflow: record "
                f"{recorded.sequence} is {recorded.step!r} where step {step.index} is {step.name!r}"
            )


def _restore(run: RunState, step: Step, recorded: RecordedStep) -> None:
    """Take a step's outputs from its record instead of running it again."""
    run.records[step.name] = recorded
    result = recorded.result if isinstance(recorded.result, Mapping) else {}
    _absorb(run, step, result, recorded.attachments)
    report = StepReport(
        step.name,
        step.index,
        step.kind.value,
        recorded.status,
        recorded.summary,
        recorded.error,
        recorded.sequence,
        recorded.digest,
        resumed=True,
    )
    run.reports.append(report)
    if run.request.progress:
        run.request.progress(report)


def _absorb(
    run: RunState, step: Step, result: Mapping[str, Any], attachments: Mapping[str, bytes]
) -> None:
    """Update the run's state from a step's result (fresh or read back)."""
    outputs = result.get("outputs")
    if isinstance(outputs, Mapping) and outputs:
        run.outputs[step.name] = typed_outputs(run.workflow, step, outputs)
    if step.kind is StepKind.MARK and isinstance(outputs, Mapping) and outputs.get("deployed_at"):
        run.deployed_at = rec.parse_time(outputs["deployed_at"])
    if (
        step.kind is StepKind.FLAG
        and step.index == run.workflow.boundary
        and isinstance(outputs, Mapping)
        and outputs.get("enabled_at")
        and run.deployed_at is None
    ):
        # With no mark_deployment_time, enabling the feature marks the deployment.
        run.deployed_at = rec.parse_time(outputs["enabled_at"])
    if (
        step.kind is StepKind.SIGNAL
        and step.index == run.workflow.boundary
        and isinstance(outputs, Mapping)
        and outputs.get("received_at")
        and run.deployed_at is None
    ):
        # With no mark_deployment_time, the deployment signal marks the deployment.
        run.deployed_at = run.request.info.deployed_at or rec.parse_time(outputs["received_at"])
    if step.kind is StepKind.CAPTURE:
        series: dict[str, list[float]] = {}
        times: dict[str, list[float]] = {}
        for metric, ref in (result.get("series") or {}).items():
            data = attachments.get(ref.get("path", ""))
            if data is None:
                continue
            document = json.loads(data)
            series[metric] = [float(v) for _, v in document.get("samples", [])]
            times[metric] = [float(t) for t, _ in document.get("samples", [])]
        run.series[step.name] = series
        run.times[step.name] = times
    if step.kind is StepKind.ANALYZE and isinstance(result.get("analysis"), Mapping):
        run.analyses[step.name] = dict(result["analysis"])
    if step.kind in (StepKind.DECIDE, StepKind.GATE):
        if result.get("decision") is not None:
            run.decision = dict(result["decision"])
        if result.get("action") is not None:
            run.action = dict(result["action"])
        if step.kind is StepKind.GATE and result.get("stop"):
            run.stopped_by = step.name
    if step.kind is StepKind.RECORD and isinstance(result.get("record"), Mapping):
        run.training = dict(result["record"])


#: The names the workflow file and the admission policy file are stored under in the
#: genesis record (bytes exactly as read; ``metadata.*.file`` gives their SHA-256).
WORKFLOW_FILE = "workflow.yaml"
POLICY_FILE = "admission-policy.yaml"


def _genesis_files(run: RunState) -> dict[str, bytes]:
    """Return the files the genesis record carries: the workflow YAML and the admission
    policy that admitted it, byte for byte as they were read. A file that holds the value
    of a secret the workflow uses (written in literally) is not stored: its digest is.
    """
    workflow = run.request.workflow
    admission = workflow.admission
    candidates = {
        WORKFLOW_FILE: workflow.source_bytes,
        POLICY_FILE: getattr(getattr(admission, "policy", None), "raw", None),
    }
    files: dict[str, bytes] = {}
    for name, data in candidates.items():
        if data is None:
            continue
        if run.redact:
            text = data.decode("utf-8", "replace")
            if run.redact.text(text) != text or run.redact.encoded(text) is not None:
                continue
        files[name] = data
    return files


def _file_entry(name: str, data: bytes | None, files: Mapping[str, bytes]) -> dict[str, Any] | None:
    if data is None:
        return None
    entry: dict[str, Any] = {"sha256": sha256_hex(data), "size": len(data)}
    if name in files:
        entry["path"] = name
    else:
        entry["withheld"] = "holds the value of a secret the workflow uses; only its digest is kept"
    return entry


def _genesis_metadata(request: RunRequest, files: Mapping[str, bytes] | None = None) -> dict[str, Any]:
    workflow = request.workflow
    files = files or {}
    policy = getattr(workflow.admission, "policy", None)
    described: dict[str, Any] = {
        "name": workflow.name,
        "version": workflow.version,
        "sha256": workflow.digest,
        "steps": [s.name for s in workflow.steps],
    }
    source = _file_entry(WORKFLOW_FILE, workflow.source_bytes, files)
    if source is not None:
        described["file"] = source
    metadata: dict[str, Any] = {
        "workflow": described,
        "deployment": request.info.to_json(),
        # How the run was started (afdp run --trigger, the Action, a webhook's flow).
        "trigger": request.trigger,
        # --set values (workflow variables, never ${env.*} secrets).
        "overrides": dict(request.overrides),
    }
    if request.import_source is not None:
        # afdp import: where the past deployment was read from (records say imported).
        metadata["imported"] = dict(request.import_source)
    if policy is not None:
        admitted: dict[str, Any] = {"name": policy.name}
        policy_file = _file_entry(POLICY_FILE, getattr(policy, "raw", None), files)
        if policy_file is not None:
            admitted["file"] = policy_file
        metadata["admission_policy"] = admitted
    return _json_safe(metadata)


def _open_or_probe(run: RunState) -> None:
    """Write the genesis record of a new branch, or on an existing one check that the
    signer signs and a TSA answers, before any step collects anything.

    Raises:
        SigningError / TimestampError / StorageError: nothing was collected or written.
    """
    request = run.request
    store = EvidenceStore(request.repository)
    ref = branch_ref(request.service, request.deployment)
    head = store.head(ref)
    if head is not None:
        _check_same_deployment(store, head, request)  # opened by another run meanwhile
        _probe(request, run.run_id)
        return
    from afdp.evidence.ledger import open_branch

    files = _genesis_files(run)
    # Opened by another writer meanwhile (None): the tail check catches a foreign record.
    open_branch(
        request.repository,
        service=request.service,
        deployment=request.deployment,
        signer=request.signer,
        tsa_urls=request.tsa_urls,
        workflow_digest=request.workflow.digest,
        genesis_metadata=run.redact(_genesis_metadata(request, files)),
        genesis_attachments=files,
        author=request.author,
        imported=request.imported,
    )


_FACTS = ("commit", "image", "deployer", "team", "environment", "version")


def _check_same_deployment(store: EvidenceStore, head: Any, request: RunRequest) -> None:
    """Refuse to continue, or to re-run, a branch with deployment facts other than those
    it was opened with (``--phase post`` naming another commit or deployer than ``--phase
    pre``; a sealed deployment run again for another commit): one deployment's evidence
    must tell one story, and a run must never be told that "its" evidence is recorded.

    Raises:
        UsageError: a fact given now differs from the one recorded in the genesis record
            (or was not recorded there); the message names every difference.
    """
    from afdp.evidence.ledger import decode_envelope

    first = store.history(head)[0]
    envelope = store.read_blob(first.tree, f"{rec.record_dir(0, 'genesis')}/{rec.ENVELOPE_FILE}")
    try:
        recorded = decode_envelope(envelope or b"")["predicate"]["result"]["metadata"]["deployment"]
    except (ValueError, KeyError, TypeError):
        return  # not ours to judge here: `afdp verify` names what is wrong with the branch
    if not isinstance(recorded, dict):
        return
    given = request.info.to_json()
    differ = []
    for fact in _FACTS:
        now, then = given.get(fact), recorded.get(fact)
        if now is not None and now != then:
            differ.append((f"{fact} {then!r}" if then is not None else f"no {fact}", repr(now)))
    if differ:  # (another workflow than the branch's is refused by _read_branch)
        told = "; and with ".join(f"{then}; this run says {now}" for then, now in differ)
        raise UsageError(
            f"{request.service}/{request.deployment} was opened with {told}: one deployment's "
            "evidence must tell one story (use a new deployment id for another deployment)"
        )


def _probe(request: RunRequest, run_id: str) -> None:
    import hashlib

    from afdp.evidence.keyless import KeylessSigner
    from afdp.evidence.signing import sign_bytes
    from afdp.evidence.timestamp import request_timestamp

    probe = f"afdp run probe {run_id}".encode()
    if isinstance(request.signer, KeylessSigner):
        signature = hashlib.sha256(probe).digest()  # keyless signing is interactive: TSA only
    else:
        signature = sign_bytes(request.signer, probe)
    request_timestamp(signature, request.tsa_urls, timeout=10.0)


def _check_tail(run: RunState, step: Step) -> None:
    """Check that the branch's last record is the step before ``step`` (genesis for the
    first), i.e. nobody else appended to the branch while this run holds it.

    Raises:
        StorageError: the branch ends elsewhere (exit 3).
    """
    request = run.request
    store = EvidenceStore(request.repository)
    head = store.head(branch_ref(request.service, request.deployment))
    expected = run.workflow.steps[step.index - 1].name if step.index > 0 else "genesis"
    found = trailers(store.message_of(head)).get("AFDP-Step") if head is not None else None
    if head is None or found != expected:
        raise StorageError(
            f"{request.service}/{request.deployment}: the branch ends with {found or 'nothing'!r} where "
            f"{expected!r} was expected before step {step.name!r}; another writer appended to it "
            "(run 'afdp verify')"
        )
