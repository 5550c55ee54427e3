"""Admission policy: every rule admits what it should and rejects (located, named) what it must."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from afdp.errors import ConfigurationError
from afdp.workflow import load_workflow
from afdp.workflow.compiler import compile_document
from afdp.workflow.findings import PolicyInvalid, PolicyRejected, WorkflowInvalid
from afdp.workflow.loader import parse
from afdp.workflow.model import Workflow
from afdp.workflow.policy import (
    AdmissionPolicy,
    AllOf,
    AllowedStepTypes,
    build_policy,
    default_policy_path,
    host_allowed,
    load_policy,
    url_host,
)
from afdp.workflow.starter import example_files

REPO = Path(__file__).resolve().parent.parent
PLATFORM = REPO / "policies" / "admission.platform-example.yaml"

WORKFLOW = """\
name: api_checks
variables:
  ENVIRONMENT: production
  PROM: prometheus.monitoring.svc.cluster.local
collectors:
  prometheus:
    type: prometheus
    url: http://${workflow.PROM}:9090
workflow:
  pre_deployment:
    - capture_baseline: {duration: 5m, metrics: [error_rate]}
  deployment:
    - mark_deployment_time
  post_deployment:
    - capture_impact: {duration: 10m}
    - analyze_differences
    - decisions
    - generate_training_record
decisions:
  bad:
    condition: error_rate.increase > 1%
    action: rollback
actions:
  rollback:
    command: [kubectl, rollout, undo, "deployment/${deployment.service}"]
  alert:
    webhook: https://hooks.example.com/afdp
    secret: ${env.HOOK_KEY}
"""


def policy_from(text: str, name: str = "p.yaml") -> AdmissionPolicy:
    return build_policy(parse(textwrap.dedent(text), name=name))


def workflow_from(text: str) -> tuple[Workflow, object]:
    document = parse(text, name="w.yaml")
    return compile_document(document), document


def violations(policy_text: str, workflow_text: str = WORKFLOW) -> list[str]:
    workflow, document = workflow_from(workflow_text)
    return [
        str(f) for f in policy_from("version: 1\n" + policy_text).violations(workflow, document)
    ]  # type: ignore[arg-type]


def test_the_base_workflow_passes_every_rule() -> None:
    workflow, document = workflow_from(WORKFLOW)
    policy = load_policy(PLATFORM)
    admitted = policy.admit(
        workflow.__class__(**{**workflow.__dict__, "name": "api_deployment_impact"}),
        document,  # type: ignore[arg-type]
    )
    assert admitted.name == "api_deployment_impact"


# --- one negative (and positive) test per rule ----------------------------------------


def test_allowed_workflows() -> None:
    assert violations("allowed_workflows: [api_*]\n") == []
    found = violations("allowed_workflows: [payments_*, checkout]\n")
    assert found == [
        "w.yaml:1:1: name: allowed_workflows: workflow 'api_checks' is not on the policy's list "
        "(allowed: payments_*, checkout)"
    ]


def test_allowed_step_types() -> None:
    allowed = "[capture_baseline, mark_deployment_time, capture_impact, analyze_differences, decisions, generate_training_record]"
    assert violations(f"allowed_step_types: {allowed}\n") == []
    found = violations(
        "allowed_step_types: [capture_baseline, capture_impact, analyze_differences, decisions, generate_training_record]\n"
    )
    assert len(found) == 1
    assert found[0].startswith("w.yaml:13:7: workflow.deployment[0]: allowed_step_types: ")
    assert "'mark_deployment_time'" in found[0]


def test_allowed_collector_types() -> None:
    assert violations("allowed_collector_types: [prometheus]\n") == []
    found = violations("allowed_collector_types: [scrape, sql]\n")
    assert len(found) == 1 and "collectors.prometheus.type: allowed_collector_types:" in found[0]
    assert found[0].startswith("w.yaml:7:5:")


def test_allowed_collector_hosts_resolves_variables() -> None:
    assert violations("allowed_collector_hosts: ['*.svc.cluster.local']\n") == []
    found = violations("allowed_collector_hosts: [prometheus, localhost]\n")
    assert len(found) == 1
    assert "collectors.prometheus.url: allowed_collector_hosts:" in found[0]
    assert "'prometheus.monitoring.svc.cluster.local'" in found[0]


def test_unresolved_hosts_are_denied_or_allowed() -> None:
    text = WORKFLOW.replace("http://${workflow.PROM}:9090", "${env.PROM_URL}")
    found = violations("allowed_collector_hosts: [localhost]\n", text)
    assert len(found) == 1 and "cannot be checked before the run" in found[0]
    assert "${env.PROM_URL}" in found[0]
    assert violations("allowed_collector_hosts: [localhost]\nunresolved_hosts: allow\n", text) == []
    per_deployment = WORKFLOW.replace("${workflow.PROM}", "${deployment.service}.internal")
    found = violations("allowed_collector_hosts: ['*.internal']\n", per_deployment)
    assert len(found) == 1 and "${deployment.service}" in found[0]


def test_the_built_in_collector_is_checked_too() -> None:
    text = WORKFLOW.replace(
        "collectors:\n  prometheus:\n    type: prometheus\n    url: http://${workflow.PROM}:9090\n",
        "",
    )
    found = violations("allowed_collector_hosts: [prometheus.internal]\n", text)
    assert (
        len(found) == 1 and "collector 'prometheus' (built in) reaches host 'localhost'" in found[0]
    )
    assert found[0].startswith("w.yaml:7:7:")  # the capture step that uses it


def test_allowed_webhook_hosts() -> None:
    assert violations("allowed_webhook_hosts: [hooks.example.com]\n") == []
    found = violations("allowed_webhook_hosts: ['*.slack.com']\n")
    assert len(found) == 1 and "actions.alert.webhook: allowed_webhook_hosts:" in found[0]
    assert "'hooks.example.com'" in found[0]
    found = violations("allowed_webhook_hosts: []\n")
    assert len(found) == 1


def test_allowed_action_commands() -> None:
    assert violations("allowed_action_commands: [kubectl]\n") == []
    found = violations("allowed_action_commands: [helm]\n")
    assert len(found) == 1 and "actions.rollback.command[0]: allowed_action_commands:" in found[0]
    found = violations("allowed_action_commands: []\n")
    assert len(found) == 1 and "commands are forbidden" in found[0]
    # A bare name allows the program on PATH, not any path ending in that name.
    sneaky = WORKFLOW.replace("[kubectl,", "[/tmp/kubectl,")
    assert len(violations("allowed_action_commands: [kubectl]\n", sneaky)) == 1
    assert violations("allowed_action_commands: [/tmp/kubectl]\n", sneaky) == []


def test_required_variables() -> None:
    assert violations("required_variables: [ENVIRONMENT]\n") == []
    found = violations("required_variables: [ENVIRONMENT, REGION]\n")
    assert (
        len(found) == 1 and "required_variables: the policy requires variable 'REGION'" in found[0]
    )


def test_required_steps_by_kind_role_and_type() -> None:
    ok = """\
required_steps:
  - {name: baseline, kind: capture, role: before}
  - {name: impact, kind: capture, role: impact}
  - {name: decision, types: [decisions, gate]}
"""
    assert violations(ok) == []
    no_baseline = """\
name: late
workflow:
  - mark_deployment_time
  - capture: {duration: 1m, metrics: [error_rate]}
  - capture: {duration: 5m, metrics: [error_rate]}
  - analyze_differences: {baseline: capture, impact: capture_2}
"""
    # (named explicitly: a baseline chosen by default after the mark would be read back
    # from Prometheus history, the window before the mark, and count as a baseline)
    found = violations(
        "required_steps:\n  - {name: baseline, kind: capture, role: before, description: a real baseline}\n",
        no_baseline,
    )
    assert len(found) == 1
    assert (
        "required_steps.baseline: the policy requires a capture step before the deployment mark: a real baseline"
        in found[0]
    )
    found = violations("required_steps:\n  - {name: lessons, types: [generate_lessons_learned]}\n")
    assert len(found) == 1 and "required_steps.lessons" in found[0]
    found = violations("required_steps:\n  - {name: two, types: [decisions], min_count: 2}\n")
    assert len(found) == 1 and "at least 2, found 1" in found[0]


def test_limits() -> None:
    assert (
        violations(
            "limits: {max_duration: 1h, max_steps: 6, max_metrics: 1, max_capture_duration: 10m}\n"
        )
        == []
    )
    found = violations(
        "limits: {max_duration: 10m, max_steps: 5, max_metrics: 0, max_capture_duration: 5m}\n".replace(
            "max_metrics: 0, ", ""
        )
    )
    rules = sorted(f.split(": ")[2] for f in found)
    assert rules == ["limits.max_capture_duration", "limits.max_duration", "limits.max_steps"], (
        found
    )
    assert any("can run for up to 15m" in f for f in found)


def test_all_rules_are_reported_at_once() -> None:
    found = violations(
        "allowed_workflows: [other]\nallowed_action_commands: [helm]\nrequired_variables: [REGION]\nlimits: {max_steps: 1}\n"
    )
    assert len(found) == 4


def test_all_of_combines_rule_objects() -> None:
    workflow, _ = workflow_from(WORKFLOW)
    policy = AdmissionPolicy(
        "inline",
        "<code>",
        AllOf((AllowedStepTypes(frozenset({"wait"})), AllowedStepTypes(frozenset({"decisions"})))),
    )
    # Without the parsed document, findings use the steps' own locations.
    found = policy.violations(workflow)
    assert len(found) == 6 + 5
    assert all(f.file == "w.yaml" and f.line > 1 and f.rule == "allowed_step_types" for f in found)
    with pytest.raises(PolicyRejected) as caught:
        policy.admit(workflow)
    assert caught.value.exit_code == 1
    assert "11 admission policy violations" in str(caught.value)


# --- hosts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "patterns", "allowed"),
    [
        ("prometheus", ["prometheus"], True),
        ("a.example.com", ["*.example.com"], True),
        ("a.b.example.com", ["*.example.com"], True),
        ("example.com", ["*.example.com"], False),
        ("evilexample.com", ["*.example.com"], False),
        ("anything", ["*"], True),
        ("::1", ["[::1]"], True),
        ("10.0.0.5", ["10.0.0.5"], True),
        ("10.0.0.6", ["10.0.0.5"], False),
    ],
)
def test_host_patterns(host: str, patterns: list[str], allowed: bool) -> None:
    assert host_allowed(host, patterns) is allowed


def test_url_host_from_templates() -> None:
    from afdp.workflow.interpolation import parse_template

    assert (
        url_host(parse_template("http://${workflow.H}:9090/x"), {"H": "Prom.Internal"}).host
        == "prom.internal"
    )
    assert url_host(parse_template("https://h.example/x?token=${env.T}"), {}).host == "h.example"
    assert url_host(parse_template("sqlite:///tmp/x.db"), {}).host is None
    assert url_host(parse_template("sqlite:///tmp/x.db"), {}).unresolved == ""
    assert "env.DB" in url_host(parse_template("${env.DB}"), {}).unresolved
    assert (
        url_host(parse_template("postgresql://u:${env.P}@db.internal/app"), {}).host
        == "db.internal"
    )


# --- policy files ---------------------------------------------------------------------


def test_shipped_default_admits_every_example() -> None:
    assert default_policy_path().name == "admission.yaml"
    for file in example_files():
        assert load_workflow(file).name == file.stem


def test_platform_example_admits_the_api_example_and_rejects_the_others() -> None:
    examples = {f.stem: f for f in example_files()}
    assert (
        load_workflow(examples["api_deployment_impact"], policy=PLATFORM).name
        == "api_deployment_impact"
    )
    with pytest.raises(PolicyRejected) as caught:
        load_workflow(examples["database_migration_impact"], policy=PLATFORM)
    rules = {f.rule for f in caught.value.findings}
    assert {
        "allowed_workflows",
        "allowed_step_types",
        "allowed_collector_types",
        "required_variables",
    } <= rules


def test_load_workflow_raises_for_invalid_workflows(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text("name: x\nworkflow:\n  - wait: forever\n", encoding="utf-8")
    with pytest.raises(WorkflowInvalid):
        load_workflow(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: 2\n", "expected 1"),
        ("allowed_step_types: [wait]\n", "missing required key 'version'"),
        ("version: 1\nallowed_step_types: [wiat]\n", "did you mean 'wait'?"),
        ("version: 1\nallowed_collector_hosts: ['http://x']\n", "expected a host name"),
        ("version: 1\nlimits: {max_duration: forever}\n", "'forever' is not a duration"),
        ("version: 1\nlimits: {max_steps: 0}\n", "at least 1"),
        ("version: 1\nrequired_steps: [{name: x}]\n", "names the step types"),
        (
            "version: 1\nrequired_steps: [{name: x, kind: wait, types: [capture]}]\n",
            "could not be met",
        ),
        (
            "version: 1\nrequired_steps: [{name: x, kind: wait, role: before}]\n",
            "only applies to kind: capture",
        ),
        ("version: 1\nunknown_rule: true\n", "unknown key 'unknown_rule'"),
        ("version: 1\nversion: 1\n", "duplicate key"),
    ],
)
def test_bad_policy_files_are_configuration_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyInvalid) as caught:
        load_policy(path)
    assert isinstance(caught.value, ConfigurationError) and caught.value.exit_code == 2
    assert any(message in str(f) for f in caught.value.findings), caught.value.findings
    assert all(str(f).startswith(str(path)) for f in caught.value.findings)


def test_missing_policy_file_is_a_usage_error(tmp_path: Path) -> None:
    from afdp.errors import UsageError

    with pytest.raises(UsageError, match="admission policy file not found"):
        load_policy(tmp_path / "nope.yaml")


def test_overrides_are_admitted_too() -> None:
    workflow, document = workflow_from(WORKFLOW)
    policy = policy_from("version: 1\nallowed_collector_hosts: ['*.svc.cluster.local']\n")
    assert policy.admit(workflow, document) == workflow
    assert policy.violations(workflow, document, overrides={"PROM": "x.svc.cluster.local"}) == []
    with pytest.raises(PolicyRejected) as caught:
        policy.admit(workflow, document, overrides={"PROM": "evil.example.com"})
    assert "reaches host 'evil.example.com'" in str(caught.value)
    assert caught.value.findings[0].line == 8  # still located in the workflow file


def test_plan_admits_set_variables_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from afdp.cli import main

    path = tmp_path / "w.yaml"
    path.write_text(WORKFLOW.replace("api_checks", "api_deployment_impact"), encoding="utf-8")
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\nallowed_collector_hosts: ['*.svc.cluster.local']\n")
    args = ["plan", str(path), "--policy", str(policy)]
    with pytest.raises(SystemExit) as exited:
        main([*args, "--set", "workflow.PROM=evil.example.com"])
    assert exited.value.code == 1
    assert "reaches host 'evil.example.com'" in capsys.readouterr().err
    main([*args, "--set", "workflow.PROM=other.svc.cluster.local"])
    assert "other.svc.cluster.local:9090" in capsys.readouterr().out


def test_load_workflow_admits_overrides(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(WORKFLOW, encoding="utf-8")
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\nallowed_collector_hosts: ['*.svc.cluster.local']\n")
    assert load_workflow(path, policy=policy).name == "api_checks"
    with pytest.raises(PolicyRejected):
        load_workflow(path, policy=policy, overrides={"PROM": "evil.example.com"})
