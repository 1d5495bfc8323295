"""Disparities between the groups of one grouping: signed differences with intervals adjusted for multiplicity.

- Each group against the rest of the test set: the difference of accuracies with a Newcombe (MOVER,
  Clopper–Pearson parts) interval at the Bonferroni level over the groups compared, a two-proportion test, and
  Holm-adjusted p-values over the same family.
- Worst against best, gap (max − min) and ratio (min / max): from the intervals of every pair of ranked groups at
  the max-type level over all pairs (:func:`.intervals.max_type_level`: the simulated studentized range of the
  groups' spreads, narrower than Bonferroni over the pairs at the same simultaneous coverage), so a pair picked
  after looking (the worst and the best) is still covered;
  and an omnibus test that all groups are equal.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import stats

from .intervals import max_type_level, mover_difference, pairwise_extremes, proportion, simultaneous_level
from .significance import holm, homogeneity, two_proportions
from .types import stat

#: ``level -> (estimate, lower, upper)`` arrays over the groups of a grouping.
EstimateAt = Callable[[float], tuple[np.ndarray, np.ndarray, np.ndarray]]


def versus_rest(correct: np.ndarray, sizes: np.ndarray, ranked: np.ndarray, level: float,
                family: int | None = None) -> list[dict]:
    """Per group: its accuracy minus that of every other test image, judged as one family over the ranked groups.

    The interval is at the Bonferroni level over ``family`` comparisons (default: this grouping's ranked groups;
    the engine passes the ranked groups of every grouping of the same tier, so race, gender and age band are one
    family). P-values are Holm-adjusted within the grouping at its Bonferroni share of the family's error rate
    (``holm(p) · family / ranked``), which keeps the family-wise error across groupings. Groups too small to rank get
    the interval (at the same level) but no test.
    """
    correct, sizes = np.asarray(correct, dtype=float), np.asarray(sizes, dtype=float)
    own = max(int(ranked.sum()), 1)
    family = max(int(family or own), own)
    adjusted = simultaneous_level(level, family)
    total_correct, total = correct.sum(), sizes.sum()
    rest_correct, rest = total_correct - correct, total - sizes
    d, lo, hi = mover_difference(proportion(correct, sizes, adjusted), proportion(rest_correct, rest, adjusted))
    tests = [two_proportions(int(c), int(n), int(rc), int(r)) if rank else (np.nan, "not tested (too small)")
             for c, n, rc, r, rank in zip(correct, sizes, rest_correct, rest, ranked)]
    p = np.array([t[0] for t in tests])
    p_holm = np.minimum(holm(p) * family / own, 1.0)
    return [stat(d[i], (lo[i], hi[i]), sizes[i], p_value=_clean(p[i]), p_holm=_clean(p_holm[i]), test=tests[i][1],
                 level=round(adjusted, 6), family=family)
            for i in range(len(sizes))]


def _clean(value: float) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value), 6)


def disparity(estimate_at: EstimateAt, keys: list[str], ranked: np.ndarray, *, level: float,
              lower_is_better: bool = False, counts: tuple[np.ndarray, np.ndarray] | None = None,
              sizes: np.ndarray | None = None, seed: int = 42) -> dict:
    """Worst and best ranked group, their signed difference, the gap and the ratio, each with a simultaneous interval.

    ``estimate_at(level)`` gives every group's estimate and interval at a confidence level; ``counts`` (successes,
    trials), when the metric is a proportion, feeds the omnibus test.
    """
    ranked = np.asarray(ranked, dtype=bool)
    point = estimate_at(level)[0]
    usable = ranked & ~np.isnan(point)
    m = int(usable.sum())
    pairs = m * (m - 1) // 2
    too_small = [k for k, r in zip(keys, ranked) if not r]
    out = {"worst": None, "best": None, "n_ranked": m, "pairs": pairs, "too_small": too_small,
           "level": None, "adjustment": None, "difference": stat(None), "gap": stat(None), "ratio": stat(None),
           "omnibus": None}
    if m == 0:
        return out
    index = np.flatnonzero(usable)
    order = index[np.argsort(point[index], kind="stable")]
    low, high = order[0], order[-1]
    worst, best = (high, low) if lower_is_better else (low, high)
    out["worst"], out["best"] = keys[worst], keys[best]
    if m < 2:
        return out
    z = stats.norm.ppf(1 - (1 - level) / 2)
    _, lo0, hi0 = estimate_at(level)
    adjusted = max_type_level(level, (hi0[index] - lo0[index]) / (2 * z), seed=seed)
    estimate, lo, hi = estimate_at(adjusted)
    kind = "max-type" if adjusted < simultaneous_level(level, pairs) - 1e-12 else "Bonferroni" 
    n_total = None if sizes is None else int(np.asarray(sizes)[index].sum())
    d, d_lo, d_hi = mover_difference((estimate[worst], lo[worst], hi[worst]), (estimate[best], lo[best], hi[best]))
    extremes = pairwise_extremes(estimate[index], lo[index], hi[index])
    out.update(level=round(adjusted, 6), adjustment=f"{kind} over {pairs} pair{'s' if pairs > 1 else ''} of {m} groups",
               difference=stat(d, (d_lo, d_hi), n_total),
               gap=stat(extremes["gap"][0], extremes["gap"][1:], n_total),
               ratio=stat(extremes["ratio"][0], extremes["ratio"][1:], n_total))
    if counts is not None:
        successes, trials = (np.asarray(c)[index] for c in counts)
        out["omnibus"] = homogeneity(successes, trials, seed=seed)
    return out


def disparity_row(grouping: str, metric: str, d: dict) -> dict:
    """One row of ``disparities.csv``."""
    row = {"grouping": grouping, "metric": metric, "worst": d["worst"], "best": d["best"], "n_ranked": d["n_ranked"],
           "pairs": d["pairs"], "level": d["level"]}
    for name in ("difference", "gap", "ratio"):
        ci = d[name]["ci"] or [None, None]
        row.update({name: d[name]["value"], f"{name}_lo": ci[0], f"{name}_hi": ci[1]})
    omnibus = d.get("omnibus") or {}
    row.update(omnibus_p=omnibus.get("p_value"), omnibus_test=omnibus.get("method"),
               too_small="; ".join(d["too_small"]))
    return row
