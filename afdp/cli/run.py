"""The commands that run flows: ``afdp run`` and ``afdp demo``.

Thin: parse, build a request, call one library function (:func:`afdp.pipeline.runner.run_workflow`
directly, or the Prefect flow in :mod:`afdp.pipeline.flow` over it), print. Prefect is imported
only when a run asks for it, so ``afdp run --help`` stays fast.

Ctrl-C is handled here, before click would turn it into "Aborted": one line, exit 130;
records are written atomically, so the branch stays at its last complete record. With
``--json``, a failure also prints ``{"ok": false, "error": ..., "exit_code": N}`` on stdout.
"""

from __future__ import annotations

import contextlib
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from afdp.cli.output import console, echo, emit_json, line, styled
from afdp.errors import EXIT_FAILED, UsageError

_TSA_ENV = "AFDP_TSA_URLS"
_SIGNAL_DIR_ENV = "AFDP_SIGNAL_DIR"
_REMOTE_ENV = "AFDP_EVIDENCE_REMOTE"
#: ``--fast`` divides every wait, window and timeout by this.
FAST_SCALE = 20.0
EXIT_INTERRUPTED = 130
EXIT_GRACE_SECONDS = 1.5
INTERRUPTED = "afdp: interrupted; evidence already committed is unchanged"


def _interrupted() -> None:
    """Print the one line and exit 130 within a couple of seconds.

    Prefect's and the collectors' worker threads must not hold the exit up (every record
    is already committed or not written at all): exit handlers (e.g. stopping Prefect's
    ephemeral server) get up to :data:`EXIT_GRACE_SECONDS`, then the process exits.
    """
    import atexit
    import threading

    # A spinner must stop before the message: otherwise its refresh thread draws over
    # the line and the terminal is left with a hidden cursor (os._exit skips rich's
    # clean-up). Stopping a rich display takes its lock, which the interrupted thread
    # may hold, so its refresh threads are told to stop (lock-free) and the line is
    # cleared on the real stdout (rich redirects sys.stdout while a display is live).
    with contextlib.suppress(Exception):
        from rich.live import _RefreshThread

        for thread in threading.enumerate():
            if isinstance(thread, _RefreshThread):
                thread.done.set()
                thread.join(0.2)
    terminal = sys.__stdout__
    if terminal is not None and terminal.isatty():
        with contextlib.suppress(Exception):
            terminal.write("\r\x1b[2K\x1b[?25h")  # clear the spinner's line, show the cursor
            terminal.flush()
    click.echo(INTERRUPTED, err=True, file=sys.__stderr__)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    done = threading.Thread(target=atexit._run_exitfuncs, daemon=True)  # noqa: SLF001
    done.start()
    done.join(EXIT_GRACE_SECONDS)
    os._exit(EXIT_INTERRUPTED)


@contextlib.contextmanager
def _on_interrupt() -> Any:
    """Handle SIGINT ourselves while a run is in flight: Prefect's engine would otherwise
    catch the KeyboardInterrupt in a task, crash the flow run, log tracebacks and wait
    for its workers; click would print "Aborted!".
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: _interrupted())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _parse_set(values: tuple[str, ...]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set {item!r}: expected NAME=VALUE (or workflow.NAME=VALUE)")
        if key.startswith("deployment."):
            raise UsageError(
                f"--set {key}: deployment values come from their options (--commit, --deployer, "
                "--team, --environment, --version)"
            )
        name = key.removeprefix("workflow.")
        if not name or "." in name:
            raise UsageError(f"--set {key}: only workflow variables can be set (workflow.NAME)")
        # Kept as text: the runner types it by the variable's default, as `afdp plan` does
        # (so "1.10" stays "1.10" for a string variable).
        overrides[name] = raw
    return overrides


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise UsageError(f"--deployed-at {text!r} is not an RFC 3339 time") from exc
    if moment.tzinfo is None:
        raise UsageError(f"--deployed-at {text!r} needs a timezone (e.g. Z)")
    return moment.astimezone(UTC)


def _tsa_urls(values: tuple[str, ...]) -> tuple[str, ...]:
    urls = list(values) or [u for u in os.environ.get(_TSA_ENV, "").split() if u]
    if not urls:
        raise UsageError(f"no time-stamping authority: pass --tsa URL (repeatable) or set ${_TSA_ENV}")
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"--tsa {url!r} is not an http(s) URL")
    return tuple(urls)


@click.command("run")
@click.argument("workflow_path", metavar="WORKFLOW", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--service", required=True, help="Service name (A-Z a-z 0-9 . _ -).")
@click.option("--deployment", required=True, help="Deployment id (A-Z a-z 0-9 . _ -).")
@click.option("--commit", help="Git commit being deployed (a full id is also the decision record's in-toto subject).")
@click.option("--image", help="Container image deployed, by digest: NAME@sha256:HEX (the decision record's in-toto subject).")
@click.option("--deployer", help="Who deploys (user or CI identity).")
@click.option("--team", help="The team that owns the deployment (recorded in the genesis record; "
              "letters, digits, '.', '_', '-', '/', at most 100).")
@click.option("--environment", help="Target environment (production, staging, ...).")
@click.option("--version", "service_version", help="Version being deployed.")
@click.option("--changed-file", "changed_files", multiple=True, metavar="PATH", help="A changed file (repeatable).")
@click.option("--deployment-size", type=click.IntRange(min=0), help="Size of the change (e.g. lines changed).")
@click.option("--git-branch", help="Source branch of the commit.")
@click.option("--deployed-at", help="When the deployment happened (RFC 3339); default: when the mark step runs.")
@click.option("--repo", "repository", required=True, type=click.Path(path_type=Path), help="Evidence Git repository.")
@click.option("--key", required=True, help="Private key file (PEM) or securesystemslib key URI.")
@click.option("--public-key", type=click.Path(dir_okay=False), help="PEM public key; required with a key URI.")
@click.option("--tsa", multiple=True, metavar="URL", help=f"RFC3161 TSA URL (repeatable). Default: ${_TSA_ENV}.")
@click.option("--set", "settings", multiple=True, metavar="NAME=VALUE", help="Set a workflow variable (repeatable).")
@click.option("--phase", default="all", show_default=True, metavar="all|pre|post|PHASE",
              help="pre: up to the deployment mark (branch left open); post: from the mark, then seal; "
                   "a phase of the workflow by name: every step up to the end of that phase.")
@click.option("--trust", "trust", type=click.Path(path_type=Path, dir_okay=False),
              help="Trust policy for reading past evidence (correlation: only branches that verify count).")
@click.option("--signal", "signals", multiple=True, metavar="NAME", help="Treat signal NAME as received (repeatable).")
@click.option("--signal-dir", type=click.Path(path_type=Path, file_okay=False),
              help=f"Wait for signals as files named after them in this folder. Default: ${_SIGNAL_DIR_ENV}.")
@click.option("--policy", type=click.Path(path_type=Path, dir_okay=False), help="Admission policy (default: the shipped one).")
@click.option("--results-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Where a 'store: {results: FILE}' step writes its results file. Default: the current directory.")
@click.option("--trigger", type=click.Choice(["deployment_completed", "deployment_started", "manual_trigger"]),
              default="manual_trigger", show_default=True,
              help="What started this run (recorded); must be one of the workflow's triggers.")
@click.option("--fast", is_flag=True, help=f"Divide every wait and capture window by {FAST_SCALE:g} (demos, tests).")
@click.option("--time-scale", type=click.FloatRange(min=1.0), help="Divide every wait and window by this (overrides --fast; recorded in the evidence).")
@click.option("--prefect/--no-prefect", default=True, show_default=True,
              help="Run as a Prefect flow (PREFECT_API_URL, or Prefect's ephemeral mode).")
@click.option("--push", "push_url", metavar="URL",
              help="At the end, push the deployment's branch to this evidence remote (never forced); with "
                   "--trust, only if it verifies against that policy. "
                   "If it cannot be pushed the run still succeeds: a warning, and the branch is queued for "
                   "'afdp push --pending' (one that fails verification is not queued). Default: $AFDP_EVIDENCE_REMOTE.")
@click.option("--json", "as_json", is_flag=True, help="Print the run's outcome as JSON.")
def run_cmd(**options: Any) -> None:
    """Run an evidence workflow for one deployment; every step becomes a signed record.

    Exit 0 when the run completed (failed steps are recorded evidence, not errors);
    1 when the decision is rollback or the workflow is invalid or not admitted;
    2 for usage errors; 3 when evidence could not be written (TSA, signer, repository)
    or another run is recording the same deployment; 130 when interrupted (Ctrl-C).
    """
    try:
        with _on_interrupt():
            _run(**options)
    except KeyboardInterrupt:
        _interrupted()


def _run(
    workflow_path: Path,
    service: str,
    deployment: str,
    commit: str | None,
    image: str | None,
    deployer: str | None,
    team: str | None,
    environment: str | None,
    service_version: str | None,
    changed_files: tuple[str, ...],
    deployment_size: int | None,
    git_branch: str | None,
    deployed_at: str | None,
    repository: Path,
    key: str,
    public_key: str | None,
    tsa: tuple[str, ...],
    settings: tuple[str, ...],
    phase: str,
    trust: Path | None,
    signals: tuple[str, ...],
    signal_dir: Path | None,
    policy: Path | None,
    results_dir: Path | None,
    trigger: str,
    fast: bool,
    time_scale: float | None,
    prefect: bool,
    push_url: str | None,
    as_json: bool,
) -> None:
    push_url = push_url or os.environ.get(_REMOTE_ENV) or None
    if push_url:
        from afdp.evidence.remote import check_remote_url

        check_remote_url(push_url)  # a bad URL is a usage error before anything runs
    push_policy = None
    if push_url and trust is not None:  # the branch is verified before it is pushed
        from afdp.evidence.trust import load_trust_policy

        push_policy = load_trust_policy(trust, evidence_repository=repository)
    env_dir = os.environ.get(_SIGNAL_DIR_ENV)
    params: dict[str, Any] = {
        "workflow_path": str(workflow_path),
        "service": service,
        "deployment": deployment,
        "repository": str(repository),
        "key": key,
        "public_key": public_key,
        "tsa_urls": list(_tsa_urls(tsa)),
        "info": {
            "commit": commit,
            "image": image,
            "deployer": deployer,
            "team": team,
            "environment": environment,
            "version": service_version,
            "changed_files": list(changed_files),
            "deployment_size": deployment_size,
            "branch": git_branch,
            "deployed_at": deployed_at and _parse_time(deployed_at).isoformat(),  # type: ignore[union-attr]
        },
        "overrides": _parse_set(settings),
        "phase": phase,
        "time_scale": time_scale or (FAST_SCALE if fast else 1.0),
        "signals": list(signals),
        "signal_dir": str(signal_dir or env_dir) if (signal_dir or env_dir) else None,
        "policy": str(policy) if policy else None,
        "results_dir": str(results_dir) if results_dir else None,
        "trigger": trigger,
    }
    from afdp.pipeline.runner import prepare_request, run_workflow

    progress = _progress_printer(enabled=not as_json)
    # Workflow, admission and key are checked here, before any flow engine starts.
    request = prepare_request(**params, progress=progress)
    if trust is not None:
        import dataclasses

        request = dataclasses.replace(request, trust_policy=trust)
    try:
        outcome = _run_with_prefect(params, progress, request) if prefect else run_workflow(request)
    finally:
        if progress is not None:
            progress.close()
    pushed = _push(repository, push_url, outcome, push_policy) if push_url else None
    if as_json:
        document = outcome.to_json()
        if pushed is not None:
            document["push"] = pushed.to_json()
        emit_json(document)
    else:
        print_outcome(outcome)
        if pushed is not None and pushed.report is not None and pushed.report.ok:
            branch = pushed.report.branches[0]
            checked = ""
            if branch.outcome in ("created", "pushed"):  # records were sent: were they verified first?
                checked = " (unverified)" if branch.verification == "unchecked" else f" ({branch.verification})"
            echo(f"pushed: {branch.ref.removeprefix('refs/heads/')} {branch.outcome} on {pushed.report.remote}{checked}")
    if pushed is not None and pushed.warning:
        echo(f"afdp: warning: {pushed.warning}", err=True)
    if outcome.decision and outcome.decision.get("action") == "rollback":
        sys.exit(EXIT_FAILED)


def _push(repository: Path, url: str, outcome: Any, policy: Any) -> Any:
    """Push the run's branch (afdp.evidence.remote.push_after_run): never raises for the
    remote; the evidence is committed locally whatever it says. With --trust, the branch
    is verified against it first (afdp.verify.gate) and not pushed if it fails."""
    from afdp.evidence.names import branch_ref
    from afdp.evidence.remote import push_after_run

    ref = branch_ref(outcome.service, outcome.deployment)
    if policy is None:
        return push_after_run(repository, url, ref)
    from afdp.verify.gate import TrustGate

    with TrustGate(policy) as gate:
        return push_after_run(repository, url, ref, gate=gate)


def _run_with_prefect(params: dict[str, Any], progress: Any, request: Any) -> Any:
    try:
        from afdp.pipeline.flow import run_with_prefect
    except ImportError as exc:
        if "prefect" in str(exc):
            raise UsageError(f"cannot run as a Prefect flow ({exc}); install prefect, or pass --no-prefect") from exc
        raise
    return run_with_prefect(params, progress=progress, request=request)


class StepPrinter:
    """Prints one line per recorded step; on a terminal, a spinner names the running step.

    Summaries and errors carry text from collectors (a remote page, a database message):
    they are escaped, never read as rich markup.
    """

    _COLOURS = {"ok": "green", "failed": "red", "skipped": "yellow"}

    def __init__(self) -> None:
        self.console = console()
        self.status: Any = None

    def starting(self, step: Any, seconds: float) -> None:
        if not self.console.is_terminal:
            return
        text = styled(f"{step.name} ({step.type})" + (f", up to {seconds:.0f}s" if seconds >= 1 else ""))
        if self.status is None:
            self.status = self.console.status(text)
            self.status.start()
        else:
            self.status.update(text)

    def __call__(self, report: Any) -> None:
        colour = self._COLOURS.get(report.status, "white")
        note = " (already recorded)" if report.resumed else ""
        self.console.print(
            line((f"{report.status:>7}", colour), f" #{report.sequence:<3} {report.name}: {report.summary or ''}{note}"),
            soft_wrap=True,
        )
        if report.error and not report.resumed:
            self.console.print(line("          ", (report.error, "red")), soft_wrap=True)

    def close(self) -> None:
        status, self.status = self.status, None
        if status is not None:
            status.stop()


def _progress_printer(*, enabled: bool) -> StepPrinter | None:
    return StepPrinter() if enabled else None


def print_outcome(outcome: Any) -> None:
    """Print the run's decision, action and branch state (after the per-step lines)."""
    out = console()
    decision = outcome.decision or {}
    action = outcome.action or {}
    if decision:
        out.print(
            line(
                "decision: ", (str(decision.get("action")), "bold"),
                f" ({decision.get('decision') or 'default'}; label {decision.get('label')}): {decision.get('reason', '')}",
            ),
            soft_wrap=True,
        )
    if action:
        from afdp.pipeline.runner import action_text

        out.print(f"action: {action_text(decision.get('action') or action.get('action'), action)}", soft_wrap=True)
    failed = len(outcome.failed_steps)
    state = "sealed" if outcome.sealed else "open (unsealed)"
    out.print(
        f"{outcome.service}/{outcome.deployment}: {len(outcome.steps)} step record(s)"
        + (f", {outcome.resumed} already recorded" if outcome.resumed else "")
        + (f", {failed} failed" if failed else "")
        + f"; branch {outcome.branch} {state}, head {(outcome.head or '-')[:12]}",
        soft_wrap=True,
    )


@click.command("demo")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Folder for the demo's key, TSA, evidence and trust policy (default: a new temp folder).")
@click.option("--fast", is_flag=True, help="Shorten every wait and window (finishes in well under a minute).")
@click.option("--prefect", is_flag=True, help="Run the workflow as a Prefect flow (ephemeral mode).")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def demo_cmd(out_dir: Path | None, fast: bool, prefect: bool, as_json: bool) -> None:
    """Run the whole story locally: no configuration, no network.

    Generates a dev key and a TSA, starts a demo service, records a baseline, deploys a
    version with a real regression, captures the impact, detects it, rolls back, writes
    the training record, seals and verifies. The last line printed is the exact
    'afdp verify' command that re-checks the evidence.
    """
    from afdp.demo.run import run_demo

    try:
        with _on_interrupt():
            result = run_demo(out_dir=out_dir, fast=fast, use_prefect=prefect, echo=None if as_json else echo)
    except KeyboardInterrupt:
        _interrupted()
    if as_json:
        emit_json(result.to_json())
        return
    echo(result.verify_command)
    if not result.verified:
        sys.exit(EXIT_FAILED)
