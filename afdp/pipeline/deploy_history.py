"""Past deployments as teams keep them: GitHub deployments or releases JSON, or a CSV.

:func:`read_history` reads one file whole and checks every entry before anything is
written: a bad entry is a :class:`~afdp.errors.UsageError` (exit 2) naming the file, the
entry (``row 3``, ``entry 2 (id 1234)``) and the field. :func:`deployment_name` gives
each deployment its deterministic branch name, ``imported-<ghd|ghr|csv>-<id>``.
``afdp import`` (:mod:`afdp.pipeline.importer`) judges and records them.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from afdp.errors import UsageError, describe_character, hidden_character
from afdp.evidence import records as rec
from afdp.evidence.files import read_at_most
from afdp.evidence.jsondata import DuplicateKey, load_json
from afdp.evidence.names import branch_ref
from afdp.pipeline.runner.request import DeploymentInfo

#: The kinds of history file ``afdp import`` reads, by option name.
SOURCES = ("github-deployments", "github-releases", "csv")
#: the largest history file read (years of deployments are a few MiB)
MAX_HISTORY_BYTES = 256 << 20
#: Branch-name prefix of every imported deployment: ``imported-<tag>-<id>``.
PREFIX = "imported"
_TAGS = {"github-deployments": "ghd", "github-releases": "ghr", "csv": "csv"}
#: CSV columns, in the order the docs list them; ``deployed_at`` is required.
CSV_COLUMNS = (
    "deployed_at",
    "id",
    "service",
    "version",
    "commit",
    "environment",
    "deployer",
    "change_size",
    "changed_files",
    "branch",
    "commit_message",
)
_HEX = re.compile(r"[0-9a-fA-F]{7,64}")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,80}")


@dataclass(frozen=True)
class PastDeployment:
    """One deployment read from a history file (checked, not yet imported)."""

    source: str
    key: str  # the entry's own id in its source (GitHub id, CSV id or time+commit)
    where: str  # "row 3", "entry 2 (id 1234)": for messages
    deployed_at: datetime
    service: str | None = None
    commit: str | None = None
    deployer: str | None = None
    environment: str | None = None
    version: str | None = None
    changed_files: tuple[str, ...] = ()
    deployment_size: int | None = None
    branch: str | None = None
    commit_message: str | None = None
    #: Why this entry is not imported although it is well-formed (a failed GitHub
    #: deployment, a draft release, another service's row).
    skip: str | None = None

    def info(self) -> DeploymentInfo:
        return DeploymentInfo(
            commit=self.commit,
            deployer=self.deployer,
            environment=self.environment,
            version=self.version,
            changed_files=self.changed_files,
            deployment_size=self.deployment_size,
            branch=self.branch,
            commit_message=self.commit_message,
            deployed_at=self.deployed_at,
        )


def deployment_name(entry: PastDeployment) -> str:
    """Return the deployment id of an imported entry: ``imported-<ghd|ghr|csv>-<id>``.

    Deterministic, so a second import of the same history finds the branch the first
    wrote. The signed ``imported`` marker, not this name, is what verification trusts.
    """
    return f"{PREFIX}-{_TAGS[entry.source]}-{entry.key}"[:100]


def read_history(
    path: Path,
    source: str,
    *,
    service: str,
    now: datetime | None = None,
    data: bytes | None = None,
) -> list[PastDeployment]:
    """Return every deployment of a history file, checked whole before anything is written.

    ``source``: one of :data:`SOURCES`. GitHub files are the JSON of the REST API's
    ``GET /repos/{owner}/{repo}/deployments`` (each object may carry a ``statuses`` list:
    the JSON of that deployment's ``.../statuses``) or ``GET .../releases``. ``data``:
    the file's bytes, already read (the caller records their digest: what is imported
    is then exactly what was digested). Every entry's branch name is checked here too.

    Raises:
        UsageError: unreadable file, or an entry that is malformed: the message names the
            file, the entry (row or index) and the field (exit 2).
    """
    if source not in SOURCES:
        raise UsageError(f"unknown history source {source!r}: use one of {', '.join(SOURCES)}")
    # a history file: a CSV or a GitHub API answer; /dev/zero is refused, not read until killed
    raw = read_at_most(path, MAX_HISTORY_BYTES, "history file", UsageError) if data is None else data
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: cannot read it: {exc}") from exc
    moment = now or rec.utc_now()
    if source == "csv":
        entries = _read_csv(path, text, service)
    else:
        try:
            document = load_json(text)
        except DuplicateKey as exc:
            raise UsageError(f"{path}: {exc}") from None
        except ValueError as exc:
            raise UsageError(f"{path}: not JSON: {exc}") from exc
        if not isinstance(document, list):
            raise UsageError(
                f"{path}: expected a JSON array (the API's list answer), got {type(document).__name__}"
            )
        reader = _github_deployment if source == "github-deployments" else _github_release
        entries = []
        for index, item in enumerate(document):
            if not isinstance(item, dict):
                raise UsageError(
                    f"{path}: entry {index}: expected an object, got {type(item).__name__}"
                )
            entries.append(reader(path, index, item))
    seen: dict[str, str] = {}
    for entry in entries:
        if entry.deployed_at > moment:
            raise UsageError(
                f"{path}: {entry.where}: deployed_at {rec.format_time(entry.deployed_at)} is in the future"
            )
        name = deployment_name(entry)
        try:
            branch_ref(service, name)  # every branch name is checked before anything is written
        except UsageError as exc:
            raise UsageError(f"{path}: {entry.where}, id: {exc}") from None
        if name in seen:
            raise UsageError(f"{path}: {entry.where}: the same deployment as {seen[name]} ({name})")
        seen[name] = entry.where
    return entries


def _files(path: Path, where: str, name: str, value: Any) -> tuple[str, ...]:
    """Changed files: paths as text; anything else is refused, never written as its repr."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(f, str) for f in value):
        raise _fail(path, where, name, "expected a list of file paths (strings)")
    files = tuple(f.strip() for f in value if f.strip())
    for file in files:
        char = hidden_character(file)
        if char is not None:
            raise _fail(path, where, name, f"a path holds {describe_character(char)}: {_NOT_SHOWN}")
    return files


#: why a field with a hidden character is refused (it would be signed into evidence)
_NOT_SHOWN = "evidence text may hold no control, bidi or zero-width character (it would show other than it reads); nothing was written"


def _fail(path: Path, where: str, name: str, problem: str) -> UsageError:
    return UsageError(f"{path}: {where}, {name}: {problem}")


def _time(path: Path, where: str, name: str, value: Any) -> datetime:
    if not isinstance(value, str) or not value.strip():
        raise _fail(
            path, where, name, "missing (an RFC 3339 time with a zone, e.g. 2026-11-02T14:05:00Z)"
        )
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise _fail(path, where, name, f"{value[:40]!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise _fail(path, where, name, f"{value[:40]!r} has no time zone (add Z or +hh:mm)")
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is in year 0 in UTC
        raise _fail(path, where, name, f"{value[:40]!r} is out of range in UTC") from None


def _text(path: Path, where: str, name: str, value: Any, *, free_text: bool = False) -> str | None:
    """A field as text. The rule of :func:`afdp.errors.hidden_character` decides what it
    may hold: no control (C0, DEL, C1), bidi or zero-width character, nor a line break;
    ``free_text`` (a commit message or release title) also the zero-width joiners."""
    if value is None:
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise _fail(path, where, name, f"expected text, got {type(value).__name__}")
    text = str(value).strip()
    char = hidden_character(text, free_text=free_text)
    if char is not None:
        raise _fail(path, where, name, f"holds {describe_character(char)}: {_NOT_SHOWN}")
    return text[:500] or None


def _commit(path: Path, where: str, name: str, value: Any) -> str | None:
    text = _text(path, where, name, value)
    if text is not None and not _HEX.fullmatch(text):
        raise _fail(path, where, name, f"{text[:40]!r} is not a hex commit id (7-64 hex digits)")
    return text.lower() if text else None


def _key(path: Path, where: str, name: str, value: Any) -> str:
    text = _text(path, where, name, value)
    if text is None or not _ID.fullmatch(text):
        raise _fail(
            path, where, name, f"{str(value)[:40]!r} is not an id (letters, digits, '.', '_', '-')"
        )
    return text


def _read_csv(path: Path, text: str, service: str) -> list[PastDeployment]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise UsageError(
            f"{path}: empty CSV: the first line names the columns ({', '.join(CSV_COLUMNS)})"
        )
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if unknown:
        raise UsageError(
            f"{path}: line 1: unknown column(s) {', '.join(map(repr, unknown))}; columns: {', '.join(CSV_COLUMNS)}"
        )
    if "deployed_at" not in header:
        raise UsageError(f"{path}: line 1: no deployed_at column (required)")
    if len(set(header)) != len(header):
        raise UsageError(f"{path}: line 1: a column is named twice")
    reader.fieldnames = header
    entries: list[PastDeployment] = []
    rows = iter(reader)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except csv.Error as exc:  # a field over csv's limit, a NUL byte, a stray quote
            raise UsageError(f"{path}: line {reader.line_num + 1}: not CSV AFDP reads: {exc}") from None
        where = f"row {reader.line_num}"
        if None in row:
            raise UsageError(f"{path}: {where}: more fields than columns")
        values = {k: (v if v is None else v.strip()) for k, v in row.items()}
        if not any(values.values()):
            continue  # a blank line
        deployed = _time(path, where, "deployed_at", values.get("deployed_at"))
        commit = _commit(path, where, "commit", values.get("commit") or None)
        size_text = values.get("change_size") or None
        size = None
        if size_text is not None:
            if not size_text.isdigit():
                raise _fail(
                    path,
                    where,
                    "change_size",
                    f"{size_text[:20]!r} is not a whole number of lines >= 0",
                )
            size = int(size_text)
        files = _files(path, where, "changed_files", (values.get("changed_files") or "").split(";"))
        key = (
            _key(path, where, "id", values["id"])
            if values.get("id")
            else deployed.strftime("%Y%m%dT%H%M%SZ") + (f"-{commit[:12]}" if commit else "")
        )
        row_service = _text(path, where, "service", values.get("service") or None)
        entries.append(
            PastDeployment(
                source="csv",
                key=key,
                where=where,
                deployed_at=deployed,
                service=row_service,
                commit=commit,
                deployer=_text(path, where, "deployer", values.get("deployer") or None),
                environment=_text(path, where, "environment", values.get("environment") or None),
                version=_text(path, where, "version", values.get("version") or None),
                changed_files=files,
                deployment_size=size,
                branch=_text(path, where, "branch", values.get("branch") or None),
                commit_message=_text(
                    path, where, "commit_message", values.get("commit_message") or None, free_text=True
                ),
                skip=(
                    f"row names service {row_service!r}, not {service!r}"
                    if row_service is not None and row_service != service
                    else None
                ),
            )
        )
    return entries


def _login(path: Path, where: str, name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _fail(path, where, name, "expected a user object with a login")
    return _text(path, where, f"{name}.login", value.get("login"))


def _github_deployment(path: Path, index: int, item: dict[str, Any]) -> PastDeployment:
    where = f"entry {index}"
    key = _key(path, where, "id", item.get("id"))
    where = f"entry {index} (id {key})"
    deployed = _time(path, where, "created_at", item.get("created_at"))
    skip = None
    statuses = item.get("statuses")
    if statuses is not None:
        # The deployment's own statuses, when given: it took effect at its (first)
        # success; one that never succeeded did not change what ran.
        if not isinstance(statuses, list) or not all(isinstance(s, dict) for s in statuses):
            raise _fail(path, where, "statuses", "expected a list of deployment status objects")
        successes = []
        for number, status in enumerate(statuses):
            state = status.get("state")
            if not isinstance(state, str):
                raise _fail(path, where, f"statuses[{number}].state", "missing")
            if state == "success":
                successes.append(
                    _time(path, where, f"statuses[{number}].created_at", status.get("created_at"))
                )
        if successes:
            deployed = min(successes)
        else:
            states = sorted({str(s.get("state")) for s in statuses}) or ["none"]
            skip = f"the deployment never succeeded (statuses: {', '.join(states)})"
    payload = item.get("payload")
    if isinstance(payload, str) and payload.strip():
        try:
            payload = json.loads(payload)
        except ValueError:
            payload = None
    payload = payload if isinstance(payload, dict) else {}
    size = payload.get("change_size")
    files = _files(path, where, "payload.changed_files", payload.get("changed_files"))
    return PastDeployment(
        source="github-deployments",
        key=key,
        where=where,
        deployed_at=deployed,
        commit=_commit(path, where, "sha", item.get("sha")),
        deployer=_login(path, where, "creator", item.get("creator")),
        environment=_text(path, where, "environment", item.get("environment")),
        version=_text(path, where, "payload.version", payload.get("version")),
        branch=_text(path, where, "ref", item.get("ref")),
        commit_message=_text(path, where, "description", item.get("description"), free_text=True),
        deployment_size=size
        if isinstance(size, int) and not isinstance(size, bool) and size >= 0
        else None,
        changed_files=files,
        skip=skip,
    )


def _github_release(path: Path, index: int, item: dict[str, Any]) -> PastDeployment:
    where = f"entry {index}"
    key = _key(path, where, "id", item.get("id"))
    where = f"entry {index} (id {key})"
    version = _text(path, where, "tag_name", item.get("tag_name"))
    if version is None:
        raise _fail(path, where, "tag_name", "missing")
    skip = None
    published = item.get("published_at")
    if item.get("draft") is True or published is None:
        # A draft was never published: nothing was released at any time.
        skip = "a draft release (never published)"
        deployed = _time(path, where, "created_at", item.get("created_at"))
    else:
        deployed = _time(path, where, "published_at", published)
    target = _text(path, where, "target_commitish", item.get("target_commitish"))
    is_sha = target is not None and re.fullmatch(r"[0-9a-fA-F]{40}", target) is not None
    return PastDeployment(
        source="github-releases",
        key=key,
        where=where,
        deployed_at=deployed,
        commit=target.lower() if is_sha and target else None,
        branch=None if is_sha else target,
        deployer=_login(path, where, "author", item.get("author")),
        version=version,
        commit_message=_text(path, where, "name", item.get("name"), free_text=True),
        skip=skip,
    )


__all__ = ["CSV_COLUMNS", "PREFIX", "SOURCES", "PastDeployment", "deployment_name", "read_history"]
