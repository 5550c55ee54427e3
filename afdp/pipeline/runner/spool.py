"""The spool: a record that could not be appended (TSA or disk down) is kept under ``afdp-spool/`` and appended first on the next run, so no finished work is lost."""

from __future__ import annotations

import base64
import json
import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from afdp.errors import (
    StorageError,
)
from afdp.evidence import records as rec
from afdp.evidence.store import EvidenceStore
from afdp.workflow.model import (
    Step,
)

if TYPE_CHECKING:
    pass
from afdp.pipeline.runner.state import RunState, StepResult, _one_line

#: Where a step's result waits when its record could not be written (TSA down).
SPOOL_DIR = "afdp-spool"


def _spool_path(run: RunState, step: Step) -> Path:
    request = run.request
    store = EvidenceStore(request.repository)
    return store.path / SPOOL_DIR / request.service / request.deployment / f"{step.index:03d}-{step.name}.json"


def _write_spool(run: RunState, step: Step, draft: rec.RecordDraft, finished: datetime, reason: str) -> Path:
    path = _spool_path(run, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "workflow_sha256": run.workflow.digest,
        "step": step.name,
        "index": step.index,
        "run_id": run.run_id,
        "spooled_at": rec.format_time(rec.utc_now()),
        "reason": _one_line(reason),
        "status": draft.status,
        "result": {**draft.result, "started": rec.format_time(draft.started_at or finished), "finished": rec.format_time(finished)},
        "summary": draft.summary,
        "error": draft.error,
        "provenance": draft.provenance,
        "context": {k: v for k, v in (draft.context or {}).items() if k == "prefect"},
        "attachments": {k: base64.b64encode(v).decode() for k, v in draft.attachments.items()},
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=1))
    os.replace(tmp, path)
    return path


def _read_spool(run: RunState, step: Step) -> StepResult | None:
    """Return the spooled result of ``step`` (from a run whose record could not be
    written), or None. A spool from another workflow version is ignored (and left).
    """
    path = _spool_path(run, step)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StorageError(f"spooled result {path} is unreadable ({exc}); move it away to re-run the step") from exc
    if document.get("workflow_sha256") != run.workflow.digest or document.get("step") != step.name:
        return None
    spool = {
        "spooled_at": document.get("spooled_at"),
        "reason": document.get("reason"),
        "run_id": document.get("run_id"),
    }
    return StepResult(
        document["status"],
        dict(document["result"]),
        document.get("summary") or "",
        document.get("error"),
        document.get("provenance") or {},
        {k: base64.b64decode(v) for k, v in (document.get("attachments") or {}).items()},
        {**(document.get("context") or {}), "spool": spool},
    )
