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
#: A group only one of two audits has (diff of audits of different test sets): shown, not tested.
NOT_COMPARABLE = "not comparable"


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


def _verdict(diff: float, p_holm: float, too_small: bool, level: float, comparable: bool = True) -> str:
    if not comparable:
        return NOT_COMPARABLE
    if too_small:
        return TOO_SMALL
    if np.isnan(p_holm) or p_holm >= 1 - level:
        return NO_CHANGE
    return BETTER if diff > 0 else WORSE


def _finish(frame: pd.DataFrame, level: float, family: int, adjusted: float, method: str) -> pd.DataFrame:
    """Holm over the family, the verdicts, and the family's size and levels as columns (they survive concat)."""
    frame["p_holm"] = holm(frame["p_value"].to_numpy(dtype=float))
    comparable = frame["comparable"] if "comparable" in frame else [True] * len(frame)
    frame["verdict"] = [_verdict(d, p, small, level, ok) for d, p, small, ok in
                        zip(frame["diff"], frame["p_holm"], frame["too_small"], comparable)]
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


def unpaired_family(old: list[tuple[int, int] | None], new: list[tuple[int, int] | None], slices: list[Slice], *,
                    level: float = 0.95) -> pd.DataFrame:
    """The same family when the two test sets differ: (correct, n) per slice for each model, independent samples.
    A slice one audit lacks (None) is shown as not comparable and left out of the family."""
    if not len(slices) == len(old) == len(new):
        raise ValueError("unpaired_family needs one (correct, n) per slice for each audit")
    comparable = [x is not None and y is not None for x, y in zip(old, new)]
    family = max(sum(ok and not s.too_small for s, ok in zip(slices, comparable)), 1)
    adjusted = simultaneous_level(level, family)
    rows = []
    for s, first, second, ok in zip(slices, old, new, comparable):
        (x1, n1), (x2, n2) = first or (0, 0), second or (0, 0)
        if ok:
            diff, lo, hi = (float(v) for v in mover_difference(proportion(x2, n2, adjusted),
                                                               proportion(x1, n1, adjusted)))
            p, test = two_proportions(x2, n2, x1, n1) if not s.too_small else (np.nan, "not tested (too small)")
        else:
            diff = lo = hi = p = np.nan
            test = f"not tested (only in the {'first' if first is not None else 'second'} audit)"
        rows.append({"grouping": s.grouping, "group": s.key, "n_a": n1 if first else 0, "n_b": n2 if second else 0,
                     "too_small": s.too_small, "comparable": ok,
                     "accuracy_a": x1 / n1 if n1 else np.nan, "accuracy_b": x2 / n2 if n2 else np.nan,
                     "diff": diff, "diff_lo": lo, "diff_hi": hi, "p_value": p, "test": test})
    frame = pd.DataFrame(rows)
    return _finish(frame, level, family, adjusted, "unpaired: Newcombe interval, two-proportion test, Holm over the family")


# -- who pays for the change --------------------------------------------------------------------------------
#
# A group's *excess* change is its change minus the whole set's: e_g = d_g − d_all. The whole set contains the
# group, so the two are not independent; but with w = n_g / n, d_all = w·d_g + (1 − w)·d_rest, hence
# e_g = (1 − w)·(d_g − d_rest) exactly, where d_rest is the change on the images outside the group. The group and
# the rest are disjoint images, so d_g and d_rest are independent paired differences: each gets Newcombe's paired
# interval, and their difference MOVER's (Newcombe's square-and-add) combination, scaled by (1 − w).

LOSES_MORE, GAINS_MORE, IN_LINE = "loses more than the whole set", "gains more than the whole set", "in line"
#: What a group's excess-loss interval says against a bound (``--max-excess-loss``).
BOUND_PASS, BOUND_FAIL, BOUND_INCONCLUSIVE = "pass", "fail", "inconclusive"


def _paired_counts(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int, int]:
    both, only_a, only_b = int(np.sum(a & b)), int(np.sum(a & ~b)), int(np.sum(~a & b))
    return both, only_a, only_b, len(a) - both - only_a - only_b


def excess_family(correct_a: np.ndarray, correct_b: np.ndarray, slices: list[Slice], *,
                  level: float = 0.95) -> pd.DataFrame:
    """Per group (overall left out): the group's change (b − a), the whole set's, and the group's excess change
    (group − whole set) with a simultaneous interval over the family of groups large enough to judge (Bonferroni),
    from the group-versus-rest decomposition above. ``excess_loss`` is −excess (points the group loses beyond the
    whole set); a group "loses more than the whole set" when its whole excess interval is below 0."""
    correct_a, correct_b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    groups = [s for s in slices if s.grouping != "overall"]
    family = max(sum(not s.too_small for s in groups), 1)
    adjusted = simultaneous_level(level, family)
    n_all = len(correct_a)
    overall = paired_difference(*_paired_counts(correct_a, correct_b), adjusted)[0] if n_all else np.nan
    rows = []
    for s in groups:
        inside, rest = s.mask, ~s.mask
        n_g = int(inside.sum())
        d_g, lo_g, hi_g = paired_difference(*_paired_counts(correct_a[inside], correct_b[inside]), adjusted)
        d_r, lo_r, hi_r = paired_difference(*_paired_counts(correct_a[rest], correct_b[rest]), adjusted)
        share = n_g / n_all if n_all else np.nan
        if n_g == 0 or n_g == n_all:
            excess = lo = hi = np.nan
        else:
            diff, d_lo, d_hi = (float(v) for v in mover_difference((d_g, lo_g, hi_g), (d_r, lo_r, hi_r)))
            excess, lo, hi = ((1 - share) * diff, (1 - share) * d_lo, (1 - share) * d_hi)
        if s.too_small:
            verdict = TOO_SMALL
        elif np.isnan(excess):
            verdict = IN_LINE
        else:
            verdict = LOSES_MORE if hi < 0 else GAINS_MORE if lo > 0 else IN_LINE
        rows.append({"grouping": s.grouping, "group": s.key, "n": n_g, "share": share, "too_small": s.too_small,
                     "diff": d_g, "diff_lo": lo_g, "diff_hi": hi_g, "rest_diff": d_r, "overall_diff": overall,
                     "excess": excess, "excess_lo": lo, "excess_hi": hi,
                     "excess_loss": -excess, "excess_loss_lo": -hi, "excess_loss_hi": -lo, "verdict": verdict})
    frame = pd.DataFrame(rows, columns=["grouping", "group", "n", "share", "too_small", "diff", "diff_lo", "diff_hi",
                                        "rest_diff", "overall_diff", "excess", "excess_lo", "excess_hi",
                                        "excess_loss", "excess_loss_lo", "excess_loss_hi", "verdict"])
    frame["level"], frame["family"], frame["interval_level"] = level, family, round(adjusted, 6)
    frame.attrs["method"] = ("excess change = group change − whole-set change = (1 − share)·(group − rest); "
                             "Newcombe paired intervals of group and rest (disjoint images) combined by MOVER, "
                             "simultaneous over the family (Bonferroni)")
    return frame


def excess_bound(frame: pd.DataFrame, max_loss: float) -> pd.Series:
    """Per group against ``max_loss`` (a share, 0.01 = 1 point): ``fail`` when the group's whole excess-loss
    interval lies above the bound, ``pass`` when it lies at or below it, ``inconclusive`` when it straddles it;
    groups too small to judge are not judged (empty string)."""
    def judge(row) -> str:
        if row["too_small"] or pd.isna(row["excess_loss"]):
            return ""
        if row["excess_loss_lo"] > max_loss:
            return BOUND_FAIL
        if row["excess_loss_hi"] <= max_loss:
            return BOUND_PASS
        return BOUND_INCONCLUSIVE

    return frame.apply(judge, axis=1) if len(frame) else pd.Series([], dtype=str)
