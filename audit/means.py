"""Intervals for means of per-image values (an age regressor's absolute and signed errors), per group.

A mean of signed errors (bias) gets Student's t interval: errors are roughly symmetric, and t covers at or above
its level from 20 faces on even with heavy tails (measured in ``bench/bench_coverage.py``, section 6). A mean of
absolute errors (MAE) is skewed to the right (large errors are rare but big, and grow with age), where t and the
percentile bootstraps miss mostly on the high side: below a few hundred faces they cover 0.86-0.91 at 95 %. Its
interval is the union of the t interval and a studentized (bootstrap-t) interval taken at Hesterberg's (2015)
expanded level, resampling images within each group of the grouping; groups (and rests) of more than
:data:`BOOTSTRAP_MAX_ROWS` images get the t interval alone, where the skew no longer matters. Where every value of
a group is the same (a zero-width interval), the distribution-free bound of
:func:`~faceaudit.auditing.intervals.widen_degenerate` over the values' range replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from .bootstrap import expanded_level, percentile_interval
from .intervals import widen_degenerate

#: Groups larger than this get the t interval only: the skewness correction is negligible there (t covers
#: >= 0.94 at 1,000 faces with heavy-tailed age errors) and resampling them would cost rows x resamples.
BOOTSTRAP_MAX_ROWS = 5_000
#: Resampled rows drawn at once (memory bound of one chunk of replicates).
CHUNK_CELLS = 2_000_000


@dataclass
class MeanReplicates:
    """Sums and sums of squares of one value per group: row 0 observed, rows 1..B bootstrap replicates drawn
    within each group (NaN columns for groups not resampled)."""

    n: np.ndarray
    s1: np.ndarray
    s2: np.ndarray
    resampled: np.ndarray

    @property
    def mean(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n > 0, self.s1[0] / np.maximum(self.n, 1), np.nan)

    def rest(self) -> "MeanReplicates":
        """Each group's complement within the grouping (every other image), resampled where the complement is
        small enough and every group in it was resampled (then its replicate sums are the other groups')."""
        total_n = self.n.sum()
        s1 = self.s1.sum(axis=1, keepdims=True) - self.s1
        s2 = self.s2.sum(axis=1, keepdims=True) - self.s2
        n = total_n - self.n
        resampled = (n <= BOOTSTRAP_MAX_ROWS) & bool(self.resampled.all())
        return MeanReplicates(n=n, s1=s1, s2=s2, resampled=resampled)

    def interval(self, level: float, *, bootstrap: bool = True,
                 bounds: tuple[float, float] = (-np.inf, np.inf)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(mean, lower, upper)`` per group at ``level``: t, widened by the expanded bootstrap-t where
        ``bootstrap`` and the group was resampled; zero-width intervals replaced over ``bounds``."""
        n = self.n.astype(float)
        mean = self.mean
        with np.errstate(invalid="ignore", divide="ignore"):
            var = np.maximum(self.s2[0] - n * mean ** 2, 0.0) / np.maximum(n - 1, 1)
            se = np.sqrt(var / np.maximum(n, 1))
            tq = stats.t.ppf(1 - (1 - level) / 2, np.maximum(n - 1, 1))
        lo, hi = mean - tq * se, mean + tq * se
        if bootstrap and self.s1.shape[0] > 1 and self.resampled.any():
            b_lo, b_hi = self._bootstrap_t(level, mean, se)
            lo = np.where(np.isnan(b_lo), lo, np.fmin(lo, b_lo))
            hi = np.where(np.isnan(b_hi), hi, np.fmax(hi, b_hi))
        single = n < 2  # no spread to estimate: treat as zero width, widened below
        lo, hi = np.where(single, mean, lo), np.where(single, mean, hi)
        if np.isfinite(bounds).all():
            lo, hi = widen_degenerate(mean, lo, hi, n, bounds, level)
            lo, hi = np.clip(lo, *bounds), np.clip(hi, *bounds)
        empty = ~(n > 0)
        return mean, np.where(empty, np.nan, lo), np.where(empty, np.nan, hi)

    def _bootstrap_t(self, level: float, mean: np.ndarray, se: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The studentized bootstrap interval at the expanded level (NaN where not resampled)."""
        n = np.maximum(self.n.astype(float), 1)
        boot_mean = self.s1[1:] / n
        with np.errstate(invalid="ignore", divide="ignore"):
            boot_var = np.maximum(self.s2[1:] - n * boot_mean ** 2, 0.0) / np.maximum(n - 1, 1)
            boot_se = np.sqrt(boot_var / n)
            t_star = np.where(boot_se > 0, (boot_mean - mean) / boot_se, np.nan)
        q_lo, q_hi = percentile_interval(np.vstack([np.zeros((1, t_star.shape[1])), t_star]),
                                         expanded_level(level, self.n))
        usable = self.resampled & (se > 0)
        return np.where(usable, mean - q_hi * se, np.nan), np.where(usable, mean - q_lo * se, np.nan)


def group_replicates(values: np.ndarray, code: np.ndarray, size: int, *, n_boot: int, seed: int,
                     max_rows: int = BOOTSTRAP_MAX_ROWS) -> MeanReplicates:
    """Sums and sums of squares of ``values`` per group (``code`` in 0..size-1), observed and ``n_boot`` bootstrap
    replicates drawn within each group of at most ``max_rows`` images (each group keeps its size)."""
    values = np.asarray(values, dtype=float)
    code = np.asarray(code, dtype=np.int64)
    n = np.bincount(code, minlength=size)
    s1 = np.full((n_boot + 1, size), np.nan)
    s2 = np.full((n_boot + 1, size), np.nan)
    s1[0] = np.bincount(code, weights=values, minlength=size)
    s2[0] = np.bincount(code, weights=values * values, minlength=size)
    resampled = n <= max_rows  # an empty group is trivially resampled: its sums stay 0
    s1[1:, n == 0] = 0.0
    s2[1:, n == 0] = 0.0
    rows = np.flatnonzero(resampled[code])
    if n_boot > 0 and len(rows):
        order = rows[np.argsort(code[rows], kind="stable")]
        sorted_code = code[order]
        start = np.searchsorted(sorted_code, sorted_code, side="left")
        span = np.searchsorted(sorted_code, sorted_code, side="right") - start
        sorted_values = values[order]
        rng = np.random.default_rng(seed)
        chunk = max(1, CHUNK_CELLS // len(order))
        for first in range(1, n_boot + 1, chunk):
            count = min(chunk, n_boot + 1 - first)
            picked = start + (rng.random((count, len(order))) * span).astype(np.int64)
            drawn = sorted_values[picked]
            slots = (np.arange(count)[:, None] * size + sorted_code[None, :]).ravel()
            s1[first:first + count] = np.bincount(slots, weights=drawn.ravel(), minlength=count * size).reshape(count, size)
            s2[first:first + count] = np.bincount(slots, weights=(drawn * drawn).ravel(),
                                                  minlength=count * size).reshape(count, size)
    s1[1:, ~resampled] = np.nan
    s2[1:, ~resampled] = np.nan
    return MeanReplicates(n=n, s1=s1, s2=s2, resampled=resampled)


def welch_p(a: MeanReplicates, b: MeanReplicates) -> np.ndarray:
    """Two-sided Welch t-test p-value that the means of ``a`` and ``b`` (column by column) are equal."""
    na, nb = a.n.astype(float), b.n.astype(float)
    ma, mb = a.mean, b.mean
    with np.errstate(invalid="ignore", divide="ignore"):
        va = np.maximum(a.s2[0] - na * ma ** 2, 0) / (na - 1)
        vb = np.maximum(b.s2[0] - nb * mb ** 2, 0) / (nb - 1)
        qa, qb = va / na, vb / nb
        se = np.sqrt(qa + qb)
        df = (qa + qb) ** 2 / (qa ** 2 / (na - 1) + qb ** 2 / (nb - 1))
        p = 2 * stats.t.sf(np.abs(ma - mb) / se, df)
    p = np.where((se == 0) & (ma == mb), 1.0, p)
    return np.where((na >= 2) & (nb >= 2), p, np.nan)
