"""The guide's cross-service correlation runs, against real services, in both directions.

Real parts: three of the project's demo services (``api_gateway``, ``payment_service``,
``user_service``: each labels its series ``service="<name>"``), Debian's Prometheus
scraping all three every second, the embedded TSA, a real evidence repository and
``afdp run`` through the CLI.

- A cascade: ``payment_service`` is deployed (v2: +40 ms, 5% errors) just before the run
  and ``user_service`` regresses the same way 4 s into the impact window;
  ``api_gateway`` stays on v1. The record names both degraded services in that order,
  with per-service evidence (series, analysis), the branch verifies, and the report has
  every service's rows (``--no-prefect``).
- No change (as a Prefect flow): nobody regresses: no service degraded, no cascade, a
  success. This one is the guide's snippet verbatim with the catalog's
  ``response_time`` (the list form's default reading: ``service="<name>"``). The catalog's ``error_rate`` is left out here:
  judged by the default comparison, its 10% tolerance on the demo's 1% error rate is 0.1
  percentage point, less than the sampling noise of a 1-minute rate over the 15 s of
  history the test has (the default rule's documented behaviour, not this construct's).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from infra import wait_for_series

from afdp.demo.service import DemoService

SEEDS = Path(__file__).parent / "seeds"
SERVICES = ("api_gateway", "payment_service", "user_service")

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus is not installed")

#: The guide's snippet, then the smallest rest: the deployment, a baseline (after the
#: mark: read back from Prometheus history, the window ending at the deployment), an
#: impact window, an analysis.
STEPS = """\
workflow:
  - wait_for: deployment
  - capture: {duration: 5_minutes, metrics: [response_time, error_rate]}
  - capture_impact: {duration: 10_minutes, metrics: [response_time, error_rate]}
  - analyze_differences
"""

#: For the cascade: rates over 3 s (the catalog's [1m] would smear a regression's onset
#: over a minute), addressed per service with ${service.name}.
SHORT_WINDOWS = """\
metrics:
  response_time:
    query: sum(rate(http_request_duration_seconds_sum{service="${service.name}"}[3s])) / sum(rate(http_request_duration_seconds_count{service="${service.name}"}[3s]))
    unit: s
    better: lower
  error_rate:
    query: sum(rate(http_requests_total{service="${service.name}",code=~"5.."}[3s])) / sum(rate(http_requests_total{service="${service.name}"}[3s]))
    unit: ratio
    better: lower
"""


#: For the cascade: how much movement matters, as a team would write it. Judged by the
#: defaults (10% of the baseline), the untouched api_gateway's 1% error rate over 3 s
#: windows is a 0.1-point tolerance, inside its sampling noise: under CI load it was once
#: called degraded. The regressions (+40 ms, 1% -> 5% errors) are far above these limits.
CASCADE_THRESHOLDS = "  - analyze_differences: {thresholds: {response_time_increase: 20ms, error_rate_increase: 2%}}\n"


def _workflow(tmp_path: Path, *, short: bool) -> Path:
    steps = STEPS if short else STEPS.replace("[response_time, error_rate]", "[response_time]")
    if short:
        steps = steps.replace("  - analyze_differences\n", CASCADE_THRESHOLDS)
    path = tmp_path / "services.yaml"
    path.write_text(
        "name: seed_services\n" + (SHORT_WINDOWS if short else "") + (SEEDS / "cross_service.yaml").read_text() + "\n" + steps,
        "utf-8",
    )
    return path


def _run(tmp_path, cli, prometheus_server, keys, tsa, workflow: Path, *, deployment: str, cascade: bool, prefect: bool = False):
    repo = tmp_path / "evidence"
    assert cli("init", str(repo)).code == 0
    started: dict[str, datetime] = {}
    with DemoService(name=SERVICES[0], version="v1") as gateway, DemoService(
        name=SERVICES[1], version="v1", seed=2
    ) as payment, DemoService(name=SERVICES[2], version="v1", seed=3) as users:
        prometheus = prometheus_server([gateway.metrics_url, payment.metrics_url, users.metrics_url])
        for name in SERVICES:
            wait_for_series(prometheus, f'http_requests_total{{service="{name}"}}')
        time.sleep(15)  # v1 history: the baseline is read back, ending at the deployment
        deployed_at = payment.deploy("v2" if cascade else "v1")
        started["payment_service"] = deployed_at
        # user_service regresses a little later: 4 s into the impact window, which opens
        # when the baseline's record is on the branch (however slow the machine is).
        stop = threading.Event()

        def regress_later() -> None:
            branch = f"refs/heads/afdp/payment_service/{deployment}"
            while not stop.wait(0.2):
                if _has_record(repo, branch, "capture"):
                    if not stop.wait(4.0):
                        started["user_service"] = users.deploy("v2" if cascade else "v1")
                    return

        later = threading.Thread(target=regress_later, daemon=True)
        later.start()
        try:
            result = cli(
                "run", str(workflow), "--service", "payment_service", "--deployment", deployment,
                "--repo", str(repo), "--key", str(keys / "dev.key"), "--tsa", tsa.url,
                "--set", f"PROMETHEUS_URL={prometheus}", "--signal", "deployment",
                "--deployed-at", deployed_at.astimezone(UTC).isoformat(),
                "--time-scale", "30", "--json", *(() if prefect else ("--no-prefect",)),
            )  # fmt: skip
        finally:
            stop.set()
            later.join()
    assert result.code in (0, 1), result.err
    return repo, json.loads(result.out), started


def _has_record(repo: Path, branch: str, step: str) -> bool:
    import pygit2

    git = pygit2.Repository(str(repo))
    ref = git.references.get(branch)
    if ref is None:
        return False
    tree = git.get(ref.target).tree
    if "records" not in tree:
        return False
    return any(
        entry.name.split("-", 1)[1] == step
        for folder in git.get(tree["records"].id)
        for entry in git.get(folder.id)
    )


def _step(outcome: dict, name: str) -> dict:
    return next(s for s in outcome["steps"] if s["name"] == name)


def _record(repo: Path, deployment: str, step: str) -> dict:
    """The predicate of ``step``'s record, read from the evidence branch with pygit2."""
    import base64

    import pygit2

    git = pygit2.Repository(str(repo))
    tree = git.get(git.references[f"refs/heads/afdp/payment_service/{deployment}"].target).tree
    records = tree["records/000"]
    name = next(e.name for e in git.get(records.id) if e.name.split("-", 1)[1] == step)
    envelope = json.loads(git.get(tree[f"records/000/{name}/envelope.json"].id).data)
    return json.loads(base64.b64decode(envelope["payload"]))["predicate"]


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.slow
def test_a_cascade_is_recorded_in_order_with_per_service_evidence(tmp_path, cli, prometheus_server, keys, tsa, trust_file):
    workflow = _workflow(tmp_path, short=True)
    repo, outcome, started = _run(tmp_path, cli, prometheus_server, keys, tsa, workflow, deployment="xs-cascade", cascade=True)
    assert "user_service" in started, "the second regression never happened"
    names = [s["name"] for s in outcome["steps"]]
    assert names[-3:] == ["analyze_differences", "correlate_services", "decisions"], names
    # Per-service evidence: every metric captured for every service, in one window.
    impact = _step(outcome, "capture_impact")
    assert impact["status"] == "ok", impact
    analysis = outcome["analysis"]
    assert set(analysis["services"]) == set(SERVICES)
    for service in SERVICES:
        assert f"response_time@{service}" in analysis["metrics"]
    assert analysis["metrics"]["response_time@payment_service"]["degraded"] is True
    assert analysis["metrics"]["response_time@user_service"]["degraded"] is True
    assert analysis["services"]["api_gateway"]["summary"]["any_degradation"] is False
    correlate = _step(outcome, "correlate_services")
    assert correlate["status"] == "ok", correlate
    assert correlate["summary"].startswith("cascade: degraded in order: payment_service -> user_service"), correlate
    assert outcome["decision"]["action"] == "alert" and outcome["decision"]["label"] == "degraded"
    assert "payment_service" in outcome["decision"]["reason"] and "user_service" in outcome["decision"]["reason"]
    verified = cli("verify", "--repo", str(repo), "--service", "payment_service", "--deployment", "xs-cascade", "--trust", str(trust_file))
    assert verified.code == 0, verified.out + verified.err
    # The evidence, as committed: each service's series and rendered query in the one window.
    captured = _record(repo, "xs-cascade", "capture_impact")
    for service in SERVICES:
        for metric in ("response_time", "error_rate"):
            key = f"{metric}@{service}"
            assert captured["result"]["series"][key]["samples"] >= 20, captured["result"]["series"][key]
            assert f'service="{service}"' in captured["provenance"][key]["query"]
        assert captured["result"]["outputs"]["services"][service]["response_time"]["count"] >= 20
    window = captured["result"]["window"]
    # The correlation record: who degraded, when, in what order.
    record = _record(repo, "xs-cascade", "correlate_services")["result"]
    cascade = record["cascade_failures"]
    assert cascade["cascade_detected"] is True and cascade["degraded_in_order"] == ["payment_service", "user_service"]
    assert cascade["services"]["api_gateway"]["degraded"] is False and cascade["services"]["api_gateway"]["onset"] is None
    payment, users = (_time(cascade["services"][s]["onset"]) for s in ("payment_service", "user_service"))
    assert _time(window["start"]) <= payment < users <= _time(window["end"]), (window, cascade["order"])
    # user_service's onset follows its own deployment (the rate window is 3 s).
    assert users >= started["user_service"] - timedelta(seconds=1), (users, started["user_service"])
    assert payment < started["user_service"] + timedelta(seconds=1)
    assert cascade["order"][1]["lag_seconds"] > 0
    dependencies = record["performance_dependencies"]["metrics"]["response_time"]
    assert set(dependencies) == {"api_gateway~payment_service", "api_gateway~user_service", "payment_service~user_service"}
    assert all(e["n"] >= 10 and e["status"] in ("ok", "undefined") for e in dependencies.values()), dependencies
    money = record["business_impact_combined"]
    assert money["loss_per_hour"] is None and money["status"] == "not_enough_data" and money["reason"]
    # The report's baseline-vs-impact table has every service's rows.
    out = tmp_path / "report.html"
    report = cli("report", "--repo", str(repo), "--service", "payment_service", "--deployment", "xs-cascade", "--trust", str(trust_file), "--out", str(out))
    assert report.code == 0, report.out + report.err
    html = out.read_text("utf-8")
    assert all(f"response_time@{service}" in html for service in SERVICES)


@pytest.mark.slow
def test_no_change_no_degradation_no_cascade_a_success(tmp_path, cli, prometheus_server, keys, tsa, trust_file):
    workflow = _workflow(tmp_path, short=False)  # the catalog's metrics: service="<name>"
    # As a Prefect flow (the per-service collections are its tasks); the cascade run is in-process.
    repo, outcome, _ = _run(tmp_path, cli, prometheus_server, keys, tsa, workflow, deployment="xs-same", cascade=False, prefect=True)
    analysis = outcome["analysis"]
    assert analysis["summary"]["any_degradation"] is False, analysis["summary"]
    for service in SERVICES:
        assert analysis["metrics"][f"response_time@{service}"]["degraded"] is False
    correlate = _step(outcome, "correlate_services")
    assert correlate["status"] == "ok" and "no service degraded" in correlate["summary"], correlate
    assert outcome["decision"]["action"] == "mark_successful", outcome["decision"]
    verified = cli("verify", "--repo", str(repo), "--service", "payment_service", "--deployment", "xs-same", "--trust", str(trust_file))
    assert verified.code == 0, verified.out + verified.err
