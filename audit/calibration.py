"""Calibration: top-label ECE and MCE, Brier score, log loss, reliability bins and temperature scaling.

Per-image quantities are computed once (:func:`per_image`); the metrics are computed from per-bin sums so the
same code serves the observed data and every bootstrap resample.
"""

from __future__ import annotations

import numpy as np

#: Top-label confidence bins for ECE and reliability diagrams (Guo et al. 2017 use 15).
ECE_BINS = 15
#: Probabilities are clipped to this floor before taking logs (scikit-learn's log_loss uses machine epsilon).
LOG_FLOOR = 1e-15
CALIBRATION_METRICS: tuple[str, ...] = ("ece", "mce", "brier", "log_loss")


def per_image(probs: np.ndarray, y_true: np.ndarray) -> dict[str, np.ndarray]:
    """Top-label confidence, correctness, multiclass Brier and log loss of each image."""
    probs = np.asarray(probs, dtype=float)
    y_true = np.asarray(y_true, dtype=np.int64)
    rows = np.arange(len(y_true))
    pred = probs.argmax(axis=1)
    onehot_sq = (probs * probs).sum(axis=1) - 2 * probs[rows, y_true] + 1
    return {
        "confidence": probs[rows, pred],
        "correct": (pred == y_true).astype(float),
        "brier": onehot_sq,
        "log_loss": -np.log(np.clip(probs[rows, y_true], LOG_FLOOR, 1.0)),
    }


def from_sums(count: np.ndarray, confidence: np.ndarray, correct: np.ndarray, brier: np.ndarray,
              log_loss: np.ndarray) -> dict[str, np.ndarray]:
    """ECE, MCE, Brier, log loss from per-bin sums ``[..., bins]`` and per-group loss sums ``[...]``."""
    count = np.asarray(count, dtype=float)
    n = count.sum(axis=-1)
    gap = np.abs(correct - confidence)
    with np.errstate(invalid="ignore", divide="ignore"):
        ece = gap.sum(axis=-1) / n
        per_bin = np.where(count > 0, gap / count, -np.inf)
        mce = per_bin.max(axis=-1)
        mce = np.where(n > 0, mce, np.nan)
        return {"ece": ece, "mce": mce, "brier": brier / n, "log_loss": log_loss / n}


def reliability_bins(count: np.ndarray, confidence: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS) -> list[dict]:
    """The non-empty bins of one group's reliability diagram: edges, n, mean confidence, accuracy."""
    out = []
    for b in range(n_bins):
        if count[b] > 0:
            out.append({"lo": round(b / n_bins, 6), "hi": round((b + 1) / n_bins, 6), "n": int(count[b]),
                        "confidence": round(float(confidence[b] / count[b]), 6),
                        "accuracy": round(float(correct[b] / count[b]), 6)})
    return out


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Top-label ECE of one set of predictions, directly (the engine computes it from bootstrap sums)."""
    from .bootstrap import confidence_bins

    q = per_image(probs, y_true)
    bins = confidence_bins(q["confidence"], n_bins)
    conf = np.bincount(bins, weights=q["confidence"], minlength=n_bins)
    corr = np.bincount(bins, weights=q["correct"], minlength=n_bins)
    return float(np.abs(corr - conf).sum() / len(bins))


def scale_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(ln p / T): temperature scaling applied to probabilities (equivalent to scaling the logits)."""
    logits = np.log(np.clip(np.asarray(probs, dtype=float), LOG_FLOOR, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def fit_temperature(probs: np.ndarray, y_true: np.ndarray) -> tuple[float, float, float]:
    """The temperature minimising log loss on held-out data: ``(T, nll_before, nll_after)``."""
    from scipy.optimize import minimize_scalar

    y_true = np.asarray(y_true, dtype=np.int64)
    rows = np.arange(len(y_true))
    logits = np.log(np.clip(np.asarray(probs, dtype=float), LOG_FLOOR, 1.0))

    def nll(log_t: float) -> float:
        z = logits / np.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[rows, y_true]))

    found = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-5})
    return float(np.exp(found.x)), nll(0.0), float(found.fun)
