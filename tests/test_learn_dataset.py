"""Learning from evidence: the history loader and ``afdp dataset export``.

One repository per module holds a real run (``afdp run --no-prefect`` against the demo
service) and cheaper branches written with the ledger API (genesis, analysis, decision,
training record, seal; signed and time-stamped by the real TSA fixture). Some are then
broken the way an attacker or an accident would: a payload edited in Git, a record
re-signed with an untrusted key, a corrupted time-stamp token, a branch never sealed, a
branch with no training record, and a look-alike ref. Only the verified ones are rows;
the rest are counted with their reasons.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pygit2
import pytest
from conftest import run_cli
from tamper import edit, read_branch, with_file, write_branch

from afdp.evidence import records as rec
from afdp.evidence.canonical import canonical_bytes, sha256_hex
from afdp.evidence.ledger import append_record, seal
from afdp.evidence.signing import load_signer
from afdp.evidence.store import init_repository
from afdp.evidence.trust import load_trust_policy, write_trust_policy
from afdp.learn.dataset import arrow_schema, export_dataset, read_dataset
from afdp.learn.history import classify_path, load_history
from afdp.pipeline.training import build_training_record
from afdp.verify.verifier import check_branch

RUN_WORKFLOW = """\
name: learn_run
version: "1"
triggers: [manual_trigger]
variables:
  METRICS_URL: http://127.0.0.1:1/metrics
collectors:
  demo:
    type: scrape
    url: ${workflow.METRICS_URL}
    interval: 250ms
    timeout: 5s
metrics:
  latency_mean:
    collector: demo
    metric: http_request_duration_seconds
    labels:
      service: ${deployment.service}
    unit: s
    better: lower
  errors_per_second:
    collector: demo
    metric: http_requests_total
    labels:
      service: ${deployment.service}
      code: "500"
    unit: 1/s
    better: lower
workflow:
  pre_deployment:
    - capture_baseline:
        duration: 3s
        interval: 250ms
        metrics: [latency_mean, errors_per_second]
  deployment:
    - mark_deployment_time
    - capture_deployment_metadata: [git_commit, service_version, changed_files, deployment_size]
  post_deployment:
    - capture_impact:
        duration: 3s
        interval: 250ms
        metrics: [same_as_baseline]
    - analyze_differences:
        method: mann_whitney
        thresholds:
          latency_mean_increase: 1s
          errors_per_second_increase: 100_per_second
    - gate:
        condition: errors_per_second.increase > 1000_per_second
        action: rollback
    - decisions
    - generate_training_record
decisions:
  rollback_on_regression:
    condition: latency_mean.degraded or errors_per_second.degraded
    action: rollback
    training_label: regression_rolled_back
  all_clear:
    condition: not (latency_mean.degraded or errors_per_second.degraded)
    action: mark_successful
    training_label: safe_deployment
"""
POLICY = "version: 1\nname: p\nallowed_collector_types: [prometheus, scrape, sql, rest]\n"


def real_run(tmp: Path, repo: Path, keys: Path, tsa_url: str, *, service: str, deployment: str, workflow: str = RUN_WORKFLOW, between=None) -> None:
    """Run a workflow for real against the demo service (``between``: deploy between the phases)."""
    from afdp.demo.service import DemoService

    path = tmp / f"{deployment}.yaml"
    path.write_text(workflow)
    policy = tmp / "policy.yaml"
    policy.write_text(POLICY)
    with DemoService(name=service, version="v1") as demo:
        common = [
            "run", str(path), "--service", service, "--deployment", deployment, "--repo", str(repo),
            "--key", str(keys / "dev.key"), "--tsa", tsa_url, "--policy", str(policy),
            "--set", f"METRICS_URL={demo.metrics_url}", "--commit", "4f2a9c1", "--version", "v2",
            "--environment", "prod", "--changed-file", "src/shop/cart.py",
            "--changed-file", "db/migrations/0042_add_index.sql", "--deployment-size", "40",
            "--no-prefect", "--json",
        ]
        if between is None:
            result = run_cli(*common)
        else:
            first = run_cli(*common, "--phase", "pre")
            assert first.code == 0, (first.out, first.err)
            between(demo)
            result = run_cli(*common, "--phase", "post")
    # exit 1 is a rollback decision here, never a failed run: the outcome names the decision
    assert result.code in (0, 1), (result.out, result.err)
    assert result.json()["decision"]["action"] in ("rollback", "mark_successful"), result.out


def metric_doc(baseline: float, impact: float, *, degraded: bool, unit: dict, better: str = "lower", context: bool = False) -> dict:
    doc = {
        "status": "ok", "unit": unit, "better": better, "baseline": baseline, "impact": impact,
        "increase": impact - baseline, "change": (impact - baseline) / baseline, "factor": impact / baseline,
        "p_value": 0.001 if degraded else 0.4, "significant": degraded, "exceeded": degraded,
        "degraded": None if context else degraded,
        "test": {"effect_size": {"name": "cliffs_delta", "value": 0.8 if degraded else 0.05}},
    }
    if context:
        doc["context"] = True
    return doc


SECONDS = {"symbol": "s", "dimension": "time", "factor": 1}
DOLLARS_PER_HOUR = {"symbol": "USD/h", "dimension": "USD/time", "factor": 1 / 3600}


def ledger_deployment(
    repo: Path, signer, tsa_url: str, service: str, deployment: str, *,
    deployed_at: str | None, degraded: bool = False, changed_files: tuple[str, ...] = ("src/app.py",),
    imported: bool = False, money: bool = False, training: bool = True, sealed: bool = True,
) -> None:
    """A deployment's evidence written with the ledger API: the records a run writes, in short."""
    urls = [tsa_url]
    info = {
        "commit": "c0ffee1", "environment": "prod", "version": "v7", "changed_files": list(changed_files),
        "deployment_size": 12, "deployer": "ci", "deployed_at": deployed_at,
    }
    metadata: dict = {"deployment": info}
    # ``afdp import``'s marker (branch history): on every record, and on the training record
    marked = {"imported": rec.Imported(rec.parse_time(deployed_at))} if imported else {}

    def add(step: str, result: dict) -> dict:
        written = append_record(
            repo, service=service, deployment=deployment, signer=signer, tsa_urls=urls,
            draft=rec.RecordDraft(kind=rec.KIND_STEP, step=step, result=result, **marked), genesis_metadata=metadata,
        )
        return {"step": step, "sequence": written[-1].sequence, "sha256": written[-1].envelope_sha256}

    cited = [add("mark_deployment_time", {"outputs": {"deployed_at": deployed_at} if deployed_at else {}})]
    metrics = {"latency_p99": metric_doc(0.1, 0.16 if degraded else 0.101, degraded=degraded, unit=SECONDS)}
    if money:
        metrics["revenue"] = metric_doc(1200.0, 1180.0, degraded=False, unit=DOLLARS_PER_HOUR, better="higher", context=True)
    analysis = {
        "metrics": metrics,
        "summary": {"any_degradation": degraded, "significant_degradation": degraded,
                    "all_metrics_within_normal": not degraded, "inconclusive": []},
    }
    cited.append(add("analyze_differences", {"analysis": analysis, "outputs": {}}))
    decision = {
        "decision": "rollback_on_regression" if degraded else "all_clear",
        "action": "rollback" if degraded else "mark_successful",
        "label": "regression_rolled_back" if degraded else "safe_deployment",
        "success_criteria_met": not degraded,
    }
    cited.append(add("decisions", {"decision": decision}))
    if training:
        record = build_training_record(
            deployment={"service": service, "id": deployment, **info}, analysis=analysis, decision=decision, cited=cited,
            **({"imported": True} if imported else {}),
        )
        add("generate_training_record", {"record": record, "record_type": "training"})
    if sealed:
        seal(repo, service=service, deployment=deployment, signer=signer, tsa_urls=urls)


def _change_payload(entry, mutate):
    envelope = json.loads(entry.files[rec.ENVELOPE_FILE])
    statement = json.loads(base64.b64decode(envelope["payload"]))
    mutate(statement)
    envelope["payload"] = base64.b64encode(canonical_bytes(statement)).decode()
    return with_file(entry, rec.ENVELOPE_FILE, canonical_bytes(envelope))


def _resign(entry, signer, tsa_url: str):
    """Re-sign (and re-stamp) a record's unchanged statement with another key."""
    from afdp.evidence.timestamp import request_timestamp

    envelope = json.loads(entry.files[rec.ENVELOPE_FILE])
    payload = base64.b64decode(envelope["payload"])
    sig = bytes.fromhex(signer.sign(rec.pae(rec.PAYLOAD_TYPE, payload)).signature)
    files = dict(entry.files)
    files[rec.ENVELOPE_FILE] = rec.envelope_json(payload, signer.public_key.keyid, sig)
    files["timestamp-0.tsr"] = request_timestamp(sig, [tsa_url]).der
    return type(entry)(entry.message, entry.directory, files)


VERIFIED_API = ["d-01", "d-02", "d-03", "d-04"]


@pytest.fixture(scope="module")
def evidence(tmp_path_factory, keys, tsa):
    tmp = tmp_path_factory.mktemp("learn")
    repo = tmp / "evidence"
    init_repository(repo)
    trust = tmp / "auditor" / "trust.yaml"
    trust.parent.mkdir()
    write_trust_policy(trust, keys=[keys / "dev.key.pub"], tsa_roots=[tsa.directory / "root.pem"])
    signer = load_signer(str(keys / "dev.key"))
    attacker = load_signer(str(keys / "attacker.key"))
    real_run(tmp, repo, keys, tsa.url, service="shop", deployment="run-1")
    build = lambda dep, **kw: ledger_deployment(repo, signer, tsa.url, "api", dep, **kw)  # noqa: E731
    build("d-01", deployed_at="2026-01-05T09:30:00Z", changed_files=("src/app.py", "config/app.yaml"))
    build("d-02", deployed_at="2026-01-06T23:10:00+02:00", degraded=True)
    build("d-03", deployed_at="2026-01-07T14:00:00Z", changed_files=())
    build("d-04", deployed_at="2026-01-08T08:00:00Z", money=True)
    build("no-training", deployed_at="2026-01-09T08:00:00Z", training=False)
    build("unsealed", deployed_at="2026-01-09T09:00:00Z", sealed=False)
    for name in ("tampered", "untrusted", "badtsr"):
        build(name, deployed_at="2026-01-10T08:00:00Z", degraded=True)
    # a payload edited in Git: the analysis now says the latency did not move
    edit(repo, 2, lambda e: _change_payload(
        e, lambda s: s["predicate"]["result"]["analysis"]["metrics"]["latency_p99"].update(impact=0.1)),
        service="api", deployment="tampered")
    edit(repo, 4, lambda e: _resign(e, attacker, tsa.url), service="api", deployment="untrusted")
    entries = read_branch(repo, service="api", deployment="badtsr")
    token = bytearray(entries[3].files["timestamp-0.tsr"])
    entries[3] = with_file(entries[3], "timestamp-0.tsr", bytes(token[: len(token) // 2]))
    write_branch(repo, entries, service="api", deployment="badtsr")
    ledger_deployment(repo, signer, tsa.url, "web", "w-1", deployed_at="2026-01-04T12:00:00Z")
    ledger_deployment(repo, signer, tsa.url, "ops", "o-1", deployed_at=None)
    # a look-alike ref AFDP never writes
    git = pygit2.Repository(str(repo))
    git.references.create("refs/heads/afdp/api/extra/level", git.references["refs/heads/afdp/web/w-1"].target)
    return repo, trust


def _row(history, deployment):
    return next(r for r in history.rows if r["deployment"] == deployment)


def test_rows_come_only_from_branches_that_verified(evidence):
    repo, trust = evidence
    history = load_history(repo, trust)
    assert history.considered == 13  # 12 branches + the look-alike ref
    used = sorted(r["deployment"] for r in history.rows)
    assert used == sorted(["run-1", "w-1", "o-1", *VERIFIED_API])
    reasons = {e.branch.removeprefix("refs/heads/afdp/"): e.reason for e in history.excluded}
    assert set(reasons) == {"api/no-training", "api/unsealed", "api/tampered", "api/untrusted", "api/badtsr", "api/extra/level"}
    assert reasons["api/no-training"] == "no training record"
    assert reasons["api/unsealed"] == "verification failed: seal on branch"
    # (the attacker's rewritten commits carry no Git signature: that is named first)
    assert reasons["api/tampered"].startswith("verification failed: ") and "digest" in reasons["api/tampered"]
    assert reasons["api/untrusted"].startswith("verification failed: ") and "signer" in reasons["api/untrusted"]
    assert reasons["api/badtsr"].startswith("verification failed: ") and "timestamp" in reasons["api/badtsr"]
    assert reasons["api/extra/level"].startswith("verification failed: repository")
    assert history.excluded_by_reason()["no training record"] == 1
    assert sum(history.excluded_by_reason().values()) == 6
    # every cited digest is a verified record of the row's own branch
    policy = load_trust_policy(trust)
    for row in history.rows:
        report = check_branch(repo, service=row["service"], deployment=row["deployment"], policy=policy)
        assert report.ok
        assert set(row["record_digests"]) <= {r.envelope_sha256 for r in report.records}
        assert row["record_digests"] == sorted(set(row["record_digests"]))


def test_rows_are_sorted_and_the_digest_is_the_canonical_rows(evidence):
    repo, trust = evidence
    history = load_history(repo, trust)
    keys = [(r["deployed_at"] or "", r["service"], r["deployment"]) for r in history.rows]  # no time first
    assert keys == sorted(keys)
    assert history.digest == sha256_hex(canonical_bytes(history.rows))
    assert all(list(r) == history.columns for r in history.rows)


def test_row_columns_from_a_ledger_branch(evidence):
    repo, trust = evidence
    history = load_history(repo, trust)
    row = _row(history, "d-02")
    assert row["branch"] == "refs/heads/afdp/api/d-02"
    assert row["deployed_at"] == "2026-01-06T21:10:00.000000Z"  # converted to UTC
    assert (row["hour_utc"], row["weekday_utc"], row["weekday_name"]) == (21, 1, "tuesday")
    assert (row["environment"], row["version"], row["commit"]) == ("prod", "v7", "c0ffee1")
    assert (row["change_size"], row["changed_files_count"], row["changed_kinds"]) == (12, 1, ["code"])
    assert (row["decision"], row["label"], row["imported"]) == ("rollback_on_regression", "regression_rolled_back", False)
    assert row["impact.latency_p99.degraded"] is True
    assert row["impact.latency_p99.baseline"] == 0.1 and row["impact.latency_p99.effect_size"] == 0.8
    assert row["money_per_hour"] is None and row["context.revenue"] is None  # d-04 has them, d-02 not
    assert len(row["record_digests"]) == 5  # genesis, mark, analysis, decision, training record
    assert _row(history, "d-01")["changed_kinds"] == ["code", "config"]
    assert _row(history, "d-03")["imported"] is False and _row(history, "d-03")["changed_kinds"] == []
    money = _row(history, "d-04")
    assert money["money_per_hour"] == pytest.approx(1200.0)
    assert money["context.revenue"] == 1200.0
    assert money["impact.revenue.degraded"] is None


def test_row_of_a_real_run(evidence):
    repo, trust = evidence
    row = _row(load_history(repo, trust), "run-1")
    assert row["service"] == "shop" and row["environment"] == "prod" and row["version"] == "v2"
    assert row["changed_kinds"] == ["code", "migration"]
    assert (row["change_size"], row["changed_files_count"]) == (40, 2)
    assert row["deployed_at"].endswith("Z") and row["hour_utc"] is not None
    assert row["label"] in ("safe_deployment", "regression_rolled_back")
    for metric in ("latency_mean", "errors_per_second"):
        assert f"impact.{metric}.p_value" in row and f"impact.{metric}.degraded" in row
    assert isinstance(row["impact.latency_mean.baseline"], float)
    assert len(row["record_digests"]) >= 7


def test_filters_exclude_and_count(evidence):
    repo, trust = evidence
    history = load_history(repo, trust, services=["api"], since=_t("2026-01-06T00:00:00Z"), until=_t("2026-01-07T23:00:00Z"))
    assert sorted(r["deployment"] for r in history.rows) == ["d-02", "d-03"]
    reasons = {e.branch.rsplit("/", 1)[-1]: e.reason for e in history.excluded}
    assert reasons["d-01"] == "outside date range (deployed 2026-01-05T09:30:00.000000Z)"
    assert reasons["tampered"].startswith("verification failed")  # whatever its date says
    assert history.considered == 10  # api's 9 branches + its look-alike ref
    labels = load_history(repo, trust, services=["api"], labels=["regression_rolled_back"])
    assert [r["deployment"] for r in labels.rows] == ["d-02"]
    assert {e.reason for e in labels.excluded if e.branch.endswith("d-01")} == {"label not selected (safe_deployment)"}


def test_verified_training_records_that_cannot_make_a_row(tmp_path, keys, tsa, trust_file):
    """Signed and verified, but wrong: each is left out with its reason (one per check)."""
    repo = tmp_path / "evidence"
    init_repository(repo)
    signer = load_signer(str(keys / "dev.key"))

    def branch(name: str, change) -> None:
        mark = append_record(repo, service="api", deployment=name, signer=signer, tsa_urls=[tsa.url],
                             draft=rec.RecordDraft(kind=rec.KIND_STEP, step="mark_deployment_time", result={}))[-1]
        cited = [{"step": mark.step, "sequence": mark.sequence, "sha256": mark.envelope_sha256}]
        record = build_training_record(
            deployment={"service": "api", "id": name, "deployed_at": "2026-01-05T09:30:00Z"},
            analysis=None, decision=None, cited=cited, label="safe_deployment",
        )
        change(record)
        append_record(repo, service="api", deployment=name, signer=signer, tsa_urls=[tsa.url],
                      draft=rec.RecordDraft(kind=rec.KIND_STEP, step="generate_training_record",
                                            result={"record": record, "record_type": "training"}))
        seal(repo, service="api", deployment=name, signer=signer, tsa_urls=[tsa.url])

    branch("good", lambda r: None)
    branch("no-cited", lambda r: r.pop("cited"))
    branch("bad-time", lambda r: r["features"].update(deployed_at="last tuesday"))
    branch("other-deployment", lambda r: r["deployment"].update(id="good"))
    branch("foreign-citation", lambda r: r["cited"].append({"step": "decide", "sequence": 1, "sha256": "ab" * 32}))
    branch("later-citation", lambda r: r["cited"][0].update(sequence=2))
    history = load_history(repo, trust_file)
    assert [r["deployment"] for r in history.rows] == ["good"]
    reasons = {e.branch.rsplit("/", 1)[-1]: e.reason for e in history.excluded}
    assert reasons["no-cited"].startswith("training record (record 2) is malformed: ") and "'cited' is a required property" in reasons["no-cited"]
    assert reasons["bad-time"].startswith("training record (record 2) is malformed: ") and "date-time" in reasons["bad-time"]
    assert reasons["other-deployment"] == "training record (record 2) names another deployment (api/good)"
    assert reasons["foreign-citation"] == "training record (record 2) cites record 1 (abababababab), which is not on the branch before it"
    assert reasons["later-citation"].startswith("training record (record 2) cites record 2 ")


def test_a_training_record_whose_impacts_are_not_its_cited_analysis_is_left_out(tmp_path, keys, tsa, trust_file):
    """Signed and verified, but its impact numbers are not the analysis it cites: no row."""
    repo = tmp_path / "evidence"
    init_repository(repo)
    signer = load_signer(str(keys / "dev.key"))
    analysis = {
        "metrics": {"latency_p99": metric_doc(0.1, 0.16, degraded=True, unit=SECONDS)},
        "summary": {"any_degradation": True, "significant_degradation": True,
                    "all_metrics_within_normal": False, "inconclusive": []},
    }

    def branch(name: str, change, *, cite_analysis: bool = True) -> None:
        def add(step: str, result: dict) -> dict:
            written = append_record(repo, service="api", deployment=name, signer=signer, tsa_urls=[tsa.url],
                                    draft=rec.RecordDraft(kind=rec.KIND_STEP, step=step, result=result))[-1]
            return {"step": step, "sequence": written.sequence, "sha256": written.envelope_sha256}

        cited = [add("mark_deployment_time", {})]
        analysed = add("analyze_differences", {"analysis": analysis, "outputs": {}})
        if cite_analysis:
            cited.append(analysed)
        record = build_training_record(
            deployment={"service": "api", "id": name, "deployed_at": "2026-01-05T09:30:00Z"},
            analysis=analysis, decision=None, cited=cited, label="regression",
        )
        change(record)
        add("generate_training_record", {"record": record, "record_type": "training"})
        seal(repo, service="api", deployment=name, signer=signer, tsa_urls=[tsa.url])

    branch("good", lambda r: None)
    branch("softened", lambda r: r["impacts"]["latency_p99"].update(impact=0.101, increase=0.001, degraded=False))
    branch("invented", lambda r: r["impacts"].update(revenue=dict(r["impacts"]["latency_p99"])))
    branch("uncited", lambda r: None, cite_analysis=False)
    history = load_history(repo, trust_file)
    assert [r["deployment"] for r in history.rows] == ["good"]
    assert history.rows[0]["impact.latency_p99.impact"] == 0.16
    reasons = {e.branch.rsplit("/", 1)[-1]: e.reason for e in history.excluded}
    assert reasons["softened"] == "training record (record 3) gives latency_p99.impact 0.101, the cited analysis 0.16"
    assert reasons["invented"] == "training record (record 3) gives impacts of revenue, which the cited analysis does not analyse"
    assert reasons["uncited"] == "training record (record 3) gives impacts but cites no analysis that holds them"


@pytest.mark.skipif(not hasattr(rec, "Imported"), reason="needs the import marker of 'afdp import' (branch history)")
def test_imported_deployments_are_marked(tmp_path, keys, tsa, trust_file):
    repo = tmp_path / "evidence"
    init_repository(repo)
    signer = load_signer(str(keys / "dev.key"))
    ledger_deployment(repo, signer, tsa.url, "api", "past-1", deployed_at="2025-06-01T10:00:00Z", imported=True)
    ledger_deployment(repo, signer, tsa.url, "api", "live-1", deployed_at="2026-01-01T10:00:00Z")
    history = load_history(repo, trust_file)
    assert history.excluded == []
    assert {r["deployment"]: r["imported"] for r in history.rows} == {"past-1": True, "live-1": False}
    assert _row(history, "past-1")["deployed_at"] == "2025-06-01T10:00:00.000000Z"  # the described time


def test_a_row_without_a_deployment_time(evidence):
    repo, trust = evidence
    [row] = load_history(repo, trust, services=["ops"]).rows
    assert row["deployed_at"] is None and row["hour_utc"] is None and row["weekday_name"] is None
    dated = load_history(repo, trust, services=["ops"], since=_t("2020-01-01T00:00:00Z"))
    assert dated.rows == [] and [e.reason for e in dated.excluded] == ["outside date range (no deployment time recorded)"]
    assert load_history(repo, trust).rows[0]["deployment"] == "o-1"  # no time sorts first


def test_parallel_and_serial_loading_agree(evidence):
    repo, trust = evidence
    serial, parallel = load_history(repo, trust, jobs=1), load_history(repo, trust, jobs=2)
    assert serial == parallel


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_each_format_round_trips_with_its_datasheet(evidence, tmp_path, fmt):
    repo, trust = evidence
    result = export_dataset(repo, trust, fmt=fmt, out=tmp_path / f"set.{fmt}")
    history = result.history
    assert read_dataset(result.path) == history.rows
    sheet = json.loads((tmp_path / f"set.{fmt}.datasheet.json").read_text())
    assert sheet["dataset"]["digest"] == history.digest
    assert sheet["dataset"]["file_sha256"] == sha256_hex(result.path.read_bytes())
    assert [c["column"] for c in sheet["columns"]] == history.columns
    assert all(c["type"] and c["meaning"] for c in sheet["columns"])
    assert sheet["counts"] == {
        "considered": 13, "used": 7, "excluded": 6,
        "excluded_by_reason": history.excluded_by_reason(),
    }
    assert {e["branch"] for e in sheet["excluded"]} == {e.branch for e in history.excluded}
    assert sheet["record_digests"] == sorted({d for r in history.rows for d in r["record_digests"]})
    missing = {m["column"]: m for m in sheet["missing"]}
    assert missing["money_per_hour"]["null_rows"] == 6 and "money per time" in missing["money_per_hour"]["why"]
    assert "context.revenue" in missing


def test_export_is_byte_identical_on_repeat(evidence, tmp_path):
    repo, trust = evidence
    for fmt in ("parquet", "csv", "jsonl"):
        first = export_dataset(repo, trust, fmt=fmt, out=tmp_path / "a" / f"set.{fmt}", jobs=1)
        second = export_dataset(repo, trust, fmt=fmt, out=tmp_path / "b" / f"set.{fmt}", jobs=2)
        assert first.path.read_bytes() == second.path.read_bytes()
        assert first.datasheet_path.read_bytes() == second.datasheet_path.read_bytes()


def test_parquet_has_the_explicit_schema(evidence, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    repo, trust = evidence
    result = export_dataset(repo, trust, fmt="parquet", out=tmp_path / "set.parquet")
    schema = pq.read_schema(result.path)
    assert schema.equals(arrow_schema(result.history.columns), check_metadata=False)
    assert schema.field("changed_kinds").type == pa.list_(pa.string())
    assert schema.field("hour_utc").type == pa.int64()
    assert schema.field("imported").type == pa.bool_() and not schema.field("imported").nullable
    assert schema.field("impact.latency_p99.p_value").type == pa.float64()
    assert schema.metadata[b"afdp_dataset_digest"] == result.history.digest.encode()


def test_cli_export(evidence, tmp_path):
    repo, trust = evidence
    out = tmp_path / "rows.jsonl"
    done = run_cli("dataset", "export", "--repo", str(repo), "--trust", str(trust), "--out", str(out),
                   "--service", "api", "--label", "safe_deployment", "--json")
    assert done.code == 0, done.err
    summary = done.json()
    assert summary["ok"] and summary["format"] == "jsonl" and summary["used"] == 3
    assert summary["excluded_by_reason"]["label not selected"] == 1
    assert [json.loads(line)["deployment"] for line in out.read_text().splitlines()] == ["d-01", "d-03", "d-04"]
    human = run_cli("dataset", "export", "--repo", str(repo), "--trust", str(trust), "--out", str(tmp_path / "x.csv"))
    assert human.code == 0 and "considered 13 branch(es), used 7, left out 6" in human.out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--out", "{tmp}/x.txt"], "no known suffix"),
        (["--out", "{tmp}/x.csv", "--since", "yesterday"], "--since 'yesterday' is not an ISO 8601"),
        (["--out", "{tmp}/x.csv", "--since", "2026-02-01", "--until", "2026-01-01"], "--since is after --until"),
        (["--out", "{tmp}"], "is a directory"),
        (["--out", "{tmp}/x.csv", "--service", "nope"], "no AFDP evidence branches of nope"),
    ],
)
def test_cli_export_bad_input_is_one_line_exit_2(evidence, tmp_path, args, message):
    repo, trust = evidence
    done = run_cli("dataset", "export", "--repo", str(repo), "--trust", str(trust), *[a.format(tmp=tmp_path) for a in args])
    assert done.code == 2, (done.out, done.err)
    assert message in done.err and len(done.err.strip().splitlines()) == 1


def test_cli_export_missing_repository_or_trust(evidence, tmp_path):
    repo, trust = evidence
    no_repo = run_cli("dataset", "export", "--repo", str(tmp_path / "none"), "--trust", str(trust), "--out", str(tmp_path / "x.csv"))
    assert no_repo.code == 2 and "not an evidence repository" in no_repo.err
    no_trust = run_cli("dataset", "export", "--repo", str(repo), "--trust", str(tmp_path / "t.yaml"), "--out", str(tmp_path / "x.csv"))
    assert no_trust.code == 2 and no_trust.err.count("\n") == 1
    assert not (tmp_path / "x.csv").exists()


def test_untrusted_policy_uses_nothing(evidence, tmp_path, keys, other_tsa):
    """A trust policy that names another TSA root: nothing verifies, nothing is used."""
    repo, _ = evidence
    trust = tmp_path / "other.yaml"
    write_trust_policy(trust, keys=[keys / "dev.key.pub"], tsa_roots=[other_tsa.directory / "root.pem"])
    history = load_history(repo, trust, services=["api"])
    assert history.rows == [] and len(history.excluded) == history.considered == 10
    assert all(e.reason.startswith("verification failed") for e in history.excluded if "no-training" not in e.branch)


def test_copy_of_a_tampered_repository_is_not_used(evidence, tmp_path):
    """The training record itself edited (a label flipped): excluded, the rest unchanged."""
    repo, trust = evidence
    copy = tmp_path / "copy"
    shutil.copytree(repo, copy)
    edit(copy, 4, lambda e: _change_payload(
        e, lambda s: s["predicate"]["result"]["record"].update(label="safe_deployment")),
        service="api", deployment="d-02")
    history = load_history(copy, trust, services=["api"])
    assert "d-02" not in {r["deployment"] for r in history.rows}
    assert any(e.branch.endswith("/d-02") and e.reason.startswith("verification failed") for e in history.excluded)


def test_cli_export_unwritable_output_is_exit_3(evidence, tmp_path):
    repo, trust = evidence
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = run_cli("dataset", "export", "--repo", str(repo), "--trust", str(trust), "--out", str(blocker / "x.csv"))
    assert done.code == 3 and "cannot write" in done.err and len(done.err.strip().splitlines()) == 1


def test_progress_is_drawn_on_stderr_only_on_a_terminal(monkeypatch):
    import io
    import sys

    from afdp.cli.dataset import _progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with _progress("verifying") as none:
        assert none is None
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with _progress("verifying") as update:
        assert update is not None
        update(3, 10)
    assert "verifying" in terminal.getvalue()


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("db/migrations/0042.sql", "migration"), ("tests/test_cart.py", "test"), ("requirements.txt", "dependencies"),
        ("Dockerfile", "infrastructure"), ("deploy/k8s.yaml", "infrastructure"), ("README.md", "docs"),
        ("web/app.tsx", "frontend"), ("config/app.yaml", "config"), ("src/app.go", "code"), ("LICENSE", "other"),
    ],
)
def test_changed_file_kinds(path, kind):
    assert classify_path(path) == kind


def _t(text: str):
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00"))
