"""Writes a report folder's ``report.json`` and ``report.html`` (``run``, ``optimize``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.core.datatypes import json_ready
from edgekit.core.fsutil import write_bytes_atomic, write_json_atomic
from edgekit.report.html import render_report

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
#: the version of report.json's layout; its JSON Schema is edgekit/schemas/report-v1.schema.json
REPORT_VERSION = 1


def write_reports(folder: Path, report: dict[str, Any], *, html: bool = True) -> None:
    """``report.json`` (always) and the self-contained ``report.html`` (with ``html``) in ``folder``."""
    data = {"report_version": REPORT_VERSION, **json_ready(report)}
    write_json_atomic(folder / REPORT_JSON, data)
    if html:
        write_bytes_atomic(folder / REPORT_HTML, render_report(data).encode("utf-8"))
