"""Audit commands: report (compliance report) and export (evidence package).

Thin: parse, call one library function, print. ``afdp report`` never imports Prefect.
"""

from __future__ import annotations

import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from afdp.cli.output import echo, emit_json
from afdp.errors import EXIT_FAILED, UsageError


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


def _tsa_urls(values: tuple[str, ...]) -> list[str]:
    from afdp.cli.ledger import _tsa_urls as ledger_tsa_urls

    return ledger_tsa_urls(values)


def _verify_command(
    repository: Path, service: str | None, deployment: str | None, trust: Path
) -> str:
    args = ["afdp", "verify", "--repo", str(repository)]
    if service and deployment:
        args += ["--service", service, "--deployment", deployment]
    else:
        args += ["--all"] + (["--service", service] if service else [])
    return shlex.join([*args, "--trust", str(trust)])


@click.command("report")
@click.option(
    "--repo",
    "repository",
    required=True,
    type=click.Path(path_type=Path),
    help="Evidence Git repository.",
)
@click.option("--service", help="Service name; without --deployment, every deployment of it.")
@click.option("--deployment", help="Deployment id (needs --service).")
@click.option(
    "--since", help="Only deployments opened at or after this ISO 8601 time (UTC if no offset)."
)
@click.option("--until", help="Only deployments opened at or before this ISO 8601 time.")
@click.option(
    "--trust",
    "trust_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The auditor's trust policy (never taken from the evidence).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "pdf", "json"]),
    default=None,
    help="Report format (default: from --out's suffix, else html).",
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Report file to write (atomically).",
)
@click.option(
    "--controls",
    "controls_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Control mapping YAML (default: the shipped policies/controls.yaml).",
)
@click.option(
    "--sign-key",
    type=click.Path(path_type=Path, dir_okay=False),
    help="PDF: private key (PEM) that signs the report (PAdES).",
)
@click.option(
    "--sign-cert",
    type=click.Path(path_type=Path, dir_okay=False),
    help="PDF: certificate of --sign-key (default: a self-signed one naming its keyid).",
)
@click.option(
    "--tsa",
    multiple=True,
    metavar="URL",
    help="PDF: RFC3161 TSA URL for the signature time-stamp (repeatable; default $AFDP_TSA_URLS).",
)
@click.option(
    "--allow-unsealed", is_flag=True, help="Exit 0 for an UNSEALED (clean, in progress) branch."
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary instead of text.")
def report_cmd(
    repository: Path,
    service: str | None,
    deployment: str | None,
    since: str | None,
    until: str | None,
    trust_path: Path,
    fmt: str | None,
    out: Path,
    controls_path: Path | None,
    sign_key: Path | None,
    sign_cert: Path | None,
    tsa: tuple[str, ...],
    allow_unsealed: bool,
    as_json: bool,
) -> None:
    """Verify deployment evidence and write a compliance report (HTML, signed PDF, JSON).

    The report is written even when verification fails, and then says FAILED on its first
    line; the exit code is 1 for FAILED (and for UNSEALED unless --allow-unsealed).
    """
    from afdp.audit.report import VERIFIED, PdfSigning, build_report, write_report
    from afdp.evidence.trust import load_trust_policy

    fmt = fmt or {".pdf": "pdf", ".json": "json"}.get(out.suffix.lower(), "html")
    signing = None
    if fmt == "pdf":
        if sign_key is None:
            raise UsageError("--format pdf signs the report: pass --sign-key (and --tsa)")
        signing = PdfSigning(sign_key, sign_cert, tuple(_tsa_urls(tsa)))
    policy = load_trust_policy(trust_path, evidence_repository=repository)
    report = build_report(
        repository,
        policy=policy,
        service=service,
        deployment=deployment,
        since=_when(since, "--since"),
        until=_when(until, "--until"),
        controls_path=controls_path,
    )
    write_report(
        report,
        fmt=fmt,
        out=out,
        signing=signing,
        verify_command=_verify_command(repository, service, deployment, trust_path),
    )
    if as_json:
        emit_json(
            {
                "verdict": report.verdict,
                "headline": report.headline,
                "out": str(out),
                "format": fmt,
                "deployments": [s.name for s in report.sections],
            }
        )
    else:
        echo(report.headline)
        echo(f"wrote {fmt.upper()} report {out}")
    if report.verdict != VERIFIED and not (report.verdict == "UNSEALED" and allow_unsealed):
        sys.exit(EXIT_FAILED)


@click.command("export")
@click.option(
    "--repo",
    "repository",
    required=True,
    type=click.Path(path_type=Path),
    help="Evidence Git repository.",
)
@click.option("--service", required=True, help="Service name.")
@click.option("--deployment", required=True, help="Deployment id.")
@click.option(
    "--trust",
    "trust_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The trust policy to verify with and ship in the package.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="New folder for the package.",
)
@click.option(
    "--controls",
    "controls_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Control mapping YAML for the package's report.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary instead of text.")
def export_cmd(
    repository: Path,
    service: str,
    deployment: str,
    trust_path: Path,
    out: Path,
    controls_path: Path | None,
    as_json: bool,
) -> None:
    """Export a deployment's evidence package: git bundle, trust material, report, README.

    Verify it anywhere with 'afdp verify --bundle OUT/'. A branch that fails verification
    is still exported (its report and README say FAILED first) and the exit code is 1.
    """
    from afdp.audit.export import export_package
    from afdp.audit.report import VERIFIED

    package = export_package(
        repository,
        service=service,
        deployment=deployment,
        trust=trust_path,
        out=out,
        controls_path=controls_path,
    )
    if as_json:
        emit_json(
            {
                "verdict": package.verdict,
                "headline": package.headline,
                "folder": str(package.folder),
                "bundle": str(package.bundle),
                "branch": package.ref,
                "head": package.head,
                "record_count": package.record_count,
            }
        )
    else:
        echo(package.headline)
        echo(
            f"wrote evidence package {package.folder}/ ({package.bundle.name}, trust/, report.html, README.md)"
        )
        folder = shlex.quote(str(package.folder))
        echo(f"verify it with your own trust policy: afdp verify --bundle {folder} --trust TRUST.yaml")
        echo(
            f"(without --trust it checks against the package's own policy, prints the fingerprints "
            f"to compare out of band, and exits 1: see {folder}/README.md)"
        )
    if package.verdict != VERIFIED:
        sys.exit(EXIT_FAILED)
