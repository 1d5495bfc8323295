"""Ensembles of trained runs: one run folder whose prediction combines its members' class probabilities.

The members (any run folders of one label schema trained on one data set: image backbones, dlib-resnet heads) are
copied into ``members/<name>/``. ``model.keras`` is the combiner, a softmax over the members' concatenated
log-probabilities: a plain average of them (``mean``) or a multinomial logistic regression fitted on the
validation split (``stack``), whichever has the lower cross-validated log loss there. The ensemble's embedding is
the concatenation of its members' embeddings, each scaled to unit length.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from faceaudit.errors import FaceauditError
from faceaudit.models.ensemble import MEMBERS_DIR, log_probs
from faceaudit.seams.run import MODEL_FILE, PREDICTIONS_FILE, RunRecord, copy_run_parts, resolve_model

BACKBONE = "ensemble"
COMBINERS = ("auto", "mean", "weighted", "stack")
#: Folds of the cross-validation on the validation split that picks the combiner and the stacking penalty.
CV_FOLDS = 5
STACK_PENALTIES = (0.01, 0.1, 1.0, 10.0)


def _log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0))))


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=1, keepdims=True)


def mean_weights(n_members: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Kernel and bias of the ``mean`` combiner: the average of the members' log-probabilities (a geometric mean
    of their probabilities, renormalised)."""
    kernel = np.tile(np.eye(n_classes), (n_members, 1)) / n_members
    return kernel, np.zeros(n_classes)


class WeightedPool(ClassifierMixin, BaseEstimator):
    """A weighted log-linear pool, ``softmax(sum_m w_m log p_m + b)``: one weight per member (>= 0) and one bias
    per class, fitted by maximum likelihood; a scikit-learn estimator, so it cross-validates like the stack."""

    def __init__(self, n_members: int = 2, n_classes: int = 2):
        self.n_members = n_members
        self.n_classes = n_classes

    def _logits(self, features, w, b):
        return features.reshape(len(features), self.n_members, self.n_classes).transpose(0, 2, 1) @ w + b

    def fit(self, features, y):
        from scipy.optimize import minimize

        k = self.n_classes
        onehot = np.eye(k)[y]

        def loss(theta):
            w, b = theta[:self.n_members], theta[self.n_members:]
            logits = self._logits(features, w, b)
            logits = logits - logits.max(axis=1, keepdims=True)
            log_z = np.log(np.exp(logits).sum(axis=1))
            probs = np.exp(logits - log_z[:, None])
            grad_logits = (probs - onehot) / len(y)
            stacked = features.reshape(len(features), self.n_members, k)
            return (float(np.mean(log_z - (logits * onehot).sum(axis=1))),
                    np.concatenate([np.einsum("nk,nmk->m", grad_logits, stacked), grad_logits.sum(axis=0)]))

        start = np.concatenate([np.full(self.n_members, 1.0 / self.n_members), np.zeros(k)])
        bounds = [(0, None)] * self.n_members + [(None, None)] * k
        theta = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds).x
        self.weights_, self.bias_ = theta[:self.n_members], theta[self.n_members:]
        self.classes_ = np.arange(k)
        return self

    def predict_proba(self, features):
        return _softmax(self._logits(features, self.weights_, self.bias_))

    def predict(self, features):
        return self.predict_proba(features).argmax(axis=1)

    def kernel(self) -> np.ndarray:
        return np.concatenate([np.eye(self.n_classes) * w for w in self.weights_])


def fit_combiner(features: np.ndarray, y: np.ndarray, n_members: int, n_classes: int, how: str = "auto",
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """Kernel [members x classes, classes] and bias of the combiner, and how it was chosen: ``mean`` (no
    parameters), ``weighted`` (:class:`WeightedPool`), ``stack`` (multinomial logistic regression on every
    log-probability, penalty chosen by cross-validation) or ``auto``: the lowest log loss on validation
    (cross-validated for the fitted two)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    if how not in COMBINERS:
        raise FaceauditError(f"unknown combiner {how!r}; choose one of {', '.join(COMBINERS)}")
    kernel, bias = mean_weights(n_members, n_classes)
    mean_probs = _softmax(features @ kernel)
    scores = {"mean": {"val_log_loss": _log_loss(mean_probs, y),
                       "val_accuracy": float((mean_probs.argmax(axis=1) == y).mean())}}
    candidates = {"weighted": [WeightedPool(n_members, n_classes)],
                  "stack": [LogisticRegression(C=c, max_iter=2000) for c in STACK_PENALTIES]}
    if how != "mean":
        if np.bincount(y, minlength=n_classes).min() < CV_FOLDS:
            raise FaceauditError(f"a fitted combiner needs at least {CV_FOLDS} validation images of every class")
        folds = StratifiedKFold(CV_FOLDS, shuffle=True, random_state=seed)
        for name, models in candidates.items():
            if how not in ("auto", name):
                continue
            for model in models:
                cv = cross_val_predict(model, features, y, cv=folds, method="predict_proba")
                score = {"cv_val_log_loss": _log_loss(cv, y), "cv_val_accuracy": float((cv.argmax(axis=1) == y).mean()),
                         **({"C": model.C} if name == "stack" else {})}
                if name not in scores or score["cv_val_log_loss"] < scores[name]["cv_val_log_loss"]:
                    scores[name] = score
    chosen = how if how != "auto" else min(
        scores, key=lambda k: scores[k].get("cv_val_log_loss", scores[k].get("val_log_loss")))
    if chosen == "stack":
        model = LogisticRegression(C=scores["stack"]["C"], max_iter=2000).fit(features, y)
        kernel, bias = model.coef_.T, model.intercept_
    elif chosen == "weighted":
        pool = WeightedPool(n_members, n_classes).fit(features, y)
        kernel, bias = pool.kernel(), pool.bias_
        scores["weighted"]["member_weights"] = np.round(pool.weights_, 4).tolist()
    return kernel, bias, {"chosen": chosen, "candidates": scores,
                          "note": "mean: no parameters, scored on val as is; weighted and stack: scored by "
                                  f"{CV_FOLDS}-fold cross-validation on val, then refitted on all of val"}


def combiner_model(kernel: np.ndarray, bias: np.ndarray, schema):
    """The combiner as a contract model: ``member_log_probs`` -> ``embedding`` (the same vector) ->
    ``<target>_probs``."""
    import keras

    from faceaudit.models.inference import EMBEDDING_LAYER
    from faceaudit.training.backbones import probs_layer_name

    inputs = keras.Input((kernel.shape[0],), name="member_log_probs")
    x = keras.layers.Identity(name=EMBEDDING_LAYER)(inputs)
    dense = keras.layers.Dense(kernel.shape[1], activation="softmax", name=probs_layer_name(schema.target),
                               dtype="float32")
    outputs = dense(x)
    dense.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return keras.Model(inputs, outputs, name="faceaudit_ensemble")


def _members(sources: Sequence[Path | str]) -> list[tuple[str, Path, RunRecord]]:
    """The member run folders, checked: finished, not ensembles themselves, one label schema, one data set."""
    if len(sources) < 2:
        raise FaceauditError("an ensemble needs at least two run folders")
    members, names = [], set()
    for source in sources:
        model_file, run = resolve_model(source)
        if run is None or not run.complete or model_file.name != MODEL_FILE:
            raise FaceauditError(f"{source} is not a finished run folder (model.keras and run.json)")
        if run.backbone == BACKBONE:
            raise FaceauditError(f"{source} is itself an ensemble; list its members instead")
        name = run.name
        while name in names:
            name = f"{name}-{len(names)}"
        names.add(name)
        members.append((name, model_file.parent, run))
    first = members[0][2]
    for name, _, run in members[1:]:
        if run.schema.classes != first.schema.classes or run.schema.target != first.schema.target:
            raise FaceauditError(f"members predict different classes: {members[0][0]} "
                                 f"({', '.join(first.schema.classes)}) and {name} ({', '.join(run.schema.classes)})")
        data, first_data = (run.data or {}).get("manifest_sha256"), (first.data or {}).get("manifest_sha256")
        if data != first_data:
            raise FaceauditError(f"members were trained on different data ({members[0][0]}: {str(first_data)[:12]}, "
                                 f"{name}: {str(data)[:12]}): the combiner is fitted on their shared validation "
                                 "split, which must be unseen by every member")
    return members


def build_ensemble(sources: Sequence[Path | str], out: Path | str, *, combine: str = "auto",
                   data: Path | str | None = None, batch_size: int = 64, progress: bool = True) -> Path:
    """Write the ensemble run folder ``out`` of the runs ``sources``: members copied, combiner fitted on their
    validation split, the test split's ``predictions.csv`` and a ``run.json`` whose ``ensemble`` lists the members
    with their own validation and test accuracy."""
    from faceaudit.datasets.tfdata import label_codes
    from faceaudit.files import new_output_dir, replace_folder
    from faceaudit.models.inference import load_run_dataset, predict, predict_table
    from faceaudit.training.trainer import _versions

    started = time.perf_counter()
    members = _members(sources)
    if combine not in COMBINERS:
        raise FaceauditError(f"unknown combiner {combine!r}; choose one of {', '.join(COMBINERS)}")
    out = new_output_dir(out)
    first = members[0][2]
    schema = first.schema
    dataset = load_run_dataset(first, data, progress=progress, purpose="an ensemble")
    val, test = dataset.split("val"), dataset.split("test")
    if val.empty or test.empty:
        raise FaceauditError("an ensemble needs the members' validation and test splits; one of them is empty")
    y_val = label_codes(val, schema)
    features, described = [], []
    for name, folder, run in members:
        probs, _ = predict(folder, val, batch_size, progress, schema=schema, run=run)
        features.append(log_probs(probs))
        described.append({"name": name, "path": f"{MEMBERS_DIR}/{name}", "backbone": run.backbone,
                          "val_accuracy": float((probs.argmax(axis=1) == y_val).mean()),
                          "test_accuracy": run.test_accuracy, "wall_time_s": run.wall_time_s})
    n_classes = len(schema.classes)
    kernel, bias, chosen = fit_combiner(np.concatenate(features, axis=1), y_val, len(members), n_classes, combine)
    with replace_folder(out) as work:
        for (_, folder, _), entry in zip(members, described):
            copy_run_parts(folder, work / entry["path"])
        combiner_model(kernel, bias, schema).save(work / MODEL_FILE)
        record = RunRecord(status="predicting", backbone=BACKBONE, label_schema=schema.to_dict(),
                           ensemble={"members": described, "combiner": chosen})
        table, _ = predict_table(work, test, batch_size, progress, schema=schema, run=record)
        table.write(work / PREDICTIONS_FILE)
        own = time.perf_counter() - started
        record.status = "complete"
        record.weights = "members' own"
        record.input = f"the log-probabilities of {len(members)} members"
        record.params = int(kernel.size + bias.size)
        record.seed = first.seed
        record.data = first.data
        record.test_accuracy = float((table.y_true == table.y_pred).mean())
        record.wall_time_s = own
        record.ensemble["training_time_s"] = {
            "members": sum(m["wall_time_s"] or 0.0 for m in described), "combiner": own,
            "note": "members' wall times as their run.json records them; descriptor caches built once, not counted"}
        record.finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        record.versions = _versions()
        record.write(work)
    return out
