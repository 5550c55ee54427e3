"""``afdp validate``, ``afdp plan`` and ``afdp init --examples`` through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from afdp.cli import main
from afdp.workflow.starter import example_files, guide_files

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = {f.stem: f for f in example_files()}
API = str(EXAMPLES["api_deployment_impact"])
PLATFORM = str(REPO / "policies" / "admission.platform-example.yaml")
SECRET_VALUE = "s3cr3t-value-that-must-never-appear"

CONDITIONAL = """\
name: conditional
variables:
  ENVIRONMENT: production
  DASHBOARD: https://grafana.example.com/d/${workflow.ENVIRONMENT}
collectors:
  db:
    type: sql
    url: ${env.DATABASE_URL}
workflow:
  - capture_baseline: {metrics: [error_rate], duration: 1m}
  - mark_deployment_time
  - wait: 1m
    when: workflow.ENVIRONMENT == 'production'
  - wait: 2m
    name: staging_wait
    unless: deployment.environment != 'staging'
  - capture_impact: {duration: 5m}
  - analyze_differences
  - wait: 3m
    name: after_degradation
    when: steps.analyze_differences.any_degradation
  - record_table_sizes:
      query: SELECT relname FROM pg_stat_user_tables WHERE relname = '${deployment.service}'
actions:
  alert:
    webhook: https://hooks.example.com/${workflow.ENVIRONMENT}
    secret: ${env.HOOK_KEY}
"""


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_example_validates_cleanly(capsys: pytest.CaptureFixture[str], name: str) -> None:
    code, out, err = run_cli(capsys, "validate", str(EXAMPLES[name]))
    assert code == 0, out + err
    assert f"valid: workflow {name!r}" in out and "admitted by policy 'afdp-default'" in out
    code, out, _ = run_cli(capsys, "validate", str(EXAMPLES[name]), "--json")
    data = json.loads(out)
    assert code == 0 and data["valid"] is True and data["findings"] == []
    assert len(data["workflow"]["digest"]) == 64


def test_validate_json_lists_every_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "w.yaml"
    path.write_text("name: x\nworkflow:\n  - wait: forever\n  - wiat: 1m\n", encoding="utf-8")
    code, out, _ = run_cli(capsys, "validate", str(path), "--json")
    data = json.loads(out)
    assert code == 1 and data["verdict"] == "invalid"
    assert [(f["line"], f["column"], f["path"]) for f in data["findings"]] == [
        (3, 11, "workflow[0].wait"),
        (4, 5, "workflow[1].wiat"),
    ]
    assert "did you mean 'wait'?" in data["findings"][1]["message"]
    assert all(f["file"] == str(path) and f["kind"] == "invalid" for f in data["findings"])


def test_validate_reports_policy_violations_with_rules(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        capsys, "validate", str(EXAMPLES["feature_flag_analysis"]), "--policy", PLATFORM
    )
    assert code == 1
    assert "rejected by policy 'platform-example'" in out
    assert "allowed_workflows: workflow 'feature_flag_analysis'" in out
    code, out, _ = run_cli(
        capsys, "validate", str(EXAMPLES["feature_flag_analysis"]), "--policy", PLATFORM, "--json"
    )
    data = json.loads(out)
    assert data["verdict"] == "rejected"
    assert all(f["kind"] == "policy" and f["rule"] for f in data["findings"])
    assert data["policy"]["name"] == "platform-example"
    code, out, _ = run_cli(capsys, "validate", API, "--policy", PLATFORM)
    assert code == 0, out


def test_a_broken_policy_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "version: 1\nallowed_step_types: [wiat]\nlimits: {max_steps: -1}\n", encoding="utf-8"
    )
    code, out, err = run_cli(capsys, "validate", API, "--policy", str(policy))
    assert code == 2
    assert "2 problems in the admission policy" in err
    assert "did you mean 'wait'?" in err and "Traceback" not in err


def test_plan_shows_phases_steps_and_resolved_values(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(
        capsys, "plan", API, "--set", "deployment.service=api", "--set", "deployment.id=d-42"
    )
    assert code == 0, err
    for expected in (
        "Plan for workflow 'api_deployment_impact' 1.0",
        "digest      sha256:",
        "deployment  service=api id=d-42",
        "pre_deployment",
        "post_deployment",
        "capture_baseline",
        "5_minutes",
        'rate(order_revenue_dollars_total{service="api"}[5m])',
        "run kubectl rollout undo deployment/api (timeout 60s)",
        "signed with [redacted env.AFDP_WEBHOOK_SECRET]",
        "auto_rollback: if revenue_per_hour.decrease > $1000_per_hour -> rollback",
    ):
        assert expected in out, expected


def test_plan_json_evaluates_conditions_with_what_is_known(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{SECRET_VALUE}@db/app")
    monkeypatch.setenv("HOOK_KEY", SECRET_VALUE)
    path = tmp_path / "w.yaml"
    path.write_text(CONDITIONAL, encoding="utf-8")
    args = (
        "plan",
        str(path),
        "--set",
        "deployment.service=api",
        "--set",
        "deployment.environment=prod",
    )
    code, out, err = run_cli(capsys, *args, "--json")
    assert code == 0, err
    plan = json.loads(out)
    steps = {s["name"]: s for phase in plan["phases"] for s in phase["steps"]}
    assert steps["wait"]["status"] == "run"
    assert steps["wait"]["when"]["result"] is True
    assert steps["staging_wait"]["status"] == "skipped"
    assert steps["staging_wait"]["unless"]["result"] is True
    assert steps["after_degradation"]["status"] == "conditional"
    assert "decided at run time" in steps["after_degradation"]["when"]["reason"]
    # + the decisions step AFDP adds after the analysis (the workflow declares none)
    assert steps["decisions"]["status"] == "run"
    assert plan["summary"] == {"steps": 9, "run": 7, "skipped": 1, "conditional": 1}
    # 1m + 1m + (2m skipped) + 5m + 3m (conditional counts)
    assert plan["max_duration"]["seconds"] == 600
    assert "relname = 'api'" in steps["record_table_sizes"]["params"]["query"]
    assert plan["actions"][0]["webhook"] == "https://hooks.example.com/production"
    assert plan["workflow"]["digest"] and plan["policy"] == "afdp-default"
    # Secrets: shown redacted, never read, in JSON and in the human output.
    collectors = {c["name"]: c for c in plan["collectors"]}
    assert collectors["db"]["url"] == "[redacted env.DATABASE_URL]"
    assert plan["actions"][0]["secret"] == "[redacted env.HOOK_KEY]"
    assert SECRET_VALUE not in out
    code, human, err = run_cli(capsys, *args)
    assert code == 0 and SECRET_VALUE not in human + err
    assert "[redacted env.DATABASE_URL]" in human


def test_plan_variables_from_set_change_skipping(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(CONDITIONAL, encoding="utf-8")
    code, out, _ = run_cli(
        capsys,
        "plan",
        str(path),
        "--set",
        "workflow.ENVIRONMENT=staging",
        "--set",
        "deployment.environment=staging",
        "--json",
    )
    plan = json.loads(out)
    steps = {s["name"]: s for phase in plan["phases"] for s in phase["steps"]}
    assert steps["wait"]["status"] == "skipped"
    assert steps["staging_wait"]["status"] == "run"
    assert plan["variables"]["DASHBOARD"] == "https://grafana.example.com/d/staging"
    assert plan["actions"][0]["webhook"] == "https://hooks.example.com/staging"


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (("deployment.servce=api",), "did you mean 'service'?"),
        (("workflow.ENVIROMENT=x",), "did you mean 'ENVIRONMENT'?"),
        (("env.AFDP_WEBHOOK_SECRET=x",), "never from the command line"),
        (("service=api",), "did you mean deployment.service?"),
        (("steps.x=1",), "expected deployment.<field> or workflow.<NAME>"),
        (("deployment.service",), "expected KEY=VALUE"),
        (("deployment.id=a", "deployment.id=b"), "given twice"),
    ],
)
def test_plan_set_errors_are_usage_errors(
    capsys: pytest.CaptureFixture[str], sets: tuple[str, ...], expected: str
) -> None:
    args = [arg for value in sets for arg in ("--set", value)]
    code, out, err = run_cli(capsys, "plan", API, *args)
    assert code == 2 and expected in err and "Traceback" not in err


def test_plan_of_an_invalid_workflow_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "w.yaml"
    path.write_text("name: x\nworkflow:\n  - wait: -5_minutes\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "plan", str(path))
    assert code == 1 and "negative duration" in err


def test_init_examples_copies_valid_workflows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "evidence"
    code, out, err = run_cli(capsys, "init", str(target), "--examples", "--json")
    assert code == 0, err
    data = json.loads(out)
    written = sorted(str(Path(p).relative_to(target / "workflows")) for p in data["examples"])
    assert written == sorted([f.name for f in example_files()] + [f"guide/{f.name}" for f in guide_files()])
    for name in written:
        code, out, err = run_cli(capsys, "validate", str(target / "workflows" / name))
        assert code == 0, out + err
    # A second run keeps the user's (possibly edited) copies.
    (target / "workflows" / "my_first_workflow.yaml").write_text("# mine\n", encoding="utf-8")
    code, out, _ = run_cli(capsys, "init", str(target), "--examples", "--json")
    assert json.loads(out)["examples"] == []
    assert (target / "workflows" / "my_first_workflow.yaml").read_text(
        encoding="utf-8"
    ) == "# mine\n"


def test_validate_and_plan_do_not_import_prefect() -> None:
    code = f"""
import sys
from afdp.cli import main
for argv in (["validate", {API!r}], ["plan", {API!r}, "--set", "deployment.service=api", "--json"]):
    try:
        main(argv)
    except SystemExit as exc:
        assert not exc.code, exc.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("prefect", "pygit2", "sqlalchemy", "httpx", "rich"))
print("HEAVY", heavy, file=sys.stderr)
assert not heavy, heavy
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_plan_shows_stages(capsys: pytest.CaptureFixture[str]) -> None:
    canary = str(EXAMPLES["canary_rollout"])
    code, out, _ = run_cli(capsys, "plan", canary, "--json")
    assert code == 0
    stages = [p["stage"] for p in json.loads(out)["phases"] if p["stage"]]
    assert [s["name"] for s in stages] == ["canary", "partial", "full"]
    assert stages[0]["traffic"] == "1%" and stages[0]["abort_on"] == "any_degradation"
    code, out, _ = run_cli(capsys, "plan", canary)
    assert "stage canary: 1% of traffic for 10_minutes, roll back if any_degradation" in out


def test_plan_takes_a_bare_variable_name_as_run_does(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "plan", API, "--set", "ENVIRONMENT=staging", "--json")
    assert code == 0, err
    assert json.loads(out)["variables"]["ENVIRONMENT"] == "staging"
