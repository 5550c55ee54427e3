"""The GitHub Action (``.github/actions/afdp``): run AFDP after a deploy, push, summarize.

``python -m afdp.audit.action`` reads the action's inputs from ``INPUT_*`` variables (the
composite action sets them) and the ``GITHUB_*`` variables the runner provides, then:

1. checks the inputs; keyless signing needs the job's OIDC token
   (``permissions: id-token: write``), else it stops here with nothing run or pushed;
2. opens the local evidence repository and, when the evidence remote already holds this
   deployment's branch (``phase: post`` after ``phase: pre`` in another job), fetches it;
3. runs ``afdp run WORKFLOW ... --json`` (the CLI contract of ``afdp run``);
4. verifies the branch offline against the ``trust`` policy, when one is given;
5. pushes the branch to the evidence remote (never forced: evidence is only appended);
6. appends a job summary (decision, baseline-vs-impact table, verify result) to
   ``$GITHUB_STEP_SUMMARY`` and sets the outputs ``decision``, ``action``,
   ``record-count``, ``branch``, ``head``, ``verified``, ``pushed`` and ``report`` (the
   HTML compliance report under ``$RUNNER_TEMP``, when verified) in ``$GITHUB_OUTPUT``.

Exit code: the run's (1 for a rollback decision unless ``fail-on-rollback: false``), 1 if
verification failed, 2 for bad inputs, 3 if the evidence could not be pushed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from afdp.errors import (
    EXIT_FAILED,
    EXIT_OK,
    AfdpError,
    NetworkError,
    UsageError,
)
from afdp.evidence import records as rec
from afdp.evidence.names import branch_ref, check_name

#: What ``afdp run --key`` is given for keyless (Sigstore) signing with the ambient
#: GitHub OIDC token (afdp.evidence.signing.KEYLESS_SCHEME; production Sigstore).
KEYLESS_KEY = "sigstore:"
SIGNERS = ("key", "kms", "keyless")
PHASES = ("all", "pre", "post")
OIDC_VARIABLES = ("ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN")
GIT_TIMEOUT = 120


@dataclass(frozen=True)
class ActionInputs:
    """The action's inputs, checked."""

    workflow: Path
    service: str
    deployment: str
    repository: Path
    remote: str | None
    phase: str
    tsa_urls: tuple[str, ...]
    signer: str
    key: str | None
    key_uri: str | None
    public_key: str | None
    trust: Path | None
    commit: str | None
    deployer: str | None
    environment: str | None
    version: str | None
    git_branch: str | None
    args: tuple[str, ...]
    fail_on_rollback: bool
    deployed_at: str | None = None
    team: str | None = None


@dataclass(frozen=True)
class ActionResult:
    """What the action did; ``exit_code`` is the step's."""

    branch: str
    decision: str | None
    action: str | None
    record_count: int
    head: str | None
    verified: str  # verified | unsealed | failed | skipped
    pushed: bool
    run_exit: int
    exit_code: int
    summary: str
    report: Path | None = None  # the HTML compliance report, when verified with a trust policy


def _input(env: Mapping[str, str], name: str) -> str | None:
    value = env.get("INPUT_" + name.upper().replace("-", "_"), "").strip()
    return value or None


def read_inputs(env: Mapping[str, str]) -> ActionInputs:
    """Return the checked inputs.

    Raises:
        UsageError: a required input is missing or invalid, or keyless signing was asked
            without an OIDC token.
    """
    workflow = _input(env, "workflow")
    service = _input(env, "service")
    if not workflow or not service:
        raise UsageError("inputs 'workflow' and 'service' are required")
    run_id = env.get("GITHUB_RUN_ID")
    deployment = _input(env, "deployment") or (
        f"gh-{run_id}-{env.get('GITHUB_RUN_ATTEMPT', '1')}" if run_id else None
    )
    if not deployment:
        raise UsageError("input 'deployment' is required outside GitHub Actions")
    check_name(service, what="service")
    check_name(deployment, what="deployment")
    # After a deploy, the default compares the window before the deploy (read back from
    # Prometheus history) with the window after it: `all` would take its "baseline" now,
    # after the deploy. The deploy time is the input, or when this step starts (the step
    # right after the deploy).
    phase = _input(env, "phase") or "post"
    if phase not in PHASES:
        raise UsageError(f"input 'phase' must be one of {', '.join(PHASES)}, not {phase!r}")
    deployed_at = _input(env, "deployed-at")
    if deployed_at:
        try:
            deployed_at = rec.format_time(rec.parse_time(deployed_at))
        except (ValueError, OverflowError):
            raise UsageError(f"input 'deployed-at' must be an RFC 3339 time, not {deployed_at!r}") from None
    elif phase == "post":
        deployed_at = rec.format_time(rec.utc_now())
    tsa_urls = tuple((_input(env, "tsa") or env.get("AFDP_TSA_URLS", "")).split())
    if not tsa_urls:
        raise UsageError("input 'tsa' is required: one or more RFC3161 TSA URLs")
    signer = _input(env, "signer") or "key"
    if signer not in SIGNERS:
        raise UsageError(f"input 'signer' must be one of {', '.join(SIGNERS)}, not {signer!r}")
    key, key_uri, public_key = _input(env, "key"), _input(env, "key-uri"), _input(env, "public-key")
    if signer == "key" and not key:
        raise UsageError(
            "signer 'key' needs input 'key': the PEM private key, e.g. ${{ secrets.AFDP_SIGNING_KEY }}"
        )
    if signer == "kms" and not (key_uri and public_key):
        raise UsageError("signer 'kms' needs inputs 'key-uri' and 'public-key'")
    for name, value in (("key", key if signer == "key" else None), ("public-key", public_key)):
        if value and "-----BEGIN" not in value and not Path(value).is_file():
            raise UsageError(f"input '{name}' is neither a PEM block nor a file on the runner")
    if signer == "keyless":
        missing = [name for name in OIDC_VARIABLES if not env.get(name)]
        if missing:
            raise UsageError(
                "keyless signing needs the job's OIDC token, but "
                f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: "
                "add 'permissions: id-token: write' to the job"
            )
    workspace = Path(env.get("GITHUB_WORKSPACE") or ".")
    trust = _input(env, "trust")
    repository = _input(env, "evidence-repository")
    return ActionInputs(
        workflow=workspace / workflow,
        service=service,
        deployment=deployment,
        repository=Path(repository)
        if repository
        else Path(env.get("RUNNER_TEMP") or tempfile.gettempdir()) / "afdp-evidence",
        remote=_input(env, "evidence-remote"),
        phase=phase,
        tsa_urls=tsa_urls,
        signer=signer,
        key=key,
        key_uri=key_uri,
        public_key=public_key,
        trust=workspace / trust if trust else None,
        commit=_input(env, "commit") or env.get("GITHUB_SHA"),
        deployer=_input(env, "deployer") or env.get("GITHUB_ACTOR"),
        environment=_input(env, "environment"),
        version=_input(env, "version"),
        team=_input(env, "team"),
        git_branch=env.get("GITHUB_REF_NAME"),
        deployed_at=deployed_at if phase == "post" else None,
        args=tuple(shlex.split(_input(env, "args") or "")),
        fail_on_rollback=(_input(env, "fail-on-rollback") or "true").lower() != "false",
    )


def command_data(text: str) -> str:
    """``text`` as the data of a GitHub workflow command (``::error::...``): one line, as
    GitHub's toolkit escapes it (``%`` ``\\r`` ``\\n``), so a message quoting evidence cannot
    start a command of its own (``\\n::add-mask::...``), and every other hidden character
    shown as an escape (:func:`afdp.errors.visible`)."""
    from afdp.errors import visible

    escaped = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return visible(escaped)


def redact(text: str) -> str:
    """Hide credentials in URLs (``https://user:token@host`` -> ``https://***@host``)."""
    return re.sub(r"(\w+://)[^/@\s]+@", r"\1***@", text)


def _git(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    # Pushing and fetching go through the git CLI: it is on every runner, and it brings
    # the runner's credential helpers and proxies, which pygit2's transport does not.
    try:
        return subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            check=False,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetworkError(f"git {args[0]} failed: {redact(str(exc))}") from exc


def fetch_existing(repository: Path, remote: str, ref: str) -> bool:
    """Fetch ``ref`` from ``remote`` if it has it; return whether it did.

    Raises:
        NetworkError: the remote cannot be reached, or the local branch diverges from it.
    """
    listed = _git("ls-remote", remote, ref, cwd=repository)
    if listed.returncode != 0:
        raise NetworkError(
            f"cannot read evidence remote {redact(remote)}: {redact(listed.stderr.strip())[:300]}"
        )
    if not listed.stdout.strip():
        return False
    fetched = _git("fetch", "--no-tags", remote, f"{ref}:{ref}", cwd=repository)
    if fetched.returncode != 0:
        raise NetworkError(
            f"cannot fetch {ref} from {redact(remote)}: {redact(fetched.stderr.strip())[:300]}"
        )
    return True


def push(repository: Path, remote: str, ref: str) -> None:
    """Push ``ref`` to ``remote`` as a fast-forward (evidence is never force-pushed).

    Raises:
        NetworkError: the push was refused or the remote is unreachable.
    """
    pushed = _git("push", "--porcelain", remote, f"{ref}:{ref}", cwd=repository)
    if pushed.returncode != 0:
        detail = (pushed.stderr.strip() or pushed.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise NetworkError(f"cannot push {ref} to {redact(remote)}: {redact(detail[0])[:300]}")


def _run_command(inputs: ActionInputs, key: str, public_key: str | None) -> list[str]:
    """``afdp run`` per its CLI contract (issue 4)."""
    command = [sys.executable, "-m", "afdp", "run", str(inputs.workflow)]
    command += ["--service", inputs.service, "--deployment", inputs.deployment]
    command += ["--repo", str(inputs.repository), "--key", key]
    if public_key:
        command += ["--public-key", public_key]
    for url in inputs.tsa_urls:
        command += ["--tsa", url]
    # The Action runs after a deploy: the deployment_completed trigger (args may override).
    command += ["--phase", inputs.phase, "--trigger", "deployment_completed", "--json"]
    if inputs.deployed_at:
        command += ["--deployed-at", inputs.deployed_at]
    for option, value in (
        ("--commit", inputs.commit),
        ("--deployer", inputs.deployer),
        ("--environment", inputs.environment),
        ("--version", inputs.version),
        ("--team", inputs.team),
        ("--git-branch", inputs.git_branch),
    ):
        if value:
            command += [option, value]
    return command + list(inputs.args)


def _secret_file(folder: Path, text: str, name: str) -> str:
    if "-----BEGIN" not in text:  # a path on the runner (checked by read_inputs)
        return text
    path = folder / name
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text if text.endswith("\n") else text + "\n")
    return str(path)


def run_action(env: Mapping[str, str]) -> ActionResult:
    """Run the whole action (steps 1-6 above) and return what it did.

    Raises:
        UsageError: bad inputs (nothing was run or pushed).
        NetworkError: the evidence remote could not be read or written.
    """
    from afdp.evidence.store import EvidenceStore, init_repository

    inputs = read_inputs(env)
    ref = branch_ref(inputs.service, inputs.deployment)
    if not inputs.workflow.is_file():
        raise UsageError(f"workflow file {inputs.workflow} does not exist")
    init_repository(inputs.repository)
    if inputs.remote:
        fetch_existing(inputs.repository, inputs.remote, ref)
    with tempfile.TemporaryDirectory(prefix="afdp-action-", dir=env.get("RUNNER_TEMP")) as scratch:
        folder = Path(scratch)
        if inputs.signer == "key":
            key, public_key = _secret_file(folder, inputs.key or "", "signing-key.pem"), None
        elif inputs.signer == "kms":
            key = inputs.key_uri or ""
            public_key = _secret_file(folder, inputs.public_key or "", "public-key.pem")
        else:
            key, public_key = KEYLESS_KEY, None
        done = subprocess.run(
            _run_command(inputs, key, public_key), stdout=subprocess.PIPE, text=True, check=False
        )
    outcome = _parse_outcome(done.stdout)
    store = EvidenceStore(inputs.repository)
    head = store.head(ref)
    report = _verify(inputs, head is not None)
    report_path = None
    if report is not None:
        from afdp.audit.report import write_report

        scratch_root = Path(env.get("RUNNER_TEMP") or tempfile.gettempdir())
        report_path = write_report(
            report,
            fmt="html",
            out=scratch_root / f"afdp-report-{inputs.service}-{inputs.deployment}.html",
        )
    pushed = False
    if head is not None and inputs.remote:
        push(inputs.repository, inputs.remote, ref)
        pushed = True
    decision = (outcome.get("decision") or {}) if outcome else {}
    if report is not None and report.sections and report.sections[0].findings.decision:
        decision = decision or report.sections[0].findings.decision
    record_count = len(store.history(head)) if head is not None else 0
    verified = report.sections[0].verdict.lower() if report is not None else "skipped"
    exit_code = done.returncode
    if (
        exit_code == EXIT_FAILED
        and decision.get("action") == "rollback"
        and not inputs.fail_on_rollback
    ):
        exit_code = EXIT_OK
    if verified == "failed":
        exit_code = exit_code or EXIT_FAILED
    summary = build_summary(
        inputs=inputs,
        outcome=outcome,
        report=report,
        run_exit=done.returncode,
        head=str(head.id) if head is not None else None,
        record_count=record_count,
        pushed=pushed,
    )
    return ActionResult(
        branch=ref.removeprefix("refs/heads/"),
        decision=decision.get("decision"),
        action=decision.get("action"),
        record_count=record_count,
        head=str(head.id) if head is not None else None,
        verified=verified,
        pushed=pushed,
        run_exit=done.returncode,
        exit_code=exit_code,
        summary=summary,
        report=report_path,
    )


def _parse_outcome(stdout: str) -> dict[str, Any] | None:
    try:
        value = json.loads(stdout)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _verify(inputs: ActionInputs, exists: bool) -> Any:
    if inputs.trust is None or not exists:
        return None
    from afdp.audit.report import build_report
    from afdp.evidence.trust import load_trust_policy

    policy = load_trust_policy(inputs.trust, evidence_repository=inputs.repository)
    return build_report(
        inputs.repository, policy=policy, service=inputs.service, deployment=inputs.deployment
    )


def build_summary(
    *,
    inputs: ActionInputs,
    outcome: Mapping[str, Any] | None,
    report: Any,
    run_exit: int,
    head: str | None,
    record_count: int,
    pushed: bool,
) -> str:
    """Return the job summary (GitHub-flavoured Markdown)."""
    from afdp.audit.report import build as report_build
    from afdp.audit.report.evidence import Findings
    from afdp.audit.report.html import impact_cells

    name = f"{inputs.service}/{inputs.deployment}"
    section = report.sections[0] if report is not None and report.sections else None
    lines = [f"## AFDP evidence: {name} (phase {inputs.phase})", ""]
    decision: Mapping[str, Any] = (outcome or {}).get("decision") or (
        section.findings.decision if section and section.findings.decision else {}
    )
    if decision:
        what = decision.get("action") or "none"
        lines.append(
            f"**Decision: {what}**"
            + (f" ({decision['decision']})" if decision.get("decision") else "")
            + (f": {decision['reason']}" if decision.get("reason") else "")
        )
    else:
        lines.append("**Decision:** none recorded in this phase")
    lines.append("")
    if section is not None:
        rows = list(section.impact)
    else:
        analysis = (outcome or {}).get("analysis")
        findings = Findings(
            {}, (), analysis if isinstance(analysis, dict) else None, None, None, None, None
        )
        rows = report_build.impact_rows(findings)
    if rows:
        # The same numbers, units and verdicts as the compliance report.
        lines += [
            "| metric | baseline | impact | change | relative | p-value | verdict |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for row in rows:
            cells = impact_cells(row)
            verdict = cells["verdict"] + (f": {cells['why']}" if cells["why"] else "")
            lines.append(
                f"| {_md(cells['metric'])} | {_md(cells['baseline'])} | {_md(cells['impact'])}"
                f" | {_md(cells['change'])} | {_md(cells['relative'])} | {_md(cells['p_value'])}"
                f" | {_md(verdict)} |"
            )
        lines.append("")
    if section is not None:
        lines.append(f"**Verify: {section.verdict}**: {_md(section.headline.split(': ', 1)[-1])}")
        for failure in section.verification.failures[:20]:
            lines.append(f"- {_md(str(failure))}")
    else:
        reason = "no trust policy given (input 'trust')" if head else "no evidence was written"
        lines.append(f"**Verify: skipped**: {reason}")
    lines.append("")
    branch = f"`afdp/{name}`"
    where = f" pushed to `{redact(inputs.remote)}`" if pushed and inputs.remote else " (not pushed)"
    lines.append(
        f"Evidence: {record_count} record(s) on {branch}"
        + (f" at `{head[:12]}`" if head else "")
        + where
        + f"; `afdp run` exited {run_exit}."
    )
    steps = (outcome or {}).get("steps") or []
    if steps:
        lines += [
            "",
            "<details><summary>Steps</summary>",
            "",
            "| # | step | status | summary |",
            "|---|---|---|---|",
        ]
        for step in steps:
            lines.append(
                f"| {step.get('sequence', '')} | {_md(str(step.get('name')))} | {_md(str(step.get('status')))} | {_md(str(step.get('summary') or ''))} |"
            )
        lines += ["", "</details>"]
    if inputs.trust is not None and head:
        lines += [
            "",
            "Re-check offline: `afdp verify --repo <clone of the evidence remote> "
            f"--service {inputs.service} --deployment {inputs.deployment} --trust {inputs.trust.name}`",
        ]
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_outputs(env: Mapping[str, str], result: ActionResult) -> None:
    """Append the summary to $GITHUB_STEP_SUMMARY and the outputs to $GITHUB_OUTPUT."""
    summary_path = env.get("GITHUB_STEP_SUMMARY")
    if summary_path:
        with open(summary_path, "a", encoding="utf-8") as handle:
            handle.write(result.summary)
    output_path = env.get("GITHUB_OUTPUT")
    if output_path:
        values = {
            "decision": result.decision or "none",
            "action": result.action or "none",
            "record-count": str(result.record_count),
            "branch": result.branch,
            "head": result.head or "",
            "verified": result.verified,
            "pushed": "true" if result.pushed else "false",
            "report": str(result.report) if result.report else "",
        }
        with open(output_path, "a", encoding="utf-8") as handle:
            for name, value in values.items():
                if "\n" in value:  # GitHub's multi-line syntax, with a delimiter never in value
                    delimiter = f"afdp_{uuid.uuid4().hex}"
                    handle.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
                else:
                    handle.write(f"{name}={value}\n")


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Entry point of ``python -m afdp.audit.action``; returns the exit code."""
    environment = os.environ if env is None else env
    try:
        result = run_action(environment)
    except AfdpError as exc:
        print(f"::error title=AFDP::{command_data(redact(exc.diagnostics()))}", file=sys.stderr)
        return exc.exit_code
    write_outputs(environment, result)
    print(
        f"AFDP: {result.branch}: {result.record_count} record(s), decision {result.action or 'none'}, "
        f"verify {result.verified}, {'pushed' if result.pushed else 'not pushed'}"
    )
    return result.exit_code


if __name__ == "__main__":  # pragma: no cover - exercised through the composite action
    sys.exit(main())
