"""The dashboard's view of the evidence: every deployment, verified by :mod:`afdp.verify`,
and per service the prediction for its next deployment (:func:`service_prediction`).

Nothing here trusts an index: each branch is verified by
:func:`afdp.verify.check_branch` against the auditor's trust policy, and the result is
cached by (branch head, what check 0 examines, trust policy file digest) only, so a
branch that moved, or a repository that gained a ``refs/replace``/``refs/notes`` ref, a
grafts or a shallow file, is verified again. Without a trust policy nothing is verified and every deployment reads
``UNCHECKED``. Record contents are read as the compliance report reads them
(:mod:`afdp.audit.report.evidence`: only content whose digest verification established).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from afdp.audit.report.build import impact_rows
from afdp.audit.report.evidence import find, read_records
from afdp.audit.report.model import DeploymentSection
from afdp.evidence.store import EvidenceStore
from afdp.evidence.trust import load_trust_policy
from afdp.service.metrics import ServiceMetrics
from afdp.verify import check_branch, unsafe_branch_reports

UNCHECKED = "UNCHECKED"


@dataclass(frozen=True)
class DeploymentEntry:
    """One deployment branch on the dashboard."""

    service: str
    deployment: str
    head: str | None
    verdict: str  # VERIFIED | UNSEALED | FAILED | UNCHECKED
    headline: str
    section: DeploymentSection | None
    checked_at: float

    @property
    def decision(self) -> Mapping[str, Any] | None:
        return self.section.findings.decision if self.section else None

    @property
    def deployed_at(self) -> float | None:
        return self.section.findings.deployed_at if self.section else None

    @property
    def facts(self) -> Mapping[str, Any]:
        return self.section.findings.deployment if self.section else {}

    @property
    def trusted(self) -> bool:
        """Whether what the branch says is the evidence's: it verified (or is clean and in
        progress). Elsewhere (FAILED, UNCHECKED) its decision is only a claim."""
        return self.verdict in ("VERIFIED", "UNSEALED")

    def to_json(self) -> dict[str, Any]:
        """The API's row. ``decision``, ``label`` and ``reason`` are the evidence's only
        where it is :attr:`trusted`; elsewhere they are null and the branch's claim is under
        ``unverified_decision``, so a script reading ``decision`` never takes a failed
        branch's "success" for one."""
        decision = self.decision or {}
        said = {"decision": decision.get("action"), "label": decision.get("label"), "reason": decision.get("reason")}
        return {
            "service": self.service,
            "deployment": self.deployment,
            "head": self.head,
            "verdict": self.verdict,
            "headline": self.headline,
            **(said if self.trusted else dict.fromkeys(said)),
            "unverified_decision": None if self.trusted or self.decision is None else said,
            "deployed_at": self.deployed_at,
            "commit": self.facts.get("commit"),
            "version": self.facts.get("version"),
            "environment": self.facts.get("environment"),
            "deployer": self.facts.get("deployer"),
            "team": self.facts.get("team"),
            "failures": [str(f) for f in self.section.verification.failures] if self.section else [],
        }


class Dashboard:
    """Reads and verifies the evidence repository for the UI (thread-safe)."""

    def __init__(self, repository: Path, *, trust_policy: Path | None, metrics: ServiceMetrics) -> None:
        self.repository = repository
        self.trust_policy = trust_policy
        self.metrics = metrics
        self._cache: dict[tuple[str, str], tuple[str, DeploymentEntry]] = {}
        self._counted: set[tuple[str, str]] = set()
        self._predictions: dict[str, tuple[str, ServicePrediction]] = {}
        self._loaded_policy: tuple[Any, str] | None = None
        self._lock = threading.Lock()

    def load_policy(self) -> None:
        """Load the trust policy now (at start-up), so one that does not load fails early.

        Raises:
            UsageError: the policy lies inside the evidence repository.
            ConfigurationError: it (or a file it pins) does not read or load.
        """
        self._policy()

    def _policy(self) -> tuple[Any, str] | None:
        """Return the trust policy and the digest of everything it trusts, loaded again
        (and every cached verdict and prediction dropped with it) whenever that changed.

        Raises:
            ConfigurationError: the policy (or a file it pins) does not read or load.
        """
        if self.trust_policy is None:
            return None
        digest = trust_material_digest(self.trust_policy)
        with self._lock:
            loaded = self._loaded_policy
        if loaded is None or loaded[1] != digest:
            # Loaded again only when the file changed (and every cached verdict goes with it).
            loaded = (load_trust_policy(self.trust_policy, evidence_repository=self.repository), digest)
            with self._lock:
                self._loaded_policy = loaded
        return loaded

    def entries(self, *, service: str | None = None, team: str | None = None) -> list[DeploymentEntry]:
        """Return every deployment (of ``service``; of ``team``: whose genesis record, as
        the report reads it, names it; FAILED ones included, their team marked unverified
        on the page), newest first; look-alike refs as FAILED (in every team's list, and
        in their service's).

        Raises:
            UsageError: ``team`` is not a team name.
        """
        if team is not None:
            from afdp.pipeline.runner.request import check_team

            check_team(team)
        store = EvidenceStore(self.repository)
        policy = self._policy()
        found: list[DeploymentEntry] = []
        if policy is not None:
            # A look-alike ref fails in every view: whose team it is cannot be read, so it is
            # under every team's filter ("a filter never hides a failure"); under a service
            # filter when its first level names that service.
            for report in unsafe_branch_reports(self.repository, policy=policy[0], allow_unsealed=True):
                if service is not None and report.service != service:
                    continue
                found.append(_entry(report.service, report.deployment, report.head, "FAILED",
                                    f"FAILED: {report.ref}: {report.failures[0].reason}", None))
        from afdp.evidence.names import MODELS_SERVICE

        for svc, dep in store.branches():
            # afdp/models/<service> holds a service's impact models, not a deployment: the
            # service page shows them as its prediction (verified the same way)
            if svc == MODELS_SERVICE or (service is not None and svc != service):
                continue
            entry = self.entry(svc, dep, store=store, policy=policy)
            # the team as the genesis record names it; a FAILED branch still shows under its
            # team (its team marked unverified), so a filter never hides a failure
            if team is None or entry.facts.get("team") == team:
                found.append(entry)
        found.sort(key=lambda e: (e.deployed_at or 0.0, e.service, e.deployment), reverse=True)
        return found

    def entry(self, service: str, deployment: str, *, store: EvidenceStore | None = None,
              policy: tuple[Any, str] | None | bool = False) -> DeploymentEntry:
        """Return one deployment, verified now unless its head and the policy are unchanged.

        Raises:
            NotFoundError: no such branch.
        """
        store = store or EvidenceStore(self.repository)
        if policy is False:
            policy = self._policy()
        from afdp.evidence.names import branch_ref

        head = store.head(branch_ref(service, deployment))
        head_id = str(head.id) if head is not None else None
        # The verdict depends on more than the head: check 0 fails a branch when git would
        # show other objects (refs/replace, refs/notes, grafts, shallow), so what it
        # looks at is part of the key and a cached VERIFIED never outlives it.
        substitutions = hashlib.sha256("\n".join(store.substitutions()).encode()).hexdigest()
        rest = f"{substitutions}:{policy[1] if policy else 'none'}"  # type: ignore[index]
        with self._lock:
            cached = self._cache.get((service, deployment))
        if cached is not None and cached[0] == f"{head_id}:{rest}":
            return cached[1]
        entry = self._check(store, service, deployment, head_id, policy)  # type: ignore[arg-type]
        # Cached under the head the verifier saw, not the one read above: the branch may
        # have moved in between (or been flipped back and forth by whoever writes the
        # repository), and a verdict must never be served for a head it was not about.
        # What check 0 examines and the policy digest were read before the check, so a
        # change during it only costs one more check.
        with self._lock:
            self._cache[(service, deployment)] = (f"{entry.head}:{rest}", entry)
        return entry

    def prediction(self, service: str) -> ServicePrediction:
        """Return :func:`service_prediction` for ``service``, computed again only when the
        model branch's head, the service's branch heads, what check 0 examines or the
        trust policy file changed (like the verdicts).

        Raises:
            ConfigurationError: the trust policy does not load.
        """
        from afdp.evidence.names import MODELS_SERVICE, branch_ref

        store = EvidenceStore(self.repository)
        policy = self._policy()
        digest = policy[1] if policy else "none"
        model_head = store.head(branch_ref(MODELS_SERVICE, service))
        heads = {}
        for svc, dep in store.branches():
            if svc == service:
                head = store.head(branch_ref(svc, dep))
                heads[branch_ref(svc, dep)] = str(head.id) if head is not None else None
        now = _prediction_key(str(model_head.id) if model_head is not None else None, digest,
                              store.substitutions(), heads)
        with self._lock:
            cached = self._predictions.get(service)
        if cached is not None and cached[0] == now:
            return cached[1]
        found = service_prediction(self.repository, self.trust_policy, service,
                                   policy=policy[0] if policy else None)
        # Cached under what the prediction verified (the model branch's head, each deployment
        # branch's head, the substitution scan), not under the heads read above: whoever
        # writes the repository can move a branch from a tampered head to a good one and back
        # while it is read, and a prediction made from the good head must never be served for
        # the tampered one. A prediction that stopped before reading the history (no usable
        # model) is cached only when nothing it could depend on moved meanwhile.
        if found.verified is not None:
            key = _prediction_key(found.verified.model_head, digest, found.verified.substitutions,
                                  found.verified.heads)
        else:
            again = EvidenceStore(self.repository)
            after = again.head(branch_ref(MODELS_SERVICE, service))
            moved = (str(after.id) if after is not None else None) != (str(model_head.id) if model_head is not None else None)
            key = "" if moved else now
        if key:
            with self._lock:
                self._predictions[service] = (key, found)
        return found

    def _check(self, store: EvidenceStore, service: str, deployment: str, head: str | None,
               policy: tuple[Any, str] | None) -> DeploymentEntry:
        if policy is None:
            return _entry(service, deployment, head, UNCHECKED,
                          "UNCHECKED: afdp serve has no trust policy (--trust), so nothing is verified", None)
        started = time.monotonic()
        report = check_branch(self.repository, service=service, deployment=deployment,
                              policy=policy[0], allow_unsealed=True, jobs=1)
        self.metrics.verify_seconds.observe(time.monotonic() - started)
        views = read_records(store, report)
        findings = find(views)
        section = DeploymentSection(report, tuple(views), findings, tuple(impact_rows(findings)), ())
        self.metrics.verifications.labels(result=section.verdict.lower()).inc()
        if section.verdict == "FAILED":
            self.metrics.verification_failures.labels(service=service).inc()
        elif section.verdict == "VERIFIED" and findings.decision:
            with self._lock:  # two first views at once count it once
                first = (service, deployment) not in self._counted
                self._counted.add((service, deployment))
            if first:
                self.metrics.decisions.labels(service=service, decision=str(findings.decision.get("action"))).inc()
        return _entry(service, deployment, report.head, section.verdict, section.headline, section)


def _prediction_key(model_head: str | None, policy: str, substitutions: Sequence[str],
                    heads: Mapping[str, str | None]) -> str:
    """The digest of everything a service's prediction depends on."""
    return hashlib.sha256("\n".join([
        model_head or "-", policy, *substitutions, "",
        *(f"{ref}={head or '-'}" for ref, head in sorted(heads.items())),
    ]).encode()).hexdigest()


def trust_material_digest(path: Path) -> str:
    """Return the SHA-256 of the trust policy file and of every file it pins.

    The policy's verdicts depend on more than its own bytes: ``sigstore.trusted_root``
    names a file (relative to the policy) whose roots verify keyless records. A cache keyed
    on the policy file alone would keep a VERIFIED after that root was replaced (a
    compromised root rotated out), so the pinned file's bytes are part of the key, read
    before the policy is loaded (a change after it only costs one more load).

    Raises:
        ConfigurationError: the policy file cannot be read.
    """
    import yaml

    from afdp.errors import ConfigurationError

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read trust policy {path}: {exc.strerror or exc}") from exc
    digest = hashlib.sha256(b"afdp-trust-material\0" + data)
    from afdp.evidence.yamldata import load_yaml

    try:
        document = load_yaml(data)  # bounded, as the policy's own loader reads it
    except yaml.YAMLError:
        document = None  # loading it fails with the reason
    section = document.get("sigstore") if isinstance(document, dict) else None
    pinned = section.get("trusted_root") if isinstance(section, dict) else None
    if isinstance(pinned, str) and pinned:
        target = Path(pinned) if Path(pinned).is_absolute() else path.parent / pinned
        try:
            content = target.read_bytes()
        except OSError as exc:
            content = f"unreadable: {exc.strerror or exc}".encode()
        digest.update(b"\0" + pinned.encode() + b"\0" + hashlib.sha256(content).digest())
    return digest.hexdigest()


def _entry(service: str, deployment: str, head: str | None, verdict: str, headline: str,
           section: DeploymentSection | None) -> DeploymentEntry:
    return DeploymentEntry(service, deployment, head, verdict, headline, section, time.time())


# -- predictions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PredictedTarget:
    """One predicted quantity of the next deployment, with how good the model measured itself."""

    target: str  # impact.<metric>.increase or money_lost_per_hour
    label: str  # <metric> or money_lost_per_hour
    point: float
    low: float
    high: float
    nominal: float | None  # the interval's confidence level
    coverage: float | None  # cross-validated empirical coverage on past deployments
    covered_n: int | None  # deployments the coverage was measured on

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "label": self.label, "point": self.point, "low": self.low,
                "high": self.high, "nominal": self.nominal, "coverage": self.coverage, "n": self.covered_n}


@dataclass(frozen=True)
class VerifiedInputs:
    """What a prediction was computed from, as verified: the model branch's head, each of
    the service's deployment branches (ref) and the head it verified at, and the
    substitution scan (check 0) they were verified with."""

    model_head: str | None
    heads: Mapping[str, str | None]
    substitutions: tuple[str, ...]


@dataclass(frozen=True)
class ServicePrediction:
    """What the dashboard shows of a service's next deployment.

    ``status``: ``ok`` (numbers, each citing ``model_record``); ``not_enough_history``
    (fewer verified deployments than the model needs); ``no_model`` (no model recorded on
    ``afdp/models/<service>``); ``unverified`` (the model branch, or what the model was
    trained on, did not verify under the trust policy: no number is shown); ``unchecked``
    (no trust policy, so nothing is verified and nothing predicted).
    """

    service: str
    status: str
    reason: str | None
    history_rows: int = 0
    model_record: str | None = None
    model_sequence: int | None = None
    model_rows: int | None = None
    dataset_digest: str | None = None
    like: str | None = None  # the deployment the next one is assumed to be like
    query: Mapping[str, Any] | None = None
    targets: tuple[PredictedTarget, ...] = ()
    #: what it was computed from (None: it stopped before reading the history); not shown
    verified: VerifiedInputs | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "status": self.status,
            "reason": self.reason,
            "history_rows": self.history_rows,
            "model": {"record": self.model_record, "sequence": self.model_sequence, "rows": self.model_rows,
                      "dataset_digest": self.dataset_digest},
            "like": self.like,
            "query": dict(self.query) if self.query is not None else None,
            "targets": [t.to_json() for t in self.targets],
        }


def service_prediction(repository: Path, trust_policy: Path | None, service: str, *, policy: Any = None) -> ServicePrediction:
    """Return the prediction for ``service``'s next deployment, from verified evidence only.

    1. no trust policy: ``unchecked``, nothing predicted;
    2. the model branch ``afdp/models/<service>`` must verify (every record) under the
       trust policy, else ``unverified`` and no number;
    3. the verified history of the service (:func:`afdp.learn.history.load_history`, the
       trust policy's verdict on every deployment branch): below
       :data:`afdp.learn.model.MIN_HISTORY` rows, ``not_enough_history``;
    4. the latest model record: every deployment it was trained on must be in that
       verified history, and its recorded training rows must be exactly the ones the
       verified evidence gives (:func:`afdp.learn.prediction.same_training`), and its
       refit must reproduce its fingerprint (:func:`afdp.learn.model.refit`); else
       ``unverified``;
    5. the next deployment is taken to be like the latest verified one (its change size,
       files, kinds, environment, hour and weekday, shown as the query); each target's
       interval is the model's at its nominal level, with its cross-validated coverage.

    Raises:
        ConfigurationError: the trust policy does not load.
    """
    if trust_policy is None:
        return ServicePrediction(service, "unchecked",
                                 "no trust policy (afdp serve --trust): nothing is verified, so nothing is predicted")
    from afdp.learn.features import Planned
    from afdp.learn.history import load_history
    from afdp.learn.model import (
        MIN_HISTORY,
        MODELS,
        ModelUnusable,
        not_enough,
        recorded_models,
        refit,
        target_label,
    )
    from afdp.learn.prediction import same_training
    from afdp.learn.source import trust_of

    policy = policy if policy is not None else trust_of(repository, trust_policy)
    branch = f"afdp/{MODELS}/{service}"
    try:
        models = recorded_models(repository, policy, service=service)
    except ModelUnusable as exc:
        return ServicePrediction(service, "unverified", str(exc))
    history = load_history(repository, trust_policy, services=[service], jobs=1)
    verified = VerifiedInputs(models[-1].head if models else None, history.heads, history.substitutions)
    rows = history.rows
    if len(rows) < MIN_HISTORY:
        return ServicePrediction(service, "not_enough_history", not_enough(len(rows)), history_rows=len(rows),
                                 verified=verified)
    if not models:
        return ServicePrediction(service, "no_model", f"no model recorded on {branch} (afdp predict --key K --tsa URL "
                                 "records one)", history_rows=len(rows), verified=verified)
    latest = models[-1]
    cite: dict[str, Any] = {"history_rows": len(rows), "model_record": latest.digest, "model_sequence": latest.sequence,
            "dataset_digest": latest.dataset_digest, "verified": verified}
    document = latest.document
    training: Mapping[str, Any] = document["training"] if isinstance(document.get("training"), Mapping) else {}
    trained_on = [str(d) for d in training.get("deployments") or ()]
    by_id = {str(r["deployment"]): r for r in rows}
    missing = [d for d in trained_on if d not in by_id]
    if missing:
        return ServicePrediction(service, "unverified", f"model record {latest.digest[:12]} was trained on "
                                 f"{len(missing)} deployment(s) that do not verify under this trust policy "
                                 f"({', '.join(missing[:5])}); its numbers are not shown", **cite)
    encoding: Mapping[str, Any] = document["features"] if isinstance(document.get("features"), Mapping) else {}
    selected = encoding.get("selected")  # the features an ml_predictor step selected (absent: all)
    try:
        same_training(latest, [by_id[d] for d in trained_on], service=service,
                       dataset_digest=str(latest.dataset_digest), use_load=bool(encoding.get("use_load")),
                       features=[str(f) for f in selected] if isinstance(selected, list) else None)
        fitted = refit(document)
    except ModelUnusable as exc:
        return ServicePrediction(service, "unverified", f"{exc}; its numbers are not shown", **cite)
    newest = rows[-1]  # rows are sorted by deployment time
    planned = Planned.from_row(newest, load_column=fitted.training.load_column)
    coverage: Mapping[str, Any] = document["coverage"] if isinstance(document.get("coverage"), Mapping) else {}
    # the interval's level is the model's (also when it was recorded without a coverage measurement)
    level = _float(fitted.confidence)
    targets = []
    for target, values in sorted(fitted.predict([planned]).items()):
        measured: Mapping[str, Any] = coverage[target] if isinstance(coverage.get(target), Mapping) else {}
        value = values[0]
        targets.append(PredictedTarget(
            target, target_label(target), value["point"], value["low"], value["high"],
            level, _float(measured.get("empirical")),
            measured.get("n") if isinstance(measured.get("n"), int) else None,
        ))
    return ServicePrediction(service, "ok", None, model_rows=len(trained_on), like=str(newest["deployment"]),
                             query=planned.to_json(), targets=tuple(targets), **cite)


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
