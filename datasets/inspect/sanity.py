"""Label sanity: ages outside the promised range, contradictory labels on the same photo, irregular names."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from faceaudit.taxonomy import AGE_MAX, AGE_MIN

_AGE_OUT = re.compile(r"^age (\d+) outside")
#: Age labels of two copies of one photo further apart than this (years) are listed as contradictory.
AGE_TOLERANCE = 5


def ages_out_of_range(excluded: pd.DataFrame) -> pd.DataFrame:
    """The files excluded at parse time because their age lies outside 0-116 (image_id, age, reason)."""
    reasons = excluded["reason"].astype(str)
    ages = reasons.str.extract(_AGE_OUT)[0]
    hit = ages.notna()
    return pd.DataFrame({"image_id": excluded.loc[hit, "image_id"].to_numpy(),
                         "age": ages[hit].astype(int).to_numpy(), "reason": reasons[hit].to_numpy()})


def _age_conflict(pairs: pd.DataFrame, tolerance: int) -> pd.Series:
    """Ages further apart than ``tolerance`` years; where only age bands are known (FairFace), different bands."""
    a, b = (pd.to_numeric(pairs[c], errors="coerce") for c in ("age_a", "age_b"))
    numeric = (a - b).abs() > tolerance
    if "age_band_a" in pairs and "age_band_b" in pairs:
        banded = (a.isna() | b.isna()) & (pairs["age_band_a"].astype(str) != pairs["age_band_b"].astype(str))
        return numeric | banded
    return numeric


def label_conflicts(pairs: pd.DataFrame, *, age_tolerance: int = AGE_TOLERANCE) -> pd.DataFrame:
    """Duplicate pairs (same bytes, or same photo by pHash) whose labels cannot both be right.

    One photo has one race and one gender; its age labels may differ by a year or two of annotation noise
    but not by more than ``age_tolerance`` years. Returns the pairs with a ``conflict`` column.
    """
    if pairs.empty:
        return pairs.assign(conflict=pd.Series(dtype=str))
    parts = pd.DataFrame({
        "race": (pairs["race_a"] != pairs["race_b"]).map({True: "race", False: ""}),
        "gender": (pairs["gender_a"] != pairs["gender_b"]).map({True: "gender", False: ""}),
        "age": _age_conflict(pairs, age_tolerance).map({True: "age", False: ""}),
    })
    conflict = parts.apply(lambda row: ", ".join(v for v in row if v), axis=1) if len(parts) else pd.Series(dtype=str)
    return pairs.assign(conflict=conflict)[conflict != ""].reset_index(drop=True)


def label_range_problems(manifest: pd.DataFrame) -> pd.DataFrame:
    """Manifest rows whose labels fall outside the taxonomy (none after a clean parse; checked, not assumed)."""
    checks = (
        (manifest["age"].notna() & ~manifest["age"].between(AGE_MIN, AGE_MAX), "age out of range"),
        (manifest["race"].isna(), "unknown race"),
        (manifest["gender"].isna(), "unknown gender"),
        (manifest["age_band"].isna(), "age in no band"),
    )
    texts = [np.where(mask.to_numpy(), text, "") for mask, text in checks]
    problem = np.array(["; ".join(t for t in row if t) for row in zip(*texts)], dtype=object)
    hit = problem != ""
    return pd.DataFrame({"image_id": manifest["image_id"].to_numpy()[hit], "problem": problem[hit].astype(str)})
