"""Two models on the same test images, group by group: one family of tests that ``compare`` and ``diff`` share.

Each group's accuracy change (b − a) gets Newcombe's paired interval (method 10) at the Bonferroni level over
the family, and McNemar's test; p-values are Holm-adjusted over the family, and a group is "better" or "worse"
only when its Holm-adjusted p is below 1 − level. Groups too small to judge are shown but are not part of the
family. Both need the two predictions tables matched image by image (on ``image_id``, checked against
``sha256`` when both have it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from faceaudit.errors import FaceauditError
from faceaudit.taxonomy import UTKFACE, LabelSchema

from .intervals import mover_difference, paired_difference, proportion, simultaneous_level
from .significance import holm, mcnemar, two_proportions

BETTER, WORSE, NO_CHANGE, TOO_SMALL = "better", "worse", "no clear change", "too small"


@dataclass(frozen=True)
class Slice:
    """One group of a comparison: its grouping, key, which rows belong to it, and whether it is too small."""

    grouping: str
    key: str
    mask: np.ndarray
    too_small: bool = False


def correct_column(predictions: pd.DataFrame, schema: LabelSchema = UTKFACE) -> np.ndarray:
    """Per-image correctness as booleans (from ``correct`` or by comparing the schema's predicted column with its
    target: ``pred_race`` with ``race`` for UTKFace)."""
    if "correct" in predictions:
        values = predictions["correct"]
        if values.dtype == bool:
            return values.to_numpy()
        return values.astype(str).str.lower().isin(("true", "1", "1.0")).to_numpy()
    return (predictions[schema.pred_column].astype(str) == predictions[schema.target].astype(str)).to_numpy()


def match_predictions(a: pd.DataFrame, b: pd.DataFrame, names: tuple[str, str],
                      schema: LabelSchema = UTKFACE) -> pd.DataFrame:
    """Join two predictions tables image by image, or refuse in one line when the test sets differ (or label the
    same image's target differently). Keeps ``a``'s label columns, so groups can be selected on the result."""
    ids_a, ids_b = set(a["image_id"].astype(str)), set(b["image_id"].astype(str))
    if ids_a != ids_b:
        only_a, only_b = len(ids_a - ids_b), len(ids_b - ids_a)
        raise FaceauditError(
            f"test sets differ: {names[0]} has {len(ids_a)} images, {names[1]} has {len(ids_b)} "
            f"({only_a} only in the first, {only_b} only in the second); paired comparison needs the same test images")
    if a["image_id"].duplicated().any() or b["image_id"].duplicated().any():
        raise FaceauditError(f"duplicate image_id in the predictions of {names[0] if a['image_id'].duplicated().any() else names[1]}")
    target = schema.target
    left = a.assign(image_id=a["image_id"].astype(str), correct_a=correct_column(a, schema))
    right = b.assign(image_id=b["image_id"].astype(str), correct_b=correct_column(b, schema))
    labels = [c for c in schema.labelled if c in a and c != "image_id"]
    keep_a = ["image_id", *labels, "correct_a"] + (["sha256"] if "sha256" in a else [])
    keep_b = ["image_id", "correct_b"] + (["sha256"] if "sha256" in b else []) + [target]
    merged = left[keep_a].merge(right[keep_b], on="image_id", suffixes=("", "_b"), validate="one_to_one")
    if "sha256" in a and "sha256" in b:
        both = merged["sha256"].notna() & merged["sha256_b"].notna()
        differ = both & (merged["sha256"].astype(str) != merged["sha256_b"].astype(str))
        if differ.any():
            raise FaceauditError(f"test sets differ: {int(differ.sum())} images share an image_id but not their "
                                 f"bytes (sha256) between {names[0]} and {names[1]}")
    if (merged[target].astype(str) != merged[f"{target}_b"].astype(str)).any():
        raise FaceauditError(f"test sets differ: {names[0]} and {names[1]} label some of the same images differently")
    return merged.drop(columns=[c for c in ("sha256_b", f"{target}_b") if c in merged])


def _verdict(diff: float, p_holm: float, too_small: bool, level: float) -> str:
    if too_small:
        return TOO_SMALL
    if np.isnan(p_holm) or p_holm >= 1 - level:
        return NO_CHANGE
    return BETTER if diff > 0 else WORSE


def _finish(frame: pd.DataFrame, level: float, family: int, adjusted: float, method: str) -> pd.DataFrame:
    """Holm over the family, the verdicts, and the family's size and levels as columns (they survive concat)."""
    frame["p_holm"] = holm(frame["p_value"].to_numpy(dtype=float))
    frame["verdict"] = [_verdict(d, p, small, level) for d, p, small in
                        zip(frame["diff"], frame["p_holm"], frame["too_small"])]
    frame["level"], frame["family"], frame["interval_level"] = level, family, round(adjusted, 6)
    frame.attrs["method"] = method
    return frame


def paired_family(correct_a: np.ndarray, correct_b: np.ndarray, slices: list[Slice], *,
                  level: float = 0.95) -> pd.DataFrame:
    """Per slice: both accuracies, the change (b − a) with its simultaneous paired interval, McNemar, Holm, verdict."""
    correct_a, correct_b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    family = max(sum(not s.too_small for s in slices), 1)
    adjusted = simultaneous_level(level, family)
    rows = []
    for s in slices:
        a, b = correct_a[s.mask], correct_b[s.mask]
        both, only_a, only_b = int(np.sum(a & b)), int(np.sum(a & ~b)), int(np.sum(~a & b))
        neither = len(a) - both - only_a - only_b
        diff, lo, hi = paired_difference(both, only_a, only_b, neither, adjusted)
        p, test = mcnemar(only_a, only_b) if not s.too_small else (np.nan, "not tested (too small)")
        rows.append({"grouping": s.grouping, "group": s.key, "n": int(len(a)), "too_small": s.too_small,
                     "accuracy_a": a.mean() if len(a) else np.nan, "accuracy_b": b.mean() if len(b) else np.nan,
                     "diff": diff, "diff_lo": lo, "diff_hi": hi, "a_only_correct": only_a, "b_only_correct": only_b,
                     "p_value": p, "test": f"McNemar ({test})" if not s.too_small else test})
    frame = pd.DataFrame(rows)
    return _finish(frame, level, family, adjusted, "paired: Newcombe method 10 interval, McNemar test, Holm over the family")


def unpaired_family(old: list[tuple[int, int]], new: list[tuple[int, int]], slices: list[Slice], *,
                    level: float = 0.95) -> pd.DataFrame:
    """The same family when the two test sets differ: (correct, n) per slice for each model, independent samples."""
    family = max(sum(not s.too_small for s in slices), 1)
    adjusted = simultaneous_level(level, family)
    rows = []
    for s, (x1, n1), (x2, n2) in zip(slices, old, new):
        diff, lo, hi = (float(v) for v in mover_difference(proportion(x2, n2, adjusted), proportion(x1, n1, adjusted)))
        p, test = two_proportions(x2, n2, x1, n1) if not s.too_small else (np.nan, "not tested (too small)")
        rows.append({"grouping": s.grouping, "group": s.key, "n_a": n1, "n_b": n2, "too_small": s.too_small,
                     "accuracy_a": x1 / n1 if n1 else np.nan, "accuracy_b": x2 / n2 if n2 else np.nan,
                     "diff": diff, "diff_lo": lo, "diff_hi": hi, "p_value": p, "test": test})
    frame = pd.DataFrame(rows)
    return _finish(frame, level, family, adjusted, "unpaired: Newcombe interval, two-proportion test, Holm over the family")
