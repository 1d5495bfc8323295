"""The predictions table: the seam between anything that classifies faces and the audit.

One row per test image: ``image_id``; the true label of the schema's target (``race``) and of every attribute the
audit groups by (``gender``; ``age`` or ``age_band``); then either one probability column per class (``prob_White``
... in class order) or the predicted label ``pred_<target>``. Optional: ``path`` and ``sha256`` (thumbnails,
paired comparisons) and ``split``. :class:`PredictionsTable` is the one definition: inference builds it, the audit
validates a file into it, and both write it the same way.

An age regressor's table (``target="age"``) has the true ``age`` in years and the predicted ``pred_age`` in years
instead of a class and its probabilities; the written table adds ``error`` (predicted − true) and ``abs_error``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from faceaudit.errors import FaceauditError
from faceaudit.files import atomic_path
from faceaudit.seams.versions import check_version
from faceaudit.taxonomy import AGE_BAND, AGE_MAX, AGE_MIN, AGE_TARGET, UTKFACE, AgeBands, LabelSchema

#: How far a row of probabilities may sum from 1 (float32 softmax outputs written as text drift ~1e-6).
PROB_SUM_TOLERANCE = 1e-3
#: An age regressor's predicted age in years.
PRED_AGE = "pred_age"
#: Columns kept when present, besides the labels and predictions.
OPTIONAL_COLUMNS: tuple[str, ...] = ("path", "sha256", "split")
#: Columns the written table adds: the top-label confidence and whether the prediction is right.
DERIVED_COLUMNS: tuple[str, ...] = ("confidence", "correct")
#: Columns a regression table adds when written: predicted − true age (positive: made older) and its size.
REGRESSION_DERIVED_COLUMNS: tuple[str, ...] = ("error", "abs_error")


def read_table(path: Path, what: str = "predictions file") -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame, or one line saying why not."""
    path = Path(path)
    if not path.is_file():
        raise FaceauditError(f"{what} {path} does not exist")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype={"image_id": str, "sha256": str, "path": str})
    except UnicodeDecodeError:
        raise FaceauditError(f"cannot read {what} {path}: it is not UTF-8 text (a binary file? save it as a UTF-8 "
                             "CSV or as Parquet)") from None
    except (ValueError, OSError, pd.errors.ParserError, ImportError) as exc:
        raise FaceauditError(f"cannot read {what} {path}: {str(exc).splitlines()[0]}") from None


def recorded_schema(path: Path) -> LabelSchema | None:
    """The label schema a Parquet predictions table written by :meth:`PredictionsTable.write` carries, else None."""
    path = Path(path)
    if path.suffix.lower() not in (".parquet", ".pq") or not path.is_file():
        return None
    import json

    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, ValueError):
        return None
    check_version(meta.get(b"faceaudit.predictions"), PredictionsTable.VERSION, f"predictions table {path.name}",
                  required=False)
    text = meta.get(b"faceaudit.label_schema")
    return LabelSchema.from_dict(json.loads(text)) if text else None


def map_columns(frame: pd.DataFrame, *, id_col: str = "image_id", prob_prefix: str = "prob_",
                what: str = "the predictions table") -> tuple[pd.DataFrame, list[str]]:
    """Rename another tool's id and probability columns (``--id-col``, ``--prob-prefix``) to the canonical ones.

    Returns the renamed frame and the input columns that are neither labels, predictions nor optional columns
    (sorted), for a warning.
    """
    renames: dict[str, str] = {}
    if id_col != "image_id":
        if id_col not in frame.columns:
            raise FaceauditError(f"{what} has no id column {id_col!r} (--id-col); it has: {', '.join(map(str, frame.columns))}")
        renames[id_col] = "image_id"
    if prob_prefix != "prob_":
        given = [c for c in map(str, frame.columns) if c.startswith(prob_prefix) and len(c) > len(prob_prefix)]
        if len(given) < 2:
            raise FaceauditError(f"{what} has no probability columns starting with {prob_prefix!r} (--prob-prefix)")
        renames.update({c: f"prob_{c[len(prob_prefix):]}" for c in given})
    # A canonical column the mapping replaces (an old image_id beside --id-col) is ignored, not read twice.
    shadowed = [c for c in renames.values() if c in frame.columns and c not in renames]
    frame = frame.drop(columns=shadowed).rename(columns=renames)
    if prob_prefix != "prob_":
        frame.attrs["prob_prefix"] = prob_prefix  # so that an error names the user's columns, not prob_*
    return frame, shadowed


def ignored_columns(frame: pd.DataFrame, schema: LabelSchema) -> list[str]:
    """Input columns a table following ``schema`` does not read (sorted), for a warning."""
    used = {"image_id", "age", AGE_BAND, *schema.labelled, *schema.prob_columns, schema.pred_column,
            *OPTIONAL_COLUMNS, *DERIVED_COLUMNS, *(REGRESSION_DERIVED_COLUMNS if schema.regression else ())}
    return sorted(str(c) for c in frame.columns if c not in used)


def missing_id_hint(frame: pd.DataFrame, schema: LabelSchema = UTKFACE) -> str:
    """A hint naming --id-col / --prob-prefix when the table looks like another tool's layout."""
    columns = [str(c) for c in frame.columns]
    hints = []
    if "image_id" not in columns:
        ids = [c for c in ("id", "image", "filename", "file", "path", "image_path") if c in columns]
        if ids:
            hints.append(f"--id-col {ids[0]}")
    first = schema.classes[0] if schema.classes else None
    if first is not None and not any(c.startswith("prob_") for c in columns):
        for column in columns:
            if column.endswith(first) and all(f"{column[:-len(first)]}{k}" in columns for k in schema.classes):
                hints.append(f"--prob-prefix {column[:-len(first)]}")
                break
    return f" (try {' '.join(hints)})" if hints else ""


def check_probabilities(probs: np.ndarray, n_classes: int, *, what: str = "predictions",
                        frame: pd.DataFrame | None = None) -> None:
    """Raise one FaceauditError unless every row is a probability vector over ``n_classes`` classes (``frame``,
    the table the rows came from, lets the error name a file's line or a DataFrame's row)."""
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2 or probs.shape[1] != n_classes:
        raise FaceauditError(f"{what}: expected {n_classes} class probabilities per image, got shape {probs.shape}")
    problems = [
        (~np.isfinite(probs).all(axis=1), "is NaN or infinite"),
        ((probs < 0).any(axis=1), "is negative"),
        ((probs > 1 + PROB_SUM_TOLERANCE).any(axis=1), "is above 1"),
    ]
    for mask, text in problems:
        if mask.any():
            row = int(np.flatnonzero(mask)[0])
            where = f"row {row + 2}" if frame is None else _row_text(FileRows.line(frame, row), what)
            raise FaceauditError(f"{what}: a probability in {where} {text} ({mask.sum()} row(s) affected)")
    sums = probs.sum(axis=1)
    off = np.abs(sums - 1) > PROB_SUM_TOLERANCE
    if off.any():
        row = int(np.flatnonzero(off)[0])
        where = f"row {row + 2}" if frame is None else _row_text(FileRows.line(frame, row), what)
        raise FaceauditError(f"{what}: probabilities in {where} sum to {sums[row]:.4f}, not 1 "
                             f"(tolerance {PROB_SUM_TOLERANCE}; {off.sum()} row(s) affected)")


def _age_columns(frame: pd.DataFrame, bands: AgeBands, required: bool) -> tuple[np.ndarray, pd.Categorical | None]:
    """Ages (float, NaN where only a band was given) and age bands, from ``age`` and/or ``age_band``.

    An ``age`` column of band labels (FairFace's ``20-29``, ``more than 70``) is read as bands."""
    columns = set(frame.columns)
    n = len(frame)
    if "age" not in columns and AGE_BAND not in columns:
        if required:
            raise FaceauditError("lacks column(s): age or age_band")
        return np.full(n, np.nan), None
    ages = np.full(n, np.nan)
    band_text = frame[AGE_BAND] if AGE_BAND in columns else None
    if "age" in columns:
        numeric = pd.to_numeric(frame["age"], errors="coerce").to_numpy(dtype=float)
        bad = np.isnan(numeric) & frame["age"].notna().to_numpy()
        if bad.any() and band_text is None and bands.normalise_label(frame["age"].iloc[int(np.flatnonzero(bad)[0])]):
            band_text = frame["age"]
        elif bad.any():
            raise FaceauditError(f"column 'age' has a non-numeric value {frame['age'].iloc[int(np.flatnonzero(bad)[0])]!r}")
        else:
            ages = numeric
    if band_text is not None and np.isnan(ages).any():
        uniques = pd.unique(band_text.astype(str))
        mapping = {u: bands.normalise_label(u) for u in uniques}
        unknown = sorted(u for u, m in mapping.items() if m is None)
        if unknown:
            raise FaceauditError(f"column {band_text.name!r} has band {unknown[0]!r}, not one of the age bands "
                                 f"{bands} (pass --age-bands to match)")
        return ages, pd.Categorical(band_text.astype(str).map(mapping), categories=list(bands.labels), ordered=True)
    assigned = bands.assign(ages)
    if pd.isna(assigned).any():
        from faceaudit.console import shown

        row = int(np.flatnonzero(pd.isna(assigned))[0])
        raise FaceauditError(f"age {shown(frame['age'].iloc[row])} (row {row + 2}) is outside {AGE_MIN}-{AGE_MAX} "
                             f"or missing")
    return ages, assigned


def _numeric_column(frame: pd.DataFrame, column: str, what: str) -> np.ndarray:
    """A column of finite numbers, or one FaceauditError naming the first bad row (as a file's line: row + 2)."""
    from faceaudit.console import shown

    series = frame[column]
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
    missing = series.isna().to_numpy()
    problems = [(missing, "has a missing or NaN value"),
                (np.isnan(values) & ~missing, "has a non-numeric value"),
                (np.isinf(values), "has an infinite value")]
    for mask, text in problems:
        if mask.any():
            row = int(np.flatnonzero(mask)[0])
            value = "" if text.endswith("NaN value") else f" {shown(series.iloc[row])}"
            line = FileRows.line(frame, row)  # its row in the whole table
            raise FaceauditError(f"{what}: column {column!r} {text}{value} ({_row_text(line, what)}; "
                                 f"{int(mask.sum())} row(s) affected){_number_hint(series.iloc[row], text, what)}")
    return values


class FileRows:
    """The positions, in the whole table, of a subset's rows (the test rows of a file with a ``split`` column),
    kept in ``frame.attrs["rows"]`` so an error names the line of the file. Compared by identity and never deep
    copied: pandas compares and copies ``attrs`` on every operation."""

    __slots__ = ("positions",)

    def __init__(self, positions: np.ndarray):
        self.positions = positions

    def __eq__(self, other) -> bool:
        return self is other

    __hash__ = object.__hash__

    def __deepcopy__(self, memo) -> "FileRows":
        return self

    @staticmethod
    def line(frame: pd.DataFrame, row: int) -> int:
        """``row`` of ``frame`` as a row of the whole table (itself when the frame is not such a subset)."""
        rows = frame.attrs.get("rows")
        if isinstance(rows, FileRows) and len(rows.positions) == len(frame):
            return int(rows.positions[row])
        return row


def _row_text(row: int, what: str) -> str:
    """Where a bad value is: a CSV file's line (header on line 1, so row + 2), another file's (Parquet, a shard)
    row counted from 1, or a DataFrame's row position (from 0)."""
    if what.lower().endswith(".csv"):
        return f"line {row + 2} of the file"
    if what.startswith(("predictions file", "predictions shard")):
        return f"row {row + 1} of the file"
    return f"row {row} of the table"


def _number_hint(value, problem: str, what: str) -> str:
    """What a bad number probably is: a decimal comma (``0,93``), or, for a missing value in a CSV file, a short
    row or an empty cell."""
    if problem.endswith("NaN value"):
        return "; a row shorter than the header, or an empty cell" if what.lower().endswith(".csv") else ""
    if re.fullmatch(r"\s*[-+]?\d*,\d+\s*", str(value)):
        return "; that is a decimal comma: write numbers with a decimal point (0.93, not 0,93)"
    return ""


def _id_frame(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    """The table's ``image_id`` column as text, each id once (one line naming the first repeated one)."""
    out = pd.DataFrame({"image_id": frame["image_id"].astype(str).to_numpy()})
    if out["image_id"].duplicated().any():
        dup = out["image_id"][out["image_id"].duplicated()].iloc[0]
        raise FaceauditError(f"{what} lists image_id {dup!r} more than once")
    return out


def _regression_frame(frame: pd.DataFrame, schema: LabelSchema, what: str) -> pd.DataFrame:
    """The canonical frame of an age regressor's table: ``image_id``, the grouping attributes as categoricals,
    ``age`` (years), ``age_band``, ``pred_age`` (years), then ``path``, ``sha256``, ``split`` when given."""
    columns = set(map(str, frame.columns))
    needed = ["image_id", "age", PRED_AGE, *(g for g in schema.groups if g != AGE_BAND)]
    missing = [c for c in dict.fromkeys(needed) if c not in columns]
    if missing:
        hint = " (an age audit needs the true age in years and the predicted age in years)" if (
            "age" in missing or PRED_AGE in missing) else ""
        raise FaceauditError(f"{what} lacks column(s): {'; '.join(missing)}{hint}{missing_id_hint(frame, schema)}")
    out = _id_frame(frame, what)
    for attribute in schema.attributes:
        if attribute.name in columns:
            out[attribute.name] = attribute.categorical(frame[attribute.name])
    if pd.to_numeric(frame["age"], errors="coerce").isna().all() and frame["age"].notna().any():
        raise FaceauditError(f"{what}: column 'age' holds no ages in years (e.g. {frame['age'].iloc[0]!r}); an age "
                             "audit compares predicted with true ages in years")
    true_age = _numeric_column(frame, "age", what)
    out["age"], bands = _age_columns(pd.DataFrame({"age": true_age}), schema.age_bands, True)
    out[AGE_BAND] = bands
    out[PRED_AGE] = _numeric_column(frame, PRED_AGE, what)
    for column in OPTIONAL_COLUMNS:
        if column in columns:
            out[column] = frame[column].to_numpy()
    return out


@dataclass(frozen=True)
class PredictionsTable:
    """A validated predictions table and the label schema it follows.

    ``frame`` holds ``image_id``; every labelled attribute present, ``age_band`` and the target as categoricals over
    the schema's values; ``age`` (float, NaN where only bands were given); the ``prob_*`` columns (float; absent
    when the input had labels only); ``pred_<target>``; ``path``, ``sha256``, ``split`` when given.
    """

    frame: pd.DataFrame
    schema: LabelSchema
    #: Version of the table's columns; written into Parquet metadata.
    VERSION: ClassVar[str] = "1.0"

    # -- building -----------------------------------------------------------------------------------------

    @classmethod
    def validate(cls, frame: pd.DataFrame, *, schema: LabelSchema | None = None, target: str | None = None,
                 groups: tuple[str, ...] | None = None, age_bands: AgeBands | str | None = None,
                 what: str = "the predictions table") -> "PredictionsTable":
        """Check a table and return its canonical form; every problem is one clear FaceauditError.

        Without ``schema`` one is inferred (:meth:`LabelSchema.infer`): UTKFace where its labels fit, the classes
        from the ``prob_*`` columns otherwise."""
        if not isinstance(frame, pd.DataFrame):
            raise FaceauditError(f"{what} must be a pandas DataFrame, got {type(frame).__name__}")
        if len(frame) == 0:
            raise FaceauditError(f"{what} is empty: no test images to audit")
        if schema is None:
            base = UTKFACE if age_bands is None else UTKFACE.with_options(age_bands=age_bands)
            try:
                schema = LabelSchema.infer(frame, target=target or "race", groups=groups, base=base)
            except FaceauditError as exc:
                raise FaceauditError(f"{what} {exc}" if str(exc).startswith("lacks") else f"{what}: {exc}") from None
        elif target is not None or groups is not None or age_bands is not None:
            schema = schema.with_options(target=target, groups=groups, age_bands=age_bands)
        if schema.regression:
            return cls(_regression_frame(frame, schema, what), schema)
        columns = set(map(str, frame.columns))
        needed = ["image_id", *(a for a in dict.fromkeys([schema.target, *schema.groups]) if a != AGE_BAND)]
        missing = [c for c in needed if c not in columns]
        needs_age = AGE_BAND in (schema.target, *schema.groups)
        if needs_age and "age" not in columns and AGE_BAND not in columns:
            missing.append("age or age_band")
        present_probs = [c for c in schema.prob_columns if c in columns]
        if 0 < len(present_probs) < len(schema.prob_columns):
            missing += [c for c in schema.prob_columns if c not in columns]
        if not present_probs and schema.pred_column not in columns:
            missing.append(f"{', '.join(schema.prob_columns)} or {schema.pred_column}")
        if missing:
            raise FaceauditError(f"{what} lacks column(s): {'; '.join(missing)}{missing_id_hint(frame, schema)}")

        out = _id_frame(frame, what)
        for attribute in schema.attributes:
            if attribute.name in columns:
                try:
                    out[attribute.name] = attribute.categorical(frame[attribute.name])
                except FaceauditError as exc:
                    if attribute.name != schema.target or not present_probs:
                        raise
                    prefix = str(frame.attrs.get("prob_prefix", "prob_"))  # the user's names (--prob-prefix)
                    named = [prefix + c[len("prob_"):] for c in present_probs]
                    raise FaceauditError(f"{exc} (the classes are those of the {', '.join(named)} columns; "
                                         f"add the missing {prefix} column or pass --schema)") from None
        try:
            out["age"], bands = _age_columns(frame, schema.age_bands, needs_age)
        except FaceauditError as exc:
            raise FaceauditError(f"{what} {exc}" if str(exc).startswith("lacks") else str(exc)) from None
        if bands is not None:
            out[AGE_BAND] = bands
        classes = schema.classes
        target = schema.attribute(schema.target)
        if present_probs:
            probs = np.column_stack([_numeric_column(frame, column, what) for column in schema.prob_columns])
            check_probabilities(probs, len(classes), what=what, frame=frame)
            for column, values in zip(schema.prob_columns, probs.T):
                out[column] = values
            pred = probs.argmax(axis=1)
            out[schema.pred_column] = pd.Categorical.from_codes(pred, categories=list(classes))
            if schema.pred_column in columns:
                given = target.categorical(frame[schema.pred_column], schema.pred_column)
                top = probs.max(axis=1)
                ties = np.isclose(probs, top[:, None], atol=1e-9).sum(axis=1) > 1
                disagree = (np.asarray(given.codes) != pred) & ~ties
                if disagree.any():
                    row = int(np.flatnonzero(disagree)[0])
                    raise FaceauditError(f"{schema.pred_column} {given[row]!r} "
                                         f"({_row_text(FileRows.line(frame, row), what)}) is not the most probable "
                                         f"class ({classes[pred[row]]}); pass probabilities or labels that agree")
        else:
            out[schema.pred_column] = target.categorical(frame[schema.pred_column], schema.pred_column)
        for column in OPTIONAL_COLUMNS:
            if column in columns:
                out[column] = frame[column].to_numpy()
        return cls(out, schema)

    @classmethod
    def from_probabilities(cls, rows: pd.DataFrame, probs: np.ndarray, schema: LabelSchema = UTKFACE
                           ) -> "PredictionsTable":
        """The table of a model's class probabilities on labelled rows (a manifest's, same order)."""
        probs = np.asarray(probs, dtype=float)
        if len(probs) != len(rows):
            raise FaceauditError(f"the model returned {len(probs)} predictions for {len(rows)} images")
        check_probabilities(probs, len(schema.classes), what="model output")
        keep = [c for c in ("image_id", *schema.labelled, "age", *OPTIONAL_COLUMNS) if c in rows.columns]
        frame = rows[keep].reset_index(drop=True).copy()
        for column, values in zip(schema.prob_columns, probs.T):
            frame[column] = values
        return cls.validate(frame, schema=schema, what="model output")

    @classmethod
    def from_age_predictions(cls, rows: pd.DataFrame, ages: np.ndarray, schema: LabelSchema = UTKFACE
                             ) -> "PredictionsTable":
        """The table of an age regressor's predicted ages in years on labelled rows (a manifest's, same order);
        ``schema`` is taken with ``target="age"``. A predicted age that is NaN or infinite is one FaceauditError."""
        if not isinstance(rows, pd.DataFrame):
            raise FaceauditError(f"rows must be a pandas DataFrame, got {type(rows).__name__}")
        try:
            ages = np.asarray(ages, dtype=float).reshape(-1) if np.ndim(ages) <= 1 or np.shape(ages)[-1] == 1 \
                else np.asarray(ages, dtype=float)
        except (TypeError, ValueError):
            raise FaceauditError("model output: predicted ages must be numbers") from None
        if ages.ndim != 1:
            raise FaceauditError(f"model output: expected one predicted age per image, got shape {ages.shape}")
        if len(ages) != len(rows):
            raise FaceauditError(f"the model returned {len(ages)} predicted ages for {len(rows)} images")
        bad = ~np.isfinite(ages)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            name = rows["image_id"].iloc[first] if "image_id" in rows.columns else f"row {first}"
            raise FaceauditError(f"model output: predicted age {ages[first]} for image {name!r} is not a finite "
                                 f"number ({int(bad.sum())} image(s) affected): check the output's scale and the "
                                 "input preprocessing")
        schema = schema if schema.regression else schema.with_options(target=AGE_TARGET)
        keep = [c for c in ("image_id", *schema.labelled, "age", *OPTIONAL_COLUMNS) if c in rows.columns]
        frame = rows[keep].reset_index(drop=True).copy()
        frame[PRED_AGE] = ages
        return cls.validate(frame, schema=schema, what="model output")

    @classmethod
    def read(cls, path: Path | str, **options) -> "PredictionsTable":
        """Read and validate a predictions CSV or Parquet file (options as for :meth:`validate`)."""
        path = Path(path)
        if options.get("schema") is None and (recorded := recorded_schema(path)) is not None:
            options["schema"] = recorded
        return cls.validate(read_table(path), what=f"predictions file {path.name}", **options)

    # -- reading ------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def has_probabilities(self) -> bool:
        return not self.schema.regression and all(c in self.frame.columns for c in self.schema.prob_columns)

    @property
    def true_age(self) -> np.ndarray:
        """The true ages in years (float; NaN where only an age band was given)."""
        return self.frame["age"].to_numpy(dtype=float)

    @property
    def pred_age(self) -> np.ndarray:
        """An age regressor's predicted ages in years."""
        if not self.schema.regression:
            raise FaceauditError(f"a {self.schema.target} classifier's table has no predicted ages")
        return self.frame[PRED_AGE].to_numpy(dtype=float)

    @property
    def age_error(self) -> np.ndarray:
        """Predicted − true age in years (positive: the model makes the face older)."""
        return self.pred_age - self.true_age

    @property
    def probabilities(self) -> np.ndarray | None:
        """``[n, K]`` class probabilities, or None for a labels-only table."""
        return self.frame[list(self.schema.prob_columns)].to_numpy(dtype=float) if self.has_probabilities else None

    @property
    def y_true(self) -> np.ndarray:
        """The true class codes (0..K-1)."""
        return np.asarray(self.frame[self.schema.target].cat.codes, dtype=np.int64)

    @property
    def y_pred(self) -> np.ndarray:
        """The predicted class codes (0..K-1)."""
        return np.asarray(self.frame[self.schema.pred_column].cat.codes, dtype=np.int64)

    def subset(self, mask: np.ndarray) -> "PredictionsTable":
        """The rows where ``mask`` holds, as a table of the same schema."""
        return PredictionsTable(self.frame[np.asarray(mask)].reset_index(drop=True), self.schema)

    # -- writing ------------------------------------------------------------------------------------------

    def output_frame(self) -> pd.DataFrame:
        """The table as written: labels, ages, probabilities, prediction, then confidence and correctness (for an
        age regressor: labels, ``age``, ``pred_age``, then ``error`` and ``abs_error``)."""
        f, s = self.frame, self.schema
        labels = ("image_id", *(a.name for a in s.attributes), "age", AGE_BAND)
        out = f[[c for c in labels if c in f.columns]].copy()
        if s.regression:
            out[PRED_AGE] = f[PRED_AGE]
            out["error"] = self.age_error
            out["abs_error"] = np.abs(out["error"])
            for column in OPTIONAL_COLUMNS:
                if column in f.columns:
                    out[column] = f[column]
            return out
        probs = self.probabilities
        for i, column in enumerate(s.prob_columns):
            out[column] = np.nan if probs is None else probs[:, i]
        out[s.pred_column] = f[s.pred_column]
        out["confidence"] = np.nan if probs is None else probs.max(axis=1)
        out["correct"] = (self.y_true == self.y_pred).astype(int)
        for column in OPTIONAL_COLUMNS:
            if column in f.columns:
                out[column] = f[column]
        return out

    def write(self, path: Path | str) -> Path:
        """Write the table atomically as CSV, or as Parquet (``.parquet``) carrying its version and schema."""
        path = Path(path)
        frame = self.output_frame()
        with atomic_path(path) as partial:
            if path.suffix.lower() in (".parquet", ".pq"):
                import json

                import pyarrow as pa
                import pyarrow.parquet as pq

                table = pa.Table.from_pandas(frame, preserve_index=False)
                meta = {**(table.schema.metadata or {}), b"faceaudit.predictions": self.VERSION.encode(),
                        b"faceaudit.label_schema": json.dumps(self.schema.to_dict()).encode()}
                pq.write_table(table.replace_schema_metadata(meta), partial)
            else:
                frame.to_csv(partial, index=False, float_format="%.6g")
        return path


#: The record ``faceaudit predict`` writes beside its Parquet shards: the model, the data, the engine, the shards.
SHARDS_RECORD = "predict.json"
#: Version of predict.json's layout, written as ``predict_version`` (records before 1.0 carry none).
SHARDS_RECORD_VERSION = "1.0"


def write_shards_record(folder: Path, record: dict) -> Path:
    """Write a shards folder's record (atomically); it marks the folder as one ``faceaudit predict`` may replace."""
    import json

    from faceaudit.files import atomic_write

    path = Path(folder) / SHARDS_RECORD
    record = {"predict_version": SHARDS_RECORD_VERSION, **{k: v for k, v in record.items() if k != "predict_version"}}
    atomic_write(path, json.dumps(record, indent=2, default=str) + "\n")
    return path


def read_shards_record(folder: Path) -> dict | None:
    """The record of a folder of shards ``faceaudit predict`` wrote, or None (another tool's shards)."""
    import json

    path = Path(folder) / SHARDS_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FaceauditError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(record, dict):
        return None
    check_version(record.get("predict_version"), SHARDS_RECORD_VERSION, str(path), required=False)
    return record


def load_embeddings(path: Path, n_rows: int) -> np.ndarray:
    """An ``.npy`` (or ``.npz`` with one array) of embeddings whose rows align with the predictions."""
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                if not data.files:
                    raise FaceauditError(f"embeddings {path} hold no array")
                data = data[data.files[0]]
    except (OSError, ValueError) as exc:
        raise FaceauditError(f"cannot read embeddings {path}: {str(exc).splitlines()[0]}") from None
    return check_embeddings(data, n_rows, what=f"embeddings {path.name}")


def check_embeddings(data, n_rows: int, *, what: str = "embeddings") -> np.ndarray:
    """Embeddings as a finite float32 ``[n_rows, d]`` array, or one FaceauditError."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim != 2:
        raise FaceauditError(f"{what} must be a 2-D array (images x features), got shape {data.shape}")
    if len(data) != n_rows:
        raise FaceauditError(f"{what} has {len(data)} rows but the predictions have {n_rows}")
    if not np.isfinite(data).all():
        raise FaceauditError(f"{what} contain NaN or infinite values")
    return data
