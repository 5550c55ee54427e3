"""steps.abtest: ``segment_users``, ``enable_feature`` and ``business_impact``.

The assignment rule and the flag providers are in :mod:`afdp.pipeline.flags`; the
per-group captures in :mod:`.capture`, the control/treatment comparison in
:mod:`.judge`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from afdp.evidence import records as rec
from afdp.evidence.canonical import canonical_bytes
from afdp.pipeline import flags
from afdp.pipeline.runner.state import RunState, StepResult
from afdp.workflow.model import BusinessImpact, EnableFeature, Segment, Step


def _groups(run: RunState, segment: str) -> list[tuple[str, float]]:
    params = run.workflow.step(segment).params
    assert isinstance(params, Segment)
    return [(name, share.base) for name, share in params.groups]


def _flag_step(run: RunState, step: Step) -> Step | None:
    for later in run.workflow.steps[step.index + 1 :]:
        if isinstance(later.params, EnableFeature) and later.params.segment == step.name:
            return later
    return None


def _rule(run: RunState, segment: str) -> dict[str, Any]:
    salt = flags.deployment_salt(run.request.service, run.request.deployment)
    weights = flags.segment_weights(_groups(run, segment))
    total = sum(w for _, w in weights)
    ranges, start = {}, 0.0
    for name, weight in weights:
        end = start + weight * 100 / total
        ranges[name] = [round(start, 6), round(end, 6)]
        start = end
    return {
        "algorithm": "flagd fractional: MurmurHash3_x86_32(salt + user_id, seed 0) as int32; "
        "bucket = |h| / (2^31 - 1) * 100; the first group whose range holds the bucket",
        "salt": salt,
        "weights": [[name, weight] for name, weight in weights],
        "bucket_ranges": ranges,
    }


def handle_segment(run: RunState, step: Step, values: dict[str, Any]) -> StepResult:
    params = step.params
    assert isinstance(params, Segment)
    outputs = {name: share.base for name, share in params.groups}
    rule = _rule(run, step.name)
    result: dict[str, Any] = {"outputs": outputs, "assignment": rule}
    flag_step = _flag_step(run, step)
    text = ", ".join(f"{name} {share}" for name, share in params.groups)
    if flag_step is not None and isinstance(flag_step.params, EnableFeature) and flag_step.params.provider == "flagd":
        # Install the split with every group off: an A/A period whose variants already
        # name the groups, so analytics label events by group before the feature is on.
        fe = flag_step.params
        path = _flag_path(fe, values, run)
        definition = flags.flag_definition(rule["salt"], flags.segment_weights(_groups(run, step.name)), ())
        before, after = flags.write_flagd(path, fe.flag, definition)
        result["flag"] = {"provider": "flagd", "file": str(path), "flag": fe.flag, "before": before, "after": after}
        text += f"; split installed in {path} (flag {fe.flag}, all groups off)"
    return StepResult("ok", result, f"segments: {text}; salt {rule['salt']}")


def _flag_path(params: EnableFeature, values: dict[str, Any], run: RunState) -> Path:
    """Return the flag file to write, resolved as the filesystem resolves it (symlinks,
    ``..``), judged again by the admission policy's ``allowed_flag_targets`` right before
    it is written (a symlink swapped in after admission is refused too).

    Raises:
        FlagError: the policy does not allow the resolved file (the step fails).
    """
    from afdp.workflow.policy import AllowedFlagTargets, resolve_file

    assert params.file is not None
    written = str(params.file.render(values, env=run.env))
    resolved = resolve_file(written)
    admission = run.workflow.admission
    targets = admission.policy.rule(AllowedFlagTargets) if admission is not None else None
    if targets is not None:
        why = targets.judge_file(written, resolved)
        if why is not None:
            raise flags.FlagError(f"allowed_flag_targets: the step {why}")
    return Path(resolved)


def handle_enable_feature(run: RunState, step: Step, values: dict[str, Any]) -> StepResult:
    params = step.params
    assert isinstance(params, EnableFeature)
    rule = _rule(run, params.segment)
    weights = flags.rollout_weights(_groups(run, params.segment), params.group, params.percentage.base)
    definition = flags.flag_definition(rule["salt"], weights, (params.group,))
    enabled_at = rec.format_time(run.request.info.deployed_at or rec.utc_now())
    change: dict[str, Any] = {
        "flag": params.flag,
        "group": params.group,
        "percentage": params.percentage.base,
        "assignment": rule,
    }
    if params.provider == "flagd":
        path = _flag_path(params, values, run)
        before, after = flags.write_flagd(path, params.flag, definition)
        change.update(provider="flagd", file=str(path), before=before, after=after)
        summary = f"flag {params.flag} on for {params.percentage} of {params.group} in {path}"
    else:
        change.update(provider="webhook", before=None, after=definition)
        change["webhook"] = _post(run, params, values, change)
        summary = f"flag {params.flag} on for {params.percentage} of {params.group} via webhook"
    changed = change.get("before") != change.get("after")
    outputs = {"flag": params.flag, "enabled_at": enabled_at, "changed": changed}
    return StepResult("ok", {"outputs": outputs, "change": change}, summary)


def _post(run: RunState, params: EnableFeature, values: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    import httpx

    from afdp.pipeline.actions import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature

    assert params.url is not None
    url = params.url.render(values, env=run.env)
    target = getattr(url, "reveal", lambda: str(url))() if not isinstance(url, str) else url
    now = int(time.time())
    body = canonical_bytes({"type": "afdp.flag_change", "sent_at": now, **change})
    headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: str(now)}
    if params.secret is not None:
        key = params.secret.render(values, env=run.env)
        raw = key.reveal() if hasattr(key, "reveal") else str(key)
        headers[SIGNATURE_HEADER] = signature(raw.encode(), body)
    timeout = params.timeout.seconds if params.timeout else 10.0
    try:
        response = httpx.post(target, content=body, headers=headers, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as exc:
        raise flags.FlagError(f"flag webhook unreachable: {type(exc).__name__}") from None
    if not 200 <= response.status_code < 300:
        raise flags.FlagError(f"flag webhook answered HTTP {response.status_code}")
    return {"url": str(url), "http_status": response.status_code, "signed": params.secret is not None}


def _welch_interval(a: list[float], b: list[float], confidence: float) -> dict[str, Any] | None:
    """Return mean(b) - mean(a) with a Welch interval (Student's t, Welch-Satterthwaite df)."""
    from afdp.pipeline.analysis.distributions import t_ppf

    if len(a) < 2 or len(b) < 2:
        return None
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1)
    se2 = va / len(a) + vb / len(b)
    diff = mb - ma
    if se2 == 0:
        return {"difference": diff, "low": diff, "high": diff, "control_mean": ma, "treatment_mean": mb}
    df = se2**2 / ((va / len(a)) ** 2 / (len(a) - 1) + (vb / len(b)) ** 2 / (len(b) - 1))
    half = t_ppf(0.5 + confidence / 2, df) * math.sqrt(se2)
    return {
        "difference": diff,
        "low": diff - half,
        "high": diff + half,
        "control_mean": ma,
        "treatment_mean": mb,
        "relative": diff / ma if ma else None,
        "df": df,
        "n": {"control": len(a), "treatment": len(b)},
    }


def handle_business_impact(run: RunState, step: Step, values: dict[str, Any]) -> StepResult:
    params = step.params
    assert isinstance(params, BusinessImpact)
    analysis_step = run.workflow.step(params.analysis).params
    groups = getattr(analysis_step, "groups", None)
    capture = getattr(analysis_step, "impact", "")
    series = run.series.get(capture, {})
    analysis = run.analyses.get(params.analysis) or {}
    if not groups:
        return StepResult("failed", {"outputs": {}}, "no A/B comparison", error="no A/B comparison to read")
    control, treatment = groups
    result: dict[str, Any] = {"control": control, "treatment": treatment, "confidence": params.confidence}
    outputs: dict[str, Any] = {}
    if params.revenue_metric:
        interval = _welch_interval(
            series.get(f"{params.revenue_metric}@{control}", []),
            series.get(f"{params.revenue_metric}@{treatment}", []),
            params.confidence,
        )
        result["revenue_difference"] = {"metric": params.revenue_metric, "unit": run.workflow.metric(params.revenue_metric).unit.symbol, **(interval or {"difference": None})}
        if interval:
            outputs.update(
                revenue_difference=interval["difference"],
                revenue_difference_low=interval["low"],
                revenue_difference_high=interval["high"],
            )
    if params.satisfaction_metrics:
        metrics = analysis.get("metrics") or {}
        judged = {m: (metrics.get(m) or {}).get("degraded") for m in params.satisfaction_metrics}
        maintained = None if any(v is None for v in judged.values()) else not any(judged.values())
        result["user_satisfaction"] = {"metrics": judged, "maintained": maintained}
        outputs["user_satisfaction_maintained"] = maintained
    result["outputs"] = outputs
    rev = result.get("revenue_difference") or {}
    if rev.get("difference") is not None:
        summary = (
            f"revenue difference {rev['difference']:+.4g} {rev['unit']} per user "
            f"({params.confidence:.0%} interval {rev['low']:+.4g}..{rev['high']:+.4g})"
        )
    else:
        summary = "revenue difference not computed"
    if "user_satisfaction" in result:
        summary += f"; user satisfaction maintained: {result['user_satisfaction']['maintained']}"
    return StepResult("ok", result, summary)
