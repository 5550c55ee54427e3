"""Ledger commands: init, keys, trust, record, seal, verify, log.

Thin by design: parse, call one library function, print. Heavy modules (pygit2,
cryptography, securesystemslib) are imported inside the commands, so ``--help`` is fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import click

from afdp.errors import EXIT_FAILED, NotFoundError, UsageError

_TSA_ENV = "AFDP_TSA_URLS"


def _emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False, default=str))


def _tsa_urls(values: tuple[str, ...]) -> list[str]:
    urls = list(values) or [u for u in os.environ.get(_TSA_ENV, "").split() if u]
    if not urls:
        raise UsageError(
            f"no time-stamping authority: pass --tsa URL (repeatable) or set ${_TSA_ENV}"
        )
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"--tsa {url!r} is not an http(s) URL")
    return urls


repo_option = click.option(
    "--repo",
    "repository",
    required=True,
    type=click.Path(path_type=Path),
    help="Evidence Git repository.",
)
service_option = click.option("--service", required=True, help="Service name (A-Z a-z 0-9 . _ -).")
deployment_option = click.option(
    "--deployment", required=True, help="Deployment id (A-Z a-z 0-9 . _ -)."
)
key_option = click.option(
    "--key",
    help="Private key file (PKCS#8 PEM), a securesystemslib key URI (gcpkms:, awskms:, azurekms:, hsm:, file2:), or sigstore: / sigstore:staging for keyless.",
)
keyless_option = click.option(
    "--keyless",
    is_flag=True,
    help="Sign with Sigstore (keyless) using the CI job's ambient OIDC token; same as --key sigstore:.",
)


def _signer(key: str | None, public_key: str | None, keyless: bool) -> Any:
    from afdp.evidence.signing import load_signer

    if keyless and key and not key.startswith("sigstore:"):
        raise UsageError("give either --key or --keyless, not both")
    if not (key or keyless):
        raise UsageError("a signer is required: --key KEY (or a key URI), or --keyless")
    return load_signer(key or "sigstore:", public_key=public_key)
public_key_option = click.option(
    "--public-key", type=click.Path(dir_okay=False), help="PEM public key; required with a key URI."
)
tsa_option = click.option(
    "--tsa",
    "tsa",
    multiple=True,
    metavar="URL",
    help=f"RFC3161 TSA URL; repeat for failover (the first that answers wins). Default: ${_TSA_ENV}.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


@click.command("init")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--bare",
    is_flag=True,
    help="Create a bare repository (no work tree) that receives pushed evidence: it refuses "
    "non-fast-forward pushes and deletions from every client (receive.denyNonFastForwards, "
    "receive.denyDeletes).",
)
@click.option(
    "--examples", is_flag=True, help="Also copy the example workflows into PATH/workflows/."
)
@json_option
def init_cmd(path: Path, bare: bool, examples: bool, as_json: bool) -> None:
    """Create an evidence Git repository at PATH, or adopt the one there."""
    from afdp.evidence.remote import init_remote
    from afdp.evidence.store import init_repository
    from afdp.workflow.starter import install_examples

    _, created = init_remote(path) if bare else init_repository(path)
    copied = install_examples(path) if examples else []
    if as_json:
        _emit_json(
            {"repository": str(path), "created": created, "examples": [str(p) for p in copied]}
        )
    else:
        click.echo(f"{'Created' if created else 'Adopted'} evidence repository {path}")
        for example in copied:
            click.echo(f"Wrote example workflow {example}")


@click.group("keys")
def keys_group() -> None:
    """Generate signing keys."""


@keys_group.command("generate")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite existing key files.")
@json_option
def keys_generate_cmd(path: Path, force: bool, as_json: bool) -> None:
    """Write an ECDSA P-256 key to PATH (PKCS#8 PEM, 0600) and PATH.pub (PEM)."""
    from afdp.evidence.signing import generate_key

    generated = generate_key(path, force=force)
    if as_json:
        _emit_json(
            {
                "private_key": str(generated.private_path),
                "public_key": str(generated.public_path),
                "keyid": generated.keyid,
            }
        )
    else:
        click.echo(f"Wrote {generated.private_path} (private, 0600) and {generated.public_path}")
        click.echo(f"keyid {generated.keyid}")


@keys_group.command("allowed-signers")
@click.argument("public_key", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--principal",
    default="afdp@evidence.invalid",
    show_default=True,
    help="Principal to name (AFDP commits as afdp@evidence.invalid).",
)
def keys_allowed_signers_cmd(public_key: Path, principal: str) -> None:
    """Print a git allowed-signers line for PUBLIC_KEY (PEM), to check evidence commits.

    git -c gpg.format=ssh -c gpg.ssh.allowedSignersFile=FILE log --show-signature BRANCH
    """
    from afdp.errors import ConfigurationError
    from afdp.evidence.sshsig import allowed_signers_line

    try:
        pem = public_key.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {public_key}: {exc.strerror or exc}") from exc
    click.echo(allowed_signers_line(pem, principal=principal))


@click.group("trust")
def trust_group() -> None:
    """Write an auditor's trust policy."""


@trust_group.command("init")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--key",
    "keys",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="PEM public key that may sign (repeatable).",
)
@click.option(
    "--tsa-root",
    "tsa_roots",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="PEM root certificate of a TSA to trust (repeatable).",
)
@click.option(
    "--keyless-identity",
    "keyless_identities",
    multiple=True,
    help="Keyless (Sigstore) signer identity, e.g. a GitHub workflow URI (repeatable).",
)
@click.option(
    "--keyless-issuer",
    "keyless_issuers",
    multiple=True,
    help="OIDC issuer of the keyless identities: once for all, or once per --keyless-identity "
    "in the same order. Default: https://token.actions.githubusercontent.com.",
)
@click.option(
    "--sigstore-instance",
    type=click.Choice(["production", "staging"]),
    help="Sigstore instance whose trusted root (shipped with sigstore) verifies keyless records.",
)
@click.option(
    "--sigstore-trusted-root",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Pinned Sigstore trusted_root.json for keyless records (instead of the shipped one).",
)
@click.option(
    "--required-timestamps",
    default=1,
    show_default=True,
    type=click.IntRange(1, 10),
    help="Valid time-stamp tokens each record must carry.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@json_option
def trust_init_cmd(
    path: Path,
    keys: tuple[Path, ...],
    tsa_roots: tuple[Path, ...],
    keyless_identities: tuple[str, ...],
    keyless_issuers: tuple[str, ...],
    sigstore_instance: str | None,
    sigstore_trusted_root: Path | None,
    required_timestamps: int,
    force: bool,
    as_json: bool,
) -> None:
    """Write a trust policy at PATH from public keys and TSA root certificates."""
    from afdp.evidence.trust import write_trust_policy

    issuers = list(keyless_issuers) or ["https://token.actions.githubusercontent.com"]
    if len(issuers) == 1:
        issuers *= len(keyless_identities)
    if len(issuers) != len(keyless_identities):
        raise UsageError(
            "give --keyless-issuer once (for every identity) or once per --keyless-identity"
        )
    keyless = list(zip(keyless_identities, issuers, strict=True))
    policy = write_trust_policy(
        path,
        keys=list(keys),
        tsa_roots=list(tsa_roots),
        keyless=keyless,
        required_timestamps=required_timestamps,
        sigstore_instance=sigstore_instance,
        sigstore_trusted_root=sigstore_trusted_root,
        force=force,
    )
    summary = {
        "trust_policy": str(path),
        "signers": [
            {"name": s.name, "keyid": s.keyid, "identity": s.identity} for s in policy.signers
        ],
        "tsa_roots": [name for name, _ in policy.tsa_roots_pem],
    }
    if as_json:
        _emit_json(summary)
    else:
        click.echo(
            f"Wrote trust policy {path}: {len(policy.signers)} signer(s), {len(policy.tsa_roots_pem)} TSA root(s)"
        )


def _read_text(path: str, what: str) -> str:
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {what} {path}: {getattr(exc, 'strerror', None) or exc}") from exc


def _load_result(path: str) -> Any:
    text = _read_text(path, "result")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"result {path} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise UsageError(f"result {path} must be a JSON object, not {type(value).__name__}")
    return value


def _print_appended(written: list[Any], as_json: bool) -> None:
    if as_json:
        _emit_json([w.__dict__ for w in written])
        return
    for w in written:
        click.echo(
            f"record {w.sequence} ({w.step}) sha256:{w.envelope_sha256} time-stamped {w.timestamp} by {w.tsa_url}"
        )
    click.echo(f"branch {written[-1].branch} at {written[-1].commit_id[:12]}")


@click.command("record")
@repo_option
@service_option
@deployment_option
@click.option("--step", help="Step name (A-Z a-z 0-9 . _ -). Required without --batch.")
@click.option(
    "--result",
    "result_path",
    help="Step result: a JSON object file, or - for stdin. Required without --batch.",
)
@click.option(
    "--batch",
    "batch_path",
    help="Record many steps at once from a JSON Lines file (- for stdin), one "
    '{"step": ..., "result": {...}} object per line (optional: status, summary, error, '
    "index, workflow_digest). Each gets its own signature, time-stamp and commit; the "
    "branch moves once at the end, so a failure records nothing of the batch.",
)
@click.option(
    "--status", type=click.Choice(["ok", "failed", "skipped"]), help="Step status (default: ok)."
)
@click.option("--summary", help="One-line summary for git log.")
@click.option("--error", "error_text", help="Error text for a failed step.")
@click.option(
    "--index", type=click.IntRange(0), help="Step index in the workflow (default: position)."
)
@click.option("--workflow-digest", help="SHA-256 of the workflow this step belongs to.")
@click.option("--author", help="Git author 'Name <email>' for the commit (e.g. the deployer).")
@key_option
@keyless_option
@public_key_option
@tsa_option
@json_option
def record_cmd(
    repository: Path,
    service: str,
    deployment: str,
    step: str | None,
    result_path: str | None,
    batch_path: str | None,
    status: str | None,
    summary: str | None,
    error_text: str | None,
    index: int | None,
    workflow_digest: str | None,
    author: str | None,
    key: str | None,
    keyless: bool,
    public_key: str | None,
    tsa: tuple[str, ...],
    as_json: bool,
) -> None:
    """Record one step result (or a --batch of them) as signed, time-stamped evidence records."""
    from afdp.evidence import records as rec
    from afdp.evidence.ledger import append_record, append_records
    from afdp.evidence.names import branch_ref

    branch_ref(service, deployment)  # names first: a bad name is a usage error before any I/O
    urls = _tsa_urls(tsa)
    if batch_path is not None:
        given = [
            name
            for name, value in (
                ("--step", step),
                ("--result", result_path),
                ("--status", status),
                ("--summary", summary),
                ("--error", error_text),
                ("--index", index),
            )
            if value is not None
        ]
        if given:
            raise UsageError(f"--batch takes each record's fields from the file, not {', '.join(given)}")
        drafts = rec.batch_drafts(
            _read_text(batch_path, "batch"), source=batch_path, workflow_digest=workflow_digest
        )
        written = append_records(
            repository,
            service=service,
            deployment=deployment,
            drafts=drafts,
            signer=_signer(key, public_key, keyless),
            tsa_urls=urls,
            author=_parse_author(author),
        )
        _print_appended(written, as_json)
        return
    if step is None or result_path is None:
        raise UsageError("--step and --result are required (or --batch FILE)")
    draft = rec.RecordDraft(
        kind=rec.KIND_STEP,
        step=step,
        result=_load_result(result_path),
        status=status or "ok",
        index=index,
        summary=summary,
        error=error_text,
        workflow_digest=workflow_digest,
    )
    signer = _signer(key, public_key, keyless)
    written = append_record(
        repository,
        service=service,
        deployment=deployment,
        draft=draft,
        signer=signer,
        tsa_urls=urls,
        author=_parse_author(author),
    )
    _print_appended(written, as_json)


def _parse_author(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    name, _, rest = text.partition("<")
    email = rest.rstrip(">").strip()
    if not name.strip() or not email or "\n" in text:
        raise UsageError(f"--author {text!r} must look like 'Name <email>'")
    return name.strip(), email


@click.command("seal")
@repo_option
@service_option
@deployment_option
@key_option
@keyless_option
@public_key_option
@tsa_option
@json_option
def seal_cmd(
    repository: Path,
    service: str,
    deployment: str,
    key: str | None,
    keyless: bool,
    public_key: str | None,
    tsa: tuple[str, ...],
    as_json: bool,
) -> None:
    """Seal a deployment's branch: a last record covering every record before it."""
    from afdp.evidence.ledger import seal
    from afdp.evidence.names import branch_ref

    branch_ref(service, deployment)
    urls = _tsa_urls(tsa)
    written = seal(
        repository,
        service=service,
        deployment=deployment,
        signer=_signer(key, public_key, keyless),
        tsa_urls=urls,
    )
    _print_appended([written], as_json)


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
    from afdp.cli.output import print_reports, print_summary, summary_rows
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
        else:  # the package's own trust: says so first, lists what to compare, exit 1
            click.echo("\n".join(outcome.lines()))
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
                )
            ]
    return reports


def _write_bytes(data: bytes) -> None:
    """Write ``data`` to stdout byte for byte (a text-only stream gets the same bytes as text)."""
    sys.stdout.flush()
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:
        sys.stdout.write(data.decode("utf-8", "surrogateescape"))
        return
    buffer.write(data)
    buffer.flush()


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
            click.echo(f"afdp: {source.file}: {source.note}", err=True)
            sys.exit(EXIT_FAILED)
        if as_json:
            import base64

            _emit_json({**source.to_json(), "verification": verification,
                        "content_base64": base64.b64encode(source.data).decode()})
        else:
            if not source.verified:
                click.echo(f"afdp: warning: {source.file} is {source.note}", err=True)
            _write_bytes(source.data)
        return
    story = read_story(repository, service=service, deployment=deployment, trust=trust)
    if as_json:
        _emit_json(story)
    else:
        print_story(story)
    if trust is not None and not story["verified"]:
        sys.exit(EXIT_FAILED)
