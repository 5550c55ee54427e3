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

from afdp.audit.report import evidence
from afdp.audit.report import units as fmt
from afdp.audit.report.controls import evaluate, load_controls
from afdp.audit.report.model import AuditReport, DeploymentSection, ImpactRow, median
from afdp.errors import NotFoundError, UsageError
from afdp.evidence import records as rec
from afdp.evidence.ledger import trailers
from afdp.evidence.names import branch_ref, check_name
from afdp.evidence.store import EvidenceStore
from afdp.evidence.trust import TrustPolicy
from afdp.verify.verifier import check_branch, unsafe_branch_reports


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
    if deployment is None:
        # A report across deployments covers every ref under refs/heads/afdp/: a
        # look-alike branch that AFDP never writes makes it FAILED, never invisible.
        for report in unsafe_branch_reports(repository, policy=policy, allow_unsealed=True):
            findings = evidence.find([])
            sections.append(
                DeploymentSection(
                    report, (), findings, (), tuple(evaluate(controls, report, [], findings))
                )
            )
    substituted = store.substitutions()  # scanned once for all the selected branches
    for svc, dep in selected:
        report = check_branch(
            repository, service=svc, deployment=dep, policy=policy, allow_unsealed=True,
            substitutions=substituted,
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
    stamp = trailers(store.message_of(first)).get("AFDP-Timestamp")
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
        unit_text = str(unit or units.get(name, ""))
        verdict, why = metric_verdict(m)
        rows.append(
            ImpactRow(
                metric=str(name),
                unit=unit_text,
                baseline=baseline,
                impact=impact,
                change=_delta(baseline, impact, m),
                relative=m.get("change") if _is_number(m.get("change")) else None,
                p_value=m.get("p_value"),
                significant=m.get("significant"),
                degraded=m.get("degraded"),
                status=status,
                reasons=tuple(str(r) for r in _list(m.get("reasons"))),
                source="analysis",
                verdict=verdict,
                why=why,
                counts=_counts(m.get("counts")),
                effective=_effective(m),
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
                verdict="not analysed" if base and imp else "no data",
                why=(
                    "no analysis is recorded: baseline and impact are medians of the recorded samples",
                )
                if base and imp
                else (f"no {'impact' if base else 'baseline'} samples are recorded",),
                counts=(len(base), len(imp)),
            )
        )
    return rows


#: Verdicts per metric, worst first (the order the report explains them in).
VERDICTS = (
    "degraded",
    "inconclusive",
    "no data",
    "insufficient samples",
    "not analysed",
    "within normal",
    "context (not judged)",
)


def metric_verdict(metric: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    """Return one clear verdict for an analysed metric and its grounds (plain sentences).

    ``degraded`` / ``within normal`` follow the analysis' ``degraded`` (true / false);
    a null ``degraded`` is ``no data``, ``insufficient samples`` or ``inconclusive`` by
    the analysis' status. The grounds name each threshold (observed vs limit, in the
    metric's unit), the statistical test's outcome, and the analysis' own reasons.
    """
    status = str(metric.get("status") or "ok")
    degraded = metric.get("degraded")
    if metric.get("context") is True:
        # Business context (the workflow's context:): shown, never judged.
        why_context = "business context (context:): measured and shown, not judged"
        return "context (not judged)", (why_context, *(str(r) for r in _list(metric.get("reasons"))))
    if degraded is True:
        verdict = "degraded"
    elif degraded is False:
        verdict = "within normal"
    elif status == "no_data":
        verdict = "no data"
    elif status == "insufficient_samples":
        verdict = "insufficient samples"
    else:
        verdict = "inconclusive"
    why: list[str] = []
    for threshold in _list(metric.get("thresholds")):
        if isinstance(threshold, dict):
            text = _threshold_text(threshold)
            if text:
                why.append(text)
    p = metric.get("p_value")
    test_field = metric.get("test")
    test: dict[str, Any] = test_field if isinstance(test_field, dict) else {}
    method = str(test.get("method") or metric.get("method") or "").replace("_", "-")
    by = f" ({method} test)" if method else ""
    if _is_number(p):
        shown = fmt.p_value(p)
        if metric.get("significant_degradation") is True:
            why.append(f"significant worsening: p = {shown}{by}")
        elif metric.get("significant") is True and metric.get("significant_degradation") is False:
            why.append(
                f"significant change, but not a worsening (or a trivial one): p = {shown}{by}"
            )
        elif metric.get("significant") is True:
            why.append(f"significant change: p = {shown}{by}")
        elif metric.get("significant") is False:
            why.append(f"no significant change: p = {shown}{by}")
    elif status == "insufficient_samples":
        counts = _counts(metric.get("counts"))
        sizes = "/".join("?" if n is None else str(n) for n in counts)
        why.append(f"too few samples for the statistical test (baseline/impact: {sizes})")
    why.extend(str(r) for r in _list(metric.get("reasons")) if str(r) not in why)
    if not why and verdict == "within normal":
        why.append("no threshold exceeded and no significant worsening")
    return verdict, tuple(why)


def _threshold_text(threshold: dict[str, Any]) -> str:
    """``increase +40.7 ms exceeds the limit 10ms`` (observed in the threshold's unit)."""
    direction = str(threshold.get("direction") or threshold.get("key") or "change")
    limit = threshold.get("limit")
    limit_text = ""
    if isinstance(limit, dict):
        limit_text = str(limit.get("text") or "").replace("_per_", "/").replace("_", " ")
        if not limit_text and _is_number(limit.get("value")):
            limit_text = fmt.scale_for(str(limit.get("unit") or "")).show(limit["value"])
    observed = threshold.get("observed")
    mode = str(threshold.get("mode") or "absolute")
    unit = str(threshold.get("unit") or "")
    if _is_number(observed):
        if mode == "relative" and unit in ("", "ratio", "fraction"):
            seen = fmt.percent(observed)
        else:
            seen = fmt.scale_for(unit, [observed]).show(observed, signed=mode != "factor")
        seen = f"{direction} {seen}"
    else:
        seen = direction
    exceeded = threshold.get("exceeded")
    if exceeded is True:
        verb = "exceeds the limit"
    elif exceeded is False:
        verb = "within the limit"
    else:
        reason = threshold.get("reason")
        return f"{seen}: limit {limit_text} could not be checked" + (
            f" ({reason})" if reason else ""
        )
    return f"{seen} {verb} {limit_text}".strip()


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else []


def _counts(value: Any) -> tuple[int | None, int | None]:
    if not isinstance(value, dict):
        return (None, None)
    found = tuple(
        value.get(side) if _is_number(value.get(side)) else None for side in ("baseline", "impact")
    )
    return (found[0], found[1])


def _effective(metric: dict[str, Any]) -> tuple[float | None, float | None]:
    """Effective sample sizes when the analysis records them (``n_effective`` as a number
    pair, a {baseline, impact} mapping, or inside ``counts``/``test``); else (None, None)."""
    for holder in (metric, metric.get("counts"), metric.get("test")):
        if not isinstance(holder, dict):
            continue
        for key in ("n_effective", "effective"):
            value = holder.get(key)
            if isinstance(value, dict):
                b, i = value.get("baseline"), value.get("impact")
                return (b if _is_number(b) else None, i if _is_number(i) else None)
            if isinstance(value, (list, tuple)) and len(value) == 2:
                b, i = value
                return (b if _is_number(b) else None, i if _is_number(i) else None)
        b, i = holder.get("baseline_n_effective"), holder.get("impact_n_effective")
        if _is_number(b) or _is_number(i):
            return (b if _is_number(b) else None, i if _is_number(i) else None)
    return (None, None)


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
