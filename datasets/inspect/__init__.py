"""Data inspection: composition, image properties, anomalies, non-faces, duplicates and label sanity of a face set.

``inspect_dataset(dataset, InspectOptions(...))`` computes every finding; ``write_outputs`` writes data.json, the
CSV tables and the exclusion list; ``render_data_report`` renders the HTML and PDF through the shared layout.
Imports are lazy, so the CLI stays light; the defaults live in :mod:`faceaudit.config`.
"""

from __future__ import annotations

import importlib

_EXPORTS = {"InspectOptions": "pipeline", "Inspection": "pipeline", "inspect_dataset": "pipeline",
            "write_outputs": "outputs", "render_data_report": "document"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
