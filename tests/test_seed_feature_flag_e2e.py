"""Example 3 (feature flag A/B), pasted as written, run for real in both directions.

Real parts: the project's demo service simulating user sessions whose group and feature
come from evaluating a real flagd flag file (flagd's fractional rule), Debian's
Prometheus scraping it every half second, the embedded TSA, a real evidence repository and
``afdp run`` through the CLI (``--no-prefect``). ``--time-scale 60`` shrinks the
monitoring hour to 60 s (one sample a second, each the rate over its own 2 s window) and
the baseline's two-minute lookback to 2 s: four scrapes, as the 3 s at 1 s scrapes were
at the former scale 40 (at 80 the 1.5 s baseline could end before the groups' first
series were scraped). Measured at 60: the analysis counts 22-32 effective samples a
side (autocorrelation corrected), the harmful effect's p-values are below 1e-15 and the
no-effect run's above 0.6 with revenue within 0.4 % of control, so both verdicts keep a
wide margin.

The workflow itself flips the flag: ``segment_users`` installs the split (every group
off), ``enable_feature`` turns the treatment on; the demo service reads the file and
the treatment's users get the feature from then on.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from infra import wait_for_series

from afdp.demo.service import DemoService
from afdp.pipeline import flags

SEED = Path(__file__).parent / "seeds" / "example3_feature_flag.yaml"

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus is not installed")


def _ab_run(tmp_path, cli, prometheus_server, keys, tsa, *, effect: str, deployment: str):
    repo = tmp_path / "evidence"
    assert cli("init", str(repo)).code == 0
    flag_file = tmp_path / "flagd" / "flags.flagd.json"
    flag_file.parent.mkdir()
    flag_file.write_text(json.dumps({"flags": {"unrelated": {"state": "ENABLED", "variants": {"on": True}, "defaultVariant": "on"}}}))
    with DemoService(name="shop", flag_file=flag_file, feature_effect=effect) as service:
        prometheus = prometheus_server([service.metrics_url], scrape_interval="500ms")
        wait_for_series(prometheus, 'http_requests_total{service="shop"}')
        result = cli(
            "run", str(SEED), "--service", "shop", "--deployment", deployment, "--repo", str(repo),
            "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--set", f"PROMETHEUS_URL={prometheus}",
            "--set", f"FLAG_FILE={flag_file}", "--time-scale", "60", "--no-prefect", "--json",
        )  # fmt: skip
    assert result.code in (0, 1), result.err
    return repo, json.loads(result.out), flag_file


def _result(repo: Path, deployment: str, step: str) -> dict:
    """The signed result of ``step`` as the evidence branch holds it."""
    from tamper import read_branch

    from afdp.evidence.ledger import decode_envelope

    for entry in read_branch(repo, "shop", deployment):
        if entry.directory and entry.directory.endswith(f"-{step}") and "envelope.json" in entry.files:
            predicate = decode_envelope(entry.files["envelope.json"])["predicate"]
            if predicate.get("result") is not None:
                return predicate["result"]
            return json.loads(entry.files["result.json"])
    raise AssertionError(f"no record of {step}")


@pytest.mark.slow
def test_seed_example3_harmful_feature_is_found_against_control(tmp_path, cli, prometheus_server, keys, tsa, trust_file):
    repo, outcome, flag_file = _ab_run(tmp_path, cli, prometheus_server, keys, tsa, effect="harmful", deployment="ab-bad")
    assert all(s["status"] == "ok" for s in outcome["steps"]), [(s["name"], s["status"], s.get("error")) for s in outcome["steps"]]
    metrics = outcome["analysis"]["metrics"]
    assert metrics["conversion_rate"]["degraded"] is True, metrics["conversion_rate"]
    assert metrics["revenue_per_user"]["degraded"] is True, metrics["revenue_per_user"]
    assert outcome["decision"]["action"] == "alert" and outcome["decision"]["label"] == "degraded"
    # The flag file was really flipped: the treatment's variant is on, the other flag kept.
    document = json.loads(flag_file.read_text())
    definition = document["flags"]["feature_flag_analysis"]
    assert definition["variants"] == {"control_group": False, "treatment_group": True}
    assert "unrelated" in document["flags"]
    salt = flags.deployment_salt("shop", "ab-bad")
    assert definition["targeting"]["fractional"][0] == {"cat": [salt, {"var": "targetingKey"}]}
    # The records say so: the rule, the flag change, the revenue difference and the verdict.
    segment = _result(repo, "ab-bad", "segment_users")
    assert segment["assignment"]["salt"] == salt
    assert segment["assignment"]["bucket_ranges"] == {"control_group": [0, 50], "treatment_group": [50, 100]}
    change = _result(repo, "ab-bad", "enable_feature")["change"]
    assert change["before"]["variants"] == {"control_group": False, "treatment_group": False}
    assert change["after"]["variants"] == {"control_group": False, "treatment_group": True}
    revenue = _result(repo, "ab-bad", "business_impact")["revenue_difference"]
    assert revenue["difference"] < 0 and revenue["high"] < 0, revenue  # the whole interval is a loss
    assert revenue["low"] < revenue["difference"] < revenue["high"]
    ab = _result(repo, "ab-bad", "generate_ab_test_record")["ab_test"]
    assert ab["verdict"].startswith("treatment worse than control"), ab["verdict"]
    assert ab["comparison"]["control"] == "control_group" and ab["comparison"]["treatment"] == "treatment_group"
    verified = cli("verify", "--repo", str(repo), "--service", "shop", "--deployment", "ab-bad", "--trust", str(trust_file), "--json")
    assert verified.code == 0, verified.out


@pytest.mark.slow
def test_seed_example3_feature_without_effect_is_no_false_alarm(tmp_path, cli, prometheus_server, keys, tsa):
    repo, outcome, _ = _ab_run(tmp_path, cli, prometheus_server, keys, tsa, effect="none", deployment="ab-same")
    assert all(s["status"] == "ok" for s in outcome["steps"]), [(s["name"], s["status"], s.get("error")) for s in outcome["steps"]]
    metrics = outcome["analysis"]["metrics"]
    assert not [m for m, v in metrics.items() if v["degraded"]], metrics
    assert outcome["decision"]["action"] == "mark_successful", outcome["decision"]
    revenue = _result(repo, "ab-same", "business_impact")["revenue_difference"]
    assert abs(revenue["relative"]) < 0.05, revenue  # no effect: within noise of zero
    ab = _result(repo, "ab-same", "generate_ab_test_record")["ab_test"]
    assert ab["verdict"] == "treatment not worse than control", ab
