"""A service's deployment history, read only from evidence that verified.

:func:`load_history` is the one door through which AFDP's learning code reads evidence:

1. list every AFDP branch of the repository (of the selected services), and every
   look-alike ref under ``refs/heads/afdp/`` (counted, never used);
2. verify each branch with :func:`afdp.verify.check_branch` against the caller's trust
   policy (sealed branches only), in worker processes when there are many;
3. on a branch that verified, read the records a row needs (genesis, the training record
   and the records it cites) from the commits verification named, accepting each only
   if the SHA-256 of its envelope is the digest verification established;
4. build one flat row from the training record (features, impacts, decision, label),
   the analysis (context metrics, money per hour) and the genesis record (changed file
   paths, the ``imported`` mark), citing the digests of every record it read;
5. leave out (and count, with the reason) every branch that did not verify, has no
   training record, or falls outside the selected dates or labels.

The columns are described in docs/learning.md ("Dataset columns") and in
:data:`COLUMNS`; a column whose source is not in the evidence is null.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import multiprocessing
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pygit2

from afdp.errors import NotFoundError, SchemaError, UsageError
from afdp.evidence import records as rec
from afdp.evidence.canonical import canonical_bytes, sha256_hex
from afdp.evidence.schemas import load_schema, validate
from afdp.evidence.store import EvidenceStore
from afdp.evidence.trust import TrustPolicy, load_trust_policy
from afdp.learn.features import WEEKDAYS, finite_number
from afdp.verify.report import BranchReport, VerifiedRecord
from afdp.verify.verifier import check_branch, unsafe_branch_reports

__all__ = [
    "COLUMNS",
    "IMPACT_FIELDS",
    "Exclusion",
    "History",
    "ProgressCallback",
    "classify_path",
    "column_names",
    "load_history",
]

ProgressCallback = Callable[[int, int], None]

#: The fixed columns, in order, with their JSON type and meaning (the datasheet's schema).
#: ``impact.<metric>.<field>`` and ``context.<metric>`` columns follow ``money_per_hour``.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("branch", "string", "the evidence branch, refs/heads/afdp/<service>/<deployment>"),
    ("service", "string", "the service deployed"),
    ("deployment", "string", "the deployment id (the branch's last part)"),
    ("team", "string|null", "the team that owns the deployment, as its genesis record names it (never a model feature)"),
    ("environment", "string|null", "the environment deployed to"),
    ("version", "string|null", "the version deployed"),
    ("commit", "string|null", "the source commit deployed"),
    ("deployed_at", "string|null", "when the deployment was marked, ISO-8601 UTC"),
    ("hour_utc", "integer|null", "hour of deployed_at in UTC, 0-23"),
    ("weekday_utc", "integer|null", "weekday of deployed_at in UTC, 0 = Monday ... 6 = Sunday"),
    ("weekday_name", "string|null", "weekday of deployed_at in UTC, monday ... sunday"),
    ("change_size", "integer|null", "lines changed (deployment_size in the deployment metadata)"),
    ("changed_files_count", "integer|null", "number of changed files"),
    ("changed_kinds", "list<string>", "sorted kinds of the changed file paths (see docs); [] when no paths were recorded"),
    ("imported", "boolean", "true when the evidence was written by 'afdp import' (past deployments), not by a run"),
    ("decision", "string|null", "the decision rule that matched (e.g. rollback_on_regression)"),
    ("label", "string|null", "the training label the run recorded"),
    ("money_per_hour", "number|null", "baseline of the money-per-time metric, per hour, in its currency; null when none was measured"),
)
#: The per-metric impact fields, each a column ``impact.<metric>.<field>``.
IMPACT_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("baseline", "number|null", "central value before the deploy, in the metric's unit"),
    ("impact", "number|null", "central value after the deploy, in the metric's unit"),
    ("change", "number|null", "relative change (impact - baseline) / baseline; null when the baseline is 0"),
    ("increase", "number|null", "impact - baseline, in the metric's unit"),
    ("effect_size", "number|null", "effect size of the statistical test (Cliff's delta or Cohen's d)"),
    ("p_value", "number|null", "p-value of the statistical test"),
    ("degraded", "boolean|null", "whether the analysis judged the metric degraded"),
)
_CONTEXT_MEANING = "baseline value of business context metric {name} (measured, never judged)"
_IMPACT_MEANING = "{meaning} ({name})"

#: Fewer branches than this are verified in-process: a worker pool costs more than it saves.
PARALLEL_BRANCHES = 16

_TRAINING_SCHEMA = "training-record.v1"
_CURRENCIES = ("USD", "EUR", "GBP")


@dataclass(frozen=True)
class Exclusion:
    """A branch left out of the history, and why."""

    branch: str
    reason: str
    #: the reason's kind, when the reason itself names values (the contradictions)
    kind: str | None = None

    @property
    def category(self) -> str:
        """The reason without where it happened: ``verification failed: signature``."""
        if self.kind is not None:
            return self.kind
        head, sep, _ = self.reason.partition(" on ")
        return head if sep and head.startswith("verification failed") else self.reason.split(" (")[0]


@dataclass(frozen=True)
class History:
    """Rows of verified deployments, what was left out, and the digest of the rows."""

    rows: list[dict[str, Any]]
    excluded: list[Exclusion]
    considered: int
    digest: str

    @property
    def columns(self) -> list[str]:
        """The column names of the rows, in order."""
        return column_names(self.rows)

    def record_digests(self) -> list[str]:
        """Every record digest any row cites, sorted and unique."""
        return sorted({d for row in self.rows for d in row["record_digests"]})

    def excluded_by_reason(self) -> dict[str, int]:
        """How many branches were left out, per reason category, sorted by category."""
        counts: dict[str, int] = {}
        for item in self.excluded:
            counts[item.category] = counts.get(item.category, 0) + 1
        return dict(sorted(counts.items()))


def column_names(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Return the column order for ``rows``: fixed columns, impacts, context, digests."""
    impacts: set[str] = set()
    context: set[str] = set()
    for row in rows:
        for key in row:
            if key.startswith("impact."):
                impacts.add(key.rsplit(".", 1)[0][len("impact.") :])
            elif key.startswith("context."):
                context.add(key[len("context.") :])
    names = [name for name, _, _ in COLUMNS]
    for metric in sorted(impacts):
        names += [f"impact.{metric}.{field}" for field, _, _ in IMPACT_FIELDS]
    names += [f"context.{metric}" for metric in sorted(context)]
    names.append("record_digests")
    return names


def column_schema(names: Sequence[str]) -> list[dict[str, str]]:
    """Return ``[{column, type, meaning}]`` for the given column names."""
    fixed = {name: (kind, meaning) for name, kind, meaning in COLUMNS}
    fields = {name: (kind, meaning) for name, kind, meaning in IMPACT_FIELDS}
    out = []
    for name in names:
        if name in fixed:
            kind, meaning = fixed[name]
        elif name == "record_digests":
            kind, meaning = "list<string>", "sorted SHA-256 digests of the evidence records (envelopes) the row was built from"
        elif name.startswith("impact."):
            metric, field = name[len("impact.") :].rsplit(".", 1)
            kind, base = fields[field]
            meaning = _IMPACT_MEANING.format(meaning=base, name=metric)
        else:
            kind, meaning = "number|null", _CONTEXT_MEANING.format(name=name[len("context.") :])
        out.append({"column": name, "type": kind, "meaning": meaning})
    return out


def load_history(
    repo: str | Path,
    trust_policy: str | Path,
    *,
    services: Sequence[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    labels: Sequence[str] | None = None,
    jobs: int | None = None,
    progress: ProgressCallback | None = None,
) -> History:
    """Verify every deployment branch of ``repo`` and return the rows of those that verified.

    ``trust_policy`` is the auditor's trust policy file. ``services`` limits the branches
    read; ``since``/``until`` (inclusive; a naive time is taken as UTC) and ``labels``
    limit the rows (a row outside them is excluded and counted). ``jobs``: worker
    processes for verification (default: one per available CPU; 1 = in-process).
    ``progress(done, total)`` is called as branches are done.

    Returns:
        The :class:`History`: rows sorted by (deployed_at, service, deployment), the
        branches left out with their reasons, how many were considered, and the digest.

    Raises:
        UsageError: ``since`` is after ``until``, or ``jobs`` is below 1.
        ConfigurationError: the trust policy does not load.
        NotFoundError: ``repo`` is not an evidence repository.
    """
    since, until = _utc_bound(since), _utc_bound(until)
    if since and until and since > until:
        raise UsageError("--since is after --until")
    if jobs is not None and jobs < 1:
        raise UsageError("--jobs must be at least 1")
    path = Path(repo)
    policy = load_trust_policy(Path(trust_policy), evidence_repository=path)
    store = EvidenceStore(path)
    wanted = set(services) if services else None
    branches = [(s, d) for s, d in store.branches() if wanted is None or s in wanted]
    excluded: list[Exclusion] = []
    considered = 0
    for report in unsafe_branch_reports(path, policy=policy):
        if wanted is None or report.service in wanted:
            considered += 1
            excluded.append(Exclusion(report.ref, _failed(report)))
    considered += len(branches)
    selection = _Selection(
        since, until, frozenset(labels) if labels else None, tuple(store.substitutions())
    )
    rows: list[dict[str, Any]] = []
    for outcome in _each_branch(path, policy, branches, selection, jobs, progress):
        if isinstance(outcome, Exclusion):
            excluded.append(outcome)
        else:
            rows.append(outcome)
    rows.sort(key=lambda r: (r["deployed_at"] or "", r["service"], r["deployment"]))
    excluded.sort(key=lambda e: e.branch)
    columns = column_names(rows)
    rows = [{name: row.get(name) for name in columns} for row in rows]
    return History(rows, excluded, considered, history_digest(rows))


def history_digest(rows: Sequence[Mapping[str, Any]]) -> str:
    """Return the SHA-256 of the RFC 8785 canonical JSON of ``rows``."""
    return sha256_hex(canonical_bytes(list(rows)))


# -- per branch ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Selection:
    since: datetime | None
    until: datetime | None
    labels: frozenset[str] | None
    #: the repository's substitution scan, done once per call (check_branch's ``substitutions``)
    substitutions: tuple[str, ...] = ()


_WORKER: dict[str, Any] = {}


def _init_worker(path: Path, policy: TrustPolicy, selection: _Selection) -> None:
    _WORKER["args"] = (path, policy, selection)


def _in_worker(branch: tuple[str, str]) -> dict[str, Any] | Exclusion:
    path, policy, selection = _WORKER["args"]
    return _branch_row(path, policy, selection, *branch)


def _each_branch(
    path: Path,
    policy: TrustPolicy,
    branches: list[tuple[str, str]],
    selection: _Selection,
    jobs: int | None,
    progress: ProgressCallback | None,
) -> Iterable[dict[str, Any] | Exclusion]:
    total = len(branches)
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = min(jobs or available, total)
    if jobs is None and total < PARALLEL_BRANCHES:
        workers = 1
    if progress is not None:
        progress(0, total)
    if workers <= 1:
        for done, (service, deployment) in enumerate(branches, 1):
            yield _branch_row(path, policy, selection, service, deployment)
            if progress is not None:
                progress(done, total)
        return
    # Whole branches per task: the verifier's own pool splits one long branch's records,
    # here many short branches are the work. Fork, like the verifier: the loaded policy
    # (and a pinned Sigstore root beside it) is inherited, not re-read.
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_init_worker,
        initargs=(path, policy, selection),
    ) as executor:
        chunk = max(1, min(64, total // (workers * 8) or 1))
        for done, outcome in enumerate(executor.map(_in_worker, branches, chunksize=chunk), 1):
            yield outcome
            if progress is not None and (done % 50 == 0 or done == total):
                progress(done, total)


def _branch_row(
    path: Path, policy: TrustPolicy, selection: _Selection, service: str, deployment: str
) -> dict[str, Any] | Exclusion:
    """Verify one branch; return its row, or why it is left out."""
    from afdp.evidence.names import MODELS_SERVICE, branch_ref

    ref = branch_ref(service, deployment)
    if service == MODELS_SERVICE:  # afdp/models/<service>: another service's models, never a deployment
        return Exclusion(ref, f"model branch (the impact models of {deployment}), not a deployment")
    try:
        report = check_branch(
            path, service=service, deployment=deployment, policy=policy, jobs=1,
            substitutions=selection.substitutions,
        )
    except NotFoundError as exc:  # deleted between listing and reading
        return Exclusion(ref, f"verification failed: repository on branch ({exc})")
    if not report.ok:
        return Exclusion(ref, _failed(report))
    try:
        row = _row(EvidenceStore(path), report)
    except _Unusable as exc:
        return Exclusion(ref, str(exc), exc.kind)
    if row is None:
        return Exclusion(ref, "no training record")
    moment = _parse_time(row["deployed_at"])
    if selection.since or selection.until:
        if moment is None:
            return Exclusion(ref, "outside date range (no deployment time recorded)")
        if (selection.since and moment < selection.since) or (selection.until and moment > selection.until):
            return Exclusion(ref, f"outside date range (deployed {row['deployed_at']})")
    if selection.labels is not None and row["label"] not in selection.labels:
        return Exclusion(ref, f"label not selected ({row['label']})")
    return row


def _failed(report: BranchReport) -> str:
    first = report.failures[0]
    where = first.where if first.where not in ("branch", "repository") else "branch"
    others = sorted({f.check for f in report.failures[1:]} - {first.check})
    more = ""
    if len(report.failures) > 1:
        more = f" (and {len(report.failures) - 1} more" + (f": {', '.join(others)})" if others else ")")
    return f"verification failed: {first.check} on {where}{more}"


class _Unusable(Exception):
    """A verified branch whose content cannot make a row (the message says why; ``kind``
    is what the datasheet counts it under)."""

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind


#: What the datasheet counts the contradictions under (their reasons name the values).
CONTRADICTS_DECISION = "training record contradicts the decision record"
CONTRADICTS_FACTS = "training record contradicts the deployment facts recorded elsewhere"
CONTRADICTS_ANALYSIS = "training record contradicts the analysis it cites"
NOT_I_JSON = "record is not I-JSON (NaN, Infinity or a number out of range)"


@dataclass(frozen=True)
class _Read:
    record: VerifiedRecord
    predicate: Mapping[str, Any]
    result: Any


def _read(store: EvidenceStore, record: VerifiedRecord) -> _Read:
    """Read one verified record's predicate and result, under the verified digest."""
    try:
        commit = store.repo.get(record.commit)
        if not isinstance(commit, pygit2.Commit):
            raise _Unusable(f"record {record.sequence}: commit {record.commit[:12]} cannot be read")
        directory = rec.record_dir(record.sequence, record.step)
        envelope = store.read_blob(commit.tree, f"{directory}/{rec.ENVELOPE_FILE}")
        if envelope is None or sha256_hex(envelope) != record.envelope_sha256:
            raise _Unusable(f"record {record.sequence} changed after verification")
        statement = strict_json(base64.b64decode(strict_json(envelope)["payload"], validate=True))
        predicate = statement.get("predicate") if isinstance(statement, Mapping) else None
        if not isinstance(predicate, dict):
            raise _Unusable(f"record {record.sequence} has no predicate")
        result = predicate.get("result")
        ref = predicate.get("result_ref")
        if isinstance(ref, dict):
            data = store.read_blob(commit.tree, f"{directory}/{rec.RESULT_FILE}")
            if data is None or sha256_hex(data) != ref.get("sha256"):
                raise _Unusable(f"record {record.sequence}: result file does not match its digest")
            # result.json is verified by its digest only, never re-canonicalized: a
            # writer's NaN or 1e400 would pass verification, so they are refused here.
            result = strict_json(data)
        return _Read(record, predicate, result)
    except NotIJson as exc:
        raise _Unusable(f"record {record.sequence} ({record.step}) is not I-JSON: {exc}", NOT_I_JSON) from exc
    except (ValueError, TypeError, KeyError, AttributeError, binascii.Error) as exc:
        raise _Unusable(f"record {record.sequence} cannot be read: {exc}") from exc


def _training(read: _Read) -> dict[str, Any] | None:
    result = read.result
    if not isinstance(result, Mapping):
        return None
    record = result.get("record")
    if isinstance(record, Mapping) and record.get("schema") == _TRAINING_SCHEMA:
        return dict(record)
    return None


def _row(store: EvidenceStore, report: BranchReport) -> dict[str, Any] | None:
    """Return the row of a verified branch, None if it has no training record.

    Raises:
        _Unusable: the training record is malformed, names another deployment, or cites
            a record that is not on the branch.
    """
    by_digest = {r.envelope_sha256: r for r in report.records}
    steps = [r for r in report.records if r.kind == rec.KIND_STEP]
    training: tuple[_Read, dict[str, Any]] | None = None
    for record in reversed(steps):  # the last training record wins
        read = _read(store, record)
        found = _training(read)
        if found is not None:
            training = (read, found)
            break
    if training is None:
        return None
    read, record_doc = training
    where = f"training record (record {read.record.sequence})"
    try:
        _check_training(record_doc)
    except SchemaError as exc:
        raise _Unusable(f"{where} is malformed: {exc.diagnostics()}") from exc
    named = record_doc["deployment"]
    if named["service"] != report.service or (named["id"] not in (None, report.deployment)):
        raise _Unusable(f"{where} names another deployment ({named['service']}/{named['id']})")
    if record_doc["features"]["service"] != report.service:
        raise _Unusable(f"{where} names another deployment ({record_doc['features']['service']}/{named['id']})")
    digests = {read.record.envelope_sha256}
    cited: list[_Read] = []
    for item in record_doc["cited"]:
        target = by_digest.get(item["sha256"])
        if target is None or target.sequence != item["sequence"] or target.sequence >= read.record.sequence:
            raise _Unusable(f"{where} cites record {item['sequence']} ({item['sha256'][:12]}), which is not on the branch before it")
        digests.add(target.envelope_sha256)
        cited.append(_read(store, target))
    genesis = next((r for r in report.records if r.kind == rec.KIND_GENESIS), None)
    genesis_read = _read(store, genesis) if genesis is not None else None
    if genesis is not None:
        digests.add(genesis.envelope_sha256)
    cited_by_sequence = {c.record.sequence: c for c in cited}
    before = [
        cited_by_sequence.get(r.sequence) or _read(store, r) for r in steps if r.sequence < read.record.sequence
    ]
    _check_decision(store, where, record_doc, read, before, genesis_read)
    _check_facts(where, record_doc, read, before, genesis_read)
    features = record_doc["features"]
    decision = record_doc["decision"] or {}
    row: dict[str, Any] = {
        "branch": report.ref,
        "service": report.service,
        "deployment": report.deployment,
        "team": _team(genesis_read),
        "environment": features["environment"],
        "version": features["version"],
        "commit": features["commit"],
        "deployed_at": _iso(features["deployed_at"]),
        "hour_utc": features["hour_utc"],
        "weekday_utc": features["weekday_utc"],
        "weekday_name": features["weekday_name"],
        "change_size": features["change_size"],
        "changed_files_count": features["changed_files_count"],
        "changed_kinds": sorted({classify_path(p) for p in _changed_paths(genesis_read, cited)}),
        "imported": _imported(record_doc, read, genesis_read),
        "decision": decision.get("decision"),
        "label": record_doc["label"],
    }
    analysis = _analysis(cited)
    _check_impacts(where, record_doc["impacts"], analysis)
    row["money_per_hour"] = _money_per_hour(analysis)
    for metric, impact in sorted(record_doc["impacts"].items()):
        for field, _, _ in IMPACT_FIELDS:
            value = impact.get(field)
            row[f"impact.{metric}.{field}"] = value if field == "degraded" else _number(value)
    for metric, value in _context(analysis).items():
        row[f"context.{metric}"] = value
    row["record_digests"] = sorted(digests)
    return row


# -- cross-checks: what the training record says against the other verified records ---------
#: The training record's decision fields, each the decision record's field of the same name.
_DECISION_FIELDS = ("decision", "action", "label", "success_criteria_met")


def _decision_of(read: _Read) -> Mapping[str, Any] | None:
    """The decision a decisions (or stopping gate) record holds, as the runner takes it."""
    result = read.result
    found = result.get("decision") if isinstance(result, Mapping) else None
    return found if isinstance(found, Mapping) and "action" in found else None


def _check_decision(
    store: EvidenceStore, where: str, doc: Mapping[str, Any], training: _Read, before: Sequence[_Read], genesis: _Read | None
) -> None:
    """The training record's decision and label must be those of the decision record.

    The run copies the last decision recorded before the training record (a
    ``decisions`` step's, or a gate's that stopped the run) into the training record, and
    its label unless the workflow's ``generate_training_record`` step names its own
    ``training_label``. A training record that says ``success`` while the signed decision
    record of its branch says ``rollback`` would teach a dataset the wrong label.

    Raises:
        _Unusable: naming the field, both values and the decision record.
    """
    source = next(((r, d) for r in reversed(before) if (d := _decision_of(r)) is not None), None)
    given = doc["decision"]
    if source is None:
        if given is not None:
            raise _Unusable(f"{where} gives decision {given.get('decision')!r} ({given.get('action')}), "
                            "but no decision record on the branch before it holds one", CONTRADICTS_DECISION)
        # No decision: only the step's own training_label can give a label. Without a stored
        # workflow nothing else holds it, so nothing contradicts it.
        workflow = _workflow_of(store, genesis) if doc["label"] is not None and genesis is not None else None
        if workflow is not None:
            _check_label_override(where, doc, training, workflow, None)
        return
    record, decided = source
    what = f"the decision record (record {record.record.sequence}, {record.record.step})"
    if given is None:
        raise _Unusable(f"{where} gives no decision, {what} {decided.get('action')} ({decided.get('decision')!r})", CONTRADICTS_DECISION)
    for name in _DECISION_FIELDS:
        if canonical_bytes(given.get(name)) != canonical_bytes(decided.get(name)):
            raise _Unusable(f"{where} gives decision.{name} {given.get(name)!r}, {what} {decided.get(name)!r}", CONTRADICTS_DECISION)
    if doc["label"] != decided.get("label"):
        workflow = _workflow_of(store, genesis) if genesis is not None else None
        _check_label_override(where, doc, training, workflow, (what, decided.get("label")))


def _check_label_override(
    where: str, doc: Mapping[str, Any], training: _Read, workflow: Any, decided: tuple[str, Any] | None
) -> None:
    """A label other than the decision's is the workflow's own: the ``training_label`` of
    the step that wrote the training record, in the workflow the genesis record stores.

    Raises:
        _Unusable: no stored workflow gives that label to that step.
    """
    step = training.record.step
    override = None
    if workflow is not None:
        try:
            override = getattr(workflow.step(step).params, "training_label", None)
        except KeyError:
            override = None
    if override is not None and override == doc["label"]:
        return
    said = (f"{decided[0]} {decided[1]!r}" if decided else "no decision record gives one")
    stored = (f"and the stored workflow's step {step} names {override!r}" if workflow is not None
              else "and no stored workflow names it as the step's training_label")
    raise _Unusable(f"{where} gives label {doc['label']!r}, {said}, {stored}", CONTRADICTS_DECISION)


def _workflow_of(store: EvidenceStore, genesis: _Read) -> Any:
    """The workflow the genesis record stores (compiled), or None when it stores none or
    it does not compile to the digest the records name."""
    result = genesis.result if isinstance(genesis.result, Mapping) else {}
    metadata = result.get("metadata")
    described = metadata.get("workflow") if isinstance(metadata, Mapping) else None
    entry = described.get("file") if isinstance(described, Mapping) else None
    if not isinstance(entry, Mapping) or not isinstance(entry.get("path"), str):
        return None
    commit = store.repo.get(genesis.record.commit)
    if not isinstance(commit, pygit2.Commit):
        return None
    directory = rec.record_dir(genesis.record.sequence, genesis.record.step)
    raw = store.read_blob(commit.tree, f"{directory}/{entry['path']}")
    if raw is None or sha256_hex(raw) != entry.get("sha256"):
        return None
    from dataclasses import replace

    from afdp.errors import AfdpError
    from afdp.workflow.compiler import compile_document
    from afdp.workflow.loader import decode, parse

    try:
        name = f"recorded {entry['path']}"
        workflow = compile_document(replace(parse(decode(name, raw), name=name), raw=raw))
    except AfdpError:
        return None
    return workflow if workflow.digest == described.get("sha256") else None


def _check_facts(
    where: str, doc: Mapping[str, Any], training: _Read, before: Sequence[_Read], genesis: _Read | None
) -> None:
    """The deployment facts a row takes from the training record must agree with the other
    records that hold them: the genesis record's ``metadata.deployment`` (environment,
    version, commit, size, changed files), the last ``mark_deployment_time`` record
    (``deployed_at``), the time itself (hour and weekday), and the signed import marker.
    A fact one record leaves unknown (null) contradicts nothing.

    Raises:
        _Unusable: naming the fact, both values and the record that holds the other.
    """
    features = doc["features"]
    metadata = genesis.result.get("metadata") if genesis is not None and isinstance(genesis.result, Mapping) else None
    info = metadata.get("deployment") if isinstance(metadata, Mapping) else None
    if isinstance(info, Mapping):
        files = info.get("changed_files")
        recorded = {
            "environment": _text(info.get("environment")),
            "version": _text(info.get("version") or info.get("service_version")),
            "commit": _text(info.get("commit") or info.get("git_commit")),
            "change_size": _count(info.get("deployment_size")),
            "changed_files_count": (len(files) or None) if isinstance(files, list) else _count(files),
        }
        for name, value in recorded.items():
            given = features[name]
            if given is not None and value is not None and canonical_bytes(given) != canonical_bytes(value):
                raise _Unusable(f"{where} gives {name} {given!r}, the genesis record {value!r}", CONTRADICTS_FACTS)
    moment = _parse_time(features["deployed_at"])
    marked = next((r for r in reversed(before) if _marked_time(r) is not None), None)
    if moment is not None and marked is not None and _parse_time(_marked_time(marked)) != moment:
        raise _Unusable(f"{where} gives deployed_at {features['deployed_at']!r}, the {marked.record.step} record "
                        f"(record {marked.record.sequence}) {_marked_time(marked)!r}", CONTRADICTS_FACTS)
    derived: dict[str, Any] = {"hour_utc": None, "weekday_utc": None, "weekday_name": None}
    if moment is not None:
        derived = {"hour_utc": moment.hour, "weekday_utc": moment.weekday(), "weekday_name": WEEKDAYS[moment.weekday()]}
    for name, value in derived.items():
        if features[name] != value:
            raise _Unusable(f"{where} gives {name} {features[name]!r}, its deployed_at {features['deployed_at']!r} is {value!r}", CONTRADICTS_FACTS)
    signed = training.predicate.get("imported") is True or (genesis is not None and genesis.predicate.get("imported") is True)
    if (doc.get("imported") is True) != signed:
        raise _Unusable(f"{where} says imported {doc.get('imported') is True}, its signed predicates {signed}", CONTRADICTS_FACTS)


def _marked_time(read: _Read) -> str | None:
    outputs = read.result.get("outputs") if isinstance(read.result, Mapping) else None
    value = outputs.get("deployed_at") if isinstance(outputs, Mapping) else None
    return value if isinstance(value, str) and _parse_time(value) is not None else None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _count(value: Any) -> int | None:
    number = finite_number(value) if not isinstance(value, str) else None
    return int(number) if number is not None and number >= 0 else None


#: The impact fields a row reads, and where the cited analysis holds each.
_ANALYSIS_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("baseline", ("baseline",)),
    ("impact", ("impact",)),
    ("change", ("change",)),
    ("increase", ("increase",)),
    ("p_value", ("p_value",)),
    ("degraded", ("degraded",)),
    ("effect_size", ("test", "effect_size", "value")),
)


def _check_impacts(where: str, impacts: Mapping[str, Any], analysis: Mapping[str, Any] | None) -> None:
    """The training record's impacts must be the cited analysis's, number for number.

    The row's impact columns are read from the training record; the analysis it cites is
    where they were measured. A training record whose impacts no cited analysis holds,
    or that differ from it, is not used (its numbers would not come from the evidence
    they cite).

    And the other way round: every metric the cited analysis analysed is in the training
    record (the run copies them all). One left out would leave the row without its impact,
    and a deployment whose omitted metric degraded would read as one that did not.

    Raises:
        _Unusable: naming the first metric and field that differ.
    """
    if analysis is not None:
        left_out = sorted(str(m) for m in analysis["metrics"] if m not in impacts)
        if left_out:
            raise _Unusable(
                f"{where} gives no impacts of {', '.join(left_out)}, which the cited analysis analysed",
                CONTRADICTS_ANALYSIS,
            )
    if not impacts:
        return
    if analysis is None:
        raise _Unusable(f"{where} gives impacts but cites no analysis that holds them", CONTRADICTS_ANALYSIS)
    metrics = analysis["metrics"]
    for metric, impact in sorted(impacts.items()):
        source = metrics.get(metric)
        if not isinstance(source, Mapping) or not isinstance(impact, Mapping):
            raise _Unusable(f"{where} gives impacts of {metric}, which the cited analysis does not analyse", CONTRADICTS_ANALYSIS)
        for field, path in _ANALYSIS_FIELDS:
            value: Any = source
            for key in path:
                value = value.get(key) if isinstance(value, Mapping) else None
            if canonical_bytes(impact.get(field)) != canonical_bytes(value):
                raise _Unusable(
                    f"{where} gives {metric}.{field} {impact.get(field)!r}, the cited analysis {value!r}",
                    CONTRADICTS_ANALYSIS,
                )


@functools.cache
def _structure_validator() -> Any:
    """jsonschema-rs for the training record's structure, or None when it cannot stand in.

    As in :func:`afdp.evidence.schemas.fast_validator`, it is only trusted to say *valid*
    (anything else is judged by the reference validator); the schema's one ``format``
    (``features.deployed_at``: date-time) is checked by the reference format checker.
    """
    try:
        import jsonschema_rs
    except ImportError:  # pragma: no cover - a declared dependency
        return None
    schema = load_schema(_TRAINING_SCHEMA)
    if json.dumps(schema).count('"format"') != 1 or schema["properties"]["features"]["properties"]["deployed_at"].get("format") != "date-time":
        return None
    return jsonschema_rs.Draft202012Validator(schema, validate_formats=False)


def _check_training(document: dict[str, Any]) -> None:
    """Validate a training record against ``training-record.v1`` (the fast path first).

    Raises:
        SchemaError: it does not match (with the reference validator's messages).
    """
    fast = _structure_validator()
    if fast is not None:
        try:
            if fast.is_valid(document):
                import jsonschema

                moment = document["features"]["deployed_at"]
                checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
                if moment is None or checker.conforms(moment, "date-time"):
                    return
        except (ValueError, TypeError, OverflowError):
            pass  # the reference judges it
    validate(_TRAINING_SCHEMA, document, what="training record")


def _analysis(cited: Sequence[_Read]) -> dict[str, Any] | None:
    for read in reversed(cited):
        result = read.result
        found = result.get("analysis") if isinstance(result, Mapping) else None
        if isinstance(found, Mapping) and isinstance(found.get("metrics"), Mapping):
            return dict(found)
    return None


def _context(analysis: Mapping[str, Any] | None) -> dict[str, Any]:
    if not analysis:
        return {}
    metrics = analysis["metrics"]
    out = {}
    for name, item in sorted(metrics.items()):
        if isinstance(item, Mapping) and item.get("context") is True:
            out[str(name)] = _number(item.get("baseline"))
    return out


def _money_per_hour(analysis: Mapping[str, Any] | None) -> float | None:
    """The baseline of the money-per-time metric, per hour; None if none, or mixed currencies."""
    if not analysis:
        return None
    found: list[tuple[str, float]] = []
    for _, item in sorted(analysis["metrics"].items()):
        unit = item.get("unit") if isinstance(item, Mapping) else None
        if not isinstance(unit, Mapping):
            continue
        dimension = str(unit.get("dimension") or "")
        currency, _, per = dimension.partition("/")
        baseline, factor = _number(item.get("baseline")), _number(unit.get("factor"))
        if currency in _CURRENCIES and per == "time" and baseline is not None and factor is not None:
            found.append((currency, baseline * factor * 3600.0))
    if not found or len({c for c, _ in found}) > 1:
        return None
    return float(found[0][1])


def _team(genesis: _Read | None) -> str | None:
    """The team the (verified) genesis record names; None when it names none."""
    result = genesis.result if genesis is not None else None
    metadata = result.get("metadata") if isinstance(result, Mapping) else None
    given = metadata.get("deployment") if isinstance(metadata, Mapping) else None
    team = given.get("team") if isinstance(given, Mapping) else None
    return team if isinstance(team, str) else None


def _changed_paths(genesis: _Read | None, cited: Sequence[_Read]) -> list[str]:
    sources: list[Any] = []
    if genesis is not None and isinstance(genesis.result, Mapping):
        metadata = genesis.result.get("metadata")
        if isinstance(metadata, Mapping) and isinstance(metadata.get("deployment"), Mapping):
            sources.append(metadata["deployment"].get("changed_files"))
    for read in cited:
        if isinstance(read.result, Mapping):
            outputs = read.result.get("outputs")
            if isinstance(outputs, Mapping):
                sources.append(outputs.get("changed_files"))
    for source in sources:
        if isinstance(source, list) and source and all(isinstance(p, str) for p in source):
            return [p for p in source if p.strip()]
        if isinstance(source, str) and source.strip():
            return [line.strip() for line in source.splitlines() if line.strip()]
    return []


def _imported(record: Mapping[str, Any], training: _Read, genesis: _Read | None) -> bool:
    """True when 'afdp import' wrote the evidence: its signed predicates say
    ``"imported": true`` (the ledger marks every record of an imported branch alike), and
    so does its training record."""
    marks = [record.get("imported"), training.predicate.get("imported")]
    if genesis is not None:
        marks.append(genesis.predicate.get("imported"))
    return any(mark is True for mark in marks)


# -- changed file kinds ----------------------------------------------------------------------
_DEPENDENCY_FILES = {
    "requirements.txt", "pyproject.toml", "poetry.lock", "pipfile", "pipfile.lock", "setup.py",
    "setup.cfg", "package.json", "package-lock.json", "yarn.lock", "pnpm-lock.yaml", "go.mod",
    "go.sum", "cargo.toml", "cargo.lock", "gemfile", "gemfile.lock", "pom.xml", "build.gradle",
    "build.gradle.kts", "composer.json", "composer.lock", "uv.lock",
}
_INFRA_DIRS = ("deploy", "deployment", "deployments", "k8s", "kubernetes", "helm", "charts", "terraform", "infra", ".github", ".gitlab", "ansible")
_INFRA_EXT = (".tf", ".tfvars", ".hcl")
_DOC_EXT = (".md", ".rst", ".adoc", ".txt")
_FRONTEND_EXT = (".js", ".jsx", ".ts", ".tsx", ".vue", ".svelte", ".css", ".scss", ".sass", ".less", ".html")
_CONFIG_EXT = (".yaml", ".yml", ".json", ".toml", ".ini", ".cfg", ".conf", ".env", ".properties", ".xml")
_CODE_EXT = (
    ".py", ".go", ".java", ".kt", ".scala", ".rb", ".rs", ".c", ".cc", ".cpp", ".h", ".hpp",
    ".cs", ".php", ".swift", ".m", ".ex", ".exs", ".erl", ".clj", ".sh", ".pl", ".lua", ".r",
)


def classify_path(path: str) -> str:
    """Return the kind of a changed file path, by the first rule that matches:

    ``migration`` (a migrations folder or ``.sql``), ``test``, ``dependencies`` (lock and
    manifest files), ``infrastructure`` (Dockerfile, Terraform, deploy/k8s/helm/CI
    folders), ``docs``, ``frontend``, ``config``, ``code``, else ``other``.
    """
    lowered = path.strip().replace("\\", "/").lower()
    parts = [p for p in lowered.split("/") if p]
    name = parts[-1] if parts else ""
    folders = parts[:-1]
    stem_ext = "." + name.rsplit(".", 1)[1] if "." in name else ""
    if any("migration" in p for p in folders) or stem_ext == ".sql" or "migration" in name:
        return "migration"
    if (
        any(p in ("test", "tests", "spec", "specs", "__tests__") for p in folders)
        or name.startswith("test_")
        or any(name.endswith(s) for s in ("_test.go", "_test.py", ".test.js", ".test.ts", ".spec.js", ".spec.ts", "_spec.rb"))
    ):
        return "test"
    if name in _DEPENDENCY_FILES or (name.startswith("requirements") and stem_ext in (".txt", ".in")):
        return "dependencies"
    if name.startswith("dockerfile") or name in ("docker-compose.yml", "docker-compose.yaml", "compose.yaml", "compose.yml") or stem_ext in _INFRA_EXT or any(p in _INFRA_DIRS for p in folders):
        return "infrastructure"
    if stem_ext in _DOC_EXT or "docs" in folders or "doc" in folders:
        return "docs"
    if stem_ext in _FRONTEND_EXT:
        return "frontend"
    if stem_ext in _CONFIG_EXT:
        return "config"
    if stem_ext in _CODE_EXT:
        return "code"
    return "other"


# -- small helpers ---------------------------------------------------------------------------
def _number(value: Any) -> float | None:
    # Records are read with strict_json (no NaN, no infinity); this is the second fence.
    return finite_number(value)


class NotIJson(ValueError):
    """JSON that holds NaN, Infinity or a number too large for a double (not I-JSON)."""


def _refuse_constant(name: str) -> Any:
    raise NotIJson(f"it holds {name}, which JSON (RFC 8259 / RFC 8785) has no number for")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise NotIJson(f"it holds the number {text}, beyond a double (read as {number})")
    return number


_SAFE_INTEGER = 2**53 - 1


def _safe_int(text: str) -> int:
    number = int(text)
    if abs(number) > _SAFE_INTEGER:
        raise NotIJson(f"it holds the integer {text[:40]}, beyond 2**53 - 1 (RFC 8785 cannot write it)")
    return number


def strict_json(data: bytes | str) -> Any:
    """Parse JSON as RFC 8785 (I-JSON) allows it: NaN, Infinity, numbers that overflow a
    double and integers beyond 2**53 - 1 are refused, never read as numbers (Python's
    ``json`` accepts them all).

    Raises:
        NotIJson: such a number; ValueError: not JSON at all.
    """
    return json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_safe_int)


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else None


def _iso(text: Any) -> str | None:
    """Normalize a recorded time to ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC)."""
    moment = _parse_time(text)
    if moment is None:
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _utc_bound(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
