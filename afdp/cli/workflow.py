"""Workflow commands: ``afdp validate`` and ``afdp plan``.

Thin by design: parse, call one library function (:func:`afdp.workflow.validation.validate_file`,
:func:`afdp.workflow.plan.plan_workflow`), print. Neither command imports Prefect, rich
or anything that runs a flow, so both start and finish in well under half a second.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from afdp.cli.output import echo, emit_json
from afdp.errors import EXIT_FAILED, UsageError

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
policy_option = click.option(
    "--policy",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Admission policy file (default: the shipped policies/admission.yaml).",
)


def _emit_json(value: Any) -> None:
    emit_json(value, ensure_ascii=False)


@click.command("validate")
@click.argument("file", type=click.Path(path_type=Path))
@policy_option
@json_option
def validate_cmd(file: Path, policy: Path | None, as_json: bool) -> None:
    """Validate the workflow FILE and check it against an admission policy.

    Prints every problem at once (file:line:column: path: what was expected). Exit 0
    when valid and admitted, 1 when invalid or rejected by the policy, 2 for a usage
    error (missing file, broken policy file).
    """
    from afdp.workflow.validation import validate_file

    result = validate_file(file, policy=policy)
    if as_json:
        _emit_json(result.to_json())
    else:
        for finding in result.findings:
            echo(str(finding))
        workflow = result.workflow
        for note in workflow.notes if workflow is not None else ():
            echo(str(note))
        if result.ok and workflow is not None:
            echo(
                f"{result.file}: valid: workflow {workflow.name!r}"
                f"{' ' + workflow.version if workflow.version else ''}, "
                f"{len(workflow.steps)} steps in {len(workflow.phases)} phase{'s' if len(workflow.phases) != 1 else ''}, "
                f"up to {workflow.max_duration()}; admitted by policy {result.policy!r}"
            )
            echo(f"digest sha256:{workflow.digest}")
        else:
            count = len(result.findings)
            what = (
                f"rejected by policy {result.policy!r}"
                if result.verdict == "rejected"
                else "invalid"
            )
            echo(f"{result.file}: {what}: {count} problem{'s' if count != 1 else ''}")
    if not result.ok:
        sys.exit(EXIT_FAILED)


def _settings(values: tuple[str, ...]) -> dict[str, str]:
    settings: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(
                f"--set {item!r}: expected KEY=VALUE, e.g. --set deployment.service=api"
            )
        if key in settings:
            raise UsageError(f"--set {key} is given twice")
        settings[key] = value
    return settings


@click.command("plan")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="A known value: deployment.<field> (service, id, environment, ...) or workflow.<VARIABLE>. Repeatable.",
)
@policy_option
@json_option
def plan_cmd(file: Path, sets: tuple[str, ...], policy: Path | None, as_json: bool) -> None:
    """Show what the workflow FILE would do for one deployment (a dry run).

    Lists phases and steps in order with their resolved values, which steps a when:/unless:
    skips with what is known now, durations and the workflow digest. Nothing is collected
    or sent; ${env.*} values are shown redacted, never read.
    """
    from afdp.workflow import load_workflow
    from afdp.workflow.plan import parse_settings, plan_workflow
    from afdp.workflow.policy import load_policy

    settings = _settings(sets)
    rules = load_policy(policy)
    workflow = load_workflow(file, policy=rules)
    deployment, overrides = parse_settings(workflow, settings)
    plan = plan_workflow(workflow, deployment=deployment, overrides=overrides, policy=rules)
    data = plan.to_json()
    if as_json:
        _emit_json(data)
    else:
        _print_plan(data)


# --- human output of a plan -------------------------------------------------------------


def _print_plan(plan: dict[str, Any]) -> None:
    wf = plan["workflow"]
    version = f" {wf['version']}" if wf["version"] else ""
    echo(f"Plan for workflow {wf['name']!r}{version} ({wf['source']})")
    echo(f"  digest      sha256:{wf['digest']}")
    echo(f"  policy      {plan['policy']}")
    echo(
        f"  deployment  {_pairs(plan['deployment']) or '(none given: --set deployment.service=...)'}"
    )
    if plan["variables"]:
        echo(f"  variables   {_pairs(plan['variables'])}")
    summary = plan["summary"]
    echo(
        f"  steps       {summary['steps']}: {summary['run']} run, {summary['skipped']} skipped, "
        f"{summary['conditional']} decided at run time; up to {plan['max_duration']['text']}"
    )
    for phase in plan["phases"]:
        stage = phase["stage"]
        title = phase["name"]
        if stage:
            title = f"stage {stage['name']}: {stage['traffic']} of traffic for {stage['window']['text']}"
            if stage["abort_on"]:
                title += f", roll back if {stage['abort_on']}"
        echo("")
        echo(title)
        rows = [
            (
                str(step["index"]),
                step["name"],
                step["type"],
                step["status"],
                step["max_duration"]["text"] if step["max_duration"]["seconds"] else "-",
                _step_details(step),
            )
            for step in phase["steps"]
        ]
        _table(("#", "step", "type", "status", "up to", "details"), rows)
        for step in phase["steps"]:
            for key in ("when", "unless"):
                outcome = step[key]
                if outcome is not None:
                    result = {True: "true", False: "false", None: "unknown"}[outcome["result"]]
                    reason = f" ({outcome['reason']})" if outcome["reason"] else ""
                    echo(f"    {step['name']}: {key} {outcome['condition']} -> {result}{reason}")
    if plan["collectors"]:
        echo("")
        echo("collectors")
        _table(
            ("name", "type", "url"),
            [(c["name"], c["type"], c["url"]) for c in plan["collectors"]],
        )
    if plan["metrics"]:
        echo("")
        echo("metrics")
        _table(
            ("name", "unit", "collector", "reads"),
            [
                (
                    m["name"],
                    m["unit"] or "-",
                    m["collector"],
                    m["query"] or m["metric"] or m["select"] or "",
                )
                for m in plan["metrics"]
            ],
        )
    if plan.get("services"):
        services = plan["services"]
        echo("")
        echo(f"services (captured in the same windows; correlate: {', '.join(services['correlate']) or 'nothing'})")
        _table(
            ("service", "metric", "reads"),
            [(name, metric, str(reads)) for name, metrics in services["metrics"].items() for metric, reads in metrics.items()],
        )
    if plan["success_criteria"]:
        echo("")
        echo("success criteria")
        for criterion in plan["success_criteria"]:
            echo(f"  {criterion}")
    if plan["decisions"]:
        echo("")
        echo("decisions (first match wins)")
        for d in plan["decisions"]:
            echo(
                f"  {d['name']}: if {d['condition']} -> {d['action']} (label {d['training_label']})"
                + (f", severity {d['severity']}" if d.get("severity") else "")
            )
            for c in d.get("channels") or ():
                signed = ", signed" if c.get("signed") else ""
                origin = " (the admission policy's channel)" if c.get("origin") == "policy" else ""
                echo(f"    notify {c['name']}: {c['type']} {c['target']}{signed}{origin}")
    if plan.get("analyzers"):
        echo("")
        echo("analyzers")
        for a in plan["analyzers"]:
            echo(f"  {a['name']} ({a['type']}): {a['does']}")
    if plan["actions"]:
        echo("")
        echo("actions")
        for a in plan["actions"]:
            if a["command"]:
                how = "run " + " ".join(a["command"])
            else:
                how = f"POST {a['webhook']}"
                if a["secret"]:
                    how += f", signed with {a['secret']}"
            echo(f"  {a['action']}: {how} (timeout {a['timeout']['text']})")


def _pairs(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in values.items())


def _step_details(step: dict[str, Any]) -> str:
    parts: list[str] = []
    for key, value in step["params"].items():
        if value in (None, [], {}, "") or key in ("role",):
            continue
        if key == "thresholds":
            shown = ", ".join(f"{t['key']} {t['limit']}" for t in value)
            value = shown
        elif key == "checks":
            value = ", ".join(c["name"] for c in value)
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        elif isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        text = " ".join(str(value).split())
        parts.append(f"{key}: {text[:90] + '...' if len(text) > 90 else text}")
    if step["unresolved"]:
        parts.append("known at run time: " + ", ".join(step["unresolved"]))
    return "; ".join(parts)


def _table(headers: tuple[str, ...], rows: Sequence[Sequence[str]]) -> None:
    # The last column is free text: it is not padded and may be long.
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers[:-1])]

    def line(cells: Sequence[str]) -> str:
        padded = [cell.ljust(width) for cell, width in zip(cells[:-1], widths, strict=True)]
        return "  " + "  ".join([*padded, cells[-1]]).rstrip()

    echo(line(headers))
    for row in rows:
        echo(line(row))
