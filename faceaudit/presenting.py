"""Rendering entry points of the API: an audit result into its report, a comparison or diff into files and text.

``faceaudit.report(result, out)`` renders report.html, report.pdf and summary.md; ``AuditResult.report()`` and the
notebook view hand over to this module through :mod:`faceaudit.hooks` (registered when ``faceaudit`` loads), so
the audit layer never imports the report layer. The report modules load on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from faceaudit.errors import FaceauditError

if TYPE_CHECKING:
    from faceaudit.auditing.result import AuditResult

AUDIT_FILE = "audit.json"


def report(result: AuditResult | str | Path, out: str | Path | None = None, *, thumbnails: bool = True) -> Path:
    """Render report.html, report.pdf and summary.md for ``result`` (an :class:`AuditResult` or an audit folder):
    into ``out`` (writing a freshly computed audit there first), or into the folder it was read from; returns the
    folder."""
    if isinstance(result, (str, Path)):
        from faceaudit.auditing.result import load_audit

        result = load_audit(result)
    if out is not None and result.tables:
        return result.write(out, report=True, thumbnails=thumbnails)
    folder = Path(out) if out is not None else result.folder
    if folder is None:
        raise FaceauditError("give the audit folder to render into (faceaudit.report(result, 'reports/x'))")
    if not (folder / AUDIT_FILE).exists():
        raise FaceauditError(f"{folder} holds no audit.json: a result read back from a file renders only into "
                             f"its own audit folder{f' ({result.folder})' if result.folder else ''}")
    render_folder(folder, thumbnails=thumbnails)
    return folder


def render_folder(folder: Path, *, thumbnails: bool = True, home: Path | None = None) -> None:
    """Render the report of the audit folder ``folder`` (``home``: where the folder will finally live)."""
    from faceaudit.auditing.report import render_report

    render_report(folder, thumbnails=thumbnails, home=home)


def html(result: AuditResult) -> str:
    """The notebook summary of a result (``_repr_html_``)."""
    from faceaudit.auditing.report.notebook import result_html

    return result_html(result)


def text(result: AuditResult) -> str:
    """A few lines for ``repr(result)`` (the model, its overall score, the gates, its folder)."""
    from faceaudit.auditing.report.notebook import result_repr

    return result_repr(result)
