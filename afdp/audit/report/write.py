"""Render a report in one format and write it atomically."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from afdp.audit.report.html import render_html
from afdp.audit.report.model import AuditReport
from afdp.audit.report.pdf import PdfSigning
from afdp.errors import StorageError, UsageError

FORMATS = ("html", "pdf", "json")


def render_json(report: AuditReport) -> str:
    """Return the report as JSON text (verdict first, the verification transcript inside)."""
    return json.dumps(report.to_json(), indent=2, default=str) + "\n"


@contextlib.contextmanager
def atomic_path(out: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``out``; rename it onto ``out`` only on success.

    Raises:
        UsageError: the folder of ``out`` does not exist.
        StorageError: no file can be created in that folder.
    """
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"cannot write {out}: folder {folder} does not exist")
    try:
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:  # a folder that exists but takes no files (read-only, /proc)
        raise StorageError(f"cannot write {out}: {exc.strerror or exc}") from exc
    os.close(fd)
    temp = Path(name)
    try:
        yield temp
        os.chmod(temp, 0o644)
        os.replace(temp, out)
    finally:
        temp.unlink(missing_ok=True)


def write_report(
    report: AuditReport,
    *,
    fmt: str,
    out: Path,
    signing: PdfSigning | None = None,
    verify_command: str | None = None,
) -> Path:
    """Render ``report`` as ``fmt`` (html, pdf, json) and write it to ``out`` atomically.

    Returns ``out``.

    Raises:
        UsageError: unknown format; a PDF without a signing key.
        ConfigurationError: the signing key or certificate does not load.
        TimestampError / NetworkError: no TSA time-stamped the PDF signature.
        StorageError: Chromium could not print the PDF.
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown report format {fmt!r}: use one of {', '.join(FORMATS)}")
    if fmt == "pdf" and signing is None:
        raise UsageError("a PDF report is signed: pass --sign-key (and --tsa)")
    with atomic_path(out) as temp:
        if fmt == "json":
            temp.write_text(render_json(report), encoding="utf-8")
        elif fmt == "html":
            temp.write_text(render_html(report, verify_command=verify_command), encoding="utf-8")
        else:
            from afdp.audit.report.pdf import print_pdf, sign_pdf

            assert signing is not None
            html = render_html(report, verify_command=verify_command)
            unsigned = print_pdf(html)
            temp.write_bytes(sign_pdf(unsigned, signing, reason=report.headline))
    return out
