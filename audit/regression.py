"""The audit of an age regressor: how many years it is off, and for whom, with intervals that cover.

Per group of every grouping (race, gender, age band and their intersections): mean absolute error (``mae``,
years), bias (mean signed error, predicted − true: positive means the model makes faces older) and the share of
faces within ±5 years (``within5``, the age-estimation literature's cumulative score CS(5)). Intervals: see
:mod:`.means` for the two means, Clopper–Pearson for the share. Disparities follow the classifier audit's rules
(:mod:`.disparities`): each group against the rest at the Bonferroni level over the ranked groups with Holm-adjusted
tests, and worst − best and the gap simultaneous over all pairs of ranked groups.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd

from faceaudit.seams.predictions import PredictionsTable
from faceaudit.taxonomy import AGE_MAX
from faceaudit.version import __version__

from .disparities import disparity, disparity_row, versus_rest
from .engine import AuditSettings, _codes, _layouts, small_groups_warning
from .intervals import mover_difference, pairwise_extremes, proportion, simultaneous_level
from .means import MeanReplicates, group_replicates, welch_p
from .result import AuditResult, stat
from .significance import holm
from .types import key_of

#: The metrics of an age audit, in report order.
REGRESSION_METRICS: tuple[str, ...] = ("mae", "bias", "within5")
#: Metrics where lower is better (within5: higher is better; bias: closer to 0 is better).
REGRESSION_LOWER_IS_BETTER = frozenset({"mae"})
#: Years within which a prediction counts as close (the cumulative score's threshold).
WITHIN_YEARS = 5.0
#: How reports name each metric.
REGRESSION_LABELS = {"mae": "MAE (years)", "bias": "bias (years, predicted − true)",
                     "within5": f"within ±{WITHIN_YEARS:g} years"}
#: The range of an absolute and of a signed error when predicted and true ages both lie in 0..116 (the bound a
#: zero-width interval is widened over).
ABS_RANGE, SIGNED_RANGE = (0.0, float(AGE_MAX)), (-float(AGE_MAX), float(AGE_MAX))
#: How each number's interval is made, recorded in audit.json ``settings.intervals``.
REGRESSION_INTERVALS = {
    "mae": "union of Student's t and a studentized bootstrap (bootstrap-t) at Hesterberg's expanded level, resampling "
           "images within each group (t alone above 5,000 images); where every error is equal, the distribution-free "
           "bound over 0-116 years",
    "bias": "Student's t interval of the mean signed error; where every error is equal, the distribution-free bound",
    "within5": "Clopper–Pearson (exact binomial) of the share with |error| <= 5 years",
    "vs_rest": "difference from the rest of the test set: MOVER from the group's and the rest's intervals (mae, bias) "
               "or Newcombe with Clopper–Pearson parts (within5), at the Bonferroni level over the ranked groups of "
               "the grouping; Welch's t-test (mae, bias) or the two-proportion test (within5), Holm-adjusted over the "
               "same groups",
    "disparities": "worst − best (MOVER) and gap (max − min, from every pair's interval) at the Bonferroni level over "
                   "all pairs of ranked groups; mae: worst is the highest; within5: the lowest; bias: the largest "
                   "|bias| (best: the smallest), the gap is max − min of the signed biases; omnibus chi-square test "
                   "for within5",
}


class _Errors:
    """One grouping's per-group error statistics at any confidence level."""

    def __init__(self, code: np.ndarray, size: int, abs_error: np.ndarray, error: np.ndarray, close: np.ndarray,
                 s: AuditSettings, seed: int):
        self.n = np.bincount(code, minlength=size)
        self.abs = group_replicates(abs_error, code, size, n_boot=s.n_boot, seed=seed)
        self.signed = group_replicates(error, code, size, n_boot=0, seed=seed)
        self.close = np.bincount(code, weights=close.astype(float), minlength=size)

    def estimates(self, level: float, rest: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``metric -> (estimate, lower, upper)`` over the groups (or their rests)."""
        absolute, signed = (self.abs.rest(), self.signed.rest()) if rest else (self.abs, self.signed)
        close, n = (self.close.sum() - self.close, self.n.sum() - self.n) if rest else (self.close, self.n)
        return {"mae": absolute.interval(level, bounds=ABS_RANGE),
                "bias": signed.interval(level, bootstrap=False, bounds=SIGNED_RANGE),
                "within5": proportion(close, n, level)}


def _vs_rest_means(errors: _Errors, metric: str, present: np.ndarray, ranked: np.ndarray, level: float) -> dict:
    """Each present group's mae or bias minus the rest's, at the Bonferroni level over the ranked groups, with
    Welch's test Holm-adjusted over them."""
    family = max(int(ranked[present].sum()), 1)
    adjusted = simultaneous_level(level, family)
    own, other = errors.estimates(adjusted)[metric], errors.estimates(adjusted, rest=True)[metric]
    d, lo, hi = mover_difference(own, other)
    replicates: MeanReplicates = errors.abs if metric == "mae" else errors.signed
    p = welch_p(replicates, replicates.rest())
    p = np.where(ranked, p, np.nan)
    p_holm = np.full(len(p), np.nan)
    p_holm[present] = holm(p[present])
    out = {}
    for g in present:
        tested = bool(ranked[g]) and not np.isnan(p[g])
        out[g] = stat(d[g], (lo[g], hi[g]), errors.n[g], p_value=None if not tested else round(float(p[g]), 6),
                      p_holm=None if not tested else round(float(p_holm[g]), 6),
                      test="Welch's t-test" if tested else "not tested (too small)", level=round(adjusted, 6),
                      family=family)
    return out


def _bias_disparity(errors: _Errors, present: np.ndarray, keys: list[str], ranked: np.ndarray, level: float) -> dict:
    """The group with the largest |bias| against the one with the smallest, and the spread (max − min) of the
    signed biases, each simultaneous over all pairs of ranked groups."""
    estimate_at = lambda lv: tuple(part[present] for part in errors.estimates(lv)["bias"])  # noqa: E731
    point = estimate_at(level)[0]
    usable = ranked & ~np.isnan(point)
    m = int(usable.sum())
    pairs = m * (m - 1) // 2
    out = {"worst": None, "best": None, "n_ranked": m, "pairs": pairs,
           "too_small": [k for k, r in zip(keys, ranked) if not r], "level": None, "adjustment": None,
           "difference": stat(None), "gap": stat(None), "ratio": stat(None), "omnibus": None,
           "rule": "worst: largest |bias|; best: smallest |bias|"}
    if m == 0:
        return out
    index = np.flatnonzero(usable)
    order = index[np.argsort(np.abs(point[index]), kind="stable")]
    worst, best = order[-1], order[0]
    out["worst"], out["best"] = keys[worst], keys[best]
    if m < 2:
        return out
    adjusted = simultaneous_level(level, pairs)
    estimate, lo, hi = estimate_at(adjusted)
    n_total = int(errors.n[present][index].sum())
    d, d_lo, d_hi = mover_difference((estimate[worst], lo[worst], hi[worst]), (estimate[best], lo[best], hi[best]))
    gap = pairwise_extremes(estimate[index], lo[index], hi[index])["gap"]
    out.update(level=round(adjusted, 6), adjustment=f"Bonferroni over {pairs} pair{'s' if pairs > 1 else ''} of {m} groups",
               difference=stat(d, (d_lo, d_hi), n_total), gap=stat(gap[0], gap[1:], n_total))
    return out


def _grouping_block(name: str, errors: _Errors, labels: list[dict], s: AuditSettings, tables: dict
                    ) -> tuple[list[dict], dict]:
    """The group records and disparities of one grouping (``all``: the whole test set, no comparisons)."""
    n_g = errors.n
    present = np.flatnonzero(n_g)
    ranked = n_g >= s.min_group_size
    estimates = errors.estimates(s.ci)
    keys = [key_of(v) for v in labels]
    vs_rest = {}
    if name != "all":
        vs_rest = {m: _vs_rest_means(errors, m, present, ranked, s.ci) for m in ("mae", "bias")}
        close = dict(zip(present, versus_rest(errors.close[present], n_g[present], ranked[present], s.ci)))
        vs_rest["within5"] = close
    records = []
    for g in present:
        too_small = bool(name != "all" and not ranked[g])
        metrics = {m: stat(estimates[m][0][g], (estimates[m][1][g], estimates[m][2][g]), n_g[g])
                   for m in REGRESSION_METRICS}
        record = {"key": keys[g], "values": labels[g], "n": int(n_g[g]), "too_small": too_small, "metrics": metrics}
        row = {"grouping": name, "group": keys[g], **labels[g], "n": int(n_g[g]), "too_small": too_small}
        for m in REGRESSION_METRICS:
            ci = metrics[m]["ci"] or [None, None]
            row.update({m: metrics[m]["value"], f"{m}_lo": ci[0], f"{m}_hi": ci[1]})
        if vs_rest:
            record["vs_rest"] = {m: vs_rest[m][g] for m in REGRESSION_METRICS}
            for m in REGRESSION_METRICS:
                diff = vs_rest[m][g]
                ci = diff["ci"] or [None, None]
                row.update({f"vs_rest_{m}": diff["value"], f"vs_rest_{m}_lo": ci[0], f"vs_rest_{m}_hi": ci[1],
                            f"vs_rest_{m}_p_holm": diff["p_holm"]})
        records.append(record)
        tables["group_metrics"].append(row)
    disparities = {}
    if name != "all":
        shown = [keys[g] for g in present]
        for m in ("mae", "within5"):
            counts = (errors.close[present].astype(np.int64), n_g[present]) if m == "within5" else None
            disparities[m] = disparity(
                lambda level, m=m: tuple(part[present] for part in errors.estimates(level)[m]), shown,
                ranked[present], level=s.ci, lower_is_better=m in REGRESSION_LOWER_IS_BETTER, counts=counts,
                sizes=n_g[present], seed=s.seed)
            if m == "mae":
                disparities[m]["ratio"] = stat(None)  # min/max of MAE is not a reviewer's question; the gap is
        disparities["bias"] = _bias_disparity(errors, present, shown, ranked[present], s.ci)
        for m in REGRESSION_METRICS:
            tables["disparities"].append(disparity_row(name, m, disparities[m]))
    return records, disparities


def compute_regression_audit(predictions: PredictionsTable, *, settings: AuditSettings | None = None,
                             model: dict | None = None, data: dict | None = None,
                             notes: list[str] | None = None) -> AuditResult:
    """Audit an age regressor's validated predictions table by every grouping of its label schema."""
    if not isinstance(predictions, PredictionsTable) or not predictions.schema.regression:
        raise TypeError("compute_regression_audit takes an age regressor's PredictionsTable (target='age')")
    s = settings or AuditSettings()
    schema = predictions.schema
    error = predictions.age_error
    abs_error = np.abs(error)
    close = abs_error <= WITHIN_YEARS
    attributes = tuple(dict.fromkeys(schema.groups))
    codes = _codes(predictions.frame, attributes)
    layouts = _layouts(codes, schema)
    n = len(predictions)
    tables: dict[str, list[dict]] = {"group_metrics": [], "disparities": []}
    overall, groupings_out, warnings_out = None, {}, list(notes or [])
    for index, (name, (code, size, labels)) in enumerate(layouts.items()):
        errors = _Errors(code, size, abs_error, error, close, s, s.seed + index)
        records, disparities = _grouping_block(name, errors, labels, s, tables)
        if name == "all":
            overall = {k: v for k, v in records[0].items() if k not in ("key", "values", "too_small")}
            continue
        attrs = labels[0].keys() if labels else ()
        missing = [key_of(labels[g]) for g in np.flatnonzero(errors.n == 0)]
        groupings_out[name] = {"attributes": list(attrs), "kind": "regression", "groups": records,
                               "missing": missing, "disparities": disparities}
        small = sum(r["too_small"] for r in records)
        if small and len(attrs) == 1:
            warnings_out.append(small_groups_warning(small, name, s.min_group_size))
    if n < s.min_test_size:
        warnings_out.insert(0, f"too small to judge: {n} test image{'s' if n != 1 else ''}, below the minimum of "
                               f"{s.min_test_size}; the numbers are shown with their (wide) intervals, no gate can pass")
    data = dict(data or {})
    data.setdefault("n", n)
    data.setdefault("split", "test")
    data["counts"] = {a: dict(zip(names, np.bincount(c, minlength=len(names)).astype(int).tolist()))
                      for a, (c, names) in codes.items()}
    data["missing_classes"] = []
    data["too_small_to_judge"] = bool(n < s.min_test_size)
    pred = predictions.pred_age
    data["ages"] = {"true": _range(predictions.true_age), "predicted": _range(pred)}
    settings_out = {"n_boot": s.n_boot, "ci": s.ci, "seed": s.seed, "min_group_size": s.min_group_size,
                    "min_test_size": s.min_test_size, "within_years": WITHIN_YEARS,
                    "intervals": REGRESSION_INTERVALS, "inconclusive": s.inconclusive}
    result = AuditResult(
        model=dict(model or {}), data=data, settings=settings_out, classes=[], overall=overall,
        groupings=groupings_out, label_schema=schema.to_dict(), calibration=None, embeddings=None,
        warnings=warnings_out, task="regression", faceaudit_version=__version__,
        created_utc=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    result.tables = {k: pd.DataFrame(v) for k, v in tables.items() if v}
    result.predictions = predictions
    return result


def _range(values: np.ndarray) -> dict:
    """Mean, standard deviation, minimum and maximum of ages (audit.json ``data.ages``)."""
    values = np.asarray(values, dtype=float)
    return {"mean": round(float(values.mean()), 4), "sd": round(float(values.std()), 4),
            "min": round(float(values.min()), 4), "max": round(float(values.max()), 4)}
