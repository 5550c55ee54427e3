"""What a report shows of a branch: the records' contents, read after verification.

Verification (``afdp.verify``) gives the verdict and the envelope digest of every
record. This module then reads each record's envelope from the commit verification
named and accepts it only if its SHA-256 is the digest verification established, so a
report never shows content other than what was verified. On a branch that failed
verification the contents are still shown (an auditor needs to see what is there), but
every record the report shows is marked with whether its digest matched.

Step results are read defensively: the report knows the shapes AFDP's runner writes
(metric series as ``{"metric", "unit", "samples": [[t, v], ...]}``, an analysis result
per ``evidence-schema/analysis.v1.schema.json``, a decision outcome with ``decision``
and ``action``), looks for them anywhere in a step's result or its JSON attachments, and
shows a plain ledger branch with none of them as just its records.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from afdp.evidence import records as rec
from afdp.evidence.canonical import sha256_hex
from afdp.evidence.ledger import decode_envelope
from afdp.evidence.store import EvidenceStore
from afdp.verify.verifier import BranchReport, VerifiedRecord

#: How deep the report looks inside a step result for metric series and analyses.
_MAX_DEPTH = 6
#: Keys that say which side of the deploy a series belongs to.
_BASELINE_WORDS = ("baseline", "pre", "before")
_IMPACT_WORDS = ("impact", "post", "after")
#: A capture's ``role`` (what the runner writes, or a ledger writer's own words) -> phase.
_ROLES = {"before": "baseline", "baseline": "baseline", "after": "impact", "impact": "impact"}


@dataclass(frozen=True)
class RecordView:
    """One record as the report shows it."""

    verified: VerifiedRecord
    predicate: dict[str, Any] | None
    result: Any
    digest_matches: bool
    attachments: dict[str, Any] = field(default_factory=dict)

    @property
    def sequence(self) -> int:
        return self.verified.sequence


@dataclass(frozen=True)
class Series:
    """One metric series: which side of the deploy, and its (unix seconds, value) samples."""

    metric: str
    phase: str  # baseline | impact | other
    unit: str
    samples: tuple[tuple[float, float], ...]
    step: str
    sequence: int
    provenance: dict[str, Any]


@dataclass(frozen=True)
class Findings:
    """What the report found in the records beyond the chain itself."""

    deployment: dict[str, Any]
    series: tuple[Series, ...]
    analysis: dict[str, Any] | None
    analysis_record: int | None
    decision: dict[str, Any] | None
    decision_record: int | None
    deployed_at: float | None


def read_records(store: EvidenceStore, report: BranchReport) -> list[RecordView]:
    """Return the contents of every record verification saw, in chain order.

    A record whose envelope is missing or whose digest differs from the verified one is
    returned with ``digest_matches=False`` and no content.
    """
    views: list[RecordView] = []
    for record in report.records:
        predicate: dict[str, Any] | None = None
        result: Any = None
        attachments: dict[str, Any] = {}
        matches = False
        try:
            commit = store.repo.get(record.commit)
            if commit is None:
                raise KeyError(record.commit)
            directory = rec.record_dir(record.sequence, record.step)
            files = store.list_dir(commit.tree, directory)
            envelope = files.get(rec.ENVELOPE_FILE)
            if envelope is not None and record.envelope_sha256:
                matches = sha256_hex(envelope) == record.envelope_sha256
            if matches and envelope is not None:
                predicate = decode_envelope(envelope).get("predicate")
                if isinstance(predicate, dict):
                    result = predicate.get("result")
                    ref = predicate.get("result_ref")
                    if isinstance(ref, dict) and rec.RESULT_FILE in files:
                        data = files[rec.RESULT_FILE]
                        if sha256_hex(data) == ref.get("sha256"):
                            result = json.loads(data)
                    for artifact in predicate.get("artifacts") or []:
                        name = artifact.get("path") if isinstance(artifact, dict) else None
                        blob = files.get(name) if isinstance(name, str) else None
                        if (
                            name is None
                            or blob is None
                            or sha256_hex(blob) != artifact.get("sha256")
                        ):
                            continue
                        try:
                            attachments[name] = json.loads(blob)
                        except (ValueError, UnicodeDecodeError):
                            attachments[name] = None  # raw data: listed, not parsed
                else:
                    predicate = None
        except (ValueError, TypeError, KeyError, AttributeError):
            predicate, result, attachments, matches = None, None, {}, False
        views.append(RecordView(record, predicate, result, matches, attachments))
    return views


def find(views: list[RecordView]) -> Findings:
    """Return the deployment facts, metric series, analysis and decision in the records."""
    deployment: dict[str, Any] = {}
    series: list[Series] = []
    analysis: tuple[int, dict[str, Any]] | None = None
    decision: tuple[int, dict[str, Any]] | None = None
    decision_rank = -1
    analysis_rank = -1
    deployed_at: float | None = None
    mark_written: float | None = None
    for view in views:
        predicate = view.predicate or {}
        step = view.verified.step
        if view.verified.kind == rec.KIND_GENESIS and isinstance(view.result, Mapping):
            metadata = view.result.get("metadata")
            if isinstance(metadata, Mapping):
                _merge_deployment(deployment, metadata)
                _merge_sources(deployment, metadata)
                # the team comes from the genesis record only (null: none recorded, unknown)
                given = metadata.get("deployment")
                team = given.get("team") if isinstance(given, Mapping) else None
                deployment.setdefault("team", team if isinstance(team, str) else None)
            if "opened_at" in view.result:
                deployment.setdefault("opened_at", view.result["opened_at"])
            continue
        if view.verified.kind != rec.KIND_STEP:
            continue
        sources: list[tuple[str, Any]] = [("", view.result)]
        sources += [(name, value) for name, value in view.attachments.items()]
        found_context = predicate.get("context")
        context: Mapping[str, Any] = found_context if isinstance(found_context, Mapping) else {}
        role = view.result.get("role") if isinstance(view.result, Mapping) else None
        hint = " ".join(
            str(x) for x in (step, context.get("phase", ""), context.get("kind", "")) if x
        )
        # The runner says which side of the deploy a capture is ("before"/"after"; a
        # ledger writer may say "baseline"/"impact"). That decides, not words: a `--phase
        # post` run (the GitHub Action's default) reads its baseline from history, and
        # "post" in its context, or a metric named after_hours, must not make it impact.
        side = _ROLES.get(role) if isinstance(role, str) else None
        for origin, value in sources:
            for path, node in _walk(value):
                where = " ".join([hint, origin, *path])
                if _is_series(node):
                    series.append(_series(node, where, step, view.sequence, side=side))
                elif _is_analysis(node) and (
                    # The analysis record itself (its signed context names an analyze
                    # step) wins over any other record holding an analysis-like document.
                    analysis is None
                    or (_analysis_rank(view, node, step) >= max(analysis_rank, 1))
                ):
                    analysis = (view.sequence, dict(node))
                    analysis_rank = _analysis_rank(view, node, step)
                elif _is_decision(node) and (
                    # The decision record itself (a decide step's, or a gate's that stopped
                    # the run, as its signed context names it) wins over every copy other
                    # records carry (training record, action payloads, stores): a copy that
                    # says otherwise must not become the report's verdict. Without such a
                    # record (ledger-written evidence), the fullest outcome wins.
                    _decision_rank(view, node) >= (decision_rank if decision is not None else -1)
                ):
                    decision_rank = _decision_rank(view, node)
                    decision = (view.sequence, dict(node))
                    outcome = (
                        view.result.get("action") if isinstance(view.result, Mapping) else None
                    )
                    if isinstance(outcome, Mapping) and "status" in outcome:
                        decision[1]["action_result"] = dict(outcome)
        if isinstance(view.result, Mapping):
            _merge_deployment(deployment, view.result)
            if "mark" in step and deployed_at is None:
                # The time the mark records (the runner's `outputs.deployed_at`, which is
                # `--deployed-at` when given), not when the mark record was written: a
                # `--phase post` run writes its mark well after the deploy.
                outputs = view.result.get("outputs")
                deployed_at = _first_time(view.result) or (
                    _first_time(outputs) if isinstance(outputs, Mapping) else None
                )
                if deployed_at is None:
                    mark_written = _time(predicate.get("finished_at"))
    if deployed_at is None:
        deployed_at = (
            _time(deployment.get("deployed_at")) or mark_written or _time(deployment.get("time"))
        )
    return Findings(
        deployment,
        tuple(series),
        analysis[1] if analysis else None,
        analysis[0] if analysis else None,
        decision[1] if decision else None,
        decision[0] if decision else None,
        deployed_at,
    )


# Deployment facts the report shows in "who, what, when", by the keys runners use.
DEPLOYMENT_KEYS: dict[str, tuple[str, ...]] = {
    "deployer": ("deployer", "deployer_id", "deployed_by", "actor"),
    "commit": ("commit", "git_commit", "sha", "revision"),
    "version": ("version", "image", "release"),
    "environment": ("environment", "env"),
    "changed_files": ("changed_files", "files_changed"),
    "change_size": ("deployment_size", "change_size", "lines_changed"),
    "deployed_at": ("deployed_at", "deployment_time", "marked_at"),
    "repository": ("repository", "repo_url", "source_repository"),
    "workflow_run": ("workflow_run", "run_url", "flow_run_id"),
    "trigger": ("trigger",),
}


def _merge_sources(target: dict[str, Any], metadata: Mapping[str, Any]) -> None:
    """The workflow file and admission policy the genesis record stores (name: path and
    SHA-256), so the report says exactly what ran and what admitted it."""
    for name, key in (("workflow_file", "workflow"), ("admission_policy", "admission_policy")):
        holder = metadata.get(key)
        if not isinstance(holder, Mapping):
            continue
        entry = holder.get("file")
        if isinstance(entry, Mapping) and isinstance(entry.get("sha256"), str):
            label = holder.get("name") if isinstance(holder.get("name"), str) else ""
            stored = entry.get("path") if isinstance(entry.get("path"), str) else "not stored"
            target.setdefault(name, f"{label} ({stored}, sha256 {entry['sha256'][:16]}…)".strip())


def _merge_deployment(target: dict[str, Any], source: Mapping[str, Any]) -> None:
    for name, keys in DEPLOYMENT_KEYS.items():
        if name in target:
            continue
        for key in keys:
            value = source.get(key)
            if value not in (None, "", [], {}):
                target[name] = value
                break
    nested = source.get("deployment")
    if isinstance(nested, Mapping):
        _merge_deployment(target, nested)


def _walk(
    value: Any, path: tuple[str, ...] = (), depth: int = 0
) -> Iterator[tuple[tuple[str, ...], Any]]:
    if depth > _MAX_DEPTH:
        return
    if isinstance(value, Mapping):
        yield path, value
        if _is_series(value) or _is_analysis(value) or _is_decision(value):
            return
        for key, child in value.items():
            yield from _walk(child, (*path, str(key)), depth + 1)
    elif isinstance(value, list) and len(value) <= 1000:
        for child in value:
            if isinstance(child, Mapping):
                yield from _walk(child, path, depth + 1)


def _is_series(node: Mapping[str, Any]) -> bool:
    samples = node.get("samples")
    return isinstance(node.get("metric"), str) and isinstance(samples, list)


def _is_analysis(node: Mapping[str, Any]) -> bool:
    metrics = node.get("metrics")
    if not isinstance(metrics, Mapping) or not metrics:
        return False
    return all(
        isinstance(m, Mapping) and ("impact" in m or "status" in m or "change" in m)
        for m in metrics.values()
    )


def _is_decision(node: Mapping[str, Any]) -> bool:
    """A decision outcome: ``action`` and ``decision`` are names (not nested documents)."""
    plain = (str, type(None))
    return (
        "action" in node
        and ("decision" in node or "success_criteria_met" in node)
        and isinstance(node.get("action"), plain)
        and isinstance(node.get("decision"), plain)
        # a record that says no decision was made (a training record's copy with both
        # null, or "none") is not a decision outcome
        and any(_named(node.get(key)) for key in ("action", "decision"))
    )


def _step_kind(view: RecordView) -> str | None:
    context = (view.predicate or {}).get("context")
    step = context.get("step") if isinstance(context, Mapping) else None
    kind = step.get("kind") if isinstance(step, Mapping) else None
    return kind if isinstance(kind, str) else None


def _analysis_rank(view: RecordView, node: Mapping[str, Any], step: str) -> int:
    """2: the analysis of an analysis record (its signed context names an ``analyze``
    step); 1: found in a step named like one; 0: anywhere else."""
    result = view.result if isinstance(view.result, Mapping) else {}
    if _step_kind(view) == "analyze" and result.get("analysis") is node:
        return 2
    return 1 if "analy" in step else 0


def _decision_rank(view: RecordView, node: Mapping[str, Any]) -> int:
    """How much a decision outcome found in a record is the decision itself: 2 in a
    decision record (its signed context names a ``decide`` step, or a ``gate`` that
    stopped the run), 1 a copy with its reason, 0 a bare copy. Later records win ties."""
    kind = _step_kind(view)
    result = view.result if isinstance(view.result, Mapping) else {}
    if result.get("decision") is node and (kind == "decide" or (kind == "gate" and result.get("stop") is True)):
        return 2
    return 1 if "reason" in node else 0


def _named(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() not in ("", "none", "null")


def _phase(where: str) -> str:
    words = where.lower().replace("_", " ").replace("-", " ").split()
    if any(w in _IMPACT_WORDS for w in words):
        return "impact"
    if any(w in _BASELINE_WORDS for w in words):
        return "baseline"
    return "other"


def _series(
    node: Mapping[str, Any], where: str, step: str, sequence: int, *, side: str | None = None
) -> Series:
    samples: list[tuple[float, float]] = []
    for item in node.get("samples") or []:
        if isinstance(item, (list, tuple)) and len(item) == 2:
            t, v = _number(item[0]), _number(item[1])
            if t is not None and v is not None:
                samples.append((t, v))
        else:
            v = _number(item)
            if v is not None:
                samples.append((float(len(samples)), v))
    given = node.get("phase")
    phase = given if given in ("baseline", "impact") else side or _phase(where)
    found = node.get("provenance")
    provenance: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    return Series(
        str(node["metric"]),
        str(phase),
        str(node.get("unit") or ""),
        tuple(samples),
        step,
        sequence,
        dict(provenance),
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _time(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return rec.parse_time(value).timestamp()
        except ValueError:
            return None
    return None


def _first_time(result: Mapping[str, Any]) -> float | None:
    for key in DEPLOYMENT_KEYS["deployed_at"] + ("time", "timestamp", "at"):
        found = _time(result.get(key))
        if found is not None:
            return found
    return None
