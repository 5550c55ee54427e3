"""Reading a policy file: the shipped default (``policies/admission.yaml``), schema validation, and building the rules from its keys."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from afdp.workflow.catalog import STEP_TYPES, StepKind
from afdp.workflow.findings import Finding, PolicyInvalid
from afdp.workflow.loader import Document
from afdp.workflow.model import NotificationChannel
from afdp.workflow.policy.admission import AdmissionPolicy
from afdp.workflow.policy.base import Rule
from afdp.workflow.policy.destinations import (
    AllowedFlagTargets,
    AllowedNotificationDestinations,
    PolicyChannels,
)
from afdp.workflow.policy.hosts import AllowedHosts
from afdp.workflow.policy.rules import (
    AllOf,
    AllowedCollectorTypes,
    AllowedCommands,
    AllowedStepTypes,
    AllowedWorkflows,
    Limits,
    RequiredStep,
    RequiredVariables,
)
from afdp.workflow.units import Duration, UnitError, parse_duration

SCHEMA = "admission-policy.v1"
DEFAULT_POLICY_FILE = "admission.yaml"


def default_policy_path() -> Path:
    """Return the path of the shipped default policy (``policies/admission.yaml``).

    Raises:
        SchemaError: the installation has no policies folder.
    """
    from afdp.evidence.schemas import data_dir

    return data_dir("policies") / DEFAULT_POLICY_FILE


def load_policy(path: str | Path | None = None) -> AdmissionPolicy:
    """Read an admission policy file (the shipped default when ``path`` is None).

    Returns:
        The :class:`AdmissionPolicy`.

    Raises:
        UsageError: the file is missing or unreadable (exit 2).
        PolicyInvalid: the file is not a valid policy; every problem located (exit 2).
    """
    from afdp.workflow.findings import WorkflowInvalid
    from afdp.workflow.loader import load
    from afdp.workflow.structure import check

    file = default_policy_path() if path is None else Path(path)
    try:
        document = load(file, what="admission policy")
    except WorkflowInvalid as exc:
        raise PolicyInvalid(exc.findings) from None
    findings = check(document, SCHEMA)
    if findings:
        raise PolicyInvalid(findings)
    return dataclasses.replace(build_policy(document), raw=document.raw)


def build_policy(document: Document) -> AdmissionPolicy:
    """Build the policy objects from a document that matches the policy schema.

    Raises:
        PolicyInvalid: a duration cannot be parsed (located).
    """
    data: dict[str, Any] = document.data
    rules: list[Rule] = []
    problems: list[Finding] = []

    def duration(key: str) -> Duration | None:
        value = data.get("limits", {}).get(key)
        if value is None:
            return None
        try:
            return parse_duration(value)
        except UnitError as exc:
            problems.append(document.finding(("limits", key), str(exc)))
            return None

    if "allowed_workflows" in data:
        rules.append(AllowedWorkflows(tuple(data["allowed_workflows"])))
    if "allowed_step_types" in data:
        rules.append(AllowedStepTypes(frozenset(data["allowed_step_types"])))
    if "allowed_collector_types" in data:
        rules.append(AllowedCollectorTypes(frozenset(data["allowed_collector_types"])))
    host_lists = any(
        key in data
        for key in (
            "allowed_collector_hosts",
            "allowed_webhook_hosts",
            "allowed_notification_destinations",
            "allowed_flag_targets",
        )
    )
    unresolved = data.get("unresolved_hosts", "deny" if host_lists else "allow")
    if "allowed_collector_hosts" in data:
        rules.append(AllowedHosts(tuple(data["allowed_collector_hosts"]), unresolved, "collectors"))
    if "allowed_webhook_hosts" in data:
        rules.append(
            AllowedHosts(
                tuple(data["allowed_webhook_hosts"]),
                unresolved,
                "webhooks",
                name="allowed_webhook_hosts",
            )
        )
    channels = _policy_channels(document, problems)
    if channels:
        rules.append(PolicyChannels(channels))
    if "allowed_notification_destinations" in data:
        rules.append(
            AllowedNotificationDestinations(tuple(data["allowed_notification_destinations"]), unresolved)
        )
    if "allowed_flag_targets" in data:
        targets = tuple(data["allowed_flag_targets"])
        for index, target in enumerate(targets):
            if "://" not in target and not Path(target).expanduser().is_absolute():
                problems.append(
                    document.finding(
                        ("allowed_flag_targets", index),
                        f"{target!r} is not an absolute path or an http(s) URL: a relative path "
                        "would mean another file in every directory a run starts from",
                    )
                )
        rules.append(AllowedFlagTargets(targets, unresolved))
    if "allowed_action_commands" in data:
        rules.append(AllowedCommands(tuple(data["allowed_action_commands"])))
    if "required_variables" in data:
        rules.append(RequiredVariables(tuple(data["required_variables"])))
    seen: set[str] = set()
    for index, spec in enumerate(data.get("required_steps", [])):
        if spec["name"] in seen:
            problems.append(
                document.finding(
                    ("required_steps", index, "name"),
                    f"requirement {spec['name']!r} is listed twice",
                )
            )
        seen.add(spec["name"])
        for step_type in spec.get("types", ()):
            kind = spec.get("kind")
            if kind is not None and STEP_TYPES[step_type].kind.value != kind:
                problems.append(
                    document.finding(
                        ("required_steps", index, "types"),
                        f"step type {step_type!r} is a {STEP_TYPES[step_type].kind.value} step, "
                        f"never a {kind} step: this requirement could not be met",
                    )
                )
        if "role" in spec and spec.get("kind", "capture") != "capture":
            problems.append(
                document.finding(
                    ("required_steps", index, "role"),
                    "role (before/after the deployment mark) only applies to kind: capture",
                )
            )
        rules.append(
            RequiredStep(
                rule=spec["name"],
                types=frozenset(spec.get("types", ())),
                kind=StepKind(spec["kind"]) if "kind" in spec else None,
                role=spec.get("role"),
                description=spec.get("description", ""),
                min_count=spec.get("min_count", 1),
            )
        )
    if "limits" in data:
        limits = data["limits"]
        rules.append(
            Limits(
                max_duration=duration("max_duration"),
                max_steps=limits.get("max_steps"),
                max_metrics=limits.get("max_metrics"),
                max_capture_duration=duration("max_capture_duration"),
            )
        )
    if problems:
        raise PolicyInvalid(problems)
    return AdmissionPolicy(
        name=data.get("name") or Path(document.name).stem,
        source=document.name,
        rules=AllOf(tuple(rules)),
        description=data.get("description", ""),
        channels=channels,
    )


def _policy_channels(document: Document, problems: list[Finding]) -> tuple[NotificationChannel, ...]:
    """Compile the policy's ``notification_channels`` exactly as a workflow's
    ``notifications:`` (the same checks; ``${deployment.*}`` and ``${env.*}`` only)."""
    raw = document.data.get("notification_channels")
    if not isinstance(raw, dict) or not raw:
        return ()
    from afdp.workflow.compiler.notifications import _Notifications

    compiler = _Notifications(document)
    scope = compiler.base_scope(env=True)
    channels = []
    for name, spec in raw.items():
        if isinstance(spec, dict):
            channel = compiler.channel(
                str(name), spec, scope, section="notification_channels", origin="policy"
            )
            if channel is not None:
                channels.append(channel)
    problems.extend(compiler.findings)
    return tuple(channels)


