"""The ``actions:`` block: how rollback, alert and mark_successful are carried out."""

from __future__ import annotations

import textwrap

import pytest

from afdp.workflow.compiler import compile_document
from afdp.workflow.findings import WorkflowInvalid
from afdp.workflow.interpolation import Secret
from afdp.workflow.loader import parse
from afdp.workflow.model import ActionSpec, Workflow

BASE = """\
name: actions_test
workflow:
  - capture_baseline: [error_rate]
  - mark_deployment_time
  - capture_impact: {duration: 1m}
  - analyze_differences
  - decisions
decisions:
  bad:
    condition: error_rate.increase > 1%
    action: rollback
"""


def compile_text(actions: str) -> Workflow:
    return compile_document(parse(BASE + textwrap.dedent(actions), name="w.yaml"))


def problems(actions: str) -> list[str]:
    with pytest.raises(WorkflowInvalid) as caught:
        compile_text(actions)
    return [str(f) for f in caught.value.findings]


def test_command_and_webhook_compile_to_action_specs() -> None:
    workflow = compile_text(
        """\
        actions:
          rollback:
            command: [kubectl, rollout, undo, "deployment/${deployment.service}"]
          alert:
            webhook: https://hooks.example.com/afdp/${deployment.service}
            secret: ${env.HOOK_KEY}
            timeout: 10s
        """
    )
    rollback = workflow.action("rollback")
    assert isinstance(rollback, ActionSpec)
    assert rollback.webhook is None and rollback.secret is None
    assert rollback.timeout.seconds == 60  # the default
    assert rollback.command is not None
    values = workflow.values(deployment={"service": "api"})
    assert [str(a.render(values)) for a in rollback.command] == [
        "kubectl",
        "rollout",
        "undo",
        "deployment/api",
    ]
    alert = workflow.action("alert")
    assert alert is not None and alert.command is None and alert.webhook is not None
    assert alert.webhook.render(values) == "https://hooks.example.com/afdp/api"
    assert alert.timeout.seconds == 10
    assert alert.secret is not None
    key = alert.secret.render(values, env={"HOOK_KEY": "s3cret"})
    assert isinstance(key, Secret) and key.reveal() == "s3cret" and "s3cret" not in str(key)
    assert workflow.action("mark_successful") is None
    assert alert.location is not None and alert.location.line > 1


def test_no_actions_is_an_empty_tuple() -> None:
    workflow = compile_text("")
    assert workflow.actions == () and workflow.action("rollback") is None


def test_actions_change_the_digest() -> None:
    plain = compile_text("")
    with_actions = compile_text("actions:\n  rollback:\n    command: [/bin/true]\n")
    assert plain.digest != with_actions.digest


@pytest.mark.parametrize(
    ("actions", "expected"),
    [
        ("actions:\n  reboot:\n    command: [x]\n", "invalid name 'reboot'"),
        ("actions:\n  rollback: {}\n", "exactly one of command: (an argv list) or webhook:"),
        (
            "actions:\n  rollback:\n    command: [x]\n    webhook: https://h/x\n",
            "it has both",
        ),
        (
            "actions:\n  rollback:\n    command: kubectl rollout undo\n",
            "expected a list of arguments",
        ),
        ("actions:\n  rollback:\n    command: []\n", "expected at least 1 item"),
        ("actions:\n  alert:\n    webhook: ftp://h/x\n", "a webhook is reached over http or https"),
        ("actions:\n  alert:\n    webhook: hooks.example.com\n", "is not a URL"),
        (
            "actions:\n  alert:\n    webhook: ${env.HOOK_URL}\n",
            "must start with http:// or https://",
        ),
        (
            "actions:\n  alert:\n    webhook: https://h/x\n    secret: hunter2\n",
            "a webhook secret must come from the environment",
        ),
        (
            "actions:\n  alert:\n    webhook: https://h/x\n    secret: ${deployment.id}\n",
            "a webhook secret must come from the environment",
        ),
        (
            "actions:\n  rollback:\n    command: [x]\n    secret: ${env.K}\n",
            "this action has no webhook",
        ),
        ("actions:\n  rollback:\n    command: [x]\n    timeout: forever\n", "forever"),
        (
            "actions:\n  rollback:\n    command: [x, '${deployment.servce}']\n",
            "did you mean 'service'?",
        ),
        (
            "actions:\n  rollback:\n    command: [x, '${steps.decisions.action}']\n",
            "undefined name 'steps.decisions'",
        ),
        ("actions:\n  rollback:\n    command: [x]\n    retries: 3\n", "unknown key 'retries'"),
    ],
)
def test_bad_actions_are_located_findings(actions: str, expected: str) -> None:
    found = problems(actions)
    assert any(expected in f for f in found), found
    assert all(f.startswith("w.yaml:") for f in found)
    assert any("actions" in f for f in found)


def test_earlier_step_outputs_may_be_used() -> None:
    workflow = compile_text(
        "actions:\n  rollback:\n    command: [echo, '${steps.analyze_differences.any_degradation}']\n"
    )
    assert workflow.action("rollback") is not None
