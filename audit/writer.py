"""Write an audit folder: CSV tables, predictions.csv, gates.xml, then audit.json last (each file atomically)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from faceaudit.files import atomic_write

from .calibration import per_image
from .result import AUDIT_FILE, AuditResult
from .schema import PRED_COLUMN, PROB_COLUMNS

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
JUNIT_FILE = "gates.xml"


def predictions_table(predictions: pd.DataFrame) -> pd.DataFrame:
    """The predictions table as written next to audit.json, with confidence and correctness added."""
    out = predictions[["image_id", "race", "gender", "age", "age_band"]].copy()
    has_probs = all(c in predictions for c in PROB_COLUMNS)
    for column in PROB_COLUMNS:
        out[column] = predictions[column] if has_probs else np.nan
    out[PRED_COLUMN] = predictions[PRED_COLUMN]
    if has_probs:
        quantities = per_image(predictions[list(PROB_COLUMNS)].to_numpy(float),
                               np.asarray(predictions["race"].cat.codes))
        out["confidence"] = quantities["confidence"]
    else:
        out["confidence"] = np.nan
    out["correct"] = (predictions[PRED_COLUMN].astype(str) == predictions["race"].astype(str)).astype(int)
    for column in ("path", "sha256", "split"):
        if column in predictions:
            out[column] = predictions[column]
    return out


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    atomic_write(path, frame.to_csv(index=False, float_format="%.6g"))


def write_audit(result: AuditResult, tables: dict[str, pd.DataFrame], predictions: pd.DataFrame, out_dir: Path,
                *, junit: str | None = None) -> list[Path]:
    """Write every file of the audit into ``out_dir`` and record them in ``result.files``; audit.json comes last."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    files = {"predictions": PREDICTIONS_FILE}
    _write_csv(predictions_table(predictions), out_dir / PREDICTIONS_FILE)
    written.append(out_dir / PREDICTIONS_FILE)
    for name, frame in tables.items():
        filename = TABLE_FILES[name]
        _write_csv(frame, out_dir / filename)
        files[name] = filename
        written.append(out_dir / filename)
    stale = set(TABLE_FILES.values()) - set(files.values())
    if junit is not None:
        atomic_write(out_dir / JUNIT_FILE, junit)
        files["gates_junit"] = JUNIT_FILE
        written.append(out_dir / JUNIT_FILE)
        if result.gates is not None:
            result.gates["junit"] = JUNIT_FILE
    else:
        stale.add(JUNIT_FILE)
    for name in stale:  # a rerun into the same folder must not leave files from an earlier audit
        (out_dir / name).unlink(missing_ok=True)
    result.files = files
    result.to_json(out_dir / AUDIT_FILE)
    written.append(out_dir / AUDIT_FILE)
    return written
