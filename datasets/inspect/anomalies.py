"""Unusual images: an Isolation Forest over colour histograms, as the seed's anomaly notebook did."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest

from faceaudit import config
from faceaudit.config import DEFAULT_SEED

DEFAULT_OUTLIER_SHARE = config.OUTLIER_SHARE
#: Trees in the forest: enough for the scores to be stable under the seed.
N_TREES = 200


def histogram_outliers(histograms: np.ndarray, image_ids, *, share: float = DEFAULT_OUTLIER_SHARE,
                       seed: int = DEFAULT_SEED, n_trees: int = N_TREES) -> pd.DataFrame:
    """Every image's anomaly score (higher = more unusual) and whether it is among the ``share`` most unusual.

    Histogram bin shares are square-rooted first (the Hellinger embedding), so a few large bins such as a
    plain background do not drown the rest of the distribution.
    """
    if not 0 < share < 0.5:
        raise ValueError(f"outlier share must be in (0, 0.5), got {share}")
    features = np.sqrt(np.asarray(histograms, dtype=np.float64))
    forest = IsolationForest(n_estimators=n_trees, contamination=share, random_state=seed, n_jobs=1)
    forest.fit(features)
    score = -forest.score_samples(features)
    table = pd.DataFrame({"image_id": list(image_ids), "outlier_score": score,
                          "outlier": forest.predict(features) == -1})
    return table.sort_values(["outlier_score", "image_id"], ascending=[False, True]).reset_index(drop=True)
