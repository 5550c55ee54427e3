"""One verified record of a branch read back, and a training record checked against the others.

:func:`load_history <afdp.learn.history.load_history>` builds a row from a training
record only when what it says agrees with the verified records it stands on:

1. each record is read from the commit verification named, under the envelope digest
   verification established (:func:`read_record`), its result as strict I-JSON;
2. the training record matches ``training-record.v1`` (:func:`check_training`);
3. its decision and label are the decision record's, or the stored workflow's
   ``training_label`` (:func:`check_decision`);
4. its deployment facts are the genesis record's and the ``mark_deployment_time``
   record's (:func:`check_facts`);
5. its impacts are the cited analysis's, number for number (:func:`check_impacts`).

A branch that fails one is left out as :class:`Unusable`, with the reason.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pygit2

from afdp.evidence import records as rec
from afdp.evidence.canonical import canonical_bytes, sha256_hex
from afdp.evidence.schemas import load_schema, validate
from afdp.evidence.store import EvidenceStore
from afdp.learn.features import WEEKDAYS, finite_number
from afdp.learn.ijson import NotIJson, strict_json
from afdp.verify.report import VerifiedRecord

__all__ = [
    "CONTRADICTS_ANALYSIS",
    "CONTRADICTS_DECISION",
    "CONTRADICTS_FACTS",
    "NOT_I_JSON",
    "TRAINING_SCHEMA",
    "Read",
    "Unusable",
    "check_decision",
    "check_facts",
    "check_impacts",
    "check_training",
    "parse_time",
    "read_record",
]

TRAINING_SCHEMA = "training-record.v1"


class Unusable(Exception):
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
class Read:
    record: VerifiedRecord
    predicate: Mapping[str, Any]
    result: Any


def read_record(store: EvidenceStore, record: VerifiedRecord) -> Read:
    """Read one verified record's predicate and result, under the verified digest."""
    try:
        commit = store.repo.get(record.commit)
        if not isinstance(commit, pygit2.Commit):
            raise Unusable(f"record {record.sequence}: commit {record.commit[:12]} cannot be read")
        directory = rec.record_dir(record.sequence, record.step)
        envelope = store.read_blob(commit.tree, f"{directory}/{rec.ENVELOPE_FILE}")
        if envelope is None or sha256_hex(envelope) != record.envelope_sha256:
            raise Unusable(f"record {record.sequence} changed after verification")
        statement = strict_json(base64.b64decode(strict_json(envelope)["payload"], validate=True))
        predicate = statement.get("predicate") if isinstance(statement, Mapping) else None
        if not isinstance(predicate, dict):
            raise Unusable(f"record {record.sequence} has no predicate")
        result = predicate.get("result")
        ref = predicate.get("result_ref")
        if isinstance(ref, dict):
            data = store.read_blob(commit.tree, f"{directory}/{rec.RESULT_FILE}")
            if data is None or sha256_hex(data) != ref.get("sha256"):
                raise Unusable(f"record {record.sequence}: result file does not match its digest")
            # verification holds result.json to the canonical result (check 5); the
            # strict reader stays behind it: NaN, 1e400, a key named twice are refused.
            result = strict_json(data)
        return Read(record, predicate, result)
    except NotIJson as exc:
        raise Unusable(f"record {record.sequence} ({record.step}) is not I-JSON: {exc}", NOT_I_JSON) from exc
    except (ValueError, TypeError, KeyError, AttributeError, binascii.Error) as exc:
        raise Unusable(f"record {record.sequence} cannot be read: {exc}") from exc


# -- cross-checks: what the training record says against the other verified records ---------
#: The training record's decision fields, each the decision record's field of the same name.
_DECISION_FIELDS = ("decision", "action", "label", "success_criteria_met")


def _decision_of(read: Read) -> Mapping[str, Any] | None:
    """The decision a decisions (or stopping gate) record holds, as the runner takes it."""
    result = read.result
    found = result.get("decision") if isinstance(result, Mapping) else None
    return found if isinstance(found, Mapping) and "action" in found else None


def check_decision(
    store: EvidenceStore, where: str, doc: Mapping[str, Any], training: Read, before: Sequence[Read], genesis: Read | None
) -> None:
    """The training record's decision and label must be those of the decision record.

    The run copies the last decision recorded before the training record (a
    ``decisions`` step's, or a gate's that stopped the run) into the training record, and
    its label unless the workflow's ``generate_training_record`` step names its own
    ``training_label``. A training record that says ``success`` while the signed decision
    record of its branch says ``rollback`` would teach a dataset the wrong label.

    Raises:
        Unusable: naming the field, both values and the decision record.
    """
    source = next(((r, d) for r in reversed(before) if (d := _decision_of(r)) is not None), None)
    given = doc["decision"]
    if source is None:
        if given is not None:
            raise Unusable(f"{where} gives decision {given.get('decision')!r} ({given.get('action')}), "
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
        raise Unusable(f"{where} gives no decision, {what} {decided.get('action')} ({decided.get('decision')!r})", CONTRADICTS_DECISION)
    for name in _DECISION_FIELDS:
        if canonical_bytes(given.get(name)) != canonical_bytes(decided.get(name)):
            raise Unusable(f"{where} gives decision.{name} {given.get(name)!r}, {what} {decided.get(name)!r}", CONTRADICTS_DECISION)
    if doc["label"] != decided.get("label"):
        workflow = _workflow_of(store, genesis) if genesis is not None else None
        _check_label_override(where, doc, training, workflow, (what, decided.get("label")))


def _check_label_override(
    where: str, doc: Mapping[str, Any], training: Read, workflow: Any, decided: tuple[str, Any] | None
) -> None:
    """A label other than the decision's is the workflow's own: the ``training_label`` of
    the step that wrote the training record, in the workflow the genesis record stores.

    Raises:
        Unusable: no stored workflow gives that label to that step.
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
    raise Unusable(f"{where} gives label {doc['label']!r}, {said}, {stored}", CONTRADICTS_DECISION)


def _workflow_of(store: EvidenceStore, genesis: Read) -> Any:
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


def check_facts(
    where: str, doc: Mapping[str, Any], training: Read, before: Sequence[Read], genesis: Read | None
) -> None:
    """The deployment facts a row takes from the training record must agree with the other
    records that hold them: the genesis record's ``metadata.deployment`` (environment,
    version, commit, size, changed files), the last ``mark_deployment_time`` record
    (``deployed_at``), the time itself (hour and weekday), and the signed import marker.
    A fact one record leaves unknown (null) contradicts nothing.

    Raises:
        Unusable: naming the fact, both values and the record that holds the other.
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
                raise Unusable(f"{where} gives {name} {given!r}, the genesis record {value!r}", CONTRADICTS_FACTS)
    moment = parse_time(features["deployed_at"])
    marked = next((r for r in reversed(before) if _marked_time(r) is not None), None)
    if moment is not None and marked is not None and parse_time(_marked_time(marked)) != moment:
        raise Unusable(f"{where} gives deployed_at {features['deployed_at']!r}, the {marked.record.step} record "
                        f"(record {marked.record.sequence}) {_marked_time(marked)!r}", CONTRADICTS_FACTS)
    derived: dict[str, Any] = {"hour_utc": None, "weekday_utc": None, "weekday_name": None}
    if moment is not None:
        derived = {"hour_utc": moment.hour, "weekday_utc": moment.weekday(), "weekday_name": WEEKDAYS[moment.weekday()]}
    for name, value in derived.items():
        if features[name] != value:
            raise Unusable(f"{where} gives {name} {features[name]!r}, its deployed_at {features['deployed_at']!r} is {value!r}", CONTRADICTS_FACTS)
    signed = training.predicate.get("imported") is True or (genesis is not None and genesis.predicate.get("imported") is True)
    if (doc.get("imported") is True) != signed:
        raise Unusable(f"{where} says imported {doc.get('imported') is True}, its signed predicates {signed}", CONTRADICTS_FACTS)


def _marked_time(read: Read) -> str | None:
    outputs = read.result.get("outputs") if isinstance(read.result, Mapping) else None
    value = outputs.get("deployed_at") if isinstance(outputs, Mapping) else None
    return value if isinstance(value, str) and parse_time(value) is not None else None


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


def check_impacts(where: str, impacts: Mapping[str, Any], analysis: Mapping[str, Any] | None) -> None:
    """The training record's impacts must be the cited analysis's, number for number.

    The row's impact columns are read from the training record; the analysis it cites is
    where they were measured. A training record whose impacts no cited analysis holds,
    or that differ from it, is not used (its numbers would not come from the evidence
    they cite).

    And the other way round: every metric the cited analysis analysed is in the training
    record (the run copies them all). One left out would leave the row without its impact,
    and a deployment whose omitted metric degraded would read as one that did not.

    Raises:
        Unusable: naming the first metric and field that differ.
    """
    if analysis is not None:
        left_out = sorted(str(m) for m in analysis["metrics"] if m not in impacts)
        if left_out:
            raise Unusable(
                f"{where} gives no impacts of {', '.join(left_out)}, which the cited analysis analysed",
                CONTRADICTS_ANALYSIS,
            )
    if not impacts:
        return
    if analysis is None:
        raise Unusable(f"{where} gives impacts but cites no analysis that holds them", CONTRADICTS_ANALYSIS)
    metrics = analysis["metrics"]
    for metric, impact in sorted(impacts.items()):
        source = metrics.get(metric)
        if not isinstance(source, Mapping) or not isinstance(impact, Mapping):
            raise Unusable(f"{where} gives impacts of {metric}, which the cited analysis does not analyse", CONTRADICTS_ANALYSIS)
        for field, path in _ANALYSIS_FIELDS:
            value: Any = source
            for key in path:
                value = value.get(key) if isinstance(value, Mapping) else None
            if canonical_bytes(impact.get(field)) != canonical_bytes(value):
                raise Unusable(
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
    schema = load_schema(TRAINING_SCHEMA)
    if json.dumps(schema).count('"format"') != 1 or schema["properties"]["features"]["properties"]["deployed_at"].get("format") != "date-time":
        return None
    return jsonschema_rs.Draft202012Validator(schema, validate_formats=False)


def check_training(document: dict[str, Any]) -> None:
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
    validate(TRAINING_SCHEMA, document, what="training record")


def parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else None
