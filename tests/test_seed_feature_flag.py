"""Example 3 (feature flag A/B), pasted as written: validates with notes, plans, and its
parts (assignment rule, flagd file, refusals) behave."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from afdp.pipeline import flags
from afdp.workflow import load_workflow
from afdp.workflow.findings import WorkflowInvalid
from afdp.workflow.model import Analyze, BusinessImpact, Capture, EnableFeature
from afdp.workflow.plan import plan_workflow

SEED = Path(__file__).parent / "seeds" / "example3_feature_flag.yaml"


def test_example3_validates_with_a_note_per_reading_and_integrity_entry() -> None:
    workflow = load_workflow(SEED)
    notes = [n.message for n in workflow.notes]
    for entry in ("sign_user_segments", "notarize_results", "immutable_audit_trail"):
        assert any(m.startswith(f"{entry}: always on") for m in notes), notes
    assert any("enable_feature names no provider" in m for m in notes)
    assert any("(not before with after)" in m for m in notes)
    assert workflow.integrity == ("sign_user_segments", "notarize_results", "immutable_audit_trail")
    steps = {s.name: s for s in workflow.steps}
    assert isinstance(steps["enable_feature"].params, EnableFeature)
    assert workflow.boundary == steps["enable_feature"].index  # enabling marks the deployment
    monitor = steps["monitor_continuously"].params
    assert isinstance(monitor, Capture) and monitor.groups == ("control_group", "treatment_group")
    comparison = steps["statistical_comparison"].params
    assert isinstance(comparison, Analyze)
    assert comparison.groups == ("control_group", "treatment_group")
    assert comparison.baseline == comparison.impact == "monitor_continuously"
    assert comparison.method == "welch_t" and comparison.confidence == 0.95
    impact = steps["business_impact"].params
    assert isinstance(impact, BusinessImpact) and impact.revenue_metric == "revenue_per_user"
    assert [s.name for s in workflow.steps][-2:] == ["decisions", "generate_ab_test_record"]


def test_example3_plans() -> None:
    workflow = load_workflow(SEED)
    plan = plan_workflow(workflow, deployment={"service": "shop", "id": "ab-1"})
    text = json.dumps(plan.to_json())
    assert "ab_conversions_total" in text and 'service=\\"shop\\"' in text
    assert "flags.flagd.json" in text


def _variant(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "wf.yaml"
    path.write_text(body)
    return path


BASE = """
name: ab
workflow:
  - segment_users: {control_group: 50%, treatment_group: 50%}
  - capture_baseline_behavior: {metrics: [conversion_rate]}
  - enable_feature: {ENABLE}
  - monitor_continuously: {interval: 1m, duration: 10m}
  - statistical_comparison: {method: t_test}
"""


@pytest.mark.parametrize(
    ("enable", "message"),
    [
        ("{group: treatmnt_group}", "has no group 'treatmnt_group'"),
        ("{percentage: 0%}", "above 0% and at most 100%"),
        ("{provider: webhook}", "provider: webhook needs url:"),
        ("{url: 'ftp://x/y'}", "starts literally with http"),
        ("{url: 'https://h/x', secret: plain}", "must come from the environment"),
        ("{file: '${env.SECRET}'}", "secret"),
        ("{provider: flagd, url: 'https://h/'}", "'url' is for provider: webhook"),
    ],
)
def test_enable_feature_refusals_are_located(tmp_path: Path, enable: str, message: str) -> None:
    with pytest.raises(WorkflowInvalid) as caught:
        load_workflow(_variant(tmp_path, BASE.replace("{ENABLE}", enable)))
    assert any(message in f.message for f in caught.value.findings), caught.value.findings


def test_per_group_metric_needs_segment_users(tmp_path: Path) -> None:
    body = "name: ab\nworkflow:\n  - capture_baseline: {metrics: [conversion_rate]}\n  - mark_deployment_time\n"
    with pytest.raises(WorkflowInvalid) as caught:
        load_workflow(_variant(tmp_path, body))
    assert any("per A/B group" in f.message for f in caught.value.findings)


def test_business_impact_needs_an_ab_comparison(tmp_path: Path) -> None:
    body = (
        "name: x\nworkflow:\n  - capture_baseline: {metrics: [error_rate], duration: 1m}\n"
        "  - mark_deployment_time\n  - capture_impact: {duration: 1m}\n"
        "  - statistical_comparison: {method: t_test}\n  - business_impact: {revenue_difference: calculate}\n"
    )
    with pytest.raises(WorkflowInvalid) as caught:
        load_workflow(_variant(tmp_path, body))
    assert any("control/treatment comparison" in f.message for f in caught.value.findings)


def test_unknown_integrity_entry_is_refused(tmp_path: Path) -> None:
    body = SEED.read_text().replace("immutable_audit_trail", "blockchain")
    with pytest.raises(WorkflowInvalid) as caught:
        load_workflow(_variant(tmp_path, body))
    assert any(f.path.startswith("integrity") for f in caught.value.findings)


def test_murmur3_matches_reference_vectors() -> None:
    assert flags.murmur3_32(b"") == 0
    assert flags.murmur3_32(b"hello") == 0x248BFA47
    assert flags.murmur3_32(b"The quick brown fox jumps over the lazy dog") == 0x2E4FF723


def test_assignment_is_deterministic_salted_and_balanced() -> None:
    weights = [("control_group", 5000), ("treatment_group", 5000)]
    salt = flags.deployment_salt("shop", "ab-1")
    first = [flags.assign(salt, f"user-{i}", weights) for i in range(4000)]
    assert first == [flags.assign(salt, f"user-{i}", weights) for i in range(4000)]
    share = first.count("treatment_group") / len(first)
    assert 0.46 < share < 0.54
    other = [flags.assign(flags.deployment_salt("shop", "ab-2"), f"user-{i}", weights) for i in range(4000)]
    assert other != first  # another deployment splits users differently


def test_flagd_file_is_written_atomically_and_keeps_other_flags(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    path.write_text(json.dumps({"flags": {"other": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a"}}}))
    salt = "s:"
    weights = [("control_group", 5000), ("treatment_group", 5000)]
    before, _ = flags.write_flagd(path, "f", flags.flag_definition(salt, weights, ()))
    assert before is None
    before, after = flags.write_flagd(path, "f", flags.flag_definition(salt, weights, ("treatment_group",)))
    assert before["variants"] == {"control_group": False, "treatment_group": False}
    assert after["variants"] == {"control_group": False, "treatment_group": True}
    document = json.loads(path.read_text())
    assert "other" in document["flags"]
    assert [p.name for p in tmp_path.iterdir()] == ["flags.json"]  # no temporary left
    variant, value = flags.evaluate(document, "f", "user-7")
    assert value is (variant == "treatment_group")
    assert variant == flags.assign(salt, "user-7", weights)


def test_flagd_refuses_to_overwrite_what_is_not_a_flag_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.json"
    path.write_text('{"important": true}')
    with pytest.raises(flags.FlagError, match="not a flagd flag file"):
        flags.write_flagd(path, "f", {})
    assert path.read_text() == '{"important": true}'
    with pytest.raises(flags.FlagError, match="must end in .json"):
        flags.write_flagd(tmp_path / "bashrc", "f", {})


def _webhook_server(status: int):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, received


def _webhook_step(tmp_path: Path, port: int):
    body = BASE.replace("{ENABLE}", f"{{url: 'http://127.0.0.1:{port}/flags', secret: '${{env.FLAG_KEY}}'}}")
    workflow = load_workflow(_variant(tmp_path, body))
    return workflow.step("enable_feature").params


def test_webhook_provider_posts_a_signed_change(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from afdp.pipeline.actions import verify_signature
    from afdp.pipeline.runner.steps.abtest import _post

    server, received = _webhook_server(204)
    try:
        params = _webhook_step(tmp_path, server.server_address[1])
        run = SimpleNamespace(env={"FLAG_KEY": "k3y-s3cret"})
        change = {"flag": "ab", "group": "treatment_group", "before": None, "after": {"variants": {}}}
        sent = _post(run, params, {}, change)  # type: ignore[arg-type]
    finally:
        server.shutdown()
    assert sent["http_status"] == 204 and sent["signed"] is True
    assert "k3y-s3cret" not in json.dumps(sent)
    headers, body = received[0]
    assert verify_signature(b"k3y-s3cret", body, headers["X-AFDP-Signature"])
    assert json.loads(body)["type"] == "afdp.flag_change" and json.loads(body)["group"] == "treatment_group"


def test_webhook_provider_refusal_fails_the_step(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from afdp.pipeline.runner.steps.abtest import _post

    server, _ = _webhook_server(503)
    try:
        params = _webhook_step(tmp_path, server.server_address[1])
        with pytest.raises(flags.FlagError, match="HTTP 503"):
            _post(SimpleNamespace(env={"FLAG_KEY": "k"}), params, {}, {"flag": "ab"})  # type: ignore[arg-type]
    finally:
        server.shutdown()


def test_flag_webhook_host_is_judged_by_the_policy(tmp_path: Path) -> None:
    from afdp.workflow.findings import PolicyRejected

    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nallowed_webhook_hosts: [hooks.example.com]\n")
    allowed = BASE.replace("{ENABLE}", "{url: 'https://hooks.example.com/flags'}")
    assert load_workflow(_variant(tmp_path, allowed), policy=policy).steps
    denied = BASE.replace("{ENABLE}", "{url: 'https://evil.example.net/flags'}")
    with pytest.raises(PolicyRejected) as caught:
        load_workflow(_variant(tmp_path, denied), policy=policy)
    text = str(caught.value.findings if hasattr(caught.value, "findings") else caught.value)
    assert "flag webhook of step 'enable_feature'" in text and "evil.example.net" in text
