"""The ``correlation:`` section (kind ``correlate``): figures across past migrations.

Past evidence is read only through the verifier: every other deployment branch of the
same service is checked with :func:`afdp.verify.check_branch` against the trust policy
given to the run (``afdp run --trust``); a branch that fails any check (or is unsealed)
is excluded and named, and the records are read from the very commit that verified.
Of the verified branches, those with migration records (a database snapshot, table
sizes or lock monitor) are the sample. Each figure says how many deployments are behind
it; below ``minimum`` (:data:`afdp.workflow.catalog.MIN_CORRELATION_DEPLOYMENTS`) it is
``not enough data``.

- ``migration_size_to_duration``: Pearson's r and the least-squares slope between the
  bytes of the tables ``record_table_sizes`` listed before the migration and the
  migration's duration (from the end of the last pre-migration database step to the
  start of the first post-migration one).
- ``time_of_day_to_impact``: per part of the day (UTC hour the migration started:
  night 0-6, morning 6-12, afternoon 12-18, evening 18-24), the share of migrations with
  an impact (a failed database step or lock alert).
- ``table_type_to_lock_duration``: per size class of the largest table (small < 10 MB,
  medium < 1 GB, large), the mean and longest lock ``monitor_locks`` saw.
"""

from __future__ import annotations

import json
import math
from typing import Any

from afdp.errors import AfdpError
from afdp.evidence import records as rec
from afdp.pipeline.runner.state import RunState, StepResult, _one_line
from afdp.workflow.model import Correlate, Step

NOT_ENOUGH = "not enough data"
_PARTS = (("night", 0), ("morning", 6), ("afternoon", 12), ("evening", 18))
_CLASSES = (("small", 10 * 2**20), ("medium", 2**30), ("large", math.inf))


def handle_correlation(run: RunState, step: Step, values: dict[str, Any]) -> StepResult:
    params = step.params
    assert isinstance(params, Correlate)
    request = run.request
    base: dict[str, Any] = {"minimum": params.minimum, "service": request.service}
    if request.trust_policy is None:
        reason = ("not computed: no trust policy was given (afdp run --trust); past evidence "
                  "is read only through the verifier")
        figures = {f: {"status": reason, "deployments": 0} for f in params.figures}
        return StepResult("ok", {"outputs": dict.fromkeys(params.figures, NOT_ENOUGH),
                                 "figures": figures, **base, "verified": [], "excluded": []},
                          reason)
    sample, verified, excluded = _read_past(run)
    figures = {f: _figure(f, sample, params.minimum) for f in params.figures}
    outputs = {f: figures[f].get("value", figures[f]["status"]) for f in params.figures}
    result = {
        "outputs": outputs,
        "figures": figures,
        **base,
        "verified": verified,
        "excluded": excluded,
        "migrations": sample,
    }
    summary = (
        f"{len(sample)} past migration(s) from {len(verified)} verified branch(es); "
        f"{len(excluded)} excluded"
        + (f" ({', '.join(e['deployment'] for e in excluded)})" if excluded else "")
    )
    return StepResult("ok", result, summary)


def _read_past(run: RunState) -> tuple[list[dict[str, Any]], list[str], list[dict[str, str]]]:
    import pygit2

    from afdp.evidence.ledger import decode_envelope, trailers
    from afdp.evidence.store import EvidenceStore
    from afdp.evidence.trust import load_trust_policy
    from afdp.verify import check_branch

    request = run.request
    assert request.trust_policy is not None
    policy = load_trust_policy(request.trust_policy, evidence_repository=request.repository)
    store = EvidenceStore(request.repository)
    sample: list[dict[str, Any]] = []
    verified: list[str] = []
    excluded: list[dict[str, str]] = []
    for service, deployment in store.branches():
        if service != request.service or deployment == request.deployment:
            continue
        try:
            report = check_branch(request.repository, service=service, deployment=deployment, policy=policy)
        except AfdpError as exc:
            excluded.append({"deployment": deployment, "reason": _one_line(exc.diagnostics())[:200]})
            continue
        if not report.ok or report.head is None:
            first = report.failures[0] if report.failures else None
            reason = f"{first.check}: {first.reason}" if first else "did not verify"
            excluded.append({"deployment": deployment, "reason": _one_line(reason)[:200]})
            continue
        verified.append(deployment)
        # Read what was verified: the commit the report names, not the branch as it is now.
        commit = store.repo.get(report.head)
        if not isinstance(commit, pygit2.Commit):
            excluded.append({"deployment": deployment, "reason": "the verified commit cannot be read"})
            continue
        records: list[dict[str, Any]] = []
        for entry in store.history(commit):
            info = trailers(store.message_of(entry))
            if info.get("AFDP-Kind") != rec.KIND_STEP:
                continue
            files = store.list_dir(entry.tree, rec.record_dir(int(info["AFDP-Record"]), info["AFDP-Step"]))
            envelope = files.get(rec.ENVELOPE_FILE)
            if envelope is None:
                continue
            predicate = decode_envelope(envelope)["predicate"]
            result = predicate.get("result")
            if predicate.get("result_ref"):
                result = json.loads(files.get(rec.RESULT_FILE, b"null"))
            records.append({**predicate, "result": result})
        migration = _migration(deployment, records)
        if migration is not None:
            sample.append(migration)
    return sample, verified, excluded


def _migration(deployment: str, records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Return the features of one past migration from its verified records (or None)."""
    by_type: dict[str, list[dict[str, Any]]] = {}
    for record in sorted(records, key=lambda r: (r.get("step") or {}).get("index", 0)):
        kind = (((record.get("context") or {}).get("step")) or {}).get("type")
        by_type.setdefault(str(kind), []).append(record)
    sizes = by_type.get("record_table_sizes", [])
    db_before = [r for r in (*sizes, *by_type.get("snapshot_performance", []))]
    db_after = [
        r for t in ("verify_data_integrity", "compare_performance", "analyze_user_impact")
        for r in by_type.get(t, [])
    ]
    locks = by_type.get("monitor_locks", [])
    if not (db_before or locks):
        return None
    tables = []
    for record in sizes:
        for row in ((record.get("result") or {}).get("outputs") or {}).get("rows") or []:
            if isinstance(row, dict) and isinstance(row.get("total_bytes"), (int, float)):
                tables.append(float(row["total_bytes"]))
    start = max((rec.parse_time(r["finished_at"]) for r in db_before), default=None)
    end = min((rec.parse_time(r["started_at"]) for r in db_after), default=None)
    lock = None
    for record in locks:
        value = ((record.get("result") or {}).get("outputs") or {}).get("longest_lock_wait")
        if isinstance(value, (int, float)):
            lock = max(lock or 0.0, float(value))
    impact = any(
        r.get("status") == "failed"
        for t in ("monitor_locks", "verify_data_integrity", "compare_performance", "analyze_user_impact")
        for r in by_type.get(t, [])
    )
    largest = max(tables, default=None)
    return {
        "deployment": deployment,
        "size_bytes": sum(tables) if tables else None,
        "duration_seconds": (end - start).total_seconds() if start and end and end >= start else None,
        "started_hour_utc": start.hour if start else None,
        "impact": impact,
        "longest_lock_seconds": lock,
        "table_class": None if largest is None else next(n for n, top in _CLASSES if largest < top),
    }


def _figure(name: str, sample: list[dict[str, Any]], minimum: int) -> dict[str, Any]:
    if name == "migration_size_to_duration":
        pairs = [(m["size_bytes"], m["duration_seconds"]) for m in sample
                 if m["size_bytes"] is not None and m["duration_seconds"] is not None]
        figure: dict[str, Any] = {"deployments": len(pairs), "x": "size_bytes", "y": "duration_seconds"}
        if len(pairs) < minimum:
            return {**figure, "status": NOT_ENOUGH}
        r, slope = _pearson(pairs)
        if r is None:
            return {**figure, "status": "no variation: every migration had the same size or duration"}
        return {**figure, "status": "computed", "value": r, "pearson_r": r,
                "seconds_per_megabyte": None if slope is None else slope * 2**20}
    if name == "time_of_day_to_impact":
        groups: dict[str, list[bool]] = {}
        for m in sample:
            if m["started_hour_utc"] is None:
                continue
            part = [p for p, first in _PARTS if m["started_hour_utc"] >= first][-1]
            groups.setdefault(part, []).append(bool(m["impact"]))
        return _grouped(groups, minimum, lambda v: {"impact_share": sum(v) / len(v)}, "impact_share")
    if name == "table_type_to_lock_duration":
        locks: dict[str, list[float]] = {}
        for m in sample:
            if m["table_class"] is not None and m["longest_lock_seconds"] is not None:
                locks.setdefault(m["table_class"], []).append(m["longest_lock_seconds"])
        return _grouped(
            locks, minimum,
            lambda v: {"mean_lock_seconds": sum(v) / len(v), "longest_lock_seconds": max(v)},
            "mean_lock_seconds",
        )
    return {"deployments": 0, "status": "unknown figure"}


def _grouped(groups: dict[str, list[Any]], minimum: int, stats: Any, key: str) -> dict[str, Any]:
    total = sum(len(v) for v in groups.values())
    by_group = {
        name: {"deployments": len(values), **(
            {"status": "computed", **stats(values)} if len(values) >= minimum
            else {"status": NOT_ENOUGH})}
        for name, values in sorted(groups.items())
    }
    if total < minimum:
        return {"deployments": total, "status": NOT_ENOUGH, "groups": by_group}
    value = {n: g[key] for n, g in by_group.items() if key in g}
    return {"deployments": total, "status": "computed" if value else NOT_ENOUGH,
            "groups": by_group, **({"value": value} if value else {})}


def _pearson(pairs: list[tuple[float, float]]) -> tuple[float | None, float | None]:
    n = len(pairs)
    mx = sum(x for x, _ in pairs) / n
    my = sum(y for _, y in pairs) / n
    sxx = sum((x - mx) ** 2 for x, _ in pairs)
    syy = sum((y - my) ** 2 for _, y in pairs)
    sxy = sum((x - mx) * (y - my) for x, y in pairs)
    if sxx <= 0 or syy <= 0:
        return None, None
    return sxy / math.sqrt(sxx * syy), sxy / sxx


__all__ = ["NOT_ENOUGH", "handle_correlation"]
