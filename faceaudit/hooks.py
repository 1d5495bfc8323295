"""Slots a higher layer fills so a lower one can hand work up without importing it.

``presenter`` renders audit results (``AuditResult.report()``, the notebook view); ``faceaudit/__init__`` sets it
to :mod:`faceaudit.presenting` when the package loads, so the audit layer never imports the report layer.
"""

from __future__ import annotations

from typing import Any

#: Renders results: ``report(result, out, thumbnails=)``, ``render_folder(folder, thumbnails=, home=)``,
#: ``html(result)``. None until the API layer registers one.
presenter: Any = None
