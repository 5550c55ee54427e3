"""``afdp serve``: the signed intake, the dashboard and ``/metrics`` (docs/service.md).

Thin: check the options and the environment, build the app (:mod:`afdp.service.app`), serve.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from afdp.cli.output import echo, show_log_records
from afdp.errors import UsageError

SECRET_ENV = "AFDP_WEBHOOK_SECRET"
TOKEN_ENV = "AFDP_UI_TOKEN"
#: Shortest secret or token accepted (bytes): a guessable one protects nothing.
MIN_SECRET = 16


@click.command("serve")
@click.option("--repo", "repository", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Evidence Git repository the dashboard reads (the flows write it).")
@click.option("--config", "config", type=click.Path(path_type=Path, dir_okay=False), default="services.yaml",
              show_default=True, help="Services file: each service's Prefect deployment.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8700, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--trust", type=click.Path(path_type=Path, dir_okay=False),
              help="Trust policy the dashboard verifies every branch with (without it nothing reads verified).")
@click.option("--allow-remote", is_flag=True,
              help="Allow a non-loopback --host (needs AFDP_UI_TOKEN; put TLS in front, docs/service.md).")
@click.option("--proxy-headers", is_flag=True,
              help="Trust X-Forwarded-Proto/For from a reverse proxy on loopback (secure cookies behind TLS; "
                   "the login limits count the client the proxy names).")
@click.option("--max-body", default=256 * 1024, show_default=True, type=click.IntRange(1024, 25 * 1024 * 1024),
              help="Largest request body accepted, in bytes (larger: 413).")
@click.option("--state", "ledger", type=click.Path(path_type=Path, dir_okay=False),
              help="Replay ledger and outbox of accepted events (SQLite, on a local disk). "
              "Default: <git dir>/afdp-serve/intake.sqlite.")
def serve_cmd(repository: Path, config: Path, host: str, port: int, trust: Path | None, allow_remote: bool,
              proxy_headers: bool, max_body: int, ledger: Path | None) -> None:
    """Serve the webhook intake, the dashboard and /metrics until interrupted.

    Deployment events (POST /events/github, POST /events) signed with AFDP_WEBHOOK_SECRET
    become Prefect flow runs of the service's deployment; the dashboard (GET /) and
    /metrics need AFDP_UI_TOKEN. Exit 2 for a usage error (no secret, a remote --host
    without --allow-remote and a token, a bad services file).
    """
    from afdp.service.app import ServeSettings, create_app, serve_forever
    from afdp.service.config import is_loopback, load_services
    from afdp.service.submit import PrefectSubmitter

    secret = os.environ.get(SECRET_ENV, "")
    if len(secret.encode()) < MIN_SECRET:
        raise UsageError(f"set {SECRET_ENV} (at least {MIN_SECRET} bytes): the intake checks every event's signature with it")
    token = os.environ.get(TOKEN_ENV) or None
    if token is not None and len(token.encode()) < MIN_SECRET:
        raise UsageError(f"{TOKEN_ENV} is shorter than {MIN_SECRET} bytes")
    if not is_loopback(host):
        if not allow_remote:
            raise UsageError(f"--host {host} is not loopback: pass --allow-remote (and serve behind TLS) to listen on it")
        if token is None:
            raise UsageError(f"--host {host} with --allow-remote needs {TOKEN_ENV} set")
    services = load_services(config)
    if trust is not None and not trust.is_file():
        raise UsageError(f"--trust {trust}: no such file")
    settings = ServeSettings(
        repository=repository,
        services=services,
        webhook_secret=secret.encode(),
        submitter=PrefectSubmitter(),
        ui_token=token,
        trust_policy=trust,
        ledger_path=ledger,
        max_body=max_body,
    )
    app = create_app(settings)  # opens the repository and the replay ledger: fails fast
    settings.submitter.prepare()
    shown = f"[{host}]" if ":" in host else host
    echo(
        f"afdp serve: http://{shown}:{port}/ ({len(services.by_name)} service(s); intake POST /events and "
        f"/events/github; dashboard {'on' if token else f'off (no {TOKEN_ENV})'})",
        err=True,
    )
    show_log_records("afdp.serve")  # its lines quote delivery ids and errors from requests and runs
    serve_forever(app, host=host, port=port, proxy_headers=proxy_headers,
                  forwarded_allow_ips="127.0.0.1" if proxy_headers else None)
