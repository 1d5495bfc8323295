"""The error gallery: the model's most confident mistakes per group, as small inline JPEG thumbnails."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from faceaudit.taxonomy import AGE_BAND, UTKFACE, LabelSchema
from faceaudit.templates.figures import jpeg_uri

#: Mistakes shown per group, and thumbnail edge in pixels: 30 faces at ~3 kB keep the report small.
PER_GROUP = 6
THUMB_SIZE = 96


@dataclass
class Mistake:
    """One wrong prediction: who it was, what the model said, and how sure it was."""

    image_id: str
    true: str
    predicted: str
    confidence: float | None
    others: str
    age: str
    src: str = ""
    missing: bool = False

    @property
    def details(self) -> str:
        """The face's other labels and age as the thumbnail shows them (``Male, 34``)."""
        return ", ".join(part for part in (self.others, self.age) if part)


@dataclass
class GalleryGroup:
    """The mistakes shown for one group, and how many there were."""

    key: str
    n: int
    n_errors: int
    mistakes: list[Mistake] = field(default_factory=list)


def _confidence(frame: pd.DataFrame, schema: LabelSchema) -> pd.Series:
    if "confidence" in frame and frame["confidence"].notna().any():
        return pd.to_numeric(frame["confidence"], errors="coerce")
    probs = [c for c in schema.prob_columns if c in frame]
    if len(probs) == len(schema.prob_columns):
        return frame[probs].apply(pd.to_numeric, errors="coerce").max(axis=1)
    return pd.Series(np.nan, index=frame.index)


def _others(row: pd.Series, schema: LabelSchema) -> str:
    """A face's labels other than the target and the age band, comma-separated (``Male`` for a race classifier)."""
    names = [a.name for a in schema.attributes if a.name not in (schema.target, AGE_BAND)]
    return ", ".join(str(row[n]) for n in names if n in row and not pd.isna(row[n]))


def error_gallery(predictions: pd.DataFrame, *, schema: LabelSchema = UTKFACE, by: str | None = None,
                  per_group: int = PER_GROUP, thumbnails: bool = True, size: int = THUMB_SIZE,
                  base_dir: Path | None = None) -> list[GalleryGroup]:
    """The ``per_group`` most confident mistakes of each ``by`` group (default: each true class of the schema's
    target; thumbnails only when ``thumbnails``)."""
    from PIL import Image

    target, by = schema.target, by or schema.target
    frame = predictions.copy()
    frame["_confidence"] = _confidence(frame, schema)
    if "correct" in frame:
        wrong = ~frame["correct"].astype(str).str.lower().isin(("true", "1", "1.0"))
    else:
        wrong = frame[schema.pred_column].astype(str) != frame[target].astype(str)
    frame["_wrong"] = wrong
    groups = []
    for key, group in frame.groupby(frame[by].astype(str), sort=False):
        errors = group[group["_wrong"]].sort_values("_confidence", ascending=False, kind="stable")
        chosen = []
        for _, row in errors.head(per_group).iterrows():
            confidence = row["_confidence"]
            mistake = Mistake(image_id=str(row["image_id"]), true=str(row[target]),
                              predicted=str(row.get(schema.pred_column, "")),
                              confidence=None if pd.isna(confidence) else float(confidence),
                              others=_others(row, schema), age=str(row.get("age", row.get(AGE_BAND, ""))))
            if thumbnails:
                path = row.get("path")
                resolved = _resolve(path, base_dir)
                if resolved is None:
                    mistake.missing = True
                else:
                    try:
                        with Image.open(resolved) as image:
                            mistake.src = jpeg_uri(image, size=size)
                    except OSError:
                        mistake.missing = True
            chosen.append(mistake)
        groups.append(GalleryGroup(key=str(key), n=len(group), n_errors=int(group["_wrong"].sum()), mistakes=chosen))
    order = {name: i for i, name in enumerate(predictions[by].cat.categories)} if hasattr(predictions[by], "cat") else {}
    groups.sort(key=lambda g: order.get(g.key, len(order)))
    return groups


def _resolve(path: object, base_dir: Path | None) -> Path | None:
    if path is None or (isinstance(path, float) and np.isnan(path)) or str(path).strip() == "":
        return None
    candidate = Path(str(path))
    if not candidate.is_absolute() and base_dir is not None:
        candidate = base_dir / candidate
    return candidate if candidate.is_file() else None
