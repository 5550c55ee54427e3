"""Writing evidence: ``afdp record`` (a step result, or a batch) and ``afdp seal``.

Thin by design: parse, call one library function, print. Heavy modules are imported
inside the commands, so ``--help`` is fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from afdp.cli.options import (
    _emit_json,
    _signer,
    _tsa_urls,
    deployment_option,
    json_option,
    key_option,
    keyless_option,
    public_key_option,
    repo_option,
    service_option,
    tsa_option,
)
from afdp.cli.output import echo
from afdp.errors import UsageError
from afdp.evidence.jsondata import load_json

#: A result is one record's file: verification refuses any file over 64 MiB
#: (docs/evidence.md, "Size limits"), so no larger one is read. A batch holds many.
MAX_RESULT_BYTES = 64 << 20
MAX_BATCH_BYTES = 1 << 30


def _read_text(path: str, what: str, limit: int = MAX_RESULT_BYTES) -> str:
    """Read at most ``limit`` bytes of ``path`` (``-``: stdin) as UTF-8; larger is refused
    before it is all in memory (``--result /dev/zero`` must not exhaust the machine)."""
    try:
        if path == "-":
            stream = getattr(sys.stdin, "buffer", None)  # a text-only stdin has none
            data = stream.read(limit + 1) if stream else sys.stdin.read(limit + 1).encode()
        else:
            with open(path, "rb") as handle:
                data = handle.read(limit + 1)
        if len(data) > limit:
            raise UsageError(f"{what} {path} is larger than the {limit >> 20} MiB a {what} may hold")
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {what} {path}: {getattr(exc, 'strerror', None) or exc}") from exc


def _load_result(path: str) -> Any:
    text = _read_text(path, "result")
    try:
        value = load_json(text)
    except ValueError as exc:
        raise UsageError(f"result {path} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"result {path} must be a JSON object, not {type(value).__name__}")
    return value


def _print_appended(written: list[Any], as_json: bool) -> None:
    if as_json:
        _emit_json([w.__dict__ for w in written])
        return
    for w in written:
        echo(
            f"record {w.sequence} ({w.step}) sha256:{w.envelope_sha256} time-stamped {w.timestamp} by {w.tsa_url}"
        )
    echo(f"branch {written[-1].branch} at {written[-1].commit_id[:12]}")


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
            _read_text(batch_path, "batch", MAX_BATCH_BYTES), source=batch_path, workflow_digest=workflow_digest
        )
        for number, item in enumerate(drafts, start=1):
            _check_summary(item.summary, f"{batch_path}: record {number} summary")
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
    _check_summary(summary, "--summary")
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


def _check_summary(summary: str | None, what: str) -> None:
    """A summary is the commit's subject in ``git log``: one line of text that shows as it
    reads (the rule of every text entering evidence, :func:`afdp.evidence.names.check_text`)."""
    if summary is not None:
        from afdp.evidence.names import check_text

        check_text(summary, what=what, free_text=True)


def _parse_author(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    from afdp.evidence.names import check_text

    name, _, rest = text.partition("<")
    email = rest.rstrip(">").strip()
    if not name.strip() or not email or "\n" in text:
        raise UsageError(f"--author {text!r} must look like 'Name <email>'")
    check_text(text, what="--author")
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
