"""Classification metrics computed from confusion matrices, vectorised over resamples and groups.

Every function takes counts of shape ``[..., K, K]`` (rows = true class, columns = predicted class) and returns
one value per leading index, with scikit-learn's semantics: balanced accuracy averages recall over the classes
present in ``y_true``; macro-F1 averages F1 over the classes present in ``y_true`` or ``y_pred`` (a class that
is predicted but never right scores 0). Undefined values are NaN.

Which metric means something depends on the group. Where the true class varies (the whole test set, a gender,
an age band) accuracy, balanced accuracy and macro-F1 do (:data:`MIXED_METRICS`). Inside a single-class group
(one race, or one race within a gender or age band) every face has the same true label, so those collapse:
such a group is described by its class's rates within its context (:data:`CLASS_METRICS`), computed over
every face of the context (the whole test set, or that gender / age band).
"""

from __future__ import annotations

import warnings

import numpy as np

from .intervals import mover_sum, proportion

#: Metrics of groups in which the true class varies (overall, gender, age band, gender × age band).
MIXED_METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "macro_f1")
#: Rates of one class within its context: the per-class columns and the metrics of single-class groups.
CLASS_METRICS: tuple[str, ...] = ("recall", "fnr", "precision", "fpr", "selection_rate", "true_share")
#: Metrics of single-class groups (race, race × gender, ...): accuracy there is the class's recall.
CLASS_GROUP_METRICS: tuple[str, ...] = ("accuracy", *CLASS_METRICS)
#: Metrics that are proportions (successes / trials), with exact intervals and tests.
PROPORTION_METRICS: frozenset[str] = frozenset({"accuracy", *CLASS_METRICS})
#: Metrics compared across the groups of a grouping (worst, best, gap, ratio), by kind of grouping.
DISPARITY_METRICS: dict[str, tuple[str, ...]] = {"mixed": MIXED_METRICS, "class": ("accuracy", "precision", "fpr")}
#: Every metric a group record can carry.
ALL_METRICS: tuple[str, ...] = (*MIXED_METRICS, *CLASS_METRICS)
#: Metrics where lower is better (everything else: higher is better).
LOWER_IS_BETTER: frozenset[str] = frozenset({"fnr", "fpr"})
#: How reports name each metric.
METRIC_LABELS: dict[str, str] = {
    "accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro-F1",
    "recall": "recall (TPR)", "fnr": "false-negative rate", "precision": "precision", "fpr": "false-positive rate",
    "selection_rate": "selection rate", "true_share": "true share", "f1": "F1"}


def _parts(cm: np.ndarray):
    cm = np.asarray(cm, dtype=float)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    return cm, tp, cm.sum(axis=-1), cm.sum(axis=-2)


Estimate = tuple[np.ndarray, np.ndarray, np.ndarray]


def class_rates(cm: np.ndarray, level: float = 0.95) -> dict[str, Estimate]:
    """Each class's rates within each group ``[..., K]`` as ``(estimate, lower, upper)``.

    Proportions carry Clopper–Pearson intervals. F1 = 2q / (1 + q) is a monotone function of the proportion
    q = TP / (TP + FP + FN) of correct answers among the faces that are of the class or predicted as it, so its
    interval is q's, transformed.
    """
    cm, tp, rows, cols = _parts(cm)
    n = cm.sum(axis=(-2, -1))[..., None]
    out = {"recall": proportion(tp, rows, level), "fnr": proportion(rows - tp, rows, level),
           "precision": proportion(tp, cols, level), "fpr": proportion(cols - tp, n - rows, level),
           "selection_rate": proportion(cols, n, level), "true_share": proportion(rows, n, level)}
    out["f1"] = tuple(2 * q / (1 + q) for q in proportion(tp, rows + cols - tp, level))
    return out


def mixed_metrics(cm: np.ndarray, level: float = 0.95, rates: dict[str, Estimate] | None = None) -> dict[str, Estimate]:
    """Accuracy, balanced accuracy and macro-F1 per group as ``(estimate, lower, upper)``.

    Accuracy has a Clopper–Pearson interval. Balanced accuracy is a mean of per-class recalls, which rest on
    disjoint faces (one row of the confusion matrix each), so its interval is recovered from theirs (MOVER).
    Macro-F1 is a mean of per-class F1s that move together (every error is one class's false negative and
    another's false positive), which a MOVER sum would ignore (it then covers about 0.8-0.9); its bounds are the
    means of the per-class bounds, MOVER at the worst case of perfectly correlated parts, which holds whatever the
    dependence. Neither collapses at 0 % or 100 %.
    """
    cm, tp, rows, _ = _parts(cm)
    rates = rates or class_rates(cm, level)
    out = {"accuracy": proportion(tp.sum(axis=-1), cm.sum(axis=(-2, -1)), level)}
    recall = rates["recall"][0]
    present = (~np.isnan(recall)).sum(axis=-1, keepdims=True)
    weights = np.where(present > 0, 1 / np.maximum(present, 1), 0.0)
    value, lo, hi = mover_sum(*rates["recall"], weights)
    out["balanced_accuracy"] = (value, np.clip(lo, 0, 1), np.clip(hi, 0, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a group with no class at all: NaN, as intended
        out["macro_f1"] = tuple(np.nanmean(part, axis=-1) for part in rates["f1"])
    return out


def row_normalised(cm: np.ndarray) -> np.ndarray:
    """Each row divided by its total (NaN rows where the true class is absent)."""
    cm = np.asarray(cm, dtype=float)
    rows = cm.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, cm / rows, np.nan)
