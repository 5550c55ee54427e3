"""Admission policy: what a valid workflow may do before it is allowed to run.

A platform team writes a policy file (schema: ``evidence-schema/admission-policy.v1
.schema.json``; the shipped default is ``policies/admission.yaml``). Each key is one
rule, and each rule is a small object with ``check(workflow, locate, known) -> findings``;
:class:`AllOf` combines them, as sigstore's ``verify/policy.py`` combines certificate
policies. Unlike a verification policy, an admission check reports *every* violation at
once, each as a :class:`~afdp.workflow.findings.Finding` located in the workflow file and
naming its rule (``rule`` field; the message starts with it).

Rules (all optional; an omitted rule allows everything it governs):

1. ``allowed_workflows``: workflow names (glob patterns).
2. ``allowed_step_types``: the only step types the workflow may use.
3. ``allowed_collector_types`` and ``allowed_collector_hosts``: what collectors are and
   whom they reach; ``unresolved_hosts`` decides URLs whose host is only known at run time.
4. ``allowed_action_commands`` and ``allowed_webhook_hosts``: what actions may run or call.
   ``notification_channels`` (channels the policy gives every workflow) and
   ``allowed_notification_destinations`` (where a workflow's own channels may send);
   ``allowed_flag_targets`` (the flag files and flag APIs ``enable_feature`` may write).
5. ``required_variables`` and ``required_steps`` (for example a baseline and an impact).
6. ``limits``: ``max_duration``, ``max_steps``, ``max_metrics``, ``max_capture_duration``.

Hosts and programs are judged on what is known when judging (:class:`RunValues`):
``afdp validate`` knows the ``${workflow.*}`` defaults, ``afdp plan`` also the values a
run sets (``overrides``), and a run about to start (:meth:`Admission.readmit`, called
by the runner) also its ``${deployment.*}`` values, the environment ``${env.*}`` reads
and the environment a database driver takes its defaults from. A host that still
depends on a value not known then (``${steps.*}`` always) is "unresolved". A SQL
collector's target is the one its driver will use (:func:`sql_targets`).

The package: :mod:`.base` (what rules share), :mod:`.rules` (structure rules),
:mod:`.hosts` (hosts and SQL targets), :mod:`.destinations` (notification
destinations and flag targets, compared as they will be used), :mod:`.admission` (a policy applied),
:mod:`.loading` (reading a policy file).
"""

from __future__ import annotations

from afdp.workflow.policy.admission import (
    AdmissionPolicy,
    with_overrides,
)
from afdp.workflow.policy.base import (
    DEFAULTS_ONLY,
    Rule,
    RunValues,
)
from afdp.workflow.policy.destinations import (
    AllowedFlagTargets,
    AllowedNotificationDestinations,
    PolicyChannels,
    resolve_file,
)
from afdp.workflow.policy.hosts import (
    AllowedHosts,
    SqlTargets,
    host_allowed,
    render_known,
    sql_targets,
    url_host,
)
from afdp.workflow.policy.loading import (
    build_policy,
    default_policy_path,
    load_policy,
)
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

__all__ = [
    "AdmissionPolicy",
    "AllOf",
    "AllowedCollectorTypes",
    "AllowedCommands",
    "AllowedFlagTargets",
    "AllowedNotificationDestinations",
    "AllowedHosts",
    "AllowedStepTypes",
    "AllowedWorkflows",
    "DEFAULTS_ONLY",
    "Limits",
    "PolicyChannels",
    "RequiredStep",
    "RequiredVariables",
    "Rule",
    "RunValues",
    "SqlTargets",
    "build_policy",
    "default_policy_path",
    "host_allowed",
    "load_policy",
    "render_known",
    "resolve_file",
    "sql_targets",
    "url_host",
    "with_overrides",
]
