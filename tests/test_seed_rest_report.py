"""Issue 12, the rest: the compliance report shows the workflow's ``analyzers:`` results.

The analysis record is made by AFDP's own analysis (``afdp.pipeline.analysis.analyze``)
over samples with a known regression (+40 ms, orders down from 100 to 90 an hour at $25),
with the guide's analyzers block (tests/seeds/analyzers.yaml, verbatim, completed as in
tests/test_seed_analyzers_e2e.py). It is written to a real evidence branch with the
embedded TSA, and ``afdp report`` (HTML and JSON) must show: the logic analyzer's verdict,
the line that returned it and every input it read; ``business_impact``'s money per hour
with its inputs (metric, unit, baseline, current), formula and calculation; the
``ml_predictor`` as skipped with its reason. On a branch whose analysis record was
tampered with, the section is marked unverified; evidence cannot inject markup.
(``tests/test_seed_analyzers_e2e.py`` checks the same section on a real run.)
"""

from __future__ import annotations

import base64
import json
import random

import pytest
from tamper import edit, with_file
from test_seed_analyzers_e2e import seed_workflow

from afdp.evidence import records as rec
from afdp.evidence.canonical import canonical_bytes
from afdp.evidence.ledger import append_record, seal
from afdp.pipeline.analysis.result import analyze
from afdp.workflow import load_workflow
from afdp.workflow.model import Analyze


def _analysis(tmp_path, *, logic_text: str | None = None) -> dict:
    workflow = load_workflow(seed_workflow(tmp_path))
    if logic_text is not None:
        text = seed_workflow(tmp_path).read_text().replace('return "degradation_detected"', logic_text)
        (tmp_path / "x.yaml").write_text(text)
        workflow = load_workflow(tmp_path / "x.yaml")
    step = next(s for s in workflow.steps if isinstance(s.params, Analyze))
    rnd = random.Random(3)

    def noisy(level: float, spread: float) -> list[float]:
        return [level + rnd.uniform(-spread, spread) for _ in range(30)]

    baseline = {
        "response_time": noisy(0.050, 0.002),
        "error_rate": noisy(0.001, 0.0005),
        "orders_per_hour": noisy(100, 0.5),  # samples in the metric's unit (1/hour, $/hour)
        "revenue_per_hour": noisy(2500, 5),
    }
    impact = {
        "response_time": noisy(0.090, 0.002),
        "error_rate": noisy(0.05, 0.0005),
        "orders_per_hour": noisy(90, 0.5),
        "revenue_per_hour": noisy(2250, 5),
    }
    assert isinstance(step.params, Analyze)
    return analyze(step.params, workflow, baseline, impact).to_json()


@pytest.fixture()
def analyzed_branch(tmp_path, repo, signer, tsa):
    analysis = _analysis(tmp_path)
    for step, result in (
        ("mark_deployment_time", {"deployed_at": rec.format_time(rec.utc_now())}),
        ("analyze_differences", analysis),
    ):
        append_record(
            repo, service="api", deployment="d-42",
            draft=rec.RecordDraft(kind=rec.KIND_STEP, step=step, result=result), signer=signer, tsa_urls=[tsa.url],
        )
    seal(repo, service="api", deployment="d-42", signer=signer, tsa_urls=[tsa.url])
    return repo, analysis


def _report(cli, repo, trust_file, out):
    result = cli("report", "--repo", str(repo), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file), "--out", str(out))
    return result, out.read_text(encoding="utf-8") if out.exists() else ""


def test_report_shows_each_analyzer_with_its_inputs_and_formula(analyzed_branch, trust_file, cli, tmp_path):
    repo, analysis = analyzed_branch
    recorded = {a["name"]: a for a in analysis["analyzers"]}
    money = recorded["business_impact"]
    assert money["status"] == "ok" and money["loss_per_hour"] == pytest.approx(250, rel=0.02)
    result, text = _report(cli, repo, trust_file, tmp_path / "report.json")
    assert result.code == 0, result.err
    section = json.loads(text)["deployments"][0]
    rows = {r["name"]: r for r in section["analyzers"]}
    assert list(rows) == ["threshold_checker", "ml_predictor", "business_impact"]
    logic = rows["threshold_checker"]
    assert logic["type"] == "logic" and logic["degraded"] is True and logic["status"] == "ok"
    assert logic["result"] == "degradation_detected (a degradation, returned at line 2)"
    baseline_median = recorded["threshold_checker"]["inputs"]["baseline"]["response_time"]["median"]
    assert f"baseline.response_time.median = {baseline_median:.6g} s" in logic["details"]
    current_median = recorded["threshold_checker"]["inputs"]["current"]["response_time"]["median"]
    assert current_median == pytest.approx(0.090, abs=0.002)
    assert f"current.response_time.median = {current_median:.6g} s" in logic["details"]
    business = rows["business_impact"]
    assert business["result"].startswith(f"loss per hour {money['loss_per_hour']:.6g} $/hour (money lost)")
    assert "input revenue: revenue_per_hour ($/h): baseline" in " ".join(business["details"])
    assert "input orders: orders_per_hour (1/h): baseline" in " ".join(business["details"])
    assert f"formula: {money['formula']}" in business["details"]
    assert f"calculation: {money['calculation']}" in business["details"]
    assert business["outcome"] == money  # the recorded JSON, as it is
    ml = rows["ml_predictor"]
    assert ml["status"] == "skipped" and "its own step and record predict_ml_predictor" in ml["result"]
    # The HTML shows the same, with the program itself.
    result, html = _report(cli, repo, trust_file, tmp_path / "report.html")
    assert result.code == 0
    table = html[html.index('<table id="analyzers">'):]
    table = table[: table.index("</table>")]
    assert "<b>threshold_checker</b>" in table and "degradation_detected (a degradation, returned at line 2)" in table
    assert "<pre>if current.latency &gt; baseline.latency * 1.1:" in table
    assert f"loss per hour {money['loss_per_hour']:.6g} $/hour (money lost)" in table
    assert "formula: loss_per_hour = lost_orders_per_hour x average_order_value" in table
    assert f"calculation: {money['calculation']}" in table
    assert "Recorded in record 2 (the analysis)." in html


def test_a_tampered_analysis_is_marked_unverified(analyzed_branch, trust_file, cli, tmp_path):
    repo, _ = analyzed_branch

    def change(entry):  # someone rewrites the logic verdict and re-encodes the record
        envelope = json.loads(entry.files[rec.ENVELOPE_FILE])
        statement = json.loads(base64.b64decode(envelope["payload"]))
        statement["predicate"]["result"]["analyzers"][0].update(verdict="healthy", degraded=False)
        envelope["payload"] = base64.b64encode(canonical_bytes(statement)).decode()
        return with_file(entry, rec.ENVELOPE_FILE, canonical_bytes(envelope))

    edit(repo, 2, change, service="api", deployment="d-42")
    result, html = _report(cli, repo, trust_file, tmp_path / "report.html")
    assert result.code == 1 and result.out.startswith("FAILED")
    assert '<h3>Analyzers <span class="unverified">(unverified: the branch failed verification)</span></h3>' in html
    result, text = _report(cli, repo, trust_file, tmp_path / "report.json")
    document = json.loads(text)
    assert document["verdict"] == "FAILED"
    assert any(f["sequence"] == 2 for f in document["deployments"][0]["verification"]["failures"])


def test_an_undecidable_logic_and_missing_money_are_shown_as_such(tmp_path):
    from afdp.audit.report.analyzers import analyzer_rows, render

    rows = analyzer_rows(
        {
            "analyzers": [
                {"name": "t", "type": "logic", "status": "unknown", "verdict": None, "degraded": None,
                 "reason": "a condition could not be evaluated: no data for current.latency", "logic": "if x:\n  return 'a'",
                 "inputs": {"current": {"response_time": {"median": None}}}, "units": {"response_time": "s"}},
                {"name": "b", "type": "business_impact", "status": "not_enough_data", "loss_per_hour": None,
                 "reasons": ["revenue_per_hour: no data on one side (no_data)"], "inputs": {}},
                {"name": "<script>alert(1)</script>", "type": "logic", "status": "ok", "verdict": "<b>x</b>",
                 "degraded": False, "returned_at_line": 1, "logic": "</pre><script>", "inputs": {}},
            ]
        }
    )
    assert rows[0]["result"].startswith("could not decide: a condition could not be evaluated")
    assert "current.response_time.median = -" in rows[0]["details"][0]
    assert rows[1]["result"] == "not enough data: revenue_per_hour: no data on one side (no_data)"
    html = render(rows, 4, "")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'class="badge warn">unknown' in html
    assert render([], None, "") == ""
    assert analyzer_rows(None) == [] and analyzer_rows({"analyzers": "nonsense"}) == []
