"""Paired comparisons of two models on the same test images: McNemar's test and a paired bootstrap.

Both use only the per-image correctness of each model, so they need the two audits' predictions matched image by
image (on ``image_id``, checked against ``sha256`` when both tables have it).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from faceaudit.errors import FaceauditError

#: Below this many discordant pairs McNemar's test uses the exact binomial, above it chi-squared with continuity
#: correction (the usual rule of thumb).
EXACT_BELOW = 25


def correct_column(predictions: pd.DataFrame) -> np.ndarray:
    """Per-image correctness as booleans (from ``correct`` or by comparing ``pred_race`` with ``race``)."""
    if "correct" in predictions:
        values = predictions["correct"]
        if values.dtype == bool:
            return values.to_numpy()
        return values.astype(str).str.lower().isin(("true", "1", "1.0")).to_numpy()
    return (predictions["pred_race"].astype(str) == predictions["race"].astype(str)).to_numpy()


def match_predictions(a: pd.DataFrame, b: pd.DataFrame, names: tuple[str, str]) -> pd.DataFrame:
    """Join two predictions tables image by image, or refuse in one line when the test sets differ."""
    ids_a, ids_b = set(a["image_id"].astype(str)), set(b["image_id"].astype(str))
    if ids_a != ids_b:
        only_a, only_b = len(ids_a - ids_b), len(ids_b - ids_a)
        raise FaceauditError(
            f"test sets differ: {names[0]} has {len(ids_a)} images, {names[1]} has {len(ids_b)} "
            f"({only_a} only in the first, {only_b} only in the second); paired comparison needs the same test images")
    if a["image_id"].duplicated().any() or b["image_id"].duplicated().any():
        raise FaceauditError(f"duplicate image_id in the predictions of {names[0] if a['image_id'].duplicated().any() else names[1]}")
    left = a.assign(image_id=a["image_id"].astype(str), correct_a=correct_column(a))
    right = b.assign(image_id=b["image_id"].astype(str), correct_b=correct_column(b))
    keep_a = ["image_id", "race", "gender", "age_band", "correct_a"] + (["sha256"] if "sha256" in a else [])
    keep_b = ["image_id", "correct_b"] + (["sha256"] if "sha256" in b else []) + ["race"]
    merged = left[keep_a].merge(right[keep_b], on="image_id", suffixes=("", "_b"), validate="one_to_one")
    if "sha256" in a and "sha256" in b:
        both = merged["sha256"].notna() & merged["sha256_b"].notna()
        differ = both & (merged["sha256"].astype(str) != merged["sha256_b"].astype(str))
        if differ.any():
            raise FaceauditError(f"test sets differ: {int(differ.sum())} images share an image_id but not their "
                                 f"bytes (sha256) between {names[0]} and {names[1]}")
    if (merged["race"].astype(str) != merged["race_b"].astype(str)).any():
        raise FaceauditError(f"test sets differ: {names[0]} and {names[1]} label some of the same images differently")
    return merged.drop(columns=[c for c in ("sha256_b", "race_b") if c in merged])


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """McNemar's test on the discordant pairs: exact binomial below :data:`EXACT_BELOW`, else chi-squared (cc)."""
    a_only = int(np.sum(correct_a & ~correct_b))
    b_only = int(np.sum(~correct_a & correct_b))
    discordant = a_only + b_only
    if discordant == 0:
        return {"a_only": 0, "b_only": 0, "p_value": 1.0, "method": "none (no discordant pairs)"}
    if discordant < EXACT_BELOW:
        p = stats.binomtest(min(a_only, b_only), discordant, 0.5).pvalue
        method = "exact binomial"
    else:
        statistic = (abs(a_only - b_only) - 1) ** 2 / discordant
        p = float(stats.chi2.sf(statistic, 1))
        method = "chi-squared, continuity-corrected"
    return {"a_only": a_only, "b_only": b_only, "p_value": float(min(1.0, p)), "method": method}


def paired_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, *, n_boot: int = 2000, ci: float = 0.95,
                     seed: int = 42) -> dict:
    """Accuracy difference (b − a) with a paired percentile bootstrap CI (images resampled with both answers)."""
    n = len(correct_a)
    if n == 0:
        return {"value": None, "ci": None, "n": 0}
    # Resampling images keeps each image's pair of answers; only the four concordance counts matter.
    cells = np.array([np.sum(correct_a & correct_b), np.sum(correct_a & ~correct_b),
                      np.sum(~correct_a & correct_b), np.sum(~correct_a & ~correct_b)], dtype=float)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, cells / n, size=n_boot)
    diffs = (draws[:, 2] - draws[:, 1]) / n
    alpha = (1 - ci) / 2
    value = (cells[2] - cells[1]) / n
    return {"value": float(value), "ci": [float(np.quantile(diffs, alpha)), float(np.quantile(diffs, 1 - alpha))],
            "n": int(n)}


def holm(p_values: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (family-wise error across the groups of one comparison)."""
    order = np.argsort(p_values)
    m = len(p_values)
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted.tolist()
