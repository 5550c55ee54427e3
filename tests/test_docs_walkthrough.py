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


# -- README "Exit codes (every command)": one line on stderr, the right code, and with
# --json a JSON object on stdout, for the mistakes a new user makes first ------------------

def _mistakes(tmp: Path, trust: Path, key: Path) -> list[tuple[str, tuple[str, ...], int, str]]:
    nowhere = str(tmp / "nowhere")
    empty = str(tmp / "empty")
    common = ("--trust", str(trust))
    return [
        ("verify: wrong path", ("verify", "--repo", nowhere, "--service", "api", "--deployment", "d-1", *common), 2, "not an evidence repository"),
        ("verify: missing trust file", ("verify", "--repo", empty, "--service", "api", "--deployment", "d-1", "--trust", nowhere), 2, "trust policy"),
        ("verify: empty repository", ("verify", "--repo", empty, "--all", *common), 2, "no AFDP evidence branches"),
        ("verify: flag typo", ("verify", "--repo", empty, "--servcie", "api", *common), 2, "Did you mean '--service'"),
        ("log: unknown deployment", ("log", "--repo", empty, "--service", "api", "--deployment", "d-1"), 2, "no evidence branch"),
        ("report: empty repository", ("report", "--repo", empty, "--service", "api", *common, "--out", str(tmp / "r.html")), 2, "no AFDP evidence branches"),
        ("export: unknown deployment", ("export", "--repo", empty, "--service", "api", "--deployment", "d-1", *common, "--out", str(tmp / "pkg")), 2, "no evidence branch"),
        ("verify --bundle: no package", ("verify", "--bundle", nowhere, *common), 2, "no evidence package"),
        ("record: missing result file", ("record", "--repo", empty, "--service", "api", "--deployment", "d-1", "--step", "s",
                                         "--result", nowhere, "--key", str(key), "--tsa", "http://127.0.0.1:9/"), 2, "cannot read result"),
        ("record: public key given as --key", ("record", "--repo", empty, "--service", "api", "--deployment", "d-1", "--step", "s",
                                               "--result", str(tmp / "r.json"), "--key", str(key) + ".pub", "--tsa", "http://127.0.0.1:9/"), 2, "private key"),
        ("seal: unknown deployment", ("seal", "--repo", empty, "--service", "api", "--deployment", "d-1", "--key", str(key),
                                      "--tsa", "http://127.0.0.1:9/"), 2, "no evidence"),
        ("find: bad commit", ("find", "--repo", empty, "--commit", "xyz"), 2, "hex digits"),
        ("validate: wrong path", ("validate", nowhere + ".yaml"), 2, "not found"),
        ("plan: wrong path", ("plan", nowhere + ".yaml"), 2, "not found"),
        ("dataset export: empty repository", ("dataset", "export", "--repo", empty, *common, "--out", str(tmp / "d.parquet")), 2, "no AFDP evidence branches"),
        ("replay: unknown deployment", ("replay", "--repo", empty, *common, "--service", "api", "--deployment", "d-1"), 2, "d-1"),
        ("similar: wrong path", ("similar", "--repo", nowhere, *common, "--service", "api", "--deployment", "d-1"), 2, "not an evidence repository"),
        ("predict: wrong path", ("predict", "--repo", nowhere, *common, "--service", "api", "--change-size", "10"), 2, "not an evidence repository"),
        ("insights: wrong path", ("insights", "--repo", nowhere, *common), 2, "not an evidence repository"),
        ("push: wrong path", ("push", "--repo", nowhere, "--remote", empty, "--all"), 2, "not an evidence repository"),
        ("keys generate: existing file", ("keys", "generate", str(key)), 2, "exists"),
        ("trust init: existing file", ("trust", "init", str(trust), "--key", str(key) + ".pub", "--tsa-root", nowhere), 2, "exists"),
    ]


def test_new_user_mistakes_are_one_line_with_the_documented_exit_code(tmp_path, trust_file, keys, cli):
    from afdp.evidence.store import init_repository

    init_repository(tmp_path / "empty")
    (tmp_path / "r.json").write_text('{"p99_ms": 180}')
    seen = []
    for name, args, code, needle in _mistakes(tmp_path, trust_file, keys / "dev.key"):
        done = cli(*args)
        lines = done.err.strip().splitlines()
        assert (done.code, len(lines)) == (code, 1), (name, done.code, done.err)
        assert needle in lines[0], (name, lines[0])
        assert lines[0].startswith("afdp"), (name, lines[0])
        as_json = cli(*args, "--json")
        document = json.loads(as_json.out)
        assert as_json.code == code and document == {"ok": False, "error": document["error"], "exit_code": code}, name
        seen.append(name.split(":")[0])
    # every command the README shows that reads evidence or a file is in the list above
    assert {"verify", "log", "report", "export", "record", "seal", "find", "validate", "plan",
            "dataset export", "replay", "similar", "predict", "insights", "push"} <= set(seen)


def test_a_tab_or_a_misspelled_key_in_a_workflow_is_located_exit_1(tmp_path, cli):
    # docs/workflows.md "Bad input and what it gets": located, exit 1, no traceback.
    import afdp.workflow

    good = (Path(afdp.workflow.__file__).parent / "examples" / "my_first_workflow.yaml").read_text()
    path = tmp_path / "w.yaml"
    path.write_text(good)
    assert cli("validate", str(path)).code == 0
    first = good.splitlines().index("  - wait_for: deployment") + 1
    path.write_text(good.replace("\n  - ", "\n\t- "))
    done = cli("validate", str(path))
    assert done.code == 1
    assert f"{path}:{first}:1: (file): tab character in indentation; YAML indents with spaces only" in done.out
    path.write_text(good.replace("workflow:", "workflw:"))
    done = cli("validate", str(path))
    assert done.code == 1
    assert "unknown key 'workflw'; did you mean 'workflow'?" in done.out
    assert "missing required key 'workflow'" in done.out


def test_a_kms_key_uri_without_its_backend_is_exit_2_naming_what_is_missing(tmp_path, keys, repo, cli):
    # README: KMS/HSM key URIs need securesystemslib's extra for that backend.
    try:
        import google.cloud.kms  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("google-cloud-kms is installed here: the missing-backend message cannot be shown")
    result = tmp_path / "r.json"
    result.write_text("{}")
    done = cli("record", "--repo", str(repo), "--service", "api", "--deployment", "d-1", "--step", "s",
               "--result", str(result), "--key", "gcpkms:projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
               "--public-key", str(keys / "dev.key.pub"), "--tsa", "http://127.0.0.1:9/")
    assert done.code == 2
    assert len(done.err.strip().splitlines()) == 1
    assert "google-cloud-kms" in done.err
    assert not list(pygit2.Repository(str(repo)).references.iterator())  # nothing written


def test_a_refused_workflow_in_run_is_a_summary_line_then_one_located_line_per_problem(tmp_path, repo, keys, tsa, cli):
    # README "Exit codes": `afdp run` refusing a workflow prints `FILE: N problems`, then
    # one indented `file:line:column: path: message` line per problem; exit 1, nothing written.
    path = tmp_path / "w.yaml"
    path.write_text("name: w\nworkflw:\n  - wait: 1_minute\n")
    done = cli("run", str(path), "--service", "api", "--deployment", "d-1", "--repo", str(repo),
               "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--no-prefect")
    assert done.code == 1
    lines = done.err.rstrip("\n").splitlines()
    assert lines[0] == f"afdp: error: {path}: 2 problems"
    assert lines[1:] == [
        f"  {path}:1:1: (top level): missing required key 'workflow'",
        f"  {path}:2:1: workflw: unknown key 'workflw'; did you mean 'workflow'?",
    ]
    assert not list(pygit2.Repository(str(repo)).references.iterator())
    as_json = cli("run", str(path), "--service", "api", "--deployment", "d-1", "--repo", str(repo),
                  "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--no-prefect", "--json")
    assert as_json.code == 1 and as_json.json()["exit_code"] == 1
    assert as_json.json()["error"].splitlines()[0] == f"{path}: 2 problems"


# -- standard output that cannot be written is operational (3), never a verdict (1) --------

def _closed_stdout(*args: str) -> tuple[int, str]:
    """Run the CLI with its stdout a pipe whose reader has already gone (`| head`, early)."""
    import os

    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([*AFDP, *args], stdout=write, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write)
    return done.returncode, done.stderr


def test_a_closed_pipe_is_exit_3_and_silent_never_a_failed_verification(repo, signer, tsa, trust_file):
    # `afdp verify ... | head -1` under `set -o pipefail`: click turned the broken pipe
    # into exit 1, which reads as "verification failed" for a branch that verified.
    from conftest import build_deployment

    build_deployment(repo, signer, tsa)
    verify = ("verify", "--repo", str(repo), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file))
    assert subprocess.run([*AFDP, *verify], capture_output=True, timeout=60).returncode == 0
    for args in (verify, (*verify, "--json"), ("log", "--repo", str(repo), "--service", "api", "--deployment", "d-42")):
        code, err = _closed_stdout(*args)
        assert (code, err) == (3, ""), (args, code, err)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_a_full_disk_under_stdout_is_one_line_exit_3_with_or_without_json(tmp_path):
    import afdp.workflow

    workflow = Path(afdp.workflow.__file__).parent / "examples" / "my_first_workflow.yaml"
    for extra in ((), ("--json",)):
        with open("/dev/full", "w") as full:
            done = subprocess.run([*AFDP, "validate", str(workflow), *extra], stdout=full,
                                  stderr=subprocess.PIPE, text=True, timeout=60)
        assert done.returncode == 3, done.stderr
        assert done.stderr.splitlines() == ["afdp: error: the system refused a read or write: No space left on device"], done.stderr


def test_init_examples_again_keeps_the_users_edits_and_says_so(tmp_path, cli):
    # README: `afdp init evidence/ --examples`; running it again must neither overwrite an
    # edited example nor pass over it in silence.
    first = cli("init", str(tmp_path / "evidence"), "--examples")
    assert first.code == 0 and "Wrote example workflow" in first.out and "Kept" not in first.out
    mine = tmp_path / "evidence" / "workflows" / "my_first_workflow.yaml"
    mine.write_text(mine.read_text() + "# my edit\n")
    again = cli("init", str(tmp_path / "evidence"), "--examples")
    assert again.code == 0
    assert "Wrote example workflow" not in again.out
    from afdp.workflow.starter import example_files, guide_files

    total = len(example_files()) + len(guide_files())
    assert f"Kept {total} example workflow(s) already in {tmp_path / 'evidence' / 'workflows'} (never overwritten)" in again.out
    assert mine.read_text().endswith("# my edit\n")


def test_demo_out_that_cannot_be_created_is_one_line_exit_3(tmp_path):
    # README: `--out DIR` keeps everything in DIR; a DIR that cannot be made is the
    # machine's state (exit 3, one line), not an "internal error" to report.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    done = subprocess.run([*AFDP, "demo", "--fast", "--out", str(blocker / "demo")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert done.stderr.splitlines() == [f"afdp: error: cannot create the demo folder {blocker / 'demo'}: Not a directory"]
    assert blocker.read_text() == "x"


def test_record_reads_a_result_only_up_to_what_a_record_may_hold(tmp_path, repo, keys, tsa, cli):
    # docs/evidence.md "Size limits": no record file over 64 MiB verifies, so `afdp
    # record` refuses a larger result before holding it all (`--result /dev/zero` used to
    # read until the machine ran out of memory). Nothing is written.
    big = tmp_path / "big.json"
    with open(big, "wb") as handle:  # sparse: 64 MiB + 1 byte of zeros, no disk used
        handle.truncate((64 << 20) + 1)
    args = ("--repo", str(repo), "--service", "api", "--deployment", "d-1", "--step", "s",
            "--key", str(keys / "dev.key"), "--tsa", tsa.url)
    done = cli("record", *args, "--result", str(big))
    assert done.code == 2
    assert done.err.splitlines() == [f"afdp: error: result {big} is larger than the 64 MiB a result may hold"]
    assert not list(pygit2.Repository(str(repo)).references.iterator())
    # negative: a result within the limit is recorded as before
    small = tmp_path / "small.json"
    small.write_text('{"p99_ms": 180}')
    assert cli("record", *args, "--result", str(small)).code == 0


def test_an_output_path_that_cannot_be_written_is_one_line_never_an_internal_error(tmp_path, keys, tsa, trust_file, cli, repo, signer):
    # README "Exit codes": 3 for an operational error that stopped the command; a place
    # that takes no file is the machine's state, not "internal error ... please report it".
    from conftest import build_deployment

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for args, target in (
        (("keys", "generate", str(blocker / "dev.key")), blocker / "dev.key"),
        (("trust", "init", str(blocker / "trust.yaml"), "--key", str(keys / "dev.key.pub"),
          "--tsa-root", str(tsa.directory / "root.pem")), blocker / "trust.yaml"),
    ):
        done = cli(*args)
        assert done.code == 3, (args, done.err)
        lines = done.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"afdp: error: cannot write {target}: "), done.err
    if not Path("/proc/self").is_dir():
        return
    # a folder that exists but takes no file (as a read-only mount would)
    build_deployment(repo, signer, tsa)
    base = ("--repo", str(repo), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file))
    for args, target in ((("report", *base, "--out", "/proc/afdp-report.html"), "/proc/afdp-report.html"),
                         (("export", *base, "--out", "/proc/afdp-package"), "/proc/afdp-package")):
        done = cli(*args)
        assert done.code == 3, (args, done.err)
        lines = done.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"afdp: error: cannot write {target}: "), done.err
        assert "internal error" not in done.err


def test_a_controls_file_too_large_or_not_text_is_one_line_exit_2(tmp_path, repo, signer, tsa, trust_file, cli):
    # docs/audit.md "Controls": the mapping is replaced with --controls FILE; a wrong file
    # (a huge one, /dev/zero, not UTF-8) is a usage error, never read without bound.
    from conftest import build_deployment

    build_deployment(repo, signer, tsa)
    huge = tmp_path / "huge.yaml"
    with open(huge, "wb") as handle:
        handle.truncate((1 << 20) + 1)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe")
    base = ("report", "--repo", str(repo), "--service", "api", "--deployment", "d-42",
            "--trust", str(trust_file), "--out", str(tmp_path / "r.html"))
    for controls, needle in ((huge, "is larger than 1 MiB"), (binary, "is not UTF-8 text")):
        done = cli(*base, "--controls", str(controls))
        assert done.code == 2, done.err
        assert done.err.splitlines() == [done.err.splitlines()[0]] and needle in done.err
        assert not (tmp_path / "r.html").exists()
    shipped = Path(__file__).resolve().parents[1] / "policies" / "controls.yaml"
    assert cli(*base, "--controls", str(shipped)).code == 0  # negative: a real mapping loads


def test_a_pdf_signing_key_or_certificate_too_large_is_one_line_exit_2(tmp_path, repo, signer, tsa, trust_file, keys, cli):
    # README: `afdp report ... --format pdf --sign-key report.key`: a wrong file there (a
    # huge one, /dev/zero) is refused by size, never read into memory without bound.
    import os
    import shutil

    if not (os.environ.get("AFDP_CHROMIUM") or shutil.which("chromium")):
        pytest.skip("Debian 'chromium' is not installed (.ci/run installs it)")
    from conftest import build_deployment

    build_deployment(repo, signer, tsa)
    huge = tmp_path / "huge.pem"
    with open(huge, "wb") as handle:
        handle.truncate((1 << 20) + 1)
    base = ("report", "--repo", str(repo), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file),
            "--out", str(tmp_path / "r.pdf"), "--tsa", tsa.url)
    for extra, what in ((("--sign-key", str(huge)), "signing key"),
                        (("--sign-key", str(keys / "dev.key"), "--sign-cert", str(huge)), "signing certificate")):
        done = cli(*base, *extra)
        assert done.code == 2, done.err
        assert done.err.splitlines() == [f"afdp: error: {what} {huge} is larger than the 1 MiB a {what} may hold"]
        assert not (tmp_path / "r.pdf").exists()
