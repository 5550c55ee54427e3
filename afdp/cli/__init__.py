"""The ``afdp`` command line: parse, call one library function, print, exit.

Sub-commands live in sibling modules and are imported lazily, so ``afdp verify --help``
never pays for Prefect, pyHanko or the flows. Every :class:`~afdp.errors.AfdpError` is
turned into one line on stderr and its exit code; nothing else is caught.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

import click

from afdp.errors import EXIT_OPERATIONAL, AfdpError, visible

# command name -> "module:attribute"; the order here is the order in --help.
_COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("afdp.cli.init", "init_cmd"),
    "keys": ("afdp.cli.init", "keys_group"),
    "tsa": ("afdp.cli.notary", "tsa_group"),
    "trust": ("afdp.cli.init", "trust_group"),
    "record": ("afdp.cli.record", "record_cmd"),
    "seal": ("afdp.cli.record", "seal_cmd"),
    "verify": ("afdp.cli.verify", "verify_cmd"),
    "log": ("afdp.cli.log", "log_cmd"),
    "report": ("afdp.cli.audit", "report_cmd"),
    "export": ("afdp.cli.audit", "export_cmd"),
    "validate": ("afdp.cli.workflow", "validate_cmd"),
    "plan": ("afdp.cli.workflow", "plan_cmd"),
    "run": ("afdp.cli.run", "run_cmd"),
    "demo": ("afdp.cli.run", "demo_cmd"),
    # Learning from evidence (docs/learning.md).
    "dataset": ("afdp.cli.dataset", "dataset_group"),
    "replay": ("afdp.cli.dataset", "replay_cmd"),
    "similar": ("afdp.cli.predict", "similar_cmd"),
    "predict": ("afdp.cli.predict", "predict_cmd"),
    "insights": ("afdp.cli.predict", "insights_cmd"),
    "import": ("afdp.cli.history", "import_cmd"),
    # AFDP as a service (docs/service.md).
    "serve": ("afdp.cli.serve", "serve_cmd"),
    "find": ("afdp.cli.remote", "find_cmd"),
    "push": ("afdp.cli.remote", "push_cmd"),
}

_SHORT_HELP: dict[str, str] = {
    "init": "Create (or adopt) an evidence Git repository.",
    "keys": "Generate signing keys.",
    "tsa": "Run AFDP's own RFC3161 time-stamping authority.",
    "trust": "Write an auditor's trust policy.",
    "record": "Record one signed, time-stamped step result.",
    "seal": "Seal a deployment's evidence branch.",
    "verify": "Verify evidence branches offline against a trust policy.",
    "log": "Print the story of a deployment.",
    "report": "Verify and write a compliance report (HTML, signed PDF, JSON).",
    "export": "Export a deployment's evidence package (git bundle, trust, report).",
    "validate": "Validate a workflow definition.",
    "plan": "Show what a workflow would do (dry run).",
    "run": "Run an evidence workflow for one deployment (Prefect flow).",
    "demo": "Run the whole story locally: no config, no network.",
    "dataset": "Export a training dataset from evidence that verified.",
    "replay": "Recompute recorded verdicts from the recorded samples.",
    "similar": "List past deployments most like a planned one.",
    "predict": "Predict a deployment's impact, with intervals, from verified history.",
    "insights": "Report patterns learned from verified deployment history.",
    "import": "Import past deployments as evidence marked imported.",
    "serve": "Serve the webhook intake, the dashboard and /metrics.",
    "find": "Find what happened when a commit or image was deployed.",
    "push": "Push evidence branches to a central remote (never forced).",
}


class _OutputClosed(Exception):
    """Standard output's reader went away (``afdp log | head``): exit 3, silently."""


def _system_errnos() -> frozenset[int]:
    import errno

    return frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.EROFS})


#: What the operating system refuses for lack of room or a failing device: operational.
_SYSTEM_ERRNOS = _system_errnos()


def _silence_stdout() -> None:
    """Point standard output at /dev/null, so exit does not fail flushing it again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in _COMMANDS if _available(name)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None or not _available(cmd_name):
            return None
        module = importlib.import_module(target[0])
        command: click.Command = getattr(module, target[1])
        return command

    def invoke(self, ctx: click.Context) -> Any:
        # click turns a broken pipe inside a command into exit 1, which the contract keeps
        # for a failed verification or a rollback (`afdp verify | head -1` under pipefail
        # would read as FAILED). Standard output failing is operational: main() gives 3.
        try:
            return super().invoke(ctx)
        except BrokenPipeError as exc:
            raise _OutputClosed() from exc

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _SHORT_HELP.get(name, "")) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _available(name: str) -> bool:
    return importlib.util.find_spec(_COMMANDS[name][0]) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="afdp", prog_name="afdp")
def cli() -> None:
    """AFDP: signed, time-stamped, Git-native evidence for every deployment.

    Exit codes: 0 ok; 1 verification failed, policy violated or (afdp run) rollback
    decided; 2 usage error; 3 operational error that stopped the command (TSA or
    signer unreachable, repository locked). A collector that fails during a run is
    recorded as a failed step, not an exit code.
    """


def main(argv: list[str] | None = None) -> Any:
    """Run the CLI; map AFDP errors to one stderr line and the contract's exit code.

    With ``--json``, a failure is also a JSON object on stdout (``{"ok": false,
    "error": ..., "exit_code": N}``), so a script reading stdout never gets nothing.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    wants_json = "--json" in args
    try:
        return cli.main(args=args, prog_name="afdp", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        # One line, like every other error: the command, what was wrong, where help is.
        # (click's own form is three lines: usage, a hint and the error.)
        path = exc.ctx.command_path if exc.ctx is not None else "afdp"
        message = " ".join(exc.format_message().split())
        click.echo(f"{path}: error: {visible(message)} (see '{path} --help')", err=True)
        _fail_json(wants_json, message, exc.exit_code)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"Error: {visible(exc.format_message())}", err=True)  # as exc.show(), shown
        _fail_json(wants_json, exc.format_message(), exc.exit_code)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("afdp: aborted", err=True)
        sys.exit(130)
    except AfdpError as exc:
        # AFDP's own multi-line diagnostics (a workflow's findings) keep their lines
        shown = "\n".join(visible(line) for line in exc.diagnostics().split("\n"))
        click.echo(f"afdp: error: {shown}", err=True)
        _fail_json(wants_json, exc.diagnostics(), exc.exit_code)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("afdp: interrupted; evidence already committed is unchanged", err=True)
        sys.exit(130)
    except (BrokenPipeError, _OutputClosed):
        # The reader went away (`| head`): silent, as for any Unix tool, and never an
        # exit code a caller could read as a verdict.
        _silence_stdout()
        sys.exit(EXIT_OPERATIONAL)
    except (Exception, RecursionError, MemoryError) as exc:
        # A failure AFDP did not foresee is still one line and an exit code that no
        # caller can read as a verdict (1 means rollback or a failed verification): 3.
        # AFDP_DEBUG=1 shows the traceback for a bug report.
        import os

        if os.environ.get("AFDP_DEBUG"):
            raise
        text = " ".join(str(exc).split())[:300]
        message = f"internal error: {type(exc).__name__}{': ' + text if text else ''} (AFDP_DEBUG=1 shows where; please report it)"
        if isinstance(exc, OSError) and exc.errno in _SYSTEM_ERRNOS:
            # A full disk or a failing device (standard output on /dev/full included) is
            # the machine's state, not a bug to report.
            where = f": {exc.filename}" if exc.filename else ""
            message = f"the system refused a read or write: {exc.strerror}{where}"
        click.echo(f"afdp: error: {visible(message)}", err=True)
        _fail_json(wants_json, message, EXIT_OPERATIONAL)
        sys.exit(EXIT_OPERATIONAL)


def _fail_json(wanted: bool, error: str, exit_code: int) -> None:
    if wanted:
        import json

        try:
            click.echo(json.dumps({"ok": False, "error": error, "exit_code": exit_code}))
        except OSError:
            # Standard output itself is what failed: the stderr line already said it.
            _silence_stdout()
