"""What `afdp validate` says about comparisons that would judge nothing (issue 10).

A comparison written with no thresholds and no method, a baseline taken after the
deployment mark, a workflow with no decision: each is read the way its author evidently
meant and says so in a note, or is refused when it cannot be made meaningful.
"""

from __future__ import annotations

import json
from pathlib import Path

FIRST = Path(__file__).parent / "workflow" / "seed_my_first_workflow.yaml"

LIVE_LATE_BASELINE = """\
name: live_late
collectors:
  page: {type: scrape, url: "http://127.0.0.1:9/metrics"}
metrics:
  latency: {collector: page, metric: http_request_duration_seconds, unit: s}
workflow:
  - wait_for: deployment
  - capture: latency
  - wait: 5_minutes
  - capture: latency
  - compare: before_vs_after
"""


def test_the_guides_first_workflow_validates_with_notes_saying_how_it_is_read(cli):
    result = cli("validate", str(FIRST), "--json")
    assert result.code == 0, result.out
    document = json.loads(result.out)
    assert document["valid"] is True and document["findings"] == []
    notes = [n["message"] for n in document["notes"]]
    assert all(n["level"] == "note" for n in document["notes"])
    assert any("read from Prometheus history" in n and "ending at the mark" in n for n in notes), notes
    assert any("no thresholds and no method" in n and "10%" in n for n in notes), notes
    assert any("no decisions step" in n for n in notes), notes
    text = cli("validate", str(FIRST))
    assert text.code == 0 and text.out.count(": note: ") == 3


def test_a_baseline_after_the_mark_from_a_source_without_history_is_refused(cli, tmp_path):
    path = tmp_path / "late.yaml"
    path.write_text(LIVE_LATE_BASELINE)
    result = cli("validate", str(path))
    assert result.code == 1
    assert "taken after the deployment mark (step 'wait_for') from a source that keeps no history (scrape)" in result.out
    assert "move 'capture' above 'wait_for'" in result.out


def test_an_explicit_baseline_after_the_mark_is_warned_about(cli, tmp_path):
    path = tmp_path / "explicit.yaml"
    path.write_text(
        FIRST.read_text().replace("  - compare: before_vs_after\n", "  - compare: {baseline: capture, impact: capture_2}\n")
    )
    result = cli("validate", str(path), "--json")
    assert result.code == 0, result.out
    warnings = [n for n in json.loads(result.out)["notes"] if n["level"] == "warning"]
    assert len(warnings) == 1 and "compares two windows after the deployment" in warnings[0]["message"]


SHADOWED = """\
name: shadowed
workflow:
  pre_deployment:
    - capture_baseline: {duration: 1m, metrics: [error_rate]}
  deployment:
    - mark_deployment_time
  post_deployment:
    - capture_impact: {duration: 1m, metrics: [same_as_baseline]}
    - analyze_differences: {thresholds: {error_rate_increase: 1%}}
    - decisions
decisions:
  roll_back:
    condition: error_rate.degraded
    action: rollback
  only_alert:
    condition: "error_rate.degraded "
    action: alert
  ship:
    condition: all_metrics_within_normal
    action: mark_successful
"""


def test_a_decision_no_run_can_reach_is_warned_about(cli, tmp_path):
    path = tmp_path / "shadowed.yaml"
    path.write_text(SHADOWED)
    result = cli("validate", str(path), "--json")
    assert result.code == 0, result.out
    warnings = [n for n in json.loads(result.out)["notes"] if n["level"] == "warning"]
    assert [w["path"] for w in warnings] == ["decisions.only_alert"]
    assert "can never be taken: 'roll_back' comes first with the same condition" in warnings[0]["message"]
    path.write_text(SHADOWED.replace("condition: error_rate.degraded\n", "condition: true\n", 1))
    warnings = [n for n in json.loads(cli("validate", str(path), "--json").out)["notes"] if n["level"] == "warning"]
    assert [w["path"] for w in warnings] == ["decisions.only_alert", "decisions.ship"]
