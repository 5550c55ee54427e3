"""Compliance reports over real evidence branches (real Git, real TSA over loopback HTTP).

HTML is opened in Debian's headless Chromium (the verdict, the table and the plots must
render with no console errors); PDFs are rasterized with poppler's pdftoppm and their
PAdES signatures validated with pyHanko's validation API.
"""

from __future__ import annotations

import base64
import json
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pygit2
import pytest
from conftest import add_step, build_deployment
from tamper import edit, with_file

from afdp.evidence import records as rec
from afdp.evidence.canonical import canonical_bytes
from afdp.evidence.ledger import append_record, seal

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian 'chromium' is not installed (.ci/run installs it)")
needs_poppler = pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="poppler-utils is not installed")


def build_run_deployment(repo: Path, signer, tsa, *, service: str = "api", deployment: str = "d-42", steps: int = 0, sealed: bool = True) -> None:
    """A branch shaped like ``afdp run`` writes it: baseline, deploy mark, impact, analysis,
    decision (+ ``steps`` filler steps), sealed."""
    rnd = random.Random(7)
    now = time.time()

    def add(step: str, result, **kw) -> None:
        append_record(
            repo,
            service=service,
            deployment=deployment,
            draft=rec.RecordDraft(kind=rec.KIND_STEP, step=step, result=result, **kw),
            signer=signer,
            tsa_urls=[tsa.url],
            genesis_metadata={"environment": "production"},
        )

    def series(metric: str, unit: str, start: float, level: float) -> dict:
        return {
            "metric": metric,
            "unit": unit,
            "samples": [[start + i * 5, level + rnd.random() * 4] for i in range(40)],
            "provenance": {"collector": "prometheus", "query": f"{metric}{{service='{service}'}}"},
        }

    add("capture_baseline", {"metrics": {"response_time_p99": series("response_time_p99", "ms", now - 400, 120), "error_rate": series("error_rate", "%", now - 400, 1.0)}})
    add("mark_deployment_time", {"deployed_at": rec.format_time(rec.utc_now())})
    add("capture_deployment_metadata", {"git_commit": "0f3c2a9", "deployer_id": "alice", "changed_files": ["api/app.py", "api/db.py"]})
    for i in range(steps):
        add(f"wait-{i}", {"waited_seconds": 1})
    add("capture_impact", {"metrics": {"response_time_p99": series("response_time_p99", "ms", now + 60, 160), "error_rate": series("error_rate", "%", now + 60, 5.0)}})
    add(
        "analyze_differences",
        {
            "method": "mann_whitney",
            "metrics": {
                # analysis.v1 shapes: numbers in the metric's unit, unit as {symbol, ...}
                "response_time_p99": {"metric": "response_time_p99", "unit": {"symbol": "ms", "dimension": "time", "factor": 0.001}, "baseline": 122.0, "impact": 162.1, "increase": 40.1, "decrease": 0.0, "change": 0.3287, "p_value": 1e-9, "significant": True, "exceeded": True, "degraded": True, "status": "ok", "reasons": []},
                "error_rate": {"metric": "error_rate", "unit": {"symbol": "%", "dimension": "ratio", "factor": 0.01}, "baseline": 2.9, "impact": 7.0, "increase": 4.1, "decrease": 0.0, "change": 1.4138, "p_value": 1e-8, "significant": True, "exceeded": True, "degraded": True, "status": "ok", "reasons": []},
            },
            "summary": {"any_degradation": True, "significant_degradation": True, "all_metrics_within_normal": False, "exceeded": ["response_time_p99", "error_rate"]},
            "inconclusive": [],
        },
    )
    add("decide", {"decision": "auto_rollback", "action": "rollback", "label": "regression", "success_criteria_met": False, "reason": "response_time_p99.increase > 20ms", "criteria": [{"condition": "response_time_p99.increase < 10ms", "result": False, "error": None}], "evaluated": []})
    if sealed:
        seal(repo, service=service, deployment=deployment, signer=signer, tsa_urls=[tsa.url])


# -- Chromium helpers --------------------------------------------------------------------
def chromium_open(page: Path, tmp_path: Path) -> tuple[str, list[str]]:
    """Return (DOM after rendering, console messages) of ``page`` in headless Chromium."""
    assert CHROMIUM is not None
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp_path / 'chromium-profile'}",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=90, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    return done.stdout, console


def rendered_text(page: Path, tmp_path: Path) -> str:
    """The text a reader sees, in order: print in Chromium, extract with pdftotext."""
    from afdp.audit.report.pdf import print_pdf

    pdf = tmp_path / "printed.pdf"
    pdf.write_bytes(print_pdf(page.read_text(encoding="utf-8")))
    return subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout


def plot_pixels(page: Path, tmp_path: Path) -> dict[str, int]:
    """Print ``page`` in Chromium, rasterize with pdftoppm, count the plot colours' pixels."""
    from afdp.audit.report import svg
    from afdp.audit.report.pdf import print_pdf

    pdf = tmp_path / "raster.pdf"
    pdf.write_bytes(print_pdf(page.read_text(encoding="utf-8")))
    subprocess.run(["pdftoppm", "-r", "72", str(pdf), str(tmp_path / "raster")], check=True, timeout=60)
    colours = {"baseline": svg.BASELINE_COLOR, "impact": svg.IMPACT_COLOR}
    wanted = {name: tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for name, c in colours.items()}
    counts = dict.fromkeys(colours, 0)
    for image in sorted(tmp_path.glob("raster-*.ppm")):
        data = image.read_bytes()
        magic, width, height, depth, pixels = data.split(maxsplit=4)
        assert magic == b"P6" and depth == b"255"
        for i in range(0, int(width) * int(height) * 3, 3):
            rgb = pixels[i : i + 3]
            for name, (r, g, b) in wanted.items():
                if abs(rgb[0] - r) < 16 and abs(rgb[1] - g) < 16 and abs(rgb[2] - b) < 16:
                    counts[name] += 1
    return counts


@pytest.fixture()
def run_branch(repo, signer, tsa):
    build_run_deployment(repo, signer, tsa)
    return repo


# -- HTML ---------------------------------------------------------------------------------
@needs_chromium
def test_html_report_renders_verdict_table_and_plots_in_chromium(run_branch, trust_file, cli, tmp_path):
    out = tmp_path / "report.html"
    result = cli("report", "--repo", str(run_branch), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file), "--out", str(out))
    assert result.code == 0, result.err
    assert result.out.startswith("VERIFIED: api/d-42")
    dom, console = chromium_open(out, tmp_path)
    assert console == []
    assert re.search(r'<header id="verdict" class="verdict VERIFIED"><h1>VERIFIED: api/d-42', dom)
    impact = re.search(r'<table id="impact">(.*?)</table>', dom, re.S)
    assert impact and "response_time_p99" in impact.group(1)
    # values in the metric's unit; one verdict per metric with its grounds (no "status: ok")
    table = impact.group(1).replace("&nbsp;", "\u00a0")  # the DOM serializes the no-break space
    assert '<td class="num">+40.1\u00a0ms</td><td class="num">+32.9%</td>' in table
    assert '<span class="badge no">degraded</span>' in impact.group(1) and ">status<" not in impact.group(1)
    plots = re.findall(r'<svg[^>]*class="plot"[^>]*data-metric="([^"]+)"', dom)
    assert sorted(plots) == ["error_rate", "response_time_p99"]
    for metric in plots:
        svg = re.search(rf'data-metric="{metric}".*?</svg>', dom, re.S).group(0)
        assert 'class="series baseline"' in svg and 'class="series impact"' in svg
        assert 'class="deploy-marker"' in svg
    # who, what, when; the decision and why; every record with digest, signer, time-stamp
    assert "alice" in dom and "0f3c2a9" in dom and "when (deployed at)" in dom
    assert "rollback" in dom and "response_time_p99.increase &gt; 20ms" in dom
    records = re.search(r'<table id="records">(.*?)</table>', dom, re.S).group(1)
    assert records.count("<tr>") == 1 + 8  # header + genesis, 6 steps, seal
    assert "dev" in records and "AFDP development TSA" in records
    controls = re.search(r'<table id="controls">(.*?)</table>', dom, re.S).group(1)
    assert "CC8.1" in controls and "A.8.32" in controls and "not met" not in controls
    # the plots are drawn, not just present: both series' colours are on the rendered pages
    if shutil.which("pdftoppm"):
        counts = plot_pixels(out, tmp_path)
        assert counts["baseline"] > 200 and counts["impact"] > 200, counts


@needs_chromium
def test_console_error_check_catches_a_broken_page(tmp_path):
    """The console check above can fail: a page with a script error is caught."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><script>console.error("boom"); missing();</script></body></html>')
    _, console = chromium_open(page, tmp_path)
    assert any("boom" in line for line in console)
    assert any("missing is not defined" in line for line in console)


def test_html_is_self_contained(run_branch, trust_file, cli, tmp_path):
    out = tmp_path / "report.html"
    assert cli("report", "--repo", str(run_branch), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file), "--out", str(out)).code == 0
    html = out.read_text(encoding="utf-8")
    assert "<script" not in html.lower()
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', html)
    assert "url(" not in html and "@import" not in html
    assert "<link" not in html.lower()


def test_plain_ledger_branch_without_metrics(repo, signer, tsa, trust_file, cli, tmp_path):
    build_deployment(repo, signer, tsa, steps=3)
    out = tmp_path / "plain.html"
    result = cli("report", "--repo", str(repo), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file), "--out", str(out))
    assert result.code == 0, result.err
    html = out.read_text(encoding="utf-8")
    assert "<title>VERIFIED" in html
    assert "No metric samples or analysis are recorded" in html
    assert "No decision is recorded" in html
    assert 'class="plot"' not in html
    if CHROMIUM and shutil.which("pdftoppm"):  # and the pixel check sees no plot colours
        assert plot_pixels(out, tmp_path) == {"baseline": 0, "impact": 0}


def test_evidence_cannot_inject_markup(repo, signer, tsa, trust_file, cli, tmp_path):
    hostile = '<script>alert(1)</script><img src="http://evil.example/x">'
    add_step(repo, signer, tsa, "note", {"metrics": {"x": {"metric": hostile, "unit": "</svg>", "samples": [[1, 2]]}}, "deployer": hostile, "commit": hostile}, summary=hostile)
    seal(repo, service="api", deployment="d-42", signer=signer, tsa_urls=[tsa.url])
    out = tmp_path / "r.html"
    assert cli("report", "--repo", str(repo), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file), "--out", str(out)).code == 0
    html = out.read_text(encoding="utf-8")
    assert "<script" not in html and "<img" not in html and "evil.example/x\">" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


# -- failing and unusual branches ---------------------------------------------------------------
def _tamper_result(repo: Path, position: int) -> None:
    def change(entry):
        envelope = json.loads(entry.files[rec.ENVELOPE_FILE])
        statement = json.loads(base64.b64decode(envelope["payload"]))
        statement["predicate"]["summary"] = "all good, nothing to see"
        envelope["payload"] = base64.b64encode(canonical_bytes(statement)).decode()
        return with_file(entry, rec.ENVELOPE_FILE, canonical_bytes(envelope))

    edit(repo, position, change)


@needs_chromium
def test_tampered_branch_report_starts_with_failed(run_branch, trust_file, cli, tmp_path):
    _tamper_result(run_branch, 4)
    html_out, json_out = tmp_path / "r.html", tmp_path / "r.json"
    args = ["report", "--repo", str(run_branch), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file)]
    result = cli(*args, "--out", str(html_out))
    assert result.code == 1
    assert result.out.startswith("FAILED: the evidence for api/d-42 did not verify")
    html = html_out.read_text(encoding="utf-8")
    assert html.splitlines()[0].startswith("<!DOCTYPE html><!-- FAILED:")
    assert re.search(r"<title>FAILED - AFDP compliance report", html)
    assert "VERIFIED" not in html.split("</style>", 1)[1]
    assert "badge yes" not in html  # no control shows as met
    assert 'class="verdict FAILED"' in html and "signature" in html
    first_line = rendered_text(html_out, tmp_path).strip().splitlines()[0]
    assert first_line.startswith("FAILED: the evidence for api/d-42 did not verify")
    assert cli(*args, "--out", str(json_out)).code == 1
    document = json.loads(json_out.read_text())
    assert next(iter(document)) == "verdict" and document["verdict"] == "FAILED"
    assert json_out.read_text().splitlines()[1].strip().startswith('"verdict": "FAILED"')
    transcript = document["deployments"][0]["verification"]
    assert transcript["ok"] is False
    assert any(f["check"] == "signature" and f["sequence"] == 4 for f in transcript["failures"])
    assert all(not c["met"] for c in document["deployments"][0]["controls"])


def test_unsealed_branch_says_unsealed(repo, signer, tsa, trust_file, cli, tmp_path):
    build_run_deployment(repo, signer, tsa, sealed=False)
    out = tmp_path / "r.html"
    args = ["report", "--repo", str(repo), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file), "--out", str(out)]
    result = cli(*args)
    assert result.code == 1
    assert result.out.startswith("UNSEALED: api/d-42: 7 record(s) verified, but the branch has no seal")
    html = out.read_text(encoding="utf-8")
    assert "<title>UNSEALED" in html and "VERIFIED:" not in html
    assert cli(*args, "--allow-unsealed").code == 0


def test_missing_branch_is_one_clear_message_and_writes_nothing(run_branch, trust_file, cli, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    result = cli("report", "--repo", str(run_branch), "--service", "api", "--deployment", "d-404", "--trust", str(trust_file), "--out", str(folder / "r.html"))
    assert result.code == 2
    assert result.err.strip() == (
        f"afdp: error: no evidence branch refs/heads/afdp/api/d-404 in {run_branch}; deployments of api: d-42"
    )
    assert list(folder.iterdir()) == []


def test_missing_output_folder_and_bad_options(run_branch, trust_file, cli, tmp_path):
    base = ["report", "--repo", str(run_branch), "--service", "api", "--trust", str(trust_file)]
    result = cli(*base, "--deployment", "d-42", "--out", str(tmp_path / "nope" / "r.html"))
    assert result.code == 2 and "does not exist" in result.err
    result = cli(*base, "--deployment", "d-42", "--out", str(tmp_path / "r.pdf"))
    assert result.code == 2 and "--sign-key" in result.err
    result = cli(*base, "--since", "yesterday", "--out", str(tmp_path / "r.html"))
    assert result.code == 2 and "ISO 8601" in result.err
    result = cli("report", "--repo", str(run_branch), "--deployment", "d-42", "--trust", str(trust_file), "--out", str(tmp_path / "r.html"))
    assert result.code == 2 and "--deployment needs --service" in result.err
    assert not any(tmp_path.glob("r.*"))


# -- several deployments, time range -------------------------------------------------------------
def test_service_across_deployments_and_time_range(repo, signer, tsa, trust_file, cli, tmp_path):
    build_run_deployment(repo, signer, tsa, deployment="d-1")
    build_deployment(repo, signer, tsa, deployment="d-2", steps=2)
    build_deployment(repo, signer, tsa, service="web", deployment="d-9", steps=1)
    out = tmp_path / "all.json"
    result = cli("report", "--repo", str(repo), "--service", "api", "--trust", str(trust_file), "--out", str(out))
    assert result.code == 0, result.err
    document = json.loads(out.read_text())
    assert document["headline"] == "VERIFIED: all 2 deployment(s) verified and sealed"
    assert [d["deployment"] for d in document["deployments"]] == ["d-1", "d-2"]
    html = tmp_path / "all.html"
    assert cli("report", "--repo", str(repo), "--service", "api", "--trust", str(trust_file), "--out", str(html)).code == 0
    assert '<table id="overview">' in html.read_text()
    # one tampered deployment fails the whole report, and says which
    _tamper_result_of(repo, "api", "d-2")
    result = cli("report", "--repo", str(repo), "--service", "api", "--trust", str(trust_file), "--out", str(out))
    assert result.code == 1
    assert result.out.startswith("FAILED: 1 of 2 deployment(s) did not verify")
    # time range: everything was opened just now
    since = "2000-01-01T00:00:00Z"
    result = cli("report", "--repo", str(repo), "--since", since, "--trust", str(trust_file), "--out", str(out), "--json")
    assert sorted(result.json()["deployments"]) == ["api/d-1", "api/d-2", "web/d-9"]
    result = cli("report", "--repo", str(repo), "--service", "web", "--until", "2000-01-01", "--trust", str(trust_file), "--out", str(tmp_path / "none.json"))
    assert result.code == 2 and "no deployments of web opened between" in result.err
    assert not (tmp_path / "none.json").exists()


def _tamper_result_of(repo: Path, service: str, deployment: str) -> None:
    def change(entry):
        return with_file(entry, "timestamp-0.tsr", b"not a token")

    edit(repo, 1, change, service=service, deployment=deployment)


# -- controls ----------------------------------------------------------------------------------
def test_custom_controls_mapping(run_branch, trust_file, cli, tmp_path):
    mapping = tmp_path / "controls.yaml"
    mapping.write_text("version: 1\ncontrols:\n  - {id: CHG-1, framework: Internal, title: Every deploy is measured, requires: [baseline_captured, impact_captured, analysis]}\n")
    out = tmp_path / "r.json"
    assert cli("report", "--repo", str(run_branch), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file), "--controls", str(mapping), "--out", str(out)).code == 0
    controls = json.loads(out.read_text())["deployments"][0]["controls"]
    assert [(c["id"], c["met"]) for c in controls] == [("CHG-1", True)]
    assert [r["records"] for r in controls[0]["requirements"]] == [[1], [4], [5]]
    mapping.write_text("version: 1\ncontrols:\n  - {id: X, framework: F, title: T, requires: [vibes]}\n")
    result = cli("report", "--repo", str(run_branch), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file), "--controls", str(mapping), "--out", str(out))
    assert result.code == 2 and "control mapping" in result.err


def test_controls_not_met_on_a_plain_branch(repo, signer, tsa, trust_file, cli, tmp_path):
    add_step(repo, signer, tsa, "note", {"text": "hand-written"})
    seal(repo, service="api", deployment="d-42", signer=signer, tsa_urls=[tsa.url])
    out = tmp_path / "r.json"
    assert cli("report", "--repo", str(repo), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file), "--out", str(out)).code == 0
    controls = {c["id"]: c for c in json.loads(out.read_text())["deployments"][0]["controls"]}
    assert controls["CC8.1"]["met"] is False
    assert controls["A.8.15"]["met"] is True  # logging: verified, signed, time-stamped
    reasons = {r["name"]: r["detail"] for r in controls["CC8.1"]["requirements"]}
    assert reasons["baseline_captured"] == "no baseline metric series recorded"


def _decision_controls(repo, signer, tsa, cli, trust_file, tmp_path, *records) -> dict:
    """Report controls of a branch with a baseline, impact and ``records`` (step, result, status)."""
    add_step(repo, signer, tsa, "capture_baseline", {"metrics": {"p99": {"metric": "p99", "unit": "ms", "samples": [[1.0, 100.0], [2.0, 101.0]]}}})
    add_step(repo, signer, tsa, "capture_impact", {"metrics": {"p99": {"metric": "p99", "unit": "ms", "samples": [[3.0, 100.0], [4.0, 102.0]]}}})
    for step, result, status in records:
        add_step(repo, signer, tsa, step, result, status=status)
    seal(repo, service="api", deployment="d-42", signer=signer, tsa_urls=[tsa.url])
    out = tmp_path / "r.json"
    assert cli("report", "--repo", str(repo), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file), "--out", str(out)).code == 0
    controls = json.loads(out.read_text())["deployments"][0]["controls"]
    return {r["name"]: r for c in controls for r in c["requirements"]}


NO_DATA = {"metric": "p99", "unit": {"symbol": "ms", "dimension": "time", "factor": 0.001}, "baseline": None, "impact": None, "status": "no_data", "degraded": None, "reasons": ["no samples"]}


@pytest.mark.parametrize(
    "records",
    [
        # a training record made without any decision: its copy of the decision is null
        [("generate_training_record", {"record": {"decision": None, "action": None, "label": None, "success_criteria_met": None}}, "ok")],
        # a decision whose action says nothing was decided
        [("decide", {"decision": "none", "action": "none", "label": None, "reason": "no decisions block"}, "ok")],
        # a decide step that failed: the action it names was never decided
        [("decide", {"decision": "ship", "action": "mark_successful", "label": "safe", "reason": "x"}, "failed")],
    ],
    ids=["training-record-copy", "action-none", "failed-decide-step"],
)
def test_decision_control_not_met_without_a_real_decision(repo, signer, tsa, trust_file, cli, tmp_path, records):
    requirements = _decision_controls(repo, signer, tsa, cli, trust_file, tmp_path, *records)
    assert requirements["decision"]["met"] is False, requirements["decision"]
    assert requirements["decision"]["records"] == []


def test_decision_control_met_cites_the_decide_record(repo, signer, tsa, trust_file, cli, tmp_path):
    requirements = _decision_controls(repo, signer, tsa, cli, trust_file, tmp_path, ("decide", {"decision": "ship", "action": "mark_successful", "label": "safe_deployment", "success_criteria_met": True, "reason": "all criteria met"}, "ok"))
    assert requirements["decision"]["met"] is True
    assert requirements["decision"]["detail"] == "decision: mark_successful (all criteria met)"
    assert requirements["decision"]["records"] == [3]


def test_analysis_control_not_met_when_no_metric_could_be_compared(repo, signer, tsa, trust_file, cli, tmp_path):
    analysis = {"method": "mann_whitney", "metrics": {"p99": NO_DATA}, "summary": {"any_degradation": False}}
    requirements = _decision_controls(repo, signer, tsa, cli, trust_file, tmp_path, ("analyze", analysis, "ok"))
    assert requirements["analysis"]["met"] is False
    assert "no metric could be compared" in requirements["analysis"]["detail"]


# -- PDF ---------------------------------------------------------------------------------------
@needs_chromium
@needs_poppler
def test_pdf_report_is_pades_signed_and_time_stamped(run_branch, trust_file, keys, tsa, cli, tmp_path):
    from asn1crypto import pem, x509
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko_certvalidator import ValidationContext

    out = tmp_path / "report.pdf"
    # the first TSA is down: the second one time-stamps the signature (failover, as for records)
    result = cli("report", "--repo", str(run_branch), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file), "--out", str(out), "--sign-key", str(keys / "dev.key"), "--tsa", "http://127.0.0.1:9/", "--tsa", tsa.url)
    assert result.code == 0, result.err
    subprocess.run(["pdftoppm", "-r", "30", "-png", str(out), str(tmp_path / "page")], check=True, timeout=60)
    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) >= 2 and all(p.stat().st_size > 1000 for p in pages)
    text = subprocess.run(["pdftotext", str(out), "-"], capture_output=True, text=True, check=True).stdout
    assert text.startswith("VERIFIED: api/d-42")
    tsa_root = x509.Certificate.load(pem.unarmor((tsa.directory / "root.pem").read_bytes())[2])

    def validate(data: bytes):
        from io import BytesIO

        signature = PdfFileReader(BytesIO(data), strict=False).embedded_signatures[0]
        return signature, validate_pdf_signature(
            signature,
            ValidationContext(trust_roots=[signature.signer_cert]),
            ts_validation_context=ValidationContext(trust_roots=[tsa_root]),
        )

    data = out.read_bytes()
    signature, status = validate(data)
    assert status.bottom_line and status.intact and status.valid and status.trusted
    assert "AFDP report signer" in signature.signer_cert.subject.human_friendly
    assert status.timestamp_validity is not None and status.timestamp_validity.trusted
    assert signature.sig_object["/Reason"].startswith("VERIFIED")
    # one altered byte inside the signed range: no longer intact
    at = data.index(b"VERIFIED")
    _, altered = validate(data[:at] + b"VERIFIEX" + data[at + 8 :])
    assert not altered.intact and not altered.bottom_line


def test_pdf_without_reachable_tsa_writes_nothing(run_branch, trust_file, keys, cli, tmp_path):
    if CHROMIUM is None:
        pytest.skip("Debian 'chromium' is not installed")
    out = tmp_path / "report.pdf"
    result = cli("report", "--repo", str(run_branch), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file), "--out", str(out), "--sign-key", str(keys / "dev.key"), "--tsa", "http://127.0.0.1:9/")
    assert result.code == 3 and "no TSA time-stamped the report signature" in result.err
    assert list(tmp_path.glob("*.pdf*")) == [] and list(tmp_path.glob(".report.pdf*")) == []


def test_pdf_certificate_must_match_key(run_branch, trust_file, keys, tsa, cli, tmp_path):
    from afdp.audit.report.pdf import _load_key, self_signed_certificate

    cert = tmp_path / "other.pem"
    cert.write_bytes(self_signed_certificate(_load_key(keys / "attacker.key")))
    result = cli("report", "--repo", str(run_branch), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file), "--out", str(tmp_path / "r.pdf"), "--sign-key", str(keys / "dev.key"), "--sign-cert", str(cert), "--tsa", tsa.url)
    assert result.code == 2 and "is not for the key" in result.err
    assert not (tmp_path / "r.pdf").exists()


def test_report_does_not_import_prefect(run_branch, trust_file, tmp_path):
    code = (
        "import sys\nfrom afdp.cli import main\n"
        f"try:\n    main(['report', '--repo', {str(run_branch)!r}, '--service', 'api', '--deployment', 'd-42', '--trust', {str(trust_file)!r}, '--out', {str(tmp_path / 'r.html')!r}])\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'pyhanko')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


# -- units, verdicts and axes (QA: raw base units, "status: ok" next to "degraded: yes",
# -- an axis below zero for a ratio, the last time label clipped) ------------------------------
NB = "\u00a0"


def test_values_are_shown_in_the_metrics_unit_at_a_sensible_scale():
    from afdp.audit.report.units import p_value, percent, scale_for

    latency = scale_for("s", [0.0476, 0.0874])
    assert (latency.show(0.0476), latency.show(0.0874)) == (f"47.6{NB}ms", f"87.4{NB}ms")
    assert latency.show(0.0398, signed=True) == f"+39.8{NB}ms"  # the change uses the row's scale
    assert latency.show(-0.0012, signed=True) == f"\u22121.2{NB}ms"
    assert scale_for("s", [2.5]).show(2.5) == f"2.5{NB}s"
    assert scale_for("ms", [1500]).show(1500) == f"1.5{NB}s"
    assert scale_for("ms", [40.1]).show(40.1) == f"40.1{NB}ms"
    ratio = scale_for("ratio", [0.0088, 0.046])
    assert (ratio.show(0.0088), ratio.show(0.046)) == ("0.88%", "4.6%")
    assert scale_for("%", [2.9]).show(2.9) == "2.9%"
    rate = scale_for("1/s", [9.99])
    assert rate.show(9.986) == "9.99/s" and rate.show(0) == "0/s" and rate.axis_label == "per second"
    assert scale_for("B", [2.5e6]).show(2.5e6) == f"2.5{NB}MB"
    assert scale_for("count", [99]).show(99) == "99" and scale_for("count", [12345]).show(12345) == "12,345"
    assert scale_for("USD/h", [3.5]).show(3.5) == f"3.5{NB}USD/h"
    assert (percent(0.862), percent(-0.000626), percent(None)) == ("+86.2%", "\u22120.063%", "-")
    assert (p_value(0.8883), p_value(3.1e-8), p_value(None)) == ("0.888", "3.1e-8", "-")


def test_value_axis_has_round_ticks_and_starts_at_zero_for_non_negative_data():
    from afdp.audit.report.units import value_axis

    ratio = value_axis([0.59, 5.9])  # a fail ratio in %: the QA plot started at -0.000402
    assert ratio.ticks[0] == 0 and ratio.high >= 5.9 and ratio.ticks[-1] == ratio.high
    assert [ratio.label(t) for t in ratio.ticks] == ["0", "2", "4", "6"]
    latency = value_axis([43.7, 91.9])  # within half of the maximum: still from zero
    assert [latency.label(t) for t in latency.ticks] == ["0", "25", "50", "75", "100"]
    users = value_axis([87.2, 113.8])  # far from zero: a tight range, still round
    assert 0 < users.low <= 87.2 and users.high >= 113.8 and all(t % users.step == 0 for t in users.ticks)
    signed = value_axis([-3.0, 5.0])  # data below zero keeps its negative range
    assert signed.low < -3 and signed.high >= 5 and 0 in signed.ticks
    flat = value_axis([0.0, 0.0])
    assert flat.low == 0 and flat.high > 0
    steps = {round(b - a, 9) for a, b in zip(ratio.ticks, ratio.ticks[1:], strict=False)}
    assert len(steps) == 1
    # large and tiny magnitudes: short labels that still tell the ticks apart
    big = value_axis([0, 25000])
    assert [big.label(t) for t in big.ticks] == ["0", "10k", "20k", "30k"]
    tiny = value_axis([1.01e-4, 1.19e-4])
    labels = [tiny.label(t) for t in tiny.ticks]
    assert len(set(labels)) == len(labels) and max(map(len, labels)) <= 8, labels


def test_y_labels_fit_the_margin_at_any_magnitude():
    from afdp.audit.report import svg

    for unit, level in (("count", 3.2e9), ("count", 12345.0), ("", 1.3e-7), ("ms", 0.004), ("B", 7.7e13), ("ratio", 1e-6)):
        drawn = svg.line_plot(metric="m", unit=unit, baseline=[(1.7e9, level), (1.7e9 + 1, level * 1.07)], impact=[(1.7e9 + 2, level * 1.3)], deployed_at=None)
        labels = [t for _, t in _texts(drawn, "ytick")]
        assert len(set(labels)) == len(labels) >= 3, (unit, labels)
        assert all(len(t) * svg.CHAR_WIDTH <= svg.LEFT - 6 for t in labels), (unit, labels)


def _texts(svg_text: str, cls: str) -> list[tuple[float, str]]:
    return [(float(x), t) for x, t in re.findall(rf'<text class="{cls}" x="([0-9.\-]+)"[^>]*>([^<]*)</text>', svg_text)]


def test_plot_axes_in_display_units_and_labels_inside_the_image():
    from afdp.audit.report import svg

    start = 1764054911.0  # 07:15:11 UTC
    base = [(start + i, 0.0059 + 0.0005 * i) for i in range(15)]
    after = [(start + 45 + i, 0.045 + 0.001 * (i % 7)) for i in range(20)]  # ends 07:16:15
    drawn = svg.line_plot(metric="shop_fail_ratio", unit="ratio", baseline=base, impact=after, deployed_at=start + 30)
    assert ">shop_fail_ratio (%)</text>" in drawn
    yticks = _texts(drawn, "ytick")
    assert yticks[0][1] == "0" and all(not t.startswith(("-", "\u2212")) for _, t in yticks)
    xticks = _texts(drawn, "xtick")
    assert len(xticks) >= 3
    for x, text in xticks:
        half = len(text) * svg.CHAR_WIDTH / 2
        assert x - half >= 0 and x + half <= svg.WIDTH, (x, text)
        assert re.fullmatch(r"\d\d:\d\d:\d\d", text) and text.endswith(("0", "5"))  # round instants
    latency = svg.line_plot(metric="lat", unit="s", baseline=[(start, 0.047)], impact=[(start + 60, 0.1)], deployed_at=None)
    assert ">lat (ms)</text>" in latency and [t for _, t in _texts(latency, "ytick")] == ["0", "25", "50", "75", "100"]


def build_base_unit_deployment(repo: Path, signer, tsa) -> None:
    """A branch whose analysis is in base units (seconds, ratios, 1/s), as analysis.v1 and the
    demo write it, with every verdict: degraded, within normal, no data, insufficient samples;
    and an ``n_effective`` field the analysis may add."""
    now = time.time()
    start = now - 300

    def add(step: str, result) -> None:
        append_record(repo, service="shop", deployment="r-1", draft=rec.RecordDraft(kind=rec.KIND_STEP, step=step, result=result), signer=signer, tsa_urls=[tsa.url])

    def series(metric, unit, t0, values):
        return {"metric": metric, "unit": unit, "samples": [[t0 + i, v] for i, v in enumerate(values)]}

    add("capture_baseline", {"role": "baseline", "metrics": [series("latency_mean", "s", start, [0.046 + 0.001 * (i % 3) for i in range(30)]), series("fail_ratio", "ratio", start, [0.0059 + 0.0002 * i for i in range(30)])]})
    add("mark_deployment_time", {"deployed_at": rec.format_time(rec.utc_now())})
    add("capture_impact", {"role": "impact", "metrics": [series("latency_mean", "s", now + 60, [0.087 + 0.001 * (i % 3) for i in range(30)]), series("fail_ratio", "ratio", now + 60, [0.045 + 0.0003 * i for i in range(30)])]})
    sec = {"symbol": "s", "dimension": "time", "factor": 1}
    metrics = {
        "latency_mean": {"metric": "latency_mean", "unit": sec, "status": "ok", "baseline": 0.0476, "impact": 0.0874, "increase": 0.0398, "change": 0.836, "p_value": 3.13e-8, "significant": True, "significant_degradation": True, "degraded": True, "reasons": [], "counts": {"baseline": 30, "impact": 30, "n_effective": {"baseline": 12.4, "impact": 30}}, "test": {"method": "mann_whitney"}, "thresholds": [{"direction": "increase", "exceeded": True, "limit": {"text": "15ms", "unit": "ms", "value": 15}, "mode": "absolute", "observed": 39.8, "unit": "ms", "watches_worse": True}]},
        "fail_ratio": {"metric": "fail_ratio", "unit": {"symbol": "ratio", "dimension": "ratio", "factor": 1}, "status": "ok", "baseline": 0.0088, "impact": 0.046, "increase": 0.0372, "change": 4.227, "p_value": 3.11e-8, "significant": True, "degraded": True, "reasons": [], "counts": {"baseline": 30, "impact": 30}},
        "requests_per_second": {"metric": "requests_per_second", "unit": {"symbol": "1/s", "dimension": "number/time", "factor": 1}, "status": "ok", "baseline": 200.1, "impact": 199.9, "increase": -0.2, "change": -0.001, "p_value": 0.8883, "significant": False, "significant_degradation": False, "degraded": False, "reasons": [], "counts": {"baseline": 30, "impact": 30}, "thresholds": []},
        "latency_p90": {"metric": "latency_p90", "unit": sec, "status": "no_data", "baseline": None, "impact": None, "p_value": None, "significant": None, "degraded": None, "reasons": ["no impact samples: the collection failed (source down)"]},
        "users": {"metric": "users", "unit": {"symbol": "count", "dimension": "count", "factor": 1}, "status": "insufficient_samples", "baseline": 99, "impact": 101, "p_value": None, "significant": None, "degraded": None, "reasons": ["1 baseline sample(s), the test needs 5"], "counts": {"baseline": 1, "impact": 20}},
    }
    add("analyze_differences", {"method": "mann_whitney", "metrics": metrics, "summary": {"any_degradation": True}, "inconclusive": ["latency_p90", "users"]})
    seal(repo, service="shop", deployment="r-1", signer=signer, tsa_urls=[tsa.url])


def _impact_rows_html(html: str) -> dict[str, str]:
    table = re.search(r'<table id="impact">(.*?)</table>', html, re.S).group(1)
    return {m: row for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S) for m in re.findall(r"<td><b>([^<]+)</b>", row)}


def test_impact_table_in_metric_units_with_one_verdict_per_metric(repo, signer, tsa, trust_file, cli, tmp_path):
    build_base_unit_deployment(repo, signer, tsa)
    args = ["report", "--repo", str(repo), "--service", "shop", "--deployment", "r-1", "--trust", str(trust_file)]
    started = time.monotonic()
    assert cli(*args, "--out", str(tmp_path / "r.html")).code == 0
    assert time.monotonic() - started < 3  # `afdp report` HTML stays fast
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    header = re.search(r'<table id="impact"><tr>(.*?)</tr>', html, re.S).group(1)
    assert ">status<" not in header and ">degraded<" not in header and "verdict" in header
    rows = _impact_rows_html(html)
    lat = rows["latency_mean"]
    for shown in (f">47.6{NB}ms<", f">87.4{NB}ms<", f">+39.8{NB}ms<", ">+83.6%<", ">3.1e-8<", "n = 30, effective 12.4"):
        assert shown in lat, shown
    assert '<span class="badge no">degraded</span>' in lat
    assert f"increase +39.8{NB}ms exceeds the limit 15ms" in lat and "significant worsening: p = 3.1e-8" in lat
    ratio = rows["fail_ratio"]
    assert ">0.88%<" in ratio and ">4.6%<" in ratio and ">+3.72%<" in ratio and ">+422.7%<" in ratio
    assert "0.0088" not in ratio and "0.0476" not in html.split('id="impact"')[1].split("</table>")[0]
    rps = rows["requests_per_second"]
    assert ">200/s<" in rps and '<span class="badge yes">within normal</span>' in rps and "no significant change: p = 0.888" in rps
    assert "no data</span>" in rows["latency_p90"] and "collection failed (source down)" in rows["latency_p90"]
    assert "insufficient samples</span>" in rows["users"] and "the test needs 5" in rows["users"]
    # the plots use the table's scale, and a ratio's axis starts at 0
    ratio_plot = re.search(r'data-metric="fail_ratio".*?</svg>', html, re.S).group(0)
    assert ">fail_ratio (%)</text>" in ratio_plot and _texts(ratio_plot, "ytick")[0][1] == "0"
    lat_plot = re.search(r'data-metric="latency_mean".*?</svg>', html, re.S).group(0)
    assert ">latency_mean (ms)</text>" in lat_plot
    # the JSON keeps the raw recorded numbers, and says the verdict and its grounds
    assert cli(*args, "--out", str(tmp_path / "r.json")).code == 0
    impact = {r["metric"]: r for r in json.loads((tmp_path / "r.json").read_text())["deployments"][0]["impact"]}
    assert impact["latency_mean"]["baseline"] == 0.0476 and impact["fail_ratio"]["impact"] == 0.046
    assert {m: r["verdict"] for m, r in impact.items()} == {"latency_mean": "degraded", "fail_ratio": "degraded", "requests_per_second": "within normal", "latency_p90": "no data", "users": "insufficient samples"}
    assert impact["latency_mean"]["why"] and impact["latency_mean"]["effective"] == [12.4, 30]


def test_tampered_analysis_verdicts_are_shown_unverified(run_branch, trust_file, cli, tmp_path):
    _tamper_result(run_branch, 5)  # the analysis record
    out = tmp_path / "r.html"
    assert cli("report", "--repo", str(run_branch), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file), "--out", str(out)).code == 1
    html = out.read_text(encoding="utf-8")
    assert html.splitlines()[0].startswith("<!DOCTYPE html><!-- FAILED:")
    rows = _impact_rows_html(html)
    assert set(rows) == {"response_time_p99", "error_rate"}
    for row in rows.values():
        assert '<span class="badge no">unverified</span>' in row and "claims: degraded" in row
        assert "record 5 (the analysis) failed verification" in row
        assert 'badge no">degraded' not in row


def test_impact_cells_give_other_renderings_the_same_numbers():
    from afdp.audit.report.build import impact_rows
    from afdp.audit.report.evidence import Findings
    from afdp.audit.report.html import impact_cells

    analysis = {"metrics": {"latency_mean": {"unit": {"symbol": "s"}, "status": "ok", "baseline": 0.0473, "impact": 0.0874, "change": 0.848, "p_value": 0.0123, "significant": True, "degraded": True, "reasons": []}, "users": {"unit": {"symbol": "count"}, "status": "no_data", "degraded": None, "reasons": ["collection failed"]}}}
    rows = impact_rows(Findings({}, (), analysis, 6, None, None, None))
    cells = {r.metric: impact_cells(r) for r in rows}
    assert cells["latency_mean"] == {"metric": "latency_mean", "baseline": f"47.3{NB}ms", "impact": f"87.4{NB}ms", "change": f"+40.1{NB}ms", "relative": "+84.8%", "p_value": "0.012", "verdict": "degraded", "why": "significant change: p = 0.012"}
    assert cells["users"]["verdict"] == "no data" and cells["users"]["baseline"] == "-" and cells["users"]["why"] == "collection failed"


def test_report_across_deployments_fails_on_a_lookalike_branch(repo, signer, tsa, trust_file, cli, tmp_path):
    """A ref under refs/heads/afdp/ that AFDP never writes (here a U+2011 hyphen) is shown
    by git beside the real branches; a report over every deployment must not hide it."""
    build_deployment(repo, signer, tsa, deployment="d-1", steps=1)
    git = pygit2.Repository(str(repo))
    lookalike = "refs/heads/afdp/api/d\u20111"
    git.references.create(lookalike, git.references["refs/heads/afdp/api/d-1"].target)
    out = tmp_path / "all.json"
    result = cli("report", "--repo", str(repo), "--service", "api", "--trust", str(trust_file), "--out", str(out))
    assert result.code == 1
    assert result.out.startswith("FAILED")
    document = json.loads(out.read_text())
    assert document["verdict"] == "FAILED"
    assert any("not a valid refs/heads/afdp" in json.dumps(d) for d in document["deployments"])
    # One named deployment is still reported on its own.
    single = cli("report", "--repo", str(repo), "--service", "api", "--deployment", "d-1", "--trust", str(trust_file), "--out", str(tmp_path / "one.json"))
    assert single.code == 0, single.out
