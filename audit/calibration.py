"""Calibration: top-label ECE and MCE, Brier score, log loss, reliability bins and temperature scaling.

Per-image quantities are computed once (:func:`per_image`); the metrics are computed from per-bin sums so the
same code serves the observed data and every bootstrap resample.

The plug-in ECE is biased upward (a perfectly calibrated model scores about 0.1 on 60 faces), so the audit
reports Kumar et al.'s (2019) debiased estimate, bias-corrected by the bootstrap, with a normal-bootstrap interval
whose lower bound comes from two pooled runs of bins and a calibrated model's null law (:func:`ece_interval`). The
MCE, and the ECE where resamples do not vary, are bounded by simultaneous Clopper–Pearson intervals of every bin's
accuracy (:func:`calibration_error`): that interval covers the truth, 0 included, and contains its point estimate.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
from scipy import special, stats

from .intervals import clopper_pearson

#: Top-label confidence bins for ECE and reliability diagrams (Guo et al. 2017 use 15).
ECE_BINS = 15
#: Probabilities are clipped to this floor before taking logs (scikit-learn's log_loss uses machine epsilon).
LOG_FLOOR = 1e-15
CALIBRATION_METRICS: tuple[str, ...] = ("ece", "mce", "brier", "log_loss")
#: The range of each per-image loss: multiclass Brier in [0, 2], log loss up to -ln(LOG_FLOOR).
LOSS_RANGES: dict[str, tuple[float, float]] = {"brier": (0.0, 2.0), "log_loss": (0.0, float(-np.log(LOG_FLOOR)))}


def per_image(probs: np.ndarray, y_true: np.ndarray) -> dict[str, np.ndarray]:
    """Top-label confidence, correctness, multiclass Brier and log loss of each image."""
    probs = np.asarray(probs, dtype=float)
    y_true = np.asarray(y_true, dtype=np.int64)
    rows = np.arange(len(y_true))
    pred = probs.argmax(axis=1)
    onehot_sq = (probs * probs).sum(axis=1) - 2 * probs[rows, y_true] + 1
    return {
        "confidence": probs[rows, pred],
        "correct": (pred == y_true).astype(float),
        "brier": onehot_sq,
        "log_loss": -np.log(np.clip(probs[rows, y_true], LOG_FLOOR, 1.0)),
    }


def from_sums(count: np.ndarray, confidence: np.ndarray, correct: np.ndarray, brier: np.ndarray,
              log_loss: np.ndarray) -> dict[str, np.ndarray]:
    """ECE, MCE, Brier, log loss from per-bin sums ``[..., bins]`` and per-group loss sums ``[...]``."""
    count = np.asarray(count, dtype=float)
    n = count.sum(axis=-1)
    gap = np.abs(correct - confidence)
    with np.errstate(invalid="ignore", divide="ignore"):
        ece = gap.sum(axis=-1) / n
        per_bin = np.where(count > 0, gap / count, -np.inf)
        mce = per_bin.max(axis=-1)
        mce = np.where(n > 0, mce, np.nan)
        return {"ece": ece, "mce": mce, "brier": brier / n, "log_loss": log_loss / n}


def _expected_abs_normal(mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """E|X| for X ~ Normal(mean, sd**2) (|mean| where sd is 0)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(sd > 0, mean / np.where(sd > 0, sd, 1), 0.0)
        folded = sd * np.sqrt(2 / np.pi) * np.exp(-ratio ** 2 / 2) + mean * (1 - 2 * special.ndtr(-ratio))
    return np.where(sd > 0, folded, np.abs(mean))


def debiased_ece(count: np.ndarray, confidence: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Kumar et al.'s (2019) debiased ECE from per-bin sums ``[..., bins]``: the plug-in value minus its bias.

    The bias of each bin's ``|accuracy − confidence|`` is estimated in closed form as the expected absolute value
    of a normal around it with the bin accuracy's binomial variance (their "normal debiasing", without sampling).
    """
    count = np.asarray(count, dtype=float)
    n = count.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(count > 0, correct / np.where(count > 0, count, 1), 0.0)
        conf = np.where(count > 0, confidence / np.where(count > 0, count, 1), 0.0)
        sd = np.sqrt(np.maximum(acc * (1 - acc), 0) / np.maximum(count, 1))
        gap = np.abs(acc - conf)
        term = 2 * gap - _expected_abs_normal(acc - conf, sd)
        return np.where(n > 0, (count * term).sum(axis=-1) / n, np.nan)


def calibration_error(count: np.ndarray, confidence: np.ndarray, correct: np.ndarray,
                      level: float = 0.95) -> dict[str, np.ndarray]:
    """Debiased ECE and MCE of each group ``[G, bins]`` with intervals that cover the true binned errors.

    Every non-empty bin's accuracy gets a Clopper–Pearson interval at the Bonferroni level over the group's
    non-empty bins, so all of them hold together with probability ``level``. Then the true ECE lies between the
    count-weighted distances from each bin's mean confidence to its interval (nearest edge, then farthest edge),
    and the true MCE between the largest of those distances. ``mce_bin`` is the bin that sets the MCE.
    """
    count = np.asarray(count, dtype=float)
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    present = count > 0
    n = count.sum(axis=-1)
    bins = np.maximum(present.sum(axis=-1, keepdims=True), 1)
    lo, hi = clopper_pearson(np.where(present, np.rint(correct), 0), np.where(present, count, 1),
                             1 - (1 - level) / bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.where(present, confidence / np.where(present, count, 1), 0.0)
        acc = np.where(present, correct / np.where(present, count, 1), 0.0)
        weight = np.where(n[..., None] > 0, count / np.where(n > 0, n, 1)[..., None], 0.0)
    near = np.where(present, np.maximum(np.maximum(lo - conf, conf - hi), 0.0), 0.0)
    far = np.where(present, np.maximum(np.abs(lo - conf), np.abs(hi - conf)), 0.0)
    ece_lo, ece_hi = (weight * near).sum(axis=-1), (weight * far).sum(axis=-1)
    plugin_gap = np.where(present, np.abs(acc - conf), -np.inf)
    mce_bin = plugin_gap.argmax(axis=-1)
    empty = n <= 0
    nan_if_empty = lambda a: np.where(empty, np.nan, a)  # noqa: E731
    return {
        "ece": nan_if_empty(np.clip(debiased_ece(count, confidence, correct), ece_lo, ece_hi)),
        "ece_lo": nan_if_empty(ece_lo), "ece_hi": nan_if_empty(ece_hi),
        "ece_plugin": nan_if_empty((weight * np.where(present, np.abs(acc - conf), 0.0)).sum(axis=-1)),
        "mce": nan_if_empty(plugin_gap.max(axis=-1)),
        "mce_lo": nan_if_empty(near.max(axis=-1)), "mce_hi": nan_if_empty(far.max(axis=-1)),
        "mce_bin": mce_bin,
    }


#: Parametric draws of a perfectly calibrated model per group, for the null quantile of the debiased ECE.
NULL_DRAWS = 2000


#: Level-free parts of :func:`ece_interval` (the debiased ECE of every resample, the null draws), by the bytes of
#: their inputs: a disparity asks for the same groups' interval at two levels, and the overall and per-group blocks
#: ask again (without it, most of an audit's time).
_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 64


def _cached(kind: str, arrays, compute, seed: int = 0):
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{kind}:{seed}".encode())
    for a in arrays:  # fingerprint: shape, the observed row, and sums over the resamples (hashing every byte is slow)
        a = np.asarray(a, dtype=float)
        digest.update(str(a.shape).encode())
        if a.ndim > 2:
            digest.update(np.ascontiguousarray(a[0]).tobytes())
            digest.update(np.ascontiguousarray(a.sum(axis=0)).tobytes())
            digest.update(np.ascontiguousarray(a[-1]).tobytes())
        else:
            digest.update(np.ascontiguousarray(a).tobytes())
    key = digest.hexdigest()
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    value = compute()
    _CACHE[key] = value
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return value


def _null_draws(count: np.ndarray, confidence: np.ndarray, seed: int) -> np.ndarray:
    count = np.asarray(count, dtype=float)
    conf = np.where(count > 0, np.asarray(confidence, dtype=float) / np.where(count > 0, count, 1), 0.0)
    rng = np.random.default_rng(seed)
    hits = rng.binomial(count.astype(np.int64), np.clip(conf, 0, 1), size=(NULL_DRAWS, *count.shape))
    return debiased_ece(count, confidence, hits.astype(float))


def null_quantile(count: np.ndarray, confidence: np.ndarray, level: float, seed: int = 0) -> np.ndarray:
    """The ``level`` quantile of the debiased ECE of each group ``[G, bins]`` if the model were perfectly calibrated.

    Each bin's correct answers are drawn as Binomial(n_b, mean confidence of the bin) — a calibrated model's bin
    accuracy, with at least the variance of the true (Poisson-binomial) count — so the quantile is conservative.
    The draws are cached, so asking again at another level costs a quantile.
    """
    draws = _cached("null", (count, confidence), lambda: _null_draws(count, confidence, seed), seed)
    return np.quantile(draws, level, axis=0)


#: The lower ECE bound pools each group's bins into this many runs of adjacent bins holding about equal counts.
POOLED_RUNS = 2


def pooled_runs(count0: np.ndarray, *arrays: np.ndarray, runs: int = POOLED_RUNS) -> tuple[np.ndarray, ...]:
    """Per-bin sums ``[..., G, bins]`` summed into ``runs`` runs of adjacent bins with about equal shares of each
    group's observed images ``count0 [G, bins]``.

    The runs depend on the confidences alone, so they are fixed given them (the truth the interval targets). By the
    triangle inequality, the binned calibration error over the runs is at most the one over the bins it pools.
    """
    count0 = np.asarray(count0, dtype=float)
    n = count0.sum(axis=-1, keepdims=True)
    below = np.cumsum(count0, axis=-1) - count0 / 2  # images below each bin's middle
    run = np.minimum(np.floor(below / np.where(n > 0, n, 1) * runs), runs - 1).astype(np.int64)
    member = (run[..., None] == np.arange(runs)).astype(float)  # [G, bins, runs]
    return tuple(np.einsum("...gb,gbr->...gr", np.asarray(a, dtype=float), member) for a in arrays)


def _boot_moments(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation over the resamples ``d[1:]`` (non-finite ones left out; ``d[0]`` and 0 without
    any)."""
    boots = d[1:]
    finite = np.isfinite(boots)
    k = finite.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(k > 0, np.where(finite, boots, 0).sum(axis=0) / np.maximum(k, 1), d[0])
        sd = np.sqrt(np.where(k > 1, np.where(finite, (boots - mean) ** 2, 0).sum(axis=0) / np.maximum(k, 1), 0.0))
    return mean, sd


def ece_interval(count: np.ndarray, confidence: np.ndarray, correct: np.ndarray, level: float = 0.95,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """Bootstrap-corrected debiased ECE of each group with a normal-bootstrap interval gated by a calibration test.

    Arrays are ``[1 + resamples, G, bins]`` (row 0 observed). Kumar et al.'s debiased ECE ``D`` is still biased up
    near 0 (0.07 for a calibrated model on 60 faces), so the point estimate subtracts the bootstrap's estimate of
    that bias (``2 D − mean D*``, Efron & Tibshirani 1993, ch. 10).

    The lower bound is that of the coarser ECE over two runs of bins (:func:`pooled_runs`), which the binned ECE is
    never below: ``P − z · sd(P*)`` for its debiased value ``P``, and 0 unless ``P`` exceeds what a perfectly
    calibrated model reaches with probability ``(1 + level) / 2`` (:func:`null_quantile`), so a calibrated model's
    interval contains 0 at the stated level. Pooling removes most of the bins' noise where they err on the same
    side (the usual overconfidence), and so most of ``D``'s spread: the bound is sharper where it matters. The upper
    bound is ``max(D, P) + z · sd(D*)``: where every bin errs on one side by about its noise, ``D``'s debiasing
    overshoots and ``P`` does not. Where the resamples do not vary (one-hot probabilities), the bin-interval bound
    of :func:`calibration_error` is used instead, so no interval has zero width.
    """
    count, confidence, correct = (np.asarray(a, dtype=float) for a in (count, confidence, correct))
    d = _cached("debiased", (count, confidence, correct), lambda: debiased_ece(count, confidence, correct))
    runs = _cached("pooled", (count, confidence, correct), lambda: pooled_runs(count[0], count, confidence, correct))
    p = _cached("pooled-debiased", runs, lambda: debiased_ece(*runs))
    z = stats.norm.ppf(1 - (1 - level) / 2)
    mean, sd = _boot_moments(d)
    _, sd_p = _boot_moments(p)
    corrected = 2 * d[0] - mean
    q0 = null_quantile(runs[0][0], runs[1][0], 1 - (1 - level) / 2, seed)
    lo = np.where(p[0] > q0, np.maximum(p[0] - z * sd_p, 0.0), 0.0)
    hi = np.minimum(np.maximum(np.fmax(d[0], p[0]) + z * sd, lo), 1.0)
    bound = calibration_error(count[0], confidence[0], correct[0], level)
    flat = ~(hi - lo >= 1e-6)
    lo, hi = np.where(flat, bound["ece_lo"], lo), np.where(flat, bound["ece_hi"], hi)
    empty = ~(count[0].sum(axis=-1) > 0)
    nan_if_empty = lambda a: np.where(empty, np.nan, a)  # noqa: E731
    return {"ece": nan_if_empty(np.clip(corrected, lo, hi)), "ece_lo": nan_if_empty(lo), "ece_hi": nan_if_empty(hi),
            "ece_debiased": nan_if_empty(d[0]), "ece_plugin": bound["ece_plugin"]}


def reliability_bins(count: np.ndarray, confidence: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS) -> list[dict]:
    """The non-empty bins of one group's reliability diagram: edges, n, mean confidence, accuracy."""
    out = []
    for b in range(n_bins):
        if count[b] > 0:
            out.append({"lo": round(b / n_bins, 6), "hi": round((b + 1) / n_bins, 6), "n": int(count[b]),
                        "confidence": round(float(confidence[b] / count[b]), 6),
                        "accuracy": round(float(correct[b] / count[b]), 6)})
    return out


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Top-label ECE of one set of predictions, directly (the engine computes it from bootstrap sums)."""
    from .bootstrap import confidence_bins

    q = per_image(probs, y_true)
    bins = confidence_bins(q["confidence"], n_bins)
    conf = np.bincount(bins, weights=q["confidence"], minlength=n_bins)
    corr = np.bincount(bins, weights=q["correct"], minlength=n_bins)
    return float(np.abs(corr - conf).sum() / len(bins))


def scale_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(ln p / T): temperature scaling applied to probabilities (equivalent to scaling the logits)."""
    logits = np.log(np.clip(np.asarray(probs, dtype=float), LOG_FLOOR, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def fit_temperature(probs: np.ndarray, y_true: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """The temperature minimising log loss on held-out data, with its profile-likelihood interval.

    Returns ``temperature``, ``lo``, ``hi`` (the temperatures whose log likelihood lies within the chi-square
    cut-off of the best one), ``nll_before`` and ``nll_after`` (mean negative log likelihood at T = 1 and at T).
    """
    from scipy.optimize import brentq, minimize_scalar

    y_true = np.asarray(y_true, dtype=np.int64)
    rows = np.arange(len(y_true))
    logits = np.log(np.clip(np.asarray(probs, dtype=float), LOG_FLOOR, 1.0))

    def nll(log_t: float) -> float:
        z = logits / np.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[rows, y_true]))

    bounds = (np.log(0.05), np.log(20.0))
    found = minimize_scalar(nll, bounds=bounds, method="bounded", options={"xatol": 1e-6})
    best, best_nll = float(found.x), float(found.fun)
    cut = stats.chi2.ppf(level, 1) / (2 * len(y_true))

    def excess(log_t: float) -> float:
        return nll(log_t) - best_nll - cut

    edges = []
    for end in bounds:
        edges.append(end if excess(end) <= 0 else brentq(excess, *sorted((best, end)), xtol=1e-6))
    return {"temperature": float(np.exp(best)), "lo": float(np.exp(edges[0])), "hi": float(np.exp(edges[1])),
            "nll_before": nll(0.0), "nll_after": best_nll}
