"""Per-record verification checks: pure functions of a record's files and the trust policy.

They run in worker processes (one record at a time, no repository access), so they take
bytes and return plain data. The checks run in this order, and each failure names its
check so an auditor sees exactly what is wrong:

1. ``layout``     the record directory holds only the files a record may hold
2. ``envelope``   envelope.json is a canonical DSSE envelope matching its schema
3. ``schema``     the payload is an in-toto Statement v1 whose predicate matches its kind
4. ``identity``   subject and predicate name this branch, this position and this step;
                 further subjects are exactly the deployed artifact ``context.deployed_artifact`` names
5. ``digest``     the subject digest is the SHA-256 of the canonical result (result.json: canonical bytes); artifacts match
6. ``signer``     the signing key is in the trust policy and may sign for this service
7. ``signature``  the DSSE signature verifies over the envelope's PAE
   Keyless records (envelope keyid ``sigstore``) replace 6-7 with, in order:
   6k. ``keyless.bundle``     bundle.sigstore.json is a Sigstore DSSE bundle whose envelope
                             is exactly envelope.json's (payload, type, signature)
   6k. ``keyless.identity``   its certificate names a keyless identity of the trust policy,
                             with that identity's OIDC issuer
   7k. ``keyless.signature``  it verifies offline against the Sigstore trusted root
                             (chain, SCT, Rekor inclusion, DSSE signature); then ``signer``
                             checks the identity may sign for this service
8. ``timestamp``  enough tokens, each over this signature and chained to a trusted TSA root
9. ``time``       started <= finished <= first time-stamp (+ the policy's clock skew)
10. ``commit-signature``  the commit carrying the record has an SSH signature (git's
                 ``gpgsig``) by the record's trusted key, whenever that key's scheme has
                 an SSH form (see ``afdp.evidence.sshsig``); a signature that cannot be checked fails
5s. ``sources``  (genesis) the stored workflow and admission-policy files are the ones
                 the metadata names (digest and size); the metadata's workflow digest is
                 the one the record cites
11. ``commit`` (the part that needs the record) the commit message is exactly the one
                 AFDP writes for this verified record (``afdp.evidence.ledger.commit_message``):
                 subject, body and every AFDP-* trailer; only the AFDP-TSA URL is not
                 bound by any signature: it must be an http(s) URL and is reported as
                 unverified; without a valid ``timestamp-0.tsr`` the message cannot be
                 regenerated, which fails (closed). The commit's headers, committer and
                 raw message encoding are checked per commit (``afdp.evidence.store``).

Attacker-written bytes never raise out of here: JSON nested deeper than ``MAX_JSON_DEPTH``
is refused before it is parsed, and anything unexpected becomes a failure of the check
that was running.

The checks share one record's decoded state and one failure discipline
(:func:`check_record` runs them in this order and stops a record at its first
unrecoverable failure; :func:`check_records` does the same for a run of records, stage by
stage across them), so they run from here; what they read and establish
(:class:`RecordInput`, :class:`RecordFacts`, depth-bounded JSON) is in
:mod:`afdp.verify.facts`, the commit checks (10, 11) in :mod:`afdp.verify.commit_checks`,
and the heavier parts they lean on live apart (time-stamp tokens in
:mod:`afdp.evidence.timestamp`, Sigstore bundles in :mod:`afdp.evidence.keyless`, SSH
signatures in :mod:`afdp.evidence.sshsig`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from afdp.errors import AfdpError, UsageError
from afdp.evidence import jsondata, schemas
from afdp.evidence import records as rec
from afdp.evidence.canonical import canonical_bytes, sha256_hex
from afdp.evidence.keyless import KEYLESS_KEYID
from afdp.evidence.publickeys import verify_signature
from afdp.evidence.trust import TrustPolicy
from afdp.verify.commit_checks import (
    check_author,
    check_commit_signature,
    check_message,
    well_formed_url,
)
from afdp.verify.facts import (
    MAX_JSON_DEPTH,
    RecordFacts,
    RecordInput,
    SealList,
    Stop,
    json_depth_exceeds,
    load_json,
)

__all__ = [
    # defined in afdp.verify.facts and afdp.verify.commit_checks, re-exported here
    "MAX_JSON_DEPTH",
    "RecordFacts",
    "RecordInput",
    "json_depth_exceeds",
    "well_formed_url",
    "check_record",
    "check_records",
    "prepare",
]

_OPENSSL_REASON = re.compile(r'reason: "([^"]+)"', re.ASCII)

def prepare() -> None:
    """Load what checking records needs (modules, compiled schemas) before the first record.

    Worker processes forked after this call inherit all of it, instead of each loading it
    while checking its first record (about 80 ms of CPU per process).
    """
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa  # noqa: F401
    from securesystemslib.signer import SSlibKey  # noqa: F401

    from afdp.evidence import ledger, sshsig, store, timestamp  # noqa: F401

    for name in ("dsse-envelope.v1", "statement.v1", *sorted({f"predicate-{kind}.v1" for kind in rec.KIND_OF_PREDICATE.values()})):
        schemas.fast_validator(name)


def check_record(item: RecordInput, policy: TrustPolicy, roots: Any) -> RecordFacts:
    """Run checks 1-10 on one record and return what they established and found wrong."""
    return check_records([item], policy, roots)[0]


def check_records(items: Sequence[RecordInput], policy: TrustPolicy, roots: Any) -> list[RecordFacts]:
    """Run checks 1-10 on each record and return, in order, what they established and found wrong.

    Each record runs exactly the checks :func:`check_record` runs, in the same order, with
    the same results; across records they run stage by stage (every record's checks 1-5,
    then every record's signature checks 6-7, its tokens 8, its time 9 and commit
    signature 10, its commit message 11): each stage's code and data (JSON and schemas,
    OpenSSL's ECDSA, asn1crypto and rfc3161-client) stay in the processor's caches for a
    run of records, which costs about a fifth less CPU than one record at a time. A
    record that stops (or whose input raises) runs no later stage, as alone.
    """
    states: list[tuple[RecordFacts, Iterator[None]]] = []
    for item in items:
        facts = RecordFacts(item.position, item.directory)
        states.append((facts, _run(item, policy, roots, facts)))
    active = states
    while active:
        going = []
        for facts, stages in active:
            try:
                next(stages)
            except StopIteration:
                continue
            except Stop:
                continue
            except Exception as exc:  # attacker-written input must never escape as a traceback
                text = " ".join(str(exc).split())[:200]
                facts.fail(facts.stage, f"record cannot be checked: {type(exc).__name__}: {text}")
                continue
            going.append((facts, stages))
        active = going
    return [facts for facts, _ in states]


def _run(item: RecordInput, policy: TrustPolicy, roots: Any, facts: RecordFacts) -> Iterator[None]:
    """Checks 1-11 of one record, as a generator that pauses between stages (see
    :func:`check_records`); raises :class:`Stop` where the record cannot go on."""
    files = item.files
    # 1. layout
    match = rec.RECORD_DIR.fullmatch(item.directory.rsplit("/", 1)[-1])
    if not match:
        facts.fail("layout", f"{item.directory!r} is not a record directory name")
        raise Stop
    facts.token_files = {
        name: sha256_hex(data) for name, data in files.items() if rec.TIMESTAMP_FILE.fullmatch(name)
    }
    numbering = rec.token_names_problem(facts.token_files)
    if numbering:
        facts.fail("layout", numbering)
    envelope_bytes = files.get(rec.ENVELOPE_FILE)
    if envelope_bytes is None:
        facts.fail("layout", "no envelope.json: the record is unsigned")
        raise Stop
    facts.envelope_sha256 = sha256_hex(envelope_bytes)

    # 2. envelope
    facts.stage = "envelope"
    try:
        envelope = load_json(envelope_bytes, "envelope.json")
    except ValueError as exc:
        facts.fail("envelope", f"envelope.json is not JSON: {exc}")
        raise Stop from exc
    problems = [f"{p}: {m}" for p, m in schemas.iter_errors("dsse-envelope.v1", envelope)]
    if problems:
        reason = "; ".join(problems)
        facts.fail(
            "signature" if "signatures" in reason else "envelope",
            f"envelope does not match its schema: {reason}",
        )
        raise Stop
    try:
        payload = base64.b64decode(envelope["payload"], validate=True)
        signature = base64.b64decode(envelope["signatures"][0]["sig"], validate=True)
        statement = load_json(payload, "the payload")
    except (binascii.Error, ValueError) as exc:
        if canonical_bytes(envelope) != envelope_bytes:
            facts.fail("envelope", "envelope.json is not in RFC 8785 canonical form")
        facts.fail("envelope", f"payload or signature is not valid base64 JSON: {exc}")
        raise Stop from exc
    # Every byte of envelope.json must follow from what is verified below: the file is
    # the canonical re-encoding of its decoded payload, keyid and signature. Base64 has
    # other spellings of the same bytes (padding bits the decoder ignores), which would
    # change the record's digest while payload, signature and time-stamp stay valid.
    # That re-encoding is canonical JSON, so when it matches, the file is canonical too
    # (one canonicalization per record instead of two).
    if rec.envelope_json(payload, envelope["signatures"][0]["keyid"], signature) != envelope_bytes:
        if canonical_bytes(envelope) != envelope_bytes:
            facts.fail("envelope", "envelope.json is not in RFC 8785 canonical form")
        facts.fail(
            "envelope",
            "envelope.json differs from the canonical re-encoding of its payload, keyid and "
            "signature (non-canonical base64, or another payloadType)",
        )

    # 3. schema
    facts.stage = "schema"
    problems = [f"{p}: {m}" for p, m in schemas.iter_errors("statement.v1", statement)]
    if problems:
        facts.fail("schema", "statement: " + "; ".join(problems))
        raise Stop
    kind = rec.KIND_OF_PREDICATE[statement["predicateType"]]
    predicate = statement["predicate"]
    problems = [f"{p}: {m}" for p, m in schemas.iter_errors(f"predicate-{kind}.v1", predicate)]
    if problems:
        facts.fail("schema", f"{kind} predicate: " + "; ".join(problems))
        raise Stop
    if canonical_bytes(statement) != payload:
        facts.fail("schema", "statement payload is not in RFC 8785 canonical form")
    facts.kind, facts.sequence, facts.step = kind, predicate["sequence"], predicate["step"]["name"]
    facts.status, facts.summary = predicate["status"], predicate["summary"]
    facts.prev = predicate["prev"]["sha256"] if predicate["prev"] else None
    if predicate["prev_timestamps"] is not None:
        facts.prev_timestamps = {t["path"]: t["sha256"] for t in predicate["prev_timestamps"]}
    facts.started_at, facts.finished_at = predicate["started_at"], predicate["finished_at"]
    if predicate.get("imported") is True:  # the schema ties described_time to it
        facts.described_time = predicate.get("described_time")
    times = {}
    for name in ("started_at", "finished_at"):
        try:
            times[name] = rec.parse_time(predicate[name])
        except (ValueError, OverflowError):
            facts.fail("schema", f"{name} {predicate[name]!r} is not a valid RFC 3339 time")
            raise Stop from None

    # 4. identity: a record grafted from another branch or position names them
    facts.stage = "identity"
    sequence_text, step_name = match.group(1), match.group(2)
    expected_dir = rec.record_dir(int(sequence_text), step_name)
    if item.directory != expected_dir:
        facts.fail("layout", f"record directory {item.directory} should be {expected_dir}")
    expected_subject = f"afdp:{item.service}/{item.deployment}/{sequence_text}-{step_name}"
    if statement["subject"][0]["name"] != expected_subject:
        facts.fail(
            "identity",
            f"subject {statement['subject'][0]['name']!r} does not name this record ({expected_subject})",
        )
    # a further subject (a decision record's) is exactly the deployed artifact the signed
    # context names: an admission controller reading only the subject reads the same
    context = predicate["context"] if isinstance(predicate["context"], dict) else {}
    try:
        expected_artifacts = rec.artifact_subjects(context.get(rec.DEPLOYED_ARTIFACT))
    except UsageError as exc:
        facts.fail("identity", f"context.{rec.DEPLOYED_ARTIFACT} is malformed: {exc}")
        expected_artifacts = None
    if expected_artifacts is not None and statement["subject"][1:] != expected_artifacts:
        facts.fail(
            "identity",
            f"subjects after the first ({len(statement['subject']) - 1}) are not the deployed "
            f"artifact the record's context names ({len(expected_artifacts)} subject(s))",
        )
    if (predicate["service"], predicate["deployment"]) != (item.service, item.deployment):
        facts.fail(
            "identity",
            f"record belongs to {predicate['service']}/{predicate['deployment']}, not {item.service}/{item.deployment}",
        )
    if predicate["sequence"] != int(sequence_text) or predicate["step"]["name"] != step_name:
        facts.fail(
            "identity",
            f"predicate says record {predicate['sequence']} ({predicate['step']['name']}), directory says {sequence_text} ({step_name})",
        )

    # 5. digest
    facts.stage = "digest"
    digest_failures = len(facts.failures)
    keyless_record = envelope["signatures"][0]["keyid"] == KEYLESS_KEYID
    _check_digests(
        files, predicate, statement["subject"][0]["digest"]["sha256"], facts, keyless_record
    )
    if kind == rec.KIND_GENESIS:
        # 5s. sources: the workflow and admission policy files the genesis record carries
        facts.stage = "sources"
        _check_sources(predicate, facts)
    if kind == rec.KIND_SEAL and len(facts.failures) == digest_failures:
        # A long branch's seal lists so many records that its result lives in result.json;
        # it is read only once its digest has been checked above.
        result = predicate["result"]
        if result is None and predicate["result_ref"] is not None:
            with contextlib.suppress(ValueError):
                result = load_json(files[rec.RESULT_FILE], "result.json")
        if isinstance(result, dict) and isinstance(result.get("records"), list):
            entries = result["records"]
            if all(_seal_entry_ok(e) for e in entries):
                facts.seal_entries = SealList(entries)  # compact: it crosses to the main process
            else:
                facts.fail(
                    "seal",
                    "seal result lists records that are not {sequence: integer, step: string, sha256: hex}",
                )
                facts.seal_entries = []

    yield  # the next stage, after every record of the run got here
    # 6. signer  7. signature
    facts.stage = "signer"
    sig = envelope["signatures"][0]
    facts.keyid = sig["keyid"]
    keyless = sig["keyid"] == KEYLESS_KEYID
    trusted = None if keyless else policy.signer_for_keyid(sig["keyid"])
    if keyless:
        _check_keyless(files, envelope["payloadType"], payload, signature, item, policy, facts)
    elif trusted is None or trusted.key is None:
        facts.fail(
            "signer", f"signed by key {sig['keyid'][:16]}…, which the trust policy does not trust"
        )
    else:
        facts.signer = trusted.name
        if not trusted.may_sign_for(item.service):
            facts.fail("signer", f"signer {trusted.name} may not sign for service {item.service}")
        try:
            verify_signature(trusted.key, sig["keyid"], signature, rec.pae(envelope["payloadType"], payload))
        except Exception as exc:  # securesystemslib raises several types for a bad signature
            facts.fail(
                "signature",
                f"DSSE signature does not verify with key {trusted.name}: {type(exc).__name__}",
            )

    yield  # the next stage, after every record of the run got here
    # 8. timestamp
    facts.stage = "timestamp"
    _check_timestamps(files, signature, policy, roots, facts)

    # 10 (after 9, below). commit-signature needs the trusted key found in 6.
    commit_key = trusted.key if trusted is not None else None

    # 9. time
    facts.stage = "time"
    started, finished = times["started_at"], times["finished_at"]
    if started > finished:
        facts.fail(
            "time",
            f"started_at {predicate['started_at']} is after finished_at {predicate['finished_at']}",
        )
    if facts.timestamps:
        stamped = min(datetime.fromisoformat(t) for t, _ in facts.timestamps)
        if finished - policy.clock_skew > stamped:
            facts.fail(
                "time",
                f"finished_at {predicate['finished_at']} is after its time-stamp {stamped.isoformat()}",
            )

    yield  # the next stage, after every record of the run got here
    # 10. commit-signature
    facts.stage = "commit-signature"
    check_commit_signature(item, commit_key, facts)

    yield  # the next stage, after every record of the run got here
    # 11. commit (message): regenerated from the verified record
    facts.stage = "commit"
    label = _keyless_label(item.commit_message, facts, policy) if keyless else sig["keyid"]
    check_message(item, statement, label, facts)
    check_author(item, predicate, facts)


def _seal_entry_ok(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and type(entry.get("sequence")) is int
        and isinstance(entry.get("step"), str)
        and isinstance(entry.get("sha256"), str)
    )


def _keyless_label(message: str | None, facts: RecordFacts, policy: TrustPolicy) -> str:
    # The writer names the Sigstore instance it signed with; which root verifies the
    # bundle is the auditor's choice, so either instance name is accepted here.
    from afdp.evidence.keyless import INSTANCES

    if facts.keyless_identity is None:
        # the bundle did not verify (already a failure): its signer line cannot be
        # bound, the rest of the message still is
        found = re.findall(r"^AFDP-Signer: (.*)$", message or "", re.MULTILINE | re.ASCII)
        return found[0] if len(found) == 1 else ""
    identity = facts.keyless_identity
    for instance in INSTANCES:
        label = f"sigstore:{instance} {identity}".strip()
        if message is not None and f"\nAFDP-Signer: {label}\n" in message:
            return label
    return f"sigstore:{policy.sigstore_root.instance} {identity}".strip()


def _check_keyless(
    files: dict[str, bytes],
    payload_type: str,
    payload: bytes,
    signature: bytes,
    item: RecordInput,
    policy: TrustPolicy,
    facts: RecordFacts,
) -> None:
    from afdp.evidence.keyless import KeylessVerificationError, verify_keyless_bundle

    # 6k. keyless.bundle
    bundle = files.get(rec.BUNDLE_FILE)
    if bundle is None:
        facts.fail("keyless.bundle", f"keyless record without {rec.BUNDLE_FILE}")
        return
    if json_depth_exceeds(bundle):
        facts.fail("keyless.bundle", f"{rec.BUNDLE_FILE} nests deeper than {MAX_JSON_DEPTH} levels; refused unparsed")
        return
    # 6k. keyless.identity, 7k. keyless.signature (in verify_keyless_bundle's order)
    try:
        verified = verify_keyless_bundle(
            bundle, identities=policy.keyless_identities(), root=policy.sigstore_root
        )
    except KeylessVerificationError as exc:
        facts.fail(exc.check, exc.message)
        return
    except AfdpError as exc:  # the trusted root itself cannot be loaded: fail closed
        facts.fail("keyless.signature", exc.diagnostics())
        return
    if (verified.payload_type, verified.payload, verified.signature) != (
        payload_type,
        payload,
        signature,
    ):
        facts.fail("keyless.bundle", "the bundle signs another envelope than envelope.json")
        return
    facts.signer = verified.name
    facts.keyless_identity = verified.identity
    trusted = policy.keyless_signer_for(verified.identity, verified.issuer)
    if trusted is not None and not trusted.may_sign_for(item.service):
        facts.fail("signer", f"signer {trusted.name} may not sign for service {item.service}")
    if verified.canonical_json.encode() != bundle:
        # The bundle's JSON has spellings the signatures in it do not cover (white space,
        # member order, base64 forms): the file must be sigstore's own encoding of it.
        facts.fail(
            "keyless.bundle",
            f"{rec.BUNDLE_FILE} differs from the canonical re-encoding of the bundle it holds",
        )


def _check_sources(predicate: dict[str, Any], facts: RecordFacts) -> None:
    """The genesis record's ``metadata.workflow.file`` and ``metadata.admission_policy.file``
    (what ran and what admitted it) each name a stored artifact with the same SHA-256 and
    size (the artifact's bytes were matched to that digest by check 5), and
    ``metadata.workflow.sha256`` is the workflow digest every record cites. Genesis
    records written before files were stored name none, and pass.
    """
    result = predicate.get("result")
    metadata = result.get("metadata") if isinstance(result, dict) else None
    if not isinstance(metadata, dict):
        return
    artifacts = {a["path"]: a for a in predicate["artifacts"]}
    workflow = metadata.get("workflow")
    policy = metadata.get("admission_policy")
    cited = (predicate.get("workflow") or {}).get("sha256")
    if isinstance(workflow, dict) and "sha256" in workflow and workflow["sha256"] != cited:
        facts.fail("sources", "metadata.workflow.sha256 differs from the workflow digest the record cites")
    for where, holder in (("workflow", workflow), ("admission_policy", policy)):
        entry = holder.get("file") if isinstance(holder, dict) else None
        if entry is None:
            continue
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("sha256"), str)
            and isinstance(entry.get("size"), int)
        ):
            facts.fail("sources", f"metadata.{where}.file is not {{path, sha256, size}}")
            continue
        path = entry.get("path")
        if path is None:
            if "withheld" not in entry:
                facts.fail("sources", f"metadata.{where}.file names no stored file and no reason")
            continue
        artifact = artifacts.get(path) if isinstance(path, str) else None
        if artifact is None:
            facts.fail("sources", f"the {where} file {path!r} is not stored in the record")
        elif (artifact["sha256"], artifact["size"]) != (entry["sha256"], entry["size"]):
            facts.fail(
                "sources",
                f"the stored {where} file {path!r} does not match the digest recorded in metadata.{where}.file",
            )


def _result_file_problem(data: bytes) -> str | None:
    """Why result.json is not the canonical result (RFC 8785) AFDP writes, or None.

    Its digest is the subject's, so the subject digest is "the SHA-256 of the canonical
    result" only if these bytes are canonical. Bytes that are not (a key named twice,
    which readers take as its first or its last value; NaN; another spacing) would be
    signed, verified and then read differently by different tools.
    """
    try:
        if json_depth_exceeds(data):
            return f"nests deeper than {MAX_JSON_DEPTH} levels"
        value = jsondata.load_json(data)
    except ValueError as exc:
        return f"is not JSON AFDP reads: {exc}"
    try:
        canonical = canonical_bytes(value)
    except UsageError as exc:
        return f"cannot be the canonical result: {exc}"
    if canonical != data:
        return "is not in RFC 8785 canonical form (AFDP writes the canonical result)"
    return None


def _check_digests(
    files: dict[str, bytes],
    predicate: dict[str, Any],
    subject_digest: str,
    facts: RecordFacts,
    keyless: bool = False,
) -> None:
    allowed = {rec.ENVELOPE_FILE, rec.BUNDLE_FILE} if keyless else {rec.ENVELOPE_FILE}
    if predicate["result_ref"] is not None:
        ref = predicate["result_ref"]
        allowed.add(rec.RESULT_FILE)
        data = files.get(rec.RESULT_FILE)
        if data is None:
            facts.fail("digest", "result.json is referenced but missing")
        elif sha256_hex(data) != ref["sha256"] or len(data) != ref["size"]:
            facts.fail("digest", "result.json does not match the digest and size in the record")
        elif ref["sha256"] != subject_digest:
            facts.fail("digest", "result.json digest differs from the subject digest")
        elif predicate["result"] is not None:
            facts.fail("digest", "result is both inline and in result.json")
        else:
            problem = _result_file_problem(data)
            if problem:
                facts.fail("digest", f"result.json {problem}")
    else:
        actual = sha256_hex(canonical_bytes(predicate["result"]))
        if actual != subject_digest:
            facts.fail(
                "digest",
                f"result digest {actual[:16]}… does not match the subject digest {subject_digest[:16]}…",
            )
    for artifact in predicate["artifacts"]:
        allowed.add(artifact["path"])
        data = files.get(artifact["path"])
        if data is None:
            facts.fail("digest", f"artifact {artifact['path']!r} is listed but missing")
        elif sha256_hex(data) != artifact["sha256"] or len(data) != artifact["size"]:
            facts.fail("digest", f"artifact {artifact['path']!r} does not match its recorded digest")
    extra = sorted(n for n in files if n not in allowed and not rec.TIMESTAMP_FILE.fullmatch(n))
    if extra:
        facts.fail("layout", f"unexpected files in the record: {', '.join(map(repr, extra))}")


def _timestamp_reason(exc: AfdpError) -> str:
    """One line: the reason without its check prefix, an OpenSSL error stack as its reasons."""
    text = str(getattr(exc, "message", None) or exc)
    check = getattr(exc, "check", None)
    if check and text.startswith(f"{check}: "):
        text = text[len(check) + 2 :]
    reasons = _OPENSSL_REASON.findall(text)
    if reasons or "ErrorStack" in text:
        head = text.split("ErrorStack", 1)[0].rstrip(" :([")
        detail = "; ".join(dict.fromkeys(reasons)) or "OpenSSL verification error"
        text = f"{head} (OpenSSL: {detail})" if head else f"OpenSSL: {detail}"
    return " ".join(text.split())[:300]


def _check_timestamps(
    files: dict[str, bytes], signature: bytes, policy: TrustPolicy, roots: Any, facts: RecordFacts
) -> None:
    from afdp.evidence.timestamp import verify_timestamp

    tokens = sorted(n for n in files if rec.TIMESTAMP_FILE.fullmatch(n))
    for name in tokens:
        try:
            verified = verify_timestamp(files[name], signature, roots)
        except AfdpError as exc:
            check = getattr(exc, "check", "timestamp")
            facts.fail(
                check if check.startswith("timestamp") else "timestamp",
                f"{name}: {_timestamp_reason(exc)}",
            )
            continue
        facts.timestamps.append((verified.gen_time.isoformat(), verified.tsa_name))
        facts.token_times[name] = verified.gen_time
    if len(facts.timestamps) < policy.required_timestamps and not any(
        c.startswith("timestamp") for c, _ in facts.failures
    ):
        facts.fail(
            "timestamp",
            f"{len(facts.timestamps)} valid time-stamp token(s); the trust policy requires {policy.required_timestamps}",
        )
