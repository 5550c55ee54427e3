"""Service commands over many deployments: ``afdp push`` (the central evidence remote)
and ``afdp find`` (what happened when a commit or image was deployed).

Thin: parse, call one library function, print, exit.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from afdp.cli.output import console, emit_json, line, plain_rows
from afdp.errors import UsageError

_OUTCOME_STYLE = {
    "created": "green",
    "pushed": "green",
    "up-to-date": "green",
    "behind": "yellow",
    "diverged": "bold red",
    "rejected": "bold red",
    "invalid": "bold red",
    "refused": "bold red",
    "remote-failed": "bold red",
}


def _branch_ref(text: str) -> str:
    from afdp.evidence.names import BRANCH_PREFIX, parse_branch_ref

    ref = text if text.startswith("refs/") else "refs/heads/" + (text if text.startswith("afdp/") else f"afdp/{text}")
    if parse_branch_ref(ref) is None:
        raise UsageError(f"--branch {text!r} is not an AFDP evidence branch ({BRANCH_PREFIX[len('refs/heads/'):]}<service>/<deployment>)")
    return ref


@click.command("push")
@click.option("--repo", "repository", required=True, type=click.Path(path_type=Path), help="Evidence Git repository.")
@click.option("--remote", "url", help="Git remote URL or path (file, ssh://, https://, git://). Credentials in it are never printed, "
              "queued or put on git's command line; an https server's certificate is always verified "
              "(a private CA: GIT_SSL_CAINFO or git config http.sslCAInfo).")
@click.option("--branch", "branches", multiple=True, metavar="afdp/SERVICE/DEPLOYMENT", help="A branch to push (repeatable).")
@click.option("--all", "all_branches", is_flag=True, help="Push every AFDP branch of the repository.")
@click.option("--pending", is_flag=True, help="Push what runs queued because their push failed (to the remote each was queued for, or to --remote).")
@click.option("--trust", "trust_path", type=click.Path(path_type=Path, dir_okay=False),
              help="The auditor's trust policy: every branch is verified (as 'afdp verify' does, offline) at the head "
                   "that would be sent, and one that fails is refused, nothing of it pushed. Without it nothing "
                   "is verified, and each branch sent is marked unverified.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def push_cmd(repository: Path, url: str | None, branches: tuple[str, ...], all_branches: bool, pending: bool,
             trust_path: Path | None, as_json: bool) -> None:
    """Push evidence branches to a central remote: fast-forwards only, never forced.

    Per branch: created, pushed, up-to-date, behind (the remote is ahead on the same
    chain: nothing to push) or diverged (the remote holds other evidence: refused and
    reported, never overwritten) or invalid (a ref under afdp/ that is not a safe
    branch name: never pushed). With --trust also refused (the branch fails
    verification: not pushed) or remote-failed (the remote, ahead on the same chain,
    fails verification). Exit 0 when every branch is on the remote; 1 when a branch
    failed verification, diverged or is invalid; 2 usage error; 3 remote unreachable
    or refusing.
    """
    import contextlib

    from afdp.evidence import remote

    chosen = sum((bool(branches), all_branches, pending))
    if chosen != 1:
        raise UsageError("give --branch (repeatable), --all or --pending")
    if not pending and not url:
        raise UsageError("--remote URL is required (except with --pending)")
    with contextlib.ExitStack() as stack:
        gate = None
        if trust_path is not None:
            from afdp.evidence.trust import load_trust_policy
            from afdp.verify.gate import TrustGate

            gate = stack.enter_context(TrustGate(load_trust_policy(trust_path, evidence_repository=repository)))
        if pending:
            reports = remote.push_pending(repository, url=url, gate=gate)
        else:
            assert url is not None
            refs = None if all_branches else [_branch_ref(b) for b in branches]
            reports = [remote.push_branches(repository, url, refs=refs, gate=gate)]
    if as_json:
        emit_json({"ok": all(r.ok for r in reports), "remotes": [r.to_json() for r in reports]})
    else:
        _print_push(reports, pending=pending)
    code = max((r.exit_code for r in reports), default=0)
    if code:
        sys.exit(code)


def _print_push(reports: list[Any], *, pending: bool) -> None:
    out = console()
    if not reports:
        out.print("nothing queued to push" if pending else "nothing to push")
    for report in reports:
        for branch in report.branches:
            style = _OUTCOME_STYLE.get(branch.outcome, "bold")
            name = branch.ref.removeprefix("refs/heads/")
            out.print(line((f"{branch.outcome:>10}", style), f" {name}: {branch.detail}{_checked(branch, report)}"))
        settled = sum(1 for b in report.branches if b.ok)
        text = f"{report.remote}: {settled} of {len(report.branches)} branch(es) on the remote"
        if report.refused:
            text += f"; {len(report.refused)} refused (failed verification): " + ", ".join(
                b.ref.removeprefix("refs/heads/") for b in report.refused
            )
        out.print(text)
        sent = sum(1 for b in report.branches if b.outcome in ("created", "pushed"))
        if report.trust_policy is None and sent:
            out.print(f"{sent} branch(es) pushed unverified: pass --trust POLICY to verify each and refuse any that fails")


def _checked(branch: Any, report: Any) -> str:
    """What the line says about verification: only where records were sent, or the
    verdict is the reason for the outcome."""
    if branch.outcome in ("refused", "remote-failed"):
        return ""  # the detail says it
    if branch.outcome in ("created", "pushed"):
        return " (unverified)" if report.trust_policy is None else f" ({branch.verification})"
    if branch.outcome == "behind" and branch.verification != "unchecked":
        return f" (the remote's head: {branch.verification})"
    return ""


@click.command("find")
@click.option("--repo", "repository", required=True, type=click.Path(path_type=Path), help="Evidence Git repository.")
@click.option("--commit", help="A deployed commit (7 to 64 hex digits: a prefix matches).")
@click.option("--image", help="A deployed image by digest: sha256:HEX or NAME@sha256:HEX.")
@click.option("--service", help="Only this service's deployments.")
@click.option("--team", help="Only deployments whose genesis record names this team.")
@click.option("--since", help="Only deployments at or after this date (YYYY-MM-DD) or RFC 3339 time.")
@click.option("--trust", "trust_path", type=click.Path(path_type=Path, dir_okay=False),
              help="The auditor's trust policy: every hit is verified (without it, hits say 'unverified').")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def find_cmd(repository: Path, commit: str | None, image: str | None, service: str | None, team: str | None,
             since: str | None, trust_path: Path | None, as_json: bool) -> None:
    """Find what happened when a commit or an image was deployed, across all branches.

    Each hit: service, deployment, time, decision and verification status, read from its
    branch (the lookup index is only a cache, rebuilt from the evidence). Exit 0 when
    no hit failed verification (none found included), 1 when one did, 2 usage error.
    """
    from afdp.audit.find import find_deployments, make_query

    query = make_query(commit=commit, image=image, service=service, since=since, team=team)
    policy = None
    if trust_path is not None:
        from afdp.evidence.trust import load_trust_policy

        policy = load_trust_policy(trust_path, evidence_repository=repository)
    result = find_deployments(repository, query, policy=policy)
    if as_json:
        emit_json(result.to_json())
    else:
        _print_hits(result)
    if not result.ok:
        sys.exit(1)


def _print_hits(result: Any) -> None:
    from rich.table import Table

    out = console()
    # team last: scripts that cut the earlier columns keep working
    columns = ["service", "deployment", "time", "decision", "verification", "commit", "image", "team"]
    rows = []
    for hit in result.hits:
        facts = hit.facts
        decision = facts.decision or {}
        shown = decision.get("action") or "-"
        if decision.get("decision"):
            shown += f" ({decision['decision']})"
        status = hit.verification.upper() + (f": {hit.first_failure}" if hit.first_failure else "")
        rows.append((facts.service, facts.deployment, facts.time or "-", shown, status,
                     (facts.commit or "-")[:12], facts.image or "-", facts.team or "unknown"))
    if not out.is_terminal:
        plain_rows(columns, rows)
    elif rows:
        table = Table(title_justify="left")
        for column in columns:
            # identifiers never wrap (a split id cannot be copied); the rest folds
            table.add_column(column, no_wrap=column not in ("decision", "image"), overflow="fold")
        for row in rows:
            table.add_row(*row)
        out.print(table)
    if not rows:
        out.print("no deployment found")
    unverified = sum(1 for h in result.hits if h.verification == "unverified")
    if unverified:
        out.print(f"{unverified} hit(s) not verified: pass --trust to verify each branch")
