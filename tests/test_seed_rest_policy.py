"""Issue 12, the rest: what the admission policy decides about notifications and flag files.

* ``notification_channels`` in the policy: a workflow's ``notify:`` may name them, a run
  sends to them (a real loopback receiver), a workflow may not redefine one.
* ``allowed_notification_destinations``: a workflow's own channel that sends elsewhere is
  refused at admission, one located line, exit 1 from ``afdp validate`` and ``afdp run``;
  the URL is compared as it will be used (percent-decoding, dot segments, whole segments,
  port), so another spelling of a forbidden URL is still forbidden.
* ``allowed_flag_targets``: ``enable_feature``'s flagd file (Example 3) must be an allowed
  file or under an allowed directory, resolved as the filesystem will (symlinks, ``..``);
  the runner checks the path again right before it writes (a symlink swapped in after
  admission is refused too).

Real parts: the CLI entry point, a loopback HTTP receiver (tests/test_seed_decisions.py),
the real filesystem with real symlinks, ``afdp run --no-prefect`` with the embedded TSA.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_seed_decisions import SECRET, receiver  # noqa: F401 (a fixture)

from afdp.pipeline.actions import verify_signature
from afdp.pipeline.notify import notify
from afdp.pipeline.runner.request import env_names
from afdp.workflow import load_workflow
from afdp.workflow.findings import PolicyInvalid, PolicyRejected

WORKFLOW = """\
name: notified
workflow:
  - capture_baseline: {{duration: 1m, metrics: [error_rate]}}
  - mark_deployment_time
  - capture_impact: {{duration: 1m}}
  - analyze_differences: {{thresholds: {{error_rate_increase: 1%}}}}
  - decisions
decisions:
  bad:
    condition: error_rate.increase > 5%
    action: rollback
    notify: [{notify}]
{notifications}"""

POLICY = """\
version: 1
name: platform
notification_channels:
  oncall:
    type: webhook
    url: {hooks}/oncall
    secret: ${{env.AFDP_NOTIFY_SECRET}}
allowed_notification_destinations:
  - https://hooks.example.com/afdp/
  - smtp://smtp.example.com:587
  - "*@example.com"
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def workflow(tmp_path: Path, *, notify: str = "oncall", notifications: str = "") -> Path:
    return write(tmp_path, "wf.yaml", WORKFLOW.format(notify=notify, notifications=notifications))


def policy(tmp_path: Path, hooks: str = "https://hooks.example.com/afdp", extra: str = "") -> Path:
    return write(tmp_path, "policy.yaml", POLICY.format(hooks=hooks) + extra)


def own_channel(url: str, name: str = "team") -> str:
    return f"notifications:\n  {name}:\n    type: webhook\n    url: {url}\n"


# --- 1. channels configured in the policy ---------------------------------------------


def test_notify_may_name_a_channel_the_policy_declares(tmp_path, cli):
    wf, pol = workflow(tmp_path), policy(tmp_path)
    assert cli("validate", str(wf), "--policy", str(pol)).code == 0
    # Without that policy the channel exists nowhere: a located error, as before.
    result = cli("validate", str(wf))
    assert result.code == 1
    assert "decisions.bad.notify[0]: channel 'oncall' is not configured" in result.out
    assert "admission policy's notification_channels" in result.out
    plan = cli("plan", str(wf), "--policy", str(pol), "--set", "deployment.service=api", "--set", "deployment.id=d-1")
    assert plan.code == 0, plan.out
    assert "notify oncall: webhook https://hooks.example.com/afdp/oncall, signed (the admission policy's channel)" in plan.out


def test_a_run_sends_to_the_policy_channel(tmp_path, receiver):  # noqa: F811
    admitted = load_workflow(workflow(tmp_path), policy=policy(tmp_path, hooks=receiver.url))
    channel = admitted.channel("oncall")
    assert channel is not None and channel.origin == "policy"
    # The run requires the policy channel's secret like the workflow's own (checked first),
    # and scrubs it from the evidence; a workflow that notifies no policy channel does not.
    assert "AFDP_NOTIFY_SECRET" in env_names(admitted)
    quiet = write(tmp_path, "quiet.yaml", WORKFLOW.format(notify="team", notifications=own_channel("https://hooks.example.com/afdp/t")))
    assert "AFDP_NOTIFY_SECRET" not in env_names(load_workflow(quiet, policy=tmp_path / "policy.yaml"))
    results = notify(
        admitted, ("oncall",), {"action": "rollback", "severity": "critical"},
        values={}, env={"AFDP_NOTIFY_SECRET": SECRET}, payload={"service": "api", "deployment": "d-1"},
    )
    assert [(r.channel, r.status) for r in results] == [("oncall", "ok")]
    (request,) = receiver.requests
    assert request["path"] == "/hooks/oncall"
    assert verify_signature(SECRET.encode(), request["body"], request["headers"]["X-AFDP-Signature"])
    assert json.loads(request["body"])["decision"]["action"] == "rollback"


def test_a_workflow_may_not_redefine_a_policy_channel(tmp_path, cli):
    wf = workflow(tmp_path, notifications=own_channel("https://hooks.example.com/afdp/mine", "oncall"))
    result = cli("validate", str(wf), "--policy", str(policy(tmp_path)))
    assert result.code == 1
    assert "notifications.oncall: notification_channels: channel 'oncall' is the policy's own" in result.out


def test_a_policy_channel_is_checked_like_a_workflow_channel(tmp_path, cli):
    bad = POLICY.format(hooks="https://hooks.example.com/afdp").replace(
        "${env.AFDP_NOTIFY_SECRET}", "plain-text-key"
    )
    result = cli("validate", str(workflow(tmp_path)), "--policy", str(write(tmp_path, "p.yaml", bad)))
    assert result.code == 2
    assert "notification_channels.oncall.secret" in result.err + result.out
    assert "must come from the environment" in result.err + result.out
    with pytest.raises(PolicyInvalid):
        load_workflow(workflow(tmp_path), policy=tmp_path / "p.yaml")


# --- 1. destinations of a workflow's own channels -------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/afdp/team",
        "https://hooks.example.com:443/afdp/team/x?y=1",
        "https://HOOKS.example.com./afdp/a/../b",
    ],
)
def test_own_channels_to_allowed_destinations_are_admitted(tmp_path, url):
    wf = workflow(tmp_path, notify="team", notifications=own_channel(url))
    admitted = load_workflow(wf, policy=policy(tmp_path))
    assert admitted.channel("team").origin == "workflow"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://evil.example.net/afdp/team", "https://evil.example.net/afdp/team"),
        ("https://hooks.example.com/afdp-evil/x", "https://hooks.example.com/afdp-evil/x"),
        ("https://hooks.example.com/afdp/../evil", "https://hooks.example.com/afdp/../evil"),
        ("https://hooks.example.com/afdp/%2e%2e/evil", "https://hooks.example.com/afdp/%2e%2e/evil"),
        ("https://hooks.example.com/afdp%2F..%2Fevil", "https://hooks.example.com/afdp%2F..%2Fevil"),
        ("https://hooks.example.com/afdp/%252e%252e/evil", "https://hooks.example.com/afdp/%252e%252e/evil"),
        ("https://hooks.example.com:8443/afdp/team", "https://hooks.example.com:8443/afdp/team"),
        ("http://hooks.example.com/afdp/team", "http://hooks.example.com/afdp/team"),
        # user-info is credentials, never where a request goes (and never shown)
        ("https://hooks.example.com@evil.example.net/afdp/", "https://evil.example.net/afdp/"),
    ],
)
def test_own_channels_elsewhere_are_refused_in_one_line(tmp_path, cli, url, shown):
    wf = workflow(tmp_path, notify="team", notifications=own_channel(url))
    result = cli("validate", str(wf), "--policy", str(policy(tmp_path)))
    assert result.code == 1, result.out
    lines = [line for line in result.out.splitlines() if "allowed_notification_destinations" in line]
    assert len(lines) == 1, result.out
    assert lines[0].startswith(f"{wf}:16:5: ") and "notifications.team.url" in lines[0]
    assert f"the webhook channel 'team' sends to {shown}, which the policy does not allow" in lines[0]


def test_email_channels_need_the_server_and_every_recipient_allowed(tmp_path):
    def email(host: str, port: int, to: str) -> str:
        return (
            "notifications:\n  team:\n    type: email\n"
            f"    host: {host}\n    port: {port}\n    starttls: true\n    from: afdp@example.com\n    to: {to}\n"
        )

    ok = workflow(tmp_path, notify="team", notifications=email("smtp.example.com", 587, "[ops@example.com]"))
    load_workflow(ok, policy=policy(tmp_path))
    for host, port, to, expected in [
        ("smtp.evil.net", 587, "[ops@example.com]", "sends through smtp://smtp.evil.net:587"),
        ("smtp.example.com", 25, "[ops@example.com]", "sends through smtp://smtp.example.com:25"),
        ("smtp.example.com", 587, "[ops@example.com, spy@evil.net]", "sends to spy@evil.net,"),
        ("smtp.example.com", 587, "[ops@example.com.evil.net]", "sends to ops@example.com.evil.net,"),
    ]:
        bad = workflow(tmp_path, notify="team", notifications=email(host, port, to))
        with pytest.raises(PolicyRejected) as caught:
            load_workflow(bad, policy=policy(tmp_path))
        messages = [f.message for f in caught.value.findings]
        assert len(messages) == 1 and expected in messages[0], messages


def test_an_empty_destination_list_leaves_only_the_policy_channels(tmp_path):
    empty = write(tmp_path, "empty.yaml", "version: 1\nallowed_notification_destinations: []\n")
    wf = workflow(tmp_path, notify="team", notifications=own_channel("https://hooks.example.com/afdp/x"))
    with pytest.raises(PolicyRejected, match="does not allow"):
        load_workflow(wf, policy=empty)


def test_a_destination_known_only_at_run_time_is_denied_unless_allowed(tmp_path):
    wf = workflow(tmp_path, notify="team", notifications=own_channel("https://hooks.example.com/afdp/${deployment.service}"))
    with pytest.raises(PolicyRejected, match=r"cannot be checked before the run: it comes from \$\{deployment.service\}"):
        load_workflow(wf, policy=policy(tmp_path))
    lenient = policy(tmp_path, extra="unresolved_hosts: allow\n")
    admitted = load_workflow(wf, policy=lenient)
    # A run knows its deployment: judged then with the real value.
    from afdp.workflow.policy import RunValues

    admission = admitted.admission
    admission.readmit(admitted, RunValues(deployment={"service": "api", "id": "d-1"}))


def test_afdp_run_refuses_a_channel_to_a_forbidden_destination(tmp_path, cli, keys, tsa):
    wf = workflow(tmp_path, notify="team", notifications=own_channel("https://evil.example.net/x"))
    repo = tmp_path / "evidence"
    assert cli("init", str(repo)).code == 0
    result = cli(
        "run", str(wf), "--service", "api", "--deployment", "d-1", "--repo", str(repo),
        "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--policy", str(policy(tmp_path)), "--no-prefect",
    )
    assert result.code == 1, result.out + result.err
    text = result.out + result.err
    assert "allowed_notification_destinations: the webhook channel 'team' sends to https://evil.example.net/x" in text
    assert "Traceback" not in text
    from afdp.evidence.store import EvidenceStore

    assert list(EvidenceStore(repo).branches()) == []  # nothing was written


# --- 2. the flagd file of Example 3, judged by the policy ----------------------------

EXAMPLE3 = Path(__file__).parent / "seeds" / "example3_feature_flag.yaml"


def flag_policy(tmp_path: Path, *targets: str) -> Path:
    listed = "".join(f"  - {json.dumps(t)}\n" for t in targets)
    return write(tmp_path, "flags-policy.yaml", f"version: 1\nallowed_flag_targets:\n{listed}")


def plan(cli, pol: Path, flag_file: str):
    # afdp plan admits the workflow as written (its default flags.flagd.json, relative:
    # the current directory), then again with the --set values.
    return cli(
        "plan", str(EXAMPLE3), "--policy", str(pol), "--set", "deployment.service=shop",
        "--set", "deployment.id=ab-1", "--set", f"workflow.FLAG_FILE={flag_file}",
    )


def test_the_guides_flag_file_must_be_one_the_policy_names(tmp_path, cli, monkeypatch):
    flags_dir = tmp_path / "flagd"
    flags_dir.mkdir()
    pol = flag_policy(tmp_path, f"{flags_dir}/")
    # The guide's default (flags.flagd.json) is relative: the directory the run starts in.
    monkeypatch.chdir(flags_dir)
    assert cli("validate", str(EXAMPLE3), "--policy", str(pol)).code == 0
    assert plan(cli, pol, str(flags_dir / "shop.flagd.json")).code == 0
    result = plan(cli, pol, str(tmp_path / "shop.flagd.json"))
    assert result.code == 1 and "allowed_flag_targets" in result.out + result.err
    monkeypatch.chdir(tmp_path)
    result = cli("validate", str(EXAMPLE3), "--policy", str(pol))
    assert result.code == 1
    (line,) = [x for x in result.out.splitlines() if "allowed_flag_targets" in x]
    assert f"step 'enable_feature' writes the flag file flags.flagd.json (resolved: {tmp_path}/flags.flagd.json)" in line
    assert f"which the policy does not allow (allowed: {flags_dir}/)" in line


def test_a_flag_file_is_judged_where_the_filesystem_resolves_it(tmp_path, cli, monkeypatch):
    flags_dir, other = tmp_path / "flagd", tmp_path / "etc"
    flags_dir.mkdir()
    other.mkdir()
    monkeypatch.chdir(flags_dir)
    (flags_dir / "link.flagd.json").symlink_to(other / "shadow.json")
    (flags_dir / "subdir").symlink_to(other, target_is_directory=True)
    pol = flag_policy(tmp_path, f"{flags_dir}/", "/nonexistent/exact.flagd.json")
    for spelled, resolved in [
        (f"{flags_dir}/../etc/x.json", f"{other}/x.json"),
        (f"{flags_dir}/link.flagd.json", f"{other}/shadow.json"),
        (f"{flags_dir}/subdir/x.json", f"{other}/x.json"),
        # Lexically this is flagd/etc/x.json, inside the directory; the filesystem follows
        # subdir to etc first, so the two '..' climb out of the test's directory.
        (f"{flags_dir}//./subdir/../../etc/x.json", f"{tmp_path.parent}/etc/x.json"),
    ]:
        result = plan(cli, pol, spelled)
        assert result.code == 1, spelled
        assert f"writes the flag file {spelled} (resolved: {resolved}), which the policy does not allow" in result.err
    assert plan(cli, pol, f"{flags_dir}/a/../shop.json").code == 0
    assert plan(cli, pol, "/nonexistent/exact.flagd.json").code == 0
    assert plan(cli, pol, "/nonexistent/exact.flagd.json.bak").code == 1
    # An allowed directory reached through a symlink is the same directory.
    (tmp_path / "alias").symlink_to(flags_dir, target_is_directory=True)
    assert plan(cli, pol, f"{tmp_path}/alias/shop.json").code == 0
    # The directory itself is no flag file.
    assert plan(cli, pol, str(flags_dir)).code == 1


def test_the_runner_judges_the_flag_file_again_right_before_writing(tmp_path):
    from types import SimpleNamespace

    from afdp.pipeline import flags
    from afdp.pipeline.runner.steps.abtest import _flag_path

    flags_dir, other = tmp_path / "flagd", tmp_path / "etc"
    flags_dir.mkdir()
    other.mkdir()
    link = flags_dir / "live.flagd.json"
    link.symlink_to(flags_dir / "real.flagd.json")
    pol = flag_policy(tmp_path, f"{flags_dir}/")
    admitted = load_workflow(EXAMPLE3, policy=pol, overrides={"FLAG_FILE": str(link)})
    step = admitted.step("enable_feature")
    values = {"workflow": admitted.variable_values({"FLAG_FILE": str(link)})}
    # A test double of the run (as tests/test_seed_feature_flag.py does): the handler
    # reads only its environment and the admitted workflow.
    run = SimpleNamespace(env={}, workflow=admitted)
    assert _flag_path(step.params, values, run) == flags_dir / "real.flagd.json"  # type: ignore[arg-type]
    link.unlink()
    link.symlink_to(other / "passwd.json")  # swapped after admission
    with pytest.raises(flags.FlagError, match=r"allowed_flag_targets: .*resolved: .*etc/passwd.json"):
        _flag_path(step.params, values, run)  # type: ignore[arg-type]


def test_flag_api_urls_and_unknown_paths(tmp_path):
    pol = flag_policy(tmp_path, "https://flags.example.com/api/")
    base = EXAMPLE3.read_text(encoding="utf-8")
    ok = base.replace("percentage: 100%", "percentage: 100%\n        url: https://flags.example.com/api/v1/flags")
    assert load_workflow(write(tmp_path, "ok.yaml", ok), policy=pol)
    bad = base.replace("percentage: 100%", "percentage: 100%\n        url: https://flags.example.com/api/../admin")
    with pytest.raises(PolicyRejected, match="calls the flag API https://flags.example.com/api/../admin, which the policy does not allow"):
        load_workflow(write(tmp_path, "bad.yaml", bad), policy=pol)
    # A flagd file that depends on the deployment cannot be judged by validate: refused
    # unless the policy allows unresolved targets; a run judges it with its deployment.
    late = base.replace("percentage: 100%", "percentage: 100%\n        file: /srv/flagd/${deployment.service}.json")
    with pytest.raises(PolicyRejected, match=r"cannot be checked before the run: it comes from \$\{deployment.service\}"):
        load_workflow(write(tmp_path, "late.yaml", late), policy=pol)
    lenient = write(tmp_path, "lenient.yaml", "version: 1\nunresolved_hosts: allow\nallowed_flag_targets: [/srv/flagd/]\n")
    admitted = load_workflow(write(tmp_path, "late.yaml", late), policy=lenient)
    from afdp.workflow.policy import RunValues

    admitted.admission.readmit(admitted, RunValues(deployment={"service": "shop", "id": "ab-1"}))
    with pytest.raises(PolicyRejected, match="resolved: /srv/x.json"):
        admitted.admission.readmit(admitted, RunValues(deployment={"service": "../x", "id": "ab-1"}))


def test_relative_flag_targets_in_a_policy_are_refused(tmp_path, cli):
    pol = flag_policy(tmp_path, "flags/")
    result = cli("validate", str(EXAMPLE3), "--policy", str(pol))
    assert result.code == 2
    assert "allowed_flag_targets[0]" in result.err + result.out
    assert "an absolute flag file or directory path" in result.err + result.out


def test_the_platform_example_policy_declares_its_channel_and_destinations():
    from afdp.workflow.policy import (
        AllowedFlagTargets,
        AllowedNotificationDestinations,
        load_policy,
    )

    shipped = load_policy(Path(__file__).resolve().parent.parent / "policies" / "admission.platform-example.yaml")
    assert shipped.channel_names == {"platform_oncall"}
    (channel,) = shipped.channels
    assert channel.origin == "policy" and channel.secret is not None
    destinations = shipped.rule(AllowedNotificationDestinations)
    assert destinations is not None and "https://hooks.example.com/afdp/" in destinations.destinations
    flags = shipped.rule(AllowedFlagTargets)
    assert flags is not None and flags.judge_file("/etc/flagd/app.flagd.json") is None
    assert flags.judge_file("/etc/flagd/../passwd.json") is not None


RUN_WORKFLOW = """\
name: notified_run
metrics:
  error_rate:
    query: >-
      sum(rate(http_requests_total{service="${deployment.service}",code=~"5.."}[15s])) /
      sum(rate(http_requests_total{service="${deployment.service}"}[15s]))
    unit: ratio
    better: lower
workflow:
  - capture_baseline: {duration: 5_minutes, metrics: [error_rate]}
  - wait_for_signal: deployment_started
  - mark_deployment_time
  - capture_impact: {duration: 10_minutes}
  - analyze_differences: {thresholds: {error_rate_increase: 1%}}
  - decisions
decisions:
  bad:
    condition: error_rate.increase > 1%
    action: rollback
    notify: [oncall]
"""


@pytest.mark.slow
@pytest.mark.skipif(__import__("shutil").which("prometheus") is None, reason="Debian's prometheus is not installed")
def test_a_real_run_notifies_the_policy_channel(tmp_path, cli, prometheus_server, keys, tsa, receiver, monkeypatch):  # noqa: F811
    """A real run (the demo service's v2 regression, a real Prometheus, ``afdp run``):
    the decision names only ``oncall``, which only the policy declares; the signed
    notification reaches the receiver and its outcome is in the decision's record."""
    import time
    from datetime import UTC

    from infra import wait_for_series

    from afdp.demo.service import DemoService

    monkeypatch.setenv("AFDP_NOTIFY_SECRET", SECRET)
    wf = write(tmp_path, "run.yaml", RUN_WORKFLOW)
    pol = policy(tmp_path, hooks=receiver.url)
    repo = tmp_path / "evidence"
    assert cli("init", str(repo)).code == 0
    with DemoService(name="api", version="v1") as service:
        prometheus = prometheus_server([service.metrics_url])
        wait_for_series(prometheus, 'http_requests_total{service="api"}')
        time.sleep(27)  # v1 history: the baseline window (10 s scaled) and a 15 s rate window
        deployed_at = service.deploy("v2")
        result = cli(
            "run", str(wf), "--service", "api", "--deployment", "d-9", "--repo", str(repo),
            "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--policy", str(pol),
            "--set", f"PROMETHEUS_URL={prometheus}", "--phase", "post",
            "--deployed-at", deployed_at.astimezone(UTC).isoformat(), "--time-scale", "30",
            "--no-prefect", "--json",
        )  # fmt: skip
    assert result.code == 1, result.err  # rollback
    decision = json.loads(result.out)["decision"]
    assert decision["decision"] == "bad" and decision["action"] == "rollback"
    (sent,) = decision["notifications"]
    assert (sent["channel"], sent["type"], sent["status"], sent["signed"]) == ("oncall", "webhook", "ok", True)
    (request,) = receiver.requests
    assert request["path"] == "/hooks/oncall"
    assert verify_signature(SECRET.encode(), request["body"], request["headers"]["X-AFDP-Signature"])
    assert SECRET not in result.out


def test_credentials_in_a_channel_url_do_not_hide_where_it_sends(tmp_path):
    ok = workflow(tmp_path, notify="team", notifications=own_channel("https://${env.HOOK_USER}:${env.HOOK_PASSWORD}@hooks.example.com/afdp/t"))
    assert load_workflow(ok, policy=policy(tmp_path)).channel("team") is not None
    bad = workflow(tmp_path, notify="team", notifications=own_channel("https://u:${env.HOOK_PASSWORD}@evil.example.net/afdp/t"))
    with pytest.raises(PolicyRejected) as caught:
        load_workflow(bad, policy=policy(tmp_path))
    (finding,) = caught.value.findings
    assert "sends to https://evil.example.net/afdp/t, which the policy does not allow" in finding.message
    assert "HOOK_PASSWORD" not in finding.message and "u:" not in finding.message
