"""``afdp import``: bring past deployments in as evidence marked imported (docs/learning.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from afdp.cli.output import echo, emit_json
from afdp.cli.run import _parse_set, _tsa_urls
from afdp.errors import UsageError


@click.command("import")
@click.option(
    "--repo",
    "repository",
    required=True,
    type=click.Path(path_type=Path),
    help="Evidence Git repository.",
)
@click.option("--key", required=True, help="Private key file (PEM) or securesystemslib key URI.")
@click.option(
    "--public-key", type=click.Path(dir_okay=False), help="PEM public key; required with a key URI."
)
@click.option(
    "--tsa",
    multiple=True,
    metavar="URL",
    help="RFC3161 TSA URL (repeatable). Default: $AFDP_TSA_URLS.",
)
@click.option(
    "--github-deployments",
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="FILE.json",
    help="JSON of GitHub's GET /repos/{owner}/{repo}/deployments (objects may carry their 'statuses').",
)
@click.option(
    "--github-releases",
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="FILE.json",
    help="JSON of GitHub's GET /repos/{owner}/{repo}/releases.",
)
@click.option(
    "--csv",
    "csv_file",
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="FILE",
    help="CSV of deploy times (columns: docs/learning.md).",
)
@click.option("--service", required=True, help="The service these deployments are of.")
@click.option(
    "--environment",
    metavar="ENV",
    help="Import only the deployments to ENV (production, ...); skip the rest.",
)
@click.option(
    "--workflow",
    "workflow_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The evidence workflow to judge each past deployment with.",
)
@click.option(
    "--prometheus",
    required=True,
    metavar="URL",
    help="The Prometheus that holds the metrics' history.",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="NAME=VALUE",
    help="Set a workflow variable (repeatable).",
)
@click.option(
    "--policy",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Admission policy (default: the shipped one).",
)
@click.option(
    "--team",
    help="The team that owns these deployments (recorded in each genesis record, as afdp run --team).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Read and check the history; say what would be imported; write nothing.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def import_cmd(
    repository: Path,
    key: str,
    public_key: str | None,
    tsa: tuple[str, ...],
    github_deployments: Path | None,
    github_releases: Path | None,
    csv_file: Path | None,
    service: str,
    environment: str | None,
    workflow_path: Path,
    prometheus: str,
    settings: tuple[str, ...],
    policy: Path | None,
    team: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Import past deployments as evidence marked imported.

    Each past deployment is judged by WORKFLOW from the metrics Prometheus still holds
    (the baseline window before its time, the impact windows after it), and recorded on
    its own branch afdp/SERVICE/imported-<source>-<id>, every record signed and
    time-stamped now and marked imported with the deployment's time. Deployments already
    imported are skipped. Exit codes: 0 done; 2 bad input (nothing recorded); 3 a record
    could not be written (what was imported stays; run it again to continue).
    """
    from afdp.pipeline.importer import import_history

    given = [
        (n, p)
        for n, p in (
            ("github-deployments", github_deployments),
            ("github-releases", github_releases),
            ("csv", csv_file),
        )
        if p is not None
    ]
    if len(given) != 1:
        raise UsageError("give exactly one of --github-deployments, --github-releases, --csv")
    source, path = given[0]
    urls = _tsa_urls(tsa) if not dry_run else tuple(tsa)

    def show(item: Any) -> None:
        if as_json:
            return
        what = item.status.replace("_", " ")
        extra = f": {item.reason}" if item.reason else ""
        if item.status in ("imported", "resumed"):
            extra = (
                f": {item.analysis or 'analysis not recorded'}; decision {item.decision or 'none'}"
            )
            if item.failed_steps:
                extra += f"; failed steps: {', '.join(item.failed_steps)}"
        echo(f"{what} {item.deployment} ({item.where}, deployed {item.described_time}){extra}")

    outcome = import_history(
        history=path,
        source=source,
        service=service,
        workflow_path=workflow_path,
        repository=repository,
        key=key,
        public_key=public_key,
        tsa_urls=urls or ("http://unused.invalid/",),
        prometheus=prometheus,
        overrides=_parse_set(settings),
        policy=policy,
        dry_run=dry_run,
        environment=environment,
        progress=show,
        team=team,
    )
    if as_json:
        emit_json(outcome.to_json())
        return
    done = outcome.count("imported") + outcome.count("resumed")
    verb = "would import" if dry_run else "imported"
    count = outcome.count("would_import") if dry_run else done
    echo(
        f"{verb} {count}, skipped {outcome.count('skipped')} of {len(outcome.deployments)} "
        f"deployment(s) from {path}"
        + (
            ""
            if dry_run
            else f"; every record is marked imported: check with afdp verify --repo {repository} --all --trust TRUST.yaml"
        ),
    )
