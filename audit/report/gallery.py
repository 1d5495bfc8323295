"""The error gallery: the model's most confident mistakes per group, as small inline JPEG thumbnails."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from faceaudit.audit.schema import PROB_COLUMNS

from .figures import jpeg_uri

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
    gender: str
    age: str
    src: str = ""
    missing: bool = False


@dataclass
class GalleryGroup:
    """The mistakes shown for one group, and how many there were."""

    key: str
    n: int
    n_errors: int
    mistakes: list[Mistake] = field(default_factory=list)


def _confidence(frame: pd.DataFrame) -> pd.Series:
    if "confidence" in frame and frame["confidence"].notna().any():
        return pd.to_numeric(frame["confidence"], errors="coerce")
    probs = [c for c in PROB_COLUMNS if c in frame]
    if len(probs) == len(PROB_COLUMNS):
        return frame[probs].apply(pd.to_numeric, errors="coerce").max(axis=1)
    return pd.Series(np.nan, index=frame.index)


def error_gallery(predictions: pd.DataFrame, *, by: str = "race", per_group: int = PER_GROUP,
                  thumbnails: bool = True, size: int = THUMB_SIZE, base_dir: Path | None = None) -> list[GalleryGroup]:
    """The ``per_group`` most confident mistakes of each ``by`` group (thumbnails only when ``thumbnails``)."""
    from PIL import Image

    frame = predictions.copy()
    frame["_confidence"] = _confidence(frame)
    if "correct" in frame:
        wrong = ~frame["correct"].astype(str).str.lower().isin(("true", "1", "1.0"))
    else:
        wrong = frame["pred_race"].astype(str) != frame["race"].astype(str)
    frame["_wrong"] = wrong
    groups = []
    for key, group in frame.groupby(frame[by].astype(str), sort=False):
        errors = group[group["_wrong"]].sort_values("_confidence", ascending=False, kind="stable")
        chosen = []
        for _, row in errors.head(per_group).iterrows():
            confidence = row["_confidence"]
            mistake = Mistake(image_id=str(row["image_id"]), true=str(row["race"]), predicted=str(row["pred_race"]),
                              confidence=None if pd.isna(confidence) else float(confidence),
                              gender=str(row.get("gender", "")), age=str(row.get("age", row.get("age_band", ""))))
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
