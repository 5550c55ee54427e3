"""``afdp tsa``: AFDP's own RFC 3161 time-stamping authority (init, serve).

Thin by design: parse, call :mod:`afdp.evidence.notary`, print. The embedded TSA is for
development and air-gapped teams; production evidence should be time-stamped by one or
more public or company TSAs (see ``notary/README.md``).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType

import click

from afdp.cli.output import echo, emit_json

DEFAULT_PORT = 3161


@click.group("tsa")
def tsa_group() -> None:
    """Run AFDP's own RFC3161 time-stamping authority (development / air-gapped)."""


@tsa_group.command("init")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--name",
    "common_name",
    default="AFDP development TSA",
    show_default=True,
    help="Common name of the TSA certificate (the root gets ' root' appended).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing TSA in DIRECTORY.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def tsa_init_cmd(directory: Path, common_name: str, force: bool, as_json: bool) -> None:
    """Create a TSA in DIRECTORY: root.pem (CA to trust), tsa.pem and key.pem (0600).

    The root's private key is discarded once it has issued tsa.pem, so no second TSA
    certificate can ever be minted under the root auditors pin.
    """
    from afdp.evidence.notary import DEV_TSA_WARNING, init_tsa

    files = init_tsa(directory, common_name=common_name, force=force)
    if as_json:
        emit_json(
            {
                "directory": str(files.directory),
                "root": str(files.root),
                "certificate": str(files.certificate),
                "key": str(files.key),
                "root_sha256": files.root_sha256,
            }
        )
        return
    echo(f"Wrote {files.root} (root CA: pin it with 'afdp trust init --tsa-root')")
    echo(f"      {files.certificate} (TSA certificate) and {files.key} (private, 0600)")
    echo(f"root sha256 {files.root_sha256}")
    echo(DEV_TSA_WARNING)


@tsa_group.command("serve")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="TCP port; 0 picks a free one (printed).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; loopback by default.",
)
def tsa_serve_cmd(directory: Path, port: int, host: str) -> None:
    """Serve the TSA in DIRECTORY over HTTP (RFC 3161, application/timestamp-query).

    Runs until Ctrl-C (or SIGTERM), then stops cleanly with exit code 0.
    """
    from afdp.evidence.notary import DEV_TSA_WARNING, EmbeddedTSA, serve

    tsa = EmbeddedTSA.load(directory)
    server = serve(tsa, host=host, port=port)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # Explicit handlers: a background job may inherit SIGINT ignored, and SIGTERM (from
    # a service manager or a test) should stop as cleanly as Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, stop)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        echo(f"AFDP TSA serving {directory} at {server.url}")
        echo(DEV_TSA_WARNING)
        echo(f"Use: afdp record ... --tsa {server.url}   (Ctrl-C to stop)")
        sys.stdout.flush()
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    echo("AFDP TSA stopped")
