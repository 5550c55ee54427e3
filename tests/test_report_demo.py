"""The report over what ``afdp run`` really writes: the demo's branch (real DemoService with
a real regression, real scrape collection, analysis, decision, rollback webhook, seal)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow  # the demo's captures take ~15 s even with --fast


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from afdp.demo.run import run_demo

    result = run_demo(out_dir=tmp_path_factory.mktemp("demo") / "out", fast=True)
    assert result.verified, result.verification
    return result


def test_report_of_a_real_run(demo, cli, tmp_path):
    args = ["report", "--repo", str(demo.repository), "--service", demo.service, "--deployment", demo.deployment, "--trust", str(demo.trust_policy)]
    result = cli(*args, "--out", str(tmp_path / "r.json"))
    assert result.code == 0, result.err
    section = json.loads((tmp_path / "r.json").read_text())["deployments"][0]
    assert section["verdict"] == "VERIFIED"
    # the runner's analysis drives the table: every analysed metric, with its unit symbol
    assert section["impact"] and all(row["source"] == "analysis" for row in section["impact"])
    assert all(row["unit"] and "{" not in row["unit"] for row in section["impact"])
    assert any(row["degraded"] is True for row in section["impact"])
    # both sides of every analysed metric were found in the capture attachments
    phases = {(s["metric"], s["phase"]) for s in section["series"]}
    for row in section["impact"]:
        assert {(row["metric"], "baseline"), (row["metric"], "impact")} <= phases
    decision = section["decision"]
    assert decision["action"] == "rollback" and decision["reason"]
    assert decision["action_result"]["status"] == "ok"
    assert section["deployment_facts"]["deployer"] and section["deployment_facts"]["commit"]
    assert section["deployed_at"] is not None
    assert all(c["met"] for c in section["controls"])
    html = tmp_path / "r.html"
    assert cli(*args, "--out", str(html)).code == 0
    text = html.read_text()
    assert text.count('class="deploy-marker"') == len(section["impact"])


def test_export_and_verify_bundle_of_a_real_run(demo, cli, tmp_path):
    out = tmp_path / "pkg"
    result = cli("export", "--repo", str(demo.repository), "--service", demo.service, "--deployment", demo.deployment, "--trust", str(demo.trust_policy), "--out", str(out))
    assert result.code == 0, result.err
    result = cli("verify", "--bundle", str(out), "--trust", str(demo.trust_policy))
    assert result.code == 0 and result.out.startswith(f"VERIFIED {demo.service}/{demo.deployment}")
    result = cli("verify", "--bundle", str(out))  # the package's own policy: never a pass
    assert result.code == 1 and "OWN trust policy — not independent" in result.out.splitlines()[0]
