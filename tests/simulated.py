"""Simulated predictions tables (as bench/bench_audit.py makes them): no dataset archive, built in milliseconds.

A simulated classifier's softmax over its classes, with a logit margin for the true class that differs by class, so
groups really differ and every calibration bin and confusion cell is populated as in a real audit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

import faceaudit

UTK_RACES = tuple(faceaudit.UTKFACE.classes)
#: UTKFace-like proportions and margins: Others is the rarest and the hardest, as in the real data.
UTK_SHARES = (0.42, 0.19, 0.15, 0.17, 0.07)
UTK_MARGINS = {"White": 2.6, "Black": 2.4, "Asian": 2.2, "Indian": 1.8, "Others": 0.6}
#: FairFace's own age bins, as its label CSVs write them.
FAIRFACE_AGES = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70")


def softmax_probs(true: np.ndarray, k: int, margins: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Probabilities of a classifier whose true-class logit is ``margins[i]`` above noise."""
    logits = rng.normal(size=(len(true), k))
    logits[np.arange(len(true)), true] += margins
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return probs / probs.sum(axis=1, keepdims=True)


def simulate(n: int = 2400, *, classes: Sequence[str] = UTK_RACES, target: str = "race",
             shares: Sequence[float] | None = None, margins: Mapping[str, float] | None = None,
             ages: Sequence | None = None, seed: int = 0) -> pd.DataFrame:
    """``image_id``, the target, ``gender`` (unless it is the target), ``race`` (a UTKFace race unless it is the
    target), ``age`` (numbers, or labels drawn from ``ages``) and one ``prob_<class>`` column per class."""
    rng = np.random.default_rng(seed)
    classes = list(classes)
    shares = None if shares is None else np.asarray(shares) / np.sum(shares)
    true = rng.choice(len(classes), size=n, p=shares)
    margin = np.array([(margins or {}).get(c, 2.0) for c in classes])[true]
    probs = softmax_probs(true, len(classes), margin, rng)
    frame = pd.DataFrame({"image_id": [f"sim{i:06d}" for i in range(n)], target: [classes[k] for k in true]})
    if target != "race":
        frame["race"] = rng.choice(UTK_RACES, size=n, p=UTK_SHARES)
    if target != "gender":
        frame["gender"] = rng.choice(["Male", "Female"], size=n)
    frame["age"] = rng.choice(list(ages), size=n) if ages is not None else rng.integers(1, 90, size=n)
    for k, name in enumerate(classes):
        frame[f"prob_{name}"] = probs[:, k]
    return frame


def utkface(n: int = 2400, seed: int = 0) -> pd.DataFrame:
    """A UTKFace race classifier's predictions: five races in UTKFace's proportions, Others hardest."""
    return simulate(n, shares=UTK_SHARES, margins=UTK_MARGINS, seed=seed)


def fairface7(n: int = 2100, seed: int = 0) -> pd.DataFrame:
    """A FairFace 7-race classifier's predictions with FairFace's age bins (``more than 70`` included)."""
    return simulate(n, classes=faceaudit.FAIRFACE7.classes, ages=FAIRFACE_AGES, seed=seed,
                    margins={"Middle Eastern": 0.8, "Latino_Hispanic": 1.2})


def gender_classifier(n: int = 2400, seed: int = 0) -> pd.DataFrame:
    """A gender classifier's predictions (``prob_Male``, ``prob_Female``), much worse on Black faces and on the
    youngest, so its accuracy really differs by race and age band."""
    rng = np.random.default_rng(seed)
    frame = simulate(n, classes=("Male", "Female"), target="gender", seed=seed)
    true = (frame["gender"] == "Female").to_numpy().astype(int)
    margin = np.where(frame["race"] == "Black", 0.3, 3.0) - np.where(frame["age"] < 10, 1.5, 0.0)
    probs = softmax_probs(true, 2, margin, rng)
    frame["prob_Male"], frame["prob_Female"] = probs[:, 0], probs[:, 1]
    return frame
