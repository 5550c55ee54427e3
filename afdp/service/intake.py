"""The intake's checks: signatures (HMAC-SHA256, constant time) and event parsing.

Two kinds of event become a :class:`DeploymentEvent`:

- a GitHub ``deployment_status`` webhook (``POST /events/github``), signed by GitHub
  with ``X-Hub-Signature-256: sha256=<hex>`` over the body, identified by
  ``X-GitHub-Delivery``; only ``state: success`` starts a run (trigger
  ``deployment_completed``), the AFDP deployment id is ``gh-<deployment id>``;
- AFDP's generic event (``POST /events``), a JSON object signed with
  ``X-AFDP-Signature-256: sha256=<hex>`` over the body (schema
  ``evidence-schema/deployment-event.v1.schema.json``). Its
  ``event_id`` is inside the signed body, so a replay cannot change it.

Every check raises :class:`EventRejected` with the HTTP status and a short reason code
(the label of ``afdp_events_rejected_total``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from afdp.errors import UsageError, hidden_character
from afdp.evidence.jsondata import load_json
from afdp.evidence.names import check_name
from afdp.pipeline.runner.request import TEAM_PATTERN
from afdp.service.config import ServiceConfig, Services

GITHUB_SIGNATURE = "X-Hub-Signature-256"
GITHUB_DELIVERY = "X-GitHub-Delivery"
GITHUB_EVENT = "X-GitHub-Event"
GENERIC_SIGNATURE = "X-AFDP-Signature-256"
_HEX_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
_DELIVERY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

#: The generic event's schema (``evidence-schema/deployment-event.v1.schema.json``).
GENERIC_SCHEMA = "deployment-event.v1"


class EventRejected(UsageError):
    """An event the intake refuses: ``status`` is the HTTP status, ``reason`` a short code."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class DeploymentEvent:
    """An accepted event: which service, which AFDP deployment, and what is known of it."""

    source: str
    delivery: str
    service: ServiceConfig
    deployment: str
    info: Mapping[str, Any]
    team: str | None = None
    image_digest: str | None = None
    extra_tags: tuple[str, ...] = field(default=())

    @property
    def tags(self) -> list[str]:
        """Prefect tags of the flow run (searchable in Prefect's UI)."""
        tags = ["afdp", f"service:{self.service.name}", f"source:{self.source}"]
        if self.team:
            tags.append(f"team:{self.team}")
        if self.image_digest:
            tags.append(f"image:{self.image_digest}")
        return tags

    def to_json(self) -> dict[str, Any]:
        """Return the event as the outbox keeps it (the service by name)."""
        return {
            "source": self.source,
            "delivery": self.delivery,
            "service": self.service.name,
            "deployment": self.deployment,
            "info": dict(self.info),
            "team": self.team,
            "image_digest": self.image_digest,
            "extra_tags": list(self.extra_tags),
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any], services: Services) -> DeploymentEvent:
        """Return the event :meth:`to_json` wrote, with the service as configured now.

        Raises:
            EventRejected: 404 the service is no longer in the services file; 400 not an event.
        """
        try:
            return cls(
                source=str(document["source"]),
                delivery=str(document["delivery"]),
                service=_service(services, str(document["service"])),
                deployment=str(document["deployment"]),
                info=dict(document["info"]),
                team=document.get("team"),
                image_digest=document.get("image_digest"),
                extra_tags=tuple(document.get("extra_tags") or ()),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EventRejected(400, "malformed", f"not a queued event: {exc}") from None


def check_signature(secret: bytes, body: bytes, header: str | None) -> None:
    """Check ``header`` (``sha256=<hex>``) is the HMAC-SHA256 of ``body`` under ``secret``.

    The comparison is constant-time (:func:`hmac.compare_digest`).

    Raises:
        EventRejected: 401, header missing, malformed or wrong.
    """
    if not header:
        raise EventRejected(401, "signature_missing", "missing signature header")
    found = _HEX_SIGNATURE.fullmatch(header.strip())
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    # Compared even when malformed, so the time taken says nothing about the header.
    given = found.group(1).lower() if found else "0" * 64
    if not hmac.compare_digest(expected.encode(), given.encode()) or not found:
        raise EventRejected(401, "signature_invalid", "signature does not match the body")


def sign(secret: bytes, body: bytes) -> str:
    """Return the ``sha256=<hex>`` header value for ``body`` (what a sender computes)."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def parse_json(body: bytes) -> Any:
    """Return the decoded JSON body.

    Raises:
        EventRejected: 400, not UTF-8 JSON.
    """
    try:
        # {"team": "a", "team": "b"}: parsers disagree on which counts, so the sender's
        # view and the recorded one could differ: refused (a duplicate key), not guessed
        return load_json(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise EventRejected(400, "malformed", f"body is not JSON: {exc}") from None


# An event's text follows the one rule for text entering evidence
# (afdp.errors.hidden_character): no control (a newline, an escape sequence, NUL, DEL, C1),
# bidi or zero-width character, surrogate or line separator. Python's regex ``$`` matches
# before a final newline, so a schema pattern ``^...$`` alone lets ``"payments\n"``
# through; and a fact that prints other than it reads (a right-to-left override in a
# deployer's name) misleads whoever reads the dashboard or the evidence.


def check_text(value: Any, what: str) -> None:
    """Refuse a control or invisible formatting character in any string of ``value``.

    Raises:
        EventRejected: 400, naming the field and the character.
    """
    stack: list[tuple[str, Any]] = [(what, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            char = hidden_character(item, free_text=where.endswith(".commit_message"))
            if char is not None:
                raise EventRejected(400, "malformed", f"{where} holds a control character "
                                    f"(U+{ord(char):04X}); event fields are single-line visible text")
        elif isinstance(item, Mapping):
            stack.extend((f"{where}.{key}", key) for key in item)
            stack.extend((f"{where}.{key}", v) for key, v in item.items())
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(item))


def parse_generic(document: Any, services: Services) -> DeploymentEvent:
    """Return the event of a generic JSON document (already signature-checked).

    Raises:
        EventRejected: 400 malformed (schema, names, times), 404 unknown service.
    """
    from afdp.evidence.schemas import iter_errors

    # before the schema: its `^...$` patterns, read by Python's regex, pass a final newline
    check_text(document, "event")
    for where, message in iter_errors(GENERIC_SCHEMA, document):
        raise EventRejected(400, "malformed", f"{where}: {message}")
    service = _service(services, document["service"])
    deployed_at = _time(document["deployed_at"])
    deployment = document.get("deployment") or (
        f"{deployed_at.strftime('%Y%m%dT%H%M%SZ')}-{document['commit'][:12].lower()}"
    )
    _check_deployment(deployment)
    environment = document.get("environment")
    if service.environments and environment not in service.environments:
        raise EventRejected(
            422, "environment", f"service {service.name} takes events for {', '.join(service.environments)} only"
        )
    info = {
        "commit": document["commit"].lower(),
        "deployer": document.get("deployer"),
        "team": document.get("team"),  # the schema checks it is a team name
        "environment": environment,
        "version": document.get("version"),
        "deployed_at": deployed_at.isoformat(),
        # the image by digest: the decision record names it as its in-toto subject
        "image": document.get("image_digest"),
    }
    return DeploymentEvent(
        source="generic",
        # the replay key is the event id within its service: two teams' tools that both
        # send "deploy-1" (for their own services) are two events, not a replay; a 409 is
        # only ever this service's own event (or deployment) again
        delivery=f"{service.name}/{document['event_id']}",
        service=service,
        deployment=deployment,
        info={k: v for k, v in info.items() if v is not None},
        team=document.get("team"),
        image_digest=document.get("image_digest"),
    )


@dataclass(frozen=True)
class Ignored:
    """A well-signed GitHub delivery that starts nothing (another event or state)."""

    reason: str


def parse_github(event: str | None, delivery: str | None, document: Any, services: Services) -> DeploymentEvent | Ignored:
    """Return the event of a GitHub webhook (already signature-checked), or :class:`Ignored`.

    Raises:
        EventRejected: 400 malformed (headers, payload), 404 unknown service/repository.
    """
    if not event:
        raise EventRejected(400, "malformed", f"missing {GITHUB_EVENT} header")
    if not delivery or not _DELIVERY.fullmatch(delivery):
        raise EventRejected(400, "malformed", f"missing or malformed {GITHUB_DELIVERY} header")
    if event == "ping":
        return Ignored("ping")
    if event != "deployment_status":
        return Ignored(f"event {event} starts nothing")
    if not isinstance(document, Mapping):
        raise EventRejected(400, "malformed", "payload is not a JSON object")
    status = _object(document, "deployment_status")
    deployment = _object(document, "deployment")
    repository = _object(document, "repository")
    state = status.get("state")
    if not isinstance(state, str):
        raise EventRejected(400, "malformed", "deployment_status.state is missing")
    full_name = repository.get("full_name")
    if not isinstance(full_name, str):
        raise EventRejected(400, "malformed", "repository.full_name is missing")
    candidates = services.for_repository(full_name)
    payload = deployment.get("payload")
    wanted = payload.get("service") if isinstance(payload, Mapping) else None
    if wanted is not None:
        candidates = [s for s in candidates if s.name == wanted]
    if len(candidates) != 1:
        detail = f" service {wanted!r}" if wanted is not None else ""
        many = " (several services: name one in the deployment payload's 'service')" if len(candidates) > 1 else ""
        raise EventRejected(404, "unknown_service", f"no{detail} service configured for repository {full_name}{many}")
    service = candidates[0]
    if state != "success":
        return Ignored(f"deployment_status {state} starts nothing (only success)")
    environment = deployment.get("environment")
    if service.environments and environment not in service.environments:
        return Ignored(f"environment {environment} is not one of {', '.join(service.environments)}")
    number = deployment.get("id")
    if not isinstance(number, int) or isinstance(number, bool) or number < 0:
        raise EventRejected(400, "malformed", "deployment.id is not a number")
    # the AFDP deployment id names a branch: checked here, before anything is claimed or started
    _check_deployment(f"gh-{number}")
    sha = deployment.get("sha")
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-fA-F]{7,64}", sha):
        raise EventRejected(400, "malformed", "deployment.sha is not a commit id")
    created = status.get("created_at")
    deployed_at = _time(created).isoformat() if isinstance(created, str) else None
    creator = deployment.get("creator")
    version = payload.get("version") if isinstance(payload, Mapping) else None
    if version is not None and not isinstance(version, str):
        raise EventRejected(400, "malformed", "deployment.payload.version is not text")
    info = {
        "commit": sha.lower(),
        "deployer": creator.get("login") if isinstance(creator, Mapping) else None,
        "environment": environment if isinstance(environment, str) else None,
        "version": version if isinstance(version, str) else None,
        "branch": deployment.get("ref") if isinstance(deployment.get("ref"), str) else None,
        "source_repository": full_name,
        "deployed_at": deployed_at,
    }
    image = payload.get("image_digest") if isinstance(payload, Mapping) else None
    if image is not None and not (isinstance(image, str) and re.fullmatch(r"sha256:[0-9a-f]{64}", image)):
        # refused, not dropped: a run recording `image: null` for an image the sender named
        # would answer "no deployment of this image" to a lookup by it
        raise EventRejected(400, "malformed", "deployment.payload.image_digest is not sha256:<64 lowercase hex>")
    # the image by digest: the decision record names it as its in-toto subject
    info["image"] = image
    team = payload.get("team") if isinstance(payload, Mapping) else None
    if team is not None and not (isinstance(team, str) and re.fullmatch(TEAM_PATTERN, team)):
        raise EventRejected(400, "malformed", "deployment.payload.team is not a team name (1-100 of A-Z a-z 0-9 . _ - /)")
    info["team"] = team  # recorded in the genesis record; None: the payload names no team
    # every fact the run records, as the genesis record will hold it
    check_text({k: v for k, v in info.items() if v is not None}, "deployment")
    return DeploymentEvent(
        source="github",
        delivery=delivery,
        service=service,
        deployment=f"gh-{number}",  # checked above
        info={k: v for k, v in info.items() if v is not None},
        team=team,
        image_digest=image,
    )


def _object(document: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = document.get(key)
    if not isinstance(value, Mapping):
        raise EventRejected(400, "malformed", f"payload has no {key} object")
    return value


def _service(services: Services, name: str) -> ServiceConfig:
    service = services.get(name)
    if service is None:
        raise EventRejected(404, "unknown_service", f"unknown service {name!r}")
    return service


def _check_deployment(deployment: str) -> None:
    try:
        check_name(deployment, what="deployment")
    except Exception as exc:
        raise EventRejected(400, "malformed", str(exc)) from None


def _time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise EventRejected(400, "malformed", f"{text!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise EventRejected(400, "malformed", f"{text!r} has no timezone")
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before the first representable UTC time
        raise EventRejected(400, "malformed", f"{text!r} is out of range") from None
