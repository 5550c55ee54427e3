"""Setting up: ``afdp init`` (an evidence repository), ``afdp keys`` and ``afdp trust init``.

Thin by design: parse, call one library function, print. Heavy modules are imported
inside the commands, so ``--help`` is fast.
"""

from __future__ import annotations

from pathlib import Path

import click

from afdp.cli.options import _emit_json, json_option
from afdp.cli.output import echo
from afdp.errors import StorageError, UsageError


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
        echo(f"{'Created' if created else 'Adopted'} evidence repository {path}")
        for example in copied:
            echo(f"Wrote example workflow {example}")
        if examples:
            from afdp.workflow.starter import example_files, guide_files

            kept = len(example_files()) + len(guide_files()) - len(copied)
            if kept:
                echo(f"Kept {kept} example workflow(s) already in {path / 'workflows'} (never overwritten)")


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

    try:
        generated = generate_key(path, force=force)
    except OSError as exc:  # the key's folder cannot be made or written (a file, read-only)
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
    if as_json:
        _emit_json(
            {
                "private_key": str(generated.private_path),
                "public_key": str(generated.public_path),
                "keyid": generated.keyid,
            }
        )
    else:
        echo(f"Wrote {generated.private_path} (private, 0600) and {generated.public_path}")
        echo(f"keyid {generated.keyid}")


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
    echo(allowed_signers_line(pem, principal=principal))


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
    try:
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
    except OSError as exc:  # reading the keys is wrapped already: this is the policy's write
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
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
        echo(
            f"Wrote trust policy {path}: {len(policy.signers)} signer(s), {len(policy.tsa_roots_pem)} TSA root(s)"
        )
