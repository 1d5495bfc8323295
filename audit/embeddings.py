"""Embedding-space structure: a seeded t-SNE map, silhouette by race and k-nearest-neighbour race purity.

The silhouette and purity are computed in the original embedding space, so they do not depend on the 2-D layout.
"""

from __future__ import annotations

import re
import time
from contextlib import redirect_stdout

import numpy as np

from faceaudit.console import Step, step

#: Neighbours counted for label purity.
KNN_K = 10
#: t-SNE settings (recorded in audit.json); PCA to 50 dimensions first is the usual speed-up.
TSNE_SETTINGS = {"perplexity": 30.0, "init": "pca", "learning_rate": "auto", "max_iter": 1000, "metric": "euclidean",
                 "pca_dims": 50}
#: Above this many images t-SNE and the silhouette run on a seeded subsample.
MAX_EMBEDDING_ROWS = 20_000


def subsample(n: int, seed: int, limit: int = MAX_EMBEDDING_ROWS) -> np.ndarray:
    """Row indices to embed: all of them, or a seeded sorted subsample of ``limit``."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def _reduce(embeddings: np.ndarray, dims: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    x = np.asarray(embeddings, dtype=np.float32)
    if x.shape[1] > dims and x.shape[0] > dims:
        x = PCA(n_components=dims, random_state=seed).fit_transform(x).astype(np.float32)
    return x


def tsne(embeddings: np.ndarray, seed: int, *, progress: bool = False) -> tuple[np.ndarray, dict]:
    """2-D t-SNE coordinates and the settings (plus KL divergence and seconds) that produced them; ``progress``
    shows the optimisation's iterations as a console step."""
    from sklearn.manifold import TSNE

    start = time.perf_counter()
    settings = dict(TSNE_SETTINGS)
    with step("t-SNE", total=int(settings["max_iter"]), unit="iteration", enabled=progress,
              detail=f"{len(embeddings):,} embeddings") as bar:
        x = _reduce(embeddings, int(settings["pca_dims"]), seed)
        perplexity = min(settings["perplexity"], max(2.0, (len(x) - 1) / 3))
        model = TSNE(n_components=2, perplexity=perplexity, init=settings["init"],
                     learning_rate=settings["learning_rate"], max_iter=settings["max_iter"], metric=settings["metric"],
                     random_state=seed, verbose=2 if bar.live else 0)
        if bar.live:  # scikit-learn reports its iterations only by printing them: read them off for the bar
            with redirect_stdout(_Iterations(bar)):
                coords = model.fit_transform(x)
            bar.advance_to(int(settings["max_iter"]))  # converged early: the step is done all the same
        else:
            coords = model.fit_transform(x)
    settings.update(perplexity=perplexity, random_state=seed, n=len(x))
    return coords, {"settings": settings, "kl_divergence": round(float(model.kl_divergence_), 6),
                    "seconds": round(time.perf_counter() - start, 3)}


class _Iterations:
    """A stand-in for ``sys.stdout`` while scikit-learn's t-SNE runs verbosely: its "[t-SNE] Iteration 50: ..." lines
    move a step's bar; everything it prints is dropped."""

    _ITERATION = re.compile(r"\[t-SNE\] Iteration (\d+)")

    def __init__(self, bar: Step):
        self.bar = bar

    def write(self, text: str) -> int:
        for done in self._ITERATION.findall(text):
            self.bar.advance_to(int(done))
        return len(text)

    def flush(self) -> None:
        pass


def knn_purity(embeddings: np.ndarray, labels: np.ndarray, k: int = KNN_K) -> np.ndarray:
    """Per image: the share of its ``k`` nearest neighbours (itself excluded) that share its label."""
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(embeddings, dtype=np.float32)
    k = min(k, len(x) - 1)
    if k < 1:
        return np.full(len(x), np.nan)
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    # Drop the image itself wherever it appears (duplicates can push it out of slot 0), keep the k nearest others.
    others = idx != np.arange(len(x))[:, None]
    keep = np.argsort(~others, axis=1, kind="stable")[:, :k]
    neighbours = np.take_along_axis(idx, keep, axis=1)
    labels = np.asarray(labels)
    same = labels[neighbours] == labels[:, None]
    return same.mean(axis=1)


def silhouette_values(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-image silhouette coefficient for the given labels (NaN when fewer than two labels occur)."""
    from sklearn.metrics import silhouette_samples

    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return np.full(len(labels), np.nan)
    return silhouette_samples(np.asarray(embeddings, dtype=np.float32), labels)


def mean_interval(values: np.ndarray, groups: np.ndarray, n_groups: int, *, n_boot: int, ci: float,
                  seed: int, bounds: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-group mean of per-image values with a within-group bootstrap interval: ``(mean, lo, hi, n)``.

    With ``bounds`` (the values' range), a group whose values are all equal (kNN purity 1 everywhere) gets the
    distribution-free interval of :func:`.intervals.widen_degenerate` instead of a zero-width one.
    """
    values = np.asarray(values, dtype=float)
    groups = np.asarray(groups, dtype=np.int64)
    n = np.bincount(groups, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(groups, weights=values, minlength=n_groups) / n
    lo = np.full(n_groups, np.nan)
    hi = np.full(n_groups, np.nan)
    rng = np.random.default_rng(seed)
    tail = (1 - ci) / 2
    for g in np.flatnonzero(n):
        v = values[groups == g]
        if n_boot > 0:
            draws = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1) if len(v) * n_boot <= 5e7 else \
                rng.normal(v.mean(), v.std() / np.sqrt(len(v)), size=n_boot)
            lo[g], hi[g] = np.quantile(draws, [tail, 1 - tail])
    if bounds is not None:
        from .intervals import widen_degenerate

        lo, hi = widen_degenerate(mean, lo, hi, n, bounds, ci)
    return mean, lo, hi, n
