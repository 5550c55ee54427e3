"""Learning commands: ``dataset export`` (a training dataset from verified evidence) and
``replay`` (recompute recorded verdicts from the recorded samples).

Thin: parse, call one library function (:mod:`afdp.learn.dataset`,
:mod:`afdp.audit.replay`), print, exit. Neither command imports Prefect.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from afdp.cli.output import console, echo, emit_json
from afdp.errors import EXIT_FAILED, UsageError

_repo_option = click.option(
    "--repo", "repository", required=True, type=click.Path(path_type=Path), help="Evidence Git repository."
)
_trust_option = click.option(
    "--trust",
    "trust_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The auditor's trust policy (never taken from the evidence).",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def _when(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise UsageError(
            f"{option} {value!r} is not an ISO 8601 date or time (e.g. 2026-11-01 or 2026-11-01T09:00:00Z)"
        ) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@contextlib.contextmanager
def _progress(what: str) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr while branches are verified (only when stderr is a terminal)."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn(what, markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(what, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@click.group("dataset")
def dataset_group() -> None:
    """Training datasets built only from evidence that verified."""


@dataset_group.command("export")
@_repo_option
@_trust_option
@click.option(
    "--format", "fmt", type=click.Choice(["parquet", "csv", "jsonl"]), default=None,
    help="Dataset format (default: from --out's suffix).",
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Dataset file to write; PATH.datasheet.json is written beside it.")
@click.option("--service", "services", multiple=True, help="Only this service (repeatable).")
@click.option("--since", help="Only deployments at or after this ISO 8601 time (UTC if no offset).")
@click.option("--until", help="Only deployments at or before this ISO 8601 time.")
@click.option("--label", "labels", multiple=True, help="Only rows with this training label (repeatable).")
@click.option("--jobs", type=click.IntRange(min=1), default=None, help="Worker processes for verification (default: one per CPU).")
@_json_option
def export_cmd(
    repository: Path,
    trust_path: Path,
    fmt: str | None,
    out: Path,
    services: tuple[str, ...],
    since: str | None,
    until: str | None,
    labels: tuple[str, ...],
    jobs: int | None,
    as_json: bool,
) -> None:
    """Verify every deployment branch and export the verified ones' training rows.

    Branches that fail verification, have no training record, or fall outside the
    filters are left out and counted in PATH.datasheet.json. Exit 0 when the dataset was
    written (even with branches left out: the datasheet says which and why), 2 for usage
    errors, 3 for operational errors.
    """
    from afdp.learn.dataset import export_dataset

    with _progress("verifying") as progress:
        result = export_dataset(
            repository,
            trust_path,
            fmt=fmt,
            out=out,
            services=services or None,
            since=_when(since, "--since"),
            until=_when(until, "--until"),
            labels=labels or None,
            jobs=jobs,
            progress=progress,
        )
    if as_json:
        emit_json({"ok": True, **result.to_json()})
        return
    history = result.history
    echo(
        f"wrote {len(history.rows)} row(s) to {result.path} ({result.format}), datasheet {result.datasheet_path}"
    )
    echo(f"  considered {history.considered} branch(es), used {len(history.rows)}, left out {len(history.excluded)}")
    for reason, count in history.excluded_by_reason().items():
        echo(f"    {count} x {reason}")
    echo(f"  dataset digest sha256:{history.digest}")


@click.command("replay")
@_repo_option
@_trust_option
@click.option("--service", required=True, help="Service name.")
@click.option("--deployment", help="Deployment id (or --all for every deployment of --service).")
@click.option("--all", "all_branches", is_flag=True, help="Every deployment of --service.")
@click.option("--workflow", "workflow", type=click.Path(path_type=Path, dir_okay=False), help="Re-judge the recorded samples under this workflow instead of the recorded one.")
@_json_option
def replay_cmd(
    repository: Path,
    trust_path: Path,
    service: str,
    deployment: str | None,
    all_branches: bool,
    workflow: Path | None,
    as_json: bool,
) -> None:
    """Recompute recorded verdicts (analysis + decision) from the recorded raw samples.

    With the recorded workflow: exit 0 only when the recomputation is identical bit for
    bit (canonical form) and was recorded by this AFDP version, else 1 with what differs.
    With --workflow: a table of recorded and new decisions; exit 1 when any changes.
    A branch that fails verification is refused (exit 1, naming the failing check).
    """
    from afdp.audit.replay import ReplaySet, replay_deployment, replay_service
    from afdp.evidence.trust import load_trust_policy

    if all_branches == bool(deployment):
        raise UsageError("give --deployment for one deployment, or --all")
    policy = load_trust_policy(trust_path, evidence_repository=repository)
    if all_branches:
        outcome = replay_service(repository, policy=policy, service=service, workflow=workflow)
    else:
        assert deployment is not None
        outcome = ReplaySet((replay_deployment(repository, policy=policy, service=service, deployment=deployment, workflow=workflow),))
    if as_json:
        emit_json(outcome.to_json())
    elif workflow is not None or all_branches:
        _print_table(outcome)
    else:
        _print_one(outcome.replays[0])
    if not outcome.ok:
        sys.exit(EXIT_FAILED)


def _decision_text(decision: dict[str, Any] | None) -> str:
    if not decision:
        return "-"
    name = decision.get("decision")
    return f"{decision.get('action')}" + (f" ({name})" if name else "")


def _print_one(replay: Any) -> None:
    head = f"{replay.service}/{replay.deployment}"
    if replay.status == "identical":
        echo(
            f"IDENTICAL {head}: {', '.join(replay.steps)} recomputed from the recorded samples equal the "
            f"recorded canonical form bit for bit (afdp {replay.running_version}); decision {_decision_text(replay.recomputed_decision)}"
        )
        return
    echo(f"{replay.status.upper()} {head}: recomputed {', '.join(replay.steps)}")
    note = replay.version_note()
    if note:
        echo(f"  {note}")
    if replay.same_bits:
        echo("  the recomputed analysis and decision equal the recorded ones bit for bit")
    echo(
        f"  decision recorded {_decision_text(replay.recorded_decision)}, recomputed {_decision_text(replay.recomputed_decision)}"
    )
    for difference in replay.differences:
        echo(f"  {difference}")
    if replay.more_differences:
        echo(f"  ... and {replay.more_differences} more difference(s) (--json shows the first ones too)")


def _print_table(outcome: Any) -> None:
    from rich.table import Table

    table = Table("deployment", "recorded decision", "decision now", "status")
    for replay in outcome.replays:
        changed = "CHANGED" if replay.decision_changed else ("same decision" if replay.workflow != "recorded" else replay.status)
        table.add_row(
            replay.deployment,
            _decision_text(replay.recorded_decision),
            _decision_text(replay.recomputed_decision),
            changed,
        )
    for refused in outcome.refused:
        table.add_row(refused.branch.rsplit("/", 1)[-1], "-", "-", f"REFUSED: {refused.reason}")
    console(width=200).print(table)
    notes = {r.version_note() for r in outcome.replays if r.version_note()}
    for note in sorted(n for n in notes if n):
        echo(f"note: {note}")
