"""The README and docs walked through as a new user and an auditor would: each promise
checked here is one no other test held.

The evidence is written by the real ledger, signed and time-stamped by the session's TSA,
and read by the real CLI (``run_cli``); where a branch is shaped "as ``afdp run`` writes
it", the shapes are copied from a real ``afdp run --phase post`` of the guide's Example 1
against Prometheus (roles ``before``/``after``, ``series-*.json`` attachments, the mark's
``outputs.deployed_at``).
"""

from __future__ import annotations

import base64
import json
import shlex
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pygit2
import pytest

from afdp.evidence import records as rec
from afdp.evidence.ledger import append_record, seal

AFDP = [sys.executable, "-m", "afdp"]
DEPLOYED = datetime(2026, 12, 4, 16, 27, 49, 23000, tzinfo=UTC)


def _series_file(metric: str, unit: str, start: float, values: list[float]) -> bytes:
    return json.dumps(
        {
            "metric": metric,
            "provenance": {"collector": "prometheus", "type": "prometheus", "query": metric},
            "samples": [[start + i * 0.5, v] for i, v in enumerate(values)],
            "unit": unit,
        }
    ).encode()


def build_phase_post_branch(
    repo: Path, signer, tsa, *, mark_outputs: bool = True, metric: str = "error_rate"
) -> None:
    """A branch as ``afdp run --phase post --deployed-at T`` writes it: the baseline read
    back from history (before T), the mark written ~26 s after T, then the impact."""
    written = DEPLOYED + timedelta(seconds=26)

    def add(step: str, result, *, phase: str, kind: str, attachments=None, at=written) -> None:
        draft = rec.RecordDraft(
            kind=rec.KIND_STEP,
            step=step,
            result=result,
            started_at=at,
            finished_at=at,
            context={"phase": phase, "step": {"kind": kind, "phase": phase, "type": step}},
            attachments=attachments or {},
        )
        append_record(repo, service="api", deployment="d-1", draft=draft, signer=signer, tsa_urls=[tsa.url])

    t0 = DEPLOYED.timestamp()
    baseline = _series_file(metric, "ratio", t0 - 60, [0.011 + 0.0001 * (i % 3) for i in range(40)])
    impact = _series_file(metric, "ratio", t0 + 30, [0.036 + 0.0001 * (i % 3) for i in range(40)])
    ref = {"path": f"series-{metric}.json", "samples": 40, "unit": "ratio"}
    # "post" is the run's phase (context.phase) for every record of a --phase post run,
    # the baseline capture's included: only its role says which side of the deploy it is.
    add("capture_baseline", {"role": "before", "series": {metric: ref}, "window": {"from_history": True}},
        phase="post", kind="capture", attachments={f"series-{metric}.json": baseline})
    mark = {"commit": "4f2a9c1", "deployer": "alice"}
    if mark_outputs:
        mark["outputs"] = {"deployed_at": rec.format_time(DEPLOYED)}
    add("mark_deployment_time", mark, phase="post", kind="mark")
    add("capture_impact", {"role": "after", "series": {metric: ref}}, phase="post", kind="capture",
        attachments={f"series-{metric}.json": impact}, at=written + timedelta(seconds=20))
    add("decisions", {"decision": {"action": "alert", "criteria": [], "decision": None, "evaluated": [],
                                   "label": "degraded", "reason": "no decision matched; the analysis found degradation",
                                   "success_criteria_met": True}},
        phase="post", kind="decide", at=written + timedelta(seconds=21))
    seal(repo, service="api", deployment="d-1", signer=signer, tsa_urls=[tsa.url])


def _report(cli, repo: Path, trust_file: Path, out: Path) -> dict:
    done = cli("report", "--repo", str(repo), "--service", "api", "--deployment", "d-1",
               "--trust", str(trust_file), "--out", str(out))
    assert done.code == 0, done.err
    return json.loads(out.read_text())["deployments"][0]


def test_phase_post_report_keeps_the_history_baseline_before_the_deploy(repo, signer, tsa, trust_file, cli, tmp_path):
    # docs/audit.md "What it shows" 4: the baseline and impact series, and a dashed
    # deploy marker; a --phase post run (the GitHub Action's default) must plot its
    # baseline as baseline, and the marker at the deploy, not when the mark was written.
    build_phase_post_branch(repo, signer, tsa)
    deployment = _report(cli, repo, trust_file, tmp_path / "r.json")
    phases = {(s["record"], s["phase"]) for s in deployment["series"]}
    assert phases == {(1, "baseline"), (3, "impact")}
    assert deployment["deployed_at"] == DEPLOYED.timestamp()
    html = tmp_path / "r.html"
    assert cli("report", "--repo", str(repo), "--service", "api", "--deployment", "d-1",
               "--trust", str(trust_file), "--out", str(html)).code == 0
    page = html.read_text()
    assert "deployed at 2026-12-04T16:27:49Z" in page
    assert "(40 sample(s), record 1) → impact" in page


def test_a_metric_named_after_hours_in_a_baseline_capture_stays_baseline(repo, signer, tsa, trust_file, cli, tmp_path):
    # The recorded role decides, not words in a metric's name ("after").
    build_phase_post_branch(repo, signer, tsa, metric="after_hours_sessions")
    deployment = _report(cli, repo, trust_file, tmp_path / "r.json")
    assert {(s["record"], s["phase"]) for s in deployment["series"]} == {(1, "baseline"), (3, "impact")}


def test_deploy_marker_falls_back_to_when_the_mark_was_written(repo, signer, tsa, trust_file, cli, tmp_path):
    # Negative: a mark that records no time (ledger-written evidence) is placed when the
    # mark record was written, as before; never at a time nothing recorded.
    build_phase_post_branch(repo, signer, tsa, mark_outputs=False)
    deployment = _report(cli, repo, trust_file, tmp_path / "r.json")
    assert deployment["deployed_at"] == (DEPLOYED + timedelta(seconds=26)).timestamp()


def test_success_criteria_met_is_not_a_yes_when_none_were_declared(repo, signer, tsa, trust_file, cli, tmp_path):
    # The runner records success_criteria_met: true when a workflow declares no criteria
    # (none failed). Beside a degraded deployment the report must not read "yes".
    build_phase_post_branch(repo, signer, tsa)
    html = tmp_path / "r.html"
    assert cli("report", "--repo", str(repo), "--service", "api", "--deployment", "d-1",
               "--trust", str(trust_file), "--out", str(html)).code == 0
    page = html.read_text()
    assert "<th>success criteria met</th><td>none declared" in page
    assert "<th>success criteria met</th><td>yes</td>" not in page


@pytest.mark.slow
def test_demo_with_prefect_runs_both_phases_as_flow_runs_and_verifies(tmp_path):
    # README "What the demo shows": "`--prefect` runs it as a Prefect flow". The flow's
    # default trigger is deployment_completed, which the demo workflow does not list: the
    # demo must say what started it, or every `afdp demo --prefect` stops at exit 2.
    out = tmp_path / "demo"
    done = subprocess.run([*AFDP, "demo", "--fast", "--prefect", "--out", str(out)],
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    argv = shlex.split(done.stdout.rstrip("\n").splitlines()[-1])
    assert argv[:2] == ["afdp", "verify"]
    verify = subprocess.run([*AFDP, *argv[1:], "--json"], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    report = json.loads(verify.stdout)["branches"][0]
    assert report["state"] == "verified"
    # both phases ran as Prefect flow runs (each step record's signed context says so),
    # and the genesis record names what started it: the demo, by hand
    repository = pygit2.Repository(str(out / "evidence"))
    head = repository.revparse_single(report["branch"])
    contexts = {}
    for entry in head.tree["records"]["000"]:
        envelope = json.loads(head.tree["records"]["000"][entry.name]["envelope.json"].data)
        predicate = json.loads(base64.b64decode(envelope["payload"]))["predicate"]
        contexts[predicate["step"]["name"]] = predicate.get("context") or {}
    assert contexts["capture_baseline"]["engine"] == "prefect"
    assert contexts["capture_impact"]["engine"] == "prefect"
    assert contexts["capture_baseline"]["prefect"]["flow_run_id"] != contexts["capture_impact"]["prefect"]["flow_run_id"]
    log = subprocess.run([*AFDP, "log", "--repo", str(out / "evidence"), "--service", report["service"],
                          "--deployment", report["deployment"], "--json"], capture_output=True, text=True, timeout=60)
    assert log.returncode == 0, log.stderr
    assert json.loads(log.stdout)["trigger"]["name"] == "manual_trigger"


def test_report_transcript_is_verify_allow_unsealed(repo, signer, tsa, trust_file, cli, tmp_path):
    # docs/audit.md, JSON: the transcript is `afdp verify --allow-unsealed --json`'s: a
    # tampered branch that is also unsealed is FAILED with every failure but the missing
    # seal, which is "sealed": false; plain `afdp verify` lists that too.
    from conftest import build_deployment
    from tamper import edit, with_file

    build_deployment(repo, signer, tsa, steps=2, sealed=False)
    edit(repo, 1, lambda e: with_file(e, "extra.txt", b"planted"))
    plain = cli("verify", "--repo", str(repo), "--service", "api", "--deployment", "d-42",
                "--trust", str(trust_file), "--json")
    assert plain.code == 1
    plain_checks = [(f["where"], f["check"]) for f in plain.json()["branches"][0]["failures"]]
    assert ("branch", "seal") in plain_checks
    allowed = cli("verify", "--repo", str(repo), "--service", "api", "--deployment", "d-42",
                  "--trust", str(trust_file), "--json", "--allow-unsealed")
    assert allowed.code == 1
    out = tmp_path / "r.json"
    done = cli("report", "--repo", str(repo), "--service", "api", "--deployment", "d-42",
               "--trust", str(trust_file), "--out", str(out))
    assert done.code == 1
    document = json.loads(out.read_text())
    assert document["verdict"] == "FAILED"
    transcript = document["deployments"][0]["verification"]
    assert transcript["sealed"] is False
    report_checks = [(f["where"], f["check"]) for f in transcript["failures"]]
    assert report_checks == [(f["where"], f["check"]) for f in allowed.json()["branches"][0]["failures"]]
    assert report_checks == [c for c in plain_checks if c != ("branch", "seal")]
    assert any(check == "layout" for _, check in report_checks)
