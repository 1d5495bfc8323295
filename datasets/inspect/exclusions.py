"""The exclusion list: which flagged images to leave out, one ``image_id, reason`` row each.

It is the CSV every data-reading command takes with ``--exclude``, so cleaning is a reviewed file, not deletions.
Each reason starts with its kind (``exact-duplicate: ...``), so a reviewer can filter and edit it.
"""

from __future__ import annotations

from collections import defaultdict

import pandas as pd

from faceaudit.config import DEFAULT_EXCLUDE_KINDS, EXCLUDE_KINDS, SPLITS  # noqa: F401  (re-exported)


def parse_kinds(text: str) -> tuple[str, ...]:
    """Kinds from a comma-separated option value (``none`` for an empty list); unknown names raise ValueError."""
    if text.strip().lower() in ("", "none"):
        return ()
    kinds = tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    unknown = [k for k in kinds if k not in EXCLUDE_KINDS]
    if unknown:
        raise ValueError(f"unknown exclusion kind(s) {', '.join(unknown)}; choose from {', '.join(EXCLUDE_KINDS)}")
    return kinds


def _split_rank(split: str) -> int:
    return SPLITS.index(split) if split in SPLITS else len(SPLITS)


def build_exclusions(
    kinds: tuple[str, ...],
    *,
    pairs: pd.DataFrame,
    groups: pd.Series | None = None,
    splits: pd.Series | None = None,
    outliers: pd.DataFrame | None = None,
    exposure: pd.DataFrame | None = None,
    non_faces: pd.DataFrame | None = None,
    face_confidence: float | None = None,
    conflicts: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The ``image_id, reason`` rows for the chosen ``kinds``, one row per image (reasons joined by ``; ``)."""
    reasons: dict[str, list[str]] = defaultdict(list)
    if "exact-duplicate" in kinds:
        for row in pairs[pairs["kind"] == "exact"].itertuples():
            # image_id_a sorts first, so the first copy of each set of identical files is kept
            reasons[row.image_id_b].append(f"exact-duplicate: same bytes as {row.image_id_a}")
    if "near-duplicate" in kinds and groups is not None and splits is not None:
        members = groups[groups >= 0]
        for _, ids in members.groupby(members):
            ordered = sorted(ids.index, key=lambda i: (_split_rank(splits[i]), i))
            for other in ordered[1:]:
                reasons[other].append(f"near-duplicate: same photo as {ordered[0]} (kept)")
    if "leak" in kinds:
        cross = pairs[pairs["split_a"] != pairs["split_b"]]
        for row in cross.itertuples():
            later_is_b = _split_rank(row.split_b) > _split_rank(row.split_a)
            later, earlier = (row.image_id_b, row.image_id_a) if later_is_b else (row.image_id_a, row.image_id_b)
            later_split = row.split_b if later_is_b else row.split_a
            earlier_split = row.split_a if later_is_b else row.split_b
            reasons[later].append(f"leak: {later_split} copy of {earlier_split} image {earlier} "
                                  f"({row.kind}, pHash distance {row.distance})")
    if "nonface" in kinds and non_faces is not None:
        for row in non_faces.itertuples():
            reasons[row.image_id].append(f"nonface: no face found by MTCNN (best confidence {row.face_confidence:.2f}"
                                         f" < {face_confidence:.2f})")
    if "outlier" in kinds and outliers is not None:
        for row in outliers[outliers["outlier"]].itertuples():
            reasons[row.image_id].append(f"outlier: unusual colour histogram (Isolation Forest score {row.outlier_score:.3f})")
    for kind, flag, word in (("dark", "dark", "very dark"), ("washed-out", "washed-out", "washed out")):
        if kind in kinds and exposure is not None:
            for row in exposure[exposure["flag"] == flag].itertuples():
                reasons[row.image_id].append(f"{kind}: {word} (mean brightness {row.brightness:.1f})")
    if "label-conflict" in kinds and conflicts is not None:
        for row in conflicts.itertuples():
            reasons[row.image_id_a].append(f"label-conflict: {row.conflict} differs from the same photo {row.image_id_b}")
            reasons[row.image_id_b].append(f"label-conflict: {row.conflict} differs from the same photo {row.image_id_a}")
    rows = [{"image_id": image_id, "reason": "; ".join(dict.fromkeys(texts))} for image_id, texts in reasons.items()]
    return pd.DataFrame(rows, columns=["image_id", "reason"]).sort_values("image_id").reset_index(drop=True)
