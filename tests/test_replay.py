"""``afdp replay``: recorded verdicts recomputed from the recorded samples.

A real run (``afdp run --no-prefect``, pre phase against the demo service's v1, then v2
deployed, then the post phase) records its samples, analysis and decision under a lax
workflow (a 1 s latency threshold: the 40 ms regression is accepted). Replaying it with
the recorded workflow gives the recorded canonical form bit for bit; a stricter workflow
re-judges the same samples and rolls back; a tampered analysis fails verification and is
refused; an analysis signed by a trusted key but not computed from the samples is shown
as different; another AFDP version is said plainly, never "identical".
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
from conftest import build_deployment, run_cli
from tamper import edit, with_file
from test_learn_dataset import RUN_WORKFLOW, real_run

from afdp.evidence import records as rec
from afdp.evidence.canonical import canonical_bytes
from afdp.evidence.ledger import append_record, decode_envelope, seal
from afdp.evidence.signing import load_signer
from afdp.evidence.store import EvidenceStore, init_repository
from afdp.evidence.trust import load_trust_policy, write_trust_policy
from afdp.verify.verifier import check_branch

GATED = RUN_WORKFLOW.replace(
    "condition: errors_per_second.increase > 1000_per_second", "condition: latency_mean.increase > 5ms"
)
STRICT = RUN_WORKFLOW.replace("latency_mean_increase: 1s", "latency_mean_increase: 10ms").replace(
    "errors_per_second_increase: 100_per_second", "errors_per_second_increase: 2_per_second"
)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, keys, tsa):
    tmp = tmp_path_factory.mktemp("replay")
    repo = tmp / "evidence"
    init_repository(repo)
    trust = tmp / "auditor" / "trust.yaml"
    trust.parent.mkdir()
    write_trust_policy(trust, keys=[keys / "dev.key.pub"], tsa_roots=[tsa.directory / "root.pem"])
    real_run(tmp, repo, keys, tsa.url, service="shop", deployment="run-1", between=lambda demo: demo.deploy("v2"))
    strict = tmp / "strict.yaml"
    strict.write_text(STRICT)
    return repo, trust, strict


def _own_copy(recorded, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the recorded repository for a test that adds branches to it: the module's
    repository holds run-1 alone, which the ``--all`` tests count on, in any test order."""
    repo, trust, _ = recorded
    copy = tmp_path / "own-copy"
    shutil.copytree(repo, copy)
    return copy, trust


def replay(repo: Path, trust: Path, *args: str):
    return run_cli("replay", "--repo", str(repo), "--trust", str(trust), "--service", "shop", *args)


def test_replay_of_a_real_run_is_identical(recorded):
    repo, trust, _ = recorded
    done = replay(repo, trust, "--deployment", "run-1")
    assert done.code == 0, (done.out, done.err)
    assert done.out.startswith("IDENTICAL shop/run-1: analyze_differences, gate, decisions recomputed")
    assert "mark_successful (all_clear)" in done.out
    data = replay(repo, trust, "--deployment", "run-1", "--json").json()
    [one] = data["replays"]
    assert data["ok"] and one["identical"] and one["status"] == "identical" and one["differences"] == []
    assert one["recorded_analysis_version"] == one["running_analysis_version"]
    report = check_branch(repo, service="shop", deployment="run-1", policy=load_trust_policy(trust))
    assert set(one["record_digests"]) <= {r.envelope_sha256 for r in report.records}
    assert len(one["record_digests"]) == 6  # genesis (workflow), both captures, analysis, gate, decision


def test_stricter_workflow_rejudges_the_same_samples(recorded):
    repo, trust, strict = recorded
    done = replay(repo, trust, "--deployment", "run-1", "--workflow", str(strict))
    assert done.code == 1, (done.out, done.err)
    assert "run-1" in done.out and "mark_successful (all_clear)" in done.out
    assert "rollback (rollback_on_regression)" in done.out and "CHANGED" in done.out
    data = replay(repo, trust, "--all", "--workflow", str(strict), "--json")
    assert data.code == 1
    [one] = data.json()["replays"]
    assert one["decision_changed"] and one["workflow"] == str(strict)
    assert one["recorded_decision"]["action"] == "mark_successful"
    assert one["recomputed_decision"]["action"] == "rollback"
    assert any(d["path"].startswith("metrics.latency_mean.degraded") for d in one["differences"])


def test_a_gate_that_now_stops_the_workflow_decides(recorded, tmp_path):
    repo, trust, _ = recorded
    gated = tmp_path / "gated.yaml"
    gated.write_text(GATED)
    done = replay(repo, trust, "--deployment", "run-1", "--workflow", str(gated), "--json")
    assert done.code == 1, (done.out, done.err)
    [one] = done.json()["replays"]
    assert (one["recomputed_decision"]["decision"], one["recomputed_decision"]["action"]) == ("gate", "rollback")
    assert one["recorded_decision"]["action"] == "mark_successful"
    assert one["steps"] == ["analyze_differences", "gate"]  # the decisions step would not have run
    assert any(d["step"] == "gate" and d["path"] == "triggered" for d in one["differences"])


def test_the_recorded_workflow_as_other_workflow_changes_nothing(recorded, tmp_path):
    repo, trust, _ = recorded
    same = tmp_path / "same.yaml"
    same.write_text(RUN_WORKFLOW)
    done = replay(repo, trust, "--all", "--workflow", str(same))
    assert done.code == 0, (done.out, done.err)
    assert "same decision" in done.out and "CHANGED" not in done.out


def _edit_analysis(statement: dict) -> None:
    statement["predicate"]["result"]["analysis"]["metrics"]["latency_mean"]["degraded"] = True


def test_tampered_analysis_is_refused(recorded, tmp_path):
    repo, trust, _ = recorded
    copy = tmp_path / "copy"
    shutil.copytree(repo, copy)
    position = _position(copy, "analyze_differences")

    def change(entry):
        envelope = json.loads(entry.files[rec.ENVELOPE_FILE])
        statement = json.loads(base64.b64decode(envelope["payload"]))
        _edit_analysis(statement)
        envelope["payload"] = base64.b64encode(canonical_bytes(statement)).decode()
        return with_file(entry, rec.ENVELOPE_FILE, canonical_bytes(envelope))

    edit(copy, position, change, service="shop", deployment="run-1")
    done = replay(copy, trust, "--deployment", "run-1")
    assert done.code == 1 and done.out == ""
    assert done.err.startswith("afdp: error: shop/run-1: ") and "IDENTICAL" not in done.err
    assert len(done.err.strip().splitlines()) == 1
    listed = replay(copy, trust, "--all", "--json")
    assert listed.code == 1
    [refused] = listed.json()["refused"]
    assert refused["reason"].startswith("verification failed: ")


def test_signed_analysis_not_computed_from_the_samples_is_different(recorded, tmp_path, keys, tsa):
    """A trusted signer records an analysis the samples do not give: verification passes
    (the signature is good), replay shows the difference and exits 1."""
    repo, trust = _own_copy(recorded, tmp_path)
    _copy_branch(repo, "run-1", "forged", keys, tsa.url, mutate=lambda step, result: (
        result["analysis"]["metrics"]["latency_mean"].update(p_value=0.5) if step == "analyze_differences" else None
    ))
    assert check_branch(repo, service="shop", deployment="forged", policy=load_trust_policy(trust)).ok
    done = replay(repo, trust, "--deployment", "forged")
    assert done.code == 1, (done.out, done.err)
    assert done.out.startswith("DIFFERENT shop/forged")
    assert "analyze_differences: metrics.latency_mean.p_value: recorded 0.5, recomputed" in done.out
    copied = replay(repo, trust, "--deployment", "copied-1")
    assert copied.code == 0 and copied.out.startswith("IDENTICAL shop/copied-1")  # the copy, unchanged, replays


@pytest.mark.parametrize(
    ("name", "genesis", "digest", "reason"),
    [
        ("other-digest", lambda m: m["workflow"].update(sha256="0" * 64), None, "metadata.workflow.sha256 differs"),
        ("step-digest", None, "1" * 64, "metadata.workflow.sha256 differs"),
        ("withheld", lambda m: m["workflow"]["file"].update(sha256="2" * 64), None, "stored workflow file 'workflow.yaml' does not match"),
    ],
)
def test_stored_workflow_must_be_the_one_the_records_name(recorded, tmp_path, keys, tsa, name, genesis, digest, reason):
    """Signed by the trusted key but inconsistent (the workflow file, the genesis record's
    digest and the steps' digest disagree): verification refuses it, nothing is replayed."""
    repo, trust = _own_copy(recorded, tmp_path)
    _copy_branch(repo, "run-1", name, keys, tsa.url, mutate=lambda step, result: None, genesis=genesis, workflow_digest=digest)
    done = replay(repo, trust, "--deployment", name)
    assert done.code == 1 and done.out == ""
    assert done.err.startswith(f"afdp: error: shop/{name}: record 0 (genesis): sources: ") and reason in done.err


def test_another_analysis_version_is_said_plainly(recorded, monkeypatch):
    import afdp

    repo, trust, _ = recorded
    monkeypatch.setattr(afdp, "__version__", "9.9.9")
    done = replay(repo, trust, "--deployment", "run-1")
    assert done.code == 1
    assert done.out.startswith("ANALYSIS VERSION DIFFERS shop/run-1")
    assert "this is afdp 9.9.9: not claimed identical" in done.out
    assert "equal the recorded ones bit for bit" in done.out and "IDENTICAL" not in done.out


def test_branch_without_a_stored_workflow_has_nothing_to_replay(tmp_path, keys, tsa, trust_file):
    repo = tmp_path / "plain"
    init_repository(repo)
    build_deployment(repo, load_signer(str(keys / "dev.key")), tsa, service="shop", deployment="p-1")
    done = run_cli("replay", "--repo", str(repo), "--trust", str(trust_file), "--service", "shop", "--deployment", "p-1")
    assert done.code == 2 and "nothing to replay" in done.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give --deployment for one deployment, or --all"),
        (["--deployment", "x", "--all"], "give --deployment for one deployment, or --all"),
        (["--deployment", "nope"], "no evidence branch refs/heads/afdp/shop/nope"),
    ],
)
def test_replay_bad_input_is_one_line_exit_2(recorded, args, message):
    repo, trust, _ = recorded
    done = replay(repo, trust, *args)
    assert done.code == 2 and message in done.err and len(done.err.strip().splitlines()) == 1


def test_invalid_other_workflow_is_refused(recorded, tmp_path):
    repo, trust, _ = recorded
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nworkflow: [\n")
    done = replay(repo, trust, "--deployment", "run-1", "--workflow", str(bad))
    assert done.code == 1 and "not valid YAML" in done.err


# -- helpers ---------------------------------------------------------------------------------
def _position(repo: Path, step: str) -> int:
    store = EvidenceStore(repo)
    head = store.head("refs/heads/afdp/shop/run-1")
    for index, commit in enumerate(store.history(head)):
        if f"-{step}/" in "".join(store.commit_files(commit).added):
            return index
    raise AssertionError(step)


def _copy_branch(repo: Path, source: str, target: str, keys: Path, tsa_url: str, *, mutate, genesis=None, workflow_digest=None) -> None:
    """Write ``target`` (and ``copied-1``, unchanged) from the verified records of ``source``
    with the ledger API and the trusted key: same workflow, samples and results
    (``genesis`` edits the target's genesis metadata, ``workflow_digest`` its steps' one)."""
    signer = load_signer(str(keys / "dev.key"))
    store = EvidenceStore(repo)
    head = store.head(f"refs/heads/afdp/shop/{source}")
    records = []
    for commit in store.history(head):
        added = store.commit_files(commit).added
        directory = next(iter(added)).rsplit("/", 1)[0]
        files = {p.rsplit("/", 1)[1]: d for p, d in added.items()}
        predicate = decode_envelope(files[rec.ENVELOPE_FILE])["predicate"]
        records.append((directory, files, predicate))
    genesis_record = records[0]
    extra = {n: d for n, d in genesis_record[1].items() if n.endswith(".yaml")}
    pairs = [(target, mutate)] + ([] if EvidenceStore(repo).head("refs/heads/afdp/shop/copied-1") else [("copied-1", lambda step, result: None)])
    for name, change in pairs:
        metadata = json.loads(json.dumps(genesis_record[2]["result"]["metadata"]))
        if genesis and name == target:
            genesis(metadata)
        for _, files, predicate in records[1:]:
            if predicate["step"]["name"] == "seal":
                continue
            result = json.loads(json.dumps(predicate["result"]))
            change(predicate["step"]["name"], result)
            attachments = {n: d for n, d in files.items() if n.startswith("series-")}
            append_record(
                repo, service="shop", deployment=name, signer=signer, tsa_urls=[tsa_url],
                draft=rec.RecordDraft(
                    kind=rec.KIND_STEP, step=predicate["step"]["name"], result=result, status=predicate["status"],
                    attachments=attachments,
                    workflow_digest=(workflow_digest if name == target and workflow_digest else predicate["workflow"]["sha256"]),
                ),
                genesis_metadata=metadata, genesis_attachments=extra,
            )
        seal(repo, service="shop", deployment=name, signer=signer, tsa_urls=[tsa_url])


def test_replay_and_export_never_import_prefect(recorded, tmp_path):
    """Neither command runs a flow: like verify, they start without the engine."""
    import os
    import subprocess
    import sys

    repo, trust, _ = recorded
    code = (
        "import sys\nfrom afdp.cli import main\n"
        "for argv in ({replay!r}, {export!r}):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "print('engine loaded:', any(m == 'prefect' or m.startswith('prefect.') for m in sys.modules))\n"
    ).format(
        replay=["replay", "--repo", str(repo), "--trust", str(trust), "--service", "shop", "--deployment", "run-1"],
        export=["dataset", "export", "--repo", str(repo), "--trust", str(trust), "--out", str(tmp_path / "d.parquet")],
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    assert "IDENTICAL shop/run-1" in done.stdout and "wrote 1 row(s)" in done.stdout, done.stderr
    assert "engine loaded: False" in done.stdout


TWO_ANALYSES = RUN_WORKFLOW.replace(
    "    - gate:\n",
    "    - compare_performance:\n"
    "        method: mann_whitney\n"
    "        thresholds:\n"
    "          latency_mean_increase: 1s\n"
    "          errors_per_second_increase: 100_per_second\n"
    "    - gate:\n",
)


@pytest.mark.slow
def test_every_recomputed_analysis_must_be_of_this_version(tmp_path, keys, tsa):
    # Two analyses; the first one's signed record says another afdp computed it. The
    # second (this version) must not make the replay "identical".
    repo = tmp_path / "evidence"
    init_repository(repo)
    trust = tmp_path / "trust.yaml"
    write_trust_policy(trust, keys=[keys / "dev.key.pub"], tsa_roots=[tsa.directory / "root.pem"])
    real_run(tmp_path, repo, keys, tsa.url, service="shop", deployment="run-1", workflow=TWO_ANALYSES,
             between=lambda demo: demo.deploy("v2"))
    assert replay(repo, trust, "--deployment", "run-1").out.startswith("IDENTICAL")

    def older(step: str, result: dict) -> None:
        if step == "analyze_differences":
            result["analysis_version"] = "0.0.1"

    _copy_branch(repo, "run-1", "older-first", keys, tsa.url, mutate=older)
    done = replay(repo, trust, "--deployment", "older-first", "--json")
    assert done.code == 1, done.out
    document = done.json()["replays"][0]
    assert document["status"] == "analysis version differs" and document["identical"] is False
    assert document["recorded_analysis_version"] == "0.0.1"
    assert set(document["steps"]) >= {"analyze_differences", "compare_performance"}



@pytest.mark.slow
def test_a_decision_the_recording_skipped_is_judged_under_another_workflow(tmp_path, keys, tsa):
    # Recorded under GATED: the gate stopped the workflow, the decisions step was skipped.
    # Under a workflow whose gate does not stop, the replay must judge the decisions step
    # and show its verdict, not "-" because the recording never reached it.
    repo = tmp_path / "evidence"
    init_repository(repo)
    trust = tmp_path / "trust.yaml"
    write_trust_policy(trust, keys=[keys / "dev.key.pub"], tsa_roots=[tsa.directory / "root.pem"])
    real_run(tmp_path, repo, keys, tsa.url, service="shop", deployment="run-1", workflow=GATED,
             between=lambda demo: demo.deploy("v2"))
    same = replay(repo, trust, "--deployment", "run-1", "--json")
    assert same.code == 0 and same.json()["replays"][0]["status"] == "identical", same.out
    assert same.json()["replays"][0]["recomputed_decision"]["decision"] == "gate"  # still stops there
    lax = tmp_path / "lax.yaml"
    lax.write_text(RUN_WORKFLOW)
    done = replay(repo, trust, "--deployment", "run-1", "--workflow", str(lax), "--json")
    assert done.code == 1, done.out
    document = done.json()["replays"][0]
    assert document["recorded_decision"]["action"] == "rollback" and document["decision_changed"] is True
    assert document["recomputed_decision"]["decision"] == "all_clear"
    assert "decisions" in document["steps"]
