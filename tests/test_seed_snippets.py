"""Every YAML snippet of the workflow guide (tests/seeds/, verbatim) validates and plans.

A whole workflow (the three examples, Getting Started step 1) is used as written. A
snippet that is only a section is completed with the smallest rest it needs (a name and
the steps, metrics or channels the section refers to), prepended or appended, never
edited. What the guide's snippets *do* against real sources is tested per construct in
tests/test_seed_*_e2e.py; here the bar is: `afdp validate` finds no error (notes and
warnings say how the snippet was read), `afdp plan` shows the steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SEEDS = Path(__file__).parent / "seeds"

FIRST = """\
workflow:
  - capture_baseline: {duration: 5_minutes, metrics: [response_time, error_rate]}
  - wait_for: deployment
  - capture_impact: {duration: 5_minutes}
  - analyze_differences
"""

#: snippet -> (text before it, text after it); None: a whole workflow, used as written.
RESTS: dict[str, tuple[str, str] | None] = {
    "example1_api_deployment_impact": None,
    "example2_database_migration": None,
    "example3_feature_flag": None,
    "getting_started_step1": None,
    "collectors": ("name: seed_collectors\n", FIRST),
    "getting_started_step2_context": ("name: seed_context\n", FIRST),
    "predictive": ("name: seed_predictive\n", FIRST),
    "getting_started_step3_success_criteria": (
        "name: seed_criteria\n",
        FIRST.replace("[response_time, error_rate]", "[response_time, error_rate, revenue_per_hour, user_satisfaction]"),
    ),
    "analyzers": (
        "name: seed_analyzers\n"
        "metrics:\n"
        "  orders_per_hour: {query: 'sum(rate(orders_total[1m])) * 3600', unit: 1/hour, better: higher}\n",
        FIRST.replace("[response_time, error_rate]", "[response_time, error_rate, orders_per_hour, revenue_per_hour]"),
    ),
    "decisions": (
        "name: seed_decisions\n"
        "notifications:\n"
        "  oncall: {type: webhook, url: 'https://hooks.example.com/oncall'}\n"
        "  management: {type: slack, url: 'https://hooks.example.com/management'}\n",
        FIRST.replace("[response_time, error_rate]", "[response_time, error_rate, revenue_per_hour]") + "  - decisions\n",
    ),
    "cross_service": ("name: seed_services\n", FIRST),
    "multi_stage": (
        "name: seed_stages\n"
        "workflow:\n"
        "  - capture_baseline: {duration: 10_minutes, metrics: [response_time_p50, error_rate]}\n",
        "",
    ),
}



def _completed(tmp_path: Path, name: str) -> Path:
    text = (SEEDS / f"{name}.yaml").read_text()
    rest = RESTS[name]
    if rest is not None:
        text = rest[0] + text + ("\n" if not text.endswith("\n") else "") + rest[1]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def test_every_snippet_of_the_guide_is_here_and_has_a_reading() -> None:
    snippets = {p.stem for p in SEEDS.glob("*.yaml")}
    assert len(snippets) == 12
    assert snippets == set(RESTS)


@pytest.mark.parametrize("name", sorted(RESTS))
def test_snippet_validates_and_plans(tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch, name: str) -> None:  # type: ignore[no-untyped-def]
    for key, value in {"DATABASE_URL": "postgresql://afdp@db.example.com/app", "API_TOKEN": "t0ken-value", "AFDP_NOTIFY_SECRET": "s3cret"}.items():
        monkeypatch.setenv(key, value)
    path = _completed(tmp_path, name)
    checked = cli("validate", str(path), "--json")
    assert checked.code == 0, checked.out + checked.err
    report = json.loads(checked.out)
    assert not [f for f in report.get("findings", []) if f.get("level", "error") == "error"], report
    planned = cli("plan", str(path), "--set", "deployment.service=api", "--set", "deployment.id=d-1", "--json")
    assert planned.code == 0, planned.out + planned.err
    plan = json.loads(planned.out)
    assert plan["phases"] and all(phase["steps"] for phase in plan["phases"]), plan
    assert "t0ken-value" not in planned.out


def test_the_guide_workflows_shipped_by_init_are_the_guides_own() -> None:
    # afdp init --examples copies these to workflows/guide/: the guide's text, unedited.
    from afdp.workflow.starter import guide_files

    shipped = {f.name: f.read_bytes() for f in guide_files()}
    assert shipped == {
        "api_deployment_impact.yaml": (SEEDS / "example1_api_deployment_impact.yaml").read_bytes(),
        "database_migration_impact.yaml": (SEEDS / "example2_database_migration.yaml").read_bytes(),
        "feature_flag_analysis.yaml": (SEEDS / "example3_feature_flag.yaml").read_bytes(),
        "my_first_workflow.yaml": (SEEDS / "getting_started_step1.yaml").read_bytes(),
    }
