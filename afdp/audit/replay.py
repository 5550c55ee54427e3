"""Replay a recorded verdict: recompute the analysis and the decision from the raw samples.

:func:`replay_deployment`:

1. verifies the branch against the trust policy (a branch that fails is refused: the
   error names the failing check);
2. reads the verified records, each accepted only under the digest verification
   established, and compiles the workflow stored byte for byte in the genesis record,
   checking that it is the workflow every record names (its digest)
   (:mod:`afdp.audit.recorded`);
3. walks the recorded steps in order: capture records give the raw samples (their
   ``series-*.json`` files), other records their recorded outputs; every analysis step
   is recomputed from the samples and every decision/gate step from the recomputed
   analysis, exactly as the runner computes them, but no action or notification is
   carried out;
4. compares the canonical form (RFC 8785) of each recomputed analysis, decision and gate
   with the recorded one: ``identical`` only when every one is equal bit for bit *and*
   every analysis was recorded by the running AFDP version (otherwise the status says the
   version differs, plainly, and never "identical").

With another workflow (``workflow=other.yaml``) the same recorded samples are re-judged
under its thresholds and decisions; the result says which decisions change.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from afdp.audit.recorded import (
    WORKFLOW_FILE,
    Recorded,
    compile_file,
    read_verified,
    recorded_workflow,
)
from afdp.errors import AfdpError, NotFoundError, UsageError
from afdp.evidence import records as rec
from afdp.evidence.canonical import canonical_bytes, sha256_hex
from afdp.evidence.names import branch_ref
from afdp.evidence.store import EvidenceStore
from afdp.evidence.trust import TrustPolicy
from afdp.learn.history import Exclusion
from afdp.verify.report import BranchReport, EvidenceVerificationError
from afdp.verify.verifier import check_branch

__all__ = [
    "IDENTICAL",
    "WORKFLOW_FILE",  # defined in afdp.audit.recorded
    "Difference",
    "Replay",
    "ReplaySet",
    "replay_deployment",
    "replay_service",
]

IDENTICAL = "identical"
DIFFERENT = "different"
VERSION_DIFFERS = "analysis version differs"
MAX_DIFFERENCES = 50


@dataclass(frozen=True)
class Difference:
    """One place where the recomputed verdict differs from the recorded one."""

    step: str
    path: str
    recorded: Any
    recomputed: Any

    def __str__(self) -> str:
        return f"{self.step}: {self.path}: recorded {_show(self.recorded)}, recomputed {_show(self.recomputed)}"


@dataclass(frozen=True)
class Replay:
    """The replay of one deployment's verdict."""

    service: str
    deployment: str
    branch: str
    workflow: str  # "recorded" or the path of the other workflow
    recorded_version: str | None
    running_version: str
    recorded_decision: dict[str, Any] | None
    recomputed_decision: dict[str, Any] | None
    steps: tuple[str, ...]  # the steps recomputed
    differences: tuple[Difference, ...]
    record_digests: tuple[str, ...]
    more_differences: int = 0

    @property
    def same_bits(self) -> bool:
        return not self.differences

    @property
    def same_version(self) -> bool:
        return self.recorded_version == self.running_version

    @property
    def decision_changed(self) -> bool:
        return _verdict(self.recorded_decision) != _verdict(self.recomputed_decision)

    @property
    def status(self) -> str:
        """``identical`` only when every recomputed step is equal bit for bit and the
        analysis version is the running one; else ``analysis version differs`` or
        ``different``."""
        if not self.same_version:
            return VERSION_DIFFERS
        return IDENTICAL if self.same_bits else DIFFERENT

    @property
    def ok(self) -> bool:
        """With the recorded workflow: identical; with another: the same decision."""
        if self.workflow != "recorded":
            return not self.decision_changed
        return self.status == IDENTICAL

    def version_note(self) -> str | None:
        """One plain line when the recorded analysis version is not the running one."""
        if self.same_version:
            return None
        if self.recorded_version is None:
            recorded = "the evidence does not record which afdp version computed the analysis (written before AFDP recorded it)"
        else:
            recorded = f"the analysis was recorded by afdp {self.recorded_version}"
        return f"{recorded}; this is afdp {self.running_version}: not claimed identical"

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "deployment": self.deployment,
            "branch": self.branch,
            "workflow": self.workflow,
            "status": self.status,
            "ok": self.ok,
            "identical": self.status == IDENTICAL,
            "recorded_analysis_version": self.recorded_version,
            "running_analysis_version": self.running_version,
            "version_note": self.version_note(),
            "recorded_decision": self.recorded_decision,
            "recomputed_decision": self.recomputed_decision,
            "decision_changed": self.decision_changed,
            "steps": list(self.steps),
            "differences": [
                {"step": d.step, "path": d.path, "recorded": d.recorded, "recomputed": d.recomputed}
                for d in self.differences
            ],
            "more_differences": self.more_differences,
            "record_digests": list(self.record_digests),
        }


@dataclass(frozen=True)
class ReplaySet:
    """Replays of many deployments, and the branches refused (not verified, no verdict)."""

    replays: tuple[Replay, ...]
    refused: tuple[Exclusion, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.refused and all(r.ok for r in self.replays)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "replays": [r.to_json() for r in self.replays],
            "refused": [{"branch": e.branch, "reason": e.reason} for e in self.refused],
        }


# -- entry points ----------------------------------------------------------------------------
def replay_deployment(
    repo: str | Path,
    *,
    policy: TrustPolicy,
    service: str,
    deployment: str,
    workflow: str | Path | None = None,
) -> Replay:
    """Verify one deployment's branch and replay its verdict.

    ``workflow``: another workflow file to re-judge the recorded samples under (default:
    the recorded workflow, for a bit-for-bit replay).

    Returns:
        The :class:`Replay`.

    Raises:
        EvidenceVerificationError: the branch failed verification (refused).
        NotFoundError: no such repository or branch.
        UsageError: the branch has nothing to replay (no workflow or no analysis), or the
            other workflow does not fit the recorded steps.
        WorkflowInvalid: the other workflow is not a valid workflow.
    """
    other = compile_file(Path(workflow)) if workflow is not None else None
    report = check_branch(repo, service=service, deployment=deployment, policy=policy)
    if not report.ok:
        raise EvidenceVerificationError(report)
    return _replay(EvidenceStore(repo), report, other, str(workflow) if workflow else None)


def replay_service(
    repo: str | Path,
    *,
    policy: TrustPolicy,
    service: str,
    workflow: str | Path | None = None,
) -> ReplaySet:
    """Replay every deployment of ``service``; branches that fail verification or have
    nothing to replay are refused (listed with the reason), never replayed.

    Raises:
        NotFoundError: no evidence branch of the service.
        WorkflowInvalid / UsageError: the other workflow does not load.
    """
    other = compile_file(Path(workflow)) if workflow is not None else None
    store = EvidenceStore(repo)
    branches = [d for s, d in store.branches() if s == service]
    if not branches:
        raise NotFoundError(f"no evidence branches of service {service} in {repo}")
    replays: list[Replay] = []
    refused: list[Exclusion] = []
    for deployment in branches:
        ref = branch_ref(service, deployment)
        report = check_branch(repo, service=service, deployment=deployment, policy=policy)
        if not report.ok:
            first = report.failures[0]
            refused.append(Exclusion(ref, f"verification failed: {first.check} on {first.where}: {first.reason}"))
            continue
        try:
            replays.append(_replay(store, report, other, str(workflow) if workflow else None))
        except UsageError as exc:
            refused.append(Exclusion(ref, exc.diagnostics()))
    return ReplaySet(tuple(replays), tuple(refused))


# -- recomputation ---------------------------------------------------------------------------
def _replay(store: EvidenceStore, report: BranchReport, other: Any, other_name: str | None) -> Replay:
    from afdp import __version__
    from afdp.pipeline.analysis import analyze
    from afdp.pipeline.decide import decide, evaluate_gate
    from afdp.pipeline.runner.outputs import plain_outputs, typed_outputs
    from afdp.pipeline.runner.request import DeploymentInfo
    from afdp.pipeline.runner.state import _json_safe
    from afdp.workflow.catalog import StepKind
    from afdp.workflow.model import Analyze, Decide, Gate
    from afdp.workflow.quantities import quantity_values

    records = read_verified(store, report)
    genesis = next((r for r in records if r.kind == rec.KIND_GENESIS), None)
    if genesis is None:
        raise UsageError("the branch has no genesis record: nothing to replay")
    recorded_wf = recorded_workflow(genesis)
    target = other if other is not None else recorded_wf
    metadata = genesis.result.get("metadata") or {}
    info = DeploymentInfo.from_json(metadata.get("deployment"))
    deployment_values = {
        k: v
        for k, v in {
            "service": report.service,
            "id": report.deployment,
            "environment": info.environment,
            "version": info.version,
            "commit": info.commit,
            "deployer": info.deployer,
            "repository": info.source_repository,
        }.items()
        if v is not None
    }
    overrides = dict(metadata.get("overrides") or {})

    outputs: dict[str, Any] = {}
    series: dict[str, dict[str, list[float]]] = {}
    analyses: dict[str, dict[str, Any]] = {}
    failed: list[tuple[str, str]] = []
    differences: list[Difference] = []
    recomputed_steps: list[str] = []
    used = {genesis.digest}
    recorded_version: str | None = None
    versions: list[str | None] = []
    recorded_decision = _recorded_decision(records, recorded_wf)
    recomputed_decision: dict[str, Any] | None = None
    target_names = {s.name for s in target.steps}

    def compare(step: str, recorded: Any, recomputed: Any) -> None:
        if canonical_bytes(recorded) != canonical_bytes(recomputed):
            differences.extend(_diff(step, "", recorded, recomputed))

    for item in records:
        if item.kind != rec.KIND_STEP:
            continue
        result = item.result if isinstance(item.result, Mapping) else {}
        try:
            step = recorded_wf.step(item.step)
        except KeyError:
            raise UsageError(f"record {item.sequence} ({item.step}) is not a step of the recorded workflow") from None
        if item.workflow_digest not in (None, recorded_wf.digest):
            raise UsageError(
                f"record {item.sequence} ({item.step}) names workflow {item.workflow_digest[:12]}, "
                f"not the stored one ({recorded_wf.digest[:12]})"
            )
        new_step = target.step(item.step) if item.step in target_names else None
        if new_step is not None and new_step.kind is not step.kind:
            raise UsageError(f"step {item.step} is a {step.kind.value} step in the recorded workflow, a {new_step.kind.value} step in {other_name}")
        if step.kind is StepKind.CAPTURE:
            series[item.step] = _series(item)
        if item.status == "skipped" and not _runs_now(item, step, new_step, target, deployment_values, overrides, outputs):
            continue
        if step.kind is StepKind.ANALYZE and new_step is not None and isinstance(result.get("analysis"), Mapping):
            params = new_step.params
            assert isinstance(params, Analyze)
            used.add(item.digest)
            used.update(_capture_digests(records, (params.baseline, params.impact)))
            version = result.get("analysis_version") if isinstance(result.get("analysis_version"), str) else None
            # Every recomputed analysis must have been recorded by the running version: the
            # first one that was not (or that does not say) is the version reported.
            if not versions or (versions[0] == __version__ and version != __version__):
                recorded_version = version
            versions.append(version)
            if params.groups is not None:
                control, treatment = params.groups
                window = series.get(params.impact, {})
                baseline = {m: window[f"{m}@{control}"] for m in params.metrics if f"{m}@{control}" in window}
                impact = {m: window[f"{m}@{treatment}"] for m in params.metrics if f"{m}@{treatment}" in window}
            else:
                for side in (params.baseline, params.impact):
                    if side not in series:
                        raise UsageError(f"step {item.step} reads capture {side!r}, which the evidence does not hold")
                baseline = {m: v for m, v in series[params.baseline].items() if m in params.metrics}
                impact = {m: v for m, v in series[params.impact].items() if m in params.metrics}
            try:
                analysis = analyze(params, target, baseline, impact, context=target.unjudged_context())
            except KeyError as exc:
                raise UsageError(f"step {item.step}: the workflow does not define metric {exc}") from None
            document = analysis.to_json()
            if params.groups is not None:
                document = {**document, "pairing": {"control": params.groups[0], "treatment": params.groups[1], "window": params.impact}}
            document = _json_safe(document)
            analyses[item.step] = document
            outputs[item.step] = typed_outputs(target, new_step, _json_safe(plain_outputs(target, new_step, analysis.values())))
            recomputed_steps.append(item.step)
            compare(item.step, result["analysis"], document)
        elif step.kind in (StepKind.DECIDE, StepKind.GATE) and new_step is not None:
            used.add(item.digest)
            params = new_step.params
            assert isinstance(params, (Decide, Gate))
            source = params.analysis or _last_analysis(target, new_step)
            values = target.values(deployment=deployment_values, overrides=overrides, steps=outputs)
            merged = dict(values)
            if source and source in outputs:
                merged.update(outputs[source])
            if isinstance(params, Decide):
                quantities: dict[str, Any] = {}
                recorded_analysis = analyses.get(source) if source else None
                if recorded_analysis:
                    found, evidence = quantity_values(recorded_analysis)
                    for name, value in found.items():
                        merged.setdefault(name, value)
                    quantities = {n: e for n, e in evidence.items() if merged.get(n) is found[n]}
                outcome = decide(target, params, merged, failed_steps=tuple(failed))
                decision = outcome.to_json()
                if quantities:
                    decision["quantities"] = quantities
                decision = _json_safe(decision)
                recorded = dict(result.get("decision") or {})
                recorded.pop("notifications", None)  # what was sent, not what was decided
                compare(item.step, recorded, decision)
                recomputed_decision = decision
                outputs[item.step] = typed_outputs(target, new_step, _json_safe(outcome.values()))
            else:
                gate = evaluate_gate(target, params, merged)
                gate_doc = _json_safe(gate.to_json())
                compare(item.step, result.get("gate"), gate_doc)
                outputs[item.step] = typed_outputs(target, new_step, _json_safe(gate.values()))
                recomputed_steps.append(item.step)
                if gate.stop:  # the workflow stops here: later records are not this verdict's
                    recomputed_decision = {"decision": item.step, "action": gate.action, "label": gate.label}
                    break
                continue
            recomputed_steps.append(item.step)
        else:
            recorded_outputs = result.get("outputs")
            if isinstance(recorded_outputs, Mapping) and recorded_outputs:
                outputs[item.step] = typed_outputs(recorded_wf, step, recorded_outputs)
        if item.status == "failed":
            failed.append((item.step, _failure_text(item)))
    if not recomputed_steps:
        raise UsageError("the branch records no analysis or decision step to replay")
    return Replay(
        report.service,
        report.deployment,
        report.ref,
        "recorded" if other is None else str(other_name),
        recorded_version,
        __version__,
        recorded_decision,
        recomputed_decision,
        tuple(recomputed_steps),
        tuple(differences[:MAX_DIFFERENCES]),
        tuple(sorted(used)),
        max(0, len(differences) - MAX_DIFFERENCES),
    )


def _runs_now(
    item: Recorded,
    step: Any,
    new_step: Any,
    target: Any,
    deployment: Mapping[str, Any],
    overrides: Mapping[str, Any],
    outputs: Mapping[str, Any],
) -> bool:
    """Whether a decision or gate step the run skipped must be judged in the replay.

    A run skips such a step because an earlier gate stopped the workflow, or because its
    ``when``/``unless`` did not hold. Both are judged again from the recomputed values (a
    gate that still stops ends the replay before it): when the step's conditions hold now,
    it is recomputed, so a verdict the recording never reached is not taken as unchanged.
    Any other skip (a phase that was not recorded) stays a skip.

    Raises:
        UsageError: the step's condition cannot be evaluated on the replayed values.
    """
    from afdp.workflow.catalog import StepKind

    if new_step is None or step.kind not in (StepKind.DECIDE, StepKind.GATE):
        return False
    result = item.result if isinstance(item.result, Mapping) else {}
    stopped = str(result.get("reason") or "").startswith("skipped: gate ")
    if not stopped and not isinstance(result.get("condition"), Mapping):
        return False
    values = target.values(deployment=dict(deployment), overrides=dict(overrides), steps=dict(outputs))
    for label, expression, wanted in (("when", new_step.when, True), ("unless", new_step.unless, False)):
        if expression is None:
            continue
        try:
            if expression.evaluate(values) != wanted:
                return False
        except (ValueError, KeyError, AfdpError) as exc:
            raise UsageError(f"step {item.step}: its {label} condition cannot be evaluated on the replayed values: {exc}") from exc
    return True


def _failure_text(item: Recorded) -> str:
    """What the runner passes to the decision for a failed step: its error, else its summary."""
    return item.error or item.summary


def _recorded_decision(records: Sequence[Recorded], workflow: Any) -> dict[str, Any] | None:
    """The verdict the run recorded: the last decisions step's, or a gate's that stopped it."""
    from afdp.workflow.catalog import StepKind

    found: dict[str, Any] | None = None
    for item in records:
        if item.kind != rec.KIND_STEP or item.status == "skipped" or not isinstance(item.result, Mapping):
            continue
        try:
            kind = workflow.step(item.step).kind
        except KeyError:
            continue
        decision = item.result.get("decision")
        if not isinstance(decision, Mapping):
            continue
        if kind is StepKind.DECIDE or (kind is StepKind.GATE and item.result.get("stop")):
            found = {k: v for k, v in decision.items() if k != "notifications"}
    return found


def _series(item: Recorded) -> dict[str, list[float]]:
    """The samples of a capture record, from its verified series files (as a resumed run reads them)."""
    result = item.result if isinstance(item.result, Mapping) else {}
    out: dict[str, list[float]] = {}
    for metric, ref in (result.get("series") or {}).items():
        if not isinstance(ref, Mapping):
            continue
        data = item.files.get(str(ref.get("path", "")))
        if data is None or sha256_hex(data) != ref.get("sha256"):
            continue
        document = json.loads(data)
        out[metric] = [float(v) for _, v in document.get("samples", [])]
    return out


def _capture_digests(records: Sequence[Recorded], names: Sequence[str]) -> set[str]:
    return {r.digest for r in records if r.step in names and r.kind == rec.KIND_STEP}


def _last_analysis(workflow: Any, step: Any) -> str | None:
    from afdp.workflow.catalog import StepKind

    earlier = [s.name for s in workflow.steps[: step.index] if s.kind is StepKind.ANALYZE]
    return earlier[-1] if earlier else None


def _verdict(decision: Mapping[str, Any] | None) -> tuple[Any, Any, Any] | None:
    if not decision:
        return None
    return (decision.get("decision"), decision.get("action"), decision.get("label"))


def _diff(step: str, path: str, recorded: Any, recomputed: Any) -> list[Difference]:
    """Every leaf where two JSON values differ (by canonical bytes), with its path."""
    if isinstance(recorded, Mapping) and isinstance(recomputed, Mapping):
        out: list[Difference] = []
        for key in sorted(set(recorded) | set(recomputed)):
            where = f"{path}.{key}" if path else str(key)
            if key not in recorded:
                out.append(Difference(step, where, "(absent)", recomputed[key]))
            elif key not in recomputed:
                out.append(Difference(step, where, recorded[key], "(absent)"))
            else:
                out.extend(_diff(step, where, recorded[key], recomputed[key]))
        return out
    if isinstance(recorded, list) and isinstance(recomputed, list) and len(recorded) == len(recomputed):
        out = []
        for index, (a, b) in enumerate(zip(recorded, recomputed, strict=True)):
            out.extend(_diff(step, f"{path}[{index}]", a, b))
        return out
    if canonical_bytes(recorded) == canonical_bytes(recomputed):
        return []
    return [Difference(step, path or "(whole)", recorded, recomputed)]


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
