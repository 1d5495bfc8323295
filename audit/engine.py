"""The audit: from a validated predictions table (and optional embeddings) to an :class:`AuditResult` and tables.

Classification metrics come from each group's confusion counts with closed-form intervals (:mod:`.metrics`,
:mod:`.intervals`) and disparities adjusted for the number of comparisons (:mod:`.disparities`). A bootstrap
(:mod:`.bootstrap`) resampling within the groups of each grouping serves the calibration figures that are means
of per-image values (Brier, log loss) and the before/after comparison of temperature scaling, drawn on the same
resamples.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from faceaudit.config import (
    DEFAULT_CI,
    DEFAULT_INCONCLUSIVE,
    DEFAULT_MIN_GROUP_SIZE,
    DEFAULT_MIN_TEST_SIZE,
    DEFAULT_N_BOOT,
    DEFAULT_SEED,
)
from faceaudit.console import step
from faceaudit.seams.predictions import PredictionsTable
from faceaudit.taxonomy import LabelSchema
from faceaudit.version import __version__

from . import calibration as cal
from . import embeddings as emb
from .bootstrap import Replicates, expanded_level, percentile_interval, stratified_replicates
from .disparities import disparity, disparity_row, versus_rest
from .intervals import mover_difference, widen_degenerate
from .metrics import (
    CLASS_GROUP_METRICS,
    CLASS_METRICS,
    DISPARITY_METRICS,
    LOWER_IS_BETTER,
    MIXED_METRICS,
    PROPORTION_METRICS,
    class_rates,
    mixed_metrics,
    row_normalised,
)
from .result import AuditResult, grouping_name, stat
from .statistics import CELL_VALUES, CellStatistics, audited_attributes
from .types import key_of

BOOTSTRAP_METHOD = ("percentile bootstrap resampling images within each group of each grouping (group sizes fixed); "
                    "up to 50,000 images each resample draws actual images; above that, confusion counts are drawn "
                    "exactly as multinomial resamples of each group's (true, predicted, confidence bin) types and per-image confidence, Brier "
                    "and log-loss sums from a normal with each type's mean and variance")
#: How each number's interval is made, recorded in audit.json ``settings.intervals``.
INTERVAL_METHODS = {
    "proportions": "Clopper–Pearson (exact binomial): accuracy, recall, FNR, precision, FPR, selection rate, true share",
    "balanced_accuracy": "MOVER (Zou & Donner 2008) from the per-class recalls' Clopper–Pearson intervals",
    "f1, macro_f1": "per-class F1 through q = TP / (TP + FP + FN), F1 = 2q / (1 + q), Clopper–Pearson on q; macro-F1: "
                    "the means of the per-class bounds (MOVER with perfectly correlated parts, the worst case: the class "
                    "F1s are dependent, so an independent MOVER sum would be too narrow)",
    "vs_rest": "difference from the rest of the test set: Newcombe/MOVER with Clopper–Pearson parts at the Bonferroni "
               "level over one family per tier (the ranked groups of race, gender and age band together; those of all "
               "intersections together); two-proportion score test (Fisher's exact below 5 expected), Holm-adjusted "
               "within each grouping at its Bonferroni share of the family's error rate",
    "disparities": "worst − best, gap (max − min) and ratio (min / max) from MOVER intervals of every pair of ranked "
                   "groups at the max-type level over all pairs (simulated studentized range of the groups' spreads; "
                   "Bonferroni where that is lower); omnibus chi-square (or permutation) test of equality",
    "ece": "debiased ECE (Kumar et al. 2019, closed-form normal debiasing) less its bootstrap bias; normal bootstrap "
           "interval D ± z·sd(D*), lower bound 0 unless D exceeds the (1 + level) / 2 quantile of a perfectly "
           "calibrated model's D (parametric draws); where resamples do not vary, the bin-interval bound below",
    "mce": "largest bin gap; interval bounding the true binned error by Clopper–Pearson intervals of every bin's "
           "accuracy at the Bonferroni level over the group's bins",
    "brier, log_loss": "expanded percentile bootstrap (Hesterberg 2015; see bootstrap); where every face scores the "
                       "same, the distribution-free interval over the metric's range",
    "ece change": "percentile bootstrap of the debiased ECE after − before temperature scaling: the same resampled "
                  "images up to 50,000 rows, above that resamples paired by seed only; where no resample changes, "
                  "MOVER from the before and after ECE intervals",
    "silhouette, knn_purity": "percentile bootstrap of the per-image values within each group; where every face "
                              "scores the same, the distribution-free interval over the value's range",
    "temperature": "profile-likelihood interval of T on the validation split; T is then held fixed (its uncertainty is "
                   "stated, not propagated)",
}


@dataclass
class AuditSettings:
    """How the audit computes (recorded in audit.json ``settings``)."""

    n_boot: int = DEFAULT_N_BOOT
    ci: float = DEFAULT_CI
    seed: int = DEFAULT_SEED
    min_group_size: int = DEFAULT_MIN_GROUP_SIZE
    min_test_size: int = DEFAULT_MIN_TEST_SIZE
    ece_bins: int = cal.ECE_BINS
    knn_k: int = emb.KNN_K
    tsne: bool = True
    inconclusive: str = DEFAULT_INCONCLUSIVE
    progress: bool = False


def _codes(frame: pd.DataFrame, attributes: tuple[str, ...]) -> dict[str, tuple[np.ndarray, list[str]]]:
    out = {}
    for attribute in attributes:
        column = frame[attribute]
        categories = [str(c) for c in column.cat.categories]
        out[attribute] = (np.asarray(column.cat.codes, dtype=np.int64), categories)
    return out


def _grouping_codes(codes: dict, attributes: tuple[str, ...]) -> tuple[np.ndarray, int, list[dict]]:
    """Mixed-radix group code per row, number of groups, and each group's attribute values."""
    code = np.zeros(len(next(iter(codes.values()))[0]), dtype=np.int64)
    size = 1
    for attribute in attributes:
        values, categories = codes[attribute]
        code = code * len(categories) + values
        size *= len(categories)
    labels = []
    for index in range(size):
        values, rest = {}, index
        for attribute in reversed(attributes):
            categories = codes[attribute][1]
            values[attribute] = categories[rest % len(categories)]
            rest //= len(categories)
        labels.append({a: values[a] for a in attributes})
    return code, size, labels


def _layouts(codes: dict, schema: LabelSchema) -> dict[str, tuple[np.ndarray, int, list[dict]]]:
    """Every grouping's (group code per row, number of groups, each group's values); ``all`` first."""
    layouts = {"all": (np.zeros(len(next(iter(codes.values()))[0]), dtype=np.int64), 1, [{}])}
    for attributes in schema.groupings:
        layouts[grouping_name(attributes)] = _grouping_codes(codes, attributes)
    return layouts


def _confusions(layouts: dict, y_true: np.ndarray, y_pred: np.ndarray, k: int,
                weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Confusion counts ``[groups, K, K]`` of every grouping (rows, or cells of ``weights`` images each)."""
    cell = y_true * k + y_pred
    return {name: np.rint(np.bincount(code * k * k + cell, weights=weights, minlength=size * k * k)
                          ).astype(np.int64).reshape(size, k, k)
            for name, (code, size, _) in layouts.items()}


class _Grouping:
    """One grouping's confusion counts and its metrics at any confidence level.

    A grouping without the class attribute has mixed-class groups; one with it has single-class groups, whose
    rates are read from the confusion matrix of their context (the same grouping without the class attribute).
    """

    def __init__(self, name: str, attributes: tuple[str, ...], layouts: dict, confusions: dict, schema: LabelSchema):
        self.name, self.attributes, self.target = name, attributes, schema.target
        self.classes = classes = list(schema.classes)
        self.code, self.size, self.labels = layouts[name]
        self.counts = confusions[name]
        self.n = self.counts.sum(axis=(1, 2))
        self.kind = "class" if self.target in attributes else "mixed"
        self.keys = [key_of(v) for v in self.labels]
        if self.kind == "class":
            context = tuple(a for a in attributes if a != self.target)
            self.context = grouping_name(context) if context else "all"
            context_labels = layouts[self.context][2]
            position = {tuple(v.values()): i for i, v in enumerate(context_labels)}
            self.context_index = np.array([position[tuple(v[a] for a in context)] for v in self.labels])
            self.class_index = np.array([classes.index(v[self.target]) for v in self.labels])
            self.context_counts = confusions[self.context]
            self.context_keys = [key_of(v) for v in context_labels]
        self.metric_names = CLASS_GROUP_METRICS if self.kind == "class" else MIXED_METRICS

    def estimates(self, level: float) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Every metric of this grouping as ``(estimate, lower, upper)`` arrays over its groups."""
        if self.kind == "mixed":
            return mixed_metrics(self.counts, level)
        rates = class_rates(self.context_counts, level)
        out = {m: tuple(part[self.context_index, self.class_index] for part in rates[m]) for m in CLASS_METRICS}
        out["accuracy"] = out["recall"]
        return out

    def trials(self) -> dict[str, np.ndarray]:
        """The number of faces behind each metric of each group (the n shown next to it)."""
        if self.kind == "mixed":
            return {m: self.n for m in MIXED_METRICS}
        cm = self.context_counts
        rows, cols = cm.sum(axis=2), cm.sum(axis=1)
        total = cm.sum(axis=(1, 2))[:, None]
        at = (self.context_index, self.class_index)
        support, predicted, context_n = rows[at], cols[at], np.broadcast_to(total, rows.shape)[at]
        return {"accuracy": support, "recall": support, "fnr": support, "precision": predicted,
                "fpr": context_n - support, "selection_rate": context_n, "true_share": context_n}

    def successes(self, metric: str) -> np.ndarray:
        """Successes of a proportion metric per group (for the omnibus test)."""
        if self.kind == "mixed":
            return np.diagonal(self.counts, axis1=1, axis2=2).sum(axis=1)
        cm = self.context_counts
        tp = np.diagonal(cm, axis1=1, axis2=2)
        at = (self.context_index, self.class_index)
        return {"accuracy": tp[at], "precision": tp[at], "fpr": (cm.sum(axis=1) - tp)[at]}[metric]


def compute_audit(
    predictions: PredictionsTable | CellStatistics,
    *,
    settings: AuditSettings | None = None,
    embeddings: np.ndarray | None = None,
    embedding_source: str = "model",
    val_predictions: PredictionsTable | None = None,
    model: dict | None = None,
    data: dict | None = None,
    scaled: CellStatistics | None = None,
    sample: PredictionsTable | None = None,
) -> AuditResult:
    """Audit a validated predictions table (:class:`~faceaudit.seams.predictions.PredictionsTable`) by every
    grouping of its label schema.

    A streamed audit passes the table's :class:`~faceaudit.auditing.statistics.CellStatistics` instead (and
    ``scaled``, the same after temperature scaling with the temperature ``val_predictions`` fit), with ``sample``
    the rows kept for the error gallery and ``embeddings`` aligned with them."""
    if not isinstance(predictions, (PredictionsTable, CellStatistics)):
        raise TypeError("compute_audit takes a PredictionsTable; use faceaudit.audit(frame) for a DataFrame")
    s = settings or AuditSettings()
    schema = predictions.schema
    classes = list(schema.classes)
    n_classes = len(classes)
    attributes_used = audited_attributes(schema)
    if isinstance(predictions, CellStatistics):
        weights, rows = predictions.count, sample
        n, has_probs = predictions.n, predictions.has_probabilities
        codes = {a: (predictions.column(a), predictions.categories[a]) for a in attributes_used}
        y_true, y_pred = predictions.column(schema.target), predictions.column("pred")
        probs = predictions if has_probs else None
    else:
        weights, rows = None, predictions
        n = len(predictions)
        codes = _codes(predictions.frame, attributes_used)
        y_true, y_pred = predictions.y_true, predictions.y_pred
        probs = predictions.probabilities
        has_probs = probs is not None
    layouts = _layouts(codes, schema)

    def replicates(p: np.ndarray | CellStatistics, seed: int, tick=None):
        """Resamples of each grouping drawn within that grouping's own groups (iid within each group), so a
        group's interval reflects its images only and is not narrowed by holding finer cells fixed."""
        if isinstance(p, CellStatistics):
            own = _layouts({a: (p.column(a), p.categories[a]) for a in attributes_used}, schema)
            truth, predicted = p.column(schema.target), p.column("pred")
            values = {v: p.values(v)[0] for v in CELL_VALUES}
            extra = {"weights": p.count, "m2": {v: p.values(v)[1] for v in CELL_VALUES}, "bins": p.column("bin")}
        else:
            own, truth, predicted = layouts, y_true, y_pred
            values, extra = cal.per_image(p, y_true), {}
        parts = [
            stratified_replicates(
                code, truth, predicted, {name: (code, size)}, n_classes=n_classes, n_boot=s.n_boot,
                seed=seed + index, confidence=values["confidence"], brier=values["brier"],
                log_loss=values["log_loss"], n_bins=s.ece_bins, tick=tick, **extra)
            for index, (name, (code, size, _)) in enumerate(own.items())
        ]
        return Replicates(confusion={k: v for r in parts for k, v in r.confusion.items()},
                          calibration={k: v for r in parts for k, v in r.calibration.items()}, n_boot=s.n_boot)

    warnings_out: list[str] = []
    tables: dict[str, list[dict]] = {k: [] for k in ("group_metrics", "per_class", "confusion", "disparities",
                                                     "calibration", "reliability")}
    confusions = _confusions(layouts, y_true, y_pred, n_classes, weights)
    overall = _classification_block(_Grouping("all", (), layouts, confusions, schema), s, tables)[0][0]
    groupings_out = {}
    built = {grouping_name(a): _Grouping(grouping_name(a), a, layouts, confusions, schema) for a in schema.groupings}
    # One vs-rest family per tier: the single attributes together, the intersections together.
    tier = {name: min(len(g.attributes), 2) for name, g in built.items()}
    families = {t: sum(int((g.n >= s.min_group_size).sum()) for name, g in built.items() if tier[name] == t)
                for t in set(tier.values())}
    for attributes in schema.groupings:
        name = grouping_name(attributes)
        grouping = built[name]
        records, disparities = _classification_block(grouping, s, tables, families[tier[name]])
        missing = [grouping.keys[g] for g in np.flatnonzero(grouping.n == 0)]
        groupings_out[name] = {"attributes": list(attributes), "kind": grouping.kind, "groups": records,
                               "missing": missing, "disparities": disparities,
                               **({"context": grouping.context} if grouping.kind == "class" else {})}
        small = sum(r["too_small"] for r in records)
        if small and len(attributes) == 1:
            warnings_out.append(small_groups_warning(small, name, s.min_group_size))
    target_counts = np.rint(np.bincount(y_true, weights=weights, minlength=n_classes)).astype(np.int64)
    missing_classes = [c for c, count in zip(classes, target_counts) if count == 0]
    if missing_classes:
        warnings_out.insert(0, f"no test images of {', '.join(missing_classes)}: nothing can be said about "
                               f"{'that class' if len(missing_classes) == 1 else 'those classes'}, and coverage gates fail")
    if n < s.min_test_size:
        warnings_out.insert(0, f"too small to judge: {n} test image{'s' if n != 1 else ''}, below the minimum of "
                               f"{s.min_test_size}; the numbers are shown with their (wide) intervals, no gate can pass")

    # -- calibration -----------------------------------------------------------------------------------
    calibration_out = None
    if has_probs:
        scaling = val_predictions is not None and len(val_predictions) and val_predictions.has_probabilities
        passes = 2 if scaling else 1  # the scaled probabilities are resampled too, on the same seeds
        with step("bootstrap", total=s.n_boot * len(layouts) * passes, unit="resample",
                  enabled=s.progress and s.n_boot > 0,
                  detail=f"{s.n_boot:,} resamples × {len(layouts)} groupings"
                         + (", before/after scaling" if scaling else "")) as bar:
            reps = replicates(probs, s.seed, bar.update)
            calibration_out = _calibration_block(reps, layouts, s, tables)
            if scaling:
                calibration_out["temperature"] = _temperature_block(
                    val_predictions, probs, reps, layouts, s, replicates, scaled, tick=bar.update)
    else:
        warnings_out.append("the predictions have labels only: no calibration figures")

    # -- embeddings ------------------------------------------------------------------------------------
    embeddings_out = None
    if embeddings is not None and rows is not None:
        row_codes = codes if weights is None else _codes(rows.frame, attributes_used)
        row_layouts = layouts if weights is None else _layouts(row_codes, schema)
        embeddings_out, emb_tables = _embeddings_block(np.asarray(embeddings), rows.frame, row_codes, row_layouts,
                                                       s, embedding_source, schema.target)
        if weights is not None:
            embeddings_out["n_total"] = n
            embeddings_out["subsampled"] = embeddings_out["subsampled"] or len(embeddings) < n
        tables.update(emb_tables)

    data = dict(data or {})
    data.setdefault("n", n)
    data.setdefault("split", "test")
    data["counts"] = {a: dict(zip(names, np.rint(np.bincount(code, weights=weights, minlength=len(names))).astype(int).tolist()))
                      for a, (code, names) in codes.items()}
    data["missing_classes"] = missing_classes
    data["too_small_to_judge"] = bool(n < s.min_test_size)
    settings_out = {"n_boot": s.n_boot, "ci": s.ci, "seed": s.seed, "min_group_size": s.min_group_size,
                    "min_test_size": s.min_test_size, "ece_bins": s.ece_bins, "knn_k": s.knn_k,
                    "intervals": INTERVAL_METHODS, "bootstrap": BOOTSTRAP_METHOD, "inconclusive": s.inconclusive}
    result = AuditResult(
        model=dict(model or {}), data=data, settings=settings_out, classes=classes, overall=overall,
        groupings=groupings_out, label_schema=schema.to_dict(), calibration=calibration_out,
        embeddings=embeddings_out, warnings=warnings_out, faceaudit_version=__version__, created_utc=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    frames = {k: pd.DataFrame(v) for k, v in tables.items() if isinstance(v, list) and v}
    frames.update({k: v for k, v in tables.items() if isinstance(v, pd.DataFrame)})
    result.tables, result.predictions = frames, rows
    result.predictions_sampled = weights is not None
    return result


def _ci_columns(prefix: str, st: dict) -> dict:
    ci = st.get("ci") or [None, None]
    return {prefix: st.get("value"), f"{prefix}_lo": ci[0], f"{prefix}_hi": ci[1]}



def small_groups_warning(small: int, grouping: str, min_size: int) -> str:
    """The audit's warning that some groups of one attribute are too small to rank, in words a reader uses."""
    groups = "group has" if small == 1 else "groups have"
    return (f"{small:,} {grouping.replace('_', ' ')} {groups} fewer than {min_size:,} images and "
            f"{'is' if small == 1 else 'are'} not ranked")


def _classification_block(grouping: _Grouping, s: AuditSettings, tables: dict,
                          family: int | None = None) -> tuple[list[dict], dict]:
    """Group records (metrics, per-class rates, confusion, difference from the rest) and disparities of a grouping."""
    name, n_g = grouping.name, grouping.n
    estimates, trials = grouping.estimates(s.ci), grouping.trials()
    present = np.flatnonzero(n_g)
    ranked = n_g >= s.min_group_size
    per_class = class_rates(grouping.counts, s.ci) if grouping.kind == "mixed" else None
    supports, predicted = grouping.counts.sum(axis=2), grouping.counts.sum(axis=1)
    normalised = row_normalised(grouping.counts)
    vs_rest = None
    if name != "all":
        correct = np.diagonal(grouping.counts, axis1=1, axis2=2).sum(axis=1)
        vs_rest = dict(zip(present, versus_rest(correct[present], n_g[present], ranked[present], s.ci, family)))
    records = []
    for g in present:
        key = grouping.keys[g]
        too_small = bool(name != "all" and not ranked[g])
        metrics_out = {m: stat(estimates[m][0][g], (estimates[m][1][g], estimates[m][2][g]), trials[m][g])
                       for m in grouping.metric_names}
        record = {"key": key, "values": grouping.labels[g], "n": int(n_g[g]), "too_small": too_small,
                  "metrics": metrics_out}
        if grouping.kind == "class":
            record["context"] = grouping.context_keys[grouping.context_index[g]]
        else:
            record["per_class"] = {}
            for k, cls in enumerate(grouping.classes):
                n_trials = {"recall": supports[g, k], "fnr": supports[g, k], "precision": predicted[g, k],
                            "fpr": n_g[g] - supports[g, k], "f1": supports[g, k] + predicted[g, k],
                            "selection_rate": n_g[g], "true_share": n_g[g]}
                record["per_class"][cls] = {"support": int(supports[g, k]), **{
                    m: stat(per_class[m][0][g, k], (per_class[m][1][g, k], per_class[m][2][g, k]), n_trials[m])
                    for m in (*CLASS_METRICS, "f1")}}
        record["confusion"] = {"counts": grouping.counts[g].astype(int).tolist(),
                               "normalized": [None if np.isnan(row).all() else [round(float(x), 6) for x in row]
                                              for row in normalised[g]]}
        if vs_rest is not None:
            record["vs_rest"] = {"accuracy": vs_rest[g]}
        records.append(record)
        row = {"grouping": name, "group": key, **grouping.labels[g], "n": int(n_g[g]), "too_small": too_small}
        for m in grouping.metric_names:
            row.update(_ci_columns(m, metrics_out[m]))
        if vs_rest is not None:
            row.update(_ci_columns("vs_rest", vs_rest[g]))
            row.update(vs_rest_p=vs_rest[g]["p_value"], vs_rest_p_holm=vs_rest[g]["p_holm"])
        tables["group_metrics"].append(row)
        for cls, c in (record.get("per_class") or {}).items():
            prow = {"grouping": name, "group": key, "class": cls, "support": c["support"]}
            for m in (*CLASS_METRICS, "f1"):
                prow.update(_ci_columns(m, c[m]))
            tables["per_class"].append(prow)
        for i, t in enumerate(grouping.classes):
            for j, p in enumerate(grouping.classes):
                tables["confusion"].append({"grouping": name, "group": key, "true": t, "pred": p,
                                            "count": int(grouping.counts[g, i, j]),
                                            "rate": None if np.isnan(normalised[g, i, j]) else float(normalised[g, i, j])})
    disparities = {}
    if name != "all":
        keys = [grouping.keys[g] for g in present]
        for m in DISPARITY_METRICS[grouping.kind]:
            disparities[m] = disparity(
                lambda level, m=m: tuple(part[present] for part in grouping.estimates(level)[m]), keys, ranked[present],
                level=s.ci, lower_is_better=m in LOWER_IS_BETTER, sizes=n_g[present], seed=s.seed,
                counts=(grouping.successes(m)[present], trials[m][present]) if m in PROPORTION_METRICS else None)
            tables["disparities"].append(disparity_row(name, m, disparities[m]))
    return records, disparities


def _calibration_values(reps, name: str) -> dict[str, np.ndarray]:
    c = reps.calibration[name]
    return cal.from_sums(c["count"], c["confidence"], c["correct"], c["brier"], c["log_loss"])


def _loss_intervals(values: dict[str, np.ndarray], n_g: np.ndarray, level: float) -> dict[str, tuple]:
    """Expanded percentile bootstrap intervals of Brier score and log loss (means of per-image values); where every
    face of a group scores the same (zero spread), the distribution-free interval over the metric's range instead."""
    out = {}
    expanded = expanded_level(level, n_g)
    for metric in ("brier", "log_loss"):
        lo, hi = percentile_interval(values[metric], expanded)
        out[metric] = widen_degenerate(values[metric][0], lo, hi, n_g, cal.LOSS_RANGES[metric], level)
    return out


def _group_calibration(c0: dict, values: dict, level: float) -> tuple[dict, dict]:
    """Every group's ECE / MCE bounds and Brier / log-loss intervals of one grouping, computed once."""
    n_g = c0["count"][0].sum(axis=1)
    bounds = cal.calibration_error(c0["count"][0], c0["confidence"][0], c0["correct"][0], level)
    bounds.update(cal.ece_interval(c0["count"], c0["confidence"], c0["correct"], level))
    return bounds, _loss_intervals(values, n_g, level)


def _calibration_stats(c0: dict, values: dict, g: int, computed: tuple[dict, dict]) -> dict:
    """One group's ECE and MCE (debiased, bin-interval bounds) and Brier and log loss (bootstrap) as stats."""
    all_bounds, ci_of = computed
    bounds = {k: v[g] for k, v in all_bounds.items()}
    n_g = c0["count"][0, g].sum()
    b = int(bounds["mce_bin"])
    n_bins = c0["count"].shape[-1]
    return {"ece": stat(bounds["ece"], (bounds["ece_lo"], bounds["ece_hi"]), n_g, plugin=bounds["ece_plugin"]),
            "mce": stat(bounds["mce"], (bounds["mce_lo"], bounds["mce_hi"]), n_g,
                        bin={"lo": round(b / n_bins, 6), "hi": round((b + 1) / n_bins, 6),
                             "n": int(c0["count"][0, g, b])}),
            "brier": stat(values["brier"][0, g], (ci_of["brier"][0][g], ci_of["brier"][1][g]), n_g),
            "log_loss": stat(values["log_loss"][0, g], (ci_of["log_loss"][0][g], ci_of["log_loss"][1][g]), n_g)}


def _calibration_block(reps, layouts, s: AuditSettings, tables) -> dict:
    out = {"n_bins": s.ece_bins, "binning": "equal-width bins of top-label confidence, (lo, hi]",
           "ece_estimator": "debiased (Kumar et al. 2019), bootstrap bias-corrected", "groupings": {}, "disparities": {}, "temperature": None}
    for name, (code, size, labels) in layouts.items():
        values = _calibration_values(reps, name)
        c0 = reps.calibration[name]
        n_g = c0["count"][0].sum(axis=1)
        computed = _group_calibration(c0, values, s.ci)
        records = []
        for g in np.flatnonzero(n_g):
            key = key_of(labels[g])
            too_small = bool(name != "all" and n_g[g] < s.min_group_size)
            record = {"key": key, "values": labels[g], "n": int(n_g[g]), "too_small": too_small,
                      **_calibration_stats(c0, values, g, computed)}
            record["reliability"] = cal.reliability_bins(c0["count"][0, g], c0["confidence"][0, g],
                                                         c0["correct"][0, g], s.ece_bins)
            records.append(record)
            tables["calibration"].append({"grouping": name, "group": key, **labels[g], "n": int(n_g[g]),
                                          "too_small": too_small,
                                          **{k: v for m in cal.CALIBRATION_METRICS for k, v in _ci_columns(m, record[m]).items()},
                                          "ece_plugin": record["ece"]["plugin"]})
            for b in record["reliability"]:
                tables["reliability"].append({"grouping": name, "group": key, **b})
        if name == "all":
            out["overall"] = {k: v for k, v in records[0].items() if k not in ("key", "values", "too_small")}
            continue
        out["groupings"][name] = records
        present = np.flatnonzero(n_g)
        keys = [key_of(labels[g]) for g in present]
        ranked = n_g[present] >= s.min_group_size

        def ece_at(level: float, present=present, c0=c0):
            bounds = cal.ece_interval(c0["count"][:, present], c0["confidence"][:, present],
                                      c0["correct"][:, present], level)
            return bounds["ece"], bounds["ece_lo"], bounds["ece_hi"]

        out["disparities"][name] = {"ece": disparity(ece_at, keys, ranked, level=s.ci, lower_is_better=True,
                                                     sizes=n_g[present])}
    return out


def _temperature_block(val: PredictionsTable, probs, reps, layouts, s: AuditSettings, replicates,
                       scaled_cells: CellStatistics | None = None, tick=None) -> dict:
    """Temperature fitted on the validation split; every group's calibration before and after it.

    The change in ECE is computed on resamples drawn with the same seed before and after: the same images up to
    50,000 rows, so its interval reflects only the effect of scaling; above that the draws are over (true,
    predicted, confidence bin) types, which scaling changes, so they are paired by seed only.
    """
    val_probs, val_true = val.probabilities, val.y_true
    fit = cal.fit_temperature(val_probs, val_true, s.ci)
    if scaled_cells is not None and scaled_cells.temperature != fit["temperature"]:
        raise ValueError("the scaled statistics were computed with another temperature than the validation split fits")
    scaled = replicates(scaled_cells if scaled_cells is not None else cal.scale_temperature(probs, fit["temperature"]),
                        s.seed, tick)
    out = {"temperature": round(fit["temperature"], 6), "ci": [round(fit["lo"], 6), round(fit["hi"], 6)],
           "interval": "profile likelihood on the validation split; T held fixed afterwards",
           "fitted_on": "val", "n_fit": int(len(val)), "nll_before": round(fit["nll_before"], 6),
           "nll_after": round(fit["nll_after"], 6), "groupings": {}}
    for name, (code, size, labels) in layouts.items():
        pre_c, post_c = reps.calibration[name], scaled.calibration[name]
        pre, post = _calibration_values(reps, name), _calibration_values(scaled, name)
        n_g = pre_c["count"][0].sum(axis=1)
        pre_computed, post_computed = _group_calibration(pre_c, pre, s.ci), _group_calibration(post_c, post, s.ci)
        change = (cal.debiased_ece(post_c["count"], post_c["confidence"], post_c["correct"])
                  - cal.debiased_ece(pre_c["count"], pre_c["confidence"], pre_c["correct"]))
        change_lo, change_hi = percentile_interval(change, s.ci)
        # Where scaling changes nothing in any resample (one-hot probabilities), MOVER from the two ECE intervals.
        flat = ~(change_hi - change_lo >= 1e-6)
        if flat.any():
            _, m_lo, m_hi = mover_difference(
                (post_computed[0]["ece"], post_computed[0]["ece_lo"], post_computed[0]["ece_hi"]),
                (pre_computed[0]["ece"], pre_computed[0]["ece_lo"], pre_computed[0]["ece_hi"]))
            change_lo, change_hi = np.where(flat, np.minimum(m_lo, change[0]), change_lo), np.where(flat, np.maximum(m_hi, change[0]), change_hi)
        records = []
        for g in np.flatnonzero(n_g):
            records.append({"key": key_of(labels[g]),
                            "n": int(n_g[g]), "too_small": bool(name != "all" and n_g[g] < s.min_group_size),
                            "before": _calibration_stats(pre_c, pre, g, pre_computed),
                            "after": _calibration_stats(post_c, post, g, post_computed),
                            "ece_change": stat(change[0, g], (change_lo[g], change_hi[g]), n_g[g])})
        if name == "all":
            out["overall"] = {k: records[0][k] for k in ("before", "after", "ece_change")}
        else:
            out["groupings"][name] = records
    return out


def _embeddings_block(vectors: np.ndarray, frame: pd.DataFrame, codes, layouts, s: AuditSettings,
                      source: str, target: str) -> tuple[dict, dict]:
    """How the embeddings cluster by the target's true class: t-SNE map, silhouette and k-NN purity by group."""
    rows = emb.subsample(len(vectors), s.seed)
    x = vectors[rows]
    true_class = codes[target][0][rows]
    out = {"n": int(len(rows)), "n_total": int(len(vectors)), "dim": int(vectors.shape[1]), "source": source,
           "subsampled": bool(len(rows) < len(vectors)), "tsne": None}
    tables = {}
    if s.tsne and len(rows) >= 5:
        coords, info = emb.tsne(x, s.seed, progress=s.progress)
        info["settings"]["subsampled"] = out["subsampled"]
        out["tsne"] = {"file": "tsne.csv", **info}
        tables["tsne"] = pd.DataFrame({"image_id": frame["image_id"].to_numpy()[rows], "x": coords[:, 0],
                                       "y": coords[:, 1],
                                       **{a: frame[a].to_numpy()[rows] for a in codes}})
    sil = emb.silhouette_values(x, true_class)
    class_names = codes[target][1]
    mean, lo, hi, n = emb.mean_interval(sil, np.zeros(len(sil), dtype=np.int64), 1, n_boot=s.n_boot, ci=s.ci, seed=s.seed,
                                        bounds=(-1.0, 1.0))
    out["silhouette"] = {"label": target, "overall": stat(mean[0], (lo[0], hi[0]), n[0]), "by_group": []}
    mean, lo, hi, n = emb.mean_interval(sil, true_class, len(class_names), n_boot=s.n_boot, ci=s.ci, seed=s.seed,
                                        bounds=(-1.0, 1.0))
    rows_out = []
    for g in np.flatnonzero(n):
        out["silhouette"]["by_group"].append({"key": class_names[g], "n": int(n[g]),
                                              "value": stat(mean[g], (lo[g], hi[g]), n[g])})
        rows_out.append({"grouping": target, "group": class_names[g], "measure": "silhouette", "n": int(n[g]),
                         "value": mean[g], "lo": lo[g], "hi": hi[g]})
    purity = emb.knn_purity(x, true_class, s.knn_k)
    out["knn_purity"] = {"k": s.knn_k, "label": target, "groupings": {}}
    for name, (code, size, labels) in layouts.items():
        mean, lo, hi, n = emb.mean_interval(purity, code[rows], size, n_boot=s.n_boot, ci=s.ci, seed=s.seed,
                                            bounds=(0.0, 1.0))
        records = []
        for g in np.flatnonzero(n):
            key = key_of(labels[g])
            too_small = bool(name != "all" and n[g] < s.min_group_size)
            records.append({"key": key, "values": labels[g], "n": int(n[g]), "too_small": too_small,
                            "purity": stat(mean[g], (lo[g], hi[g]), n[g])})
            rows_out.append({"grouping": name, "group": key, "measure": "knn_purity", "n": int(n[g]),
                             "value": mean[g], "lo": lo[g], "hi": hi[g]})
        if name == "all":
            out["knn_purity"]["overall"] = records[0]["purity"]
        else:
            out["knn_purity"]["groupings"][name] = records
    tables["embedding_groups"] = pd.DataFrame(rows_out)
    return out, tables
