"""Reports: the audit report (HTML, PDF, summary.md), backbone comparisons and audit diffs.

``render_report(audit_dir)`` turns an audit folder into ``report.html`` (self-contained), ``report.pdf``
(WeasyPrint, A4) and ``summary.md``. ``render_document`` renders any document from the shared base layout
(used by the data-inspection report).
"""

from __future__ import annotations

from faceaudit.templates.layout import Cell, Row, Section, Table, render_document, write_document, write_pdf

from .render import load_predictions, render_report

__all__ = ["Cell", "Row", "Section", "Table", "load_predictions", "render_document", "render_report",
           "write_document", "write_pdf"]
