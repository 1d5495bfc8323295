"""Classification metrics computed from confusion matrices, vectorised over resamples and groups.

Every function takes counts of shape ``[..., K, K]`` (rows = true class, columns = predicted class) and returns
one value per leading index, with scikit-learn's semantics: balanced accuracy averages recall over the classes
present in ``y_true``; macro-F1 averages F1 over the classes present in ``y_true`` or ``y_pred`` (a class that
is predicted but never right scores 0). Undefined values are NaN.
"""

from __future__ import annotations

import numpy as np

#: The headline metrics of every group record, in report order.
GROUP_METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "macro_f1")
PER_CLASS_METRICS: tuple[str, ...] = ("precision", "recall", "f1")


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """The ``K x K`` confusion matrix of integer codes (rows true, columns predicted)."""
    return np.bincount(np.asarray(y_true) * n_classes + np.asarray(y_pred), minlength=n_classes * n_classes).reshape(
        n_classes, n_classes)


def _parts(cm: np.ndarray):
    cm = np.asarray(cm, dtype=float)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    return cm, tp, cm.sum(axis=-1), cm.sum(axis=-2)


def accuracy(cm: np.ndarray) -> np.ndarray:
    """Share of correct predictions."""
    cm, tp, _, _ = _parts(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        return tp.sum(axis=-1) / cm.sum(axis=(-2, -1))


def recall(cm: np.ndarray) -> np.ndarray:
    """Per-class recall ``[..., K]`` (NaN for a class absent from y_true)."""
    _, tp, rows, _ = _parts(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, tp / rows, np.nan)


def precision(cm: np.ndarray) -> np.ndarray:
    """Per-class precision ``[..., K]`` (NaN for a class never predicted)."""
    _, tp, _, cols = _parts(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cols > 0, tp / cols, np.nan)


def f1(cm: np.ndarray) -> np.ndarray:
    """Per-class F1 ``[..., K]``: 2TP / (true + predicted); NaN for a class neither present nor predicted."""
    _, tp, rows, cols = _parts(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows + cols > 0, 2 * tp / (rows + cols), np.nan)


def _nanmean(values: np.ndarray) -> np.ndarray:
    present = ~np.isnan(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(present.any(axis=-1), np.nansum(values, axis=-1) / present.sum(axis=-1), np.nan)


def balanced_accuracy(cm: np.ndarray) -> np.ndarray:
    """Mean recall over the classes present in y_true (``sklearn.metrics.balanced_accuracy_score``)."""
    return _nanmean(recall(cm))


def macro_f1(cm: np.ndarray) -> np.ndarray:
    """Mean F1 over the classes in y_true or y_pred (``f1_score(average="macro")``)."""
    return _nanmean(f1(cm))


def group_metrics(cm: np.ndarray) -> dict[str, np.ndarray]:
    """The headline metrics for each leading index."""
    return {"accuracy": accuracy(cm), "balanced_accuracy": balanced_accuracy(cm), "macro_f1": macro_f1(cm)}


def row_normalised(cm: np.ndarray) -> np.ndarray:
    """Each row divided by its total (NaN rows where the true class is absent)."""
    cm = np.asarray(cm, dtype=float)
    rows = cm.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, cm / rows, np.nan)
