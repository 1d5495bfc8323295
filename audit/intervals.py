"""Closed-form confidence intervals for proportions and for what is built from them.

Every proportion (accuracy, recall, precision, FPR, selection rate, ...) carries a Clopper–Pearson interval: it
is the one score-free interval whose coverage is at least its stated level for every n and every true value,
0 % and 100 % included, and whose one-sided error never exceeds half of 1 − level, so a gate judged on its lower
bound passes a model truly below the threshold at most 2.5 % of the time. Wilson and Jeffreys are narrower but
fall to about 0.84 coverage close to 100 % (measured in ``bench/bench_coverage.py``).

Quantities built from several proportions use MOVER (Zou & Donner 2008, "method of variance estimates
recovery"): the interval of a sum, difference or ratio is recovered from its parts' intervals. With two parts and
a difference this is Newcombe's (1998) method; for paired proportions, Newcombe's method 10 with its
correlation correction; for a ratio, Donner & Zou (2012). Simultaneous intervals for ``m`` comparisons use the
Bonferroni level ``1 − (1 − level) / m``.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import stats


def simultaneous_level(level: float, comparisons: int) -> float:
    """Bonferroni: the per-comparison level that makes ``comparisons`` intervals hold together at ``level``."""
    return 1 - (1 - level) / max(int(comparisons), 1)


#: Gaussian draws behind :func:`max_type_level` (Monte Carlo error of its critical value about 0.01).
MAX_TYPE_DRAWS = 8000


def max_type_level(level: float, sds, seed: int = 0) -> float:
    """The per-pair level at which every pairwise difference of independent groups holds together at ``level``.

    The critical value is the ``level`` quantile of max over pairs of ``|Z_i − Z_j| / sqrt(s_i² + s_j²)`` for
    independent ``Z_i ~ Normal(0, s_i²)``: Tukey's studentized range for equal spreads, and its generalisation
    (Games–Howell's idea, simulated) for unequal ones. It accounts for the pairs sharing groups, so it is smaller
    than Bonferroni's over all pairs; the Bonferroni level is kept where that would be lower (never above it).
    """
    s = np.asarray(sds, dtype=float)
    s = s[np.isfinite(s)]
    m = len(s)
    bonferroni = simultaneous_level(level, m * (m - 1) // 2)
    if m < 3 or not (s > 0).all():
        return bonferroni
    # The statistic depends only on the spreads relative to each other, in any order: the level is cached by the
    # sorted spreads relative to the largest, to 2 decimals (a shift of the critical value far below its Monte
    # Carlo error), so the metrics and groupings of an audit, and audits of the same sizes, share one simulation.
    relative = tuple(np.round(np.sort(s / s.max()), 2).clip(0.01, None))
    return min(_max_type_level(float(level), relative, int(seed)), bonferroni)


@functools.lru_cache(maxsize=512)
def _max_type_level(level: float, s: tuple, seed: int) -> float:
    s = np.asarray(s, dtype=float)
    m = len(s)
    z = np.random.default_rng(seed).standard_normal((MAX_TYPE_DRAWS, m)) * s
    worst = np.zeros(MAX_TYPE_DRAWS)
    for i in range(m - 1):
        worst = np.maximum(worst, (np.abs(z[:, i:i + 1] - z[:, i + 1:]) / np.sqrt(s[i] ** 2 + s[i + 1:] ** 2)).max(axis=1))
    critical = float(np.quantile(worst, level))
    return float(2 * stats.norm.cdf(critical) - 1)


def clopper_pearson(successes, trials, level=0.95) -> tuple[np.ndarray, np.ndarray]:
    """Exact (Clopper–Pearson) interval of a binomial proportion; NaN where there are no trials.

    The lower bound is 0 only at 0 successes and the upper bound 1 only at ``trials`` successes, so the interval
    has positive width whenever there is at least one trial.
    """
    x = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    tail = (1 - np.asarray(level, dtype=float)) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(x > 0, stats.beta.ppf(tail, np.maximum(x, 1e-12), n - x + 1), 0.0)
        hi = np.where(x < n, stats.beta.ppf(1 - tail, x + 1, np.maximum(n - x, 1e-12)), 1.0)
    empty = ~(n > 0)
    return np.where(empty, np.nan, lo), np.where(empty, np.nan, hi)


def proportion(successes, trials, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(estimate, lower, upper)`` of ``successes / trials`` with its Clopper–Pearson interval."""
    x = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        estimate = np.where(n > 0, x / np.where(n > 0, n, 1), np.nan)
    return (estimate, *clopper_pearson(x, n, level))


def widen_degenerate(estimate, lower, upper, n, bounds: tuple[float, float], level: float = 0.95):
    """Replace zero-width intervals of a mean of values in ``bounds`` by a distribution-free one.

    When all ``n`` values of a group are equal (a resampling interval then has zero width), the share of the
    population that differs from them is below ``1 − (tail)^(1/n)`` with confidence ``1 − tail`` (the exact
    binomial bound at 0 of n), and that share can lie anywhere in ``bounds``.
    """
    estimate, lower, upper, n = (np.asarray(a, dtype=float) for a in (estimate, lower, upper, n))
    share = 1 - ((1 - level) / 2) ** (1 / np.maximum(n, 1))
    flat = (upper - lower < 1e-6) & (n > 0)  # zero up to the 6 decimals audit.json keeps
    return (np.where(flat, estimate - (estimate - bounds[0]) * share, lower),
            np.where(flat, estimate + (bounds[1] - estimate) * share, upper))


def mover_sum(estimates, lowers, uppers, weights, axis: int = -1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interval of ``sum(w * theta)`` from independent parts' intervals (MOVER); NaN parts are left out.

    A part with a positive weight pulls the lower bound down by its distance to its own lower limit, one with a
    negative weight by its distance to its upper limit.
    """
    theta, lo, hi, w = (np.asarray(a, dtype=float) for a in (estimates, lowers, uppers, weights))
    w = np.broadcast_to(w, theta.shape)
    present = ~np.isnan(theta)
    w = np.where(present, w, 0.0)
    theta, lo, hi = (np.where(present, a, 0.0) for a in (theta, lo, hi))
    down = np.where(w > 0, w * (theta - lo), -w * (hi - theta))
    up = np.where(w > 0, w * (hi - theta), -w * (theta - lo))
    estimate = (w * theta).sum(axis=axis)
    any_present = present.any(axis=axis)
    return (np.where(any_present, estimate, np.nan),
            np.where(any_present, estimate - np.sqrt((down ** 2).sum(axis=axis)), np.nan),
            np.where(any_present, estimate + np.sqrt((up ** 2).sum(axis=axis)), np.nan))


def mover_difference(a: tuple, b: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``theta_a − theta_b`` of two independent estimates, each given as ``(estimate, lower, upper)``.

    With Clopper–Pearson parts this is Newcombe's interval for a difference of independent proportions.
    """
    (ta, la, ua), (tb, lb, ub) = (tuple(np.asarray(v, dtype=float) for v in part) for part in (a, b))
    d = ta - tb
    return d, d - np.sqrt((ta - la) ** 2 + (ub - tb) ** 2), d + np.sqrt((ua - ta) ** 2 + (tb - lb) ** 2)


def mover_ratio(a: tuple, b: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``theta_a / theta_b`` of two independent positive estimates (Donner & Zou 2012); NaN where b is 0."""
    (p1, l1, u1), (p2, l2, u2) = (tuple(np.asarray(v, dtype=float) for v in part) for part in (a, b))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(p2 > 0, p1 / p2, np.nan)
        prod = p1 * p2
        lo_root = np.sqrt(np.maximum(prod ** 2 - l1 * u2 * (2 * p1 - l1) * (2 * p2 - u2), 0))
        hi_root = np.sqrt(np.maximum(prod ** 2 - u1 * l2 * (2 * p1 - u1) * (2 * p2 - l2), 0))
        lo = (prod - lo_root) / (u2 * (2 * p2 - u2))
        hi_den = l2 * (2 * p2 - l2)
        hi = np.where(hi_den > 0, (prod + hi_root) / np.where(hi_den > 0, hi_den, 1), np.inf)
    lo = np.where(np.isnan(ratio), np.nan, np.clip(np.nan_to_num(lo, nan=0.0), 0, ratio))
    hi = np.where(np.isnan(ratio), np.nan, np.maximum(np.nan_to_num(hi, nan=np.inf), ratio))
    return ratio, lo, hi


def paired_difference(both: int, only_a: int, only_b: int, neither: int,
                      level: float = 0.95) -> tuple[float, float, float]:
    """Accuracy of b minus accuracy of a on the same images (Newcombe 1998, method 10, continuity-corrected phi).

    Unlike a paired bootstrap, the interval keeps a positive width when the two models never disagree: it then
    reflects how well the shared accuracy itself is known.
    """
    n = both + only_a + only_b + neither
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    acc_a, lo_a, hi_a = (float(v) for v in proportion(both + only_a, n, level))
    acc_b, lo_b, hi_b = (float(v) for v in proportion(both + only_b, n, level))
    # Newcombe's phi is the correlation of the two answers; a, b, c, d in his notation.
    a, b, c, d = both, only_a, only_b, neither
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    cross = a * d - b * c
    if cross > 0:
        cross = max(cross - n / 2, 0)
    phi = cross / np.sqrt(margins) if margins > 0 else 0.0
    diff = acc_b - acc_a
    down = (acc_b - lo_b) ** 2 - 2 * phi * (acc_b - lo_b) * (hi_a - acc_a) + (hi_a - acc_a) ** 2
    up = (hi_b - acc_b) ** 2 - 2 * phi * (hi_b - acc_b) * (acc_a - lo_a) + (acc_a - lo_a) ** 2
    return diff, max(diff - np.sqrt(max(down, 0.0)), -1.0), min(diff + np.sqrt(max(up, 0.0)), 1.0)


def pairwise_extremes(estimates, lowers, uppers) -> dict[str, tuple[float, float, float]]:
    """Gap (max − min) and ratio (min / max) over groups, each with an interval from all pairwise intervals.

    The parts' intervals must already be at the simultaneous level for every pair; then every pairwise
    difference lies in its interval together, so the gap lies in ``[max of pairwise lower bounds, max of pairwise
    upper bounds]`` (and likewise for the smallest ratio). That interval covers the true gap even when it is 0,
    which the bootstrap of the observed max − min (biased upward) does not.
    """
    t, lo, hi = (np.asarray(v, dtype=float) for v in (estimates, lowers, uppers))
    keep = ~np.isnan(t)
    t, lo, hi = t[keep], lo[keep], hi[keep]
    nan = (float("nan"),) * 3
    if len(t) < 2:
        return {"gap": nan, "ratio": nan}
    a = (t[:, None], lo[:, None], hi[:, None])
    b = (t[None, :], lo[None, :], hi[None, :])
    _, d_lo, d_hi = mover_difference(a, b)
    off = ~np.eye(len(t), dtype=bool)
    gap = float(t.max() - t.min())
    gap_ci = (max(float(d_lo[off].max()), 0.0), float(d_hi[off].max()))
    out = {"gap": (gap, gap_ci[0], gap_ci[1]), "ratio": nan}
    if t.max() > 0:
        _, r_lo, r_hi = mover_ratio(a, b)
        ratio = float(t.min() / t.max())
        out["ratio"] = (ratio, min(float(np.nanmin(r_lo[off])), ratio), min(max(float(np.nanmin(r_hi[off])), ratio), 1.0))
    return out
