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

Reading a verified record and the cross-checks of step 4 are in
:mod:`afdp.learn.crosscheck`; strict I-JSON parsing in :mod:`afdp.learn.ijson`; the
kinds of changed paths in :mod:`afdp.learn.paths`.

The columns are described in docs/learning.md ("Dataset columns") and in
:data:`COLUMNS`; a column whose source is not in the evidence is null.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from afdp.errors import NotFoundError, SchemaError, UsageError
from afdp.evidence import records as rec
from afdp.evidence.canonical import canonical_bytes, sha256_hex
from afdp.evidence.store import EvidenceStore
from afdp.evidence.trust import TrustPolicy, load_trust_policy
from afdp.learn.crosscheck import (
    CONTRADICTS_ANALYSIS,
    CONTRADICTS_DECISION,
    CONTRADICTS_FACTS,
    NOT_I_JSON,
    TRAINING_SCHEMA,
    Read,
    Unusable,
    check_decision,
    check_facts,
    check_impacts,
    check_training,
    parse_time,
    read_record,
)
from afdp.learn.features import finite_number
from afdp.learn.ijson import NotIJson, strict_json
from afdp.learn.paths import classify_path
from afdp.verify.report import BranchReport
from afdp.verify.verifier import check_branch, unsafe_branch_reports

__all__ = [
    # re-exported from afdp.learn.crosscheck and afdp.learn.ijson, where they moved
    "CONTRADICTS_ANALYSIS",
    "CONTRADICTS_DECISION",
    "CONTRADICTS_FACTS",
    "NOT_I_JSON",
    "NotIJson",
    "strict_json",
    "COLUMNS",
    "IMPACT_FIELDS",
    "Exclusion",
    "History",
    "ProgressCallback",
    "classify_path",
    "column_names",
    "load_history",
    "services_in_history",
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
    #: each branch verified (its ref) and the head commit it was verified at (None: it was
    #: gone when read). A cache of anything computed from this history is keyed on these,
    #: not on heads read before or after: a branch moved while it was read is then never
    #: taken for the one that verified.
    heads: Mapping[str, str | None] = dataclasses.field(default_factory=dict)
    #: the repository's substitution scan these branches were verified with (check 0)
    substitutions: tuple[str, ...] = ()

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
    heads: dict[str, str | None] = {}
    for ref, head, outcome in _each_branch(path, policy, branches, selection, jobs, progress):
        heads[ref] = head
        if isinstance(outcome, Exclusion):
            excluded.append(outcome)
        else:
            rows.append(outcome)
    rows.sort(key=lambda r: (r["deployed_at"] or "", r["service"], r["deployment"]))
    excluded.sort(key=lambda e: e.branch)
    columns = column_names(rows)
    rows = [{name: row.get(name) for name in columns} for row in rows]
    return History(rows, excluded, considered, history_digest(rows), heads, selection.substitutions)


def services_in_history(
    repo: str | Path, policy: TrustPolicy, *, limit: int = 10, tries: int = 3
) -> tuple[list[str], int]:
    """Name services that have a deployment in the verified history, for a message
    about a service that has none (a mistyped ``--service``), without verifying the
    whole repository: services in name order, at most ``tries`` branches of each, until
    ``limit`` are found. A service is named only when one of its branches verified and
    gave a row, exactly as :func:`load_history` would take it.

    Returns:
        (the services found, how many services with evidence branches were not reached).

    Raises:
        NotFoundError: ``repo`` is not an evidence repository.
    """
    from afdp.evidence.names import MODELS_SERVICE

    path = Path(repo)
    store = EvidenceStore(path)
    by_service: dict[str, list[str]] = {}
    for service, deployment in store.branches():
        if service != MODELS_SERVICE:
            by_service.setdefault(service, []).append(deployment)
    selection = _Selection(None, None, None, tuple(store.substitutions()))
    found: list[str] = []
    reached = 0
    for service in sorted(by_service):
        if len(found) >= limit:
            break
        reached += 1
        for deployment in sorted(by_service[service], reverse=True)[:tries]:
            if isinstance(_branch_row(path, policy, selection, service, deployment)[2], dict):
                found.append(service)
                break
    return found, len(by_service) - reached


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
#: one branch read: its ref, the head it was verified at, and its row or why it is left out
_Outcome = tuple[str, "str | None", "dict[str, Any] | Exclusion"]


def _init_worker(path: Path, policy: TrustPolicy, selection: _Selection) -> None:
    _WORKER["args"] = (path, policy, selection)


def _in_worker(branch: tuple[str, str]) -> _Outcome:
    path, policy, selection = _WORKER["args"]
    return _branch_row(path, policy, selection, *branch)


def _each_branch(
    path: Path,
    policy: TrustPolicy,
    branches: list[tuple[str, str]],
    selection: _Selection,
    jobs: int | None,
    progress: ProgressCallback | None,
) -> Iterable[_Outcome]:
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
) -> _Outcome:
    """Verify one branch; return its ref, the head it was verified at, and its row or why
    it is left out."""
    from afdp.evidence.names import MODELS_SERVICE, branch_ref

    ref = branch_ref(service, deployment)
    if service == MODELS_SERVICE:  # afdp/models/<service>: another service's models, never a deployment
        return ref, None, Exclusion(ref, f"model branch (the impact models of {deployment}), not a deployment")
    try:
        report = check_branch(
            path, service=service, deployment=deployment, policy=policy, jobs=1,
            substitutions=selection.substitutions,
        )
    except NotFoundError as exc:  # deleted between listing and reading
        return ref, None, Exclusion(ref, f"verification failed: repository on branch ({exc})")
    return ref, report.head, _judged_row(path, selection, ref, report)


def _judged_row(path: Path, selection: _Selection, ref: str, report: BranchReport) -> dict[str, Any] | Exclusion:
    if not report.ok:
        return Exclusion(ref, _failed(report))
    try:
        row = _row(EvidenceStore(path), report)
    except Unusable as exc:
        return Exclusion(ref, str(exc), exc.kind)
    if row is None:
        return Exclusion(ref, "no training record")
    moment = parse_time(row["deployed_at"])
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


def _training(read: Read) -> dict[str, Any] | None:
    result = read.result
    if not isinstance(result, Mapping):
        return None
    record = result.get("record")
    if isinstance(record, Mapping) and record.get("schema") == TRAINING_SCHEMA:
        return dict(record)
    return None


def _row(store: EvidenceStore, report: BranchReport) -> dict[str, Any] | None:
    """Return the row of a verified branch, None if it has no training record.

    Raises:
        Unusable: the training record is malformed, names another deployment, or cites
            a record that is not on the branch.
    """
    by_digest = {r.envelope_sha256: r for r in report.records}
    steps = [r for r in report.records if r.kind == rec.KIND_STEP]
    training: tuple[Read, dict[str, Any]] | None = None
    for record in reversed(steps):  # the last training record wins
        read = read_record(store, record)
        found = _training(read)
        if found is not None:
            training = (read, found)
            break
    if training is None:
        return None
    read, record_doc = training
    where = f"training record (record {read.record.sequence})"
    try:
        check_training(record_doc)
    except SchemaError as exc:
        raise Unusable(f"{where} is malformed: {exc.diagnostics()}") from exc
    named = record_doc["deployment"]
    if named["service"] != report.service or (named["id"] not in (None, report.deployment)):
        raise Unusable(f"{where} names another deployment ({named['service']}/{named['id']})")
    if record_doc["features"]["service"] != report.service:
        raise Unusable(f"{where} names another deployment ({record_doc['features']['service']}/{named['id']})")
    digests = {read.record.envelope_sha256}
    cited: list[Read] = []
    for item in record_doc["cited"]:
        target = by_digest.get(item["sha256"])
        if target is None or target.sequence != item["sequence"] or target.sequence >= read.record.sequence:
            raise Unusable(f"{where} cites record {item['sequence']} ({item['sha256'][:12]}), which is not on the branch before it")
        digests.add(target.envelope_sha256)
        cited.append(read_record(store, target))
    genesis = next((r for r in report.records if r.kind == rec.KIND_GENESIS), None)
    genesis_read = read_record(store, genesis) if genesis is not None else None
    if genesis is not None:
        digests.add(genesis.envelope_sha256)
    cited_by_sequence = {c.record.sequence: c for c in cited}
    before = [
        cited_by_sequence.get(r.sequence) or read_record(store, r) for r in steps if r.sequence < read.record.sequence
    ]
    check_decision(store, where, record_doc, read, before, genesis_read)
    check_facts(where, record_doc, read, before, genesis_read)
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
    check_impacts(where, record_doc["impacts"], analysis)
    row["money_per_hour"] = _money_per_hour(analysis)
    for metric, impact in sorted(record_doc["impacts"].items()):
        for field, _, _ in IMPACT_FIELDS:
            value = impact.get(field)
            row[f"impact.{metric}.{field}"] = value if field == "degraded" else _number(value)
    for metric, value in _context(analysis).items():
        row[f"context.{metric}"] = value
    row["record_digests"] = sorted(digests)
    return row


def _analysis(cited: Sequence[Read]) -> dict[str, Any] | None:
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


def _team(genesis: Read | None) -> str | None:
    """The team the (verified) genesis record names; None when it names none."""
    result = genesis.result if genesis is not None else None
    metadata = result.get("metadata") if isinstance(result, Mapping) else None
    given = metadata.get("deployment") if isinstance(metadata, Mapping) else None
    team = given.get("team") if isinstance(given, Mapping) else None
    return team if isinstance(team, str) else None


def _changed_paths(genesis: Read | None, cited: Sequence[Read]) -> list[str]:
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


def _imported(record: Mapping[str, Any], training: Read, genesis: Read | None) -> bool:
    """True when 'afdp import' wrote the evidence: its signed predicates say
    ``"imported": true`` (the ledger marks every record of an imported branch alike), and
    so does its training record."""
    marks = [record.get("imported"), training.predicate.get("imported")]
    if genesis is not None:
        marks.append(genesis.predicate.get("imported"))
    return any(mark is True for mark in marks)


# -- small helpers ---------------------------------------------------------------------------
def _number(value: Any) -> float | None:
    # Records are read with strict_json (no NaN, no infinity); this is the second fence.
    return finite_number(value)


def _iso(text: Any) -> str | None:
    """Normalize a recorded time to ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC)."""
    moment = parse_time(text)
    if moment is None:
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _utc_bound(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
