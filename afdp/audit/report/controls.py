"""Mapping evidence to change-management controls (SOC 2 CC8.1, ISO 27001 A.8.32, ...).

The mapping is data, not code: a YAML file (schema ``evidence-schema/controls.v1``,
default ``policies/controls.yaml``) lists controls and the evidence each requires, from
a fixed vocabulary this module knows how to establish on a verified branch. A control
is met only when every requirement holds; each requirement cites the records showing it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from afdp.audit.report.evidence import Findings, RecordView
from afdp.errors import ConfigurationError, SchemaError
from afdp.evidence import schemas
from afdp.evidence.yamldata import load_yaml
from afdp.verify.verifier import BranchReport

SCHEMA = "controls.v1"
#: The actions a decision can take; anything else (none, null) is no decision.
DECISION_ACTIONS = ("rollback", "alert", "mark_successful")


@dataclass(frozen=True)
class Control:
    """One control of the mapping file."""

    id: str
    framework: str
    title: str
    description: str
    requires: tuple[str, ...]


@dataclass(frozen=True)
class Requirement:
    """One requirement as established on a branch: held or not, why, which records."""

    name: str
    met: bool
    detail: str
    records: tuple[int, ...]


@dataclass(frozen=True)
class ControlResult:
    control: Control
    requirements: tuple[Requirement, ...]

    @property
    def met(self) -> bool:
        return all(r.met for r in self.requirements)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.control.id,
            "framework": self.control.framework,
            "title": self.control.title,
            "met": self.met,
            "requirements": [
                {"name": r.name, "met": r.met, "detail": r.detail, "records": list(r.records)}
                for r in self.requirements
            ],
        }


#: A control mapping is a short list of controls (the shipped one is a few KiB).
MAX_CONTROLS_BYTES = 1 << 20


def default_controls_path() -> Path:
    """Return the shipped ``policies/controls.yaml``."""
    return schemas.data_dir("policies") / "controls.yaml"


def load_controls(path: Path | None = None) -> tuple[Control, ...]:
    """Load and validate a control mapping (default: the shipped one).

    Raises:
        ConfigurationError: the file is missing, not YAML, or does not match its schema.
    """
    path = path or default_controls_path()
    try:
        with open(path, "rb") as handle:
            # The shipped mapping is a few KiB: a larger file (or /dev/zero) is refused
            # before it is all read.
            data = handle.read(MAX_CONTROLS_BYTES + 1)
        if len(data) > MAX_CONTROLS_BYTES:
            raise ConfigurationError(
                f"control mapping {path} is larger than {MAX_CONTROLS_BYTES >> 20} MiB"
            )
        # bounded (aliases, depth): a mapping may come with a package or from another team
        document = load_yaml(data.decode("utf-8"))
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read control mapping {path}: {exc.strerror or exc}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"control mapping {path} is not UTF-8 text: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigurationError(
            f"control mapping {path} is not valid YAML: {exc}".replace("\n", " ")
        ) from exc
    try:
        schemas.validate(SCHEMA, document, what=f"control mapping {path}")
    except SchemaError as exc:
        raise ConfigurationError(str(exc)) from exc
    return tuple(
        Control(c["id"], c["framework"], c["title"], c.get("description", ""), tuple(c["requires"]))
        for c in document["controls"]
    )


def evaluate(
    controls: tuple[Control, ...],
    report: BranchReport,
    views: list[RecordView],
    findings: Findings,
) -> list[ControlResult]:
    """Return each control with its requirements established on this branch."""
    cache: dict[str, Requirement] = {}

    def requirement(name: str) -> Requirement:
        if name not in cache:
            met, detail, cited = _CHECKS[name](report, views, findings)
            cache[name] = Requirement(name, met, detail, tuple(cited))
        return cache[name]

    results = []
    for control in controls:
        names = list(control.requires)
        if report.failures and "verified" not in names:
            # evidence that failed verification satisfies no control, whatever the mapping says
            names.insert(0, "verified")
        results.append(ControlResult(control, tuple(requirement(n) for n in names)))
    return results


_Check = Callable[[BranchReport, list[RecordView], Findings], tuple[bool, str, list[int]]]


def _all(report: BranchReport) -> list[int]:
    return [r.sequence for r in report.records]


def _verified(
    report: BranchReport, views: list[RecordView], f: Findings
) -> tuple[bool, str, list[int]]:
    if report.failures:
        return False, f"{len(report.failures)} verification failure(s)", []
    return True, f"all checks passed on {len(report.records)} record(s)", _all(report)


def _sealed(
    report: BranchReport, views: list[RecordView], f: Findings
) -> tuple[bool, str, list[int]]:
    if not report.sealed:
        return False, "no seal: the deployment is in progress or its evidence was truncated", []
    last = report.records[-1].sequence
    return True, f"sealed by record {last}, covering every record before it", [last]


def _failing(report: BranchReport, checks: set[str]) -> list[str]:
    return [str(x) for x in report.failures if x.check in checks]


def _signed(
    report: BranchReport, views: list[RecordView], f: Findings
) -> tuple[bool, str, list[int]]:
    bad = _failing(report, {"signer", "signature", "envelope"})
    unsigned = [r.sequence for r in report.records if not r.signer]
    if bad or unsigned or not report.records:
        return False, bad[0] if bad else f"unsigned record(s): {unsigned}", []
    signers = sorted({r.signer for r in report.records if r.signer})
    return True, f"signed by trusted signer(s) {', '.join(signers)}", _all(report)


def _timestamped(
    report: BranchReport, views: list[RecordView], f: Findings
) -> tuple[bool, str, list[int]]:
    bad = _failing(report, {"timestamp", "time", "time-order"})
    missing = [r.sequence for r in report.records if not r.timestamps]
    if bad or missing or not report.records:
        return False, bad[0] if bad else f"record(s) without a valid time-stamp: {missing}", []
    tsas = sorted({name for r in report.records for _, name in r.timestamps})
    return True, f"RFC3161 time-stamped by {', '.join(tsas)}", _all(report)


def _deployment(
    report: BranchReport, views: list[RecordView], f: Findings
) -> tuple[bool, str, list[int]]:
    who, what = (
        f.deployment.get("deployer"),
        f.deployment.get("commit") or f.deployment.get("version"),
    )
    if who and what:
        return (
            True,
            f"deployed by {who}: {what}",
            _cite(views, ("deployer", "commit", "version", "git_commit", "deployer_id")),
        )
    missing = [n for n, v in (("deployer", who), ("commit or version", what)) if not v]
    return False, f"not recorded: {', '.join(missing)}", []


def _cite(views: list[RecordView], keys: tuple[str, ...]) -> list[int]:
    cited = []
    for v in views:
        result: dict[str, Any] = v.result if isinstance(v.result, dict) else {}
        found = result.get("metadata")
        metadata: dict[str, Any] = found if isinstance(found, dict) else {}
        if any(k in result or k in metadata for k in keys):
            cited.append(v.sequence)
    return cited


def _series_check(phase: str) -> _Check:
    def check(
        report: BranchReport, views: list[RecordView], f: Findings
    ) -> tuple[bool, str, list[int]]:
        found = [s for s in f.series if s.phase == phase and s.samples]
        if not found:
            return False, f"no {phase} metric series recorded", []
        metrics = sorted({s.metric for s in found})
        samples = sum(len(s.samples) for s in found)
        return (
            True,
            f"{len(metrics)} metric(s), {samples} sample(s): {', '.join(metrics)}",
            sorted({s.sequence for s in found}),
        )

    return check


def _analysis(
    report: BranchReport, views: list[RecordView], f: Findings
) -> tuple[bool, str, list[int]]:
    if f.analysis is None or f.analysis_record is None:
        return False, "no analysis result recorded", []
    metrics = f.analysis.get("metrics") or {}
    compared = sorted(
        name
        for name, metric in metrics.items()
        if isinstance(metric, dict) and metric.get("status", "ok") == "ok"
    )
    if not compared:
        # an analysis in which no metric had the data to be judged compared nothing
        return False, f"no metric could be compared ({len(metrics)} without data)", []
    unjudged = len(metrics) - len(compared)
    detail = f"{len(compared)} metric(s) compared"
    if unjudged:
        detail += f", {unjudged} without enough data"
    return True, detail, [f.analysis_record]


def _decision(
    report: BranchReport, views: list[RecordView], f: Findings
) -> tuple[bool, str, list[int]]:
    if f.decision is None or f.decision_record is None:
        return False, "no decision recorded", []
    action = f.decision.get("action")
    if action not in DECISION_ACTIONS:
        what = action or f.decision.get("decision") or "none"
        return False, f"no decision made (recorded: {what})", []
    status = next((v.verified.status for v in views if v.sequence == f.decision_record), None)
    if status != "ok":
        return False, f"the decision step's record {f.decision_record} is {status}", []
    reason = f.decision.get("reason")
    detail = f"decision: {action}" + (f" ({reason})" if isinstance(reason, str) and reason else "")
    return True, detail, [f.decision_record]


_CHECKS: dict[str, _Check] = {
    "verified": _verified,
    "sealed": _sealed,
    "signed": _signed,
    "timestamped": _timestamped,
    "deployment_recorded": _deployment,
    "baseline_captured": _series_check("baseline"),
    "impact_captured": _series_check("impact"),
    "analysis": _analysis,
    "decision": _decision,
}
