"""Options and helpers the ledger commands share (--repo, --service, --key, --tsa, --json ...).

Nothing heavy is imported here: the signer is loaded inside :func:`_signer`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from afdp.errors import UsageError

_TSA_ENV = "AFDP_TSA_URLS"


def _emit_json(value: Any) -> None:
    from afdp.cli.output import emit_json

    emit_json(value)


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
