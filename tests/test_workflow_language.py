"""The parts of the workflow language: units, interpolation, conditions, and the typed model."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from afdp.workflow.compiler import compile_document
from afdp.workflow.expressions import EvaluationError, ExpressionError, parse_expression
from afdp.workflow.findings import WorkflowInvalid
from afdp.workflow.interpolation import (
    Secret,
    TemplateError,
    UnresolvedError,
    parse_template,
    variable_order,
)
from afdp.workflow.loader import parse
from afdp.workflow.model import Analyze, Capture, Wait, Workflow
from afdp.workflow.starter import example_files
from afdp.workflow.units import UnitError, parse_duration, parse_quantity, parse_unit

BASE = """\
name: language
workflow:
  - capture_baseline: [error_rate, response_time_p99]
  - mark_deployment_time
  - capture_impact: {duration: 1m}
  - analyze_differences
"""


def compile_text(text: str) -> Workflow:
    return compile_document(parse(textwrap.dedent(text), name="w.yaml"))


def problems(text: str) -> list[str]:
    with pytest.raises(WorkflowInvalid) as caught:
        compile_text(text)
    return [str(f) for f in caught.value.findings]


# --- units ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "milliseconds"),
    [
        ("5_minutes", 300_000),
        ("2m", 120_000),
        ("30s", 30_000),
        ("10ms", 10),
        ("1.5h", 5_400_000),
        ("24_hours", 86_400_000),
        ("1 day", 86_400_000),
    ],
)
def test_durations_parse_and_keep_their_text(text: str, milliseconds: int) -> None:
    duration = parse_duration(text)
    assert duration.milliseconds == milliseconds
    assert str(duration) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-5_minutes", "negative duration"),
        ("forever", "every wait and window must end"),
        ("0s", "is zero"),
        ("5", "has no unit"),
        (5, "has no unit"),
        ("5 parsecs", "unknown time unit 'parsecs'"),
        ("400d", "longer than a year"),
        ("0.5ms", "finer than a millisecond"),
        (True, "got a boolean"),
        (None, "got nothing"),
        ("1e309s", "not a duration"),
    ],
)
def test_bad_durations_say_what_was_expected(text: object, message: str) -> None:
    with pytest.raises(UnitError, match=message):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "value", "symbol", "dimension", "base"),
    [
        ("10ms", 10, "ms", "time", 0.01),
        ("0.5%", 0.5, "%", "ratio", 0.005),
        ("$1000_per_hour", 1000, "$/h", "USD/time", 1000 / 3600),
        ("2x", 2, "x", "ratio", 2),
        ("250", 250, "", "number", 250),
        ("5MB", 5, "MB", "bytes", 5e6),
    ],
)
def test_quantities_keep_their_unit(
    text: str, value: float, symbol: str, dimension: str, base: float
) -> None:
    quantity = parse_quantity(text)
    assert quantity.value == value
    assert quantity.unit.symbol == symbol
    assert quantity.dimension == dimension
    assert quantity.base == pytest.approx(base)
    assert str(quantity) == text


def test_negative_thresholds_are_refused_where_asked() -> None:
    assert parse_quantity("-5ms").value == -5
    with pytest.raises(UnitError):
        parse_quantity("-5ms", allow_negative=False)


def test_units_of_metrics() -> None:
    assert parse_unit("$/hour").dimension == "USD/time"
    assert parse_unit("ms").dimension == "time"
    with pytest.raises(UnitError):
        parse_unit("furlongs per fortnight!")


def test_threshold_of_the_wrong_dimension_is_an_error() -> None:
    text = BASE.replace(
        "  - analyze_differences\n",
        "  - analyze_differences:\n      thresholds: {error_rate_increase: 10ms}\n",
    )
    found = problems(text)
    assert any("does not fit metric error_rate" in f for f in found), found


# --- interpolation ----------------------------------------------------------------------


def test_templates_render_in_a_single_pass() -> None:
    template = parse_template("svc=${deployment.service} env=${workflow.ENVIRONMENT}")
    values = {"deployment": {"service": "${workflow.SECRET}"}, "workflow": {"ENVIRONMENT": "prod"}}
    # A substituted value is never scanned again: no injection through values.
    assert template.render(values) == "svc=${workflow.SECRET} env=prod"


def test_env_renders_to_a_secret_that_never_shows() -> None:
    template = parse_template("postgresql://app:${env.DB_PASSWORD}@db/app")
    rendered = template.render({}, env={"DB_PASSWORD": "hunter2"})
    assert isinstance(rendered, Secret)
    assert rendered.reveal() == "postgresql://app:hunter2@db/app"
    for shown in (str(rendered), repr(rendered), f"{rendered}", rendered.redacted()):
        assert "hunter2" not in shown
        assert "[redacted env.DB_PASSWORD]" in shown
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(rendered)


def test_unset_env_is_an_error_only_when_sending() -> None:
    template = parse_template("${env.NOPE}")
    assert str(template.render({}, env=None)) == "[redacted env.NOPE]"
    with pytest.raises(UnresolvedError, match="NOPE is not set"):
        template.render({}, env={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${deployment.service", "not closed"),
        ("${}", r"empty \$\{\}"),
        ("${deploy.service}", "did you mean 'deployment'?"),
        ("${deployment}", "needs a field"),
        ("${workflow.${workflow.A}}", "nested"),
        ("${env.X:-default}", "defaults and filters are not supported"),
        ("${os.system('x')}", "function calls are not allowed"),
    ],
)
def test_malformed_templates(text: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        parse_template(text)


def test_bare_dollar_in_a_url_suggests_env() -> None:
    with pytest.raises(TemplateError, match=r"write \$\{env.DATABASE_URL\}"):
        parse_template("$DATABASE_URL", check_bare_dollar=True)


def test_undefined_names_get_suggestions() -> None:
    found = problems(
        BASE
        + "variables:\n  ENVIRONMENT: prod\n  URL: http://${workflow.ENVIROMENT}/${deployment.servce}\n"
    )
    assert any("did you mean 'ENVIRONMENT'?" in f for f in found), found
    assert any("did you mean 'service'?" in f for f in found), found


def test_step_outputs_are_only_visible_after_the_step() -> None:
    found = problems(
        BASE.replace(
            "  - capture_baseline:",
            "  - wait: 1m\n    when: steps.analyze_differences.any_degradation\n  - capture_baseline:",
        )
    )
    assert any("undefined name 'steps.analyze_differences'" in f for f in found), found
    workflow = compile_text(
        BASE + "  - wait: 1m\n    when: steps.analyze_differences.any_degradation\n"
    )
    assert workflow.steps[-1].when is not None


def test_secrets_are_refused_outside_requests() -> None:
    found = problems(BASE + "  - wait: 1m\n    when: ${env.FLAG} == 'on'\n")
    assert any("secrets (env) cannot be used in conditions" in f for f in found), found
    found = problems(BASE + "variables:\n  TOKEN: ${env.TOKEN}\n")
    assert any("is a secret" in f for f in found), found


def test_variable_order_and_cycles() -> None:
    assert variable_order({"A": ("B",), "B": ("C",), "C": ()}) == ["C", "B", "A"]
    with pytest.raises(TemplateError, match="workflow.A -> workflow.B -> workflow.A"):
        variable_order({"A": ("B",), "B": ("A",)})
    # A long chain does not hit the recursion limit.
    chain = {f"V{i}": (f"V{i + 1}",) for i in range(5000)}
    assert len(variable_order(chain)) == 5000


def test_variables_render_in_dependency_order_with_deployment_values() -> None:
    workflow = compile_text(
        BASE
        + "variables:\n  URL: http://${workflow.HOST}:9090\n  HOST: ${deployment.service}.internal\n"
    )
    values = workflow.values(deployment={"service": "api"})
    # (+ PROMETHEUS_URL, the catalog's variable for the built-in collector BASE reads)
    assert values["workflow"] == {
        "HOST": "api.internal", "URL": "http://api.internal:9090", "PROMETHEUS_URL": "http://localhost:9090"
    }
    overridden = workflow.values(deployment={"service": "api"}, overrides={"HOST": "${x}"})
    assert overridden["workflow"]["URL"] == "http://${x}:9090"  # overrides are literal


# --- conditions -------------------------------------------------------------------------


def test_conditions_compare_quantities_with_units() -> None:
    expression = parse_expression("latency.increase > 10ms and not (errors.increase >= 0.5%)")
    values = {
        "latency": {"increase": parse_quantity("20ms")},
        "errors": {"increase": parse_quantity("0.1%")},
    }
    assert expression.evaluate(values) is True
    values["latency"]["increase"] = parse_quantity("0.005s")
    assert expression.evaluate(values) is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("os.system('id')", "function calls are not allowed"),
        ("__import__('os')", "function calls are not allowed"),
        ("a = 1", "use '=='"),
        ("a && b", "use 'and'"),
        ("1 +", "expected a value"),
        ("a ? b : c", "conditional expressions are not supported"),
    ],
)
def test_bad_conditions_are_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        parse_expression(text)


def test_missing_values_and_unit_mismatches_fail_closed() -> None:
    expression = parse_expression("latency.increase > 10ms")
    with pytest.raises(EvaluationError, match="has no value"):
        expression.evaluate({})
    with pytest.raises(EvaluationError):
        expression.evaluate({"latency": {"increase": parse_quantity("1%")}})


def test_conditions_are_type_checked_when_validating() -> None:
    found = problems(
        BASE
        + "  - decisions\ndecisions:\n  bad:\n    condition: error_rate.increase > 10ms\n    action: alert\n"
    )
    assert any("decisions.bad.condition" in f and "invalid condition" in f for f in found), found


def test_when_on_known_values_compiles() -> None:
    workflow = compile_text(
        BASE
        + "  - wait: 1m\n    when: workflow.ENVIRONMENT == 'production'\n"
        + "variables:\n  ENVIRONMENT: staging\n"
    )
    step = workflow.steps[-1]
    assert isinstance(step.params, Wait) and step.when is not None
    assert step.when.evaluate(workflow.values()) is False


# --- the typed model --------------------------------------------------------------------


def test_examples_compile_to_typed_workflows() -> None:
    files = example_files()
    assert {f.name for f in files} >= {
        "api_deployment_impact.yaml",
        "database_migration_impact.yaml",
        "feature_flag_analysis.yaml",
        "my_first_workflow.yaml",
    }
    for file in files:
        workflow = compile_document(parse(file.read_text(encoding="utf-8"), name=str(file)))
        assert workflow.steps, file
        assert len(workflow.digest) == 64
        assert [s.index for s in workflow.steps] == list(range(len(workflow.steps)))
        assert len({s.name for s in workflow.steps}) == len(workflow.steps)


def test_analysis_pairs_baseline_and_impact() -> None:
    workflow = compile_text(BASE)
    analysis = workflow.step("analyze_differences").params
    assert isinstance(analysis, Analyze)
    assert (analysis.baseline, analysis.impact) == ("capture_baseline", "capture_impact")
    impact = workflow.step("capture_impact").params
    assert isinstance(impact, Capture) and impact.role == "after"
    assert impact.metrics == ("error_rate", "response_time_p99")


def test_digest_is_canonical_over_the_parsed_document() -> None:
    a = compile_text(BASE)
    b = compile_text(
        BASE.replace("[error_rate, response_time_p99]", "[ error_rate,  response_time_p99 ]")
        + "# a comment\n"
    )
    c = compile_text(BASE.replace("1m", "2m"))
    assert a.digest == b.digest  # formatting and comments do not change the digest
    assert a.digest != c.digest


def test_workflow_is_immutable() -> None:
    workflow = compile_text(BASE)
    with pytest.raises(AttributeError):
        workflow.name = "other"  # type: ignore[misc]


def test_example_dir_is_package_data() -> None:
    # The examples live inside the package (hatch ships every file under afdp/).
    import afdp

    root = Path(afdp.__file__).parent
    assert all(root in f.parents for f in example_files())
