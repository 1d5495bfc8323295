"""A fast stratified bootstrap of confusion matrices and calibration sums.

Rows are resampled within strata; the engine passes each grouping's own groups as the strata (one call per
grouping), so each group is resampled iid within itself and keeps its size, as "resampling within groups" means.
Strata must not include the true label or finer cells: holding those fixed would drop the variance of the class
mix and narrow the intervals (to zero for a model whose errors are constant within cells). Up to
:data:`EXACT_ROWS_LIMIT` rows, each resample draws actual rows (one vectorised draw and one ``np.bincount`` per
chunk of resamples). Above it, rows of one stratum that share (true, predicted, confidence bin) are treated as
interchangeable *types*: a resample of a stratum is a multinomial draw over its types (exact for confusion
counts, cost independent of the number of rows), and sums of continuous per-row values within a type
(confidence, Brier, log loss) are drawn from a normal with the type's mean and variance.
Replicate 0 is always the observed data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import sparse

#: Up to this many rows, resamples draw actual rows (exact for every statistic); above it, multinomial draws over
#: types with normally drawn sums keep the cost independent of the number of rows.
EXACT_ROWS_LIMIT = 50_000


@dataclass
class Replicates:
    """Per grouping: confusion counts ``[B+1, G, K, K]`` and, with probabilities, calibration sums."""

    confusion: dict[str, np.ndarray]
    calibration: dict[str, dict[str, np.ndarray]] | None
    n_boot: int


def _type_table(strata, y_true, y_pred, bins, n_classes, n_bins):
    """Distinct (stratum, true, pred, bin) types: id per row, and the first row of each type."""
    code = ((strata.astype(np.int64) * n_classes + y_true) * n_classes + y_pred) * n_bins + bins
    uniques, first, inverse, counts = np.unique(code, return_index=True, return_inverse=True, return_counts=True)
    return first, inverse.ravel(), counts


def _type_moments(values: np.ndarray, inverse: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of ``values`` within each type."""
    n_types = len(counts)
    total = np.bincount(inverse, weights=values, minlength=n_types)
    mean = total / counts
    centred = values - mean[inverse]
    var = np.bincount(inverse, weights=centred * centred, minlength=n_types) / counts
    return mean, np.sqrt(np.maximum(var, 0))


def _pooled_moments(means: np.ndarray, m2: np.ndarray, weights: np.ndarray, inverse: np.ndarray,
                    counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum, mean and standard deviation within each type of cells given as (count, mean, sum of squared
    deviations): the pooled moments of the cells' images."""
    n_types = len(counts)
    total = np.bincount(inverse, weights=weights * means, minlength=n_types)
    mean = total / counts
    centred = means - mean[inverse]
    var = (np.bincount(inverse, weights=m2, minlength=n_types)
           + np.bincount(inverse, weights=weights * centred * centred, minlength=n_types)) / counts
    return total, mean, np.sqrt(np.maximum(var, 0))


def _map(rows: np.ndarray, cols: np.ndarray, n_cols: int) -> sparse.csr_matrix:
    """A 0/1 matrix sending type ``i`` to column ``cols[i]``, transposed for ``M @ counts.T``."""
    n = len(rows)
    return sparse.csr_matrix((np.ones(n), (cols, rows)), shape=(n_cols, n))


def stratified_replicates(
    strata: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    groupings: dict[str, tuple[np.ndarray, int]],
    *,
    n_classes: int,
    n_boot: int = 1000,
    seed: int = 42,
    confidence: np.ndarray | None = None,
    brier: np.ndarray | None = None,
    log_loss: np.ndarray | None = None,
    n_bins: int = 15,
    chunk: int = 250,
    tick: Callable[[int], None] | None = None,
    weights: np.ndarray | None = None,
    m2: dict[str, np.ndarray] | None = None,
    bins: np.ndarray | None = None,
) -> Replicates:
    """Bootstrap replicates for each grouping (``name -> (group code per row, number of groups)``).

    Every grouping must be coarser than ``strata`` (each stratum inside one group). Calibration sums are
    computed when ``confidence``, ``brier`` and ``log_loss`` are given. With ``weights`` each "row" is a cell of
    that many images (:class:`faceaudit.auditing.statistics.CellStatistics`): the values are the cells' means, ``m2``
    their sums of squared deviations and ``bins`` their confidence bins; resamples are then drawn over types.
    ``tick`` is called with the number of resamples drawn as each chunk is drawn (a progress bar's update).
    """
    strata = np.asarray(strata, dtype=np.int64)
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    with_cal = confidence is not None
    if bins is None:
        bins = confidence_bins(confidence, n_bins) if with_cal else np.zeros(len(y_true), dtype=np.int64)
    first, inverse, counts = _type_table(strata, y_true, y_pred, bins, n_classes, n_bins if with_cal else 1)
    if weights is not None:
        weights = np.asarray(weights, dtype=np.int64)
        counts = np.bincount(inverse, weights=weights, minlength=len(counts)).astype(np.int64)
    n_types = len(counts)
    t_true, t_pred, t_bin, t_stratum = y_true[first], y_pred[first], bins[first], strata[first]
    t_correct = (t_true == t_pred).astype(float)

    conf_maps, cal_maps, loss_maps = {}, {}, {}
    for name, (codes, n_groups) in groupings.items():
        codes = np.asarray(codes, dtype=np.int64)
        t_group = codes[first]
        if not np.array_equal(t_group[inverse], codes):
            raise ValueError(f"grouping {name!r} is not nested within the bootstrap strata")
        conf_maps[name] = _map(np.arange(n_types), (t_group * n_classes + t_true) * n_classes + t_pred,
                               n_groups * n_classes * n_classes)
        if with_cal:
            cal_maps[name] = _map(np.arange(n_types), t_group * n_bins + t_bin, n_groups * n_bins)
            loss_maps[name] = _map(np.arange(n_types), t_group, n_groups)

    moments = {}
    if with_cal:
        for key, values in (("confidence", confidence), ("brier", brier), ("log_loss", log_loss)):
            values = np.asarray(values, dtype=float)
            if weights is None:
                moments[key] = (np.bincount(inverse, weights=values, minlength=n_types),
                                *_type_moments(values, inverse, counts))
            else:
                moments[key] = _pooled_moments(values, m2[key], weights, inverse, counts)

    # Types grouped by stratum, for one multinomial draw per stratum.
    order = np.argsort(t_stratum, kind="stable")
    boundaries = np.flatnonzero(np.diff(t_stratum[order])) + 1
    stratum_types = np.split(order, boundaries)

    rng = np.random.default_rng(seed)
    exact_rows = weights is None and len(y_true) <= EXACT_ROWS_LIMIT
    if exact_rows:
        # Rows sorted by stratum; each resampled slot draws a random row of its own stratum.
        row_order = np.argsort(strata, kind="stable")
        sorted_strata = strata[row_order]
        start = np.searchsorted(sorted_strata, sorted_strata, side="left")
        size_of = np.searchsorted(sorted_strata, sorted_strata, side="right") - start
        row_type = inverse[row_order]
        row_values = {k: np.asarray(v, dtype=float)[row_order] for k, v in
                      (("confidence", confidence), ("brier", brier), ("log_loss", log_loss)) if with_cal}
    pieces: dict[str, list] = {name: [] for name in groupings}
    cal_pieces: dict[str, dict[str, list]] = {name: {k: [] for k in ("count", "confidence", "correct", "brier", "log_loss")}
                                              for name in groupings}
    spans = [(0, 0)] + [(s, min(s + chunk, n_boot + 1)) for s in range(1, n_boot + 1, chunk)]
    for lo, hi in spans:
        if lo == 0 and hi == 0:
            draws = counts[None, :].astype(float)
            sums = {k: m[0][None, :] for k, m in moments.items()}
        elif exact_rows:
            size = hi - lo
            picked = start + (rng.random((size, len(start))) * size_of).astype(np.int64)
            slots = (np.arange(size)[:, None] * n_types + row_type[picked]).ravel()
            draws = np.bincount(slots, minlength=size * n_types).reshape(size, n_types).astype(float)
            sums = {k: np.bincount(slots, weights=v[picked].ravel(), minlength=size * n_types).reshape(size, n_types)
                    for k, v in row_values.items()}
        else:
            size = hi - lo
            draws = np.empty((size, n_types))
            for types in stratum_types:
                k = counts[types]
                n_stratum = k.sum()
                if len(types) == 1:
                    draws[:, types[0]] = n_stratum
                else:
                    draws[:, types] = rng.multinomial(n_stratum, k / n_stratum, size=size)
            sums = {}
            root = np.sqrt(draws)
            for key, (_, mean, sd) in moments.items():
                noise = rng.standard_normal(draws.shape)
                noise *= root
                noise *= sd
                sums[key] = draws * mean + noise
        for name in groupings:
            pieces[name].append((conf_maps[name] @ draws.T).T)
            if with_cal:
                cal_pieces[name]["count"].append((cal_maps[name] @ draws.T).T)
                cal_pieces[name]["confidence"].append((cal_maps[name] @ sums["confidence"].T).T)
                cal_pieces[name]["correct"].append((cal_maps[name] @ (draws * t_correct).T).T)
                cal_pieces[name]["brier"].append((loss_maps[name] @ sums["brier"].T).T)
                cal_pieces[name]["log_loss"].append((loss_maps[name] @ sums["log_loss"].T).T)
        if tick is not None and hi > lo:
            tick(hi - lo)

    confusion = {}
    calibration = {} if with_cal else None
    for name, (_, n_groups) in groupings.items():
        stacked = np.concatenate(pieces[name], axis=0)
        confusion[name] = np.rint(stacked).astype(np.int64).reshape(-1, n_groups, n_classes, n_classes)
        if with_cal:
            cal = {k: np.concatenate(v, axis=0) for k, v in cal_pieces[name].items()}
            for key in ("count", "confidence", "correct"):
                cal[key] = cal[key].reshape(-1, n_groups, n_bins)
            cal["count"] = np.rint(cal["count"]).astype(np.int64)
            calibration[name] = cal
    return Replicates(confusion=confusion, calibration=calibration, n_boot=n_boot)


def confidence_bins(confidence: np.ndarray, n_bins: int = 15) -> np.ndarray:
    """Equal-width bin of each top-label confidence, bins ``(lo, hi]`` (0 falls in the first bin)."""
    confidence = np.asarray(confidence, dtype=float)
    return np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)


def percentile_interval(replicates: np.ndarray, ci=0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval over axis 0 of the resamples (replicate 0, the observed value, excluded).

    Resamples where a statistic is undefined (NaN) are left out, like ``np.nanquantile`` with linear
    interpolation, but vectorised: one sort instead of a Python loop per column. ``ci`` may be one level per
    column (see :func:`expanded_level`).
    """
    tail = (1 - np.asarray(ci, dtype=float)) / 2
    boots = np.asarray(replicates[1:], dtype=float)
    if boots.shape[0] == 0:
        nan = np.full(replicates.shape[1:], np.nan)
        return nan, nan
    ordered = np.sort(boots, axis=0)  # NaN sorts last
    valid = (~np.isnan(boots)).sum(axis=0)
    bounds = []
    for q in (tail, 1 - tail):
        position = q * np.maximum(valid - 1, 0)
        below = np.floor(position).astype(np.int64)
        above = np.minimum(below + 1, np.maximum(valid - 1, 0))
        low = np.take_along_axis(ordered, below[None], axis=0)[0]
        high = np.take_along_axis(ordered, above[None], axis=0)[0]
        value = low + (high - low) * (position - below)
        bounds.append(np.where(valid > 0, value, np.nan))
    return bounds[0], bounds[1]


def expanded_level(level: float, n: np.ndarray) -> np.ndarray:
    """Hesterberg's (2015) expanded percentile level for a mean of ``n`` values.

    The bootstrap distribution of a mean is too narrow by sqrt((n - 1) / n) and uses normal rather than t tails;
    taking its quantiles at ``2 Phi(sqrt(n / (n - 1)) t_{n-1}) - 1`` instead of ``level`` corrects both, which
    matters below a few hundred images.
    """
    from scipy import stats

    n = np.maximum(np.asarray(n, dtype=float), 2)
    t = stats.t.ppf(1 - (1 - level) / 2, n - 1)
    return 2 * stats.norm.cdf(np.sqrt(n / (n - 1)) * t) - 1
