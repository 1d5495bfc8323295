"""Contract sanity checks: does a model's output look like a model run the way it was trained, or like a wrong
contract (pixels scaled wrongly, channels swapped, classes in another order, an age in the wrong unit)?

A model fed pixels it was never trained on rarely fails loudly: it answers, with confidence, one class for every
face, or ages that barely move. These checks turn those symptoms into one warning naming the likely cause, shown in
the console, the report's verdict and ``audit.json`` (``model.sanity``), before anyone reads per-group numbers that
describe the contract rather than the model.
"""

from __future__ import annotations

import numpy as np

from .intervals import clopper_pearson

#: A class predicted for at least this share of faces (while truly rarer) means the output collapsed.
COLLAPSE_SHARE = 0.95
#: Probabilities whose largest per-class standard deviation over faces is below this are constant.
CONSTANT_SD = 0.01
#: Youngest and oldest age a face can plausibly have, in years.
AGE_RANGE = (0.0, 120.0)
#: Share of predicted ages outside :data:`AGE_RANGE` that is no longer an outlier but a unit or scaling problem.
OUT_OF_RANGE_SHARE = 0.01
#: Predicted ages whose standard deviation is below this many years (on faces of all ages) do not track age.
MIN_AGE_SD = 2.0

CLASSIFIER_CAUSES = ("check the contract's scaling (raw 0-255, 0-1, -1-1), its channels (RGB, BGR, grayscale) and "
                     "its class order")
REGRESSOR_CAUSES = ("check the contract's scaling (raw 0-255, 0-1, -1-1), its channels and the output's scale "
                    "(years, or a fraction of the oldest age)")


def _check(name: str, message: str, causes: str) -> dict:
    return {"check": name, "message": message, "likely_cause": causes}


def check_classifier(y_true: np.ndarray, y_pred: np.ndarray, probs: np.ndarray | None, classes: list[str],
                     level: float = 0.95) -> list[dict]:
    """Warnings for a classifier's predictions: collapsed to one class, constant, no better than the majority."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    n = len(y_true)
    if n == 0:
        return []
    out = []
    predicted = np.bincount(y_pred, minlength=len(classes)) / n
    true_share = np.bincount(y_true, minlength=len(classes)) / n
    top = int(predicted.argmax())
    if predicted[top] >= COLLAPSE_SHARE and true_share[top] < COLLAPSE_SHARE - 0.1:
        out.append(_check("collapsed", f"the model answers {classes[top]} for {predicted[top]:.0%} of faces (truly "
                           f"{true_share[top]:.0%})", CLASSIFIER_CAUSES))
    if probs is not None and len(probs) > 1 and float(np.asarray(probs).std(axis=0).max()) < CONSTANT_SD:
        out.append(_check("constant", "its probabilities barely change from face to face (largest standard "
                           f"deviation {float(np.asarray(probs).std(axis=0).max()):.4f})", CLASSIFIER_CAUSES))
    correct = int((y_true == y_pred).sum())
    majority = int(true_share.argmax())
    _, upper = clopper_pearson(correct, n, level)
    if float(upper) <= true_share[majority]:
        out.append(_check("majority", f"accuracy {correct / n:.1%} (upper bound {float(upper):.1%}) is no better "
                          f"than answering {classes[majority]} for every face ({true_share[majority]:.1%})",
                          CLASSIFIER_CAUSES))
    return out


def check_regressor(true_age: np.ndarray, pred_age: np.ndarray) -> list[dict]:
    """Warnings for an age regressor's predictions: ages outside 0-120, no spread, no better than a constant."""
    true_age, pred_age = np.asarray(true_age, dtype=float), np.asarray(pred_age, dtype=float)
    keep = np.isfinite(true_age)
    true_age, pred_age = true_age[keep], pred_age[keep]
    n = len(pred_age)
    if n == 0:
        return []
    out = []
    low, high = AGE_RANGE
    outside = (pred_age < low) | (pred_age > high)
    if outside.mean() > OUT_OF_RANGE_SHARE:
        out.append(_check("age_range", f"{outside.mean():.0%} of predicted ages are outside {low:g}-{high:g} years "
                          f"(from {pred_age.min():.3g} to {pred_age.max():.3g})", REGRESSOR_CAUSES))
    if n > 1 and pred_age.std() < MIN_AGE_SD and true_age.std() > 2 * MIN_AGE_SD:
        out.append(_check("age_spread", f"predicted ages barely vary (standard deviation {pred_age.std():.2g} "
                          f"years; true ages {true_age.std():.2g})", REGRESSOR_CAUSES))
    mae = float(np.abs(pred_age - true_age).mean())
    median = float(np.median(true_age))
    baseline = float(np.abs(median - true_age).mean())
    if mae >= baseline:
        out.append(_check("no_better_than_constant", f"mean absolute error {mae:.1f} years is no better than "
                          f"answering {median:g} for every face ({baseline:.1f} years)", REGRESSOR_CAUSES))
    return out


def summarise(checks: list[dict], n: int) -> dict:
    """``model.sanity`` of audit.json: ``suspect`` when any check fired, else ``ok``; with the faces checked."""
    return {"status": "suspect" if checks else "ok", "n": int(n), "checks": checks}


def sentence(sanity: dict | None) -> str | None:
    """The one loud line a suspect contract gets (console, verdict, summary.md), or None."""
    if not sanity or sanity.get("status") != "suspect":
        return None
    checks = sanity.get("checks") or []
    what = "; ".join(c["message"] for c in checks)
    return (f"CONTRACT LOOKS WRONG: {what}. The scores below may describe how the model was run, not the model: "
            f"{checks[0]['likely_cause']}.")
