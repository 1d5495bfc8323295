"""Hypothesis tests the audit's verdicts rest on, and the one multiplicity correction they share (Holm).

- a group against the rest of the test set: two-proportion test (score z-test, Fisher's exact test when an
  expected count is below 5);
- all groups of a grouping equal: chi-square test of homogeneity, or a Monte Carlo permutation test (margins
  fixed, multivariate hypergeometric draws) when an expected count is below 5;
- two models on the same images: McNemar's test (exact binomial below 25 discordant pairs).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

#: Below this many discordant pairs McNemar's test uses the exact binomial, above it chi-squared with continuity
#: correction (the usual rule of thumb).
EXACT_BELOW = 25
#: Expected counts below this make the asymptotic tests unreliable; the exact or permutation test is used instead.
MIN_EXPECTED = 5
#: Permutations of the Monte Carlo homogeneity test.
PERMUTATIONS = 10_000


def holm(p_values) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (family-wise error over one family of tests); NaN entries stay NaN."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    present = np.flatnonzero(~np.isnan(p))
    order = present[np.argsort(p[present], kind="stable")]
    m, running = len(order), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def two_proportions(x1: int, n1: int, x2: int, n2: int) -> tuple[float, str]:
    """Two-sided p-value that two independent proportions are equal, and the test used."""
    if n1 == 0 or n2 == 0:
        return float("nan"), "none (an empty group)"
    successes, failures = x1 + x2, (n1 - x1) + (n2 - x2)
    total = n1 + n2
    expected = np.outer([n1, n2], [successes, failures]) / total
    if successes == 0 or failures == 0:
        return 1.0, "none (no variation)"
    if expected.min() < MIN_EXPECTED:
        return float(stats.fisher_exact([[x1, n1 - x1], [x2, n2 - x2]]).pvalue), "Fisher's exact test"
    pooled = successes / total
    se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = (x1 / n1 - x2 / n2) / se
    return float(2 * stats.norm.sf(abs(z))), "two-proportion score test"


def homogeneity(successes, trials, *, seed: int = 42) -> dict:
    """Test of "every group has the same proportion": statistic, p-value, degrees of freedom, method."""
    x = np.asarray(successes, dtype=np.int64)
    n = np.asarray(trials, dtype=np.int64)
    keep = n > 0
    x, n = x[keep], n[keep]
    groups = len(n)
    if groups < 2:
        return {"statistic": None, "p_value": None, "df": None, "groups": int(groups),
                "method": "none (fewer than two groups)"}
    total, hits = n.sum(), x.sum()
    if hits in (0, total):
        return {"statistic": 0.0, "p_value": 1.0, "df": groups - 1, "groups": int(groups),
                "method": "none (no variation)"}
    table = np.stack([x, n - x], axis=1).astype(float)
    expected = np.outer(n, [hits, total - hits]) / total
    statistic = float(((table - expected) ** 2 / expected).sum())
    if expected.min() >= MIN_EXPECTED:
        p = float(stats.chi2.sf(statistic, groups - 1))
        method = "chi-square test of homogeneity"
    else:
        rng = np.random.default_rng(seed)
        draws = rng.multivariate_hypergeometric(n, int(hits), size=PERMUTATIONS).astype(float)
        exp_hits = n * hits / total
        exp_miss = n - exp_hits
        permuted = ((draws - exp_hits) ** 2 / exp_hits + ((n - draws) - exp_miss) ** 2 / exp_miss).sum(axis=1)
        p = float((1 + np.sum(permuted >= statistic - 1e-9)) / (PERMUTATIONS + 1))
        method = f"permutation test of homogeneity ({PERMUTATIONS:,} Monte Carlo permutations)"
    return {"statistic": round(statistic, 6), "p_value": p, "df": groups - 1, "groups": int(groups), "method": method}


def mcnemar(only_a: int, only_b: int) -> tuple[float, str]:
    """McNemar's test on the discordant pairs: p-value and method."""
    discordant = only_a + only_b
    if discordant == 0:
        return 1.0, "none (no discordant pairs)"
    if discordant < EXACT_BELOW:
        return float(min(1.0, stats.binomtest(min(only_a, only_b), discordant, 0.5).pvalue)), "exact binomial"
    statistic = (abs(only_a - only_b) - 1) ** 2 / discordant
    return float(stats.chi2.sf(statistic, 1)), "chi-squared, continuity-corrected"
