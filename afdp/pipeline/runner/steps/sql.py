"""steps.sql"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from afdp.errors import (
    AfdpError,
)
from afdp.evidence import records as rec
from afdp.workflow.model import (
    Check,
    Query,
    Step,
)

if TYPE_CHECKING:
    pass
from afdp.pipeline.runner.state import RunState, StepResult, _json_safe, _one_line


def handle_query(run: RunState, step: Step, values: dict[str, Any]) -> StepResult:
    params = step.params
    assert isinstance(params, Query)
    samples: list[dict[str, Any]] = []
    provenance: dict[str, Any] = {}
    deadline = time.monotonic() + (run.scaled(params.duration.seconds) if params.duration else 0)
    interval = run.scaled(params.interval.seconds) if params.interval else 1.0
    source: dict[str, Any] = {}
    queries = 0
    spent = 0.0
    while True:
        began = time.monotonic()
        answer, source = _query_or_fallback(run, params, values)
        spent += time.monotonic() - began
        queries += 1 + (params.probe is not None) + ("fallback_reason" in source)
        rows = [_json_safe(dict(row)) for row in answer.rows]
        samples.append({"at": rec.format_time(rec.utc_now()), "rows": rows})
        provenance = dict(answer.provenance)
        if time.monotonic() + interval > deadline:
            break
        run.clock.sleep(interval)
    last = samples[-1]["rows"]
    first_value = next(iter(last[0].values())) if last and last[0] else None
    outputs: dict[str, Any] = {"rows": last, "row_count": len(last), "value": first_value}
    summary = f"{len(last)} row(s)" + (f" x {len(samples)} sample(s)" if len(samples) > 1 else "")
    if params.alert_threshold is not None:
        # The threshold is a duration like every window: --time-scale shortens it too.
        threshold = run.scaled(params.alert_threshold.seconds)
        longest = 0.0
        for sample in samples:
            for row in sample["rows"]:
                first = next(iter(row.values()), None) if row else None
                if isinstance(first, (int, float)) and not isinstance(first, bool):
                    longest = max(longest, float(first))
        outputs["longest_lock_wait"] = longest
        outputs["alert"] = longest > threshold
        summary += f"; longest lock wait {longest:.3f}s" + (" (ALERT)" if outputs["alert"] else "")
    result: dict[str, Any] = {"outputs": outputs, **source}
    if len(samples) > 1:
        result["samples"] = samples
    if params.fingerprint:
        from afdp.pipeline.runner.steps.migration import ServerTime, fingerprint_tables

        wanted = [
            (str(row.get("schema_name") or "public"), str(row["table_name"]))
            for row in last if row.get("table_name")
        ] if "*" in params.fingerprint else [_split_name(name) for name in params.fingerprint]
        began = time.monotonic()
        server = ServerTime()
        result["fingerprints"] = fingerprint_tables(run, params.collector, wanted, values, server=server)
        spent += time.monotonic() - began
        # The database's own time for AFDP's fingerprints; the step's query is the
        # workflow's, and none of its time is taken out of a comparison's window.
        result["database_server_ms"] = round(server.ms, 3)
        queries += 2 * len(wanted)
        summary += f"; {len(result['fingerprints'])} table(s) fingerprinted"
    # Read-only transactions this step ran on the database (a database comparison
    # later leaves them out of the users' rollbacks).
    result["database_queries"] = queries
    result["database_ms"] = round(spent * 1000, 3)
    result.update(read_through([provenance]))
    if outputs.get("alert"):
        # A monitor whose alert fired has found what it watches for: its step fails, and
        # the decision hears of it (a failed step never ends in mark_successful).
        assert params.alert_threshold is not None
        error = (
            f"alert threshold exceeded: {outputs['longest_lock_wait']:g}s > "
            f"{params.alert_threshold} ({threshold:g}s): a lock held or waited for longer"
        )
        return StepResult("failed", result, summary, error, provenance={"query": provenance})
    return StepResult("ok", result, summary, provenance={"query": provenance})


def read_through(provenances: list[dict[str, Any]]) -> dict[str, Any]:
    """The cursor this process's PostgreSQL reads go through, and when it was drawn (this
    machine's clock), when a read (its ``provenances``) was on PostgreSQL: a database
    comparison in another process leaves this step's statements out as this run's too
    (its ``run`` reading), as it does a snapshot's. Other databases: nothing."""
    from afdp.pipeline.collectors.sql import cursor_drawn_at, cursor_name

    if not any(p.get("dialect") == "postgresql" for p in provenances):
        return {}
    return {"read_through": cursor_name(), "read_through_drawn_at": round(cursor_drawn_at(), 3)}


def _query_or_fallback(run: RunState, params: Query, values: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Run the step's query; when it fails and the step has a fallback (the default
    query reads an extension that is not installed), run that, saying which was read."""
    from afdp.pipeline.collectors import CollectorFailed, run_query

    try:
        if params.probe is not None and params.fallback is not None:
            probe = run_query(run.workflow, params.collector, params.probe, values=values, env=run.env, limit=1)
            if not (probe.rows and next(iter(probe.rows[0].values()), False) is True):
                raise CollectorFailed(f"{(params.sources or ('the query',))[0]} is not installed and preloaded")
        answer = run_query(
            run.workflow, params.collector, params.query, values=values, env=run.env, limit=params.limit
        )
    except AfdpError as exc:
        if params.fallback is None or params.sources is None:
            raise
        answer = run_query(
            run.workflow, params.collector, params.fallback, values=values, env=run.env, limit=params.limit
        )
        reason = _one_line(exc.diagnostics())[:300]
        return answer, {"source": params.sources[1], "fallback_reason": f"{params.sources[0]}: {reason}"}
    return answer, ({"source": params.sources[0]} if params.sources else {})


def _split_name(name: str) -> tuple[str, str]:
    schema, dot, table = name.rpartition(".")
    return (schema, table) if dot else ("public", name)


def handle_check(run: RunState, step: Step, values: dict[str, Any]) -> StepResult:
    from afdp.pipeline.collectors import run_query

    params = step.params
    assert isinstance(params, Check)
    checks: list[dict[str, Any]] = []
    provenance: dict[str, Any] = {}
    errors: list[str] = []
    queries = 0
    for check in params.checks:
        entry: dict[str, Any] = {"name": check.name, "expect": _json_safe(check.expect)}
        try:
            answer = run_query(run.workflow, params.collector, check.query, values=values, env=run.env, limit=1)
        except AfdpError as exc:
            entry.update(passed=False, error=exc.diagnostics())
            errors.append(f"{check.name}: {exc.diagnostics()}")
            checks.append(entry)
            continue
        queries += 1
        rows = answer.rows
        got = _json_safe(next(iter(rows[0].values()))) if rows and rows[0] else None
        entry.update(actual=got, passed=_same(got, check.expect))
        provenance[check.name] = dict(answer.provenance)
        checks.append(entry)
    failed = [c["name"] for c in checks if not c["passed"]]
    outputs = {"passed": not failed, "failed": failed}
    summary = f"{len(checks) - len(failed)}/{len(checks)} check(s) passed"
    # A check that does not hold fails its step, as one that could not run does.
    errors += [
        f"{c['name']}: expected {c['expect']!r}, got {c['actual']!r}"
        for c in checks
        if not c["passed"] and "actual" in c
    ]
    status = "failed" if failed else "ok"
    # The read-only transactions that answered (one that failed may not have begun: not
    # counted, the users' rollbacks can only seem more) and the cursor they went through.
    result = {"outputs": outputs, "checks": checks, "database_queries": queries,
              **read_through(list(provenance.values()))}
    return StepResult(status, result, summary, "; ".join(errors) or None, provenance)


def _same(got: Any, expect: Any) -> bool:
    if isinstance(got, (int, float)) and isinstance(expect, (int, float)) and not isinstance(got, bool):
        return math.isclose(float(got), float(expect), rel_tol=1e-9, abs_tol=1e-12)
    return bool(got == expect)
