"""A verified branch read back for a replay: every record under the digest verification
established, and the workflow the genesis record stores, compiled and checked against
the digest every record names (step 2 of :func:`afdp.audit.replay.replay_deployment`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from afdp.errors import UsageError
from afdp.evidence import records as rec
from afdp.evidence.canonical import sha256_hex
from afdp.evidence.ledger import decode_envelope
from afdp.evidence.store import EvidenceStore
from afdp.verify.report import BranchReport

__all__ = ["WORKFLOW_FILE", "Recorded", "compile_bytes", "compile_file", "read_verified", "recorded_workflow"]

WORKFLOW_FILE = "workflow.yaml"


@dataclass(frozen=True)
class Recorded:
    sequence: int
    step: str
    kind: str
    status: str
    digest: str
    result: Any
    files: dict[str, bytes]
    workflow_digest: str | None = None
    error: str | None = None
    summary: str = ""


def read_verified(store: EvidenceStore, report: BranchReport) -> list[Recorded]:
    """Return every record of a verified branch, each read under its verified digest."""
    out = []
    for record in report.records:
        commit = store.repo.get(record.commit)
        if commit is None:
            raise UsageError(f"record {record.sequence}: commit {record.commit[:12]} is gone since verification")
        files = store.list_dir(commit.tree, rec.record_dir(record.sequence, record.step))  # type: ignore[attr-defined]
        envelope = files.get(rec.ENVELOPE_FILE)
        if envelope is None or sha256_hex(envelope) != record.envelope_sha256:
            raise UsageError(f"record {record.sequence} changed since verification; verify again")
        predicate = decode_envelope(envelope)["predicate"]
        result = predicate.get("result")
        ref = predicate.get("result_ref")
        if isinstance(ref, dict):
            data = files.get(rec.RESULT_FILE)
            if data is None or sha256_hex(data) != ref.get("sha256"):
                raise UsageError(f"record {record.sequence}: its result file does not match its digest")
            result = json.loads(data)
        workflow = predicate.get("workflow")
        out.append(
            Recorded(
                record.sequence, record.step, record.kind, record.status, record.envelope_sha256, result, files,
                workflow.get("sha256") if isinstance(workflow, Mapping) else None,
                predicate.get("error"), predicate.get("summary") or "",
            )
        )
    return out


def compile_bytes(raw: bytes, name: str) -> Any:
    from afdp.workflow.compiler import compile_document
    from afdp.workflow.loader import decode, parse

    document = replace(parse(decode(name, raw), name=name), raw=raw)
    return replace(compile_document(document), source_bytes=raw)


def compile_file(path: Path) -> Any:
    from afdp.workflow.loader import read_bytes

    name, raw = read_bytes(path)
    return compile_bytes(raw, name)


def recorded_workflow(genesis: Recorded) -> Any:
    metadata = genesis.result.get("metadata") if isinstance(genesis.result, Mapping) else None
    described = (metadata or {}).get("workflow") if isinstance(metadata, Mapping) else None
    if not isinstance(described, Mapping):
        raise UsageError("the genesis record names no workflow: nothing to replay")
    raw = genesis.files.get(WORKFLOW_FILE)
    entry = described.get("file") if isinstance(described.get("file"), Mapping) else {}
    if raw is None or sha256_hex(raw) != (entry or {}).get("sha256"):
        raise UsageError("the genesis record does not store the workflow file (withheld or absent): nothing to replay")
    workflow = compile_bytes(raw, f"recorded {WORKFLOW_FILE}")
    if workflow.digest != described.get("sha256"):
        raise UsageError(
            f"the stored workflow compiles to digest {workflow.digest[:12]}, not the recorded "
            f"{str(described.get('sha256'))[:12]}: this AFDP reads the workflow differently"
        )
    return workflow
