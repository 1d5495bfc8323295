"""Real predictions for the audit tests: a small scikit-learn MLP trained on real UTKFace pixels.

The network sees 16x16 grayscale thumbnails of the real 64px archive (a stratified 6,000-image subsample of the
train split), so its five-class probabilities on the real test split are genuine, imperfect and unevenly good
across groups; its hidden layer gives genuine penultimate-layer embeddings. Built once per session.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from faceaudit.seams.predictions import PredictionsTable
from faceaudit.taxonomy import UTKFACE

TRAIN_IMAGES = 6000

#: Gates the command-line tests judge: the race accuracy gap and an overall accuracy floor, and a group-size gate
#: to add where a test wants one more.
GAP_AND_FLOOR_GATES = """
min_group_size = 30

[[gates]]
name = "race accuracy gap"
metric = "accuracy"
by = "race"
max_gap = 0.05

[[gates]]
name = "overall accuracy floor"
metric = "accuracy"
by = "overall"
min = 0.30
"""
SIZE_GATE = """
[[gates]]
name = "group sizes"
metric = "n"
by = "race"
min = 30
"""
THUMB = 16


@dataclass
class RealPredictions:
    test_table: PredictionsTable  # validated predictions of the test split
    val_table: PredictionsTable   # validated predictions of the val split
    embeddings: np.ndarray      # hidden-layer activations of the test rows, aligned with ``test``
    csv: Path                   # val + test rows with a split column
    embeddings_npy: Path        # embeddings of the csv's rows (val and test), aligned

    @property
    def test(self) -> pd.DataFrame:
        """The test table's canonical frame (labels and predictions as categoricals)."""
        return self.test_table.frame

    @property
    def val(self) -> pd.DataFrame:
        return self.val_table.frame


def _pixels(paths) -> np.ndarray:
    out = np.empty((len(paths), THUMB * THUMB), dtype=np.float32)
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            out[i] = np.asarray(image.convert("L").resize((THUMB, THUMB), Image.BILINEAR), dtype=np.float32).ravel()
    return out / 255.0


@pytest.fixture(scope="session")
def real_predictions(utk64_dataset, tmp_path_factory) -> RealPredictions:
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    train = utk64_dataset.split("train")
    train = train.groupby(["race", "gender"], observed=True, group_keys=False).sample(
        frac=min(1.0, TRAIN_IMAGES / len(train)), random_state=0)
    val, test = utk64_dataset.split("val"), utk64_dataset.split("test")
    scaler = StandardScaler().fit(_pixels(train["path"]))
    x_train = scaler.transform(_pixels(train["path"]))
    model = MLPClassifier(hidden_layer_sizes=(64,), alpha=1e-2, max_iter=60, random_state=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: 60 epochs is enough for a test model
        model.fit(x_train, train["race"].cat.codes.to_numpy())

    def run(frame):
        x = scaler.transform(_pixels(frame["path"]))
        hidden = np.maximum(x @ model.coefs_[0] + model.intercepts_[0], 0).astype(np.float32)
        return model.predict_proba(x), hidden

    test_probs, test_emb = run(test)
    val_probs, val_emb = run(val)
    test_table = PredictionsTable.from_probabilities(test, test_probs, UTKFACE)
    val_table = PredictionsTable.from_probabilities(val, val_probs, UTKFACE)
    folder = tmp_path_factory.mktemp("real_predictions")
    both = pd.concat([val_table.output_frame(), test_table.output_frame()], ignore_index=True)
    both = both.drop(columns=["confidence", "correct"])  # a model's table, as a user would hand it over
    both["split"] = ["val"] * len(val_table) + ["test"] * len(test_table)
    csv = folder / "preds.csv"
    both.to_csv(csv, index=False)
    npy = folder / "emb.npy"
    np.save(npy, np.concatenate([val_emb, test_emb]))
    return RealPredictions(test_table=test_table, val_table=val_table, embeddings=test_emb, csv=csv, embeddings_npy=npy)
