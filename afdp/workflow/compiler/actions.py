"""The ``actions:`` section: how rollback, alert and mark_successful are carried out.

An argv command or a webhook, with ``${...}`` checked against what exists when an
action can first run.
"""

from __future__ import annotations

from typing import Any, cast

from afdp.workflow import catalog
from afdp.workflow.catalog import StepKind
from afdp.workflow.compiler.collectors import _Collectors
from afdp.workflow.interpolation import Template
from afdp.workflow.loader import DocPath
from afdp.workflow.model import ActionSpec
from afdp.workflow.scope import Tree


class _Actions(_Collectors):
    """Actions."""

    def compile_actions(self) -> tuple[ActionSpec, ...]:
        raw = self.mapping(self.data.get("actions"))
        # An action runs when a gate or the decisions step decides: from the first of them
        # on, the outputs of the steps before it exist.
        first = next((s for s in self.steps if s.kind in (StepKind.GATE, StepKind.DECIDE)), None)
        earlier = self.steps[: first.index] if first else []
        saved = self.outputs
        self.outputs = {s.name: saved[s.name] for s in earlier if s.name in saved}
        try:
            scope = self.base_scope(env=True, steps=True)
            return tuple(
                spec
                for name, value in raw.items()
                if (name in catalog.ACTIONS or name in catalog.STAGE_ACTIONS)
                and isinstance(value, dict)
                and (spec := self.action(name, value, scope)) is not None
            )
        finally:
            self.outputs = saved

    def action(self, name: str, spec: dict[str, Any], scope: Tree) -> ActionSpec | None:
        at: DocPath = ("actions", name)
        has_command, has_webhook = "command" in spec, "webhook" in spec
        if has_command == has_webhook:
            self.fail(
                at,
                f"action {name!r} needs exactly one of command: (an argv list) or webhook: (a URL)"
                + ("; it has both" if has_command else ""),
                prefer_key=True,
            )
        command: tuple[Template, ...] | None = None
        if isinstance(spec.get("command"), list):
            parts = [
                self.template(
                    arg,
                    (*at, "command", index),
                    scope,
                    secrets="a command's arguments (the program inherits the environment: "
                    "let it read the variable)",
                )
                for index, arg in enumerate(spec["command"])
            ]
            command = tuple(p for p in parts if p is not None)
            if len(command) != len(parts):
                command = None
        elif isinstance(spec.get("command"), str):
            pass  # the schema says it must be a list (argv, no shell)
        webhook = self.template(
            spec.get("webhook"), (*at, "webhook"), scope, secrets="url", bare_dollar=True
        )
        if webhook is not None:
            head = webhook.parts[0] if webhook.parts else ""
            if isinstance(head, str) and "://" in head or webhook.is_literal:
                self.check_url(webhook, "rest", (*at, "webhook"), what="a webhook")
            else:
                self.fail(
                    (*at, "webhook"),
                    "a webhook must start with http:// or https:// (only the rest of it may be interpolated)",
                )
        secret = self.template(
            spec.get("secret"), (*at, "secret"), scope, secrets=True, bare_dollar=True
        )
        if secret is not None:
            if not secret.secret or any(not p.secret for p in secret.placeholders):
                self.fail(
                    (*at, "secret"),
                    "a webhook secret must come from the environment, e.g. secret: ${env.AFDP_WEBHOOK_SECRET}; "
                    "a secret written in the workflow would be part of the evidence",
                )
                secret = None
            if "webhook" not in spec:
                self.fail(
                    (*at, "secret"),
                    "secret: signs a webhook request; this action has no webhook:",
                    prefer_key=True,
                )
        elif "secret" in spec:
            secret = None
        timeout = self.duration(
            spec.get("timeout", catalog.DEFAULT_ACTION_TIMEOUT), (*at, "timeout")
        )
        if timeout is None or (command is None and webhook is None) or has_command == has_webhook:
            return None
        return ActionSpec(
            action=cast(Any, name),
            command=command,
            webhook=webhook,
            secret=secret,
            timeout=timeout,
            location=self.location(at),
        )
