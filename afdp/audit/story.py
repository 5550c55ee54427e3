"""The story of a deployment, as ``afdp log`` prints it: one line per record, oldest first.

Without a trust policy it is read straight from the branch, unverified, and says so
(``verified: false``); records or commits that are not AFDP's are shown as such rather
than hidden. With the auditor's trust policy (``afdp log --trust``) the branch is
verified first (:func:`afdp.verify.check_branch`) and the story says whether it passed.

It also tells how the run started and what ran: the genesis record's trigger and the
files it stores byte for byte (``workflow.yaml``, ``admission-policy.yaml``), each with
its name, size and SHA-256 (:func:`read_sources`). They are *verified* only when the
branch verified against the trust policy and the bytes read from the verified commit
have the digest the signed genesis record names; otherwise they are shown marked
unverified, with the reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2

from afdp.errors import NotFoundError
from afdp.evidence import records as rec
from afdp.evidence.canonical import sha256_hex
from afdp.evidence.ledger import decode_envelope, trailers
from afdp.evidence.names import branch_ref
from afdp.evidence.store import EvidenceStore
from afdp.evidence.trust import TrustPolicy

#: The stored source files of a genesis record, by the name ``afdp log --show-source`` takes.
SOURCE_FILES = {"workflow": "workflow.yaml", "admission-policy": "admission-policy.yaml"}
_METADATA_KEYS = {"workflow": "workflow", "admission-policy": "admission_policy"}


@dataclass(frozen=True)
class Source:
    """One file the genesis record stores: ``name`` (``workflow``, ``admission-policy``),
    its ``file`` name, the ``size`` and ``sha256`` the record's metadata names, the bytes
    (None when withheld or missing), and whether all of that is ``verified``."""

    name: str
    file: str
    size: int | None
    sha256: str | None
    data: bytes | None
    verified: bool
    note: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "file": self.file,
            "size": self.size,
            "sha256": self.sha256,
            "stored": self.data is not None,
            "verified": self.verified,
            "note": self.note,
        }


def read_story(
    repository: Path | str,
    *,
    service: str,
    deployment: str,
    trust: TrustPolicy | None = None,
) -> dict[str, Any]:
    """Return ``{"service", "deployment", "branch", "head", "sealed", "verified",
    "verification", "trigger", "deployment_facts", "sources", "records": [...]}``.

    ``deployment_facts`` are the facts the genesis record was given (:data:`FACTS`:
    team, deployer, environment, version, commit, image, deployed_at; None where not
    recorded) and ``verified``, on the same terms as the trigger; None when the genesis
    record holds no deployment facts (a branch ``afdp record`` opened, not a run).

    ``verified`` is True only when ``trust`` is given and the branch verified against it
    (sealed or not); ``verification`` is ``{"state", "failures"}`` (state ``not checked``
    without ``trust``). ``sources`` are :class:`Source` values as JSON (see
    :func:`read_sources`; the bytes themselves via ``afdp log --show-source``).

    Raises:
        NotFoundError: no such repository or branch.
    """
    store = EvidenceStore(repository)
    # Verify first, then read the records at the head verification saw: read the other
    # way round, a branch moved in between (a writer, or someone racing the auditor)
    # would show records that were never verified under a "verified" verdict.
    trigger, facts, sources, verification = _provenance(
        repository, service=service, deployment=deployment, trust=trust, store=store
    )
    verified_head = verification.pop("head", None)
    rows, head, ref, store = _rows(
        repository, service, deployment, store=store,
        at=verified_head if verification["state"] in ("verified", "unsealed") else None,
    )
    return {
        "service": service,
        "deployment": deployment,
        "branch": ref,
        "head": str(head.id),
        "sealed": bool(rows) and rows[-1]["kind"] == rec.KIND_SEAL,
        # Imported from history (afdp import) when the genesis record says so.
        "imported": bool(rows) and rows[0].get("described_time") is not None,
        "described_time": rows[0].get("described_time") if rows else None,
        "verified": verification["state"] in ("verified", "unsealed"),
        "verification": verification,
        "trigger": trigger,
        "deployment_facts": facts,
        "sources": [source.to_json() for source in sources],
        "records": rows,
    }


def read_sources(
    repository: Path | str,
    *,
    service: str,
    deployment: str,
    trust: TrustPolicy | None = None,
    store: EvidenceStore | None = None,
) -> tuple[dict[str, Any], list[Source], dict[str, Any]]:
    """Return the trigger that started the run, the stored sources and the verification.

    The trigger is ``{"name", "verified"}``. With ``trust`` the branch is verified
    (unsealed allowed) and everything is read from the genesis record's verified commit,
    accepted only under the envelope digest verification established; without it, or
    when verification failed, everything is read from the branch as it is and marked
    unverified, with the reason.

    Raises:
        NotFoundError: no such repository or branch.
    """
    trigger, _, sources, verification = _provenance(
        repository, service=service, deployment=deployment, trust=trust, store=store
    )
    return trigger, sources, verification


#: The deployment facts ``afdp log`` shows from the genesis record's metadata.
FACTS = ("team", "deployer", "environment", "version", "commit", "image", "deployed_at")


def _provenance(
    repository: Path | str,
    *,
    service: str,
    deployment: str,
    trust: TrustPolicy | None,
    store: EvidenceStore | None,
) -> tuple[dict[str, Any], dict[str, Any] | None, list[Source], dict[str, Any]]:
    store = store or EvidenceStore(repository)
    ref = branch_ref(service, deployment)
    if store.head(ref) is None:
        raise NotFoundError(f"no evidence branch {ref} in {repository}")
    verification: dict[str, Any] = {"state": "not checked", "failures": []}
    genesis_commit: str | None = None
    expected_envelope: str | None = None
    genesis_step: str | None = None
    why = "not verified: pass --trust (the auditor's trust policy) to verify the branch"
    if trust is not None:
        from afdp.verify.verifier import check_branch

        report = check_branch(
            repository, service=service, deployment=deployment, policy=trust, allow_unsealed=True
        )
        verification = {
            "head": report.head,
            "state": report.state,
            "failures": [
                {"sequence": f.sequence, "where": f.where, "check": f.check, "reason": f.reason}
                for f in report.failures
            ],
        }
        first = report.records[0] if report.records else None
        if report.ok and first is not None and first.kind == rec.KIND_GENESIS:
            genesis_commit, expected_envelope = first.commit, first.envelope_sha256
            genesis_step = first.step
        else:
            why = f"NOT VERIFIED: the branch failed verification ({_first_failure(verification)})"
    predicate, files = _genesis(store, ref, genesis_commit, genesis_step, expected_envelope)
    verified = genesis_commit is not None and predicate is not None
    if genesis_commit is not None and predicate is None:
        verified, why = False, "NOT VERIFIED: the genesis record differs from the one verified"
    metadata = _metadata(predicate)
    trigger = metadata.get("trigger")
    sources = []
    for name, file in SOURCE_FILES.items():
        holder = metadata.get(_METADATA_KEYS[name])
        entry = holder.get("file") if isinstance(holder, dict) else None
        if not isinstance(entry, dict):
            continue
        size = entry.get("size") if isinstance(entry.get("size"), int) else None
        digest = entry.get("sha256") if isinstance(entry.get("sha256"), str) else None
        data = files.get(file) if entry.get("path") == file else None
        note = "verified" if verified else why
        ok = verified
        if data is None:
            ok = False
            note = str(entry.get("withheld") or f"{file} is not stored in the genesis record")
        elif sha256_hex(data) != digest or len(data) != size:
            ok, data = False, data if not verified else None
            note = f"NOT VERIFIED: the stored {file} does not match the digest the genesis record names"
        sources.append(Source(name, file, size, digest, data, ok, note))
    # None when the genesis record holds no deployment facts (written by `afdp record`,
    # not a run); only text is taken (records may be read unverified); a fact not recorded is None
    facts: dict[str, Any] | None = None
    recorded = metadata.get("deployment")
    if isinstance(recorded, dict):
        facts = {name: recorded.get(name) if isinstance(recorded.get(name), str) else None for name in FACTS}
        facts["verified"] = verified
    return (
        {"name": trigger if isinstance(trigger, str) else None, "verified": verified},
        facts,
        sources,
        verification,
    )


def _first_failure(verification: dict[str, Any]) -> str:
    failures = verification.get("failures") or []
    if not failures:
        return "no genesis record"
    first = failures[0]
    return f"{first['where']}: {first['check']}: {first['reason']}"


def _genesis(
    store: EvidenceStore,
    ref: str,
    commit_id: str | None,
    step: str | None,
    expected: str | None,
) -> tuple[dict[str, Any] | None, dict[str, bytes]]:
    """Return the genesis predicate and its files: from the verified ``commit_id`` (only
    if its envelope has the ``expected`` SHA-256), else from the branch's first commit
    as it is (its trailers name the record)."""
    try:
        commit: Any
        if commit_id is not None and step is not None:
            commit = store.repo.get(commit_id)
        else:
            head = store.head(ref)
            if head is None:
                return None, {}
            commit = store.history(head)[0]
            info = trailers(store.read_commit(commit.id).text())
            if int(info["AFDP-Record"]) != 0:
                return None, {}
            step = info["AFDP-Step"]
        if commit is None or step is None:
            return None, {}
        files = store.list_dir(commit.tree, rec.record_dir(0, step))
        envelope = files.get(rec.ENVELOPE_FILE)
        if envelope is None or (expected is not None and sha256_hex(envelope) != expected):
            return None, {}
        predicate = decode_envelope(envelope)["predicate"]
        return (predicate if isinstance(predicate, dict) else None), files
    except (KeyError, ValueError, TypeError, AttributeError, IndexError, json.JSONDecodeError):
        return None, {}


def _metadata(predicate: dict[str, Any] | None) -> dict[str, Any]:
    result = (predicate or {}).get("result")
    metadata = result.get("metadata") if isinstance(result, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def _rows(
    repository: Path | str, service: str, deployment: str, *, store: EvidenceStore | None = None,
    at: str | None = None,
) -> tuple[list[dict[str, Any]], Any, str, EvidenceStore]:
    """The records of the branch at its head, or at commit ``at`` (the verified head)."""
    store = store or EvidenceStore(repository)
    ref = branch_ref(service, deployment)
    head = store.repo.get(at) if at is not None else store.head(ref)
    if not isinstance(head, pygit2.Commit):
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
    return rows, head, ref, store
