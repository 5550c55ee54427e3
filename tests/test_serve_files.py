"""What afdp serve ships beside its code: the Grafana dashboard in deploy/grafana/ reads only
metrics afdp serve exports; the Prefect automation and deployments in flows/ load."""

from __future__ import annotations

import json
import re
from pathlib import Path

from afdp.service.metrics import ServiceMetrics

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "afdp-dashboard.json"


def exported_names() -> set[str]:
    names = set()
    for metric in ServiceMetrics().registry.collect():
        for sample in metric.samples:
            names.add(sample.name)
        names.add(metric.name)
        names.update({f"{metric.name}_total", f"{metric.name}_bucket"})
    return names


def test_every_panel_queries_a_metric_afdp_serve_exports():
    document = json.loads(DASHBOARD.read_text())
    exported = exported_names()
    used = set()
    for panel in document["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"\b(afdp_[a-z_]+)\b", target["expr"]))
    assert used, "no AFDP metric in the dashboard"
    assert used <= exported, used - exported


def test_a_metric_name_that_does_not_exist_is_caught():
    assert "afdp_no_such_metric_total" not in exported_names()


def test_annotations_come_from_the_afdp_json_datasource():
    document = json.loads(DASHBOARD.read_text())
    (annotation,) = document["annotations"]["list"]
    assert annotation["datasource"]["type"] == "simpod-json-datasource"
    assert annotation["enable"] is True


def test_the_shipped_automation_is_one_prefect_accepts():
    """flows/automations.yaml loads as Prefect automations (what `prefect automation create` does)."""
    import yaml
    from prefect.events.schemas.automations import AutomationCore

    root = DASHBOARD.parents[2]
    document = yaml.safe_load((root / "flows" / "automations.yaml").read_text())
    (automation,) = [AutomationCore.model_validate(a) for a in document["automations"]]
    assert automation.trigger.posture == "Proactive"
    assert automation.actions[0].type == "change-flow-run-state"
    # The window must leave room for Prefect's minimum heartbeat interval (30 s).
    assert automation.trigger.within.total_seconds() >= 60


def test_every_shipped_deployment_has_a_concurrency_limit():
    import yaml

    root = DASHBOARD.parents[2]
    document = yaml.safe_load((root / "flows" / "prefect.yaml").read_text())
    assert all(d["concurrency_limit"]["limit"] >= 1 for d in document["deployments"])
