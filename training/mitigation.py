"""Post-hoc mitigation: per-class biases on a trained model's log-probabilities, fitted on its validation split and
saved into a new run folder that audits, compares and exports like the original.

``equal-recall`` is a multiclass analogue of fairlearn's ``ThresholdOptimizer``: in a race classifier each class
is a group, so equalising per-class recall equalises the groups' true-positive rates. It raises the lowest recall
as far as it goes while validation accuracy stays within ``max_accuracy_drop`` of the model's. ``logit-adjust`` is
Menon et al.'s post-hoc logit adjustment (ICLR 2021): subtract ``tau * log prior`` (training-split class
frequencies), the Bayes rule for balanced error at ``tau = 1``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from faceaudit.errors import FaceauditError
from faceaudit.seams.run import MODEL_FILE, PREDICTIONS_FILE, RunRecord, copy_run_parts

METHODS = ("equal-recall", "logit-adjust")
#: Bias values tried for one class at a time by the equal-recall search (log-probability units).
BIAS_GRID = np.round(np.linspace(-4.0, 4.0, 161), 3)
#: What the mitigated folder inherits from the source run (it writes its own model, predictions and run.json):
#: the training histories and an ensemble's members.
INHERITED = ("history*.json", "members")


@dataclass
class BiasFit:
    """Per-class biases (in the schema's class order, mean 0) and how they were chosen."""

    method: str
    bias: np.ndarray
    detail: dict = field(default_factory=dict)


def apply_bias(probs: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``softmax(log p + bias)`` row by row: what :class:`faceaudit.models.layers.ClassBias` computes."""
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)) + np.asarray(bias, dtype=np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=1, keepdims=True)


def class_recall(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Recall of each class (NaN for a class with no rows)."""
    support = np.bincount(y_true, minlength=n_classes).astype(float)
    hits = np.bincount(y_true[y_true == y_pred], minlength=n_classes).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return hits / support


def logit_adjustment(prior: np.ndarray, tau: float = 1.0) -> BiasFit:
    """Menon et al.'s post-hoc adjustment: ``bias = -tau * log prior``."""
    prior = np.asarray(prior, dtype=np.float64)
    if prior.ndim != 1 or np.any(prior <= 0) or not np.isfinite(tau) or tau < 0:
        raise FaceauditError("logit adjustment needs a positive class prior and tau >= 0")
    bias = -tau * np.log(prior / prior.sum())
    return BiasFit("logit-adjust", bias - bias.mean(), {"tau": float(tau), "prior": prior.tolist()})


def _score(y: np.ndarray, pred: np.ndarray, n_classes: int) -> tuple[float, float, float]:
    recall = class_recall(y, pred, n_classes)
    present = recall[~np.isnan(recall)]
    return float(present.min()), float(present.max() - present.min()), float((pred == y).mean())


def equal_recall(probs: np.ndarray, y: np.ndarray, *, max_accuracy_drop: float = 0.015,
                 sweeps: int = 25) -> BiasFit:
    """Biases that maximise the lowest per-class recall (ties: the smaller recall gap, then the higher accuracy)
    with accuracy at least the unbiased accuracy minus ``max_accuracy_drop``, by coordinate search over
    :data:`BIAS_GRID`, one class at a time, until a sweep changes nothing."""
    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0))
    y = np.asarray(y, dtype=np.int64)
    k = logp.shape[1]
    if not 0 <= max_accuracy_drop < 1:
        raise FaceauditError(f"max accuracy drop must be in [0, 1) (got {max_accuracy_drop})")
    bias = np.zeros(k)
    floor = _score(y, logp.argmax(axis=1), k)[2] - max_accuracy_drop - 1e-12
    best = _key(_score(y, logp.argmax(axis=1), k))
    for _ in range(sweeps):
        changed = False
        for c in range(k):
            shifted = logp + bias
            others = np.delete(shifted, c, axis=1)
            other_best, other_class = others.max(axis=1), np.delete(np.arange(k), c)[others.argmax(axis=1)]
            for value in BIAS_GRID:
                pred = np.where(logp[:, c] + value > other_best, c, other_class)
                score = _score(y, pred, k)
                if score[2] >= floor and _key(score) > best:
                    best, bias[c], changed = _key(score), value, True
        if not changed:
            break
    final = _score(y, (logp + bias).argmax(axis=1), k)
    return BiasFit("equal-recall", bias - bias.mean(), {"max_accuracy_drop": float(max_accuracy_drop),
                                                       "objective": "max min-recall, then min gap, then accuracy",
                                                       "fitted_min_recall": final[0]})


def _key(score: tuple[float, float, float]) -> tuple[float, float, float]:
    """What the search maximises, compared in order: the lowest recall, the negated gap, accuracy (rounded, so that
    floating-point noise never counts as a gain)."""
    minimum, gap, accuracy = score
    return round(minimum, 12), round(-gap, 12), round(accuracy, 12)


def wrap_model(model, bias: np.ndarray, schema):
    """``model`` (any faceaudit-contract model: image, dlib head or ensemble head) with
    :class:`~faceaudit.models.layers.ClassBias` after its softmax; same inputs, same ``embedding``."""
    import keras

    from faceaudit.models.inference import EMBEDDING_LAYER, probs_layer
    from faceaudit.models.layers import ClassBias

    name = probs_layer(model, schema)
    inner = keras.Model(model.inputs, [model.get_layer(name).output, model.get_layer(EMBEDDING_LAYER).output],
                        name="unmitigated")
    inputs = [keras.Input(t.shape[1:], name=t.name.split(":")[0], dtype=t.dtype) for t in model.inputs]
    probs, embedding = inner(inputs[0] if len(inputs) == 1 else inputs)
    outputs = [ClassBias(np.asarray(bias).tolist(), name=name)(probs),
               keras.layers.Identity(name=EMBEDDING_LAYER)(embedding)]
    return keras.Model(inputs, outputs, name=f"{model.name}_mitigated")


def mitigate(source: Path | str, out: Path | str, *, method: str = "equal-recall", data: Path | str | None = None,
             tau: float = 1.0, max_accuracy_drop: float = 0.015, batch_size: int = 64,
             progress: bool = True) -> Path:
    """Fit ``method``'s per-class biases on the run's validation split and write the mitigated run folder ``out``:
    the source run's files, ``model.keras`` with the biases inside, the test split's ``predictions.csv`` and a
    ``run.json`` whose ``mitigation`` says what was fitted and what it did on validation."""
    from faceaudit.datasets.tfdata import label_codes
    from faceaudit.files import new_output_dir, replace_folder
    from faceaudit.models.inference import load_model, load_run_dataset, predict, predict_table
    from faceaudit.seams.run import resolve_model
    from faceaudit.training.data import class_prior

    started = time.perf_counter()
    if method not in METHODS:
        raise FaceauditError(f"unknown mitigation {method!r}; choose one of {', '.join(METHODS)}")
    model_file, run = resolve_model(source)
    if run is None or not run.complete or model_file.name != MODEL_FILE:
        raise FaceauditError(f"{source} is not a finished run folder: mitigation needs its run.json and splits")
    out = new_output_dir(out)
    dataset = load_run_dataset(run, data, progress=progress, purpose="mitigation")
    recorded = (run.data or {}).get("manifest_sha256")
    if recorded and recorded != dataset.fingerprint:
        raise FaceauditError(f"{dataset.source} is not the data {run.name} was trained on (fingerprint "
                             f"{dataset.fingerprint[:12]}, run.json says {recorded[:12]}): the biases must be fitted "
                             "on that run's own validation split")
    schema = run.schema
    val, test, train = (dataset.split(s) for s in ("val", "test", "train"))
    if val.empty or test.empty:
        raise FaceauditError("mitigation needs the run's validation and test splits; one of them is empty")
    y_val = label_codes(val, schema)
    n_classes = len(schema.classes)
    probs_val, _ = predict(source, val, batch_size, progress, schema=schema, run=run)
    if method == "logit-adjust":
        fit = logit_adjustment(class_prior(label_codes(train, schema), n_classes), tau)
    else:
        fit = equal_recall(probs_val, y_val, max_accuracy_drop=max_accuracy_drop)
    before, after = probs_val.argmax(axis=1), apply_bias(probs_val, fit.bias).argmax(axis=1)
    model = wrap_model(load_model(model_file), fit.bias, schema)
    with replace_folder(out) as work:
        copy_run_parts(model_file.parent, work, INHERITED)
        model.save(work / MODEL_FILE)
        record = RunRecord.from_dict(run.to_dict())
        record.status = "predicting"
        table, _ = predict_table(work, test, batch_size, progress, schema=schema, run=record)
        table.write(work / PREDICTIONS_FILE)
        record.status = "complete"
        record.test_accuracy = float((table.y_true == table.y_pred).mean())
        record.mitigation = {
            "method": fit.method, "bias": dict(zip(schema.classes, np.round(fit.bias, 6).tolist())),
            "fitted_on": f"val split ({len(val)} images)", **fit.detail,
            "source_run": {"path": str(Path(model_file.parent).resolve()), "name": run.name,
                           "test_accuracy": run.test_accuracy, "backbone": run.backbone,
                           "wall_time_s": run.wall_time_s},
            "val": {"accuracy_before": float((before == y_val).mean()), "accuracy_after": float((after == y_val).mean()),
                    "recall_before": dict(zip(schema.classes, class_recall(y_val, before, n_classes).round(4).tolist())),
                    "recall_after": dict(zip(schema.classes, class_recall(y_val, after, n_classes).round(4).tolist()))},
            "seconds": time.perf_counter() - started}
        record.wall_time_s = record.mitigation["seconds"]  # this run's own work; the source's is in its run.json
        record.finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        record.write(work)
    return out

