"""``afdp verify``: evidence branches (of a repository, a remote or an exported package)
checked offline against the auditor's trust policy.

Thin by design: parse, call one library function, print, exit code. Heavy modules are
imported inside the command, so ``afdp verify --help`` is fast.
"""

from __future__ import annotations

import contextlib
import re
import sys
from pathlib import Path
from typing import Any

import click

from afdp.cli.options import _emit_json, json_option
from afdp.errors import EXIT_FAILED, NotFoundError, UsageError


@click.command("verify")
@click.option(
    "--repo", "repository", type=click.Path(path_type=Path), help="Evidence Git repository."
)
@click.option("--service", help="Service name; with --all, only this service's deployments.")
@click.option("--deployment", help="Deployment id.")
@click.option(
    "--all", "all_branches", is_flag=True, help="Verify every AFDP branch in the repository."
)
@click.option(
    "--remote",
    "remote_url",
    metavar="URL",
    help="Verify the evidence branches of this Git remote (fetched into a scratch repository "
    "that is deleted afterwards), instead of --repo.",
)
@click.option(
    "--bundle",
    type=click.Path(path_type=Path),
    help="An evidence package from 'afdp export' (its folder or .bundle file), instead of --repo.",
)
@click.option(
    "--trust",
    "trust_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The auditor's trust policy (never taken from the evidence); required, except that "
    "with --bundle it defaults to the package's own trust/trust-policy.yaml: then the result "
    "says it is not independent, lists the fingerprints to compare, and exits 1.",
)
@click.option(
    "--allow-unsealed",
    is_flag=True,
    help="Pass a clean branch with no seal as 'unsealed' (deployment in progress).",
)
@click.option(
    "--jobs",
    type=click.IntRange(1, 64),
    help="Worker processes (default: all cores, for long branches).",
)
@json_option
def verify_cmd(
    repository: Path | None,
    service: str | None,
    deployment: str | None,
    all_branches: bool,
    remote_url: str | None,
    bundle: Path | None,
    trust_path: Path | None,
    allow_unsealed: bool,
    jobs: int | None,
    as_json: bool,
) -> None:
    """Verify evidence branches offline against a trust policy.

    --all checks every branch in parallel worker processes and prints a table (branch,
    service, deployment, records, result, first failing check) before the verdicts.
    Exit 0 when every branch verifies, 1 when any check fails (each failure names the
    record, the check and the reason), 2 for usage errors, 3 for operational errors.
    """
    from afdp.cli.output import echo_lines, print_reports, print_summary, summary_rows
    from afdp.evidence.trust import load_trust_policy

    if bundle is not None:  # an exported evidence package (afdp.audit.export.verify_package)
        if repository is not None or all_branches or remote_url is not None:
            raise UsageError("--bundle replaces --repo, --remote and --all")
        from afdp.audit.export import verify_package

        outcome = verify_package(
            bundle,
            trust=trust_path,
            service=service,
            deployment=deployment,
            allow_unsealed=allow_unsealed,
            jobs=jobs,
        )
        if as_json:
            _emit_json(outcome.to_json())
        elif outcome.independent:
            print_reports([outcome.report])
            echo_lines(outcome.not_checked_lines())
        else:  # the package's own trust: says so first, lists what to compare, exit 1
            echo_lines(outcome.lines())
        sys.exit(outcome.exit_code)
    if trust_path is None:
        raise UsageError("--trust is required: the auditor's trust policy")
    if remote_url is not None and repository is not None:
        raise UsageError("--remote replaces --repo")
    if repository is None and remote_url is None:
        raise UsageError("--repo is required (or --remote URL)")
    if all_branches == bool(deployment):
        raise UsageError("give --service and --deployment for one branch, or --all")
    if deployment and not service:
        raise UsageError("--deployment needs --service")
    with contextlib.ExitStack() as scratch:
        if remote_url is not None:
            repository = _fetch_remote(remote_url, scratch)
        assert repository is not None
        policy = load_trust_policy(trust_path, evidence_repository=_local_remote(remote_url) or repository)
        try:
            reports = _verify(repository, service, deployment, all_branches, policy, allow_unsealed, jobs, as_json)
        except NotFoundError as exc:
            if remote_url is None:
                raise
            from afdp.evidence.remote import redact

            # name the remote, not the scratch repository it was fetched into
            raise NotFoundError(str(exc).replace(str(repository), redact(remote_url))) from exc
    if as_json:
        document: dict[str, Any] = {"ok": all(r.ok for r in reports)}
        if remote_url is not None:
            from afdp.evidence.remote import redact

            document["remote"] = redact(remote_url)
        if all_branches:
            document["summary"] = summary_rows(reports)
        document["branches"] = [r.to_json() for r in reports]
        _emit_json(document)
    else:
        if all_branches:
            print_summary(reports)
        print_reports(reports)
    if not all(r.ok for r in reports):
        sys.exit(EXIT_FAILED)


def _fetch_remote(url: str, scratch: contextlib.ExitStack) -> Path:
    """Fetch the remote's evidence into a temporary bare repository (deleted on exit)."""
    import tempfile

    from afdp.evidence.remote import fetch_evidence

    directory = Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix="afdp-remote-")))
    return fetch_evidence(url, directory / "evidence.git")


def _local_remote(url: str | None) -> Path | None:
    """The folder a local remote (a path or file:// URL) names: a trust policy there is
    refused as it is inside --repo. None for network URLs (ssh://, host:path, https://)."""
    if url is None:
        return None
    if url.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(url).path))
    if "://" in url or re.match(r"^[^/]*:", url):
        return None
    return Path(url)


def _verify(
    repository: Path,
    service: str | None,
    deployment: str | None,
    all_branches: bool,
    policy: Any,
    allow_unsealed: bool,
    jobs: int | None,
    as_json: bool,
) -> list[Any]:
    from afdp.cli.output import progress_for
    from afdp.verify.verifier import check_all, check_branch

    with progress_for(enabled=not as_json) as progress:
        if all_branches:
            reports = check_all(
                repository,
                policy=policy,
                allow_unsealed=allow_unsealed,
                jobs=jobs,
                service=service,
                progress=progress,
                keep_records=as_json,  # the human verdict needs counts and signers only
            )
        else:
            assert service is not None and deployment is not None
            reports = [
                check_branch(
                    repository,
                    service=service,
                    deployment=deployment,
                    policy=policy,
                    allow_unsealed=allow_unsealed,
                    jobs=jobs,
                    progress=progress,
                    keep_records=as_json,
                )
            ]
    return reports
