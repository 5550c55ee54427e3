"""Build a compliance report: verify first, then read what was verified.

1. select the branches (one deployment, a service's deployments, or a time range);
2. verify each with ``afdp.verify`` against the auditor's trust policy (unsealed branches
   are verified as such, and reported UNSEALED rather than hidden);
3. read each record's content, accepted only under the digest verification established;
4. find the deployment facts, metric series, analysis and decision; evaluate controls.
"""

from __future__ import annotations

from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from afdp import records as rec
from afdp.errors import NotFoundError, UsageError
from afdp.ledger import trailers
from afdp.names import branch_ref, check_name
from afdp.report import evidence
from afdp.report.controls import evaluate, load_controls
from afdp.report.model import AuditReport, DeploymentSection, ImpactRow, median
from afdp.store import EvidenceStore
from afdp.trust import TrustPolicy
from afdp.verify.verifier import check_branch


def build_report(
    repository: Path | str,
    *,
    policy: TrustPolicy,
    service: str | None = None,
    deployment: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    controls_path: Path | None = None,
) -> AuditReport:
    """Verify the selected deployment branches and return their report.

    Raises:
        UsageError: a deployment without a service, or since after until.
        NotFoundError: no such repository or branch, or nothing in the time range.
        ConfigurationError: the control mapping does not load.
    """
    if deployment and not service:
        raise UsageError("--deployment needs --service")
    if since and until and since > until:
        raise UsageError("--since is after --until")
    controls = load_controls(controls_path)
    store = EvidenceStore(repository)
    selected = _select(store, repository, service, deployment, since, until)
    sections = []
    for svc, dep in selected:
        report = check_branch(
            repository, service=svc, deployment=dep, policy=policy, allow_unsealed=True
        )
        views = evidence.read_records(store, report)
        findings = evidence.find(views)
        sections.append(
            DeploymentSection(
                report,
                tuple(views),
                findings,
                tuple(impact_rows(findings)),
                tuple(evaluate(controls, report, views, findings)),
            )
        )
    scope = {
        "service": service,
        "deployment": deployment,
        "since": rec.format_time(since) if since else None,
        "until": rec.format_time(until) if until else None,
        "repository": str(Path(repository)),
    }
    try:
        version = metadata.version("afdp")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return AuditReport(
        tuple(sections),
        scope,
        rec.format_time(rec.utc_now()),
        f"afdp {version}",
        policy.source,
        str(controls_path) if controls_path else "policies/controls.yaml (shipped)",
    )


def _select(
    store: EvidenceStore,
    repository: Path | str,
    service: str | None,
    deployment: str | None,
    since: datetime | None,
    until: datetime | None,
) -> list[tuple[str, str]]:
    if service and deployment:
        ref = branch_ref(service, deployment)
        if store.head(ref) is None:
            known = [d for s, d in store.branches() if s == service]
            hint = f"; deployments of {service}: {', '.join(known[:10])}" if known else ""
            raise NotFoundError(f"no evidence branch {ref} in {repository}{hint}")
        candidates = [(service, deployment)]
    else:
        if service:
            check_name(service, what="service")
        candidates = [(s, d) for s, d in store.branches() if service is None or s == service]
        if not candidates:
            raise NotFoundError(
                f"no AFDP evidence branches in {repository}"
                + (f" for service {service}" if service else "")
            )
    if since is None and until is None:
        return candidates
    timed = []
    for svc, dep in candidates:
        opened = _opened_at(store, svc, dep)
        if opened is None:
            timed.append((svc, dep))  # cannot place it in time: include it, verification says why
            continue
        if (since is None or opened >= since) and (until is None or opened <= until):
            timed.append((svc, dep))
    if not timed:
        raise NotFoundError(
            f"no deployments{' of ' + service if service else ''} opened between "
            f"{rec.format_time(since) if since else 'the start'} and {rec.format_time(until) if until else 'now'}"
        )
    return timed


def _opened_at(store: EvidenceStore, service: str, deployment: str) -> datetime | None:
    """The genesis commit's time-stamp trailer (unverified: only to select branches)."""
    head = store.head(branch_ref(service, deployment))
    if head is None:
        return None
    first = store.history(head)[0]
    stamp = trailers(first.message).get("AFDP-Timestamp")
    try:
        return rec.parse_time(stamp) if stamp else None
    except ValueError:
        return None


def impact_rows(findings: evidence.Findings) -> list[ImpactRow]:
    """Return the baseline-vs-impact table: from the recorded analysis when there is one,
    else from the medians of the recorded series (marked as such)."""
    rows: list[ImpactRow] = []
    units = {s.metric: s.unit for s in findings.series if s.unit}
    analysis = findings.analysis or {}
    found = analysis.get("metrics")
    metrics: dict[str, Any] = found if isinstance(found, dict) else {}
    for name, m in metrics.items():
        if not isinstance(m, dict):
            continue
        unit = m.get("unit")
        if isinstance(unit, dict):  # analysis.v1: {symbol, dimension, factor}
            unit = unit.get("symbol")
        baseline = _first(m, "baseline", "baseline_median")
        impact = _first(m, "impact", "impact_median")
        status = str(m.get("status") or "ok")
        rows.append(
            ImpactRow(
                metric=str(name),
                unit=str(unit or units.get(name, "")),
                baseline=baseline,
                impact=impact,
                change=_delta(baseline, impact, m),
                relative=m.get("change") if _is_number(m.get("change")) else None,
                p_value=m.get("p_value"),
                significant=m.get("significant"),
                degraded=m.get("degraded"),
                status=status,
                reasons=tuple(str(r) for r in m.get("reasons") or ()) if status != "ok" else (),
                source="analysis",
            )
        )
    shown = {r.metric for r in rows}
    for name in sorted({s.metric for s in findings.series} - shown):
        base = [
            v
            for s in findings.series
            if s.metric == name and s.phase == "baseline"
            for _, v in s.samples
        ]
        imp = [
            v
            for s in findings.series
            if s.metric == name and s.phase == "impact"
            for _, v in s.samples
        ]
        if not base and not imp:
            continue
        b, i = median(base), median(imp)
        rows.append(
            ImpactRow(
                metric=name,
                unit=units.get(name, ""),
                baseline=b,
                impact=i,
                change=(i - b) if b is not None and i is not None else None,
                relative=((i - b) / abs(b)) if b and i is not None else None,
                p_value=None,
                significant=None,
                degraded=None,
                status="ok" if base and imp else "no_data",
                reasons=(),
                source="samples",
            )
        )
    return rows


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _delta(baseline: Any, impact: Any, metric: dict[str, Any]) -> Any:
    """Impact minus baseline; else the recorded increase (or minus the decrease)."""
    if _is_number(baseline) and _is_number(impact):
        return impact - baseline
    if isinstance(baseline, dict) and isinstance(impact, dict):
        b, i = baseline.get("value"), impact.get("value")
        if (
            isinstance(b, (int, float))
            and isinstance(i, (int, float))
            and baseline.get("unit") == impact.get("unit")
        ):
            return {"value": i - b, "unit": impact.get("unit")}
    for key, sign in (("increase", 1), ("decrease", -1)):
        value = metric.get(key)
        if _is_number(value) and value:
            return sign * value
        if isinstance(value, dict) and _is_number(value.get("value")) and value["value"]:
            return {**value, "value": sign * value["value"]}
    return None


def _first(mapping: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if mapping.get(key) is not None:
            return mapping[key]
    return None
