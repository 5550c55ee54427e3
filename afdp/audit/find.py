"""Lookup across deployments: "what happened when this commit (or image) was deployed?"

:func:`find_deployments` answers from an index of every AFDP branch's facts (service,
deployment, commit, image, time, decision), kept in ``<git dir>/afdp/find-index.json``
so a lookup over many branches does not re-read every record. The index is a cache,
never evidence, and is never trusted over the branches:

1. every entry is keyed by its branch's head commit: a branch whose head moved (or
   that is new) is read again, an entry whose branch is gone is dropped;
2. every entry carries an HMAC-SHA256 under a key kept outside the repository (the
   user's ``$XDG_CONFIG_HOME/afdp/index.key``, 0600, or ``$AFDP_INDEX_KEY``): an entry
   edited by anyone without that key (whoever can write the evidence repository) fails
   its MAC and is read again from the branch, so it can neither hide a deployment
   nor invent one;
3. every hit is read again from its branch, at the head verification saw, and (with a
   trust policy) verified: the facts printed are the evidence's, with its verdict.

Facts are read without verification (like ``afdp log``); a hit's ``verification``
says what the auditor's trust policy made of its branch: ``verified``, ``unsealed``
(clean, deployment in progress), ``failed`` (with the first failure) or ``unverified``
(no trust policy given).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pygit2

from afdp.errors import ConfigurationError, StorageError, UsageError
from afdp.evidence import records as rec
from afdp.evidence.canonical import canonical_bytes
from afdp.evidence.ledger import decode_envelope
from afdp.evidence.names import BRANCH_PREFIX
from afdp.evidence.store import MAX_ENVELOPE_BYTES, EvidenceStore, common_dir
from afdp.evidence.trust import TrustPolicy

INDEX_FILE = "afdp/find-index.json"
#: 2: facts gained ``team`` (an index of version 1 is read again from the branches).
INDEX_VERSION = 2
KEY_ENV = "AFDP_INDEX_KEY"


@dataclass(frozen=True)
class DeploymentFacts:
    """What one branch says about its deployment (read, not verified)."""

    ref: str
    service: str
    deployment: str
    head: str
    records: int = 0
    sealed: bool = False
    opened_at: str | None = None
    deployed_at: str | None = None
    commit: str | None = None
    image: str | None = None
    deployer: str | None = None
    #: the team the genesis record names (None: not recorded, i.e. unknown)
    team: str | None = None
    environment: str | None = None
    version: str | None = None
    #: the last decision recorded (decide step, or a gate that stopped the run)
    decision: dict[str, Any] | None = None
    #: the decision record's sequence and the artifact subjects its statement names
    decision_record: int | None = None
    subjects: list[dict[str, Any]] = field(default_factory=list)

    @property
    def time(self) -> str | None:
        return self.deployed_at or self.opened_at

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> DeploymentFacts:
        """Raises ValueError/TypeError/KeyError for anything that is not this form."""
        if not isinstance(data, dict):
            raise TypeError("not an object")
        facts = cls(**data)
        if not isinstance(facts.head, str) or not isinstance(facts.ref, str):
            raise TypeError("bad head or ref")
        return facts


@dataclass(frozen=True)
class Query:
    """What to look for; every given criterion must hold."""

    commit: str | None = None
    image_digest: str | None = None
    image_name: str | None = None
    service: str | None = None
    since: datetime | None = None
    team: str | None = None

    def matches(self, facts: DeploymentFacts) -> bool:
        if self.commit is not None and not (facts.commit or "").lower().startswith(self.commit):
            return False
        if self.image_digest is not None:
            if facts.image is None:
                return False
            try:
                name, digest = rec.parse_image(facts.image)
            except UsageError:
                return False
            if digest != self.image_digest or (self.image_name is not None and name != self.image_name):
                return False
        if self.service is not None and facts.service != self.service:
            return False
        if self.team is not None and facts.team != self.team:
            return False
        if self.since is not None:
            moment = _time(facts.time)
            if moment is None or moment < self.since:
                return False
        return True

    def to_json(self) -> dict[str, Any]:
        return {
            "commit": self.commit,
            "image": (f"{self.image_name}@" if self.image_name else "") + f"sha256:{self.image_digest}" if self.image_digest else None,
            "service": self.service,
            "team": self.team,
            "since": rec.format_time(self.since) if self.since else None,
        }


def make_query(*, commit: str | None, image: str | None, service: str | None, since: str | None,
               team: str | None = None) -> Query:
    """Return the query for ``afdp find``'s options.

    Raises:
        UsageError: no criterion; a commit that is not 7-64 hex digits; an image not by
            digest; --since that is not a date or RFC 3339 time; a bad service or team name.
    """
    from afdp.evidence.names import check_name
    from afdp.pipeline.runner.request import check_team

    if not (commit or image or service or team is not None):
        raise UsageError("give --commit SHA, --image sha256:HEX, --service NAME or --team NAME (with --since DATE)")
    if team is not None:
        check_team(team)
    if commit is not None and not re.fullmatch(r"[0-9a-fA-F]{7,64}", commit):
        raise UsageError(f"--commit {commit!r} must be 7 to 64 hex digits")
    name = digest = None
    if image is not None:
        name, digest = rec.parse_image(image)
    if service is not None:
        check_name(service, what="service")
    moment = None
    if since is not None:
        moment = _time(since if "T" in since else f"{since}T00:00:00Z")
        if moment is None:
            raise UsageError(f"--since {since!r} is not a date (YYYY-MM-DD) or an RFC 3339 time")
    return Query(commit.lower() if commit else None, digest, name, service, moment, team)


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = rec.parse_time(text)
    except (ValueError, OverflowError):
        return None
    return moment


# -- reading a branch ------------------------------------------------------------------


def _envelopes(store: EvidenceStore, tree: pygit2.Tree) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(sequence, statement)`` of every record in ``tree``, in order (unreadable skipped)."""
    try:
        records = store.repo.get(tree[rec.RECORDS_DIR].id)
    except KeyError:
        return
    if not isinstance(records, pygit2.Tree):
        return
    found: list[tuple[int, pygit2.Oid]] = []
    for shard in records:
        shard_tree = store.repo.get(shard.id)
        if not isinstance(shard_tree, pygit2.Tree):
            continue
        for entry in shard_tree:
            match = rec.RECORD_DIR.fullmatch(str(entry.name))
            directory = store.repo.get(entry.id)
            if match is None or not isinstance(directory, pygit2.Tree):
                continue
            try:
                found.append((int(match.group(1)), directory[rec.ENVELOPE_FILE].id))
            except KeyError:
                continue
    for sequence, oid in sorted(found, key=lambda item: item[0]):
        try:
            _, size = store.repo.odb.read_header(oid)
            if size > MAX_ENVELOPE_BYTES:
                continue
            blob = store.repo.get(oid)
            statement = decode_envelope(blob.data if isinstance(blob, pygit2.Blob) else b"")
        except (KeyError, ValueError, TypeError, RecursionError, pygit2.GitError):  # RecursionError: nested too deep
            continue
        if isinstance(statement, dict) and isinstance(statement.get("predicate"), dict):
            yield sequence, statement


def read_facts(store: EvidenceStore, ref: str, service: str, deployment: str, head: str) -> DeploymentFacts:
    """Return what the records in commit ``head`` of ``ref`` say (no verification)."""
    commit = store.repo.get(head)
    facts = DeploymentFacts(ref, service, deployment, head)
    if not isinstance(commit, pygit2.Commit):
        return facts
    found: dict[str, Any] = {}
    count = 0
    last_kind = None
    for sequence, statement in _envelopes(store, commit.tree):
        count += 1
        predicate = statement["predicate"]
        result = predicate.get("result") if isinstance(predicate.get("result"), dict) else {}
        context = predicate.get("context") if isinstance(predicate.get("context"), dict) else {}
        step = context.get("step") if isinstance(context.get("step"), dict) else {}
        last_kind = rec.KIND_OF_PREDICATE.get(str(statement.get("predicateType")))
        if sequence == 0:
            if isinstance(predicate.get("finished_at"), str):
                found["opened_at"] = predicate["finished_at"]
            metadata = result.get("metadata") if isinstance(result.get("metadata"), dict) else {}
            info = metadata.get("deployment") if isinstance(metadata.get("deployment"), dict) else {}
            for name in ("commit", "image", "deployer", "team", "environment", "version", "deployed_at"):
                if isinstance(info.get(name), str):
                    found[name] = info[name]
        kind = step.get("kind")
        outputs = result.get("outputs") if isinstance(result.get("outputs"), dict) else {}
        if kind == "mark" and isinstance(outputs.get("deployed_at"), str):
            found["deployed_at"] = outputs["deployed_at"]
        if kind in ("decide", "gate") and isinstance(result.get("decision"), dict) and (kind == "decide" or result.get("stop")):
            decision = result["decision"]
            # records are read unverified: only text is taken, so a forged record cannot
            # break the lookup (a number or an object where text belongs)
            found["decision"] = {k: decision[k] for k in ("decision", "action", "label", "reason")
                                 if isinstance(decision.get(k), str)}
            found["decision_record"] = sequence
            subjects = statement.get("subject")
            found["subjects"] = [s for s in subjects[1:] if isinstance(s, dict)] if isinstance(subjects, list) else []
    return replace(facts, records=count, sealed=last_kind == rec.KIND_SEAL, **found)


# -- the index ---------------------------------------------------------------------------


def _key(repository: Path | str | None = None) -> bytes:
    """The index MAC key, outside the evidence repository: created (0600) on first use.

    Raises:
        UsageError: the key lies inside ``repository`` (whoever writes the evidence could
            read it and forge index entries that hide a deployment).
        ConfigurationError: the key file cannot be read or created.
    """
    path = Path(os.environ.get(KEY_ENV) or Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "afdp" / "index.key")
    if repository is not None:
        from afdp.evidence.trust import repository_areas

        # as given and as resolved (a symlink inside the repository is the writer's choice)
        candidates = (Path(os.path.abspath(path)), path.resolve())
        for area in repository_areas(Path(repository)):
            if any(c.is_relative_to(area) for c in candidates):
                raise UsageError(f"the lookup index key {path} lies inside the evidence repository {area}: whoever "
                                 f"writes the evidence could read it; keep it outside ({KEY_ENV})")
    for _ in range(2):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ConfigurationError(f"cannot read the lookup index key {path}: {exc.strerror or exc}") from exc
        else:
            if len(data) >= 32:
                return data
            # an existing file is never overwritten: it may be something else than a key
            raise ConfigurationError(f"the lookup index key {path} is shorter than 32 bytes: not a key AFDP made; "
                                     "remove it or point AFDP_INDEX_KEY elsewhere")
        # created whole under a temporary name, then linked into place only if absent:
        # never a half-written key, never one replaced by a concurrent lookup's
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                data = secrets.token_bytes(32)
                handle.write(data)
            try:
                os.link(temporary, path)
            except FileExistsError:
                continue  # another process made it first: read that one
            return data
        except OSError as exc:
            raise ConfigurationError(f"cannot create the lookup index key {path}: {exc.strerror or exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                temporary.unlink()
    raise ConfigurationError(f"cannot create the lookup index key {path}")


def _mac(key: bytes, facts: DeploymentFacts) -> str:
    return hmac.new(key, canonical_bytes({"version": INDEX_VERSION, "facts": facts.to_json()}), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class IndexStats:
    """How the index served a lookup."""

    path: str
    branches: int
    reused: int
    read: int  # new branches or moved heads
    rejected: int  # entries that failed their MAC or did not parse: read again
    written: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def refresh_index(repository: Path | str) -> tuple[list[DeploymentFacts], IndexStats]:
    """Return the facts of every AFDP branch, from the index where it is current and
    authentic, read from the branch otherwise; write the index back if it changed.

    Raises:
        NotFoundError: no repository at ``repository``.
        UsageError: the MAC key lies inside the evidence repository.
        ConfigurationError: the MAC key cannot be read or created.
    """
    store = EvidenceStore(repository)
    key = _key(repository)
    path = common_dir(store.path) / INDEX_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        entries = document.get("entries") if isinstance(document, dict) and document.get("version") == INDEX_VERSION else {}
    except (OSError, ValueError, RecursionError):  # unreadable, not JSON, or nested too deep: rebuilt
        entries = {}
    entries = entries if isinstance(entries, dict) else {}
    facts: list[DeploymentFacts] = []
    fresh: dict[str, Any] = {}
    reused = read = rejected = 0
    for service, deployment in store.branches():
        ref = f"{BRANCH_PREFIX}{service}/{deployment}"
        try:
            head = store.head(ref)
        except StorageError:  # a branch that cannot be read has no facts; verify says why
            head = None
        if head is None:
            continue
        entry = entries.get(ref)
        known = None
        if isinstance(entry, dict) and entry.get("facts", {}).get("head") == str(head.id):
            try:
                candidate = DeploymentFacts.from_json(entry["facts"])
            except (ValueError, TypeError, KeyError):
                candidate = None
            if (
                candidate is not None
                and (candidate.ref, candidate.service, candidate.deployment) == (ref, service, deployment)
                and isinstance(entry.get("mac"), str)
                and hmac.compare_digest(entry["mac"], _mac(key, candidate))
            ):
                known = candidate
            else:
                rejected += 1
        if known is None:
            known = read_facts(store, ref, service, deployment, str(head.id))
            read += 1
        else:
            reused += 1
        facts.append(known)
        fresh[ref] = {"facts": known.to_json(), "mac": _mac(key, known)}
    written = False
    if fresh != entries:
        written = _write_index(path, json.dumps({"version": INDEX_VERSION, "entries": fresh}, sort_keys=True) + "\n")
    return facts, IndexStats(str(path), len(facts), reused, read, rejected, written)


def _write_index(path: Path, text: str) -> bool:
    """Replace the index with ``text``; False when the folder cannot be written (a read-only
    repository: the index is only a cache).

    The temporary file is made by :func:`tempfile.mkstemp` (a new, unpredictable name,
    ``O_EXCL``): whoever can write the evidence repository could plant a symlink under a
    predictable name, and the lookup would then write through it to a file of the
    auditor's. The index itself is replaced by rename, which never follows a link."""
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError:
        return False
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(name, path)
        return True
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(name)
        return False


# -- lookup ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """One deployment that matches, as its branch says it now, with its verdict."""

    facts: DeploymentFacts
    verification: str  # verified | unsealed | failed | unverified
    first_failure: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {**self.facts.to_json(), "time": self.facts.time, "verification": self.verification, "first_failure": self.first_failure}


@dataclass(frozen=True)
class FindResult:
    query: Query
    hits: tuple[Hit, ...]
    index: IndexStats

    @property
    def ok(self) -> bool:
        """False when a hit failed verification."""
        return all(h.verification != "failed" for h in self.hits)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "query": self.query.to_json(), "hits": [h.to_json() for h in self.hits], "index": self.index.to_json()}


def find_deployments(repository: Path | str, query: Query, *, policy: TrustPolicy | None = None) -> FindResult:
    """Return every deployment matching ``query``, newest first, each read again from its
    branch and (with ``policy``) verified.

    Raises:
        NotFoundError: no repository at ``repository``.
        ConfigurationError: the index key cannot be read or created.
    """
    from afdp.verify.verifier import check_branch

    facts, stats = refresh_index(repository)
    store = EvidenceStore(repository)
    substituted = store.substitutions() if policy is not None else []  # once, for every hit
    hits = []
    for candidate in facts:
        if not query.matches(candidate):
            continue
        verification, first = "unverified", None
        head = candidate.head
        if policy is not None:
            report = check_branch(
                repository, service=candidate.service, deployment=candidate.deployment,
                policy=policy, allow_unsealed=True, substitutions=substituted,
            )
            verification = report.state
            head = report.head or head
            if report.failures:
                first = str(report.failures[0])
        current = read_facts(store, candidate.ref, candidate.service, candidate.deployment, head)
        if not query.matches(current):
            continue  # the branch does not say what the index said: not a hit
        hits.append(Hit(current, verification, first))
    hits.sort(key=lambda h: (h.facts.time or "", h.facts.ref), reverse=True)
    return FindResult(query, tuple(hits), stats)
