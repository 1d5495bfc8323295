"""Read and validate a predictions table (CSV or Parquet) into the canonical form the audit computes on.

The canonical frame has ``image_id``, ``race``, ``gender`` and ``age_band`` as categoricals over the fixed label
sets, ``age`` (float, may be missing when only bands were given), ``prob_*`` (float, or absent when the input had
labels only) and ``pred_race``; plus ``path``, ``sha256`` and ``split`` when the input had them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from faceaudit.config import GENDERS, RACES
from faceaudit.errors import FaceauditError

from .labels import AgeBands, normalise_gender, normalise_race
from .schema import OPTIONAL_COLUMNS, PRED_COLUMN, PREDICTION_COLUMNS, PROB_COLUMNS

#: How far a row of probabilities may sum from 1 (float32 softmax outputs written as text drift ~1e-6).
PROB_SUM_TOLERANCE = 1e-3


def read_table(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame, or one line saying why not."""
    path = Path(path)
    if not path.is_file():
        raise FaceauditError(f"predictions file {path} does not exist")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype={"image_id": str, "sha256": str, "path": str})
    except (ValueError, OSError, pd.errors.ParserError, ImportError) as exc:
        raise FaceauditError(f"cannot read predictions file {path}: {str(exc).splitlines()[0]}") from None


def map_columns(frame: pd.DataFrame, *, id_col: str = "image_id", prob_prefix: str = "prob_",
                what: str = "the predictions table") -> tuple[pd.DataFrame, list[str]]:
    """Rename another tool's id and probability columns (``--id-col``, ``--prob-prefix``) to the canonical ones.

    Returns the renamed frame and the input columns the audit will not read (sorted), for a warning.
    """
    renames: dict[str, str] = {}
    if id_col != "image_id":
        if id_col not in frame.columns:
            raise FaceauditError(f"{what} has no id column {id_col!r} (--id-col); it has: {', '.join(map(str, frame.columns))}")
        renames[id_col] = "image_id"
    if prob_prefix != "prob_":
        given = [f"{prob_prefix}{race}" for race in RACES]
        missing = [c for c in given if c not in frame.columns]
        if missing:
            raise FaceauditError(f"{what} lacks probability column(s) {', '.join(missing)} (--prob-prefix {prob_prefix!r})")
        renames.update({c: f"prob_{race}" for c, race in zip(given, RACES)})
    # A canonical column the mapping replaces (an old image_id beside --id-col) is ignored, not read twice.
    shadowed = [c for c in renames.values() if c in frame.columns and c not in renames]
    frame = frame.drop(columns=shadowed).rename(columns=renames)
    ignored = sorted({str(c) for c in frame.columns if c not in PREDICTION_COLUMNS} | set(shadowed))
    return frame, ignored


def missing_id_hint(frame: pd.DataFrame) -> str:
    """A hint naming --id-col / --prob-prefix when the table looks like another tool's layout."""
    columns = [str(c) for c in frame.columns]
    hints = []
    if "image_id" not in columns:
        ids = [c for c in ("id", "image", "filename", "file", "path", "image_path") if c in columns]
        if ids:
            hints.append(f"--id-col {ids[0]}")
    if not any(c in columns for c in PROB_COLUMNS):
        for column in columns:
            if column.endswith(RACES[0]) and all(f"{column[:-len(RACES[0])]}{r}" in columns for r in RACES):
                hints.append(f"--prob-prefix {column[:-len(RACES[0])]}")
                break
    return f" (try {' '.join(hints)})" if hints else ""


def _labels(series: pd.Series, normalise, names: tuple[str, ...], column: str) -> pd.Categorical:
    """Normalise each distinct value once (fast on a million rows) into a categorical over ``names``."""
    if series.isna().any():
        row = int(np.flatnonzero(series.isna().to_numpy())[0])
        raise FaceauditError(f"column {column!r} has a missing value (row {row + 2} of the file)")
    uniques = pd.unique(series)
    try:
        mapping = {value: normalise(value) for value in uniques}
    except FaceauditError as exc:
        raise FaceauditError(f"column {column!r}: {exc}") from None
    return pd.Categorical(series.map(mapping), categories=list(names))


def validate_predictions(frame: pd.DataFrame, *, age_bands: AgeBands | None = None, what: str = "the predictions table") -> pd.DataFrame:
    """Check a predictions table and return its canonical form; every problem is one clear FaceauditError."""
    age_bands = age_bands or AgeBands.parse()
    if len(frame) == 0:
        raise FaceauditError(f"{what} is empty: no test images to audit")
    columns = set(frame.columns)
    missing = [c for c in ("image_id", "race", "gender") if c not in columns]
    if "age" not in columns and "age_band" not in columns:
        missing.append("age or age_band")
    present_probs = [c for c in PROB_COLUMNS if c in columns]
    if 0 < len(present_probs) < len(PROB_COLUMNS):
        missing += [c for c in PROB_COLUMNS if c not in columns]
    if not present_probs and PRED_COLUMN not in columns:
        missing.append(f"{', '.join(PROB_COLUMNS)} or {PRED_COLUMN}")
    if missing:
        raise FaceauditError(f"{what} lacks column(s): {'; '.join(missing)}{missing_id_hint(frame)}")

    out = pd.DataFrame({"image_id": frame["image_id"].astype(str).to_numpy()})
    if out["image_id"].duplicated().any():
        dup = out["image_id"][out["image_id"].duplicated()].iloc[0]
        raise FaceauditError(f"{what} lists image_id {dup!r} more than once")
    out["race"] = _labels(frame["race"], normalise_race, RACES, "race")
    out["gender"] = _labels(frame["gender"], normalise_gender, GENDERS, "gender")
    if "age" in columns:
        ages = pd.to_numeric(frame["age"], errors="coerce").to_numpy(dtype=float)
        bad = np.isnan(ages) & frame["age"].notna().to_numpy()
        if bad.any():
            raise FaceauditError(f"column 'age' has a non-numeric value {frame['age'].iloc[int(np.flatnonzero(bad)[0])]!r}")
        out["age"] = ages
    else:
        out["age"] = np.nan
    if "age_band" in columns and ("age" not in columns or out["age"].isna().any()):
        given = frame["age_band"].astype(str).str.replace(" ", "", regex=False)
        unknown = sorted(set(given.unique()) - set(age_bands.labels))
        if unknown:
            raise FaceauditError(f"column 'age_band' has band {unknown[0]!r}, not one of the age bands "
                                 f"{age_bands} (pass --age-bands to match)")
        bands = pd.Categorical(given, categories=list(age_bands.labels), ordered=True)
    else:
        bands = age_bands.assign(out["age"])
    if pd.isna(bands).any():
        row = int(np.flatnonzero(pd.isna(bands))[0])
        from faceaudit.console import shown

        raise FaceauditError(f"age {shown(frame['age'].iloc[row])} (row {row + 2}) is outside 0-116 or missing")
    out["age_band"] = bands

    if present_probs:
        try:
            probs = frame[list(PROB_COLUMNS)].apply(pd.to_numeric, errors="raise").to_numpy(dtype=float)
        except (ValueError, TypeError):
            raise FaceauditError(f"{what} has a non-numeric probability") from None
        check_probabilities(probs, what=what)
        for i, column in enumerate(PROB_COLUMNS):
            out[column] = probs[:, i]
        pred = probs.argmax(axis=1)
        out[PRED_COLUMN] = pd.Categorical.from_codes(pred, categories=list(RACES))
        if PRED_COLUMN in columns:
            given = _labels(frame[PRED_COLUMN], normalise_race, RACES, PRED_COLUMN)
            top = probs.max(axis=1)
            ties = np.isclose(probs, top[:, None], atol=1e-9).sum(axis=1) > 1
            disagree = (np.asarray(given.codes) != pred) & ~ties
            if disagree.any():
                row = int(np.flatnonzero(disagree)[0])
                raise FaceauditError(f"{PRED_COLUMN} {given[row]!r} (row {row + 2}) is not the most probable class "
                                     f"({RACES[pred[row]]}); pass probabilities or labels that agree")
    else:
        out[PRED_COLUMN] = _labels(frame[PRED_COLUMN], normalise_race, RACES, PRED_COLUMN)
    for column in OPTIONAL_COLUMNS:
        if column in columns:
            out[column] = frame[column].to_numpy()
    return out


def check_probabilities(probs: np.ndarray, *, what: str = "predictions") -> None:
    """Raise one FaceauditError unless every row is a probability vector over the five races."""
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2 or probs.shape[1] != len(RACES):
        raise FaceauditError(f"{what}: expected {len(RACES)} class probabilities per image, got shape {probs.shape}")
    problems = [
        (~np.isfinite(probs).all(axis=1), "is NaN or infinite"),
        ((probs < 0).any(axis=1), "is negative"),
        ((probs > 1 + PROB_SUM_TOLERANCE).any(axis=1), "is above 1"),
    ]
    for mask, text in problems:
        if mask.any():
            row = int(np.flatnonzero(mask)[0])
            raise FaceauditError(f"{what}: a probability in row {row + 2} {text} ({mask.sum()} row(s) affected)")
    sums = probs.sum(axis=1)
    off = np.abs(sums - 1) > PROB_SUM_TOLERANCE
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise FaceauditError(f"{what}: probabilities in row {row + 2} sum to {sums[row]:.4f}, not 1 "
                             f"(tolerance {PROB_SUM_TOLERANCE}; {off.sum()} row(s) affected)")


def read_predictions(path: Path, *, age_bands: AgeBands | None = None) -> pd.DataFrame:
    """Read and validate a predictions CSV or Parquet file."""
    return validate_predictions(read_table(path), age_bands=age_bands, what=f"predictions file {Path(path).name}")


def predictions_from_manifest(manifest: pd.DataFrame, probs: np.ndarray) -> pd.DataFrame:
    """The predictions table of a model's probabilities on manifest rows (same order)."""
    probs = np.asarray(probs, dtype=float)
    if len(probs) != len(manifest):
        raise FaceauditError(f"the model returned {len(probs)} predictions for {len(manifest)} images")
    check_probabilities(probs, what="model output")
    frame = manifest[["image_id", "race", "gender", "age", "age_band"]].reset_index(drop=True).copy()
    frame["age"] = frame["age"].astype(float)
    for i, column in enumerate(PROB_COLUMNS):
        frame[column] = probs[:, i]
    frame[PRED_COLUMN] = pd.Categorical.from_codes(probs.argmax(axis=1), categories=list(RACES))
    for column in OPTIONAL_COLUMNS:
        if column in manifest.columns:
            frame[column] = manifest[column].astype(str).to_numpy()
    return frame


def load_embeddings(path: Path, n_rows: int) -> np.ndarray:
    """An ``.npy`` (or ``.npz`` with one array) of embeddings whose rows align with the predictions."""
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            data = data[data.files[0]]
    except (OSError, ValueError) as exc:
        raise FaceauditError(f"cannot read embeddings {path}: {str(exc).splitlines()[0]}") from None
    data = np.asarray(data, dtype=np.float32)
    if data.ndim != 2:
        raise FaceauditError(f"embeddings {path.name} must be a 2-D array (images x features), got shape {data.shape}")
    if len(data) != n_rows:
        raise FaceauditError(f"embeddings {path.name} has {len(data)} rows but the predictions have {n_rows}")
    if not np.isfinite(data).all():
        raise FaceauditError(f"embeddings {path.name} contain NaN or infinite values")
    return data
