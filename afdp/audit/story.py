"""The story of a deployment, as ``afdp log`` prints it: one line per record, oldest first.

Read straight from the branch without verifying it (``afdp verify`` gives the verdict);
records or commits that are not AFDP's are shown as such rather than hidden.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from afdp.errors import NotFoundError
from afdp.evidence import records as rec
from afdp.evidence.ledger import decode_envelope, trailers
from afdp.evidence.names import branch_ref
from afdp.evidence.store import EvidenceStore


def read_story(repository: Path | str, *, service: str, deployment: str) -> dict[str, Any]:
    """Return ``{"service", "deployment", "branch", "head", "sealed", "records": [...]}``.

    Raises:
        NotFoundError: no such repository or branch.
    """
    store = EvidenceStore(repository)
    ref = branch_ref(service, deployment)
    head = store.head(ref)
    if head is None:
        raise NotFoundError(f"no evidence branch {ref} in {repository}")
    rows: list[dict[str, Any]] = []
    for commit in store.history(head):
        raw = store.read_commit(commit.id)  # not commit.message: no encoding-header decoding
        message = raw.text()
        info = trailers(message)
        row: dict[str, Any] = {
            "commit": str(commit.id),
            "committed_at": commit.commit_time,
            "author": raw.author_name(),
            "subject": message.splitlines()[0] if message else "",
            "sequence": None,
            "step": None,
            "kind": None,
            "status": None,
            "summary": None,
            "signer": info.get("AFDP-Signer"),
            "timestamp": info.get("AFDP-Timestamp"),
            "tsa": info.get("AFDP-TSA"),
            "digest": info.get("AFDP-Digest"),
        }
        try:
            sequence, step = int(info["AFDP-Record"]), info["AFDP-Step"]
            envelope = store.read_blob(
                commit.tree, f"{rec.record_dir(sequence, step)}/{rec.ENVELOPE_FILE}"
            )
            predicate = decode_envelope(envelope or b"")["predicate"]
            row.update(
                sequence=sequence,
                step=step,
                kind=info.get("AFDP-Kind"),
                status=predicate.get("status"),
                summary=predicate.get("summary"),
                # afdp import: the past time this record describes (None: captured live)
                described_time=(
                    predicate.get("described_time") if predicate.get("imported") is True else None
                ),
            )
        except (KeyError, ValueError, TypeError, json.JSONDecodeError):
            row.update(kind="not-afdp")
        rows.append(row)
    return {
        "service": service,
        "deployment": deployment,
        "branch": ref,
        "head": str(head.id),
        "sealed": bool(rows) and rows[-1]["kind"] == rec.KIND_SEAL,
        # Imported from history (afdp import) when the genesis record says so.
        "imported": bool(rows) and rows[0].get("described_time") is not None,
        "described_time": rows[0].get("described_time") if rows else None,
        "verified": False,
        "records": rows,
    }
