"""``afdp log``: the story of a deployment, or a source file its genesis record stores.

Thin by design: parse, call one library function, print, exit code.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from afdp.cli.options import _emit_json, deployment_option, json_option, repo_option, service_option
from afdp.cli.output import echo, write_source
from afdp.errors import EXIT_FAILED, UsageError


@click.command("log")
@repo_option
@service_option
@deployment_option
@click.option(
    "--trust",
    "trust_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The auditor's trust policy: verify the branch first, so the story, the trigger "
    "and the stored sources are shown as verified (without it they are marked unverified).",
)
@click.option(
    "--show-source",
    type=click.Choice(["workflow", "admission-policy"]),
    help="Print the stored workflow.yaml or admission-policy.yaml byte for byte instead of "
    "the story (with --trust: only if it verified, else exit 1; without: a warning on stderr).",
)
@json_option
def log_cmd(
    repository: Path,
    service: str,
    deployment: str,
    trust_path: Path | None,
    show_source: str | None,
    as_json: bool,
) -> None:
    """Print the story of a deployment: how it started, what ran, and each record's step,
    status, summary, signer, time-stamp and digest.

    Without --trust this reads the branch without verifying it, and says so.
    """
    from afdp.audit.story import read_sources, read_story
    from afdp.cli.output import print_story

    trust = None
    if trust_path is not None:
        from afdp.evidence.trust import load_trust_policy

        trust = load_trust_policy(trust_path, evidence_repository=repository)
    if show_source is not None:
        _, sources, verification = read_sources(
            repository, service=service, deployment=deployment, trust=trust
        )
        source = next((s for s in sources if s.name == show_source), None)
        if source is None or source.data is None:
            why = source.note if source is not None else "the genesis record names no such file"
            raise UsageError(f"no stored {show_source} to show: {why}")
        if trust is not None and not source.verified:
            echo(f"afdp: {source.file}: {source.note}", err=True)
            sys.exit(EXIT_FAILED)
        if as_json:
            import base64

            _emit_json({**source.to_json(), "verification": verification,
                        "content_base64": base64.b64encode(source.data).decode()})
        else:
            if not source.verified:
                echo(f"afdp: warning: {source.file} is {source.note}", err=True)
            write_source(source.data)
        return
    story = read_story(repository, service=service, deployment=deployment, trust=trust)
    if as_json:
        _emit_json(story)
    else:
        print_story(story)
    if trust is not None and not story["verified"]:
        sys.exit(EXIT_FAILED)
