"""The guide's cross-service correlation (``services:`` + ``correlate:``): how it is read,
planned and refused, and the figures computed from per-service evidence.

Against real services (three demo services and Prometheus): tests/test_seed_services_e2e.py.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from afdp.pipeline.analysis.cascade import (
    NOT_ENOUGH_SAMPLES,
    business_impact_combined,
    cascade_failures,
    change_point,
    limit_level,
    onset,
    performance_dependencies,
    service_money,
)
from afdp.workflow import catalog, load_workflow
from afdp.workflow.findings import WorkflowInvalid
from afdp.workflow.model import Analyze, Capture, CrossService, Threshold
from afdp.workflow.units import parse_quantity

SEEDS = Path(__file__).parent / "seeds"
SNIPPET = (SEEDS / "cross_service.yaml").read_text("utf-8")
SERVICES = ["api_gateway", "payment_service", "user_service"]
REST = """\
workflow:
  - capture_baseline: {duration: 5_minutes, metrics: [response_time, error_rate]}
  - wait_for: deployment
  - capture_impact: {duration: 5_minutes}
  - analyze_differences
"""


def _write(tmp_path: Path, text: str, name: str = "services.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, "utf-8")
    return path


def _seed(tmp_path: Path, *, before: str = "", after: str = "") -> Path:
    return _write(tmp_path, "name: seed_services\n" + before + SNIPPET + "\n" + REST + after)


def _errors(tmp_path: Path, text: str) -> str:
    with pytest.raises(WorkflowInvalid) as caught:
        load_workflow(_write(tmp_path, text))
    return caught.value.diagnostics()


# --- how the guide's snippet is read ------------------------------------------------------


def test_the_snippet_validates_with_notes_saying_how_it_was_read(tmp_path, cli) -> None:
    checked = cli("validate", str(_seed(tmp_path)), "--json")
    assert checked.code == 0, checked.out + checked.err
    report = json.loads(checked.out)
    notes = " | ".join(n["message"] for n in report["notes"])
    assert "once per service (api_gateway, payment_service, user_service) in the same window" in notes
    assert 'service="<name>"' in notes and "compares each service with its own baseline" in notes
    assert "correlate runs as a step 'correlate_services' right after the last analysis" in notes
    for figure in catalog.SERVICE_FIGURES:
        assert figure in notes


def test_the_model_captures_and_analyzes_every_service_then_correlates(tmp_path) -> None:
    workflow = load_workflow(_seed(tmp_path))
    assert workflow.services is not None and workflow.services.names == tuple(SERVICES)
    assert workflow.services.figures == catalog.SERVICE_FIGURES
    names = [s.name for s in workflow.steps]
    assert names == ["capture_baseline", "wait_for", "capture_impact", "analyze_differences", "correlate_services", "decisions"]
    for step in ("capture_baseline", "capture_impact"):
        params = workflow.step(step).params
        assert isinstance(params, Capture) and params.services == tuple(SERVICES)
    analysis = workflow.step("analyze_differences").params
    assert isinstance(analysis, Analyze) and analysis.services == tuple(SERVICES)
    correlate = workflow.step("correlate_services")
    assert correlate.kind is catalog.StepKind.SERVICES
    assert isinstance(correlate.params, CrossService)
    assert correlate.params.analysis == "analyze_differences" and correlate.params.impact == "capture_impact"
    assert correlate.params.min_samples == catalog.MIN_DEPENDENCE_SAMPLES


def test_the_plan_shows_each_services_queries_and_the_correlation(tmp_path, cli) -> None:
    path = _seed(tmp_path)
    planned = cli("plan", str(path), "--set", "deployment.service=payment_service", "--set", "deployment.id=d-1", "--json")
    assert planned.code == 0, planned.out + planned.err
    plan = json.loads(planned.out)
    services = plan["services"]
    assert services["names"] == SERVICES and services["step"] == "correlate_services"
    for service in SERVICES:
        query = services["metrics"][service]["response_time"]
        assert f'service="{service}"' in query
        assert all(f'service="{other}"' not in query for other in SERVICES if other != service)
    steps = {s["name"]: s for p in plan["phases"] for s in p["steps"]}
    assert steps["capture_impact"]["params"]["services"] == SERVICES
    assert steps["correlate_services"]["kind"] == "services"
    assert steps["correlate_services"]["params"]["figures"] == list(catalog.SERVICE_FIGURES)
    human = cli("plan", str(path), "--set", "deployment.service=payment_service", "--set", "deployment.id=d-1")
    assert human.code == 0
    assert "services (captured in the same windows; correlate: cascade_failures" in human.out
    assert any(line.split()[:2] == ["user_service", "error_rate"] for line in human.out.splitlines())


def test_service_name_placeholder_addresses_a_declared_metric(tmp_path) -> None:
    metrics = (
        "metrics:\n  checkout_latency:\n    query: avg(latency_seconds{app=\"${service.name}\"})\n    unit: s\n    better: lower\n"
    )
    text = "name: x\n" + metrics + SNIPPET + "\n" + REST.replace("[response_time, error_rate]", "[checkout_latency]")
    loaded = load_workflow(_write(tmp_path, text))
    assert loaded.step("capture_impact").params.services == tuple(SERVICES)  # type: ignore[union-attr]


def test_services_without_correlate_capture_and_analyze_but_add_no_step(tmp_path) -> None:
    text = "name: x\nservices: [a_svc, b_svc]\n" + REST
    workflow = load_workflow(_write(tmp_path, text))
    assert [s.name for s in workflow.steps][-2:] == ["analyze_differences", "decisions"]
    assert workflow.step("analyze_differences").params.services == ("a_svc", "b_svc")  # type: ignore[union-attr]
    assert any("nothing is correlated" in n.message for n in workflow.notes)


# --- what is refused, each with its reason ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\ncorrelate: [cascade_failures]\n" + REST, "correlate: correlates the services listed under services:"),
        ("name: x\nservices: [only_one]\ncorrelate: [cascade_failures]\n" + REST, "services"),
        ("name: x\nservices: [api-gateway, users]\ncorrelate: [cascade_failures]\n" + REST, "letters, digits and _"),
        ("name: x\nservices: [a_svc, b_svc]\ncorrelate: [blast_radius]\n" + REST, "correlate[0]"),
        ("name: x\nservices: [deployment, b_svc]\ncorrelate: [cascade_failures]\n" + REST, "'deployment' is a reserved name"),
        ("name: x\nservices: [any_service_degraded, b_svc]\n" + REST, "'any_service_degraded' is a reserved name"),
        (
            "name: x\nservices: [a_svc, b_svc]\ncorrelate: [cascade_failures]\n"
            "workflow:\n  - capture_baseline: {duration: 1m, metrics: [error_rate]}\n  - wait_for: deployment\n"
            "  - capture_impact: {duration: 1m}\n",
            "correlate: needs an analysis to correlate",
        ),
        (
            "name: x\nservices: [a_svc, b_svc]\nmetrics:\n  queue_depth: {query: 'sum(queue_depth)', unit: count}\n"
            + REST.replace("[response_time, error_rate]", "[queue_depth]"),
            "its query and labels name no service: every service would get the same series",
        ),
        (
            "name: x\nservices: [a_svc, b_svc]\ncollectors:\n  node: {type: scrape, url: 'http://${deployment.service}.internal/metrics'}\n"
            "metrics:\n  busy: {collector: node, metric: busy_workers, labels: {service: '${service.name}'}}\n"
            + REST.replace("[response_time, error_rate]", "[busy]"),
            "whose address depends on ${deployment.service}",
        ),
        (
            "name: x\nservices: [a_svc, b_svc]\ncollectors:\n  node: {type: scrape, url: 'http://${service.name}.internal/metrics'}\n"
            "metrics:\n  busy: {collector: node, metric: busy_workers, labels: {service: '${service.name}'}}\n"
            + REST.replace("[response_time, error_rate]", "[busy]"),
            "collectors.node.url: undefined name 'service'",
        ),
        (
            "name: x\nmetrics:\n  busy: {query: 'sum(busy{app=\"${service.name}\"})', unit: count}\n"
            + REST.replace("[response_time, error_rate]", "[busy]"),
            "measured per service (${service.name}); list the services under services:",
        ),
        (
            "name: x\nservices: [a_svc, b_svc]\ncorrelate: [cascade_failures]\n" + REST
            + "stages:\n  canary: {traffic: 1%, duration: 1m}\n",
            "services: and stages: cannot be combined",
        ),
        (
            "name: x\nservices: [a_svc, error_rate]\n" + REST,
            "metric 'error_rate' has the name of a listed service",
        ),
    ],
)
def test_what_cannot_be_read_is_refused_with_a_reason(tmp_path, text: str, message: str) -> None:
    assert message in _errors(tmp_path, text)


# --- conditions -----------------------------------------------------------------------------


def _with_decision(condition: str) -> str:
    return (
        "name: x\n" + SNIPPET + "\n" + REST + "  - decisions\n"
        f"decisions:\n  d:\n    condition: \"{condition}\"\n    action: rollback\n"
    )


@pytest.mark.parametrize(
    "condition",
    [
        "cascade_detected",
        "any_service_degraded and not api_gateway.degraded",
        "payment_service.error_rate.degraded or user_service.response_time.increase > 10ms",
        "'user_service' in degraded_services and first_degraded == 'payment_service'",
        "business_impact_combined.loss_per_hour > $1000_per_hour",
        "business_impact_combined.complete and 'a_svc' not in business_impact_combined.missing",
        "any_degradation and user_service.any_degradation",
    ],
)
def test_decisions_read_the_per_service_and_cross_service_names(tmp_path, condition: str) -> None:
    workflow = load_workflow(_write(tmp_path, _with_decision(condition)))
    assert workflow.decisions[0].condition.source == condition


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("error_rate.degraded", "error_rate"),  # per service only: user_service.error_rate...
        ("payment_service.latency.degraded", "latency"),
        ("ledger_service.degraded", "ledger_service"),
        ("latency_increase > 10ms", "latency_increase reads a metric"),
    ],
)
def test_names_a_services_workflow_does_not_have_are_refused(tmp_path, condition: str, message: str) -> None:
    assert message in _errors(tmp_path, _with_decision(condition))


def test_per_service_outputs_are_typed_for_conditions(tmp_path) -> None:
    from afdp.pipeline.runner.outputs import typed_outputs
    from afdp.workflow.units import Quantity

    workflow = load_workflow(_write(tmp_path, _with_decision("payment_service.response_time.increase > 10ms")))
    step = workflow.step("analyze_differences")
    plain = {
        "payment_service": {"response_time": {"increase": 0.04, "degraded": True}, "degraded": True},
        "api_gateway": {"response_time": {"increase": 0.001, "degraded": False}, "degraded": False},
        "any_degradation": True,
    }
    typed = typed_outputs(workflow, step, plain)
    increase = typed["payment_service"]["response_time"]["increase"]
    assert isinstance(increase, Quantity) and increase.unit.dimension == "time"
    condition = workflow.decisions[0].condition
    assert condition.evaluate(typed) is True
    assert condition.evaluate({**typed, "payment_service": typed["api_gateway"]}) is False
    money = typed_outputs(
        workflow,
        workflow.step("correlate_services"),
        {"business_impact_combined": {"loss_per_hour": 1500.0, "currency": "$", "currency_dimension": "USD"}},
    )["business_impact_combined"]["loss_per_hour"]
    assert parse_quantity("$1000_per_hour").base < money.base < parse_quantity("$2000_per_hour").base


# --- the figures ----------------------------------------------------------------------------


def _noise(seed: int, n: int, level: float, spread: float) -> list[float]:
    rng = random.Random(seed)
    return [level + rng.gauss(0, spread) for _ in range(n)]


def test_the_change_point_is_where_the_level_shifts() -> None:
    baseline = _noise(1, 30, 0.045, 0.002)
    impact = _noise(2, 12, 0.045, 0.002) + _noise(3, 28, 0.085, 0.002)
    assert change_point(baseline, impact, 3) == 12
    # Present from the start: the first impact sample.
    assert change_point(baseline, _noise(4, 20, 0.085, 0.002), 3) == 0
    # Too short to hold a later segment.
    assert change_point(baseline, [0.1, 0.1], 3) is None


def test_an_onset_needs_the_shift_beyond_the_limit_not_a_noise_spike() -> None:
    baseline = _noise(1, 30, 0.045, 0.002)
    times = [1000.0 + i for i in range(40)]
    shifted = list(zip(times, _noise(2, 12, 0.045, 0.002) + _noise(3, 28, 0.085, 0.002), strict=True))
    assert onset(baseline, shifted, 0.0495, 1, 3) == 1012.0
    # The same noise with one spike: no shift beyond the limit, no onset.
    flat = _noise(5, 40, 0.045, 0.002)
    flat[7] = 0.2
    assert onset(baseline, list(zip(times, flat, strict=True)), 0.0495, 1, 3) is None
    # Better higher: a fall is the worse way.
    fallen = list(zip(times, _noise(6, 10, 100, 1) + _noise(7, 30, 80, 1), strict=True))
    assert onset(_noise(8, 30, 100, 1), fallen, 90.0, -1, 3) == 1010.0


def _threshold(metric: str, direction: str, limit: str, mode: str) -> Threshold:
    return Threshold(metric, direction, parse_quantity(limit), mode, f"{metric}_{direction}")  # type: ignore[arg-type]


def test_the_limit_is_where_the_watching_threshold_starts_to_be_exceeded() -> None:
    metric = {"metric": "rt", "better": "lower", "baseline": 0.05, "statistics": {"baseline": {"max": 0.06, "min": 0.04}}}
    assert limit_level(metric, [_threshold("rt", "increase", "10ms", "absolute")], 1.0)[0] == pytest.approx(0.06)
    assert limit_level(metric, [_threshold("rt", "increase", "20%", "relative")], 1.0)[0] == pytest.approx(0.06)
    assert limit_level(metric, [_threshold("rt", "increase", "2x", "factor")], 1.0)[0] == pytest.approx(0.10)
    # Of several, the one crossed first.
    both = [_threshold("rt", "increase", "2x", "factor"), _threshold("rt", "change", "10%", "relative")]
    assert limit_level(metric, both, 1.0)[0] == pytest.approx(0.055)
    # A threshold on the other direction does not watch; the test alone: the baseline's worst.
    level, how = limit_level(metric, [_threshold("rt", "decrease", "10%", "relative")], 1.0)
    assert level == 0.06 and "worst sample" in how
    higher = {**metric, "better": "higher"}
    assert limit_level(higher, [_threshold("rt", "decrease", "10%", "relative")], 1.0)[0] == pytest.approx(0.045)
    assert limit_level({"metric": "rt", "baseline": None}, [], 1.0) == (None, "no baseline value")


def _document(degraded: dict[str, bool | None], baseline: float = 0.045) -> dict:
    any_degradation = True if any(v is True for v in degraded.values()) else (None if None in degraded.values() else False)
    return {
        "summary": {"any_degradation": any_degradation},
        "metrics": {
            m: {"metric": m, "better": "lower", "baseline": baseline, "degraded": d, "unit": {"factor": 1.0}}
            for m, d in degraded.items()
        },
    }


def test_the_cascade_orders_the_degraded_services_by_onset() -> None:
    times = [1000.0 + i for i in range(40)]
    base = {"rt": _noise(1, 30, 0.045, 0.002)}
    series = {
        "gateway": {"rt": list(zip(times, _noise(2, 40, 0.045, 0.002), strict=True))},
        "payment": {"rt": list(zip(times, _noise(3, 5, 0.045, 0.002) + _noise(4, 35, 0.085, 0.002), strict=True))},
        "users": {"rt": list(zip(times, _noise(5, 20, 0.045, 0.002) + _noise(6, 20, 0.085, 0.002), strict=True))},
    }
    analyses = {"gateway": _document({"rt": False}), "payment": _document({"rt": True}), "users": _document({"rt": True})}
    thresholds = [_threshold("rt", "increase", "10%", "relative")]
    baselines = {s: base for s in series}
    result = cascade_failures(["gateway", "users", "payment"], analyses, series, thresholds, baselines=baselines, min_segment=3)
    assert result["cascade_detected"] is True
    assert result["degraded_in_order"] == ["payment", "users"] and result["first_degraded"] == "payment"
    assert [o["lag_seconds"] for o in result["order"]] == [0, 15.0]
    assert result["services"]["users"]["onset"] == "1970-01-01T00:17:00Z"
    assert result["services"]["gateway"]["onset"] is None and result["services"]["gateway"]["degraded"] is False
    # One service degraded: no cascade. One degraded, one unknown: it cannot be ruled out.
    single = {**analyses, "users": _document({"rt": False})}
    assert cascade_failures(["gateway", "users", "payment"], single, series, thresholds, baselines=baselines, min_segment=3)["cascade_detected"] is False
    unknown = {**analyses, "users": _document({"rt": None})}
    maybe = cascade_failures(["gateway", "users", "payment"], unknown, series, thresholds, baselines=baselines, min_segment=3)
    assert maybe["cascade_detected"] is None and maybe["not_judged"] == ["users"] and maybe["reasons"]
    # Degraded (the analysis says so) but no shift found in the window: listed last, with why.
    flat = {**series, "users": {"rt": list(zip(times, _noise(7, 40, 0.045, 0.002), strict=True))}}
    late = cascade_failures(["users", "payment"], analyses, flat, thresholds, baselines=baselines, min_segment=3)
    assert late["degraded_in_order"] == ["payment", "users"]
    assert late["order"][1]["onset"] is None and "no shift" in late["services"]["users"]["metrics"]["rt"]["reason"]
    # Nobody degraded.
    calm = {s: _document({"rt": False}) for s in series}
    none = cascade_failures(list(series), calm, series, thresholds, baselines=baselines, min_segment=3)
    assert none["cascade_detected"] is False and none["degraded_in_order"] == [] and none["first_degraded"] is None


def test_dependencies_pair_by_time_and_say_when_samples_are_too_few() -> None:
    times = [1000.0 + i for i in range(30)]
    driver = _noise(1, 30, 10, 3)
    series = {
        "a": {"rt": list(zip(times, driver, strict=True))},
        # Sampled a little later each time, moving with a.
        "b": {"rt": [(t + 0.2, 2 * v + 1) for t, v in zip(times, driver, strict=True)]},
        "c": {"rt": [(t, 5.0) for t in times]},
        "d": {"rt": [(t, v) for t, v in zip(times[:5], driver[:5], strict=True)]},
    }
    result = performance_dependencies(["a", "b", "c", "d"], ["rt"], series, minimum=10)["metrics"]["rt"]
    assert result["a~b"]["status"] == "ok" and result["a~b"]["n"] == 30 and result["a~b"]["r"] == pytest.approx(1.0)
    assert result["a~c"]["status"] == "undefined" and result["a~c"]["r"] is None
    assert result["a~d"]["status"] == NOT_ENOUGH_SAMPLES and result["a~d"]["n"] == 5 and result["a~d"]["r"] is None
    # Samples too far apart in time are not paired.
    apart = {"a": series["a"], "b": {"rt": [(t + 100, v) for t, v in series["a"]["rt"]]}}
    assert performance_dependencies(["a", "b"], ["rt"], apart, minimum=10)["metrics"]["rt"]["a~b"]["n"] == 0


def _money_document(baseline: float | None, impact: float | None, symbol: str = "$/hour", dimension: str = "USD/time") -> dict:
    factor = 1 / 3600
    return {
        "metrics": {
            "revenue_per_hour": {"unit": {"symbol": symbol, "dimension": dimension, "factor": factor}, "baseline": baseline, "impact": impact}
        }
    }


def test_the_combined_business_impact_sums_what_is_known() -> None:
    analyses = {
        "payment": _money_document(10_000, 8_000),
        "users": {"analyzers": [{"type": "business_impact", "status": "ok", "name": "bi", "loss_per_hour": 500.0, "currency": "$", "currency_dimension": "USD"}]},
        "gateway": {"metrics": {"response_time": {"unit": {"symbol": "s", "dimension": "time", "factor": 1.0}}}},
    }
    assert service_money(analyses["payment"])["loss_per_hour"] == pytest.approx(2000.0)
    combined = business_impact_combined(["gateway", "payment", "users"], analyses)
    assert combined["status"] == "ok" and combined["loss_per_hour"] == pytest.approx(2500.0) and combined["currency"] == "$"
    assert combined["included"] == ["payment", "users"] and combined["missing"] == ["gateway"] and not combined["complete"]
    assert "not known for gateway" in combined["reason"]
    nothing = business_impact_combined(["gateway"], {"gateway": analyses["gateway"]})
    assert nothing["loss_per_hour"] is None and "no service's money impact is known" in nothing["reason"]
    no_data = business_impact_combined(["payment"], {"payment": _money_document(None, 8_000)})
    assert no_data["loss_per_hour"] is None and "no data on one side" in no_data["reason"]
    mixed = business_impact_combined(
        ["payment", "eu"], {"payment": analyses["payment"], "eu": _money_document(9_000, 9_000, "€/hour", "EUR/time")}
    )
    assert mixed["status"] == "not_comparable" and mixed["loss_per_hour"] is None


# --- a run, fast: a real /metrics page on loopback ------------------------------------------


class _Exporter:
    """``busy_workers{service=...}`` (and ``revenue_dollars_per_hour{service=...}`` with
    ``revenue``) for the given services, on a loopback port."""

    def __init__(self, levels: dict[str, float], revenue: dict[str, float] | None = None) -> None:
        import threading
        from http.server import ThreadingHTTPServer

        from prometheus_client import CollectorRegistry, Gauge
        from prometheus_client.exposition import MetricsHandler

        self.registry = CollectorRegistry()
        self.gauge = Gauge("busy_workers", "Busy workers.", ["service"], registry=self.registry)
        self.revenue = Gauge("revenue_dollars_per_hour", "Revenue.", ["service"], registry=self.registry)
        for service, level in levels.items():
            self.gauge.labels(service=service).set(level)
        for service, level in (revenue or {}).items():
            self.revenue.labels(service=service).set(level)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), MetricsHandler.factory(self.registry))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _scrape_workflow(tmp_path: Path, url: str) -> Path:
    return _write(
        tmp_path,
        "name: busy_services\nservices: [a_svc, b_svc]\ncorrelate: [cascade_failures, business_impact_combined]\n"
        f"collectors:\n  node: {{type: scrape, url: '{url}'}}\n"
        "metrics:\n  busy: {collector: node, metric: busy_workers, labels: {service: '${service.name}'}, unit: count, better: lower}\n"
        "workflow:\n  - capture_baseline: [busy]\n  - mark_deployment_time\n  - capture_impact: [busy]\n  - analyze_differences\n",
    )


def _run_once(tmp_path: Path, cli, keys, tsa, levels: dict[str, float], deployment: str) -> tuple[Path, dict]:
    repo = tmp_path / "evidence"
    assert cli("init", str(repo)).code == 0
    exporter = _Exporter(levels)
    try:
        result = cli(
            "run", str(_scrape_workflow(tmp_path, exporter.url)), "--service", "a_svc", "--deployment", deployment,
            "--repo", str(repo), "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--no-prefect", "--json",
        )  # fmt: skip
    finally:
        exporter.close()
    assert result.code in (0, 1), result.out + result.err
    return repo, json.loads(result.out)


def test_a_run_records_each_service_and_the_correlation(tmp_path, cli, keys, tsa, trust_file) -> None:
    repo, outcome = _run_once(tmp_path, cli, keys, tsa, {"a_svc": 3, "b_svc": 7}, "busy-1")
    steps = {s["name"]: s for s in outcome["steps"]}
    assert [s["name"] for s in outcome["steps"]][-3:] == ["analyze_differences", "correlate_services", "decisions"]
    assert steps["capture_impact"]["status"] == "ok"
    assert "per service (a_svc, b_svc)" in steps["capture_impact"]["summary"]
    analysis = outcome["analysis"]
    assert analysis["metrics"]["busy@a_svc"]["baseline"] == 3 and analysis["metrics"]["busy@b_svc"]["impact"] == 7
    assert analysis["summary"]["any_degradation"] is False and set(analysis["services"]) == {"a_svc", "b_svc"}
    assert steps["analyze_differences"]["summary"] == "a_svc ok; b_svc ok"
    assert steps["correlate_services"]["status"] == "ok"
    assert "no service degraded" in steps["correlate_services"]["summary"]
    assert "combined business impact unknown" in steps["correlate_services"]["summary"]
    assert outcome["decision"]["action"] == "mark_successful"
    verified = cli("verify", "--repo", str(repo), "--service", "a_svc", "--deployment", "busy-1", "--trust", str(trust_file))
    assert verified.code == 0, verified.out + verified.err
    # The committed analysis is an analysis.v1 document (per service under services).
    from afdp.errors import SchemaError
    from afdp.evidence.schemas import validate

    document = _predicate(repo, "a_svc", "busy-1", "analyze_differences")["result"]["analysis"]
    validate("analysis.v1", document)
    assert document["services"]["b_svc"]["summary"]["any_degradation"] is False
    with pytest.raises(SchemaError):
        validate("analysis.v1", {**document, "services": {"b_svc": {"verdict": "fine"}}})
    correlation = _predicate(repo, "a_svc", "busy-1", "correlate_services")["result"]
    assert correlation["cascade_failures"]["degraded_in_order"] == []
    assert correlation["business_impact_combined"]["missing"] == ["a_svc", "b_svc"]


def _predicate(repo: Path, service: str, deployment: str, step: str) -> dict:
    """The predicate of ``step``'s record, read from the evidence branch with pygit2."""
    import base64

    import pygit2

    git = pygit2.Repository(str(repo))
    tree = git.get(git.references[f"refs/heads/afdp/{service}/{deployment}"].target).tree
    name = next(e.name for e in git.get(tree["records/000"].id) if e.name.split("-", 1)[1] == step)
    envelope = json.loads(git.get(tree[f"records/000/{name}/envelope.json"].id).data)
    return json.loads(base64.b64decode(envelope["payload"]))["predicate"]


def test_a_service_without_its_series_fails_the_capture_and_is_no_success(tmp_path, cli, keys, tsa) -> None:
    _, outcome = _run_once(tmp_path, cli, keys, tsa, {"a_svc": 3}, "busy-2")
    steps = {s["name"]: s for s in outcome["steps"]}
    assert steps["capture_impact"]["status"] == "failed" and "busy@b_svc" in steps["capture_impact"]["summary"]
    assert outcome["analysis"]["summary"]["inconclusive"] == ["busy@b_svc"]
    assert outcome["decision"]["action"] == "alert" and outcome["decision"]["action"] != "mark_successful"


def test_a_policy_may_require_the_cross_service_step(tmp_path, cli) -> None:
    policy = _write(
        tmp_path,
        "version: 1\nrequired_steps:\n  - {name: cross_service, kind: services, description: every run correlates its services}\n",
        "policy.yaml",
    )
    assert cli("validate", str(_seed(tmp_path)), "--policy", str(policy)).code == 0
    without = _write(tmp_path, "name: x\nservices: [a_svc, b_svc]\n" + REST, "plain.yaml")
    refused = cli("validate", str(without), "--policy", str(policy))
    assert refused.code == 1 and "required_steps.cross_service" in refused.out + refused.err


def test_phase_post_continues_per_service_and_judges_each_service(tmp_path, cli, keys, tsa, trust_file) -> None:
    # --phase pre before the deploy, --phase post after it: the second run reads the
    # baseline's per-service series back from the branch.
    repo = tmp_path / "evidence"
    assert cli("init", str(repo)).code == 0
    exporter = _Exporter({"a_svc": 3, "b_svc": 3})
    try:
        workflow = _scrape_workflow(tmp_path, exporter.url)
        common = ("--service", "a_svc", "--deployment", "busy-3", "--repo", str(repo), "--key", str(keys / "dev.key"),
                  "--tsa", tsa.url, "--no-prefect", "--json")  # fmt: skip
        pre = cli("run", str(workflow), "--phase", "pre", *common)
        assert pre.code == 0, pre.out + pre.err
        exporter.gauge.labels(service="b_svc").set(9)  # b_svc's deploy triples its busy workers
        post = cli("run", str(workflow), "--phase", "post", *common)
    finally:
        exporter.close()
    assert post.code == 0, post.out + post.err
    outcome = json.loads(post.out)
    assert outcome["analysis"]["metrics"]["busy@b_svc"]["degraded"] is True
    assert outcome["analysis"]["metrics"]["busy@a_svc"]["degraded"] is False
    steps = {s["name"]: s for s in outcome["steps"]}
    assert steps["analyze_differences"]["summary"] == "a_svc ok; b_svc degraded (busy)"
    # One sample a side: b_svc degraded, but no series to place an onset in.
    correlation = _predicate(repo, "a_svc", "busy-3", "correlate_services")["result"]["cascade_failures"]
    assert correlation["degraded_in_order"] == ["b_svc"] and correlation["cascade_detected"] is False
    assert correlation["order"][0]["onset"] is None and correlation["reasons"]
    assert outcome["decision"]["action"] == "alert" and "b_svc" in outcome["decision"]["reason"]
    verified = cli("verify", "--repo", str(repo), "--service", "a_svc", "--deployment", "busy-3", "--trust", str(trust_file))
    assert verified.code == 0, verified.out + verified.err


def test_a_policys_metric_limit_counts_each_services_series(tmp_path, cli) -> None:
    policy = _write(tmp_path, "version: 1\nlimits: {max_metrics: 4}\n", "policy.yaml")
    refused = cli("validate", str(_seed(tmp_path)), "--policy", str(policy))  # 2 metrics x 3 services
    assert refused.code == 1 and "captures 6 metrics (each service's series counts" in refused.out + refused.err
    one = _write(tmp_path, "name: x\n" + REST, "one.yaml")
    assert cli("validate", str(one), "--policy", str(policy)).code == 0


def test_decisions_act_on_the_combined_money_lost(tmp_path, cli, keys, tsa) -> None:
    repo = tmp_path / "evidence"
    assert cli("init", str(repo)).code == 0
    exporter = _Exporter({"a_svc": 3, "b_svc": 3}, revenue={"a_svc": 1000, "b_svc": 2000})
    try:
        path = _write(
            tmp_path,
            "name: money\nservices: [a_svc, b_svc]\ncorrelate: [business_impact_combined, cascade_failures]\n"
            f"collectors:\n  node: {{type: scrape, url: '{exporter.url}'}}\n"
            "metrics:\n  busy: {collector: node, metric: busy_workers, labels: {service: '${service.name}'}, unit: count, better: lower}\n"
            "  revenue: {collector: node, metric: revenue_dollars_per_hour, labels: {service: '${service.name}'}, unit: $/hour, better: higher}\n"
            "workflow:\n  - capture_baseline: [busy, revenue]\n  - mark_deployment_time\n  - capture_impact: [busy, revenue]\n"
            "  - analyze_differences\n  - decisions\n"
            "decisions:\n  money:\n    condition: business_impact_combined.complete and business_impact_combined.loss_per_hour > $500_per_hour\n    action: rollback\n",
        )
        common = ("--service", "a_svc", "--deployment", "money-1", "--repo", str(repo), "--key", str(keys / "dev.key"),
                  "--tsa", tsa.url, "--no-prefect", "--json")  # fmt: skip
        assert cli("run", str(path), "--phase", "pre", *common).code == 0
        exporter.revenue.labels(service="a_svc").set(800)  # -200 $/h
        exporter.revenue.labels(service="b_svc").set(1600)  # -400 $/h
        post = cli("run", str(path), "--phase", "post", *common)
    finally:
        exporter.close()
    assert post.code == 1, post.out + post.err  # rollback
    outcome = json.loads(post.out)
    assert outcome["decision"]["decision"] == "money" and outcome["decision"]["action"] == "rollback"
    evaluated = outcome["decision"]["evaluated"][0]
    assert evaluated["result"] is True and evaluated["error"] is None
    money = _predicate(repo, "a_svc", "money-1", "correlate_services")["result"]["business_impact_combined"]
    assert money["loss_per_hour"] == pytest.approx(600.0) and money["currency"] == "$" and money["complete"] is True
    assert money["services"]["b_svc"]["source"] == "metric revenue (baseline - impact, per hour)"
