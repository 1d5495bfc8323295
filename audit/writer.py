"""Write an audit folder: CSV tables, predictions.csv, gates.xml, then audit.json last (each file atomically)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from faceaudit.files import atomic_write

from .gates import junit_xml
from .types import AUDIT_FILE, Gates

#: CSV file of each table the engine returns.
TABLE_FILES = {
    "group_metrics": "group_metrics.csv",
    "per_class": "per_class.csv",
    "confusion": "confusion.csv",
    "disparities": "disparities.csv",
    "calibration": "calibration.csv",
    "reliability": "reliability.csv",
    "tsne": "tsne.csv",
    "embedding_groups": "embedding_groups.csv",
}
PREDICTIONS_FILE = "predictions.csv"
PREDICTIONS_SAMPLE_FILE = "predictions_sample.csv"
JUNIT_FILE = "gates.xml"


class Writable(Protocol):
    """What :func:`write_audit` needs of an :class:`~faceaudit.auditing.result.AuditResult` (which imports this
    module, so it is named by shape, not imported)."""

    tables: dict[str, pd.DataFrame]
    predictions: Any
    predictions_sampled: bool
    gates: Gates | None
    files: dict

    def to_json(self, path: Path | None = None) -> str: ...


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    atomic_write(path, frame.to_csv(index=False, float_format="%.6g"))


def write_audit(result: Writable, out_dir: Path) -> list[Path]:
    """Write every file of the audit into ``out_dir`` and record them in ``result.files``; audit.json comes last.

    The tables and the predictions come from the result (:func:`faceaudit.auditing.engine.compute_audit` attaches
    them); gates.xml is written when the result carries gate verdicts."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # A streamed audit keeps a sample of its rows (for the error gallery): written under its own name, so nothing
    # that needs every row (a paired comparison) mistakes it for the audited table.
    key, filename = (("predictions_sample", PREDICTIONS_SAMPLE_FILE) if result.predictions_sampled
                     else ("predictions", PREDICTIONS_FILE))
    written = [result.predictions.write(out_dir / filename)]
    files = {key: filename}
    for name, frame in result.tables.items():
        filename = TABLE_FILES[name]
        _write_csv(frame, out_dir / filename)
        files[name] = filename
        written.append(out_dir / filename)
    stale = ({*TABLE_FILES.values(), PREDICTIONS_FILE, PREDICTIONS_SAMPLE_FILE}) - set(files.values())
    if result.gates is not None:
        atomic_write(out_dir / JUNIT_FILE, junit_xml(result.gates))
        files["gates_junit"] = JUNIT_FILE
        written.append(out_dir / JUNIT_FILE)
        result.gates.junit = JUNIT_FILE
    else:
        stale.add(JUNIT_FILE)
    for name in stale:  # a rerun into the same folder must not leave files from an earlier audit
        (out_dir / name).unlink(missing_ok=True)
    result.files = files
    result.to_json(out_dir / AUDIT_FILE)
    written.append(out_dir / AUDIT_FILE)
    return written
