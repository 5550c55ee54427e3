"""Compliance reports: verify a deployment's evidence, then show it (HTML, PDF, JSON).

``build_report`` verifies and reads; ``write_report`` renders and writes atomically
(a temporary file renamed into place, so a failure never leaves half a report).
"""

from __future__ import annotations

from afdp.audit.report.build import build_report
from afdp.audit.report.model import FAILED, UNSEALED, VERIFIED, AuditReport
from afdp.audit.report.pdf import PdfSigning
from afdp.audit.report.write import render_json, write_report

__all__ = [
    "FAILED",
    "UNSEALED",
    "VERIFIED",
    "AuditReport",
    "PdfSigning",
    "build_report",
    "render_json",
    "write_report",
]
