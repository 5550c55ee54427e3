"""Human output for the CLI: every line, table and progress bar a command prints for a
human goes through this module, which shows evidence text as text.

Names, reasons, summaries, commit subjects, signer names and label values printed here
come from evidence branches, packages, remotes, history files and the service: someone
else wrote them. So the default is that text is never obeyed:

- :func:`echo` prints lines, each through :func:`afdp.errors.visible` (an ESC sequence,
  a bidi override or a zero-width character shows as an escape, ``\\x1b``);
- :func:`console` is the one rich console a command prints with: it reads no markup and
  no emoji codes in any string (``[bold red]VERIFIED[/]`` in evidence prints as itself),
  and every string it renders, in a table cell, a title or a line, goes through
  :func:`~afdp.errors.visible`. Styles are AFDP's own, given as :func:`styled` text;
- :func:`plain_rows` prints tab-separated rows for a pipe;
- :func:`emit_json` prints ``--json``: exact characters (JSON escapes what it must).

``tests/test_hostile_cli_output.py`` checks that no command module prints any other way.

rich is imported on first output, not with this module, so ``afdp verify --json`` never
pays for it (tests/test_cli_startup.py). Nor does a verdict printed to a pipe or a file
whose text rich would print as itself (:func:`_say`): that is most of ``afdp verify``'s
output in CI and scripts, and importing rich costs about a tenth of the command's
start-up.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import click

from afdp.errors import visible

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from afdp.verify.verifier import BranchReport, ProgressCallback


# --- the ways a command prints for a human ------------------------------------------------


def echo(text: str = "", *, err: bool = False) -> None:
    """Print ``text`` as one line on stdout (``err``: stderr), shown as it is: a character
    a terminal would act on or hide (a line break in a reason too) is written as an escape,
    so no text can start a line of its own."""
    click.echo(visible(str(text)), err=err)


def echo_lines(lines: Iterable[str], *, err: bool = False) -> None:
    """Print each of ``lines`` as :func:`echo` does (AFDP's own multi-line messages)."""
    for text in lines:
        echo(text, err=err)


def emit_json(value: Any, *, ensure_ascii: bool = True, sort_keys: bool = False) -> None:
    """Print ``value`` as indented JSON: the exact characters of the evidence (JSON writes
    a control character as ``\\u001b`` itself, so nothing reaches the terminal raw)."""
    click.echo(json.dumps(value, indent=2, default=str, ensure_ascii=ensure_ascii, sort_keys=sort_keys))


def plain_rows(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Print a header line (none for no ``columns``) and one tab-separated line per row
    (for ``grep`` and ``cut``): each cell on one line, whitespace runs as one space,
    hidden characters as escapes."""
    for values in (columns, *rows) if columns else rows:
        click.echo("\t".join(" ".join(visible(str(value)).split()) for value in values))


def styled(text: str, style: str = "") -> Text:
    """``text`` as a rich :class:`~rich.text.Text` in AFDP's own ``style``: shown with
    :func:`~afdp.errors.visible`, never read as markup (the way to colour a word)."""
    from rich.text import Text

    return Text(visible(text), style=style)


def line(*parts: str | tuple[str, str]) -> Text:
    """One line of text and ``(text, style)`` parts, each shown as :func:`styled` does."""
    from rich.text import Text

    return Text.assemble(*((visible(p[0]), p[1]) if isinstance(p, tuple) else visible(p) for p in parts))


def console(*, stderr: bool = False, width: int | None = None) -> Console:
    """The rich console every command prints tables and styled lines with.

    No string it renders is markup or an emoji code, whatever a caller passes
    (``markup=True`` included), and every string (a table cell, a title, a line) is shown
    with :func:`~afdp.errors.visible`; colour comes from :func:`styled` text. Piped or
    redirected output is never hard-wrapped (a reason split mid-sentence breaks grep).
    ``width``: a fixed width (a wide table a pipe should not squeeze).
    """
    return _text_console(stderr, width)


@functools.cache
def _text_console(stderr: bool, width: int | None) -> Console:
    from rich.console import Console

    class TextConsole(Console):
        def render_str(self, text: str, **options: Any) -> Text:
            options.update(markup=False, emoji=False)
            return super().render_str(visible(text), **options)

    stream = sys.stderr if stderr else sys.stdout
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):
        terminal = False
    return TextConsole(stderr=stderr, width=width, highlight=False, markup=False, emoji=False, soft_wrap=not terminal)


def show_log_records(name: str) -> None:
    """Show every message of logger ``name`` as :func:`~afdp.errors.visible` text (one
    line each): ``afdp serve``'s log lines quote delivery ids, service names and errors
    that came with requests and runs."""
    import logging

    class VisibleRecords(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            message = record.getMessage()
            shown = visible(message)
            if shown != message:
                record.msg, record.args = shown, None
            return True

    logger = logging.getLogger(name)
    if not any(type(f).__name__ == "VisibleRecords" for f in logger.filters):
        logger.addFilter(VisibleRecords())


def write_source(data: bytes) -> None:
    """Write a stored file's bytes: exactly, to a pipe or a file (so its digest can be
    checked); on a terminal, as text with every hidden character shown as an escape."""
    try:
        terminal = sys.stdout.isatty()
    except (AttributeError, ValueError):
        terminal = False
    if terminal:
        echo_lines(data.decode("utf-8", "backslashreplace").removesuffix("\n").split("\n"))
        return
    sys.stdout.flush()
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:
        sys.stdout.write(data.decode("utf-8", "surrogateescape"))
        return
    buffer.write(data)
    buffer.flush()


# --- afdp verify's verdict lines (a markup console: only :func:`escape`d text reaches it) --


@functools.cache
def _stdout_console() -> Console:
    # The console of :func:`_say` and nothing else: its lines are AFDP's own markup
    # around :func:`escape`d evidence text. Piped or redirected output is never
    # hard-wrapped (a reason split mid-sentence is unreadable in a CI log, breaks grep).
    from rich.console import Console

    return Console(highlight=False, soft_wrap=not sys.stdout.isatty())


def escape(text: str) -> str:
    """``text`` with rich markup escaped (rich's own :func:`rich.markup.escape`) and every
    character a terminal acts on or hides shown as an escape (:func:`afdp.errors.visible`)."""
    text = visible(text)
    if "[" not in text and not text.endswith("\\"):
        return text  # rich's escape changes nothing without a bracket or a trailing backslash
    from rich.markup import escape as rich_escape

    return rich_escape(text)


#: The only markup :func:`print_reports` writes itself.
_OWN_TAGS = re.compile(r"\[(?:bold red|bold yellow|bold green|bold|/)\]")
#: Printable ASCII without brackets or backslash (what rich could read as markup), and no
#: ``:name:`` (what rich could read as an emoji code): text rich prints as itself on a
#: stream that is no terminal.
_PLAIN = re.compile(r"[ -Z^-~]*")
_EMOJI_CODE = re.compile(r":\S*:")


def _plain_stream() -> bool:
    """True when rich would write to stdout as to a file: no colours, no control codes
    (when True, rich's ``Console.is_terminal`` is False; this answers without rich).

    Conservative: a variable that makes rich treat a stream as a terminal (``FORCE_COLOR``,
    ``TTY_COMPATIBLE``), or an IDLE or Jupyter session, leaves the decision to rich.
    """
    if "FORCE_COLOR" in os.environ or "TTY_COMPATIBLE" in os.environ or "idlelib" in sys.modules:
        return False
    import builtins

    if hasattr(builtins, "get_ipython"):
        return False
    try:
        return not sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def _say(markup: str) -> None:
    """Print one line of console markup on stdout, exactly as rich's console prints it.

    On a stream that is no terminal, a line whose text (its own tags taken out) rich
    would print as itself is written directly, without importing rich; anything else (a
    terminal, escaped brackets, control characters, non-ASCII, a possible emoji code)
    goes to rich. ``tests/test_cli_startup.py`` checks that both give the same bytes.
    """
    markup = visible(markup)  # evidence text never moves the cursor or erases a verdict
    if _plain_stream():
        text = _OWN_TAGS.sub("", markup)
        if _PLAIN.fullmatch(text) and not _EMOJI_CODE.search(text):
            sys.stdout.write(text + "\n")
            return
    _stdout_console().print(markup)


@contextlib.contextmanager
def progress_for(*, enabled: bool) -> Iterator[ProgressCallback | None]:
    """Yield a progress callback drawing a bar on a terminal, or None elsewhere."""
    if not (enabled and sys.stdout.isatty()):
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("verifying"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task("verify", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def print_reports(reports: list[BranchReport]) -> None:
    """Print one verdict line per branch, then every failure as record: check: reason."""
    for report in reports:
        name = escape(f"{report.service}/{report.deployment}")
        if report.state == "failed":
            _say(
                f"[bold red]FAILED[/] {name}: {len(report.failures)} failure(s) in {report.record_count} record(s)"
            )
            for failure in report.failures:
                _say(
                    f"  {escape(failure.where)}: [bold]{escape(failure.check)}[/]: {escape(failure.reason)}"
                )
        elif report.state == "unsealed":
            _say(
                f"[bold yellow]UNSEALED[/] {name}: {report.record_count} record(s) verified; no seal yet (allowed)"
            )
        else:
            signers = [escape(signer) for signer in report.signers]
            _say(
                f"[bold green]VERIFIED[/] {name}: {report.record_count} record(s), sealed; signed by {', '.join(signers)}; head {report.head[:12] if report.head else '-'}"
            )
        if report.imported and report.state != "failed":
            # Verified as imported: an honest record of the past, never a live capture.
            _say(
                f"  IMPORTED from history: describes the deployment of {escape(str(report.described_time))}; "
                "signed and time-stamped at import, not captured live"
            )
    if len(reports) > 1:
        failed = sum(1 for r in reports if not r.ok)
        _say(
            f"{len(reports)} branch(es): {len(reports) - failed} passed, {failed} failed"
        )


def summary_rows(reports: list[BranchReport]) -> list[dict[str, Any]]:
    """One row per branch: branch, service, deployment, records, result, first failing check."""
    rows = []
    for report in reports:
        first = report.failures[0] if report.failures else None
        rows.append(
            {
                "branch": report.ref.removeprefix("refs/heads/"),
                "service": report.service,
                "deployment": report.deployment,
                "records": report.record_count,
                "result": report.state,
                "first_failure": (
                    {"where": first.where, "check": first.check, "reason": first.reason}
                    if first is not None
                    else None
                ),
            }
        )
    return rows


def print_summary(reports: list[BranchReport]) -> None:
    """Print the table of many branches (a rich table on a terminal, tab-separated rows
    with a header line elsewhere), before the per-branch verdicts of :func:`print_reports`."""
    rows = summary_rows(reports)
    columns = ["branch", "service", "deployment", "records", "result", "first failing check"]
    values = [
        (
            row["branch"],
            row["service"],
            row["deployment"],
            str(row["records"]),
            row["result"].upper(),
            f"{row['first_failure']['check']} ({row['first_failure']['where']})" if row["first_failure"] else "-",
        )
        for row in rows
    ]
    if _plain_stream() or not console().is_terminal:  # the first needs no rich
        plain_rows(columns, values)
        return
    from rich.table import Table

    table = Table(title="verify --all", title_justify="left")
    for column in columns:
        table.add_column(column, no_wrap=column != "first failing check", overflow="fold")
    colours = {"VERIFIED": "green", "UNSEALED": "yellow", "FAILED": "bold red"}
    for cells in values:
        table.add_row(*cells[:4], styled(cells[4], colours.get(cells[4], "bold")), cells[5])
    console().print(table)


def print_story(story: dict[str, Any]) -> None:
    """Print a deployment's records (unverified): a table on a terminal, plain rows elsewhere.

    Piped, each record is one tab-separated line (sequence, step, status, signer,
    time-stamp, digest, summary), so ``afdp log | grep`` and ``cut`` work.
    """
    rows = []
    for row in story["records"]:
        if row["kind"] == "not-afdp":
            rows.append(("?", "not an AFDP record", "", "", "", row["commit"][:12], row["subject"]))
            continue
        rows.append(
            (
                str(row["sequence"]),
                row["step"],
                row["status"] or "",
                _short_signer(row["signer"]),
                row["timestamp"] or "",
                (row["digest"] or "").removeprefix("sha256:")[:16],
                row["summary"] or "",
            )
        )
    title = f"{story['service']}/{story['deployment']} ({story['branch']})"
    if story.get("imported"):
        title += f" IMPORTED from history: describes {story.get('described_time')}, recorded at import"
    state = "sealed" if story["sealed"] else "not sealed (in progress or truncated)"
    verification = story.get("verification") or {"state": "not checked", "failures": []}
    if verification["state"] == "not checked":
        verdict = "Not verified: pass --trust (or run 'afdp verify') for a verdict."
    elif story.get("verified"):
        verdict = f"Verified against the trust policy ({verification['state']})."
    else:
        first = (verification.get("failures") or [{}])[0]
        verdict = (
            f"VERIFICATION FAILED: {first.get('where')}: {first.get('check')}: {first.get('reason')}"
            if first
            else "VERIFICATION FAILED"
        )
    footer = f"{len(story['records'])} record(s), {state}. {verdict}"
    header = _provenance_lines(story)
    if _plain_stream() or not console().is_terminal:  # the first needs no rich
        # unverified records (a foreign commit's subject too) are shown, never obeyed
        echo(title)
        echo_lines(header)
        plain_rows((), rows)
        echo(footer)
        return
    out = console()
    for text in header:
        out.print(text)
    # A narrow terminal drops the columns a reader needs least (signer, then digest:
    # `afdp log | cat` and --json keep them) rather than squeezing every column to nothing.
    columns = ["#", "step", "status", "signer", "time-stamp", "digest", "summary"]
    width = out.width
    dropped = {"signer"} if width < 150 else set()
    if width < 120:
        dropped.add("digest")
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        if column in dropped:
            continue
        # Identifiers never wrap (a digest split over two lines cannot be copied); the
        # summary takes what width is left.
        if column == "summary":
            table.add_column(column, overflow="fold", ratio=1, min_width=16)
        else:
            table.add_column(column, no_wrap=True)
    keep = [i for i, column in enumerate(columns) if column not in dropped]
    stamp = columns.index("time-stamp")
    for values in rows:
        shown = list(values)
        if width < 100 and "T" in shown[stamp]:
            shown[stamp] = shown[stamp].split("T", 1)[1]  # the time of day; the date is in --json
        table.add_row(*(shown[i] for i in keep))
    out.print(table)
    out.print(footer)


def _provenance_lines(story: dict[str, Any]) -> list[str]:
    """Return how the run started and what ran: the trigger and the stored sources, each
    marked verified or not (``afdp log --show-source NAME`` prints a source's bytes)."""
    lines = []
    mark = "" if story.get("verified") else " [unverified]"
    trigger = story.get("trigger") or {}
    if trigger.get("name"):
        lines.append(f"trigger: {trigger['name']}{mark}")
    facts = story.get("deployment_facts") or {}
    if facts:
        # the team always shows (unknown: evidence that does not name one); other facts when recorded
        shown = [f"team {facts.get('team') or 'unknown'}"]
        shown += [f"{name} {facts[name]}" for name in ("deployer", "environment", "version", "commit", "image")
                  if facts.get(name)]
        lines.append(f"deployment: {', '.join(shown)}{mark}")
    for source in story.get("sources") or ():
        state = "verified" if source["verified"] else source["note"]
        size = "?" if source["size"] is None else f"{source['size']} bytes"
        lines.append(
            f"source {source['name']}: {source['file']}, {size}, sha256:{source['sha256']} "
            f"({state}; afdp log --show-source {source['name']})"
        )
    return lines


def _short_signer(signer: str | None) -> str:
    # keyids are long hex: 12 characters identify one; keyless signers read
    # "sigstore:<instance> <identity>", of which the workflow path says most.
    if not signer:
        return ""
    if signer.startswith("sigstore:"):
        identity = signer.split(" ", 1)[1] if " " in signer else ""
        return f"sigstore {identity.rsplit('/', 1)[-1]}".strip()
    return signer[:12]
